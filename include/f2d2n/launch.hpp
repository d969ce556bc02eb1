// f2d2n/launch.hpp: cluster configuration (environment, hosts file): where each unit of a cluster
// listens. The local multi-process launcher that sets it (f2d2n_launch) is a program in tools/, not
// a header of the library.
#pragma once

#include <f2d2n/launch/config.hpp>
