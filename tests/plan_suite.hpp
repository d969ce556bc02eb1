// The equivalence proof of the plans, over any transport: a unit of a plan trains for 20 steps and
// its parameters must equal the serial trainer's (same model, seed, data, optimizer) at its places
// in the serial layout. Run by tests/plan_test.cpp on the local transport and by
// tests/plan_worker.cpp across processes over TCP.
#pragma once

#include <f2d2n/f2d2n.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace f2d2n::testing {

/// Uneven on purpose: 13 inputs, 10 and 7 neurons split over 2 or 3 shards leave remainders.
using plan_mlp = sequential<input<13>, dense<10>, relu, dense<7>, tanh, dense<5>, softmax_cross_entropy>;

using plan_dp2 = distribute<plan_mlp, data_parallel<2>>;
using plan_dp4 = distribute<plan_mlp, data_parallel<4>>;
using plan_tp2 = distribute<plan_mlp, tensor_parallel<2>>;
using plan_tp2_inputs = distribute<plan_mlp, tensor_parallel<2, by_inputs>>;
using plan_tp3_mixed =
    distribute<plan_mlp, tensor_parallel<3, by_inputs, split_layer<3, by_outputs>, split_layer<5, replicated>>>;
using plan_tp2x2 = distribute<plan_mlp, tensor_parallel<4, by_grid<2, 2>>>;
/// Megatron's pairing: layer 1 by outputs, chained through relu into layer 3 by inputs.
using plan_tp2_chain = distribute<plan_mlp, tensor_parallel<2, by_outputs, split_layer<3, by_inputs>>>;
using plan_dp2_tp2 = distribute<plan_mlp, tensor_parallel<2>, data_parallel<2>>;
/// Gradient buckets of 64 values: the layers' gradients are summed in 3 all-reduces, started during
/// the backward pass on the unit's summing thread.
using plan_dp3_buckets = distribute<plan_mlp, data_parallel<3, 64>>;
using plan_dp2_pp2_buckets = distribute<plan_mlp, data_parallel<2, 32>, pipeline<2, microbatches<2>, gpipe>>;
using plan_pp2_gpipe = distribute<plan_mlp, pipeline<2, microbatches<2>, gpipe>>;
using plan_pp2_1f1b = distribute<plan_mlp, pipeline<2, microbatches<3>, one_f_one_b, stage_starts<3>>>;
using plan_pp4 = distribute<plan_mlp, pipeline<4, microbatches<4>, one_f_one_b>>;
using plan_dp2_pp2_tp2 =
    distribute<plan_mlp, data_parallel<2>, pipeline<2, microbatches<2>, one_f_one_b>, tensor_parallel<2>>;

/// A small CNN: an image of 9 x 7 x 2 (odd: 3 spatial blocks of rows leave a remainder), two
/// convolutions with padding, a pool, and dropout between two dense layers (its masks must be
/// the serial network's on every unit).
using plan_cnn = sequential<input<9, 7, 2>, conv2d<4, 3, 1, 1>, relu, max_pool<2>, conv2d<5, 3, 1, 1>, tanh, flatten,
                            dense<8>, relu, dropout<0.25>, dense<5>, softmax_cross_entropy>;
using plan_cnn_dp2 = distribute<plan_cnn, data_parallel<2>>;
/// The second stage starts at the second convolution: a feature map crosses between the stages.
using plan_cnn_pp2 = distribute<plan_cnn, pipeline<2, microbatches<2>, one_f_one_b, stage_starts<4>>>;
using plan_cnn_dp2_pp2 = distribute<plan_cnn, data_parallel<2>, pipeline<2, microbatches<3>, gpipe, stage_starts<4>>>;
/// The dense layers split, chained through relu and dropout (which sees each unit's columns only);
/// every shard computes the convolutions whole.
using plan_cnn_tp2_chain = distribute<plan_cnn, tensor_parallel<2, by_outputs, split_layer<10, by_inputs>>>;

/// Spatial partitions of the feature maps (DistDL's): 2 x 1; 2 x 2; 3 x 1, where the 9 rows of the
/// first map split 3 / 3 / 3 but the pooled 4 rows 2 / 1 / 1 (the pool's windows cross the blocks'
/// borders: uneven halos, some negative); with 2 replicas; across two pipeline stages (the map
/// gathered at the stage's end, windows taken from it at the next); with the dense layers chained
/// over the same 2 units.
using plan_cnn_spatial2 = distribute<plan_cnn, spatial<2>>;
using plan_cnn_spatial2x2 = distribute<plan_cnn, spatial<2, 2>>;
using plan_cnn_spatial3 = distribute<plan_cnn, spatial<3>>;
using plan_cnn_dp2_spatial2 = distribute<plan_cnn, data_parallel<2>, spatial<2>>;
using plan_cnn_pp2_spatial2 = distribute<plan_cnn, pipeline<2, microbatches<2>, one_f_one_b, stage_starts<3>>, spatial<2>>;
using plan_cnn_spatial2_tp2 =
    distribute<plan_cnn, spatial<2>, tensor_parallel<2, by_outputs, split_layer<10, by_inputs>>>;
/// Windows that reach past the next unit: a 7 x 7 kernel over blocks of 3 and 2 rows (unit 1 reads
/// from units 0, 2 and 3), a stride-2 convolution, a rectangular average pool with stride 1.
using plan_cnn_wide = sequential<input<9, 6, 1>, conv2d<3, 3, 1, 1>, tanh, conv2d<2, 7, 1, 3>, relu, conv2d<2, 3, 2, 1>,
                                 avg_pool<window{2, 1}, 1>, flatten, dense<3>, softmax_cross_entropy>;
using plan_cnn_wide_spatial4 = distribute<plan_cnn_wide, spatial<4>>;

/// Convolutions split by output channels (4 and 5 channels over 2 or 3 shards: uneven blocks), the
/// dense layers by neurons; with 2 replicas.
using plan_cnn_channels2 =
    distribute<plan_cnn, tensor_parallel<2, by_outputs, split_layer<1, by_outputs>, split_layer<4, by_outputs>>>;
using plan_cnn_channels3 =
    distribute<plan_cnn, tensor_parallel<3, by_outputs, split_layer<1, by_outputs>, split_layer<4, by_outputs>>>;
using plan_cnn_dp2_channels2 =
    distribute<plan_cnn, data_parallel<2>, tensor_parallel<2, by_outputs, split_layer<4, by_outputs>>>;

/// Convolutions split by input channels: the first (2 channels over 2 shards: one each, the tap
/// by tap route) and the second (4 channels over 2, and over 3: 2 / 1 / 1); the Megatron order
/// (output channels, then input channels); with 2 replicas.
using plan_cnn_inchannels2 =
    distribute<plan_cnn, tensor_parallel<2, by_outputs, split_layer<1, by_inputs>, split_layer<4, by_inputs>>>;
using plan_cnn_inchannels3 = distribute<plan_cnn, tensor_parallel<3, by_outputs, split_layer<4, by_inputs>>>;
using plan_cnn_channels_mixed =
    distribute<plan_cnn, tensor_parallel<2, by_inputs, split_layer<1, by_outputs>, split_layer<4, by_inputs>>>;
using plan_cnn_dp2_inchannels2 =
    distribute<plan_cnn, data_parallel<2>, tensor_parallel<2, by_outputs, split_layer<4, by_inputs>>>;

/// Dropout on a split feature map: each unit draws the serial mask's values for its block.
using plan_cnn_dropmap = sequential<input<8, 6, 1>, conv2d<3, 3, 1, 1>, relu, dropout<0.3>, avg_pool<2>, flatten,
                                    dense<5>, softmax_cross_entropy>;
using plan_cnn_dropmap_spatial2x2 = distribute<plan_cnn_dropmap, spatial<2, 2>>;
using plan_cnn_dropmap_dp2_spatial2 = distribute<plan_cnn_dropmap, data_parallel<2>, spatial<1, 2>>;

/// 60 samples of the model's features in [-1, 1], labels over its classes.
template <class Scalar, class Model = plan_mlp>
dataset<Scalar> plan_data() {
  dataset<Scalar> d;
  d.samples.resize(60, static_cast<Eigen::Index>(Model::input_size));
  for (Eigen::Index r = 0; r < d.samples.rows(); ++r)
    for (Eigen::Index c = 0; c < d.samples.cols(); ++c)
      d.samples(r, c) =
          static_cast<Scalar>(random_symmetric(77, static_cast<std::uint64_t>(r), static_cast<std::uint64_t>(c)));
  for (std::size_t r = 0; r < 60; ++r)
    d.labels.push_back(static_cast<std::int32_t>((r * 7 + r / 3) % Model::output_size));
  d.sample_shape = Model::input_shape;
  d.classes = Model::output_size;
  d.source = "plan_data";
  return d;
}

/// 20 steps: 4 epochs of 5 batches. Batches of 10 (4 replicas get uneven rows), or of 12 for
/// pipelines (their micro-batches must split a replica's rows evenly).
template <class Plan>
fit_options plan_fit() {
  fit_options f;
  f.epochs = 4;
  f.max_steps_per_epoch = 5;
  f.batch_size = Plan::stages > 1 ? 12 : 10;
  f.seed = 3;
  return f;
}
inline sgd plan_sgd() { return sgd{.learning_rate = 0.1, .momentum = 0.9, .weight_decay = 1e-4}; }

/// This unit's parameters in the serial layout; the places it does not hold are NaN.
template <class Net>
std::vector<typename Net::scalar> exported(const Net& net) {
  std::vector<typename Net::scalar> v(Net::sequence::parameter_count,
                                      std::numeric_limits<typename Net::scalar>::quiet_NaN());
  net.export_parameters(v);
  return v;
}

/// Compares a unit's exported parameters with the serial ones, layer by layer:
/// max |unit - serial| <= tolerance * max |serial| over the values the unit holds.
template <class Seq, class S>
void compare_layers(const std::vector<S>& unit, std::type_identity_t<std::span<const S>> serial,
                    std::size_t expected_count, double tolerance, const std::string& what,
                    std::vector<std::string>& failures) {
  std::size_t held = 0;
  for (std::size_t i = 0; i < Seq::size; ++i) {
    double diff = 0, scale = 0;
    for (std::size_t k = Seq::parameter_offsets[i]; k < Seq::parameter_offsets[i] + Seq::parameter_counts[i]; ++k) {
      if (std::isnan(unit[k])) continue;
      ++held;
      diff = std::max(diff, std::abs(static_cast<double>(unit[k]) - static_cast<double>(serial[k])));
      scale = std::max(scale, std::abs(static_cast<double>(serial[k])));
    }
    if (diff > tolerance * scale)
      failures.push_back(what + ": layer " + std::to_string(i) + " differs from serial by " + std::to_string(diff) +
                         " (largest value " + std::to_string(scale) + ")");
  }
  if (held != expected_count)
    failures.push_back(what + ": the unit exported " + std::to_string(held) + " values, it holds " +
                       std::to_string(expected_count));
}

/// Trains Plan on this unit and the serial model side by side; returns what differs. `weights`,
/// when given, receives the unit's parameters after the 20 steps in the serial layout (NaN where
/// the unit holds nothing): tests/netns.sh compares their digest between runs.
template <class Plan, class Scalar, class Transport>
std::vector<std::string> equivalence(Transport& t, double tolerance, std::vector<Scalar>* weights = nullptr) {
  using model = typename Plan::model;
  std::vector<std::string> failures;
  const auto data = plan_data<Scalar, model>();
  network<model, Scalar> serial(11);
  distributed_network<Plan, Transport, Scalar> net(t, 11);
  // The same initial values, bit for bit, at the unit's places.
  compare_layers<model>(exported(net), serial.parameters(), net.parameter_count(), 0.0, "initial values", failures);

  trainer<network<model, Scalar>, sgd> serial_trainer(serial, plan_sgd());
  const auto serial_report = serial_trainer.fit(data, plan_fit<Plan>());
  trainer unit_trainer(net, plan_sgd());  // the engine's trainer (the deduction guide): shared by every plan
  const auto report = unit_trainer.fit(data, plan_fit<Plan>(), &data);
  const auto after = exported(net);
  compare_layers<model>(after, serial.parameters(), net.parameter_count(), tolerance, "after 20 steps", failures);

  // Where the unit's time went: every plan here communicates; pipelines wait for neighbours.
  if (!(report.time.compute > 0) || !(report.time.communication > 0) || report.steps != 5 ||
      (Plan::stages > 1) != (report.time.wait > 0))
    failures.push_back("time split: compute " + std::to_string(report.time.compute) + " s, communication " +
                       std::to_string(report.time.communication) + " s, wait " + std::to_string(report.time.wait) +
                       " s over " + std::to_string(report.steps) + " steps");

  // The whole batch's loss and accuracy reach every unit.
  if (!(std::abs(report.train.loss - serial_report.train.loss) <= 1e-4 * std::abs(serial_report.train.loss)))
    failures.push_back("reported training loss " + std::to_string(report.train.loss) + ", serial " +
                       std::to_string(serial_report.train.loss));
  if (report.train.samples != serial_report.train.samples)
    failures.push_back("reported " + std::to_string(report.train.samples) + " samples per epoch, serial " +
                       std::to_string(serial_report.train.samples));
  const auto serial_eval = serial_trainer.evaluate(data);
  if (!report.validation || report.validation->samples != data.size() ||
      std::abs(report.validation->accuracy - serial_eval.accuracy) > 1e-12 ||
      !(std::abs(report.validation->loss - serial_eval.loss) <= 1e-4 * serial_eval.loss))
    failures.push_back("evaluation differs from serial");

  // The same plan and seed again: bitwise the same weights.
  distributed_network<Plan, Transport, Scalar> again(t, 11);
  trainer again_trainer(again, plan_sgd());
  again_trainer.fit(data, plan_fit<Plan>());
  const auto a = exported(again);  // NaN where the unit holds nothing: compare those as equal
  if (!std::equal(a.begin(), a.end(), after.begin(), after.end(),
                  [](Scalar x, Scalar y) { return (std::isnan(x) && std::isnan(y)) || x == y; }))
    failures.push_back("a second run of the same plan and seed gave other weights");
  if (weights) *weights = after;
  return failures;
}

}  // namespace f2d2n::testing
