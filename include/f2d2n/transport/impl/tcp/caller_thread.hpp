// f2d2n/transport/impl/tcp/caller_thread.hpp: the blocking calls' fast path: a send, a receive
// or both done on the calling thread (non-blocking reads and writes, poll() until the deadline)
// when the directions they use are idle, without handing them to the io thread.
#pragma once

#include <f2d2n/transport/impl/tcp/direction.hpp>
#include <f2d2n/transport/impl/tcp/transport_impl.hpp>

#include <poll.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <exception>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>

namespace f2d2n::detail::tcp_impl {

inline bool transport_impl::send_here(unit_id peer, const wire::frame_header& header,
                                      std::span<const std::byte> payload, deadline until) {
  std::string problem;
  link* l = link_for(peer, problem);
  if (!l || header.payload_length != payload.size()) return false;
  const auto op = make_send_op(peer, header, payload, true);
  failure sf, rf;
  if (!run_here(l, op, nullptr, nullptr, until, sf, rf)) return false;
  if (sf) std::rethrow_exception(std::move(sf));
  return true;
}

inline std::optional<wire::frame_header> transport_impl::receive_here(unit_id peer, const wire::expectation& expected,
                                                                      std::span<std::byte> out, deadline until) {
  std::string problem;
  link* l = link_for(peer, problem);
  if (!l || expected.payload_length > out.size()) return std::nullopt;
  receive_op op = make_receive_op(peer, expected, out);
  failure sf, rf;
  if (!run_here(nullptr, nullptr, l, &op, until, sf, rf)) return std::nullopt;
  if (rf) std::rethrow_exception(std::move(rf));
  return op.header;
}

inline std::optional<wire::frame_header> transport_impl::exchange_here(unit_id to, const wire::frame_header& header,
                                                                       std::span<const std::byte> payload, unit_id from,
                                                                       const wire::expectation& expected,
                                                                       std::span<std::byte> out, deadline until) {
  std::string problem;
  link* tl = link_for(to, problem);
  link* rl = link_for(from, problem);
  if (!tl || !rl || header.payload_length != payload.size() || expected.payload_length > out.size())
    return std::nullopt;
  const auto s = make_send_op(to, header, payload, false);
  receive_op r = make_receive_op(from, expected, out);
  failure sf, rf;
  if (!run_here(tl, s, rl, &r, until, sf, rf)) return std::nullopt;
  if (sf) std::rethrow_exception(std::move(sf));  // as the queued exchange: the send's failure first
  if (rf) std::rethrow_exception(std::move(rf));
  return r.header;
}

/// Runs a send to `tl` and/or a receive from `rl` on the calling thread, when their directions
/// are idle (nothing queued, no waiter coroutine, nobody else writing or reading there, the stream
/// up): non-blocking writes and reads, and poll() until the deadline while the sockets cannot go
/// on. Returns false, having done nothing, when a direction is busy (the caller then queues the
/// operations on the strands). `sf` / `rf` get the send's / the receive's failure. A blocking
/// send() whose rest fits the send buffer is copied and handed to the strand. One link's lock at
/// a time: the io thread may take a second one inside a completion handler.
inline bool transport_impl::run_here(link* tl, const std::shared_ptr<send_op>& s, link* rl, receive_op* r,
                                     deadline until, failure& sf, failure& rf) {
  if (shut_) return false;
  if (tl && !claim<send_op>(*tl)) return false;
  if (rl && !claim<receive_op>(*rl)) {
    if (tl) hand_back<send_op>(*tl);
    return false;
  }
  bool sending = tl != nullptr, receiving = rl != nullptr;
  bool watch_shutdown = true;
  for (;;) {
    // shutdown() ends a receive at once; a send that has begun goes on (the goodbye queues
    // behind it) until it is written, the deadline passes, or the link is closed.
    const bool shutting = watch_shutdown && shut_;
    if (shutting) watch_shutdown = false;
    const bool expired = clock::now() >= until;
    if (sending) sending = !step_here(*tl, s, shutting, expired, sf);
    if (receiving) receiving = !step_here(*rl, *r, shutting, expired, rf);
    if (!sending && !receiving) break;
    wait_for_sockets(sending ? tl : nullptr, receiving ? rl : nullptr, watch_shutdown, until);
  }
  if (tl) hand_back<send_op>(*tl);
  if (rl) hand_back<receive_op>(*rl);
  return true;
}

/// One pass of a send on the caller's thread; true when it is over (written, copied for the
/// strand to write, or failed into `f`).
inline bool transport_impl::step_here(link& l, const std::shared_ptr<send_op>& s, bool shutting, bool expired,
                                      failure& f) {
  const std::lock_guard lock(l.m);
  if (!l.tx.down.empty()) {
    f = link_down(l, s->where, l.tx.down);
    return true;
  }
  if (advance(l, *s, f) != progress::wait) return true;
  if (s->may_copy && l.backlog + (s->total - s->sent) <= options_.send_buffer) {
    // As absorb(): the rest is copied and written by the strand, ahead of what queued behind.
    l.backlog += s->total - s->sent;
    s->copy_rest();
    l.tx.queue.push_front(s);
    return true;
  }
  if (shutting && s->sent == 0 && !committed(l)) {
    f = fail<peer_error>(s->where, "this unit has shut down");
    return true;
  }
  if (expired) {
    f = timed_out(l, *s);
    return true;
  }
  return false;
}

/// One pass of a receive on the caller's thread; true when it is over (complete, or failed into `f`).
inline bool transport_impl::step_here(link& l, receive_op& r, bool shutting, bool expired, failure& f) {
  const std::lock_guard lock(l.m);
  if (!l.rx.down.empty()) {
    f = link_down(l, r.where, l.rx.down);
    return true;
  }
  if (advance(l, r, f) != progress::wait) return true;
  if (shutting) {
    l.rx.down = "this unit has shut down";
    f = fail<peer_error>(r.where, l.rx.down);
    return true;
  }
  if (expired) {
    f = timed_out(l, r);
    return true;
  }
  return false;
}

/// Takes a link's direction for the calling thread when it is idle.
template <class Op>
bool transport_impl::claim(link& l) {
  const std::lock_guard lock(l.m);
  auto& d = l.along<Op>();
  if (l.closing || !d.queue.empty() || d.caller || d.waiting || !d.down.empty()) return false;
  d.caller = true;
  return true;
}

/// Gives a link's direction back: the strand takes up what queued meanwhile, and closes a socket
/// that shutdown() left open for the caller.
template <class Op>
void transport_impl::hand_back(link& l) {
  const std::lock_guard lock(l.m);
  auto& d = l.along<Op>();
  d.caller = false;
  if (l.close_deferred) {
    if (l.tx.caller || l.rx.caller) return;
    l.close_deferred = false;
    asio::post(l.strand, [&l] {
      const std::lock_guard relock(l.m);
      error_code ec;
      l.socket.close(ec);
    });
  } else if (!d.queue.empty()) {
    asio::post(l.strand, [this, &l] {
      const std::lock_guard relock(l.m);
      pump<Op>(l);
    });
  }
}

/// Sleeps in poll() until the socket of `tl` may take bytes, the one of `rl` has some (with TLS:
/// is ready as the session waits for, which may be the other way round), shutdown() was called
/// (when `watch_shutdown`), or the deadline. Never spins: poll() sleeps.
inline void transport_impl::wait_for_sockets(link* tl, link* rl, bool watch_shutdown, deadline until) const {
  const auto events = [](link& l, auto ready) -> short {
    socket_type::wait_type w = ready;
    if (l.tls) {
      const std::lock_guard lock(l.m);
      w = ready == socket_type::wait_write ? l.tls->write_waits() : l.tls->read_waits();
    }
    return w == socket_type::wait_write ? POLLOUT : POLLIN;
  };
  std::array<pollfd, 3> fds{};
  nfds_t n = 0;
  const short out = tl ? events(*tl, send_op::ready) : 0;
  const short in = rl ? events(*rl, receive_op::ready) : 0;
  if (tl && rl && tl->fd == rl->fd) {
    fds[n++] = {tl->fd, static_cast<short>(out | in), 0};
  } else {
    if (tl) fds[n++] = {tl->fd, out, 0};
    if (rl) fds[n++] = {rl->fd, in, 0};
  }
  if (watch_shutdown) fds[n++] = {wake_.read_end(), POLLIN, 0};
  int ms = -1;
  if (until != deadline::max()) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - clock::now()).count();
    ms = static_cast<int>(std::clamp<decltype(left)>(left, 0, std::numeric_limits<int>::max()));
  }
  // EINTR and the like: the caller looks at the sockets and the deadline again.
  (void)::poll(fds.data(), n, ms);
}

}  // namespace f2d2n::detail::tcp_impl
