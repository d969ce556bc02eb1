// f2d2n/plan/description.hpp: a plan in words (what checkpoints record and messages quote).
#pragma once

#include <f2d2n/model/summary.hpp>
#include <f2d2n/plan/distribute.hpp>

#include <cstddef>
#include <string>

namespace f2d2n {

/// A plan in words, for checkpoints and messages, e.g. "data_parallel<2> pipeline<2, microbatches<4>,
/// one_f_one_b, stages at layers 1 4> tensor_parallel<2>, layers 1:outputs[2x1] 3:outputs[2x1] 5:outputs[2x1]".
template <class Plan>
std::string plan_description() {
  std::string s = "data_parallel<" + std::to_string(Plan::replicas) + "> pipeline<" + std::to_string(Plan::stages) +
                  ", microbatches<" + std::to_string(Plan::microbatch_count) + ">, " +
                  (Plan::schedule_id == gpipe::id ? "gpipe" : "one_f_one_b") + ", stages at layers";
  for (std::size_t k = 0; k < Plan::stages; ++k) s += " " + std::to_string(Plan::stage_begin[k]);
  s += "> tensor_parallel<" + std::to_string(Plan::shards) + ">, layers";
  static constexpr const char* kinds[] = {"none", "replicated", "outputs", "inputs", "grid", "spatial"};
  for (std::size_t i = 0; i < Plan::layer_count; ++i) {
    const auto p = Plan::partition_of(0, i);
    if (Plan::splits[i] == split_kind::none) continue;
    s += " " + std::to_string(i) + ":" + kinds[static_cast<std::size_t>(Plan::splits[i])] + "[" +
         std::to_string(p.out_parts) + "x" + std::to_string(p.in_parts) + "]";
  }
  return s;
}

/// What a unit tells its peers about its model and plan after authentication: the model's
/// description (model_summary) on the first line, plan_description on the second; units of
/// different plans then say which layer or policy differs (tcp_options::description).
template <class Plan>
std::string peer_description() {
  return summary_of<typename Plan::model>().description + "\n" + plan_description<Plan>();
}

}  // namespace f2d2n
