// f2d2n/transport/impl/tcp/direction.hpp: one direction of a link on the peer's strand, written
// once for sending and receiving: queueing, deadlines, the waiter coroutine, failing what queued.
#pragma once

#include <f2d2n/transport/impl/tcp/transport_impl.hpp>

#include <algorithm>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

namespace f2d2n::detail::tcp_impl {

/// The link to `peer`, or null with `problem` saying why there is none.
inline link* transport_impl::link_for(unit_id peer, std::string& problem) {
  if (peer >= world_) {
    problem = "unit " + std::to_string(peer) + " does not exist in a world of " + std::to_string(world_);
    return nullptr;
  }
  if (peer == rank_) {
    problem = "a unit does not send frames to itself over tcp";
    return nullptr;
  }
  if (!links_[peer]) {
    problem = "not connected to unit " + std::to_string(peer) + " (call connect() first)";
    return nullptr;
  }
  return links_[peer].get();
}

/// Puts `op` in its direction's queue at once (so that a later call cannot overtake it on the
/// caller's thread, run_here), then hands it to the strand; or answers it with `problem` (a
/// misuse), or with why the direction is down.
template <class Op>
void transport_impl::start(link* l, const std::shared_ptr<Op>& op, std::string problem, deadline until) {
  if (!problem.empty()) {
    asio::post(io_, [op, f = misuse(op->where, problem)]() mutable { finish(*op, std::move(f)); });
    return;
  }
  {
    const std::lock_guard lock(l->m);
    auto& d = l->along<Op>();
    if (!d.down.empty()) problem = d.down;
    else if (l->closing) problem = "this unit has shut down";
    else d.queue.push_back(op);
  }
  if (!problem.empty()) {
    asio::post(l->strand, [op, f = link_down(*l, op->where, problem)]() mutable { finish(*op, std::move(f)); });
    return;
  }
  asio::post(l->strand, [this, l, op, until] {
    const std::lock_guard lock(l->m);
    enqueue(*l, op, until);
  });
}

template <class Op>
void transport_impl::enqueue(link& l, const std::shared_ptr<Op>& op, deadline until) {
  pump<Op>(l);
  if (op->done && until != deadline::max()) arm_timer(l, op, until);
}

template <class Op>
void transport_impl::arm_timer(link& l, const std::shared_ptr<Op>& op, deadline until) {
  op->timer = std::make_unique<timer_type>(l.strand, until);
  op->timer->async_wait([this, &l, w = std::weak_ptr<Op>(op)](const error_code& ec) {
    if (ec) return;
    const std::lock_guard lock(l.m);
    if (auto o = w.lock()) expire(l, o);
  });
}

/// The deadline of `op` passed: it is answered with timeout_error (only the front operation can
/// have moved part of its frame; then the direction is out of sync, and what queued behind fails).
template <class Op>
void transport_impl::expire(link& l, const std::shared_ptr<Op>& op) {
  if (!op->done) return;  // answered already
  auto& d = l.along<Op>();
  const auto it = std::find(d.queue.begin(), d.queue.end(), op);
  if (it == d.queue.end()) return;
  d.queue.erase(it);
  finish(*op, timed_out(l, *op));
  if (!d.down.empty()) fail_all<Op>(l);
}

/// Serves the queue in order with what the socket takes or holds now; leaves the rest to the
/// waiter coroutine. Leaves the queue alone while a caller's thread uses this direction (it hands
/// the queue back when it is done). A send that must wait copies the blocking sends that fit the
/// send buffer (absorb), which answers them.
template <class Op>
void transport_impl::pump(link& l) {
  auto& d = l.along<Op>();
  while (!d.queue.empty()) {
    if (!d.down.empty()) return fail_all<Op>(l);
    if (d.caller) return;
    const auto op = d.queue.front();
    failure f;
    const progress p = advance(l, *op, f);
    if (p == progress::wait) {
      if constexpr (std::is_same_v<Op, send_op>) absorb(l);
      return start_waiter<Op>(l);
    }
    d.queue.pop_front();
    if (p == progress::failed) {  // the direction is down now: what queued behind fails too
      finish(*op, std::move(f));
      return fail_all<Op>(l);
    }
    if constexpr (std::is_same_v<Op, send_op>)
      if (op->copied) l.backlog -= op->owned.size();
    finish(*op);
  }
}

template <class Op>
void transport_impl::start_waiter(link& l) {
  auto& d = l.along<Op>();
  if (d.waiting) return;
  d.waiting = true;
  asio::co_spawn(l.strand, waiter<Op>(l), asio::detached);
}

/// The writer (send_op) or the reader (receive_op) of a link: waits for the socket to take or
/// hold bytes, then pumps, while operations are queued and the strand owns the direction.
template <class Op>
asio::awaitable<void> transport_impl::waiter(link& l) {
  auto& d = l.along<Op>();
  for (;;) {
    socket_type::wait_type ready = Op::ready;
    {
      const std::lock_guard lock(l.m);
      if (d.queue.empty() || !d.down.empty() || d.caller) {
        d.waiting = false;
        break;
      }
      // TLS may need the other readiness (its reads and writes stop only when the socket's do, so
      // nothing it has decrypted is left behind when it waits: see tls_session).
      ready = l.waits_for<Op>();
    }
    error_code ec;
    co_await l.socket.async_wait(ready, asio::redirect_error(asio::use_awaitable, ec));
    const std::lock_guard lock(l.m);
    if (ec && !l.socket.is_open()) {
      d.waiting = false;
      break;
    }
    if (ec && ec != asio::error::operation_aborted) {
      d.down = connection_failure(ec);
      fail_all<Op>(l);
      d.waiting = false;
      break;
    }
    pump<Op>(l);
  }
}

/// Answers every queued operation with peer_error saying why the direction is down.
template <class Op>
void transport_impl::fail_all(link& l) {
  auto& d = l.along<Op>();
  auto queue = std::exchange(d.queue, {});
  if constexpr (std::is_same_v<Op, send_op>) l.backlog = 0;
  for (const auto& op : queue) finish(*op, link_down(l, op->where, d.down));
}

}  // namespace f2d2n::detail::tcp_impl
