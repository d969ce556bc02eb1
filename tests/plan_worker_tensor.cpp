// plan_worker (see plan_worker.hpp): the tensor-parallel plans.
#include "plan_worker.hpp"

namespace f2d2n::testing {
int run_tensor_plans(const std::string& name, const cluster_config& c, bool check_mismatch) {
  if (name == "tp2") return run_plan<plan_tp2>(name, c, check_mismatch);
  if (name == "cnn_tp2_chain") return run_plan<plan_cnn_tp2_chain>(name, c, check_mismatch);
  if (name == "cnn_spatial2x2") return run_plan<plan_cnn_spatial2x2>(name, c, check_mismatch);
  if (name == "cnn_spatial3") return run_plan<plan_cnn_spatial3>(name, c, check_mismatch);
  if (name == "cnn_channels3") return run_plan<plan_cnn_channels3>(name, c, check_mismatch);
  if (name == "cnn_channels2") return run_plan<plan_cnn_channels2>(name, c, check_mismatch);
  if (name == "cnn_inchannels2") return run_plan<plan_cnn_inchannels2>(name, c, check_mismatch);
  if (name == "cnn_inchannels3") return run_plan<plan_cnn_inchannels3>(name, c, check_mismatch);
  if (name == "tp2_inputs") return run_plan<plan_tp2_inputs>(name, c, check_mismatch);
  if (name == "tp3_mixed") return run_plan<plan_tp3_mixed>(name, c, check_mismatch);
  if (name == "tp2x2") return run_plan<plan_tp2x2>(name, c, check_mismatch);
  if (name == "tp2_chain") return run_plan<plan_tp2_chain>(name, c, check_mismatch);
  return -1;
}
}  // namespace f2d2n::testing
