// tests/counting_transport.hpp: a local transport that counts the payload bytes its unit sends, in
// all and per message id (what a plan's schema or comm/schedule.hpp states).
#pragma once

#include <f2d2n/transport/local.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>

namespace f2d2n::testing {

struct counting_transport {
  local_transport& t;
  std::size_t sent = 0;
  std::map<std::uint32_t, std::size_t> by_id{};
  [[nodiscard]] unit_id rank() const noexcept { return t.rank(); }
  [[nodiscard]] unit_id world_size() const noexcept { return t.world_size(); }
  [[nodiscard]] std::uint64_t fingerprint() const noexcept { return t.fingerprint(); }
  void send(unit_id peer, const wire::frame_header& h, std::span<const std::byte> payload, deadline until) {
    sent += payload.size();
    by_id[h.message_id] += payload.size();
    t.send(peer, h, payload, until);
  }
  wire::frame_header receive(unit_id peer, const wire::expectation& e, std::span<std::byte> out, deadline until) {
    return t.receive(peer, e, out, until);
  }
  void shutdown() { t.shutdown(); }
  void shutdown(const shutdown_reason& r) { t.shutdown(r); }
};
static_assert(transport<counting_transport>);

}  // namespace f2d2n::testing
