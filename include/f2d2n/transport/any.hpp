// f2d2n/transport/any.hpp: any transport behind one type, so that a program chooses its transport
// when it starts (TCP, or MPI under mpirun) and instantiates its plans once.
//
//   f2d2n::tcp_transport tcp(...);
//   f2d2n::any_transport t(tcp);                     // refers to tcp: keep tcp alive as long
//   f2d2n::distributed_network<Plan, f2d2n::any_transport> net(t);
//
// Each call is one indirect call to the transport's own (its exchange() and, for float and
// double, receive_add() too, where it has them).
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
        payload_checksums_(f2d2n::payload_checksums(t)),
        ring_pipeline_(f2d2n::ring_pipeline(t)) {}

  [[nodiscard]] unit_id rank() const noexcept { return rank_; }
  [[nodiscard]] unit_id world_size() const noexcept { return world_; }
  [[nodiscard]] std::uint64_t fingerprint() const noexcept { return fingerprint_; }
  [[nodiscard]] bool payload_checksums() const noexcept { return payload_checksums_; }
  [[nodiscard]] std::size_t ring_pipeline() const noexcept { return ring_pipeline_; }

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
  /// The target's receive_add for float and double payloads; false (nothing done) where it has none.
  template <class S>
  bool receive_add(unit_id peer, const wire::expectation& expected, std::span<S> into, deadline until) {
    if constexpr (std::is_same_v<S, float>)
      return ops_->receive_add_f32 != nullptr && ops_->receive_add_f32(target_, peer, expected, into, until);
    else if constexpr (std::is_same_v<S, double>)
      return ops_->receive_add_f64 != nullptr && ops_->receive_add_f64(target_, peer, expected, into, until);
    else
      return false;
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
    bool (*receive_add_f32)(void*, unit_id, const wire::expectation&, std::span<float>, deadline);
    bool (*receive_add_f64)(void*, unit_id, const wire::expectation&, std::span<double>, deadline);
  };
  template <class T, class S>
  static constexpr auto receive_add_of() -> bool (*)(void*, unit_id, const wire::expectation&, std::span<S>, deadline) {
    if constexpr (requires(T& x, unit_id p, const wire::expectation& e, std::span<S> s, deadline u) {
                    { x.receive_add(p, e, s, u) } -> std::same_as<bool>;
                  })
      return [](void* t, unit_id p, const wire::expectation& e, std::span<S> s, deadline u) {
        return static_cast<T*>(t)->receive_add(p, e, s, u);
      };
    else
      return nullptr;
  }
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
      receive_add_of<T, float>(),
      receive_add_of<T, double>(),
  };

  void* target_;
  const ops* ops_;
  unit_id rank_;
  unit_id world_;
  std::uint64_t fingerprint_;
  bool payload_checksums_;
  std::size_t ring_pipeline_;
};

static_assert(transport<any_transport>);

}  // namespace f2d2n
