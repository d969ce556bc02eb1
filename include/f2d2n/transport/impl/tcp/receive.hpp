// f2d2n/transport/impl/tcp/receive.hpp: receiving a frame: starting a receive, reading the header
// and checking it before the payload, the checksum, goodbyes, and what ends the stream from a peer.
#pragma once

#include <f2d2n/transport/impl/tcp/direction.hpp>
#include <f2d2n/transport/impl/tcp/transport_impl.hpp>

#include <exception>
#include <memory>
#include <span>
#include <string>
#include <utility>

namespace f2d2n::detail::tcp_impl {

inline void transport_impl::start_receive(unit_id peer, const wire::expectation& expected, std::span<std::byte> out,
                                          deadline until, receive_completion done) {
  auto op = std::make_shared<receive_op>(make_receive_op(peer, expected, out));
  op->done = std::move(done);
  std::string problem;
  link* l = link_for(peer, problem);
  if (l && expected.payload_length > out.size())
    problem = "the message has " + std::to_string(expected.payload_length) + " bytes, the buffer " +
              std::to_string(out.size());
  start(l, op, std::move(problem), until);
}

inline receive_op transport_impl::make_receive_op(unit_id peer, const wire::expectation& expected,
                                                  std::span<std::byte> out) const {
  receive_op op;
  op.where = {rank_, peer, expected.message_id, expected.step};
  op.expected = expected;
  op.out = out;
  return op;
}

/// Reads what the socket holds for `op` (on the peer's strand, or on a caller's thread that holds
/// the link's rx): the header, checked against the expectation before anything else is read, then
/// the payload straight into the caller's buffer, then its checksum. On a failure rx is down and
/// `f` says why.
inline progress transport_impl::advance(link& l, receive_op& op, failure& f) {
  for (;;) {
    if (op.have_header && op.got == op.total()) return complete_frame(l, op, f);
    asio::mutable_buffer buf;
    if (!op.have_header) buf = asio::buffer(op.header_bytes.data() + op.got, wire::header_size - op.got);
    else if (op.goodbye) buf = asio::buffer(l.goodbye_text.data() + (op.got - wire::header_size), op.total() - op.got);
    else buf = asio::buffer(op.out.data() + (op.got - wire::header_size), op.total() - op.got);
    error_code ec;
    const std::size_t n = l.tls ? l.tls->read(l.socket, buf, ec) : l.socket.read_some(buf, ec);
    if (would_block(ec)) return progress::wait;
    if (ec) {
      f = read_failed(l, op, ec);
      return progress::failed;
    }
    op.got += n;
    if (!op.have_header && op.got == wire::header_size && !accept_header(l, op, f)) return progress::failed;
  }
}

/// The header of `op` is complete: decode and check it (a goodbye ends the stream).
inline bool transport_impl::accept_header(link& l, receive_op& op, failure& f) {
  try {
    op.header = wire::decode(op.header_bytes, op.where);
    if (op.header.kind == wire::frame_kind::goodbye) {
      if (op.header.payload_length > max_handshake_payload) {
        l.rx.down = "the peer has shut down";
        f = fail<peer_error>(op.where, l.rx.down);
        return false;
      }
      op.goodbye = true;
      l.goodbye_text.assign(static_cast<std::size_t>(op.header.payload_length), '\0');
    } else {
      wire::check(op.header, op.expected, options_.max_frame, op.where);
    }
    op.have_header = true;
    return true;
  } catch (const protocol_error& e) {
    f = rejected(l, e);
    return false;
  }
}

/// The whole frame of `op` has arrived: a goodbye ends the stream (with the peer's reason when it
/// gave one: message goodbye_reason_message, wire/goodbye.hpp), data is verified.
inline progress transport_impl::complete_frame(link& l, receive_op& op, failure& f) {
  if (op.goodbye) {
    l.rx.down = "the peer has shut down";
    if (op.header.message_id == wire::goodbye_reason_message) {
      // Read from the wire: a reason that cannot be decoded is reported as such, never trusted.
      const auto bytes = std::as_bytes(std::span<const char>(l.goodbye_text));
      std::string problem;
      if (wire::checksum(op.header, bytes) != op.header.checksum) problem = "bad checksum";
      else l.peer_reason = wire::decode_reason(bytes, world_, problem);
      if (l.peer_reason) l.rx.down = wire::describe_goodbye(*l.peer_reason);
      else l.rx.down += " (the reason in its goodbye is unreadable: " + problem + ")";
    } else if (!l.goodbye_text.empty()) {
      l.rx.down += ": " + l.goodbye_text;
    }
    if (l.tx.down.empty()) l.tx.down = l.rx.down;
    f = link_down(l, op.where, l.rx.down);
    return progress::failed;
  }
  const std::size_t len = static_cast<std::size_t>(op.header.payload_length);
  try {
    wire::verify(op.header, op.out.first(len), op.where);
  } catch (const protocol_error& e) {
    f = rejected(l, e);
    return progress::failed;
  }
  return progress::complete;
}

/// A frame broke the protocol (`e`, the exception being handled): the stream from this peer is
/// out of sync. Returns `e` as the failure.
inline failure transport_impl::rejected(link& l, const protocol_error& e) {
  l.rx.down = std::string("an earlier frame from this peer was rejected (") + to_string(e.problem()) +
              "); the stream from this peer is out of sync";
  return std::current_exception();
}

inline failure transport_impl::read_failed(link& l, const receive_op& op, const error_code& ec) {
  if (ec == asio::error::eof && op.got == 0) {
    l.rx.down = "the peer closed the connection without a goodbye";
    return fail<peer_error>(op.where, l.rx.down);
  }
  if (ec == asio::error::eof) {
    l.rx.down = "the connection was closed in the middle of a frame";
    return fail<protocol_error>(op.where, frame_problem::truncated,
                                "the connection closed after " + std::to_string(op.got) + " of " +
                                    (op.have_header
                                         ? std::to_string(op.total()) + " bytes of the frame"
                                         : std::to_string(wire::header_size) + " bytes of the frame's header"));
  }
  l.rx.down = connection_failure(ec);
  if (l.tx.down.empty()) l.tx.down = l.rx.down;
  return fail<peer_error>(op.where, l.rx.down);
}

/// A receive's deadline passed: the failure to report; a frame given up half-way puts rx down.
inline failure transport_impl::timed_out(link& l, const receive_op& op) {
  if (op.got == 0) return fail<timeout_error>(op.where, "no message arrived before the deadline");
  l.rx.down = "a receive gave up in the middle of a frame; the stream from this peer is out of sync";
  return fail<timeout_error>(op.where,
                             "the deadline passed after " + std::to_string(op.got) +
                                 " bytes of the frame had arrived; the stream from this peer is unusable now");
}

}  // namespace f2d2n::detail::tcp_impl
