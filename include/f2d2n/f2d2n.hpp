// f2d2n/f2d2n.hpp: the whole library.
#pragma once

#include <f2d2n/core.hpp>
#include <f2d2n/core/version.hpp>
#include <f2d2n/data.hpp>
#include <f2d2n/kernel.hpp>
#include <f2d2n/model.hpp>
#include <f2d2n/plan.hpp>
#include <f2d2n/train.hpp>
