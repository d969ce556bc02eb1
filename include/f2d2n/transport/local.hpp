// f2d2n/transport/local.hpp: units as threads of one process, for tests and single-machine runs.
//
//   f2d2n::local_cluster cluster(4);
//   cluster.run([](f2d2n::local_transport& t) { ... t.rank() ... });
//
// Frames are copied into the receiver's mailbox (one queue per sender); send never blocks. A unit
// whose function returns or throws is shut down: peers waiting on it get peer_error at once. A unit
// shut down with a reason (shutdown(reason), or by run / run_collect when its function throws:
// shutdown_reason_of its exception) leaves its peers that reason as a TCP goodbye does, encoded
// and decoded alike (wire/goodbye.hpp): "the peer has shut down because unit 2 failed first: ...".
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/transport/concept.hpp>
#include <f2d2n/wire/frame.hpp>
#include <f2d2n/wire/goodbye.hpp>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace f2d2n {

class local_cluster;

/// One unit's end of a local_cluster.
class local_transport {
 public:
  [[nodiscard]] unit_id rank() const noexcept { return rank_; }
  [[nodiscard]] unit_id world_size() const noexcept;
  [[nodiscard]] std::uint64_t fingerprint() const noexcept { return fingerprint_; }
  /// Sends only queue: the rings of comm/primitives.hpp send 2 pieces ahead of their receives.
  [[nodiscard]] std::size_t ring_pipeline() const noexcept { return 2; }
  void set_fingerprint(std::uint64_t f) noexcept { fingerprint_ = f; }

  inline void send(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload, deadline until);
  inline wire::frame_header receive(unit_id peer, const wire::expectation& expected, std::span<std::byte> out,
                                    deadline until);
  inline void shutdown();
  /// Shuts down after a failure: peers waiting on this unit get a peer_error that carries `reason`.
  inline void shutdown(const shutdown_reason& reason);

  /// Puts raw bytes in `peer`'s mailbox as if they were a frame from this unit (tests of bad frames).
  inline void send_raw(unit_id peer, std::span<const std::byte> header, std::span<const std::byte> payload);

  local_transport(local_cluster& cluster, unit_id rank, std::uint64_t fingerprint)
      : cluster_(&cluster), rank_(rank), fingerprint_(fingerprint) {}

 private:
  local_cluster* cluster_;
  unit_id rank_;
  std::uint64_t fingerprint_;
};

/// world_size units in one process, each with its own mailbox.
class local_cluster {
 public:
  explicit local_cluster(unit_id world_size, std::uint64_t fingerprint = 0,
                         std::uint64_t max_frame = wire::default_max_frame)
      : max_frame_(max_frame), boxes_(world_size) {
    if (world_size == 0) throw configuration_error("f2d2n: a cluster needs at least one unit");
    units_.reserve(world_size);
    for (unit_id r = 0; r < world_size; ++r) {
      units_.emplace_back(*this, r, fingerprint);
      boxes_[r] = std::make_unique<mailbox>(world_size);
    }
  }
  local_cluster(const local_cluster&) = delete;
  local_cluster& operator=(const local_cluster&) = delete;

  [[nodiscard]] unit_id world_size() const noexcept { return static_cast<unit_id>(units_.size()); }
  [[nodiscard]] local_transport& unit(unit_id r) { return units_.at(r); }
  [[nodiscard]] std::uint64_t max_frame() const noexcept { return max_frame_; }

  /// Runs f(transport&) on every unit, each in its own thread; returns each unit's exception (or
  /// null). A unit is shut down when its function ends, so peers never wait for a finished unit;
  /// one whose function threw is shut down with the reason (shutdown_reason_of its exception).
  template <class F>
  std::vector<std::exception_ptr> run_collect(F&& f) {
    std::vector<std::exception_ptr> errors(units_.size());
    std::vector<std::thread> threads;
    threads.reserve(units_.size());
    for (unit_id r = 0; r < world_size(); ++r)
      threads.emplace_back([&, r] {
        try {
          f(units_[r]);
        } catch (...) {
          errors[r] = std::current_exception();
        }
        if (errors[r]) units_[r].shutdown(shutdown_reason_of(r, errors[r]));
        else units_[r].shutdown();
      });
    for (auto& t : threads) t.join();
    return errors;
  }

  /// As run_collect, then rethrows the exception of the lowest-ranked unit that failed.
  template <class F>
  void run(F&& f) {
    for (auto& e : run_collect(std::forward<F>(f)))
      if (e) std::rethrow_exception(e);
  }

 private:
  friend class local_transport;
  struct frame {
    std::vector<std::byte> header;
    std::vector<std::byte> payload;
  };
  struct mailbox {
    explicit mailbox(unit_id world) : from(world), closed(world, false), goodbye(world) {}
    std::mutex m;
    std::condition_variable cv;
    std::vector<std::deque<frame>> from;          // one queue per sender: frames stay in order per pair
    std::vector<bool> closed;                     // senders that will send no more
    std::vector<std::vector<std::byte>> goodbye;  // per sender: its encoded shutdown reason, if it gave one
  };

  std::uint64_t max_frame_;
  std::vector<local_transport> units_;
  std::vector<std::unique_ptr<mailbox>> boxes_;
};

inline unit_id local_transport::world_size() const noexcept { return cluster_->world_size(); }

inline void local_transport::send_raw(unit_id peer, std::span<const std::byte> header,
                                      std::span<const std::byte> payload) {
  if (peer >= world_size()) throw configuration_error("f2d2n: unit " + std::to_string(peer) + " does not exist");
  auto& box = *cluster_->boxes_[peer];
  {
    const std::lock_guard lock(box.m);
    if (box.closed[rank_]) return;  // this unit was shut down: nothing more leaves it
    box.from[rank_].push_back({{header.begin(), header.end()}, {payload.begin(), payload.end()}});
  }
  box.cv.notify_all();
}

inline void local_transport::send(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload,
                                  deadline /*until: a local send never blocks*/) {
  const auto bytes = wire::encode(header);
  send_raw(peer, bytes, payload);
}

inline wire::frame_header local_transport::receive(unit_id peer, const wire::expectation& expected,
                                                   std::span<std::byte> out, deadline until) {
  const comm_context where{rank_, peer, expected.message_id, expected.step};
  if (peer >= world_size()) throw configuration_error("f2d2n: unit " + std::to_string(peer) + " does not exist");
  auto& box = *cluster_->boxes_[rank_];
  local_cluster::frame f;
  {
    std::unique_lock lock(box.m);
    auto& queue = box.from[peer];
    if (!box.cv.wait_until(lock, until, [&] { return !queue.empty() || box.closed[peer]; }))
      throw timeout_error(where, "no message arrived before the deadline");
    if (queue.empty()) {
      if (box.goodbye[peer].empty()) throw peer_error(where, "the peer has shut down");
      std::string problem;
      if (const auto reason = wire::decode_reason(box.goodbye[peer], world_size(), problem))
        throw peer_error(where, wire::describe_goodbye(*reason), *reason);
      throw peer_error(where, "the peer has shut down (the reason in its goodbye is unreadable: " + problem + ")");
    }
    f = std::move(queue.front());
    queue.pop_front();
  }
  if (f.header.size() != wire::header_size)
    throw protocol_error(where, frame_problem::truncated,
                         "the frame's header has " + std::to_string(f.header.size()) + " bytes");
  const auto header =
      wire::decode(std::span<const std::byte, wire::header_size>(f.header.data(), wire::header_size), where);
  wire::check(header, expected, cluster_->max_frame(), where);
  if (f.payload.size() != header.payload_length)
    throw protocol_error(where, frame_problem::truncated,
                         "the header announces " + std::to_string(header.payload_length) + " bytes, the frame holds " +
                             std::to_string(f.payload.size()));
  wire::verify(header, f.payload, where);
  if (!f.payload.empty()) std::memcpy(out.data(), f.payload.data(), f.payload.size());
  return header;
}

inline void local_transport::shutdown() {
  for (auto& box : cluster_->boxes_) {
    {
      const std::lock_guard lock(box->m);
      box->closed[rank_] = true;
    }
    box->cv.notify_all();
  }
}

inline void local_transport::shutdown(const shutdown_reason& reason) {
  const auto said = wire::encode_reason(reason);  // as on the wire: bounded, and read back as a TCP peer reads it
  for (auto& box : cluster_->boxes_) {
    {
      const std::lock_guard lock(box->m);
      if (box->closed[rank_]) continue;  // only the first shutdown counts
      box->closed[rank_] = true;
      box->goodbye[rank_] = said;
    }
    box->cv.notify_all();
  }
}

static_assert(transport<local_transport>);

}  // namespace f2d2n
