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

/// The accepting side's authentication (detail/tcp/authentication.hpp): the dialler's rank once it
/// has proved the key and named this unit; nothing when the connection is to be dropped as it is
/// (no proof, a wrong one, another unit's, a rank that does not connect here). Nothing of a
/// connection that has not proved the key is interpreted beyond its fixed-size records, and such a
/// connection touches no state but its own.
inline asio::awaitable<std::optional<unit_id>> transport_impl::authenticate_accepted(socket_type& sock) {
  const nonce mine = fresh_nonce();
  const auto hello_bytes = encode_challenge(mine);
  co_await asio::async_write(sock, asio::buffer(hello_bytes), asio::use_awaitable);
  challenge_bytes theirs{};
  co_await asio::async_read(sock, asio::buffer(theirs), asio::use_awaitable);
  const auto nonce_d = decode_challenge(theirs);
  if (!nonce_d) co_return std::nullopt;
  dialler_proof_bytes proof{};
  co_await asio::async_read(sock, asio::buffer(proof), asio::use_awaitable);
  if (!dialler_proof_holds(key_bytes(), *nonce_d, mine, proof)) co_return std::nullopt;
  const auth_claim c = claim_of(proof);
  // Proved, so a unit of this cluster: it learns who is here (a misdirected unit can say why it
  // gave up), and nothing else happens unless it dialled this unit and is one that does.
  const auto answer =
      encode_acceptor_proof(rank_, proof_mac(key_bytes(), acceptor_label, *nonce_d, mine, {c.dialler, rank_, c.world}));
  co_await asio::async_write(sock, asio::buffer(answer), asio::use_awaitable);
  if (c.target != rank_ || c.dialler <= rank_ || c.dialler >= world_) co_return std::nullopt;
  co_return c.dialler;
}

/// The dialling side's authentication with the unit it dialled as unit `r`: "" once that unit has
/// proved the key and that it is unit r; otherwise what went wrong (the dialler tries again).
inline asio::awaitable<std::string> transport_impl::authenticate_dialled(socket_type& sock, unit_id r,
                                                                         const std::string& at) {
  const nonce mine = fresh_nonce();
  const auto hello_bytes = encode_challenge(mine);
  error_code ec;
  co_await asio::async_write(sock, asio::buffer(hello_bytes), asio::redirect_error(asio::use_awaitable, ec));
  challenge_bytes theirs{};
  if (!ec) co_await asio::async_read(sock, asio::buffer(theirs), asio::redirect_error(asio::use_awaitable, ec));
  if (ec)
    co_return at + ": " + (ec == asio::error::eof ? std::string("the connection was closed") : ec.message()) +
        " before authentication";
  const auto nonce_a = decode_challenge(theirs);
  if (!nonce_a) co_return at + ": what listens there is not an f2d2n unit of this version";
  const auth_claim c{rank_, r, world_};
  const auto proof = encode_dialler_proof(c, proof_mac(key_bytes(), dialler_label, mine, *nonce_a, c));
  co_await asio::async_write(sock, asio::buffer(proof), asio::redirect_error(asio::use_awaitable, ec));
  acceptor_proof_bytes answer{};
  if (!ec) co_await asio::async_read(sock, asio::buffer(answer), asio::redirect_error(asio::use_awaitable, ec));
  if (ec)
    co_return at + ": the unit there closed the connection during authentication (" +
        (options_.key ? "is its cluster key this unit's?" : "does it expect a cluster key? this unit has none") + ")";
  if (!acceptor_proof_holds(key_bytes(), mine, *nonce_a, c, answer))
    co_return at + ": what listens there did not prove the cluster key";
  if (rank_of(answer) != r)
    co_return at + ": the unit there proved that it is unit " + std::to_string(rank_of(answer)) + ", not unit " +
        std::to_string(r);
  co_return std::string();
}

/// After authentication, both sides send a hello, check the other's, then send a verdict
/// (accepted, or a goodbye saying what differs) and read the other's. `peer` is the unit at the
/// other end (authenticated); `dialled`: this unit connected. Returns when the pair is set up;
/// throws handshake_error (refused, by either side), protocol_error or peer_error.
inline asio::awaitable<void> transport_impl::handshake(std::shared_ptr<setup_session> s, socket_type& sock,
                                                       unit_id peer, bool dialled) {
  const hello mine{rank_, world_, fingerprint_, wire::wire_version, options_.description};
  const comm_context where{rank_, peer, hello_message, 0};
  try {
    const auto payload = encode_hello(mine);
    co_await write_frame(sock, wire::frame_kind::handshake, hello_message, payload);
    auto [h, p] = co_await read_handshake_frame(sock, where);
    if (h.kind == wire::frame_kind::goodbye)
      throw handshake_error(where, "the peer refused the handshake: " + text_of(p));
    if (h.message_id != hello_message)
      throw protocol_error(where, frame_problem::wrong_message, "handshake message " + std::to_string(h.message_id));
    const auto theirs = decode_hello(p);
    if (!theirs) throw handshake_error(where, "the peer's hello cannot be read");
    if (theirs->rank != peer)
      throw protocol_error(where, frame_problem::wrong_sender,
                           "the hello of unit " + std::to_string(peer) + " says unit " + std::to_string(theirs->rank));
    // The lower rank first, so that both sides print the same words.
    std::string diff = rank_ < peer ? differences(mine, *theirs) : differences(*theirs, mine);
    if (diff.empty() && !dialled && s->claimed[peer])
      diff = "unit " + std::to_string(peer) + " connected to unit " + std::to_string(rank_) + " twice";
    if (!diff.empty()) {
      error_code ignored;
      const auto header = wire::encode(wire::make_header(wire::frame_kind::goodbye, fingerprint_, hello_message, rank_,
                                                         0, std::as_bytes(std::span(diff))));
      const std::array<asio::const_buffer, 2> bufs{asio::buffer(header), asio::buffer(diff)};
      co_await asio::async_write(sock, bufs, asio::redirect_error(asio::use_awaitable, ignored));
      sock.shutdown(socket_type::shutdown_send, ignored);
      throw handshake_error(where, "handshake refused: " + diff);
    }
    if (!dialled) s->claimed[peer] = true;
    co_await write_frame(sock, wire::frame_kind::handshake, verdict_message, {});
    auto [v, vp] = co_await read_handshake_frame(sock, where);
    if (v.kind == wire::frame_kind::goodbye)
      throw handshake_error(where, "the peer refused the handshake: " + text_of(vp));
    if (v.message_id != verdict_message || !vp.empty())
      throw protocol_error(where, frame_problem::wrong_message, "handshake message " + std::to_string(v.message_id));
  } catch (const boost::system::system_error& e) {
    if (e.code() == asio::error::eof) throw peer_error(where, "the peer closed the connection during the handshake");
    throw peer_error(where, "the handshake failed: " + e.code().message());
  }
}

}  // namespace f2d2n::detail::tcp_impl
