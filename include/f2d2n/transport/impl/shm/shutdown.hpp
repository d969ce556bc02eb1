// f2d2n/transport/impl/shm/shutdown.hpp: shm_transport shutting down: what was copied aside
// moved into the rings, then the goodbye. Included at the end of transport/shm.hpp.
#pragma once

#include <f2d2n/transport/shm.hpp>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <optional>

namespace f2d2n {

inline void shm_transport::close(const std::optional<shutdown_reason>& reason) {
  if (closed_.exchange(true)) return;
  if (!links_) return;
  const auto until = clock::now() + options_.linger;
  const auto bytes = reason ? wire::encode_reason(*reason) : std::vector<std::byte>{};
  for (const unit_id p : group_) {
    link& l = links_[p];
    if (p == rank_ || l.out == nullptr) continue;
    std::unique_lock lock(l.sending, std::defer_lock);
    if (lock_until(lock, until) && l.out_down.empty()) {
      const comm_context where{rank_, p, 0, 0};
      try {
        wait(
            [&] {
              push(l);
              return l.queue.empty();
            },
            until, &l, nullptr, where, "linger");
      } catch (const error&) {  // the peer is gone or slow: its goodbye says what could be said
      }
    }
    const auto n = std::min(bytes.size(), l.out->reason.size());
    if (n != 0) std::memcpy(l.out->reason.data(), bytes.data(), n);
    l.out->reason_bytes = static_cast<std::uint32_t>(n);
    l.out->goodbye.store(1, std::memory_order_release);
    detail::shm::ring_bell(l.theirs.header());
  }
}

}  // namespace f2d2n
