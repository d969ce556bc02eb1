// f2d2n/model.hpp: layers, sequential<...> and the concrete network.
#pragma once

#include <f2d2n/core.hpp>
#include <f2d2n/model/conv.hpp>
#include <f2d2n/model/layers.hpp>
#include <f2d2n/model/network.hpp>
#include <f2d2n/model/sequential.hpp>
#include <f2d2n/model/summary.hpp>
#include <f2d2n/model/tensor.hpp>
