// f2d2n/transport/detail/tcp/handshake.hpp: the handshake's messages (the hello a unit sends, its
// encoding) and the words both sides print when two units do not match.
#pragma once

#include <f2d2n/core/unit.hpp>
#include <f2d2n/transport/endpoint.hpp>
#include <f2d2n/wire/frame.hpp>

#include <boost/archive/binary_iarchive.hpp>
#include <boost/archive/binary_oarchive.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <ios>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <vector>

namespace f2d2n::detail::tcp_impl {

/// A handshake or goodbye payload above this is refused before it is read.
inline constexpr std::size_t max_handshake_payload = 4096;
/// Handshake frames: message 0 is the hello, message 1 the verdict "accepted".
inline constexpr std::uint32_t hello_message = 0;
inline constexpr std::uint32_t verdict_message = 1;

/// What a unit claims when it connects.
struct hello {
  unit_id rank = 0;
  unit_id world_size = 0;
  std::uint64_t fingerprint = 0;
  std::uint16_t version = wire::wire_version;
};

/// The hello as a Boost.Serialization binary archive (no_header): four fields, native byte order.
[[nodiscard]] inline std::vector<std::byte> encode_hello(const hello& h) {
  std::ostringstream os(std::ios::binary);
  {
    boost::archive::binary_oarchive ar(os, boost::archive::no_header);
    ar << h.rank << h.world_size << h.fingerprint << h.version;
  }
  const std::string s = os.str();
  std::vector<std::byte> bytes(s.size());
  if (!s.empty()) std::memcpy(bytes.data(), s.data(), s.size());
  return bytes;
}

/// The hello in `bytes`, or nothing when they are not exactly one encoded hello.
[[nodiscard]] inline std::optional<hello> decode_hello(std::span<const std::byte> bytes) {
  try {
    std::istringstream is(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()), std::ios::binary);
    boost::archive::binary_iarchive ar(is, boost::archive::no_header);
    hello h;
    ar >> h.rank >> h.world_size >> h.fingerprint >> h.version;
    if (is.rdbuf()->in_avail() != 0) return std::nullopt;  // trailing bytes: not a hello of this version
    return h;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

/// A goodbye's payload: its text.
[[nodiscard]] inline std::string text_of(std::span<const std::byte> p) {
  return {reinterpret_cast<const char*>(p.data()), p.size()};
}

[[nodiscard]] inline std::string hex(std::uint64_t v) {
  std::array<char, 19> b{};
  std::snprintf(b.data(), b.size(), "0x%016llx", static_cast<unsigned long long>(v));
  return b.data();
}

/// An endpoint as host:port ([host]:port for IPv6; 127.0.0.1 when the host is empty).
[[nodiscard]] inline std::string describe(const endpoint& e) {
  const std::string host = e.host.empty() ? std::string("127.0.0.1") : e.host;
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(e.port);
}

/// What differs between two claims, in words both sides can print ("" when nothing does).
[[nodiscard]] inline std::string differences(const hello& a, const hello& b) {
  std::string d;
  auto add = [&d](const std::string& s) { d += (d.empty() ? "" : "; ") + s; };
  const std::string ua = "unit " + std::to_string(a.rank), ub = "unit " + std::to_string(b.rank);
  if (a.version != b.version)
    add(ua + " speaks wire version " + std::to_string(a.version) + ", " + ub + " version " + std::to_string(b.version));
  if (a.world_size != b.world_size)
    add(ua + " has world size " + std::to_string(a.world_size) + ", " + ub + " world size " +
        std::to_string(b.world_size));
  if (a.fingerprint != b.fingerprint)
    add(ua + " runs plan fingerprint " + hex(a.fingerprint) + ", " + ub + " plan fingerprint " + hex(b.fingerprint));
  return d;
}

}  // namespace f2d2n::detail::tcp_impl
