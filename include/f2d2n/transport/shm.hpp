// f2d2n/transport/shm.hpp: units on one host that talk through shared memory: shm_transport.
//
//   // units 0..3 of one host, each in its own process, all naming the same segment prefix:
//   f2d2n::shm_transport t(rank, 4, {0, 1, 2, 3}, "f2d2n-run-42", plan_fingerprint);
//
// Each unit creates one POSIX shared-memory segment (/dev/shm/<prefix>-<rank>, mode 0600) that
// holds its inbound rings, one single-producer single-consumer byte ring per peer of the group,
// and its doorbell. A sender copies the frame (header, then payload) into its slot of the
// receiver's segment and rings the receiver's doorbell; the receiver checks the header against
// what it expects before the payload is copied into the caller's buffer, then frees the ring
// space and rings the sender's doorbell. Frames larger than a ring stream through it in pieces.
// A wait spins for shm_options::spin, then sleeps on its unit's doorbell (a futex in the segment):
// nothing spins longer than that, so units may share cores with compute threads.
//
// Starting: every unit creates its segment (replacing one left by a crashed run: no live process
// holds its lock), opens every peer's, checks it (layout, wire version, world, rank, plan
// fingerprint, ring size, checksum setting: a mismatch is a handshake_error naming the peer and
// what differs), tells the owner it is attached, and waits until all its peers are attached to
// its own; it then unlinks its segment's name, so nothing is left in /dev/shm once a cluster has
// started. Each unit holds an exclusive flock on its segment while it lives: a peer that dies
// without a goodbye is seen by the units waiting on it (they try the lock every
// shm_options::liveness_interval) and reported as peer_error "the peer's process has died".
//
// send() returns once the frame is in the ring, or, where the ring is full, once the rest is
// copied (up to shm_options::send_buffer per peer); that copy moves into the ring whenever this
// unit waits in the transport (any call, any thread) and at shutdown. exchange() moves its frame
// and the one it receives through both rings in turn, nothing copied but into and out of the
// rings. Every wait has a deadline. See docs/shm.md.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/core/unit.hpp>
#include <f2d2n/transport/concept.hpp>
#include <f2d2n/wire/frame.hpp>
#include <f2d2n/wire/goodbye.hpp>

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

namespace f2d2n {

/// How a shm_transport sizes its rings and waits.
struct shm_options {
  /// Bytes of each inbound ring (one per peer of the group); larger frames stream through.
  std::uint64_t ring_bytes = std::uint64_t{4} << 20;
  /// How long the constructor may take to find every peer's segment and see every peer attached.
  std::chrono::milliseconds connect_timeout{10000};
  /// How long a wait polls before it sleeps on the doorbell.
  std::chrono::microseconds spin{20};
  /// How often a sleeping wait checks that the peers it waits on are alive.
  std::chrono::milliseconds liveness_interval{50};
  /// The largest payload accepted (checked before anything is copied).
  std::uint64_t max_frame = wire::default_max_frame;
  /// Bytes per peer that send() may copy when the ring cannot take the frame yet.
  std::uint64_t send_buffer = std::uint64_t{256} << 20;
  /// How long shutdown() may spend moving copied frames into the rings before the goodbye.
  std::chrono::milliseconds linger{2000};
  /// Whether frames carry a checksum of their payload (the header is always covered). Off by
  /// default: the bytes never leave this host's memory.
  bool payload_checksums = false;
  /// Pieces the rings of comm/primitives.hpp send ahead of their receives when a call leaves it to
  /// the transport (call_options::pipeline): a send is a copy into the peer's ring, so the next
  /// pieces are there when the peer wants them.
  std::size_t ring_pipeline = 2;
};

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

/// One unit's end of a group of units on one host that talk through shared memory (see the top
/// of this file). Units outside `group` cannot be reached through it (mixed_transport routes them
/// over TCP).
class shm_transport {
 public:
  /// Creates this unit's segment "/<prefix>-<rank>", opens those of the other units in `group`
  /// (ranks of one host, this one among them) and waits until each has opened this unit's, within
  /// options.connect_timeout. `prefix`: letters, digits, '.', '_', '-', at most 200 characters,
  /// the same for the whole group and unique to the cluster on its host. Throws handshake_error
  /// (a peer of another plan, layout or setting), timeout_error (a peer that did not come),
  /// configuration_error (a bad prefix or group, a live unit holding this unit's segment).
  shm_transport(unit_id rank, unit_id world_size, std::vector<unit_id> group, std::string prefix,
                std::uint64_t fingerprint, shm_options options = {})
      : rank_(rank), world_(world_size), fingerprint_(fingerprint), prefix_(std::move(prefix)), options_(options) {
    std::sort(group.begin(), group.end());
    group.erase(std::unique(group.begin(), group.end()), group.end());
    validate(group);
    group_ = std::move(group);
    links_ = std::make_unique<link[]>(world_);
    const auto until = clock::now() + options_.connect_timeout;
    create_own();
    const auto others = static_cast<std::uint32_t>(group_.size() - 1);
    try {
      for (const unit_id p : group_)
        if (p != rank_) attach(p, until);
      const comm_context where{rank_, rank_, 0, 0};
      wait(
          [&] {
            check_attached_peers();
            return own_.header().attached.load(std::memory_order_acquire) >= others;
          },
          until, nullptr, nullptr, where, "not every unit of the group opened this unit's shared memory before the deadline");
    } catch (const std::exception& e) {
      // Say why in the segment, and keep its name until every peer has looked (or the deadline),
      // so that the peers report this failure instead of waiting for this unit until theirs.
      auto& h = own_.header();
      const std::string why = e.what();
      const auto n = std::min(why.size(), h.failure.size() - 1);
      std::memcpy(h.failure.data(), why.data(), n);
      h.failure[n] = '\0';
      h.failed.store(1, std::memory_order_release);
      detail::shm::ring_bell(h);
      for (const unit_id p : group_)
        if (p != rank_ && links_[p].out != nullptr) detail::shm::ring_bell(links_[p].theirs.header());
      try {
        wait([&] { return h.seen.load(std::memory_order_acquire) >= others; }, until, nullptr, nullptr,
             comm_context{rank_, rank_, 0, 0}, "");
      } catch (const error&) {
      }
      ::shm_unlink(name_of(rank_).c_str());
      throw;
    }
    ::shm_unlink(name_of(rank_).c_str());
  }
  shm_transport(const shm_transport&) = delete;
  shm_transport& operator=(const shm_transport&) = delete;
  ~shm_transport() { shutdown(); }

  [[nodiscard]] unit_id rank() const noexcept { return rank_; }
  [[nodiscard]] unit_id world_size() const noexcept { return world_; }
  [[nodiscard]] std::uint64_t fingerprint() const noexcept { return fingerprint_; }
  [[nodiscard]] bool payload_checksums() const noexcept { return options_.payload_checksums; }
  [[nodiscard]] std::size_t ring_pipeline() const noexcept { return options_.ring_pipeline; }
  [[nodiscard]] const shm_options& options() const noexcept { return options_; }
  /// The ranks this transport reaches (this unit's among them), in order.
  [[nodiscard]] const std::vector<unit_id>& group() const noexcept { return group_; }
  /// Whether `peer` is reached through this transport.
  [[nodiscard]] bool reaches(unit_id peer) const noexcept { return peer < world_ && links_[peer].out != nullptr; }

  void send(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload, deadline until) {
    send_with(peer, header, payload, until, options_.send_buffer);
  }

  /// send() that returns only once the whole frame is in the peer's ring (nothing copied aside):
  /// for a caller that next waits on something else than this transport (mixed_transport).
  void send_whole(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload,
                  deadline until) {
    send_with(peer, header, payload, until, 0);
  }

 private:
  void send_with(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload, deadline until,
                 std::uint64_t budget) {
    const comm_context where{rank_, peer, header.message_id, header.step};
    link& l = usable(peer, where, payload.size());
    std::unique_lock lock(l.sending, std::defer_lock);
    if (!lock_until(lock, until)) throw timeout_error(where, "another send to this peer took until the deadline");
    check_out(l, where);
    out_job& job = l.queue.emplace_back(wire::encode(header), payload);
    const auto settle = [&] {
      push(l);
      if (job.finished()) return true;
      if (job.remaining() <= budget - std::min(budget, l.queued_bytes())) {
        job.keep();
        return true;
      }
      return false;
    };
    try {
      wait(settle, until, &l, nullptr, where, "the peer did not take the frame before the deadline");
    } catch (...) {
      drop_borrowed(l, where);
      throw;
    }
    if (job.finished()) l.queue.pop_back();
  }

 public:
  wire::frame_header receive(unit_id peer, const wire::expectation& expected, std::span<std::byte> out,
                             deadline until) {
    const comm_context where{rank_, peer, expected.message_id, expected.step};
    link& l = usable(peer, where, 0);
    fits(expected, out);
    std::unique_lock lock(l.receiving, std::defer_lock);
    if (!lock_until(lock, until))
      throw timeout_error(where, "another receive from this peer took until the deadline");
    in_job job{expected, out};
    guarded_receive(l, where, [&] {
      wait([&] { return pull(l, job, where); }, until, nullptr, &l, where, "no frame arrived before the deadline");
    });
    return job.header;
  }

  /// Receives the next frame from `peer` as receive() does, but adds its payload, elements of S,
  /// into `into` straight from the ring, instead of storing it (a reduce-scatter's piece: no copy
  /// through scratch memory). Returns false, having done nothing, where frames carry payload
  /// checksums (the payload must be whole before it is checked): the caller then receives and adds.
  /// After a failure `into` holds part of the sum, as receive()'s buffer holds part of a frame.
  template <class S>
  bool receive_add(unit_id peer, const wire::expectation& expected, std::span<S> into, deadline until) {
    static_assert(std::is_arithmetic_v<S>);
    if (options_.payload_checksums) return false;
    const comm_context where{rank_, peer, expected.message_id, expected.step};
    link& l = usable(peer, where, 0);
    fits(expected, std::as_writable_bytes(into));
    std::unique_lock lock(l.receiving, std::defer_lock);
    if (!lock_until(lock, until))
      throw timeout_error(where, "another receive from this peer took until the deadline");
    detail::shm::adder<S> add{into.data()};
    in_job job{expected, std::as_writable_bytes(into)};
    job.sink = &detail::shm::adder<S>::consume;
    job.context = &add;
    guarded_receive(l, where, [&] {
      wait([&] { return pull(l, job, where); }, until, nullptr, &l, where, "no frame arrived before the deadline");
    });
    return true;
  }

  /// Sends a frame to `to` while receiving the next one from `from`: both move through their
  /// rings in turn, so that a ring step in which every unit sends before it receives cannot
  /// deadlock whatever the frame's size. Returns once both are done (or the rest of the sent
  /// frame is copied, as in send()).
  wire::frame_header exchange(unit_id to, const wire::frame_header& header, std::span<const std::byte> payload,
                              unit_id from, const wire::expectation& expected, std::span<std::byte> out,
                              deadline until) {
    const comm_context to_where{rank_, to, header.message_id, header.step};
    const comm_context from_where{rank_, from, expected.message_id, expected.step};
    link& lt = usable(to, to_where, payload.size());
    link& lf = usable(from, from_where, 0);
    fits(expected, out);
    std::unique_lock send_lock(lt.sending, std::defer_lock);
    if (!lock_until(send_lock, until))
      throw timeout_error(to_where, "another send to this peer took until the deadline");
    std::unique_lock receive_lock(lf.receiving, std::defer_lock);
    if (!lock_until(receive_lock, until))
      throw timeout_error(from_where, "another receive from this peer took until the deadline");
    check_out(lt, to_where);
    out_job& job = lt.queue.emplace_back(wire::encode(header), payload);
    in_job in{expected, out};
    bool received = false;
    try {
      guarded_receive(lf, from_where, [&] {
        wait(
            [&] {
              push(lt);
              received = received || pull(lf, in, from_where);
              return received && job.finished();
            },
            until, &lt, &lf, received ? to_where : from_where, "the exchange did not complete before the deadline");
      });
    } catch (...) {
      // Keep the stream to `to` whole where the frame's rest fits the send buffer.
      if (job.finished())
        lt.queue.pop_back();
      else if (job.remaining() <= options_.send_buffer - std::min(options_.send_buffer, lt.queued_bytes()))
        job.keep();
      else
        drop_borrowed(lt, to_where);
      throw;
    }
    lt.queue.pop_back();
    return in.header;
  }

  void shutdown() { close(std::nullopt); }
  void shutdown(const shutdown_reason& reason) { close(reason); }

 private:
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
    detail::shm::mapping theirs;                   // the peer's segment, which holds this unit's outbound ring
    detail::shm::ring_control* out = nullptr;      // this unit -> peer
    std::byte* out_data = nullptr;
    detail::shm::ring_control* in = nullptr;       // peer -> this unit (in this unit's segment)
    std::byte* in_data = nullptr;
    std::mutex sending;
    std::mutex receiving;
    std::mutex queue_mutex;                        // taken by whoever moves the queue into the ring
    std::deque<out_job> queue;
    std::string out_down;                          // why nothing more goes to the peer
    std::string in_down;                           // why nothing more is read from it
    [[nodiscard]] std::uint64_t queued_bytes() const {
      std::uint64_t n = 0;
      for (const auto& j : queue)
        if (j.is_kept) n += j.remaining();
      return n;
    }
  };

  [[nodiscard]] std::string name_of(unit_id r) const { return "/" + prefix_ + "-" + std::to_string(r); }
  [[nodiscard]] std::size_t slot_in(unit_id owner, unit_id sender) const {
    const auto pos = [&](unit_id r) {
      return static_cast<std::size_t>(std::lower_bound(group_.begin(), group_.end(), r) - group_.begin());
    };
    const auto s = pos(sender);
    return s > pos(owner) ? s - 1 : s;
  }
  [[nodiscard]] detail::shm::ring_control* ring_at(std::byte* base, std::size_t slot) const {
    return reinterpret_cast<detail::shm::ring_control*>(base + detail::shm::header_stride() +
                                                        slot * detail::shm::ring_stride(options_.ring_bytes));
  }
  [[nodiscard]] static std::byte* data_of(detail::shm::ring_control* c) {
    return reinterpret_cast<std::byte*>(c) + detail::shm::round_up(sizeof(detail::shm::ring_control), 64);
  }

  void validate(const std::vector<unit_id>& group) const {
    auto fail = [](const std::string& what) { throw configuration_error("f2d2n: shm_transport: " + what); };
    if (world_ == 0 || rank_ >= world_)
      fail("rank " + std::to_string(rank_) + " is outside a world of " + std::to_string(world_) + " units");
    if (!std::binary_search(group.begin(), group.end(), rank_))
      fail("the group does not hold this unit's rank " + std::to_string(rank_));
    if (group.back() >= world_)
      fail("the group names unit " + std::to_string(group.back()) + ", outside a world of " + std::to_string(world_));
    if (prefix_.empty() || prefix_.size() > 200 ||
        !std::all_of(prefix_.begin(), prefix_.end(), [](char c) {
          return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                 c == '-';
        }))
      fail("the segment prefix \"" + prefix_ + "\" is not 1-200 letters, digits, '.', '_' or '-'");
    if (options_.ring_bytes < 4096 || options_.ring_bytes > (std::uint64_t{1} << 34))
      fail("shm_options::ring_bytes is " + std::to_string(options_.ring_bytes) + ", outside 4096 .. 2^34");
  }

  [[nodiscard]] std::uint64_t rings() const { return group_.size() - 1; }

  void create_own() {
    namespace s = detail::shm;
    const auto name = name_of(rank_);
    const auto bytes = s::segment_bytes(rings(), options_.ring_bytes);
    for (int attempt = 0;; ++attempt) {
      const int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
      if (fd >= 0) {
        if (::flock(fd, LOCK_EX | LOCK_NB) != 0 || ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
          const int e = errno;
          ::close(fd);
          ::shm_unlink(name.c_str());
          throw configuration_error("f2d2n: shm_transport: cannot size /dev/shm" + name + ": " + s::system_message(e));
        }
        void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (base == MAP_FAILED) {
          const int e = errno;
          ::close(fd);
          ::shm_unlink(name.c_str());
          throw configuration_error("f2d2n: shm_transport: cannot map /dev/shm" + name + " (" + std::to_string(bytes) +
                                    " bytes): " + s::system_message(e));
        }
        own_ = s::mapping(fd, base, bytes);
        break;
      }
      if (errno != EEXIST || attempt == 3)
        throw configuration_error("f2d2n: shm_transport: cannot create /dev/shm" + name + ": " +
                                  s::system_message(errno));
      // A segment of that name exists: a crashed run's (nobody holds its lock), replaced; or a live unit's.
      const int old = ::shm_open(name.c_str(), O_RDWR, 0600);
      if (old < 0) continue;  // gone meanwhile
      const bool live = ::flock(old, LOCK_EX | LOCK_NB) != 0;
      ::close(old);
      if (live)
        throw configuration_error("f2d2n: shm_transport: a live process holds /dev/shm" + name +
                                  ": another cluster with the same segment prefix runs on this host");
      ::shm_unlink(name.c_str());
    }
    auto* h = new (own_.base()) s::segment_header{};
    h->layout = s::layout_version;
    h->wire = wire::wire_version;
    h->rank = rank_;
    h->world_size = world_;
    h->fingerprint = fingerprint_;
    h->ring_bytes = options_.ring_bytes;
    h->rings = rings();
    h->total_bytes = s::segment_bytes(rings(), options_.ring_bytes);
    h->payload_checksums = options_.payload_checksums ? 1 : 0;
    h->pid = static_cast<std::int32_t>(::getpid());
    for (std::size_t i = 0; i < rings(); ++i) new (ring_at(own_.base(), i)) s::ring_control{};
    h->magic.store(s::segment_magic, std::memory_order_release);
    for (const unit_id p : group_) {
      if (p == rank_) continue;
      links_[p].in = ring_at(own_.base(), slot_in(rank_, p));
      links_[p].in_data = data_of(links_[p].in);
    }
  }

  /// Opens unit `p`'s segment (retrying until it exists, is written and has a live owner), checks it and attaches.
  void attach(unit_id p, deadline until) {
    namespace s = detail::shm;
    const comm_context where{rank_, p, 0, 0};
    const auto name = name_of(p);
    auto nap = std::chrono::microseconds(200);
    std::string last = "its segment /dev/shm" + name + " does not exist";
    for (;;) {
      if (clock::now() >= until)
        throw timeout_error(where, "unit " + std::to_string(p) + " did not start its shared memory before the deadline (" +
                                       last + ")");
      if (auto m = open_segment(name, last)) {
        if (m->owner_alive()) {
          m->header().seen.fetch_add(1, std::memory_order_acq_rel);
          s::ring_bell(m->header());
          refused_by(p, m->header(), where);
          check_peer_segment(p, m->header(), where);
          links_[p].theirs = std::move(*m);
          links_[p].out = ring_at(links_[p].theirs.base(), slot_in(p, rank_));
          links_[p].out_data = data_of(links_[p].out);
          links_[p].theirs.header().attached.fetch_add(1, std::memory_order_acq_rel);
          s::ring_bell(links_[p].theirs.header());
          return;
        }
        last = "its segment /dev/shm" + name + " was left by a process that has died";
      }
      check_attached_peers();
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::microseconds(10000));
    }
  }

  [[nodiscard]] std::optional<detail::shm::mapping> open_segment(const std::string& name, std::string& why) const {
    namespace s = detail::shm;
    const int fd = ::shm_open(name.c_str(), O_RDWR, 0600);
    if (fd < 0) {
      why = "its segment /dev/shm" + name + (errno == ENOENT ? " does not exist" : ": " + s::system_message(errno));
      return std::nullopt;
    }
    struct stat st{};
    if (::fstat(fd, &st) != 0 || static_cast<std::uint64_t>(st.st_size) < s::header_stride()) {
      ::close(fd);
      why = "its segment /dev/shm" + name + " is not sized yet";
      return std::nullopt;
    }
    const auto bytes = static_cast<std::size_t>(st.st_size);
    void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
      why = "cannot map /dev/shm" + name + ": " + s::system_message(errno);
      ::close(fd);
      return std::nullopt;
    }
    s::mapping m(fd, base, bytes);
    const auto& h = m.header();
    if (h.magic.load(std::memory_order_acquire) != s::segment_magic) {
      why = "its segment /dev/shm" + name + " is not written yet";
      return std::nullopt;
    }
    if (h.total_bytes != bytes) {
      why = "its segment /dev/shm" + name + " is " + std::to_string(bytes) + " bytes, its header says " +
            std::to_string(h.total_bytes);
      return std::nullopt;
    }
    return m;
  }

  /// Throws handshake_error when unit p could not start (its segment says why).
  void refused_by(unit_id p, const detail::shm::segment_header& h, const comm_context& where) const {
    if (h.failed.load(std::memory_order_acquire) == 0) return;
    std::string why(h.failure.data(), strnlen(h.failure.data(), h.failure.size()));
    throw handshake_error(where, "unit " + std::to_string(p) + " could not start its shared memory: " + why);
  }
  void check_attached_peers() const {
    for (const unit_id p : group_)
      if (p != rank_ && links_[p].out != nullptr) refused_by(p, links_[p].theirs.header(), comm_context{rank_, p, 0, 0});
  }

  void check_peer_segment(unit_id p, const detail::shm::segment_header& h, const comm_context& where) const {
    std::string differ;
    const auto compare = [&](const char* what, std::uint64_t theirs, std::uint64_t mine) {
      if (theirs != mine)
        differ += std::string(differ.empty() ? "" : ", ") + what + " " + std::to_string(theirs) + " (this unit: " +
                  std::to_string(mine) + ")";
    };
    compare("segment layout", h.layout, detail::shm::layout_version);
    compare("wire version", h.wire, wire::wire_version);
    compare("rank", h.rank, p);
    compare("world size", h.world_size, world_);
    compare("plan fingerprint", h.fingerprint, fingerprint_);
    compare("ring bytes", h.ring_bytes, options_.ring_bytes);
    compare("rings", h.rings, rings());
    compare("payload checksums", h.payload_checksums, options_.payload_checksums ? 1 : 0);
    if (!differ.empty())
      throw handshake_error(where, "unit " + std::to_string(p) + " (process " + std::to_string(h.pid) +
                                       ") differs in its shared memory: " + differ);
  }

  link& usable(unit_id peer, const comm_context& where, std::size_t payload_bytes) {
    if (peer >= world_ || peer == rank_ || links_[peer].out == nullptr)
      throw configuration_error("f2d2n: shm_transport: unit " + std::to_string(peer) +
                                " is not a peer of this unit's shared-memory group");
    if (closed_.load(std::memory_order_acquire)) throw peer_error(where, "this unit has shut down its transport");
    if (payload_bytes > options_.max_frame)
      throw protocol_error(where, frame_problem::too_large,
                           std::to_string(payload_bytes) + " bytes exceed the maximum frame of " +
                               std::to_string(options_.max_frame));
    return links_[peer];
  }

  /// Takes `lock` by `until`: another thread of this unit using the same peer and direction holds
  /// it for at most its own call (rare: the plans' two threads use different peers), so a short
  /// poll with sleeps serves.
  static bool lock_until(std::unique_lock<std::mutex>& lock, deadline until) {
    for (auto nap = std::chrono::microseconds(20);; nap = std::min(nap * 2, std::chrono::microseconds(1000))) {
      if (lock.try_lock()) return true;
      const auto now = clock::now();
      if (now >= until) return false;
      std::this_thread::sleep_for(std::min<clock::duration>(nap, until - now));
    }
  }

  static void fits(const wire::expectation& expected, std::span<std::byte> out) {
    if (expected.payload_length > out.size())
      throw configuration_error("f2d2n: shm_transport: a receive of " + std::to_string(expected.payload_length) +
                                " bytes into a buffer of " + std::to_string(out.size()));
  }

  static void check_out(const link& l, const comm_context& where) {
    if (!l.out_down.empty()) throw peer_error(where, l.out_down);
  }

  /// The borrowed frame at the back of l's queue could not be sent whole: the stream to the peer is cut.
  void drop_borrowed(link& l, const comm_context&) {
    const auto& job = l.queue.back();
    if (!job.is_kept && job.done != 0 && !job.finished())
      l.out_down = "an earlier frame to this peer was cut off after " + std::to_string(job.done) + " of " +
                   std::to_string(job.total()) + " bytes; the stream to this peer is unusable";
    const bool started = !job.is_kept && job.done != 0;
    l.queue.pop_back();
    if (started) l.queue.clear();
  }

  template <class F>
  void guarded_receive(link& l, const comm_context& where, F&& f) {
    if (!l.in_down.empty()) throw peer_error(where, l.in_down);
    try {
      f();
    } catch (const protocol_error& e) {
      l.in_down = std::string("an earlier frame from this peer was rejected (") + to_string(e.problem()) +
                  "); the stream from this peer is out of sync";
      throw;
    }
  }

  /// Moves l's queue into its ring as far as there is room. Returns whether anything moved.
  bool push(link& l) {
    const std::lock_guard lock(l.queue_mutex);
    return push_locked(l);
  }
  bool push_locked(link& l) {
    const std::uint64_t cap = options_.ring_bytes;
    std::uint64_t head = l.out->head.load(std::memory_order_relaxed);
    const std::uint64_t tail = l.out->tail.load(std::memory_order_acquire);
    std::uint64_t room = cap - (head - tail);
    bool moved = false;
    for (auto& job : l.queue) {
      while (room != 0 && !job.finished()) {
        const auto piece = job.next();
        const auto n = std::min<std::uint64_t>(room, piece.size());
        detail::shm::to_ring(l.out_data, cap, head, piece.data(), n);
        head += n;
        room -= n;
        job.done += n;
        moved = true;
      }
      if (!job.finished()) break;
    }
    if (moved) {
      l.out->head.store(head, std::memory_order_release);
      detail::shm::ring_bell(l.theirs.header());
      while (!l.queue.empty() && l.queue.front().is_kept && l.queue.front().finished()) l.queue.pop_front();
    }
    return moved;
  }

  /// Moves the copied frames of every peer that no send is using now (`held`: the one whose send
  /// lock the calling thread holds).
  void push_others(const link* held) {
    for (const unit_id p : group_) {
      link& l = links_[p];
      if (p == rank_ || &l == held) continue;
      std::unique_lock lock(l.sending, std::try_to_lock);
      if (lock.owns_lock() && !l.queue.empty()) push(l);
    }
  }

  /// Takes what has arrived from l into `job`; returns whether the frame is complete. Throws
  /// protocol_error for a frame that is not the one expected, peer_error once the peer has said
  /// goodbye and nothing more is in the ring.
  bool pull(link& l, in_job& job, const comm_context& where) {
    const std::uint64_t cap = options_.ring_bytes;
    std::uint64_t tail = l.in->tail.load(std::memory_order_relaxed);
    std::uint64_t head = l.in->head.load(std::memory_order_acquire);
    const std::uint64_t start = tail;
    if (!job.have_header && head - tail >= wire::header_size) {
      detail::shm::from_ring(l.in_data, cap, tail, job.head.data(), wire::header_size);
      tail += wire::header_size;
      finish_read(l, start, tail);
      job.header = wire::decode(job.head, where);
      wire::check(job.header, job.expected, options_.max_frame, where);
      job.have_header = true;
    }
    if (job.have_header && job.got < job.header.payload_length && head != tail) {
      const auto n = std::min(head - tail, job.header.payload_length - job.got);
      if (job.sink != nullptr) {
        const auto at = tail % cap, first = std::min(n, cap - at);
        job.sink(job.context, job.got, l.in_data + at, first);
        if (n > first) job.sink(job.context, job.got + first, l.in_data, n - first);
      } else {
        detail::shm::from_ring(l.in_data, cap, tail, job.out.data() + job.got, n);
      }
      tail += n;
      job.got += n;
      finish_read(l, start, tail);
    }
    if (job.have_header && job.got == job.header.payload_length) {
      // A sink runs only without payload checksums (receive_add): the header's is checked alike.
      wire::verify(job.header, job.sink != nullptr ? std::span<const std::byte>() : job.out.first(job.got), where,
                   options_.payload_checksums && job.sink == nullptr);
      return true;
    }
    if (l.in->goodbye.load(std::memory_order_acquire) != 0 && l.in->head.load(std::memory_order_acquire) == tail)
      said_goodbye(l, where);
    return false;
  }
  void finish_read(link& l, std::uint64_t start, std::uint64_t tail) {
    if (tail == start) return;
    l.in->tail.store(tail, std::memory_order_release);
    detail::shm::ring_bell(l.theirs.header());
  }

  [[noreturn]] void said_goodbye(const link& l, const comm_context& where) const {
    const auto n = std::min<std::size_t>(l.in->reason_bytes, l.in->reason.size());
    if (n == 0) throw peer_error(where, "the peer has shut down");
    std::string problem;
    if (auto r = wire::decode_reason(std::span<const std::byte>(l.in->reason.data(), n), world_, problem))
      throw peer_error(where, wire::describe_goodbye(*r), *r);
    throw peer_error(where, "the peer has shut down (the reason in its goodbye is unreadable: " + problem + ")");
  }

  /// Waits until done() (which makes progress and may throw) returns true: polls for options.spin,
  /// then sleeps on this unit's doorbell, checking every liveness_interval that the peers of
  /// `a` and `b` are alive; throws timeout_error(where, what) at `until`. `a`: a link whose send
  /// lock the caller holds (or none), `b`: a link it receives from (or none).
  template <class Done>
  void wait(Done&& done, deadline until, link* a, link* b, const comm_context& where, const char* what) {
    auto& bell = own_.header();
    const auto start = clock::now();
    auto next_check = start + options_.liveness_interval;
    for (;;) {
      if (done()) return;
      push_others(a);
      const auto now = clock::now();
      if (now >= until) throw timeout_error(where, what);
      if (now - start < options_.spin) continue;
      if (now >= next_check) {
        for (link* l : {a, b})
          if (l != nullptr && !l->theirs.owner_alive())
            throw peer_error(where, "the peer's process has died (its shared memory is no longer held)");
        next_check = now + options_.liveness_interval;
      }
      bell.sleepers.fetch_add(1, std::memory_order_seq_cst);
      struct awake {
        detail::shm::segment_header& h;
        ~awake() { h.sleepers.fetch_sub(1, std::memory_order_seq_cst); }
      } guard{bell};
      const auto seen = bell.bell.load(std::memory_order_seq_cst);
      if (done()) return;
      detail::shm::sleep_on_bell(bell, seen, std::min(until, next_check) - now);
    }
  }

  void close(const std::optional<shutdown_reason>& reason) {
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
          wait([&] { push(l); return l.queue.empty(); }, until, &l, nullptr, where, "linger");
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

  unit_id rank_;
  unit_id world_;
  std::uint64_t fingerprint_;
  std::string prefix_;
  shm_options options_;
  std::vector<unit_id> group_;
  detail::shm::mapping own_;
  std::unique_ptr<link[]> links_;
  std::atomic<bool> closed_{false};
};

static_assert(transport<shm_transport>);

}  // namespace f2d2n
