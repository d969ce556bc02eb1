// f2d2n/core/unit.hpp: processing units are numbered 0 .. world_size - 1.
#pragma once

#include <cstdint>

namespace f2d2n {

/// The rank of a processing unit in its cluster.
using unit_id = std::uint32_t;

}  // namespace f2d2n
