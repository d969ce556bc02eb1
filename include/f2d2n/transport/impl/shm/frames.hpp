// f2d2n/transport/impl/shm/frames.hpp: shm_transport moving frames: send, receive, receive_add
// and exchange, the rings' producer and consumer sides, and the wait that spins briefly, then
// sleeps on the doorbell. Included at the end of transport/shm.hpp.
#pragma once

#include <f2d2n/transport/shm.hpp>
#include <f2d2n/wire/goodbye.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <type_traits>

namespace f2d2n {

inline void shm_transport::send_with(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload,
                                     deadline until, std::uint64_t budget) {
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

inline wire::frame_header shm_transport::receive(unit_id peer, const wire::expectation& expected,
                                                 std::span<std::byte> out, deadline until) {
  in_job job{expected, out};
  receive_into(peer, job, until);
  return job.header;
}

inline void shm_transport::receive_into(unit_id peer, in_job& job, deadline until) {
  const comm_context where{rank_, peer, job.expected.message_id, job.expected.step};
  link& l = usable(peer, where, 0);
  fits(job.expected, job.out);
  std::unique_lock lock(l.receiving, std::defer_lock);
  if (!lock_until(lock, until)) throw timeout_error(where, "another receive from this peer took until the deadline");
  guarded_receive(l, where, [&] {
    wait([&] { return pull(l, job, where); }, until, nullptr, &l, where, "no frame arrived before the deadline");
  });
}

template <class S>
inline bool shm_transport::receive_add(unit_id peer, const wire::expectation& expected, std::span<S> into,
                                       deadline until) {
  static_assert(std::is_arithmetic_v<S>);
  if (options_.payload_checksums) return false;
  detail::shm::adder<S> add{into.data()};
  in_job job{expected, std::as_writable_bytes(into)};
  job.sink = &detail::shm::adder<S>::consume;
  job.context = &add;
  receive_into(peer, job, until);
  return true;
}

inline wire::frame_header shm_transport::exchange(unit_id to, const wire::frame_header& header,
                                                  std::span<const std::byte> payload, unit_id from,
                                                  const wire::expectation& expected, std::span<std::byte> out,
                                                  deadline until) {
  const comm_context to_where{rank_, to, header.message_id, header.step};
  const comm_context from_where{rank_, from, expected.message_id, expected.step};
  link& lt = usable(to, to_where, payload.size());
  link& lf = usable(from, from_where, 0);
  fits(expected, out);
  std::unique_lock send_lock(lt.sending, std::defer_lock);
  if (!lock_until(send_lock, until)) throw timeout_error(to_where, "another send to this peer took until the deadline");
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
    if (job.finished()) lt.queue.pop_back();
    else if (job.remaining() <= options_.send_buffer - std::min(options_.send_buffer, lt.queued_bytes())) job.keep();
    else drop_borrowed(lt, to_where);
    throw;
  }
  lt.queue.pop_back();
  return in.header;
}

inline detail::shm::link& shm_transport::usable(unit_id peer, const comm_context& where, std::size_t payload_bytes) {
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

inline void shm_transport::drop_borrowed(link& l, const comm_context&) {
  const auto& job = l.queue.back();
  if (!job.is_kept && job.done != 0 && !job.finished())
    l.out_down = "an earlier frame to this peer was cut off after " + std::to_string(job.done) + " of " +
                 std::to_string(job.total()) + " bytes; the stream to this peer is unusable";
  const bool started = !job.is_kept && job.done != 0;
  l.queue.pop_back();
  if (started) l.queue.clear();
}

template <class F>
inline void shm_transport::guarded_receive(link& l, const comm_context& where, F&& f) {
  if (!l.in_down.empty()) throw peer_error(where, l.in_down);
  try {
    f();
  } catch (const protocol_error& e) {
    l.in_down = std::string("an earlier frame from this peer was rejected (") + to_string(e.problem()) +
                "); the stream from this peer is out of sync";
    throw;
  }
}

inline bool shm_transport::push_locked(link& l) {
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

inline bool shm_transport::pull(link& l, in_job& job, const comm_context& where) {
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

template <class Done>
inline void shm_transport::wait(Done&& done, deadline until, link* a, link* b, const comm_context& where,
                                const char* what) {
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

}  // namespace f2d2n
