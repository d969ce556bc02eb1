// f2d2n/launch.hpp: cluster configuration (environment, hosts file) and the local multi-process
// launcher.
#pragma once

#include <f2d2n/launch/config.hpp>
#include <f2d2n/launch/launcher.hpp>
