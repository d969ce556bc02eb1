// f2d2n/transport/concept.hpp: what a transport provides, and typed send / receive over any of them.
//
// A transport moves frames (wire/frame.hpp) between the units of one cluster. These fit:
//   local  units are threads of one process (tests, single-machine runs)
//   tcp    Boost.Asio, one connection per pair of units
//   shm    units of one host, through POSIX shared-memory rings (mixed: shm within hosts, tcp between)
//   mpi    Open MPI: send maps to MPI_Send of header + payload; receive(peer, expectation, ...)
//          to MPI_Irecv from that source with tag = message id, polled against the deadline with
//          a sleeping back-off (MPI has no timed receive), then the same check() as the others.
// Frames between one pair of units arrive in the order they were sent; a receive takes the next
// frame from its peer and checks it against what it expects (message, step, exact length) before
// storing the payload in the caller's buffer: nothing is allocated from what the wire says.
// Every blocking call has a deadline; failures are timeout_error, peer_error, protocol_error.
//
// Optional: exchange() (send to one peer while receiving from another), ring_pipeline() (how
// far the collectives send ahead of their receives, comm/primitives.hpp), receive_add() (a frame's
// payload added into the caller's elements instead of stored; false where it cannot).
//
// Shutting down: shutdown() sends every peer a goodbye; peers waiting on this unit get peer_error
// at once. shutdown(reason) does the same after a failure, and the goodbye carries the reason (the
// unit that failed first and its error, wire/goodbye.hpp): the peers' peer_error then says "the peer
// has shut down because unit 2 failed first: ..." and its reason() holds the same. A unit that fails
// because of such a peer_error shuts down with shutdown_reason_of(rank, its error), which passes the
// origin on, so that every unit of the cluster names the unit that failed first, not a bystander.
// Only the first shutdown counts: a later one (the destructor's) changes nothing.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/core/unit.hpp>
#include <f2d2n/wire/frame.hpp>
#include <f2d2n/wire/goodbye.hpp>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <span>
#include <type_traits>

namespace f2d2n {

using clock = std::chrono::steady_clock;
/// The latest time a blocking call may return at.
using deadline = clock::time_point;

/// A transport: see the top of this file for the contract.
template <class T>
concept transport = requires(T& t, const T& ct, unit_id peer, const wire::frame_header& header,
                             std::span<const std::byte> payload, const wire::expectation& expected,
                             std::span<std::byte> out, deadline until, const shutdown_reason& reason) {
  { ct.rank() } -> std::same_as<unit_id>;
  { ct.world_size() } -> std::same_as<unit_id>;
  { ct.fingerprint() } -> std::same_as<std::uint64_t>;
  t.send(peer, header, payload, until);  // the frame is on its way (or buffered) when this returns
  { t.receive(peer, expected, out, until) } -> std::same_as<wire::frame_header>;
  t.shutdown();        // no more frames from this unit; peers waiting on it get peer_error
  t.shutdown(reason);  // the same after a failure; the peers' peer_error carries the reason
};

/// Shuts `t` down after `failure` (an exception this unit caught), telling its peers why:
/// shutdown(shutdown_reason_of(t.rank(), failure)). Call it in a catch block before leaving (the
/// processing unit does it when a step fails), so that the peers name the unit that failed first.
template <transport T>
void shutdown_after(T& t, const std::exception_ptr& failure) {
  t.shutdown(shutdown_reason_of(t.rank(), failure));
}

/// Sends a frame to `to` while receiving one from `from` (MPI_Sendrecv): what a ring step needs
/// without deadlock, whatever the transport's buffering. Uses the transport's own `exchange` when
/// it has one (TCP overlaps both directions); otherwise sends, then receives, which is right for
/// transports whose send does not wait for the receiver (local).
template <transport T>
wire::frame_header exchange(T& t, unit_id to, const wire::frame_header& header, std::span<const std::byte> payload,
                            unit_id from, const wire::expectation& expected, std::span<std::byte> out, deadline until) {
  if constexpr (requires { t.exchange(to, header, payload, from, expected, out, until); }) {
    return t.exchange(to, header, payload, from, expected, out, until);
  } else {
    t.send(to, header, payload, until);
    return t.receive(from, expected, out, until);
  }
}

/// Whether frames sent through `t` carry a checksum of their payload (wire::make_header): true
/// unless the transport says otherwise (mpi_options::payload_checksums).
template <class T>
[[nodiscard]] bool payload_checksums(const T& t) {
  if constexpr (requires { t.payload_checksums(); }) return t.payload_checksums();
  else return true;
}

/// Pieces the rings of comm/primitives.hpp send ahead of their receives over `t` when a call leaves
/// it to the transport (call_options::pipeline): the transport's ring_pipeline() where it has one
/// (shared memory and local: 2, their sends only copy), else 0: lockstep exchanges, which TCP and
/// MPI run from and into the caller's memory in both directions at once (a send ahead on TCP is
/// copied when the socket cannot take it, which costs more than it saves below 64 MiB).
template <class T>
[[nodiscard]] std::size_t ring_pipeline(const T& t) {
  if constexpr (requires { t.ring_pipeline(); }) return t.ring_pipeline();
  else return 0;
}

/// Arithmetic element types that travel as raw little-endian arrays.
template <class T>
concept wire_scalar = std::is_arithmetic_v<T>;

/// Sends `data` to `peer` as message `message_id` of step `step`.
template <transport T, wire_scalar S>
void send_tensor(T& t, unit_id peer, std::uint32_t message_id, std::uint64_t step, std::span<const S> data,
                 deadline until) {
  const auto bytes = std::as_bytes(data);
  const auto header = wire::make_header(wire::frame_kind::data, t.fingerprint(), message_id, t.rank(), step, bytes,
                                        payload_checksums(t));
  t.send(peer, header, bytes, until);
}

/// What a data frame of message `message_id`, step `step`, from `peer`, `bytes` long must be.
template <transport T>
[[nodiscard]] wire::expectation tensor_expectation(const T& t, unit_id peer, std::uint32_t message_id,
                                                   std::uint64_t step, std::size_t bytes) {
  return {wire::frame_kind::data, t.fingerprint(), message_id, peer, step, bytes};
}

/// Receives message `message_id` of step `step` from `peer` into `out`, whose size is the
/// message's: a frame of any other length is refused.
template <transport T, wire_scalar S>
void receive_tensor(T& t, unit_id peer, std::uint32_t message_id, std::uint64_t step, std::span<S> out,
                    deadline until) {
  t.receive(peer, tensor_expectation(t, peer, message_id, step, out.size_bytes()), std::as_writable_bytes(out), until);
}

/// Receives message `message_id` of step `step` from `peer` by adding it into `into` (of its
/// size), where the transport can (its receive_add, e.g. straight from a shared-memory ring).
/// Returns false, having received nothing, where it cannot: the caller then receives and adds.
template <transport T, wire_scalar S>
bool receive_add_tensor(T& t, unit_id peer, std::uint32_t message_id, std::uint64_t step, std::span<S> into,
                        deadline until) {
  if constexpr (requires(const wire::expectation& e) {
                  { t.receive_add(peer, e, into, until) } -> std::same_as<bool>;
                }) {
    return t.receive_add(peer, tensor_expectation(t, peer, message_id, step, into.size_bytes()), into, until);
  } else {
    return false;
  }
}

/// Sends `data` to `to` and receives `out` from `from`, both as message `message_id` of `step`.
template <transport T, wire_scalar S>
void exchange_tensor(T& t, unit_id to, std::span<const S> data, unit_id from, std::span<S> out,
                     std::uint32_t message_id, std::uint64_t step, deadline until) {
  const auto bytes = std::as_bytes(data);
  const auto header = wire::make_header(wire::frame_kind::data, t.fingerprint(), message_id, t.rank(), step, bytes,
                                        payload_checksums(t));
  exchange(t, to, header, bytes, from, tensor_expectation(t, from, message_id, step, out.size_bytes()),
           std::as_writable_bytes(out), until);
}

}  // namespace f2d2n
