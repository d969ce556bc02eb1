// f2d2n/wire/goodbye.hpp: the payload of a goodbye frame that says why its sender shut down.
//
// A unit that shuts down after a failure (transport.shutdown(reason)) sends every peer a goodbye
// frame with message id goodbye_reason_message whose payload is the reason, little-endian:
//
//   offset size field
//        0    1 version   reason_version (1)
//        1    4 origin    the unit that failed first
//        5    2 length    bytes of the text, at most max_reason_text
//        7    n text      that unit's error message (UTF-8, cut to max_reason_text bytes)
//
// The payload is exactly 7 + length bytes. The receiver reads it from the wire, so it trusts
// nothing: another version, a length that does not match, an origin outside the world are refused
// (decode_reason says why, the caller reports the goodbye without a reason), and control characters
// of the text are replaced by '?' before it is printed anywhere. A goodbye without a reason (a
// plain shutdown) has message id 0 and an empty payload; during connection setup a goodbye of
// message id 0 carries a refusal in plain text.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/core/unit.hpp>
#include <f2d2n/wire/frame.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace f2d2n::wire {

/// The message id of a goodbye frame whose payload is an encoded shutdown_reason.
inline constexpr std::uint32_t goodbye_reason_message = 1;
/// The version of the reason's encoding (its first byte).
inline constexpr std::uint8_t reason_version = 1;
/// The longest text a reason carries; a longer error message is cut (and ends with "...").
inline constexpr std::size_t max_reason_text = 2000;
/// Bytes before the text.
inline constexpr std::size_t reason_prefix = 7;

/// The goodbye payload that says `r` (its text cut to max_reason_text bytes).
[[nodiscard]] inline std::vector<std::byte> encode_reason(const shutdown_reason& r) {
  std::string text = r.error;
  if (text.size() > max_reason_text) text = text.substr(0, max_reason_text - 3) + "...";
  std::vector<std::byte> p(reason_prefix + text.size());
  p[0] = std::byte{reason_version};
  detail::put<std::uint32_t>(p.data() + 1, r.origin);
  detail::put<std::uint16_t>(p.data() + 5, static_cast<std::uint16_t>(text.size()));
  std::transform(text.begin(), text.end(), p.begin() + reason_prefix, [](char c) { return static_cast<std::byte>(c); });
  return p;
}

/// The reason in a goodbye payload from a cluster of `world_size` units, or nothing, with
/// `problem` saying what is wrong with the bytes.
[[nodiscard]] inline std::optional<shutdown_reason> decode_reason(std::span<const std::byte> p, unit_id world_size,
                                                                  std::string& problem) {
  if (p.size() < reason_prefix) {
    problem = "it has " + std::to_string(p.size()) + " bytes, fewer than the " + std::to_string(reason_prefix) +
              " of its fixed part";
    return std::nullopt;
  }
  if (std::to_integer<std::uint8_t>(p[0]) != reason_version) {
    problem = "its encoding has version " + std::to_string(std::to_integer<unsigned>(p[0])) + ", this unit reads " +
              std::to_string(reason_version);
    return std::nullopt;
  }
  const auto origin = detail::get<std::uint32_t>(p.data() + 1);
  const auto length = detail::get<std::uint16_t>(p.data() + 5);
  if (length > max_reason_text || reason_prefix + length != p.size()) {
    problem = "it announces " + std::to_string(length) + " bytes of text in a payload of " + std::to_string(p.size()) +
              " bytes";
    return std::nullopt;
  }
  if (origin >= world_size) {
    problem = "it names unit " + std::to_string(origin) + ", outside a world of " + std::to_string(world_size);
    return std::nullopt;
  }
  shutdown_reason r{origin, std::string(length, '\0')};
  for (std::size_t i = 0; i < length; ++i) {
    const auto c = std::to_integer<unsigned char>(p[reason_prefix + i]);
    r.error[i] = c < 0x20 || c == 0x7f ? '?' : static_cast<char>(c);
  }
  return r;
}

/// What a receiver says when its peer's goodbye gave `r`: "the peer has shut down because unit 2
/// failed first: <its error>".
[[nodiscard]] inline std::string describe_goodbye(const shutdown_reason& r) {
  return "the peer has shut down because unit " + std::to_string(r.origin) + " failed first: " + r.error;
}

}  // namespace f2d2n::wire
