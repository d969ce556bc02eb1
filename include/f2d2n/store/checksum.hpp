// f2d2n/store/checksum.hpp: the checksum of stored bytes (XXH3-64, as the wire's frames use), and
// its text form in headers and manifests: 16 lowercase hexadecimal digits.
#pragma once

#ifndef XXH_INLINE_ALL
#define XXH_INLINE_ALL  // xxHash used header-only (Debian: libxxhash-dev)
#endif
#include <xxhash.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace f2d2n {

/// XXH3-64 of the bytes.
[[nodiscard]] inline std::uint64_t checksum(std::span<const std::byte> bytes) noexcept {
  return XXH3_64bits(bytes.data(), bytes.size());
}

/// "00000000deadbeef".
[[nodiscard]] inline std::string to_hex(std::uint64_t v) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) s[static_cast<std::size_t>(i)] = digits[v & 15];
  return s;
}

/// The value of exactly 16 lowercase hexadecimal digits; nothing for any other text.
[[nodiscard]] inline std::optional<std::uint64_t> from_hex(std::string_view s) noexcept {
  if (s.size() != 16) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else return std::nullopt;
    v = (v << 4) | static_cast<std::uint64_t>(d);
  }
  return v;
}

}  // namespace f2d2n
