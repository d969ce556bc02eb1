// f2d2n/transport/detail/tcp/handshake.hpp: the handshake's messages (the hello a unit sends, its
// encoding) and the words both sides print when two units do not match.
#pragma once

#include <f2d2n/core/unit.hpp>
#include <f2d2n/transport/endpoint.hpp>
#include <f2d2n/wire/frame.hpp>

#include <boost/archive/binary_iarchive.hpp>
#include <boost/archive/binary_oarchive.hpp>

#include <algorithm>
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
#include <string_view>
#include <vector>

namespace f2d2n::detail::tcp_impl {

/// A handshake or goodbye payload above this is refused before it is read (a hello holds the
/// sender's description of its model and plan, cut at max_description).
inline constexpr std::size_t max_handshake_payload = 65536;
inline constexpr std::size_t max_description = 60000;
/// Handshake frames: message 0 is the hello, message 1 the verdict "accepted".
inline constexpr std::uint32_t hello_message = 0;
inline constexpr std::uint32_t verdict_message = 1;

/// What a unit claims when it connects.
struct hello {
  unit_id rank = 0;
  unit_id world_size = 0;
  std::uint64_t fingerprint = 0;
  std::uint16_t version = wire::wire_version;
  std::string description;  ///< the model and plan in words (tcp_options::description), may be empty
};

/// The hello as a Boost.Serialization binary archive (no_header): five fields, native byte order.
[[nodiscard]] inline std::vector<std::byte> encode_hello(const hello& h) {
  std::ostringstream os(std::ios::binary);
  {
    boost::archive::binary_oarchive ar(os, boost::archive::no_header);
    const std::string d = h.description.substr(0, max_description);
    ar << h.rank << h.world_size << h.fingerprint << h.version << d;
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
    // The string's length is read first and checked against what is there before Boost reads it.
    std::uint64_t length = 0;
    const auto before = is.tellg();
    ar >> length;
    if (length > max_description || length > static_cast<std::uint64_t>(is.rdbuf()->in_avail())) return std::nullopt;
    is.seekg(before);
    ar >> h.description;
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

/// The first place where two descriptions of model and plan (peer_description) differ, in words:
/// "the model's layer 2 is ... on unit 0, ... on unit 1", or the plan's first differing words with
/// the words around them. Empty when they are equal.
[[nodiscard]] inline std::string description_difference(std::string_view a, std::string_view b, const std::string& ua,
                                                        const std::string& ub) {
  auto words = [](std::string_view s) {
    std::vector<std::string_view> w;
    std::size_t i = 0;
    while (i < s.size()) {
      while (i < s.size() && (s[i] == ' ' || s[i] == '\n')) ++i;
      const std::size_t j = std::min(s.find_first_of(" \n", i), s.size());
      if (j > i) w.push_back(s.substr(i, j - i));
      i = j;
    }
    return w;
  };
  auto part = [](std::string_view s, bool model) {
    const auto nl = s.find('\n');
    return model ? s.substr(0, nl) : (nl == std::string_view::npos ? std::string_view() : s.substr(nl + 1));
  };
  auto join = [](const std::vector<std::string_view>& w, std::size_t from, std::size_t to) {
    std::string t;
    for (std::size_t k = from; k < std::min(to, w.size()); ++k) t += (t.empty() ? "" : " ") + std::string(w[k]);
    return t;
  };
  for (const bool model : {true, false}) {
    const auto wa = words(part(a, model)), wb = words(part(b, model));
    std::size_t i = 0;
    while (i < wa.size() && i < wb.size() && wa[i] == wb[i]) ++i;
    if (i == wa.size() && i == wb.size()) continue;
    if (model) {
      if (i < wa.size() && i < wb.size())
        return "the model's layer " + std::to_string(i) + " is " + std::string(wa[i]) + " on " + ua + ", " +
               std::string(wb[i]) + " on " + ub;
      return "the model has " + std::to_string(wa.size()) + " layers on " + ua + ", " + std::to_string(wb.size()) +
             " on " + ub;
    }
    const std::size_t from = i >= 2 ? i - 2 : 0;
    return "the plan reads '... " + join(wa, from, i + 3) + " ...' on " + ua + ", '... " + join(wb, from, i + 3) +
           " ...' on " + ub;
  }
  return {};
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
  if (a.fingerprint != b.fingerprint) {
    add(ua + " runs plan fingerprint " + hex(a.fingerprint) + ", " + ub + " plan fingerprint " + hex(b.fingerprint));
    if (!a.description.empty() && !b.description.empty()) {
      const std::string what = description_difference(a.description, b.description, ua, ub);
      if (!what.empty()) d += ": " + what;
    }
  }
  return d;
}

}  // namespace f2d2n::detail::tcp_impl
