// f2d2n/launch/transport.hpp: the transport a started unit talks through, chosen by how it was
// started: MPI under mpirun, mpiexec or srun (when the program links f2d2n::mpi); under
// f2d2n_launch or a hand-written environment (launch/config.hpp), shared memory between the units
// of one host and TCP between hosts (mixed_transport; TCP alone where no other unit shares the host).
//
//   const auto c = f2d2n::cluster_from_environment();
//   f2d2n::cluster_transport t(c, Plan::fingerprint, f2d2n::peer_description<Plan>());
//   f2d2n::distributed_network<Plan, f2d2n::any_transport> net(t.get());
//
// F2D2N_TRANSPORT=shm, tcp or mpi overrides the choice (tcp: TCP between all units, also on one
// host; mpi needs a program linked with f2d2n::mpi). Units are on one host when their F2D2N_PEERS
// entries name the same host, loopback addresses all naming this one (same_host_units()).
// Under MPI, the rank and the world size are MPI_COMM_WORLD's, F2D2N_TIMEOUT and
// F2D2N_CONNECT_TIMEOUT apply as under TCP, and F2D2N_RANK, F2D2N_WORLD_SIZE, F2D2N_PEERS are not
// needed. MPI is initialized on first use (MPI_THREAD_MULTIPLE asked) and finalized when the
// program exits, unless the program initialized it itself (f2d2n::mpi_environment in main).
//
// F2D2N_WITH_MPI (set by the f2d2n::mpi CMake target) must be the same in every translation unit
// of a program. MPI waits by polling: give each unit under MPI a core of its own (docs/mpi.md);
// where units share cores, TCP's sleeping waits serve them better.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/launch/config.hpp>
#include <f2d2n/launch/tcp.hpp>
#include <f2d2n/transport/any.hpp>
#include <f2d2n/transport/mixed.hpp>
#include <f2d2n/transport/shm.hpp>
#include <f2d2n/transport/tcp.hpp>
#ifdef F2D2N_WITH_MPI
#include <f2d2n/transport/mpi.hpp>
#endif

#include <xxhash.h>

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace f2d2n {

/// The transports a started unit can talk through. shm: shared memory between the units of one
/// host, TCP between hosts.
enum class transport_kind { shm, tcp, mpi };

/// The variable that overrides the choice of transport.
inline constexpr const char* transport_variable = "F2D2N_TRANSPORT";

/// Whether this program can talk MPI (it was built with f2d2n::mpi).
[[nodiscard]] constexpr bool built_with_mpi() noexcept {
#ifdef F2D2N_WITH_MPI
  return true;
#else
  return false;
#endif
}

/// Whether an MPI launcher (mpirun, mpiexec, srun with PMI or PMIx) started this process.
[[nodiscard]] inline bool started_by_mpi() noexcept {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (const char* s = std::getenv(v); s && *s) return true;
  return false;
}

/// The transport this unit should use: F2D2N_TRANSPORT when set; else MPI when an MPI launcher
/// started it and the program has MPI; else shared memory and TCP. A configuration_error when
/// F2D2N_TRANSPORT is not shm, tcp or mpi, or asks for MPI in a program without it.
[[nodiscard]] inline transport_kind chosen_transport() {
  if (const char* v = std::getenv(transport_variable); v && *v) {
    const std::string_view s(v);
    if (s == "tcp") return transport_kind::tcp;
    if (s == "shm") return transport_kind::shm;
    if (s != "mpi")
      throw configuration_error(std::string(transport_variable) + "=" + detail::quoted(s) +
                                " is none of shm, tcp, mpi");
    if (!built_with_mpi())
      throw configuration_error(std::string(transport_variable) +
                                "=mpi, but this program was built without MPI (link it with f2d2n::mpi)");
    return transport_kind::mpi;
  }
  return started_by_mpi() && built_with_mpi() ? transport_kind::mpi : transport_kind::shm;
}

/// Whether `host` (an F2D2N_PEERS entry's) names this machine through loopback.
[[nodiscard]] inline bool is_loopback_host(std::string_view host) noexcept {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.starts_with("127.");
}

/// The units of `c` on this unit's host, this one among them, in rank order: those whose entry
/// names the same host as this unit's (as text), or, where this unit's is a loopback address, a
/// loopback address too.
[[nodiscard]] inline std::vector<unit_id> same_host_units(const cluster_config& c) {
  std::vector<unit_id> group;
  const auto& self = c.self().host;
  for (unit_id r = 0; r < c.world_size; ++r) {
    const auto& host = c.peers.at(r).host;
    if (r == c.rank || host == self || (is_loopback_host(self) && is_loopback_host(host))) group.push_back(r);
  }
  return group;
}

/// The shared-memory segment prefix of the cluster `c` describes for the plan with `fingerprint`:
/// "f2d2n-<user id>-<hash of the fingerprint and every unit's endpoint>", the same in every unit,
/// and different for two clusters that are alive on one host at once (their ports differ).
[[nodiscard]] inline std::string shm_prefix_of(const cluster_config& c, std::uint64_t fingerprint) {
  std::string text = std::to_string(fingerprint);
  for (const auto& p : c.peers) text += "," + p.host + ":" + std::to_string(p.port);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(XXH3_64bits(text.data(), text.size())));
  return "f2d2n-" + std::to_string(::getuid()) + "-" + hex;
}

#ifdef F2D2N_WITH_MPI
namespace detail {
/// MPI for the whole program, initialized on first use and finalized at exit (a no-op where the
/// program initialized MPI itself).
inline mpi_environment& program_mpi() {
  static mpi_environment environment;
  return environment;
}
}  // namespace detail
#endif

/// The cluster this unit belongs to, as its launcher describes it: config_from_environment()
/// under TCP; under MPI, MPI_COMM_WORLD's rank and size (no peers: MPI finds them), with
/// F2D2N_TIMEOUT and F2D2N_CONNECT_TIMEOUT read as under TCP.
[[nodiscard]] inline cluster_config cluster_from_environment() {
  if (chosen_transport() != transport_kind::mpi) {
    if (started_by_mpi() && std::getenv(world_size_variable) == nullptr && !built_with_mpi())
      throw configuration_error(
          "f2d2n: this program was started by an MPI launcher, but it was built without MPI (link it with "
          "f2d2n::mpi), and F2D2N_WORLD_SIZE is not set for TCP");
    return config_from_environment();
  }
  cluster_config c;
#ifdef F2D2N_WITH_MPI
  detail::program_mpi();
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  c.rank = static_cast<unit_id>(rank);
  c.world_size = static_cast<unit_id>(size);
#endif
  read_timeouts_from_environment(c);
  return c;
}

/// The transport of a started unit (see the top of this file), owned, and seen as any_transport.
class cluster_transport {
 public:
  /// Connects to the cluster `c` describes (cluster_from_environment()) as a unit of the plan with
  /// `fingerprint`; `description` (peer_description<Plan>()) lets TCP units of different plans say
  /// what differs.
  cluster_transport(const cluster_config& c, std::uint64_t fingerprint, std::string description = {}) {
    if (c.peers.empty()) {
#ifdef F2D2N_WITH_MPI
      detail::program_mpi();
      mpi_options o;
      o.connect_timeout = c.connect_timeout;
      if (const char* v = std::getenv("F2D2N_MPI_SPIN_US"); v && *v) o.spin = std::chrono::microseconds(std::atoll(v));
      if (const char* v = std::getenv("F2D2N_MPI_CHECKSUMS"); v && *v) o.payload_checksums = std::atoi(v) != 0;
      if (const char* v = std::getenv("F2D2N_MPI_YIELD"); v && *v) o.yield = std::atoi(v) != 0;
      if (const char* v = std::getenv("F2D2N_MPI_NAP_US"); v && *v)
        o.max_nap = std::chrono::microseconds(std::atoll(v));
      mpi_ = std::make_unique<mpi_transport>(fingerprint, o);
      any_.emplace(*mpi_);
      return;
#else
      throw configuration_error("f2d2n: the cluster configuration names no peers (and this program has no MPI)");
#endif
    }
    tcp_ = std::make_unique<tcp_transport>(c.rank, c.peers, fingerprint, tcp_options_of(c, {}, std::move(description)));
    const auto group = same_host_units(c);
    if (chosen_transport() == transport_kind::shm && group.size() > 1) {
      shm_options o;
      o.connect_timeout = c.connect_timeout;
      o.payload_checksums = group.size() < c.world_size;  // TCP's frames carry them
      if (const char* v = std::getenv("F2D2N_SHM_RING_KIB"); v && *v)
        o.ring_bytes = static_cast<std::uint64_t>(std::atoll(v)) << 10;
      if (const char* v = std::getenv("F2D2N_SHM_SPIN_US"); v && *v) o.spin = std::chrono::microseconds(std::atoll(v));
      shm_ = std::make_unique<shm_transport>(c.rank, c.world_size, group, shm_prefix_of(c, fingerprint), fingerprint, o);
      mixed_ = std::make_unique<mixed_transport>(*tcp_, *shm_);
      any_.emplace(*mixed_);
      return;
    }
    any_.emplace(*tcp_);
  }

  [[nodiscard]] any_transport& get() noexcept { return *any_; }
  [[nodiscard]] transport_kind kind() const noexcept {
    return mixed_ ? transport_kind::shm : tcp_ ? transport_kind::tcp : transport_kind::mpi;
  }
  /// "TCP", "MPI", "shared memory" or "shared memory + TCP", for reports.
  [[nodiscard]] const char* name() const noexcept {
    if (mixed_) return shm_->group().size() == shm_->world_size() ? "shared memory" : "shared memory + TCP";
    return tcp_ ? "TCP" : "MPI";
  }

 private:
  // Destroyed in reverse: the mixed view, then shared memory (its goodbyes), then TCP.
  std::unique_ptr<tcp_transport> tcp_;
  std::unique_ptr<shm_transport> shm_;
  std::unique_ptr<mixed_transport> mixed_;
#ifdef F2D2N_WITH_MPI
  std::unique_ptr<mpi_transport> mpi_;
#endif
  std::optional<any_transport> any_;
};

}  // namespace f2d2n
