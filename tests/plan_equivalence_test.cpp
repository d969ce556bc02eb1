// The proof that each plan trains to the serial weights (tests/plan_suite.hpp), on the local
// transport: part of test_plan (tests/plan_test.cpp has the compile-time checks and doctest's main).
#include "plan_suite.hpp"

#include <f2d2n/transport/local.hpp>

#include <doctest/doctest.h>

#include <bit>
#include <cstdint>

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
                   plan_dp3_buckets, plan_dp2_pp2_buckets, plan_tp2, plan_tp2_inputs, plan_tp3_mixed, plan_tp2x2,
                   plan_tp2_chain, plan_dp2_tp2, plan_pp2_gpipe, plan_pp2_1f1b, plan_pp4, plan_dp2_pp2_tp2) {
  expect_equivalent<Plan, float>(1e-5);
}

TEST_CASE_TEMPLATE("every plan of a CNN trains to the serial weights (float32, 1e-5)", Plan, plan_cnn_dp2,
                   plan_cnn_pp2, plan_cnn_dp2_pp2, plan_cnn_tp2_chain, plan_cnn_spatial2, plan_cnn_spatial2x2,
                   plan_cnn_spatial3, plan_cnn_dp2_spatial2, plan_cnn_pp2_spatial2, plan_cnn_spatial2_tp2,
                   plan_cnn_dropmap_spatial2x2, plan_cnn_dropmap_dp2_spatial2, plan_cnn_channels2,
                   plan_cnn_channels3, plan_cnn_dp2_channels2, plan_cnn_wide_spatial4, plan_cnn_inchannels2,
                   plan_cnn_inchannels3, plan_cnn_channels_mixed, plan_cnn_dp2_inchannels2) {
  expect_equivalent<Plan, float>(1e-5);
}

TEST_CASE_TEMPLATE("spatial and channel plans of a CNN train to the serial weights (float64, 1e-12)", Plan,
                   plan_cnn_spatial3, plan_cnn_spatial2x2, plan_cnn_channels3, plan_cnn_wide_spatial4,
                   plan_cnn_inchannels2, plan_cnn_inchannels3) {
  expect_equivalent<Plan, double>(1e-12);
}

TEST_CASE_TEMPLATE("every plan trains to the serial weights (float64, 1e-12)", Plan, plan_dp4, plan_dp3_buckets,
                   plan_tp3_mixed, plan_tp2x2, plan_tp2_chain, plan_dp2_tp2, plan_pp4, plan_dp2_pp2_tp2) {
  expect_equivalent<Plan, double>(1e-12);
}

// ---- one model, whichever unit is read -------------------------------------------------------

/// Wider than plan_mlp, with odd widths: copies of a bias lie at differently aligned offsets on
/// different units, where Eigen's vectorised column sums gave them different last bits.
using copy_mlp = nn::sequential<nn::input<37>, nn::dense<29>, nn::relu, nn::dense<23>, nn::tanh, nn::dense<5>,
                                nn::softmax_cross_entropy>;

/// Trains Plan with Adam on every unit and returns each unit's parameters in the serial layout.
template <class Plan>
std::vector<std::vector<float>> trained_copies() {
  nn::dataset<float> data;
  data.samples.resize(60, 37);
  for (Eigen::Index r = 0; r < 60; ++r)
    for (Eigen::Index c = 0; c < 37; ++c)
      data.samples(r, c) =
          static_cast<float>(nn::random_symmetric(5, static_cast<std::uint64_t>(r), static_cast<std::uint64_t>(c)));
  for (std::int32_t r = 0; r < 60; ++r) data.labels.push_back((r * 7 + r / 3) % 5);
  data.sample_shape = nn::flat(37);
  data.classes = 5;
  std::vector<std::vector<float>> units(Plan::world_size);
  nn::local_cluster cluster(static_cast<nn::unit_id>(Plan::world_size), Plan::fingerprint);
  cluster.run([&](nn::local_transport& t) {
    nn::distributed_network<Plan, nn::local_transport> net(t, 4);
    nn::trainer train(net, nn::adam{.learning_rate = 0.01});
    train.fit(data, plan_fit<Plan>());
    units[t.rank()] = exported(net);
  });
  return units;
}

template <class... P>
using copies_of = nn::distribute<copy_mlp, P...>;

// Biases of by_inputs layers, row biases of by_grid, replicated layers and the replicas' copies:
// every copy of a value has the same bits on every unit that holds it, after 20 Adam steps.
TEST_CASE_TEMPLATE(
    "every copy of a parameter is bitwise the same on every unit", Plan, copies_of<nn::data_parallel<3>>,
    copies_of<nn::tensor_parallel<2, nn::by_inputs>>,
    copies_of<
        nn::tensor_parallel<3, nn::by_inputs, nn::split_layer<3, nn::by_outputs>, nn::split_layer<5, nn::replicated>>>,
    copies_of<nn::tensor_parallel<4, nn::by_grid<2, 2>>>, copies_of<nn::tensor_parallel<6, nn::by_grid<2, 3>>>,
    copies_of<nn::tensor_parallel<2, nn::by_outputs, nn::split_layer<3, nn::by_inputs>>>,
    copies_of<nn::data_parallel<3>, nn::tensor_parallel<2, nn::by_inputs>>,
    copies_of<nn::data_parallel<2>, nn::pipeline<2, nn::microbatches<2>>, nn::tensor_parallel<2, nn::by_inputs>>) {
  const auto units = trained_copies<Plan>();
  std::size_t copies = 0, differing = 0;
  for (std::size_t k = 0; k < copy_mlp::parameter_count; ++k) {
    const float* first = nullptr;
    for (const auto& u : units) {
      if (std::isnan(u[k])) continue;
      if (!first) {
        first = &u[k];
        continue;
      }
      ++copies;
      if (std::bit_cast<std::uint32_t>(u[k]) != std::bit_cast<std::uint32_t>(*first)) ++differing;
    }
  }
  CHECK(copies > 0);
  CHECK(differing == 0);
}
