// f2d2n/store.hpp: models that outlive the run: storage backends, checksums, safetensors files,
// the sharded checkpoint format (train/checkpoint.hpp connects checkpoints to trainers).
#pragma once

#include <f2d2n/store/backend.hpp>
#include <f2d2n/store/checkpoint.hpp>
#include <f2d2n/store/checkpoint_reader.hpp>
#include <f2d2n/store/checksum.hpp>
#include <f2d2n/store/dtype.hpp>
#include <f2d2n/store/safetensors.hpp>
