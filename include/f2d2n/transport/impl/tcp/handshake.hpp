// f2d2n/transport/impl/tcp/handshake.hpp: the handshake on a new connection: hellos, the checks
// of the other's claim, the verdicts (the messages themselves are in detail/tcp/handshake.hpp).
#pragma once

#include <f2d2n/transport/impl/tcp/transport_impl.hpp>

#include <array>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace f2d2n::detail::tcp_impl {

inline asio::awaitable<void> transport_impl::write_frame(socket_type& sock, wire::frame_kind kind,
                                                         std::uint32_t message, std::span<const std::byte> payload) {
  const auto header = wire::encode(wire::make_header(kind, fingerprint_, message, rank_, 0, payload));
  const std::array<asio::const_buffer, 2> bufs{asio::buffer(header), asio::buffer(payload.data(), payload.size())};
  co_await asio::async_write(sock, bufs, asio::use_awaitable);
}

/// Reads one handshake or goodbye frame; its payload is bounded before it is read.
inline asio::awaitable<std::pair<wire::frame_header, std::vector<std::byte>>> transport_impl::read_handshake_frame(
    socket_type& sock, comm_context where) {
  wire::header_bytes b{};
  co_await asio::async_read(sock, asio::buffer(b), asio::use_awaitable);
  const wire::frame_header h = wire::decode(b, where);
  if (h.kind != wire::frame_kind::handshake && h.kind != wire::frame_kind::goodbye)
    throw protocol_error(where, frame_problem::bad_kind,
                         "frame kind " + std::to_string(static_cast<int>(h.kind)) + " during the handshake");
  if (h.payload_length > max_handshake_payload)
    throw protocol_error(where, frame_problem::too_large,
                         "a handshake of " + std::to_string(h.payload_length) + " bytes exceeds " +
                             std::to_string(max_handshake_payload));
  std::vector<std::byte> payload(static_cast<std::size_t>(h.payload_length));
  if (!payload.empty()) co_await asio::async_read(sock, asio::buffer(payload), asio::use_awaitable);
  wire::verify(h, payload, where);
  co_return std::pair<wire::frame_header, std::vector<std::byte>>{h, std::move(payload)};
}

/// Both sides send a hello, check the other's, then send a verdict (accepted, or a goodbye
/// saying what differs) and read the other's. Returns the peer's rank; throws handshake_error
/// (refused, by either side), protocol_error or peer_error.
inline asio::awaitable<unit_id> transport_impl::handshake(std::shared_ptr<setup_session> s, socket_type& sock,
                                                          std::optional<unit_id> expected) {
  const hello mine{rank_, world_, fingerprint_, wire::wire_version};
  comm_context where{rank_, expected.value_or(rank_), hello_message, 0};
  try {
    const auto payload = encode_hello(mine);
    co_await write_frame(sock, wire::frame_kind::handshake, hello_message, payload);
    auto [h, p] = co_await read_handshake_frame(sock, where);
    if (!expected) where.peer = h.sender;
    if (h.kind == wire::frame_kind::goodbye)
      throw handshake_error(where, "the peer refused the handshake: " + text_of(p));
    if (h.message_id != hello_message)
      throw protocol_error(where, frame_problem::wrong_message, "handshake message " + std::to_string(h.message_id));
    const auto theirs = decode_hello(p);
    if (!theirs) throw handshake_error(where, "the peer's hello cannot be read");
    if (!expected) where.peer = theirs->rank;
    // The lower rank first, so that both sides print the same words.
    std::string diff = rank_ < theirs->rank ? differences(mine, *theirs) : differences(*theirs, mine);
    if (diff.empty()) {
      const std::string ut = "unit " + std::to_string(theirs->rank), um = "unit " + std::to_string(rank_);
      if (expected && theirs->rank != *expected)
        diff = um + " expected unit " + std::to_string(*expected) + " at " + describe(s->peers[*expected]) +
               ", the unit there says it is " + ut;
      else if (!expected && (theirs->rank <= rank_ || theirs->rank >= world_))
        diff = ut + " connected to " + um + ", but only units " + std::to_string(rank_ + 1) + " to " +
               std::to_string(world_ - 1) + " connect to it";
      else if (!expected && s->claimed[theirs->rank]) diff = ut + " connected to " + um + " twice";
    }
    if (!diff.empty()) {
      error_code ignored;
      const auto header = wire::encode(wire::make_header(wire::frame_kind::goodbye, fingerprint_, hello_message, rank_,
                                                         0, std::as_bytes(std::span(diff))));
      const std::array<asio::const_buffer, 2> bufs{asio::buffer(header), asio::buffer(diff)};
      co_await asio::async_write(sock, bufs, asio::redirect_error(asio::use_awaitable, ignored));
      sock.shutdown(socket_type::shutdown_send, ignored);
      throw handshake_error(where, "handshake refused: " + diff);
    }
    if (!expected) s->claimed[theirs->rank] = true;
    co_await write_frame(sock, wire::frame_kind::handshake, verdict_message, {});
    auto [v, vp] = co_await read_handshake_frame(sock, where);
    if (v.kind == wire::frame_kind::goodbye)
      throw handshake_error(where, "the peer refused the handshake: " + text_of(vp));
    if (v.message_id != verdict_message || !vp.empty())
      throw protocol_error(where, frame_problem::wrong_message, "handshake message " + std::to_string(v.message_id));
    co_return theirs->rank;
  } catch (const boost::system::system_error& e) {
    if (e.code() == asio::error::eof) throw peer_error(where, "the peer closed the connection during the handshake");
    throw peer_error(where, "the handshake failed: " + e.code().message());
  }
}

}  // namespace f2d2n::detail::tcp_impl
