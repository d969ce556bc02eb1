// f2d2n/transport/detail/tcp/link.hpp: the state of the connection to one peer: its socket and
// strand, and per direction the queue of operations and who may use the socket there.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/core/unit.hpp>
#include <f2d2n/transport/detail/tcp/asio.hpp>
#include <f2d2n/transport/detail/tcp/failure.hpp>
#include <f2d2n/transport/detail/tcp/operation.hpp>
#include <f2d2n/transport/detail/tcp/tls.hpp>

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

namespace f2d2n::detail::tcp_impl {

/// One direction of a link (sending, with send_op, or receiving, with receive_op).
template <class Op>
struct direction {
  std::deque<std::shared_ptr<Op>> queue;  // operations in the order they were started
  bool caller = false;                    // a caller's thread moves a frame here: the strand moves none meanwhile
  bool waiting = false;                   // a waiter coroutine waits for the socket to be ready in this direction
  std::string down;                       // why frames can no longer move here ("" while they can)
};

/// The connection to one peer. Its strand runs the queued operations; everything below `m` is
/// touched only with `m` held, by the strand or by a caller's thread on the fast path of a
/// blocking call (recursive: completion handlers may run inline on the strand and start more).
struct link {
  link(asio::io_context& io, unit_id p, socket_type s, std::unique_ptr<tls_session> t)
      : peer(p), strand(asio::make_strand(io)), socket(std::move(s)), fd(socket.native_handle()), tls(std::move(t)) {}
  unit_id peer;
  strand_type strand;
  std::recursive_mutex m;
  socket_type socket;
  int fd;                            // the socket's descriptor, for poll() on a caller's thread
  std::unique_ptr<tls_session> tls;  // null for plain TCP: then frames move by the socket's read_some / write_some
  direction<send_op> tx;
  direction<receive_op> rx;
  std::uint64_t backlog = 0;                   // bytes of tx's frames copied and not yet written
  std::string goodbye_text;                    // the payload of the peer's goodbye frame
  std::optional<shutdown_reason> peer_reason;  // why the peer shut down, when its goodbye said so
  bool closing = false;                        // this unit is shutting the link down
  bool close_deferred = false;                 // shutdown() closed the link while a caller's thread held it

  /// What the waiter of Op's direction waits for: its own readiness, except when TLS must read in
  /// order to write or the reverse.
  template <class Op>
  [[nodiscard]] socket_type::wait_type waits_for() const noexcept {
    if (!tls) return Op::ready;
    if constexpr (std::is_same_v<Op, send_op>) return tls->write_waits();
    else return tls->read_waits();
  }

  /// The direction that operations of type Op use.
  template <class Op>
  [[nodiscard]] direction<Op>& along() noexcept {
    if constexpr (std::is_same_v<Op, send_op>) return tx;
    else return rx;
  }
};

/// With TLS, a write that could not finish has put part of its bytes in a record that waits
/// inside TLS: the stream holds them now, even if the kernel took nothing yet.
[[nodiscard]] inline bool committed(const link& l) noexcept { return l.tls && l.tls->write_committed(); }

/// The peer_error of an operation at `where` that finds a direction of `l` down for `why`: it
/// carries the reason the peer gave in its goodbye, when it gave one, so that every operation
/// with a peer that shut down after a failure names the unit that failed first.
[[nodiscard]] inline failure link_down(const link& l, const comm_context& where, const std::string& why) {
  if (l.peer_reason) return fail<peer_error>(where, why, *l.peer_reason);
  return fail<peer_error>(where, why);
}

[[nodiscard]] inline bool would_block(const error_code& ec) {
  return ec == asio::error::would_block || ec == asio::error::try_again;
}

/// Why a link went down, in words, from the error of a socket operation.
[[nodiscard]] inline std::string connection_failure(const error_code& ec) {
  if (ec == asio::error::eof || ec == asio::error::broken_pipe || ec == asio::error::connection_reset)
    return "the connection was closed by the peer (" + ec.message() + ")";
  return "the connection failed: " + ec.message();
}

}  // namespace f2d2n::detail::tcp_impl
