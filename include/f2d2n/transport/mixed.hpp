// f2d2n/transport/mixed.hpp: shared memory between the units of one host, TCP between hosts, in
// one cluster: mixed_transport routes each peer to the transport that reaches it.
//
//   f2d2n::tcp_transport tcp(rank, peers, fingerprint, tcp_options);          // every unit
//   f2d2n::shm_transport shm(rank, world, same_host_ranks, prefix, fingerprint, shm_options);
//   f2d2n::mixed_transport t(tcp, shm);                // refers to both: keep them alive
//
// launch/transport.hpp builds this for a unit started by f2d2n_launch (cluster_transport). The TCP
// connections to the units of this host stay open (they carried the key proof and the plan's
// description at start, and carry goodbyes); frames to those units go through shared memory.
// An exchange whose two peers are on different transports runs the TCP side on the TCP
// transport's io thread while this thread moves the shared-memory side.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/transport/concept.hpp>
#include <f2d2n/transport/shm.hpp>
#include <f2d2n/transport/tcp.hpp>

#include <exception>
#include <future>
#include <span>
#include <utility>

namespace f2d2n {

/// A transport that sends to each peer through shm_transport where it reaches it, else through
/// tcp_transport. It owns neither.
class mixed_transport {
 public:
  /// Both transports belong to the same unit of the same cluster. Frames carry payload checksums
  /// over both or over neither: where some peer is reached over TCP, `shm` must have them on.
  mixed_transport(tcp_transport& tcp, shm_transport& shm) : tcp_(&tcp), shm_(&shm) {
    if (tcp.rank() != shm.rank() || tcp.world_size() != shm.world_size() || tcp.fingerprint() != shm.fingerprint())
      throw configuration_error("f2d2n: mixed_transport: the TCP and shared-memory transports are not the same unit's");
    remote_ = shm.group().size() < shm.world_size();
    if (remote_ && !shm.payload_checksums())
      throw configuration_error(
          "f2d2n: mixed_transport: some peers are reached over TCP, whose frames carry payload checksums: turn "
          "shm_options::payload_checksums on");
  }

  [[nodiscard]] unit_id rank() const noexcept { return tcp_->rank(); }
  [[nodiscard]] unit_id world_size() const noexcept { return tcp_->world_size(); }
  [[nodiscard]] std::uint64_t fingerprint() const noexcept { return tcp_->fingerprint(); }
  [[nodiscard]] bool payload_checksums() const noexcept { return remote_ || shm_->payload_checksums(); }
  /// The shared-memory transport's: most links of a ring are within a host, and a ring goes at the
  /// pace of its slowest link, which is TCP between hosts whatever a send ahead costs there.
  [[nodiscard]] std::size_t ring_pipeline() const noexcept { return shm_->ring_pipeline(); }
  /// Whether frames to `peer` go through shared memory.
  [[nodiscard]] bool through_shm(unit_id peer) const noexcept { return shm_->reaches(peer); }

  void send(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload, deadline until) {
    if (through_shm(peer)) shm_->send(peer, header, payload, until);
    else tcp_->send(peer, header, payload, until);
  }

  wire::frame_header receive(unit_id peer, const wire::expectation& expected, std::span<std::byte> out,
                             deadline until) {
    return through_shm(peer) ? shm_->receive(peer, expected, out, until) : tcp_->receive(peer, expected, out, until);
  }

  /// Adds the next frame's payload into `into` straight from the ring where `peer` is on this
  /// host (shm_transport::receive_add); false, having done nothing, otherwise.
  template <class S>
  bool receive_add(unit_id peer, const wire::expectation& expected, std::span<S> into, deadline until) {
    return through_shm(peer) && shm_->receive_add(peer, expected, into, until);
  }

  wire::frame_header exchange(unit_id to, const wire::frame_header& header, std::span<const std::byte> payload,
                              unit_id from, const wire::expectation& expected, std::span<std::byte> out,
                              deadline until) {
    const bool to_shm = through_shm(to), from_shm = through_shm(from);
    if (to_shm && from_shm) return shm_->exchange(to, header, payload, from, expected, out, until);
    if (!to_shm && !from_shm) return tcp_->exchange(to, header, payload, from, expected, out, until);
    if (to_shm) {
      // The receive runs on TCP's io thread (it ends by `until` at the latest) while this thread
      // puts the whole frame into the ring: nothing is left for a later call to move.
      std::promise<std::pair<std::exception_ptr, wire::frame_header>> received;
      auto done = received.get_future();
      tcp_->async_receive(from, expected, out, until, [&received](std::exception_ptr e, wire::frame_header h) {
        received.set_value({std::move(e), h});
      });
      std::exception_ptr sent;
      try {
        shm_->send_whole(to, header, payload, until);
      } catch (...) {
        sent = std::current_exception();
      }
      auto [e, h] = done.get();  // `out` is the receive's until it completes
      if (sent) std::rethrow_exception(sent);
      if (e) std::rethrow_exception(e);
      return h;
    }
    std::promise<std::exception_ptr> sent;
    auto done = sent.get_future();
    tcp_->async_send(to, header, payload, until, [&sent](std::exception_ptr e) { sent.set_value(std::move(e)); });
    std::exception_ptr failed;
    wire::frame_header h{};
    try {
      h = shm_->receive(from, expected, out, until);
    } catch (...) {
      failed = std::current_exception();
    }
    if (auto e = done.get()) std::rethrow_exception(e);  // `payload` is the send's until it completes
    if (failed) std::rethrow_exception(failed);
    return h;
  }

  /// Says goodbye through both transports (the shared-memory peers first).
  void shutdown() {
    shm_->shutdown();
    tcp_->shutdown();
  }
  void shutdown(const shutdown_reason& reason) {
    shm_->shutdown(reason);
    tcp_->shutdown(reason);
  }

 private:
  tcp_transport* tcp_;
  shm_transport* shm_;
  bool remote_ = false;
};

static_assert(transport<mixed_transport>);

}  // namespace f2d2n
