// A unit of a plan's cluster started by f2d2n_launch over TCP (tests/CMakeLists.txt): the
// equivalence proof of tests/plan_suite.hpp across real processes. The plans are spread over
// plan_worker_*.cpp so that each translation unit stays within the compile-time budget.
//   plan_worker <plan>            trains <plan> (dp2, dp4, tp2, tp2_inputs, tp3_mixed, tp2x2, dp2_tp2,
//                                 pp2_gpipe, pp2_1f1b, pp4, dp2_pp2_tp2) and
//                                 compares with the serial trainer; exit 0 when equal. Prints
//                                 the XXH3 digest of the unit's float32 weights after training
//                                 (tests/netns.sh compares runs bit for bit)
//   plan_worker mismatch <plan>   the launcher started another number of units than <plan> has:
//                                 every unit must refuse with a configuration_error naming both
#pragma once

#include "plan_suite.hpp"

#include <f2d2n/launch/config.hpp>
#include <f2d2n/launch/tcp.hpp>
#include <f2d2n/plan/description.hpp>
#include <f2d2n/store/checksum.hpp>
#include <f2d2n/transport/tcp.hpp>

#include <cstdio>
#include <cstring>
#include <span>
#include <string>
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
  tcp_transport t(c.rank, c.peers, Plan::fingerprint, tcp_options_of(c, {}, peer_description<Plan>()));
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
  tcp_transport t(c.rank, c.peers, Plan::fingerprint, tcp_options_of(c, {}, peer_description<Plan>()));
  try {
    distributed_network<Plan, tcp_transport> net(t);
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

/// Run plan `name` (train, or check the mismatch) when they have it; -1 otherwise.
int run_tensor_plans(const std::string& name, const cluster_config& c, bool check_mismatch);
int run_pipeline_plans(const std::string& name, const cluster_config& c, bool check_mismatch);

template <class Plan>
int run_plan(const std::string& name, const cluster_config& c, bool check_mismatch) {
  return check_mismatch ? mismatch<Plan>(c, name) : train<Plan>(c, name);
}

}  // namespace f2d2n::testing
