// A unit of a plan's cluster started by f2d2n_launch over TCP (tests/CMakeLists.txt): the
// equivalence proof of tests/plan_suite.hpp across real processes.
//   plan_worker <plan>            trains <plan> (dp2, dp4, tp2, tp2_inputs, tp3_mixed, tp2x2, dp2_tp2,
//                                 pp2_gpipe, pp2_1f1b, pp4, dp2_pp2_tp2) and
//                                 compares with the serial trainer; exit 0 when equal
//   plan_worker mismatch <plan>   the launcher started another number of units than <plan> has:
//                                 every unit must refuse with a configuration_error naming both
#include "plan_suite.hpp"

#include <f2d2n/launch/config.hpp>
#include <f2d2n/transport/tcp.hpp>

#include <cstdio>
#include <cstring>
#include <string>

namespace nn = f2d2n;
using namespace f2d2n::testing;

namespace {

template <class Plan>
int train(const nn::cluster_config& c, const std::string& name) {
  nn::tcp_transport t(c.rank, c.peers, Plan::fingerprint);
  auto failures = equivalence<Plan, float>(t, 1e-5);
  for (const auto& f : equivalence<Plan, double>(t, 1e-12)) failures.push_back("float64: " + f);
  for (const auto& f : failures) std::printf("unit %u, %s: FAILED: %s\n", c.rank, name.c_str(), f.c_str());
  if (failures.empty()) std::printf("unit %u, %s: 20 steps equal the serial weights (float32 and float64)\n", c.rank, name.c_str());
  t.shutdown();
  return failures.empty() ? 0 : 1;
}

template <class Plan>
int mismatch(const nn::cluster_config& c, const std::string& name) {
  nn::tcp_transport t(c.rank, c.peers, Plan::fingerprint);
  try {
    nn::distributed_network<Plan, nn::tcp_transport> net(t);
  } catch (const nn::configuration_error& e) {
    const bool names_both = std::strstr(e.what(), ("the plan has " + std::to_string(Plan::world_size)).c_str()) &&
                            std::strstr(e.what(), ("has " + std::to_string(c.world_size)).c_str());
    std::printf("unit %u, %s with %u units: %s: %s\n", c.rank, name.c_str(), c.world_size, names_both ? "refused" : "FAILED",
                e.what());
    return names_both ? 0 : 1;
  }
  std::printf("unit %u, %s with %u units: FAILED: accepted\n", c.rank, name.c_str(), c.world_size);
  return 1;
}

}  // namespace

int main(int argc, char** argv) try {
  const auto c = nn::config_from_environment();
  const bool check_mismatch = argc > 2 && std::strcmp(argv[1], "mismatch") == 0;
  const std::string name = argv[argc > 2 ? 2 : 1 < argc ? 1 : 0];
  auto run = [&]<class Plan>() { return check_mismatch ? mismatch<Plan>(c, name) : train<Plan>(c, name); };
  if (name == "dp2") return run.operator()<plan_dp2>();
  if (name == "dp4") return run.operator()<plan_dp4>();
  if (name == "tp2") return run.operator()<plan_tp2>();
  if (name == "tp2_inputs") return run.operator()<plan_tp2_inputs>();
  if (name == "tp3_mixed") return run.operator()<plan_tp3_mixed>();
  if (name == "dp2_tp2") return run.operator()<plan_dp2_tp2>();
  if (name == "tp2x2") return run.operator()<plan_tp2x2>();
  if (name == "pp2_gpipe") return run.operator()<plan_pp2_gpipe>();
  if (name == "pp2_1f1b") return run.operator()<plan_pp2_1f1b>();
  if (name == "pp4") return run.operator()<plan_pp4>();
  if (name == "dp2_pp2_tp2") return run.operator()<plan_dp2_pp2_tp2>();
  std::fprintf(stderr, "plan_worker: unknown plan %s\n", name.c_str());
  return 2;
} catch (const std::exception& e) {
  std::fprintf(stderr, "plan_worker: %s\n", e.what());
  return 1;
}
