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
//
// This header holds what users name; transport/detail/shm/ what it is built from (the segment's
// layout, the doorbell, the rings, the frames on their way), transport/impl/shm/ the definitions
// (starting, moving frames, shutting down).
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/core/unit.hpp>
#include <f2d2n/transport/concept.hpp>
#include <f2d2n/transport/detail/shm/link.hpp>
#include <f2d2n/transport/detail/shm/segment.hpp>
#include <f2d2n/wire/frame.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
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
                std::uint64_t fingerprint, shm_options options = {});
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
  void send_whole(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload, deadline until) {
    send_with(peer, header, payload, until, 0);
  }

  wire::frame_header receive(unit_id peer, const wire::expectation& expected, std::span<std::byte> out, deadline until);

  /// Receives the next frame from `peer` as receive() does, but adds its payload, elements of S,
  /// into `into` straight from the ring, instead of storing it (a reduce-scatter's piece: no copy
  /// through scratch memory). Returns false, having done nothing, where frames carry payload
  /// checksums (the payload must be whole before it is checked): the caller then receives and adds.
  /// After a failure `into` holds part of the sum, as receive()'s buffer holds part of a frame.
  template <class S>
  bool receive_add(unit_id peer, const wire::expectation& expected, std::span<S> into, deadline until);

  /// Sends a frame to `to` while receiving the next one from `from`: both move through their
  /// rings in turn, so that a ring step in which every unit sends before it receives cannot
  /// deadlock whatever the frame's size. Returns once both are done (or the rest of the sent
  /// frame is copied, as in send()).
  wire::frame_header exchange(unit_id to, const wire::frame_header& header, std::span<const std::byte> payload,
                              unit_id from, const wire::expectation& expected, std::span<std::byte> out,
                              deadline until);

  void shutdown() { close(std::nullopt); }
  void shutdown(const shutdown_reason& reason) { close(reason); }

 private:
  using out_job = detail::shm::out_job;
  using in_job = detail::shm::in_job;
  using link = detail::shm::link;

  void send_with(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload, deadline until,
                 std::uint64_t budget);
  /// Takes the next frame from `peer` into `job` (receive, receive_add), by `until`.
  void receive_into(unit_id peer, in_job& job, deadline until);

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

  void validate(const std::vector<unit_id>& group) const;

  [[nodiscard]] std::uint64_t rings() const { return group_.size() - 1; }

  void create_own();

  /// Opens unit `p`'s segment (retrying until it exists, is written and has a live owner), checks it and attaches.
  void attach(unit_id p, deadline until);

  [[nodiscard]] std::optional<detail::shm::mapping> open_segment(const std::string& name, std::string& why) const;

  /// Throws handshake_error when unit p could not start (its segment says why).
  void refused_by(unit_id p, const detail::shm::segment_header& h, const comm_context& where) const {
    if (h.failed.load(std::memory_order_acquire) == 0) return;
    std::string why(h.failure.data(), strnlen(h.failure.data(), h.failure.size()));
    throw handshake_error(where, "unit " + std::to_string(p) + " could not start its shared memory: " + why);
  }
  void check_attached_peers() const {
    for (const unit_id p : group_)
      if (p != rank_ && links_[p].out != nullptr)
        refused_by(p, links_[p].theirs.header(), comm_context{rank_, p, 0, 0});
  }

  void check_peer_segment(unit_id p, const detail::shm::segment_header& h, const comm_context& where) const;

  link& usable(unit_id peer, const comm_context& where, std::size_t payload_bytes);

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
  void drop_borrowed(link& l, const comm_context&);

  template <class F>
  void guarded_receive(link& l, const comm_context& where, F&& f);

  /// Moves l's queue into its ring as far as there is room. Returns whether anything moved.
  bool push(link& l) {
    const std::lock_guard lock(l.queue_mutex);
    return push_locked(l);
  }
  bool push_locked(link& l);

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
  bool pull(link& l, in_job& job, const comm_context& where);
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
  void wait(Done&& done, deadline until, link* a, link* b, const comm_context& where, const char* what);

  void close(const std::optional<shutdown_reason>& reason);

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

#include <f2d2n/transport/impl/shm/frames.hpp>
#include <f2d2n/transport/impl/shm/shutdown.hpp>
#include <f2d2n/transport/impl/shm/start.hpp>
