// f2d2n/transport/detail/shm/segment.hpp: a shared-memory unit's segment: its header (owner,
// layout, doorbell), the rings' control blocks, the doorbell's futex calls, copies into and out of
// a ring, and the mapping of a segment.
#pragma once

#include <f2d2n/core/unit.hpp>
#include <f2d2n/transport/concept.hpp>
#include <f2d2n/wire/goodbye.hpp>

#include <linux/futex.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

namespace f2d2n {

namespace detail::shm {

inline constexpr std::uint64_t segment_magic = 0x314d485344324632ull;  // "2F2DSHM1"
inline constexpr std::uint32_t layout_version = 1;
inline constexpr std::size_t reason_capacity = wire::reason_prefix + wire::max_reason_text;

/// The start of a segment: who owns it, and its doorbell.
struct segment_header {
  std::atomic<std::uint64_t> magic;  // segment_magic once the rest is written
  std::uint32_t layout;
  std::uint32_t wire;
  std::uint32_t rank;
  std::uint32_t world_size;
  std::uint64_t fingerprint;
  std::uint64_t ring_bytes;
  std::uint64_t rings;
  std::uint64_t total_bytes;
  std::uint32_t payload_checksums;
  std::int32_t pid;
  alignas(64) std::atomic<std::uint32_t> bell;      // bumped by whoever has news for the owner
  std::atomic<std::uint32_t> sleepers;              // the owner's threads asleep on bell
  alignas(64) std::atomic<std::uint32_t> attached;  // peers that have mapped this segment
  std::atomic<std::uint32_t> seen;                  // peers that have looked at it (attached or refused)
  std::atomic<std::uint32_t> failed;                // the owner could not start: failure says why
  std::array<char, 1024> failure;
};

/// The control block of one ring: written by its sender (head, goodbye) and its owner (tail).
struct ring_control {
  alignas(64) std::atomic<std::uint64_t> head;  // bytes ever written
  alignas(64) std::atomic<std::uint64_t> tail;  // bytes ever read
  alignas(64) std::atomic<std::uint32_t> goodbye;
  std::uint32_t reason_bytes;
  std::array<std::byte, reason_capacity> reason;
};

static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::uint32_t>::is_always_lock_free);

[[nodiscard]] constexpr std::uint64_t round_up(std::uint64_t n, std::uint64_t to) { return (n + to - 1) / to * to; }
[[nodiscard]] constexpr std::uint64_t ring_stride(std::uint64_t ring_bytes) {
  return round_up(sizeof(ring_control), 64) + round_up(ring_bytes, 64);
}
[[nodiscard]] constexpr std::uint64_t header_stride() { return round_up(sizeof(segment_header), 4096); }
[[nodiscard]] constexpr std::uint64_t segment_bytes(std::uint64_t rings, std::uint64_t ring_bytes) {
  return header_stride() + rings * ring_stride(ring_bytes);
}

inline void ring_bell(segment_header& h) {
  h.bell.fetch_add(1, std::memory_order_seq_cst);
  if (h.sleepers.load(std::memory_order_seq_cst) != 0)
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&h.bell), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

inline void sleep_on_bell(segment_header& h, std::uint32_t seen, clock::duration d) {
  const auto ns = std::max<std::int64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count(), 1000);
  timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&h.bell), FUTEX_WAIT, seen, &ts, nullptr, 0);
}

/// Copies between a ring of `cap` bytes and flat memory, at the ring's byte position `pos`.
inline void to_ring(std::byte* ring, std::uint64_t cap, std::uint64_t pos, const std::byte* src, std::uint64_t n) {
  const auto at = pos % cap, first = std::min(n, cap - at);
  std::memcpy(ring + at, src, first);
  if (n > first) std::memcpy(ring, src + first, n - first);
}
inline void from_ring(const std::byte* ring, std::uint64_t cap, std::uint64_t pos, std::byte* dst, std::uint64_t n) {
  const auto at = pos % cap, first = std::min(n, cap - at);
  std::memcpy(dst, ring + at, first);
  if (n > first) std::memcpy(dst + first, ring, n - first);
}

/// Adds a payload of S elements into dst as its bytes leave a ring, in ranges that may split an
/// element (at the ring's end): the split element's bytes wait in `carry`.
template <class S>
struct adder {
  S* dst;
  std::array<std::byte, sizeof(S)> carry{};
  std::size_t carried = 0;

  static void consume(void* self, std::uint64_t offset, const std::byte* p, std::uint64_t n) {
    auto& a = *static_cast<adder*>(self);
    if (a.carried != 0) {
      const auto take = std::min<std::uint64_t>(n, sizeof(S) - a.carried);
      std::memcpy(a.carry.data() + a.carried, p, take);
      a.carried += take, p += take, n -= take, offset += take;
      if (a.carried < sizeof(S)) return;
      S v;
      std::memcpy(&v, a.carry.data(), sizeof(S));
      a.dst[offset / sizeof(S) - 1] += v;
      a.carried = 0;
    }
    S* d = a.dst + offset / sizeof(S);
    const std::uint64_t whole = n / sizeof(S);
    for (std::uint64_t k = 0; k < whole; ++k) {
      S v;
      std::memcpy(&v, p + k * sizeof(S), sizeof(S));  // the ring's bytes need not be aligned for S
      d[k] += v;
    }
    a.carried = n % sizeof(S);
    std::memcpy(a.carry.data(), p + whole * sizeof(S), a.carried);
  }
};

/// A mapped segment: its descriptor (which the owner holds an exclusive flock on), its memory.
class mapping {
 public:
  mapping() = default;
  mapping(int fd, void* base, std::size_t bytes) : fd_(fd), base_(base), bytes_(bytes) {}
  mapping(mapping&& o) noexcept { *this = std::move(o); }
  mapping& operator=(mapping&& o) noexcept {
    std::swap(fd_, o.fd_);
    std::swap(base_, o.base_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~mapping() {
    if (base_ != nullptr) munmap(base_, bytes_);
    if (fd_ >= 0) ::close(fd_);
  }
  [[nodiscard]] int fd() const noexcept { return fd_; }
  [[nodiscard]] std::byte* base() const noexcept { return static_cast<std::byte*>(base_); }
  [[nodiscard]] segment_header& header() const noexcept { return *reinterpret_cast<segment_header*>(base_); }
  [[nodiscard]] explicit operator bool() const noexcept { return base_ != nullptr; }
  /// Whether the owner is alive: it holds its lock (a crashed process's lock is gone).
  [[nodiscard]] bool owner_alive() const {
    if (::flock(fd_, LOCK_SH | LOCK_NB) == 0) {
      ::flock(fd_, LOCK_UN);
      return false;
    }
    return true;
  }

 private:
  int fd_ = -1;
  void* base_ = nullptr;
  std::size_t bytes_ = 0;
};

[[nodiscard]] inline std::string system_message(int e) { return std::system_category().message(e); }

}  // namespace detail::shm

}  // namespace f2d2n
