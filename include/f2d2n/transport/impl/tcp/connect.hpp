// f2d2n/transport/impl/tcp/connect.hpp: starting a transport and connecting it: the io thread,
// listen(), connect(), the dialler, the accept loop, and how the pairs of one connect() settle.
#pragma once

#include <f2d2n/transport/impl/tcp/transport_impl.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace f2d2n::detail::tcp_impl {

inline transport_impl::transport_impl(unit_id rank, unit_id world_size, std::uint64_t fingerprint,
                                      const tcp_options& options)
    : rank_(rank), world_(world_size), fingerprint_(fingerprint), options_(options), io_(1),
      work_(asio::make_work_guard(io_)), setup_(asio::make_strand(io_)) {
  if (world_size == 0) throw configuration_error("f2d2n: a cluster needs at least one unit");
  if (rank >= world_size)
    throw configuration_error("f2d2n: unit " + std::to_string(rank) + " does not exist in a world of " +
                              std::to_string(world_size));
  if (options.tls) tls_ = std::make_unique<tls_context>(*options.tls);  // unreadable files: configuration_error now
  links_.resize(world_size);
  auto finished = std::make_shared<std::promise<void>>();
  thread_done_ = finished->get_future();
  thread_ = std::thread([this, finished] {
    io_.run();  // an exception from a completion handler ends the process, as from any thread
    finished->set_value();
  });
}

inline endpoint transport_impl::listen(const endpoint& where) {
  if (acceptor_) throw configuration_error("f2d2n: unit " + std::to_string(rank_) + " is listening already");
  const std::string host = where.host.empty() ? std::string("127.0.0.1") : where.host;
  asio::ip::tcp::endpoint at;
  error_code ec;
  const auto addr = asio::ip::make_address(host, ec);
  if (!ec) {
    at = {addr, where.port};
  } else {
    asio::ip::tcp::resolver resolver(io_);
    const auto found = resolver.resolve(host, std::to_string(where.port), ec);
    if (ec || found.empty())
      throw configuration_error("f2d2n: unit " + std::to_string(rank_) + " cannot resolve " + host + ": " +
                                ec.message());
    at = found.begin()->endpoint();
  }
  if (options_.listen_any)
    at = {at.address().is_v6() ? asio::ip::address(asio::ip::address_v6::any())
                               : asio::ip::address(asio::ip::address_v4::any()),
          at.port()};
  check_loopback(at, "listen on");
  acceptor_.emplace(io_);
  acceptor_->open(at.protocol(), ec);
  if (!ec) acceptor_->set_option(acceptor_type::reuse_address(true), ec);
  if (!ec) acceptor_->bind(at, ec);
  if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    acceptor_.reset();
    throw configuration_error("f2d2n: unit " + std::to_string(rank_) + " cannot listen on " + at.address().to_string() +
                              ":" + std::to_string(at.port()) + ": " + ec.message());
  }
  return local_endpoint();
}

/// Without a cluster key or TLS, a unit talks over loopback only: anything else would let any host in.
inline void transport_impl::check_loopback(const asio::ip::tcp::endpoint& e, const char* doing) const {
  if (options_.key || options_.tls || e.address().is_loopback()) return;
  throw configuration_error("f2d2n: unit " + std::to_string(rank_) + " has no cluster key and will not " + doing + " " +
                            e.address().to_string() +
                            ", which is not a loopback address: set F2D2N_CLUSTER_KEY (e.g. to the output of "
                            "`openssl rand -hex 32`, the same on every unit) or F2D2N_CLUSTER_KEY_FILE, or use TLS "
                            "(F2D2N_TLS_CA, F2D2N_TLS_CERT, F2D2N_TLS_KEY)");
}

inline endpoint transport_impl::local_endpoint() const {
  if (!acceptor_) return {};
  error_code ec;
  const auto e = acceptor_->local_endpoint(ec);
  if (ec) return {};
  return {e.address().to_string(), e.port()};
}

inline void transport_impl::connect(std::vector<endpoint> peers, deadline until) {
  if (on_io_thread()) throw configuration_error("f2d2n: connect() cannot run on the transport's own io thread");
  if (peers.size() != world_)
    throw configuration_error("f2d2n: unit " + std::to_string(rank_) + " has world size " + std::to_string(world_) +
                              " but was given " + std::to_string(peers.size()) + " endpoints");
  if (connect_started_) throw configuration_error("f2d2n: unit " + std::to_string(rank_) + " was connected already");
  if (shut_) throw configuration_error("f2d2n: unit " + std::to_string(rank_) + " has shut down");
  connect_started_ = true;
  if (world_ == 1) return;
  const bool accepts = rank_ + 1 < world_;
  if (accepts && !acceptor_) listen(peers[rank_]);
  auto s = std::make_shared<setup_session>(setup_, std::move(peers), until, world_);
  s->unsettled = world_ - 1;
  auto result = s->result.get_future();
  asio::post(setup_, [this, s, accepts] {
    s->timer.expires_at(s->until);
    s->timer.async_wait([this, s](const error_code& ec) {
      if (!ec) setup_timed_out(*s);
    });
    // The coroutines report their own failures to the session: none ends with an exception.
    if (accepts) asio::co_spawn(setup_, accept_loop(s), asio::detached);
    for (unit_id r = 0; r < rank_; ++r) asio::co_spawn(setup_, dial(s, r), asio::detached);
  });
  // The session's timer answers by `until`. The failure is moved out of the promise: this thread
  // holds its last reference (see failure).
  if (failure f = result.get()) std::rethrow_exception(std::move(f));
}

inline asio::awaitable<std::vector<asio::ip::tcp::endpoint>> transport_impl::resolve(const endpoint& e,
                                                                                     comm_context where) {
  const std::string host = e.host.empty() ? std::string("127.0.0.1") : e.host;
  error_code ec;
  const auto addr = asio::ip::make_address(host, ec);
  if (!ec) co_return std::vector<asio::ip::tcp::endpoint>{{addr, e.port}};
  asio::ip::tcp::resolver resolver(setup_);
  const auto found =
      co_await resolver.async_resolve(host, std::to_string(e.port), asio::redirect_error(asio::use_awaitable, ec));
  if (ec || found.empty()) throw peer_error(where, "cannot resolve " + describe(e) + ": " + ec.message());
  std::vector<asio::ip::tcp::endpoint> all;
  for (const auto& r : found) all.push_back(r.endpoint());
  co_return all;
}

/// Closes the socket of `c` when options.handshake_timeout has passed, unless it is gone by then:
/// the deadline of one connection's TLS handshake, authentication and handshake. Returns the timer
/// (cancel it, or let it go, once that is done).
inline std::shared_ptr<timer_type> transport_impl::connection_deadline(const std::shared_ptr<connection>& c) {
  auto t = std::make_shared<timer_type>(setup_);
  t->expires_after(options_.handshake_timeout);
  t->async_wait([weak = std::weak_ptr<connection>(c)](const error_code& ec) {
    if (ec) return;
    if (const auto p = weak.lock()) {
      error_code ignored;
      p->socket.close(ignored);
    }
  });
  return t;
}

/// Connects to unit r (below this one), retrying until the session ends, authenticates it
/// (retrying as well: whatever listens there may not be the unit, which may still come), and
/// handshakes.
inline asio::awaitable<void> transport_impl::dial(std::shared_ptr<setup_session> s, unit_id r) {
  const comm_context where{rank_, r, hello_message, 0};
  failure f;
  bool refused = false;
  try {  // the socket is closed, and out of the session's list, before the failure is reported
    auto conn = std::make_shared<connection>(io_);
    socket_type* sock = &conn->socket;
    open_guard guard(*s, conn.get());
    const auto targets = co_await resolve(s->peers[r], where);
    for (const auto& t : targets) check_loopback(t, "connect to");
    timer_type pause(setup_);
    auto backoff = std::chrono::milliseconds(10);
    std::shared_ptr<timer_type> limit;
    for (;;) {
      if (s->finished) co_return;
      error_code ec;
      for (const auto& t : targets) {
        error_code ignored;
        sock->close(ignored);
        sock->open(t.protocol(), ignored);
        // So that this connection's ephemeral port never keeps a unit that starts later from
        // listening there (Linux lets a listener share a port with connections that all set it).
        sock->set_option(socket_type::reuse_address(true), ignored);
        co_await sock->async_connect(t, asio::redirect_error(asio::use_awaitable, ec));
        if (!ec) break;
      }
      std::string problem;
      if (!ec) {
        error_code ignored;
        sock->set_option(asio::ip::tcp::no_delay(true), ignored);
        limit = connection_deadline(conn);
        conn->tls.reset();  // a session belongs to one connection: a new one for every attempt
        if (tls_) {
          problem = co_await tls_handshake(*conn, true);
          if (!problem.empty()) problem = describe(s->peers[r]) + ": " + problem;
        }
        if (problem.empty()) problem = co_await authenticate_dialled(*conn, r, describe(s->peers[r]));
        if (problem.empty()) break;
        limit->cancel();
      } else {
        problem = describe(s->peers[r]) + ": " + ec.message();
      }
      if (s->finished) co_return;
      s->problems[r] = problem;
      pause.expires_after(backoff);
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      backoff = std::min(backoff * 2, std::chrono::milliseconds(200));
    }
    s->problems[r].clear();
    co_await handshake(s, *conn, r, true);
    limit->cancel();
    if (s->finished) co_return;
    guard.release();
    s->ready[r].emplace(std::move(*conn));
    pair_connected(*s, r);
    co_return;
  } catch (const handshake_error&) {
    f = std::current_exception();
    refused = true;
  } catch (const configuration_error&) {
    f = std::current_exception();
    refused = true;
  } catch (...) {
    f = current_failure(where);
  }
  pair_failed(*s, r, std::move(f), refused);  // out of the catch block, which holds the exception too (see failure)
}

/// Accepts the connections of the units above this one, each served by its own coroutine. When
/// the system runs out of descriptors it closes the oldest connection that has not authenticated
/// and waits (10 ms, doubling to 1 s) instead of trying again at once.
inline asio::awaitable<void> transport_impl::accept_loop(std::shared_ptr<setup_session> s) {
  failure f;
  try {
    timer_type pause(setup_);
    auto backoff = std::chrono::milliseconds(10);
    for (;;) {
      socket_type sock(io_);
      error_code ec;
      co_await acceptor_->async_accept(sock, asio::redirect_error(asio::use_awaitable, ec));
      if (s->finished || ec == asio::error::operation_aborted || !acceptor_->is_open()) co_return;
      if (ec == asio::error::no_descriptors || ec.value() == ENFILE || ec == asio::error::no_buffer_space ||
          ec == asio::error::no_memory) {
        evict_oldest(*s);
        pause.expires_after(backoff);
        co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
        continue;
      }
      if (ec) continue;  // e.g. the connection was reset before it was accepted
      backoff = std::chrono::milliseconds(10);
      if (s->unauthenticated.size() >= std::max<std::size_t>(options_.max_pending_connections, 1)) evict_oldest(*s);
      asio::co_spawn(setup_, serve(s, std::move(sock)), asio::detached);
    }
  } catch (...) {
    f = current_failure({rank_, rank_, hello_message, 0});
  }
  finish_setup(*s, std::move(f));  // out of the catch block, which holds the exception too (see failure)
}

/// Closes the accepted connection that has waited longest without proving the key.
inline void transport_impl::evict_oldest(setup_session& s) {
  if (s.unauthenticated.empty()) return;
  connection* oldest = s.unauthenticated.front();
  s.unauthenticated.pop_front();
  error_code ignored;
  oldest->socket.close(ignored);
}

/// Authenticates an accepted connection (after the TLS handshake, with options.tls), then
/// handshakes. A connection that does not complete TLS with a certificate of the cluster CA, does
/// not prove the key, or proves it for another unit, is closed and changes nothing else.
inline asio::awaitable<void> transport_impl::serve(std::shared_ptr<setup_session> s, socket_type accepted) {
  failure f;
  std::optional<unit_id> peer;
  try {  // the socket is closed, and out of the session's lists, before a refusal is reported
    auto conn = std::make_shared<connection>(std::move(accepted));
    open_guard guard(*s, conn.get());
    s->unauthenticated.push_back(conn.get());
    struct unlist {
      setup_session& s;
      connection* p;
      ~unlist() { std::erase(s.unauthenticated, p); }
    } pending{*s, conn.get()};
    const auto limit = connection_deadline(conn);
    error_code ignored;
    conn->socket.set_option(asio::ip::tcp::no_delay(true), ignored);
    if (tls_ && !(co_await tls_handshake(*conn, false)).empty()) co_return;
    peer = co_await authenticate_accepted(*conn);
    std::erase(s->unauthenticated, conn.get());
    if (!peer || s->finished) co_return;
    co_await handshake(s, *conn, *peer, false);
    limit->cancel();
    if (s->finished) co_return;
    guard.release();
    s->ready[*peer].emplace(std::move(*conn));
    pair_connected(*s, *peer);
    co_return;
  } catch (const handshake_error&) {
    f = std::current_exception();
  } catch (...) {  // a connection that failed before it proved the key settles nothing
    if (peer) f = current_failure({rank_, *peer, hello_message, 0});
  }
  // Reported out of the catch block, which holds the exception too (see failure).
  if (f && peer) pair_failed(*s, *peer, std::move(f), true);
}

inline void transport_impl::pair_connected(setup_session& s, unit_id peer) {
  if (s.finished || s.settled[peer]) return;
  s.settled[peer] = true;
  if (--s.unsettled == 0) finish_setup(s, std::move(s.first));
}

inline void transport_impl::pair_failed(setup_session& s, unit_id peer, failure f, bool refused) {
  if (s.finished || s.settled[peer]) return;
  s.settled[peer] = true;
  if (!s.first || (!s.first_refused && refused)) {
    s.first = std::move(f);
    s.first_refused = refused;
  }
  if (--s.unsettled == 0) finish_setup(s, std::move(s.first));
}

inline void transport_impl::setup_timed_out(setup_session& s) {
  if (s.first) return finish_setup(s, std::move(s.first));  // a refusal says more than the units still missing
  std::string missing;
  unit_id first = rank_;
  for (unit_id r = 0; r < world_; ++r) {
    if (r == rank_ || s.settled[r]) continue;
    if (first == rank_) first = r;
    missing += (missing.empty() ? "" : ", ") + std::to_string(r);
    if (!s.problems[r].empty()) missing += " (" + s.problems[r] + ")";
  }
  const comm_context where{rank_, first, hello_message, 0};
  finish_setup(s, fail<timeout_error>(where, "unit(s) " + missing +
                                                 " did not connect and complete the handshake before the deadline"));
}

/// Writes a goodbye now if the socket takes it (a connection that is given up), and closes. With
/// TLS, only on a connection whose TLS handshake is done (its session then writes it).
inline void transport_impl::goodbye_now(connection& c, const std::string& why) {
  error_code ec;
  socket_type& sock = c.socket;
  const auto text = std::string_view(why).substr(0, max_handshake_payload);
  const auto header = wire::encode(wire::make_header(wire::frame_kind::goodbye, fingerprint_, hello_message, rank_, 0,
                                                     std::as_bytes(std::span(text))));
  const std::array<asio::const_buffer, 2> bufs{asio::buffer(header), asio::buffer(text.data(), text.size())};
  sock.non_blocking(true, ec);
  if (!ec && !tls_) sock.write_some(bufs, ec);
  else if (!ec && c.tls && c.tls->established()) c.tls->write(sock, bufs, ec);
  sock.shutdown(socket_type::shutdown_send, ec);
  sock.close(ec);
}

/// Ends the session: the links are set up, or every connection is told why connect() gave up.
inline void transport_impl::finish_setup(setup_session& s, failure err) {
  if (s.finished) return;
  s.finished = true;
  error_code ec;
  s.timer.cancel();
  if (acceptor_) acceptor_->close(ec);
  if (err) {
    const std::string why = "unit " + std::to_string(rank_) + " gave up connecting: " + message_of(err);
    for (connection* p : s.open) goodbye_now(*p, why);
    for (auto& r : s.ready)
      if (r) goodbye_now(*r, why);
    s.result.set_value(std::move(err));
    return;
  }
  // Connections still in their authentication or handshake (a late duplicate, an idle stranger)
  // end with the setup: their coroutines find the socket closed and return.
  for (connection* p : s.open) p->socket.close(ec);
  for (unit_id r = 0; r < world_; ++r) {
    if (!s.ready[r]) continue;
    s.ready[r]->socket.non_blocking(true, ec);
    links_[r] = std::make_unique<link>(io_, r, std::move(s.ready[r]->socket), std::move(s.ready[r]->tls));
  }
  s.result.set_value(nullptr);
}

}  // namespace f2d2n::detail::tcp_impl
