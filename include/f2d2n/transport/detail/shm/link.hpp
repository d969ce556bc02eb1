// f2d2n/transport/detail/shm/link.hpp: what a shm_transport keeps per peer: the frames on their
// way into the peer's ring, the frame coming out of the peer's, and the link between them.
#pragma once

#include <f2d2n/transport/detail/shm/segment.hpp>
#include <f2d2n/wire/frame.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <mutex>
#include <span>
#include <string>
#include <vector>

namespace f2d2n::detail::shm {

/// A frame on its way into a ring: borrowed from the caller (header + payload) until the call
/// returns, or kept (the rest copied) when it must outlive the call.
struct out_job {
  out_job(wire::header_bytes h, std::span<const std::byte> p) : head(h), payload(p) {}
  wire::header_bytes head;
  std::span<const std::byte> payload;
  std::vector<std::byte> kept;
  bool is_kept = false;
  std::uint64_t done = 0;
  [[nodiscard]] std::uint64_t total() const noexcept {
    return is_kept ? kept.size() : wire::header_size + payload.size();
  }
  [[nodiscard]] std::uint64_t remaining() const noexcept { return total() - done; }
  [[nodiscard]] bool finished() const noexcept { return done == total(); }
  [[nodiscard]] std::span<const std::byte> next() const noexcept {
    if (is_kept) return std::span<const std::byte>(kept).subspan(done);
    if (done < wire::header_size) return std::span<const std::byte>(head).subspan(done);
    return payload.subspan(done - wire::header_size);
  }
  void keep() {
    std::vector<std::byte> rest(remaining());
    for (std::uint64_t at = 0; at < rest.size();) {
      const auto piece = next();
      std::memcpy(rest.data() + at, piece.data(), piece.size());
      at += piece.size();
      done += piece.size();
    }
    kept = std::move(rest);
    is_kept = true;
    done = 0;
    payload = {};
  }
};

/// A frame coming out of a ring: the header first, checked, then the payload into the caller's
/// buffer, or, with a sink, handed to it range by range as it leaves the ring (receive_add).
struct in_job {
  in_job(const wire::expectation& e, std::span<std::byte> o) : expected(e), out(o) {}
  wire::expectation expected;
  std::span<std::byte> out;
  void (*sink)(void* context, std::uint64_t offset, const std::byte* bytes, std::uint64_t n) = nullptr;
  void* context = nullptr;
  wire::header_bytes head{};
  bool have_header = false;
  wire::frame_header header{};
  std::uint64_t got = 0;
};

struct link {
  detail::shm::mapping theirs;               // the peer's segment, which holds this unit's outbound ring
  detail::shm::ring_control* out = nullptr;  // this unit -> peer
  std::byte* out_data = nullptr;
  detail::shm::ring_control* in = nullptr;  // peer -> this unit (in this unit's segment)
  std::byte* in_data = nullptr;
  std::mutex sending;
  std::mutex receiving;
  std::mutex queue_mutex;  // taken by whoever moves the queue into the ring
  std::deque<out_job> queue;
  std::string out_down;  // why nothing more goes to the peer
  std::string in_down;   // why nothing more is read from it
  [[nodiscard]] std::uint64_t queued_bytes() const {
    std::uint64_t n = 0;
    for (const auto& j : queue)
      if (j.is_kept) n += j.remaining();
    return n;
  }
};

}  // namespace f2d2n::detail::shm
