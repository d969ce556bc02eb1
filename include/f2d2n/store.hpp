// f2d2n/store.hpp: models that outlive the run: storage backends, checksums, safetensors files.
#pragma once

#include <f2d2n/store/backend.hpp>
#include <f2d2n/store/checksum.hpp>
#include <f2d2n/store/safetensors.hpp>
