// f2d2n/transport/tcp.hpp: units as processes that talk over TCP (Boost.Asio, C++20 coroutines):
// tcp_transport and its options.
//
//   // one step: listen at peers[rank], connect to every other unit, handshake (options.connect_timeout)
//   f2d2n::tcp_transport t(rank, peers, plan_fingerprint);
//
//   // or in steps, e.g. to let the system pick the port:
//   f2d2n::tcp_transport t(rank, world_size, plan_fingerprint);
//   f2d2n::endpoint here = t.listen({"127.0.0.1", 0});
//   ... tell the others `here` ...
//   t.connect(peers, f2d2n::clock::now() + 10s);
//
// One connection per pair of units: unit r accepts the connections of the units above it and
// connects to the units below it, retrying until the deadline (units start at different times).
// On each connection both sides send a handshake (rank, world size, plan fingerprint, wire
// version); a mismatched peer is refused and both sides throw handshake_error saying what differs.
//
// One io thread per transport runs a boost::asio::io_context and sleeps in epoll when idle; each
// peer has its own strand, on which every operation with that peer runs. The public operations
// take a completion token (callbacks, use_future, use_awaitable) and a deadline; the blocking
// send / receive / exchange of the transport concept are built on the same operations, and run on
// the caller's thread instead (non-blocking reads and writes, poll() until the deadline) when the
// directions they use are idle, saving the hand-over to the io thread. Nothing is read from the
// wire before the header has been checked against what the caller expects, and nothing is
// allocated from a length the wire announces.
//
// This header holds what users name; transport/detail/tcp/ what it is built from (the handshake's
// messages, failures, operations, links), transport/impl/tcp/ the definitions (connecting, the
// handshake, sending, receiving, the caller's-thread path, shutting down). See docs/tcp.md.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/core/unit.hpp>
#include <f2d2n/transport/cluster_key.hpp>
#include <f2d2n/transport/concept.hpp>
#include <f2d2n/transport/endpoint.hpp>
#include <f2d2n/transport/tls_options.hpp>
#include <f2d2n/wire/frame.hpp>

#include <utility>  // before Boost.Asio: 1.74's asio/awaitable.hpp needs it under g++ 12

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace f2d2n {

/// How a tcp_transport connects, what it accepts, how much it buffers.
struct tcp_options {
  /// The cluster's shared secret, which every connection proves before anything else is read
  /// (cluster_key_from_environment() reads it where f2d2n_launch puts it). Without one, a unit
  /// listens on and connects to loopback addresses only, and the proof is made with an empty key:
  /// it then keeps out nothing but programs that are not f2d2n units (see docs/security.md).
  std::optional<cluster_key> key;
  /// Mutual TLS on every connection (tls_options_from_environment() reads the files' names where
  /// F2D2N_TLS_* put them): each side presents its certificate and verifies the other's against
  /// the cluster CA; a peer that does not is dropped like one that does not prove the key. The
  /// key's proof, the handshake and every frame then travel inside TLS (encrypted, and altered
  /// bytes are detected). A unit with TLS may listen on and connect to any address without a key.
  /// Without it (the default), frames travel in clear text (docs/security.md).
  std::optional<tls_options> tls;
  /// How long the one-step constructor may take to connect to every unit and handshake.
  std::chrono::milliseconds connect_timeout{10000};
  /// How long one connection may take to authenticate and handshake once it is open; a
  /// connection still at it then is closed (the dialling unit tries again).
  std::chrono::milliseconds handshake_timeout{5000};
  /// Accepted connections that have not proved the key yet, at most: a new one beyond it closes
  /// the oldest (so that idle connections cannot keep a real unit out).
  std::size_t max_pending_connections = 64;
  /// The model and plan in words (peer_description<Plan>()), sent after authentication so that
  /// units of different plans say what differs, not only that their fingerprints do.
  std::string description;
  /// The largest payload accepted from the wire (checked before anything is read or stored).
  std::uint64_t max_frame = wire::default_max_frame;
  /// Bind the listening socket to every interface (0.0.0.0 or ::) instead of the listen address.
  bool listen_any = false;
  /// Bytes of frames, per peer, that the blocking send() may copy when the socket cannot take
  /// them at once, so that it returns without waiting for the peer to read. Beyond it send()
  /// waits (until its deadline) for the peer. 0: send() always waits until the kernel has the frame.
  std::uint64_t send_buffer = std::uint64_t{256} << 20;
  /// How long shutdown() may spend delivering frames still queued, then the goodbye frame.
  std::chrono::milliseconds linger{2000};
};

namespace detail::tcp_impl {
class transport_impl;
}  // namespace detail::tcp_impl

/// One unit's end of a TCP cluster: one connection per pair of units, one io thread, one strand per peer.
class tcp_transport {
 public:
  /// The executor of the transport's io thread: plain callbacks given to async_send and
  /// async_receive run there (they must not block and must not call send or receive).
  using executor_type = boost::asio::io_context::executor_type;

  /// Listens at peers[rank] (when a unit above it exists), connects to every other unit and
  /// completes the handshakes within options.connect_timeout; throws timeout_error,
  /// handshake_error, peer_error or configuration_error otherwise.
  tcp_transport(unit_id rank, std::vector<endpoint> peers, std::uint64_t fingerprint, tcp_options options = {});

  /// A unit that is not connected yet: call listen() (optional) and connect().
  tcp_transport(unit_id rank, unit_id world_size, std::uint64_t fingerprint, tcp_options options = {});

  tcp_transport(tcp_transport&&) noexcept;
  tcp_transport& operator=(tcp_transport&&) noexcept;
  ~tcp_transport();  // shuts down, then joins the io thread

  /// Binds the listening socket (port 0: the system picks a free one) and returns where it listens.
  /// Without options.listen_any it binds to `where`'s address only (127.0.0.1 when the host is empty).
  endpoint listen(const endpoint& where = {"127.0.0.1", 0});
  /// Where this unit listens ({"", 0} when it does not).
  [[nodiscard]] endpoint local_endpoint() const;
  /// Connects to every other unit (peers[r]: where unit r listens) and handshakes, by `until`.
  void connect(std::vector<endpoint> peers, deadline until);

  [[nodiscard]] unit_id rank() const noexcept;
  [[nodiscard]] unit_id world_size() const noexcept;
  [[nodiscard]] std::uint64_t fingerprint() const noexcept;
  [[nodiscard]] const tcp_options& options() const noexcept;
  [[nodiscard]] executor_type get_executor() const noexcept;

  /// Sends a frame, written straight from `payload` (which must stay valid until completion).
  /// Completion signature void(std::exception_ptr): null once the kernel has the whole frame;
  /// timeout_error if the peer took none of it by `until` (nothing was sent) or only part of it
  /// (the stream to the peer is then unusable); peer_error if the connection is gone.
  template <class CompletionToken>
  auto async_send(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload, deadline until,
                  CompletionToken&& token);

  /// Receives the next frame from `peer` into `out` (valid until completion), after checking its
  /// header against `expected`. Completion signature void(std::exception_ptr, wire::frame_header):
  /// protocol_error for a frame that is not the one expected (the stream from that peer is then
  /// unusable), timeout_error when the deadline passes, peer_error when the peer is gone.
  template <class CompletionToken>
  auto async_receive(unit_id peer, const wire::expectation& expected, std::span<std::byte> out, deadline until,
                     CompletionToken&& token);

  /// Sends a frame; returns when the kernel has it, or when what it did not take yet is copied
  /// (up to options.send_buffer per peer), so that two units may send to each other before either
  /// receives. Throws timeout_error, peer_error, configuration_error.
  void send(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload, deadline until);

  /// Receives the next frame from `peer` into `out`; see async_receive.
  wire::frame_header receive(unit_id peer, const wire::expectation& expected, std::span<std::byte> out, deadline until);

  /// Sends a frame to `to` while receiving the next frame from `from` (MPI_Sendrecv), both straight
  /// between the caller's memory and the sockets, nothing copied: a ring step in which every unit
  /// sends before it receives cannot deadlock, whatever the size and options.send_buffer. Returns
  /// once both are done (the send's failure is thrown first, then the receive's).
  wire::frame_header exchange(unit_id to, const wire::frame_header& header, std::span<const std::byte> payload,
                              unit_id from, const wire::expectation& expected, std::span<std::byte> out,
                              deadline until);

  /// Delivers the frames still queued (within options.linger), sends every peer a goodbye (its
  /// waiting receives end in peer_error "the peer has shut down") and closes every connection.
  /// Later operations fail with peer_error. The io thread is joined by the destructor. Only the
  /// first call (of either form) counts.
  void shutdown();
  /// The same after a failure: the goodbye carries `reason` (wire/goodbye.hpp), and the peers'
  /// peer_error says "the peer has shut down because unit <origin> failed first: <error>" and holds
  /// it in reason(). See shutdown_after() (transport/concept.hpp).
  void shutdown(const shutdown_reason& reason);

 private:
  void refuse_on_io_thread() const;

  std::unique_ptr<detail::tcp_impl::transport_impl> impl_;
};

static_assert(transport<tcp_transport>);

}  // namespace f2d2n

#include <f2d2n/transport/impl/tcp/caller_thread.hpp>
#include <f2d2n/transport/impl/tcp/connect.hpp>
#include <f2d2n/transport/impl/tcp/direction.hpp>
#include <f2d2n/transport/impl/tcp/handshake.hpp>
#include <f2d2n/transport/impl/tcp/receive.hpp>
#include <f2d2n/transport/impl/tcp/send.hpp>
#include <f2d2n/transport/impl/tcp/shutdown.hpp>
#include <f2d2n/transport/impl/tcp/transport.hpp>
