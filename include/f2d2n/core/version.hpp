// f2d2n/core/version.hpp: the library's version (stored files record which version wrote them).
#pragma once

#include <string>

namespace f2d2n {
/// The library's version.
inline constexpr int version_major = 0;
inline constexpr int version_minor = 1;
inline constexpr int version_patch = 0;

/// "0.1.0".
inline std::string version_string() {
  return std::to_string(version_major) + "." + std::to_string(version_minor) + "." + std::to_string(version_patch);
}
}  // namespace f2d2n
