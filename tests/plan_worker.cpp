// A unit of a plan's cluster started by f2d2n_launch over TCP or by mpirun over MPI; see plan_worker.hpp.
// This file has main and the data-parallel plans; plan_worker_tensor.cpp and plan_worker_pipeline.cpp the rest.
#include "plan_worker.hpp"

#include <cstdio>
#include <cstring>
#include <string>

namespace f2d2n::testing {
namespace {
int run_data_plans(const std::string& name, const cluster_config& c, bool check_mismatch) {
  if (name == "dp2") return run_plan<plan_dp2>(name, c, check_mismatch);
  if (name == "dp4") return run_plan<plan_dp4>(name, c, check_mismatch);
  if (name == "dp2_tp2") return run_plan<plan_dp2_tp2>(name, c, check_mismatch);
  if (name == "dp3_buckets") return run_plan<plan_dp3_buckets>(name, c, check_mismatch);
  if (name == "cnn_dp2_spatial2") return run_plan<plan_cnn_dp2_spatial2>(name, c, check_mismatch);
  if (name == "cnn_spatial2") return run_plan<plan_cnn_spatial2>(name, c, check_mismatch);
  return -1;
}
}  // namespace
}  // namespace f2d2n::testing

int main(int argc, char** argv) try {
  namespace t = f2d2n::testing;
  const auto c = f2d2n::cluster_from_environment();
  if (argc > 1 && std::strcmp(argv[1], "origin") == 0) return t::origin<t::plan_dp4>(c);
  const bool check_mismatch = argc > 2 && std::strcmp(argv[1], "mismatch") == 0;
  const std::string name = argv[argc > 2 ? 2 : 1 < argc ? 1 : 0];
  for (auto run : {&t::run_data_plans, &t::run_tensor_plans, &t::run_pipeline_plans})
    if (const int code = run(name, c, check_mismatch); code >= 0) return code;
  std::fprintf(stderr, "plan_worker: unknown plan %s\n", name.c_str());
  return 2;
} catch (const std::exception& e) {
  std::fprintf(stderr, "plan_worker: %s\n", e.what());
  return 1;
}
