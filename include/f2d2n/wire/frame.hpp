// f2d2n/wire/frame.hpp: the frame every message travels in, on every transport.
//
// A frame is a 48-byte header, then the payload. The header, little-endian:
//
//   offset size field
//        0    4 magic           "F2DN" (0x4e443246)
//        4    2 version         wire_version
//        6    2 kind            data, handshake, goodbye
//        8    8 fingerprint     the sender's plan fingerprint
//       16    4 message_id      which message of the plan
//       20    4 sender          the sending unit's rank
//       24    8 step            training step (or any tag the protocol chooses)
//       32    8 payload_length  bytes after the header
//       40    8 checksum        XXH3-64 of the payload, seeded with XXH3-64 of bytes 0..39
//
// The receiver knows which message it waits for, and so its exact length: check() rejects a
// frame whose kind, fingerprint, sender, message, step or length differ, or that exceeds the
// transport's maximum, before the payload is read anywhere. The checksum covers the header too.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/core/unit.hpp>

#ifndef XXH_INLINE_ALL
#define XXH_INLINE_ALL  // xxHash used header-only (Debian: libxxhash-dev); see docs/design.md's measured facts
#endif
#include <xxhash.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace f2d2n::wire {

inline constexpr std::uint32_t frame_magic = 0x4e443246u;  // "F2DN" as little-endian bytes
inline constexpr std::uint16_t wire_version = 1;
inline constexpr std::size_t header_size = 48;
/// Frames above this are refused unless a transport is told otherwise.
inline constexpr std::uint64_t default_max_frame = std::uint64_t{1} << 30;

enum class frame_kind : std::uint16_t { data = 1, handshake = 2, goodbye = 3 };

struct frame_header {
  frame_kind kind = frame_kind::data;
  std::uint64_t fingerprint = 0;
  std::uint32_t message_id = 0;
  unit_id sender = 0;
  std::uint64_t step = 0;
  std::uint64_t payload_length = 0;
  std::uint64_t checksum = 0;
  friend bool operator==(const frame_header&, const frame_header&) = default;
};

using header_bytes = std::array<std::byte, header_size>;

namespace detail {
template <class U>
constexpr void put(std::byte* p, U v) noexcept {
  for (std::size_t i = 0; i < sizeof(U); ++i) p[i] = static_cast<std::byte>((v >> (8 * i)) & 0xffu);
}
template <class U>
constexpr U get(const std::byte* p) noexcept {
  U v = 0;
  for (std::size_t i = 0; i < sizeof(U); ++i) v |= static_cast<U>(static_cast<U>(p[i]) << (8 * i));
  return v;
}
}  // namespace detail

/// The header's bytes (with the checksum field as it is in `h`).
[[nodiscard]] inline header_bytes encode(const frame_header& h) noexcept {
  header_bytes b{};
  detail::put<std::uint32_t>(b.data() + 0, frame_magic);
  detail::put<std::uint16_t>(b.data() + 4, wire_version);
  detail::put<std::uint16_t>(b.data() + 6, static_cast<std::uint16_t>(h.kind));
  detail::put<std::uint64_t>(b.data() + 8, h.fingerprint);
  detail::put<std::uint32_t>(b.data() + 16, h.message_id);
  detail::put<std::uint32_t>(b.data() + 20, h.sender);
  detail::put<std::uint64_t>(b.data() + 24, h.step);
  detail::put<std::uint64_t>(b.data() + 32, h.payload_length);
  detail::put<std::uint64_t>(b.data() + 40, h.checksum);
  return b;
}

/// The checksum of a frame: XXH3-64 of the payload, seeded with XXH3-64 of the header's first 40
/// bytes, so that a corrupted header field and a corrupted payload are both caught.
[[nodiscard]] inline std::uint64_t checksum(const frame_header& h, std::span<const std::byte> payload) noexcept {
  const header_bytes b = encode(h);
  const std::uint64_t seed = XXH3_64bits(b.data(), 40);
  return XXH3_64bits_withSeed(payload.data(), payload.size(), seed);
}

/// A complete header for `payload`, checksum included. With `payload_checksum` false (a transport
/// that delivers bytes intact or fails, e.g. MPI: transport/mpi.hpp), the checksum covers the
/// header alone: checksum(h, {}); both ends must agree (the transport checks that they do).
[[nodiscard]] inline frame_header make_header(frame_kind kind, std::uint64_t fingerprint, std::uint32_t message_id,
                                              unit_id sender, std::uint64_t step, std::span<const std::byte> payload,
                                              bool payload_checksum = true) noexcept {
  frame_header h{kind, fingerprint, message_id, sender, step, payload.size(), 0};
  h.checksum = checksum(h, payload_checksum ? payload : std::span<const std::byte>());
  return h;
}

/// Reads a header; throws protocol_error (bad_magic, bad_version, bad_kind) for bytes that are
/// not an f2d2n frame header of this version. `where` names the receiving unit and the peer.
[[nodiscard]] inline frame_header decode(std::span<const std::byte, header_size> b, const comm_context& where) {
  if (detail::get<std::uint32_t>(b.data()) != frame_magic)
    throw protocol_error(where, frame_problem::bad_magic, "the bytes received are not an f2d2n frame");
  const auto version = detail::get<std::uint16_t>(b.data() + 4);
  if (version != wire_version)
    throw protocol_error(where, frame_problem::bad_version,
                         "the peer speaks wire version " + std::to_string(version) + ", this unit " +
                             std::to_string(wire_version));
  const auto kind = detail::get<std::uint16_t>(b.data() + 6);
  if (kind < 1 || kind > 3)
    throw protocol_error(where, frame_problem::bad_kind, "frame kind " + std::to_string(kind) + " does not exist");
  frame_header h;
  h.kind = static_cast<frame_kind>(kind);
  h.fingerprint = detail::get<std::uint64_t>(b.data() + 8);
  h.message_id = detail::get<std::uint32_t>(b.data() + 16);
  h.sender = detail::get<std::uint32_t>(b.data() + 20);
  h.step = detail::get<std::uint64_t>(b.data() + 24);
  h.payload_length = detail::get<std::uint64_t>(b.data() + 32);
  h.checksum = detail::get<std::uint64_t>(b.data() + 40);
  return h;
}

/// What the receiver waits for. The payload length comes from the message's type, never from the wire.
struct expectation {
  frame_kind kind = frame_kind::data;
  std::uint64_t fingerprint = 0;
  std::uint32_t message_id = 0;
  unit_id sender = 0;
  std::uint64_t step = 0;
  std::uint64_t payload_length = 0;
};

/// Throws protocol_error unless `h` is exactly the frame expected (checked before any payload is
/// read: nothing is allocated for a frame that does not match).
inline void check(const frame_header& h, const expectation& e, std::uint64_t max_frame, const comm_context& where) {
  auto fail = [&](frame_problem p, const std::string& detail) { throw protocol_error(where, p, detail); };
  if (h.kind != e.kind)
    fail(frame_problem::bad_kind, "frame kind " + std::to_string(static_cast<int>(h.kind)) + ", expected " +
                                      std::to_string(static_cast<int>(e.kind)));
  if (h.fingerprint != e.fingerprint)
    fail(frame_problem::wrong_fingerprint, "the sender's plan fingerprint is " + std::to_string(h.fingerprint) +
                                               ", this unit's " + std::to_string(e.fingerprint));
  if (h.sender != e.sender) fail(frame_problem::wrong_sender, "the frame claims sender " + std::to_string(h.sender));
  if (h.message_id != e.message_id)
    fail(frame_problem::wrong_message, "received message " + std::to_string(h.message_id));
  if (h.step != e.step) fail(frame_problem::wrong_step, "received step " + std::to_string(h.step));
  if (h.payload_length > max_frame)
    fail(frame_problem::too_large,
         std::to_string(h.payload_length) + " bytes exceed the maximum frame of " + std::to_string(max_frame));
  if (h.payload_length != e.payload_length)
    fail(frame_problem::wrong_length,
         std::to_string(h.payload_length) + " bytes, the message has " + std::to_string(e.payload_length));
}

/// Throws protocol_error(bad_checksum) unless the payload matches the header's checksum (the
/// header alone when `payload_checksum` is false: see make_header).
inline void verify(const frame_header& h, std::span<const std::byte> payload, const comm_context& where,
                   bool payload_checksum = true) {
  if (checksum(h, payload_checksum ? payload : std::span<const std::byte>()) != h.checksum)
    throw protocol_error(where, frame_problem::bad_checksum, "the frame was corrupted on the way");
}

}  // namespace f2d2n::wire
