// f2d2n/core.hpp: errors, shapes, counter-based random numbers.
#pragma once

#include <f2d2n/core/denormals.hpp>
#include <f2d2n/core/error.hpp>
#include <f2d2n/core/partition.hpp>
#include <f2d2n/core/random.hpp>
#include <f2d2n/core/shape.hpp>
#include <f2d2n/core/unit.hpp>
#include <f2d2n/core/version.hpp>
