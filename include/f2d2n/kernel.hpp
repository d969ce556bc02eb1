// f2d2n/kernel.hpp: the kernel layer: the GEMMs of every layer, in the backend chosen at configure
// time (libxsmm's JIT kernels or Eigen's products; docs/kernels.md).
#pragma once

#include <f2d2n/kernel/gemm.hpp>
#include <f2d2n/kernel/transpose.hpp>
