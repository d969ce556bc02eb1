// f2d2n/transport/any.hpp: any transport behind one type, so that a program chooses its transport
// when it starts (TCP, or MPI under mpirun) and instantiates its plans once.
//
//   f2d2n::tcp_transport tcp(...);
//   f2d2n::any_transport t(tcp);                     // refers to tcp: keep tcp alive as long
//   f2d2n::distributed_network<Plan, f2d2n::any_transport> net(t);
//
// Each call is one indirect call to the transport's own (its exchange() too, where it has one).
#pragma once

#include <f2d2n/transport/concept.hpp>

#include <concepts>
#include <cstdint>
#include <span>
#include <type_traits>

namespace f2d2n {

/// A transport that forwards to another one, whose type it forgets. It does not own it.
class any_transport {
 public:
  template <transport T>
  requires(!std::same_as<std::remove_cvref_t<T>, any_transport>) explicit any_transport(T& t)
      : target_(&t),
        ops_(&ops_of<T>),
        rank_(t.rank()),
        world_(t.world_size()),
        fingerprint_(t.fingerprint()),
        payload_checksums_(f2d2n::payload_checksums(t)) {}

  [[nodiscard]] unit_id rank() const noexcept { return rank_; }
  [[nodiscard]] unit_id world_size() const noexcept { return world_; }
  [[nodiscard]] std::uint64_t fingerprint() const noexcept { return fingerprint_; }
  [[nodiscard]] bool payload_checksums() const noexcept { return payload_checksums_; }

  void send(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload, deadline until) {
    ops_->send(target_, peer, header, payload, until);
  }
  wire::frame_header receive(unit_id peer, const wire::expectation& expected, std::span<std::byte> out,
                             deadline until) {
    return ops_->receive(target_, peer, expected, out, until);
  }
  wire::frame_header exchange(unit_id to, const wire::frame_header& header, std::span<const std::byte> payload,
                              unit_id from, const wire::expectation& expected, std::span<std::byte> out,
                              deadline until) {
    return ops_->exchange(target_, to, header, payload, from, expected, out, until);
  }
  void shutdown() { ops_->shutdown(target_); }
  void shutdown(const shutdown_reason& reason) { ops_->shutdown_with(target_, reason); }

 private:
  struct ops {
    void (*send)(void*, unit_id, const wire::frame_header&, std::span<const std::byte>, deadline);
    wire::frame_header (*receive)(void*, unit_id, const wire::expectation&, std::span<std::byte>, deadline);
    wire::frame_header (*exchange)(void*, unit_id, const wire::frame_header&, std::span<const std::byte>, unit_id,
                                   const wire::expectation&, std::span<std::byte>, deadline);
    void (*shutdown)(void*);
    void (*shutdown_with)(void*, const shutdown_reason&);
  };
  template <class T>
  static constexpr ops ops_of{
      [](void* t, unit_id peer, const wire::frame_header& h, std::span<const std::byte> p, deadline until) {
        static_cast<T*>(t)->send(peer, h, p, until);
      },
      [](void* t, unit_id peer, const wire::expectation& e, std::span<std::byte> out, deadline until) {
        return static_cast<T*>(t)->receive(peer, e, out, until);
      },
      [](void* t, unit_id to, const wire::frame_header& h, std::span<const std::byte> p, unit_id from,
         const wire::expectation& e, std::span<std::byte> out,
         deadline until) { return f2d2n::exchange(*static_cast<T*>(t), to, h, p, from, e, out, until); },
      [](void* t) { static_cast<T*>(t)->shutdown(); },
      [](void* t, const shutdown_reason& r) { static_cast<T*>(t)->shutdown(r); },
  };

  void* target_;
  const ops* ops_;
  unit_id rank_;
  unit_id world_;
  std::uint64_t fingerprint_;
  bool payload_checksums_;
};

static_assert(transport<any_transport>);

}  // namespace f2d2n
