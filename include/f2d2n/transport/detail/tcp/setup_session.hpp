// f2d2n/transport/detail/tcp/setup_session.hpp: the state of one connect(): the pairs that are
// connected, refused or still missing, and the connections in the middle of their handshake.
#pragma once

#include <f2d2n/core/unit.hpp>
#include <f2d2n/transport/concept.hpp>
#include <f2d2n/transport/detail/tcp/asio.hpp>
#include <f2d2n/transport/detail/tcp/failure.hpp>
#include <f2d2n/transport/detail/tcp/tls.hpp>
#include <f2d2n/transport/endpoint.hpp>

#include <cstddef>
#include <deque>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace f2d2n::detail::tcp_impl {

/// A connection being set up: its socket and, with TLS, its session (null before the TLS
/// handshake and for plain TCP). Becomes a link once the handshake is done.
struct connection {
  explicit connection(asio::io_context& io) : socket(io) {}
  explicit connection(socket_type s) : socket(std::move(s)) {}
  socket_type socket;
  std::unique_ptr<tls_session> tls;
};

/// The state of one connect(), on the setup strand. A pair whose handshake fails does not stop
/// the others: every pair settles (connected or refused, so that each unit hears its own verdict
/// from every peer), then connect() succeeds as a whole or throws the first refusal.
struct setup_session {
  setup_session(const strand_type& strand, std::vector<endpoint> p, deadline u, unit_id world)
      : peers(std::move(p)), until(u), timer(strand), ready(world), claimed(world, false), settled(world, false),
        problems(world) {}
  std::vector<endpoint> peers;
  deadline until;
  timer_type timer;
  std::vector<std::optional<connection>> ready;  // handshaken connections, by peer
  std::vector<bool> claimed;                     // units whose hello was accepted
  std::vector<bool> settled;                     // units whose pair is connected or refused
  std::vector<std::string> problems;             // last failure to reach each unit
  std::vector<connection*> open;                 // connections in the middle of their handshake
  std::deque<connection*> unauthenticated;       // accepted, not authenticated yet, oldest first
  std::size_t unsettled = 0;
  failure first;               // the first failure (a handshake refusal first)
  bool first_refused = false;  // `first` is a handshake_error
  bool finished = false;
  std::promise<failure> result;  // connect() takes the failure out of it and rethrows it
};

/// Keeps a socket in the session's list of open connections while its handshake runs.
class open_guard {
 public:
  open_guard(setup_session& s, connection* p) : s_(&s), p_(p) { s_->open.push_back(p_); }
  open_guard(const open_guard&) = delete;
  open_guard& operator=(const open_guard&) = delete;
  ~open_guard() { release(); }
  void release() {
    if (!p_) return;
    std::erase(s_->open, p_);
    p_ = nullptr;
  }

 private:
  setup_session* s_;
  connection* p_;
};

}  // namespace f2d2n::detail::tcp_impl
