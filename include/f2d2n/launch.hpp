// f2d2n/launch.hpp: cluster configuration (environment, hosts file): where each unit of a cluster
// listens, its key and deadlines. The local multi-process launcher that sets it (f2d2n_launch) is a
// program in tools/, not a header of the library. f2d2n/launch/tcp.hpp (not included here: it
// brings in the TCP transport) turns a configuration into the transport's options.
#pragma once

#include <f2d2n/launch/config.hpp>
