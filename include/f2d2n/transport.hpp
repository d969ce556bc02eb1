// f2d2n/transport.hpp: the transport concept and the in-process transport. The TCP transport is
// opt-in (#include <f2d2n/transport/tcp.hpp>): Boost.Asio adds several seconds to every build.
#pragma once

#include <f2d2n/transport/concept.hpp>
#include <f2d2n/transport/local.hpp>
