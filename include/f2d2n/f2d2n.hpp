// f2d2n/f2d2n.hpp: the whole library.
#pragma once

#include <f2d2n/core.hpp>
#include <f2d2n/data.hpp>
#include <f2d2n/model.hpp>
#include <f2d2n/plan.hpp>
#include <f2d2n/train.hpp>

namespace f2d2n {
/// The library's version.
inline constexpr int version_major = 0;
inline constexpr int version_minor = 1;
inline constexpr int version_patch = 0;
}  // namespace f2d2n
