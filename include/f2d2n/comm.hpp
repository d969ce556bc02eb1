// f2d2n/comm.hpp: parallel data movement as linear operators over any transport.
#pragma once

#include <f2d2n/comm/cartesian.hpp>
#include <f2d2n/comm/halo.hpp>
#include <f2d2n/comm/primitives.hpp>
#include <f2d2n/comm/repartition.hpp>
