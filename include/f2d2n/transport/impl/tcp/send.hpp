// f2d2n/transport/impl/tcp/send.hpp: sending a frame: starting a send, writing what the socket
// takes, a send's deadline, and copying what a blocking send() may leave behind.
#pragma once

#include <f2d2n/transport/impl/tcp/direction.hpp>
#include <f2d2n/transport/impl/tcp/transport_impl.hpp>

#include <array>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <utility>

namespace f2d2n::detail::tcp_impl {

inline void transport_impl::start_send(unit_id peer, const wire::frame_header& header,
                                       std::span<const std::byte> payload, deadline until, bool may_copy,
                                       send_completion done) {
  const auto op = make_send_op(peer, header, payload, may_copy);
  op->done = std::move(done);
  std::string problem;
  link* l = link_for(peer, problem);
  if (l && header.payload_length != payload.size())
    problem = "the header announces " + std::to_string(header.payload_length) + " bytes for a payload of " +
              std::to_string(payload.size());
  start(l, op, std::move(problem), until);
}

inline std::shared_ptr<send_op> transport_impl::make_send_op(unit_id peer, const wire::frame_header& header,
                                                             std::span<const std::byte> payload, bool may_copy) const {
  auto op = std::make_shared<send_op>();
  op->where = {rank_, peer, header.message_id, header.step};
  op->header = wire::encode(header);
  op->payload = payload;
  op->total = wire::header_size + payload.size();
  op->may_copy = may_copy;
  return op;
}

/// Writes what the socket takes of `op` now (on the peer's strand, or on a caller's thread that
/// holds the link's tx). On a failure tx is down and `f` says why.
inline progress transport_impl::advance(link& l, send_op& op, failure& f) {
  while (op.sent < op.total) {
    error_code ec;
    const std::size_t n = l.tls ? l.tls->write(l.socket, op.rest(), ec) : l.socket.write_some(op.rest(), ec);
    if (would_block(ec)) return progress::wait;
    if (ec) {
      l.tx.down = connection_failure(ec);
      peek_goodbye(l);
      if (l.peer_reason) l.tx.down = wire::describe_goodbye(*l.peer_reason);
      f = link_down(l, op.where, l.tx.down);
      return progress::failed;
    }
    op.sent += n;
  }
  return progress::complete;
}

/// A write found the connection closed by the peer. If the peer said goodbye with a reason that no
/// receive has read yet, it waits in the socket: look at it without taking it (MSG_PEEK), so that
/// the send's failure names the unit that failed first too (seen in a ring: a unit's send to the
/// unit that failed broke before any receive read that unit's goodbye). A receive later reads the
/// goodbye as usual. Only a goodbye at the head of the stream is seen, and only when no receive is
/// in the middle of a frame; anything that is not a well-formed reason is left alone.
inline void transport_impl::peek_goodbye(link& l) const {
  if (l.peer_reason || l.rx.caller || (!l.rx.queue.empty() && l.rx.queue.front()->got != 0)) return;
  std::array<std::byte, wire::header_size + wire::reason_prefix + wire::max_reason_text> buf;
  error_code ec;
  const std::size_t n = l.tls ? l.tls->peek(l.socket, asio::buffer(buf), ec)
                              : l.socket.receive(asio::buffer(buf), socket_type::message_peek, ec);
  if (ec || n < wire::header_size) return;
  try {
    const auto h = wire::decode(std::span<const std::byte, wire::header_size>(buf.data(), wire::header_size), {});
    if (h.kind != wire::frame_kind::goodbye || h.message_id != wire::goodbye_reason_message || h.sender != l.peer ||
        h.payload_length > n - wire::header_size)
      return;
    const auto payload = std::span<const std::byte>(buf).subspan(wire::header_size, h.payload_length);
    if (wire::checksum(h, payload) != h.checksum) return;
    std::string problem;
    l.peer_reason = wire::decode_reason(payload, world_, problem);
  } catch (const protocol_error&) {  // not a frame's header: no goodbye to see
  }
}

/// A send's deadline passed: the failure to report; a frame given up half-way puts tx down.
inline failure transport_impl::timed_out(link& l, const send_op& op) {
  if (op.sent == 0 && !committed(l))
    return fail<timeout_error>(op.where, "the peer took nothing of the frame before the deadline");
  l.tx.down = "a send gave up in the middle of a frame; the stream to this peer is out of sync";
  return fail<timeout_error>(op.where, "the deadline passed after " + std::to_string(op.sent) + " of " +
                                           std::to_string(op.total) +
                                           " bytes of the frame were sent; the stream to this peer is unusable now");
}

/// Answers the blocking sends whose rest fits the send buffer, by copying it.
inline void transport_impl::absorb(link& l) {
  for (const auto& op : l.tx.queue) {
    if (!op->done || op->copied || !op->may_copy) continue;
    const std::uint64_t rest = op->total - op->sent;
    if (l.backlog + rest > options_.send_buffer) break;
    op->copy_rest();
    l.backlog += rest;
    finish(*op);
  }
}

}  // namespace f2d2n::detail::tcp_impl
