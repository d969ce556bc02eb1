// plan_worker (see plan_worker.hpp): the pipeline plans.
#include "plan_worker.hpp"

namespace f2d2n::testing {
int run_pipeline_plans(const std::string& name, const cluster_config& c, bool check_mismatch) {
  if (name == "pp2_gpipe") return run_plan<plan_pp2_gpipe>(name, c, check_mismatch);
  if (name == "pp2_1f1b") return run_plan<plan_pp2_1f1b>(name, c, check_mismatch);
  if (name == "pp4") return run_plan<plan_pp4>(name, c, check_mismatch);
  if (name == "dp2_pp2_tp2") return run_plan<plan_dp2_pp2_tp2>(name, c, check_mismatch);
  if (name == "cnn_dp2_pp2") return run_plan<plan_cnn_dp2_pp2>(name, c, check_mismatch);
  if (name == "cnn_pp2") return run_plan<plan_cnn_pp2>(name, c, check_mismatch);
  return -1;
}
}  // namespace f2d2n::testing
