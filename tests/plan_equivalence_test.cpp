// The proof that each plan trains to the serial weights (tests/plan_suite.hpp), on the local
// transport: part of test_plan (tests/plan_test.cpp has the compile-time checks and doctest's main).
#include "plan_suite.hpp"

#include <f2d2n/transport/local.hpp>

#include <doctest/doctest.h>

namespace nn = f2d2n;
using namespace f2d2n::testing;

// ---- the proof: equal to serial training -----------------------------------------------------

template <class Plan, class Scalar>
void expect_equivalent(double tolerance) {
  nn::local_cluster cluster(static_cast<nn::unit_id>(Plan::world_size), Plan::fingerprint);
  std::vector<std::vector<std::string>> failures(Plan::world_size);
  cluster.run([&](nn::local_transport& t) { failures[t.rank()] = equivalence<Plan, Scalar>(t, tolerance); });
  for (std::size_t r = 0; r < failures.size(); ++r)
    for (const auto& f : failures[r]) FAIL_CHECK("unit " << r << ": " << f);
}

TEST_CASE_TEMPLATE("every plan trains to the serial weights (float32, 1e-5)", Plan, plan_dp2, plan_dp4,
                   plan_dp3_buckets, plan_dp2_pp2_buckets, plan_tp2,
                   plan_tp2_inputs, plan_tp3_mixed, plan_tp2x2, plan_tp2_chain, plan_dp2_tp2, plan_pp2_gpipe, plan_pp2_1f1b,
                   plan_pp4, plan_dp2_pp2_tp2) {
  expect_equivalent<Plan, float>(1e-5);
}

TEST_CASE_TEMPLATE("every plan trains to the serial weights (float64, 1e-12)", Plan, plan_dp4, plan_dp3_buckets, plan_tp3_mixed,
                   plan_tp2x2, plan_tp2_chain, plan_dp2_tp2, plan_pp4, plan_dp2_pp2_tp2) {
  expect_equivalent<Plan, double>(1e-12);
}

