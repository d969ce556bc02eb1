// f2d2n/transport/impl/tcp/handshake.hpp: the handshake on a new connection: hellos, the checks
// of the other's claim, the verdicts (the messages themselves are in detail/tcp/handshake.hpp).
#pragma once

#include <f2d2n/transport/impl/tcp/transport_impl.hpp>

#include <algorithm>
#include <array>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace f2d2n::detail::tcp_impl {

/// With options.tls, the TLS handshake on a connection just opened (before the cluster key's
/// proof): "" once both sides have verified the other's certificate, else what went wrong. Drives
/// OpenSSL's non-blocking handshake with waits for the socket; the connection's deadline closes
/// the socket of a peer that stalls.
inline asio::awaitable<std::string> transport_impl::tls_handshake(connection& c, bool dialled) {
  error_code ec;
  c.socket.non_blocking(true, ec);
  if (ec) co_return "the TLS handshake failed: " + ec.message();
  c.tls = std::make_unique<tls_session>(*tls_, c.socket.native_handle(), !dialled);
  for (;;) {
    if (!c.socket.is_open()) co_return std::string("the connection was closed during the TLS handshake");
    std::string problem;
    socket_type::wait_type waits = socket_type::wait_read;
    if (c.tls->handshake(problem, waits)) co_return problem.empty() ? problem : "the TLS handshake failed: " + problem;
    co_await c.socket.async_wait(waits, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return "the connection was closed during the TLS handshake";
  }
}

/// Writes all of `bufs` on a connection being set up (through TLS when it has a session).
inline asio::awaitable<error_code> transport_impl::put(connection& c, std::array<asio::const_buffer, 2> bufs) {
  error_code ec;
  if (!c.tls) {
    co_await asio::async_write(c.socket, bufs, asio::redirect_error(asio::use_awaitable, ec));
    co_return ec;
  }
  while (bufs[0].size() + bufs[1].size() != 0) {
    std::size_t n = c.tls->write(c.socket, bufs, ec);
    if (ec == asio::error::would_block) {
      co_await c.socket.async_wait(c.tls->write_waits(), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return ec;
      continue;
    }
    if (ec) co_return ec;
    for (auto& b : bufs) {
      const std::size_t k = std::min(n, b.size());
      b += k;
      n -= k;
    }
  }
  co_return ec;
}

/// Reads exactly `buf`'s size on a connection being set up (through TLS when it has a session).
inline asio::awaitable<error_code> transport_impl::take(connection& c, asio::mutable_buffer buf) {
  error_code ec;
  if (!c.tls) {
    co_await asio::async_read(c.socket, buf, asio::redirect_error(asio::use_awaitable, ec));
    co_return ec;
  }
  while (buf.size() != 0) {
    const std::size_t n = c.tls->read(c.socket, buf, ec);
    if (ec == asio::error::would_block) {
      co_await c.socket.async_wait(c.tls->read_waits(), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return ec;
      continue;
    }
    if (ec) co_return ec;
    buf += n;
  }
  co_return ec;
}

/// put() and take() for the steps that end in an exception when the connection fails.
inline void throw_if(const error_code& ec) {
  if (ec) throw boost::system::system_error(ec);
}

inline asio::awaitable<void> transport_impl::write_frame(connection& c, wire::frame_kind kind, std::uint32_t message,
                                                         std::span<const std::byte> payload) {
  const auto header = wire::encode(wire::make_header(kind, fingerprint_, message, rank_, 0, payload));
  throw_if(co_await put(c, {asio::buffer(header), asio::buffer(payload.data(), payload.size())}));
}

/// Reads one handshake or goodbye frame; its payload is bounded before it is read.
inline asio::awaitable<std::pair<wire::frame_header, std::vector<std::byte>>> transport_impl::read_handshake_frame(
    connection& c, comm_context where) {
  wire::header_bytes b{};
  throw_if(co_await take(c, asio::buffer(b)));
  const wire::frame_header h = wire::decode(b, where);
  if (h.kind != wire::frame_kind::handshake && h.kind != wire::frame_kind::goodbye)
    throw protocol_error(where, frame_problem::bad_kind,
                         "frame kind " + std::to_string(static_cast<int>(h.kind)) + " during the handshake");
  if (h.payload_length > max_handshake_payload)
    throw protocol_error(where, frame_problem::too_large,
                         "a handshake of " + std::to_string(h.payload_length) + " bytes exceeds " +
                             std::to_string(max_handshake_payload));
  std::vector<std::byte> payload(static_cast<std::size_t>(h.payload_length));
  if (!payload.empty()) throw_if(co_await take(c, asio::buffer(payload)));
  wire::verify(h, payload, where);
  co_return std::pair<wire::frame_header, std::vector<std::byte>>{h, std::move(payload)};
}

/// The accepting side's authentication (detail/tcp/authentication.hpp): the dialler's rank once it
/// has proved the key and named this unit; nothing when the connection is to be dropped as it is
/// (no proof, a wrong one, another unit's, a rank that does not connect here). Nothing of a
/// connection that has not proved the key is interpreted beyond its fixed-size records, and such a
/// connection touches no state but its own.
inline asio::awaitable<std::optional<unit_id>> transport_impl::authenticate_accepted(connection& c) {
  const nonce mine = fresh_nonce();
  const auto hello_bytes = encode_challenge(mine);
  throw_if(co_await put(c, {asio::buffer(hello_bytes), asio::const_buffer()}));
  challenge_bytes theirs{};
  throw_if(co_await take(c, asio::buffer(theirs)));
  const auto nonce_d = decode_challenge(theirs);
  if (!nonce_d) co_return std::nullopt;
  dialler_proof_bytes proof{};
  throw_if(co_await take(c, asio::buffer(proof)));
  if (!dialler_proof_holds(key_bytes(), *nonce_d, mine, proof)) co_return std::nullopt;
  const auth_claim claim = claim_of(proof);
  // Proved, so a unit of this cluster: it learns who is here (a misdirected unit can say why it
  // gave up), and nothing else happens unless it dialled this unit and is one that does.
  const auto answer = encode_acceptor_proof(rank_, proof_mac(key_bytes(), acceptor_label, *nonce_d, mine,
                                                             {claim.dialler, rank_, claim.world}));
  throw_if(co_await put(c, {asio::buffer(answer), asio::const_buffer()}));
  if (claim.target != rank_ || claim.dialler <= rank_ || claim.dialler >= world_) co_return std::nullopt;
  co_return claim.dialler;
}

/// The dialling side's authentication with the unit it dialled as unit `r`: "" once that unit has
/// proved the key and that it is unit r; otherwise what went wrong (the dialler tries again).
inline asio::awaitable<std::string> transport_impl::authenticate_dialled(connection& conn, unit_id r,
                                                                         const std::string& at) {
  const nonce mine = fresh_nonce();
  const auto hello_bytes = encode_challenge(mine);
  error_code ec = co_await put(conn, {asio::buffer(hello_bytes), asio::const_buffer()});
  challenge_bytes theirs{};
  if (!ec) ec = co_await take(conn, asio::buffer(theirs));
  // With TLS, the acceptor verifies this unit's certificate after this unit's handshake is done:
  // its refusal arrives here, as an alert, or as the connection closed (even reset) at once.
  if (ec && ec.category() == tls_category())
    co_return at + ": the unit there refused this unit's TLS certificate (" + ec.message() + ")";
  if (ec)
    co_return at + ": " + (ec == asio::error::eof ? std::string("the connection was closed") : ec.message()) +
        " before authentication" + (tls_ ? " (does it accept this unit's TLS certificate?)" : "");
  const auto nonce_a = decode_challenge(theirs);
  if (!nonce_a) co_return at + ": what listens there is not an f2d2n unit of this version";
  const auth_claim c{rank_, r, world_};
  const auto proof = encode_dialler_proof(c, proof_mac(key_bytes(), dialler_label, mine, *nonce_a, c));
  ec = co_await put(conn, {asio::buffer(proof), asio::const_buffer()});
  acceptor_proof_bytes answer{};
  if (!ec) ec = co_await take(conn, asio::buffer(answer));
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
inline asio::awaitable<void> transport_impl::handshake(std::shared_ptr<setup_session> s, connection& c, unit_id peer,
                                                       bool dialled) {
  const hello mine{rank_, world_, fingerprint_, wire::wire_version, options_.description};
  const comm_context where{rank_, peer, hello_message, 0};
  try {
    const auto payload = encode_hello(mine);
    co_await write_frame(c, wire::frame_kind::handshake, hello_message, payload);
    auto [h, p] = co_await read_handshake_frame(c, where);
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
      (void)co_await put(c, {asio::buffer(header), asio::buffer(diff)});
      c.socket.shutdown(socket_type::shutdown_send, ignored);
      throw handshake_error(where, "handshake refused: " + diff);
    }
    if (!dialled) s->claimed[peer] = true;
    co_await write_frame(c, wire::frame_kind::handshake, verdict_message, {});
    auto [v, vp] = co_await read_handshake_frame(c, where);
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
