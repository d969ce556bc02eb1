// f2d2n/train.hpp: optimizers, callbacks, the trainer, and the distributed network it trains
// under a plan.
#pragma once

#include <f2d2n/train/callbacks.hpp>
#include <f2d2n/train/distributed_network.hpp>
#include <f2d2n/train/optimizers.hpp>
#include <f2d2n/train/trainer.hpp>
