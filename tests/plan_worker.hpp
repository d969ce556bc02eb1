// A unit of a plan's cluster started by f2d2n_launch over TCP, or by mpirun over MPI
// (tests/CMakeLists.txt): the
// equivalence proof of tests/plan_suite.hpp across real processes. The plans are spread over
// plan_worker_*.cpp so that each translation unit stays within the compile-time budget.
//   plan_worker <plan>            trains <plan> (dp2, dp4, tp2, tp2_inputs, tp3_mixed, tp2x2, dp2_tp2,
//                                 pp2_gpipe, pp2_1f1b, pp4, dp2_pp2_tp2) and
//                                 compares with the serial trainer; exit 0 when equal. Prints
//                                 the XXH3 digest of the unit's float32 weights after training
//                                 (tests/netns.sh compares runs bit for bit)
//   plan_worker mismatch <plan>   the launcher started another number of units than <plan> has:
//                                 every unit must refuse with a configuration_error naming both
//   plan_worker origin            dp4; unit 2 fails between steps 2 and 3 (as a data loader might)
//                                 and shuts down with the reason; every other unit must fail in step 3
//                                 with a peer_error naming unit 2 as the unit that failed first, with
//                                 its error, and exit with bystander_exit_code; unit 2 exits 1
//                                 (tests/origin.sh checks the units and what the launcher reports)
#pragma once

#include "plan_suite.hpp"

#include <f2d2n/launch/config.hpp>
#include <f2d2n/launch/transport.hpp>
#include <f2d2n/plan/description.hpp>
#include <f2d2n/store/checksum.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace f2d2n::testing {

/// Plans checked in float64 too (the others in float32 only: each plan and scalar costs compile
/// time, and test_plan checks float64 on the local transport).
template <class Plan>
inline constexpr bool also_double =
    std::is_same_v<Plan, plan_tp2x2> || std::is_same_v<Plan, plan_dp2_pp2_tp2> || std::is_same_v<Plan, plan_tp3_mixed>;

template <class Plan>
int train(const cluster_config& c, const std::string& name) {
  cluster_transport unit(c, Plan::fingerprint, peer_description<Plan>());
  auto& t = unit.get();
  std::vector<float> weights;
  auto failures = equivalence<Plan, float>(t, 1e-5, &weights);
  if constexpr (also_double<Plan>)
    for (const auto& f : equivalence<Plan, double>(t, 1e-12)) failures.push_back("float64: " + f);
  for (const auto& f : failures) std::printf("unit %u, %s: FAILED: %s\n", c.rank, name.c_str(), f.c_str());
  if (failures.empty())
    std::printf("unit %u, %s: 20 steps equal the serial weights (float32%s); weights digest %s\n", c.rank,
                name.c_str(), also_double<Plan> ? " and float64" : "",
                to_hex(checksum(std::as_bytes(std::span<const float>(weights)))).c_str());
  t.shutdown();
  return failures.empty() ? 0 : 1;
}

template <class Plan>
int mismatch(const cluster_config& c, const std::string& name) {
  cluster_transport unit(c, Plan::fingerprint, peer_description<Plan>());
  auto& t = unit.get();
  try {
    distributed_network<Plan, any_transport> net(t);
  } catch (const configuration_error& e) {
    const bool names_both = std::strstr(e.what(), ("the plan has " + std::to_string(Plan::world_size)).c_str()) &&
                            std::strstr(e.what(), ("has " + std::to_string(c.world_size)).c_str());
    std::printf("unit %u, %s with %u units: %s: %s\n", c.rank, name.c_str(), c.world_size,
                names_both ? "refused" : "FAILED", e.what());
    return names_both ? 0 : 1;
  }
  std::printf("unit %u, %s with %u units: FAILED: accepted\n", c.rank, name.c_str(), c.world_size);
  return 1;
}

/// Unit 2 fails between steps (the `origin` mode above); returns the unit's exit code.
template <class Plan>
int origin(const cluster_config& c) {
  static_assert(Plan::world_size > 2, "the origin check needs a unit that is neither the failing one nor its peer");
  constexpr unit_id failing = 2;
  const std::string cause = "unit 2's data loader failed before step 3 (the test's planned failure)";
  cluster_transport unit(c, Plan::fingerprint);
  auto& t = unit.get();
  distributed_network<Plan, any_transport, float> net(t, 11);
  const auto data = plan_data<float>();
  try {
    for (int step = 0; step < 6; ++step) {
      if (c.rank == failing && step == 3) throw std::runtime_error(cause);
      net.compute_gradients(data.samples.topRows(10), std::span<const std::int32_t>(data.labels).first(10));
    }
  } catch (const peer_error& e) {
    const bool names_it = e.origin() == failing && e.reason()->error == cause &&
                          std::strstr(e.what(), ("because unit 2 failed first: " + cause).c_str()) != nullptr;
    std::printf("unit %u, origin: %s: %s\n", c.rank, names_it ? "names unit 2" : "FAILED", e.what());
    return names_it && c.rank != failing ? exit_code_of(c.rank, std::current_exception()) : 4;
  } catch (const std::exception& e) {
    if (c.rank != failing) {
      std::printf("unit %u, origin: FAILED: %s\n", c.rank, e.what());
      return 4;
    }
    shutdown_after(t, std::current_exception());  // tell the peers why, before the transport's destructor says goodbye
    std::printf("unit %u, origin: failed first: %s\n", c.rank, e.what());
    // Exit after the bystanders (within the launcher's grace period): their reports are not cut
    // short by the launcher ending them, and the launcher must still name this unit.
    std::this_thread::sleep_for(std::chrono::seconds(1));
    return exit_code_of(c.rank, std::current_exception());
  }
  std::printf("unit %u, origin: FAILED: 6 steps without a failure\n", c.rank);
  return 4;
}

/// Run plan `name` (train, or check the mismatch) when they have it; -1 otherwise.
int run_tensor_plans(const std::string& name, const cluster_config& c, bool check_mismatch);
int run_pipeline_plans(const std::string& name, const cluster_config& c, bool check_mismatch);

template <class Plan>
int run_plan(const std::string& name, const cluster_config& c, bool check_mismatch) {
  return check_mismatch ? mismatch<Plan>(c, name) : train<Plan>(c, name);
}

}  // namespace f2d2n::testing
