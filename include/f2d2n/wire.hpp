// f2d2n/wire.hpp: the frame format shared by every transport.
#pragma once

#include <f2d2n/wire/frame.hpp>
#include <f2d2n/wire/goodbye.hpp>
