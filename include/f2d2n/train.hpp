// f2d2n/train.hpp: optimizers, callbacks, the trainer.
#pragma once

#include <f2d2n/train/callbacks.hpp>
#include <f2d2n/train/optimizers.hpp>
#include <f2d2n/train/trainer.hpp>
