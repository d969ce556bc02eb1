// f2d2n/transport/endpoint.hpp: where a unit listens.
#pragma once

#include <cstdint>
#include <string>

namespace f2d2n {

/// Where a unit listens: a host name or address, and a TCP port (1 .. 65535 in a configuration).
struct endpoint {
  std::string host;
  std::uint16_t port = 0;
  friend bool operator==(const endpoint&, const endpoint&) = default;
};

}  // namespace f2d2n
