// f2d2n/transport.hpp: the transport concept and the in-process transport.
#pragma once

#include <f2d2n/transport/concept.hpp>
#include <f2d2n/transport/local.hpp>
