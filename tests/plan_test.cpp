// Plans: what distribute<...> knows at compile time, the bytes a step sends, what a unit refuses.
// The proof that each plan trains to the serial weights is tests/plan_equivalence_test.cpp (the
// same executable; two translation units keep each within the compile-time budget).
#include "counting_transport.hpp"
#include "plan_suite.hpp"

#include <f2d2n/plan/description.hpp>
#include <f2d2n/transport/detail/tcp/handshake.hpp>
#include <f2d2n/transport/local.hpp>

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <future>
#include <map>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace nn = f2d2n;
using namespace f2d2n::testing;

// ---- compile time ---------------------------------------------------------------------------

using mlp = nn::sequential<nn::input<784>, nn::dense<256>, nn::relu, nn::dense<128>, nn::relu, nn::dense<10>,
                           nn::softmax_cross_entropy>;
using hybrid = nn::distribute<mlp, nn::data_parallel<2>, nn::tensor_parallel<2>>;

static_assert(hybrid::world_size == 4);
static_assert(hybrid::unit<0>::coordinates == nn::unit_coordinates{.replica = 0, .shard = 0});
static_assert(hybrid::unit<1>::coordinates == nn::unit_coordinates{.replica = 0, .shard = 1});
static_assert(hybrid::unit<3>::coordinates == nn::unit_coordinates{.replica = 1, .shard = 1});
// Unit 3 holds neurons [128, 256) of layer 1, [64, 128) of layer 3, [5, 10) of layer 5.
static_assert(hybrid::unit<3>::parameter_count == 128 * 784 + 128 + 64 * 256 + 64 + 5 * 128 + 5);
static_assert(std::is_same_v<boost::mp11::mp_at_c<hybrid::unit<3>::layers, 1>, nn::dense_shard<784, 128, 256>>);
static_assert(std::is_same_v<boost::mp11::mp_at_c<hybrid::unit<3>::layers, 2>, nn::relu>);
static_assert(std::is_same_v<boost::mp11::mp_at_c<hybrid::unit<2>::layers, 5>, nn::dense_shard<128, 0, 5>>);
// The shards of a replica hold the whole model once.
static_assert(hybrid::unit<0>::parameter_count + hybrid::unit<1>::parameter_count == mlp::parameter_count);
// Data parallel only: every unit holds everything.
static_assert(nn::distribute<mlp, nn::data_parallel<3>>::unit<2>::parameter_count == mlp::parameter_count);
// By inputs: the columns of W and every bias.
using by_inputs_plan = nn::distribute<mlp, nn::tensor_parallel<3, nn::by_inputs>>;
static_assert(by_inputs_plan::partition_of(2, 1).input_begin == 523 &&
              by_inputs_plan::partition_of(2, 1).input_count == 261 &&
              by_inputs_plan::partition_of(2, 1).count == 256 && by_inputs_plan::partition_of(2, 1).held);
static_assert(
    std::is_same_v<boost::mp11::mp_at_c<by_inputs_plan::unit<2>::layers, 1>, nn::dense_input_shard<256, 523, 784>>);
static_assert(by_inputs_plan::unit<2>::parameter_count == 256 * 261 + 256 + 128 * 85 + 128 + 10 * 42 + 10);
// Per-layer overrides.
using mixed = nn::distribute<
    mlp, nn::tensor_parallel<2, nn::by_outputs, nn::split_layer<3, nn::by_inputs>, nn::split_layer<5, nn::replicated>>>;
static_assert(mixed::splits[1] == nn::split_kind::outputs && mixed::splits[2] == nn::split_kind::none &&
              mixed::splits[3] == nn::split_kind::inputs && mixed::splits[5] == nn::split_kind::replicated);
// DistDL's 2-D grid: unit (a, b) of a 2 x 2 grid holds rows a and input columns b of each layer.
using grid = nn::distribute<mlp, nn::tensor_parallel<4, nn::by_grid<2, 2>>>;
static_assert(std::is_same_v<boost::mp11::mp_at_c<grid::unit<1>::layers, 1>, nn::dense_block<0, 128, 392, 784>>);
static_assert(std::is_same_v<boost::mp11::mp_at_c<grid::unit<2>::layers, 3>, nn::dense_block<64, 128, 0, 128>>);
static_assert(grid::unit<3>::parameter_count == 128 * 392 + 128 + 64 * 128 + 64 + 5 * 64 + 5);
static_assert(grid::fingerprint != nn::distribute<mlp, nn::tensor_parallel<4>>::fingerprint);
// Megatron's pairing: by_outputs into by_inputs keeps the activations between them in blocks.
using megatron = nn::distribute<mlp, nn::tensor_parallel<2, nn::by_outputs, nn::split_layer<3, nn::by_inputs>>>;
static_assert(megatron::chained == std::array<bool, 7>{false, true, true, false, false, false, false});
static_assert(megatron::partition_of(1, 2).output_width == 128 && megatron::partition_of(1, 3).input_width == 128 &&
              megatron::partition_of(1, 3).output_width == 128 && megatron::partition_of(1, 3).sharded_input);
static_assert(megatron::bytes_sent_per_step(0, 64) <
              nn::distribute<mlp, nn::tensor_parallel<2>>::bytes_sent_per_step(0, 64));
// Not across stages: the stage boundary needs the whole activation.
static_assert(nn::distribute<mlp, nn::pipeline<2, nn::microbatches<1>, nn::gpipe, nn::stage_starts<3>>,
                             nn::tensor_parallel<2, nn::by_outputs, nn::split_layer<3, nn::by_inputs>>>::chained ==
              std::array<bool, 7>{});
// The fingerprint tells plans apart, and only them.
static_assert(hybrid::fingerprint == nn::distribute<mlp, nn::tensor_parallel<2>, nn::data_parallel<2>>::fingerprint);
static_assert(hybrid::fingerprint != nn::distribute<mlp, nn::data_parallel<4>>::fingerprint);
static_assert(hybrid::fingerprint != mixed::fingerprint);
static_assert(nn::distribute<mlp>::fingerprint !=
              nn::distribute<nn::sequential<nn::input<784>, nn::dense<256>, nn::tanh, nn::dense<128>, nn::relu,
                                            nn::dense<10>, nn::softmax_cross_entropy>>::fingerprint);
// Bytes per step, by hand for DP2 of the MLP: a ring all-reduce over 2 units sends half the
// buffer twice (16 values: the step's loss, correct count and padding, then the gradients).
static_assert(nn::distribute<mlp, nn::data_parallel<2>>::bytes_sent_per_step<float>(0, 64) ==
              (16 + mlp::parameter_count) * sizeof(float));
// The README's figure for the demo's plan (its input is 28 x 28, the same 784 features).
static_assert(hybrid::bytes_sent_per_step(3, 64) == 544724);
static_assert(hybrid::activation_bytes_of<float>(0, 64) == 32 * (256 + 256 + 128 + 128 + 10) * sizeof(float));

// The messages of a step, at compile time: DP2 x TP2, unit 0, batch 64 (32 rows per replica).
constexpr nn::step_message first_message_of_hybrid = [] {
  nn::step_message found{};
  bool done = false;
  hybrid::for_each_message(0, 64, [&](const nn::step_message& m) {
    if (!done) found = m, done = true;
  });
  return found;
}();
// Layer 1's outputs gathered over its 2 shards: 32 x 256, this unit sends the other's 32 x 128.
static_assert(first_message_of_hybrid == nn::step_message{nn::message_kind::all_gather, false, 1, 0, 32, 256, 2, 0,
                                                          32 * 128,
                                                          nn::message_id(nn::message_kind::all_gather, false, 1, 0)});
// Gathers after layers 1, 3, 5; input-gradient sums of layers 3 and 5; the gradients among replicas.
static_assert(hybrid::message_count(0, 64) == 6);

// Pipelines: stages, balanced placement, schedules.
using piped = nn::distribute<mlp, nn::data_parallel<2>, nn::pipeline<2, nn::microbatches<4>, nn::one_f_one_b>,
                             nn::tensor_parallel<2>>;
static_assert(piped::world_size == 8);
static_assert(piped::unit<5>::coordinates == nn::unit_coordinates{.replica = 1, .stage = 0, .shard = 1});
// Balanced by parameters: dense<256> (200960) and its relu, then the rest (34186).
static_assert(piped::stage_begin == std::array<std::size_t, 3>{1, 3, 6});
static_assert(std::is_same_v<piped::unit<3>::layers,
                             boost::mp11::mp_list<nn::dense_shard<256, 64, 128>, nn::relu, nn::dense_shard<128, 5, 10>,
                                                  nn::softmax_cross_entropy>>);
static_assert(piped::unit<0>::parameter_count == 128 * 784 + 128);
static_assert(piped::unit<2>::parameter_count + piped::unit<0>::parameter_count + piped::unit<1>::parameter_count +
                  piped::unit<3>::parameter_count ==
              mlp::parameter_count);
// By hand, and the fingerprint sees the placement.
using by_hand = nn::distribute<mlp, nn::pipeline<2, nn::microbatches<4>, nn::gpipe, nn::stage_starts<5>>>;
static_assert(by_hand::stage_begin == std::array<std::size_t, 3>{1, 5, 6});
static_assert(by_hand::fingerprint !=
              nn::distribute<mlp, nn::pipeline<2, nn::microbatches<4>, nn::gpipe>>::fingerprint);
// 1F1B at 4 stages and 4 micro-batches, stage 0: F0 F1 F2, F3 B0, B1 B2 B3; the last stage alternates.
static_assert(nn::detail::schedule_op(2, 4, 0, 4, 2).forward && nn::detail::schedule_op(2, 4, 0, 4, 2).microbatch == 2);
static_assert(nn::detail::schedule_op(2, 4, 0, 4, 4).forward == false &&
              nn::detail::schedule_op(2, 4, 0, 4, 4).microbatch == 0);
static_assert(nn::detail::schedule_op(2, 4, 3, 4, 1).forward == false &&
              nn::detail::schedule_op(2, 4, 3, 4, 1).microbatch == 0);
static_assert(nn::detail::schedule_completes(1, 8, 16) && nn::detail::schedule_completes(2, 8, 3));
// Unit 2 (replica 0, stage 1, shard 0), 4 micro-batches of 8 rows: per micro-batch its input's
// gradient back to stage 0, gathers after layers 3 and 5, input-gradient sums of both; then the
// step's statistics among the stages and the gradients among the replicas.
static_assert(piped::message_count(2, 64) == 4 * 5 + 2);
// Per micro-batch: each stage passes its activations on and its input's gradient back.
static_assert(piped::bytes_sent_per_step(0, 64) >
              nn::distribute<mlp, nn::data_parallel<2>, nn::tensor_parallel<2>>::bytes_sent_per_step(0, 64) / 2);

// ---- bytes on the wire -----------------------------------------------------------------------

using nn::testing::counting_transport;

TEST_CASE_TEMPLATE("a step sends exactly the messages and bytes the plan's schema states", Plan, plan_dp4,
                   plan_dp3_buckets, plan_dp2_pp2_buckets, plan_tp2, plan_tp2_inputs, plan_tp3_mixed, plan_tp2x2,
                   plan_tp2_chain, plan_dp2_tp2, plan_pp2_gpipe, plan_pp2_1f1b, plan_pp4, plan_dp2_pp2_tp2,
                   plan_cnn_pp2, plan_cnn_tp2_chain, plan_cnn_spatial2x2, plan_cnn_spatial3, plan_cnn_dp2_spatial2,
                   plan_cnn_pp2_spatial2, plan_cnn_channels3, plan_cnn_dp2_channels2, plan_cnn_wide_spatial4,
                   plan_cnn_inchannels2, plan_cnn_inchannels3, plan_cnn_channels_mixed) {
  const auto data = plan_data<float, typename Plan::model>();
  nn::local_cluster cluster(static_cast<nn::unit_id>(Plan::world_size), Plan::fingerprint);
  std::vector<std::size_t> sent(Plan::world_size);
  std::vector<std::map<std::uint32_t, std::size_t>> by_id(Plan::world_size);
  cluster.run([&](nn::local_transport& lt) {
    counting_transport t{lt};
    nn::distributed_network<Plan, counting_transport> net(t, 1);
    net.compute_gradients(data.samples.topRows(12), std::span<const std::int32_t>(data.labels).first(12));
    sent[t.rank()] = t.sent;
    by_id[t.rank()] = t.by_id;
  });
  for (std::size_t r = 0; r < Plan::world_size; ++r) {
    CAPTURE(r);
    CHECK(sent[r] == Plan::template bytes_sent_per_step<float>(r, 12));
    CHECK(sent[r] > 0);
    // Message by message: the ids on the wire are the schema's, each with the bytes it states.
    std::map<std::uint32_t, std::size_t> stated;
    Plan::for_each_message(r, 12, [&](const nn::step_message& m) {
      if (m.sent > 0) stated[m.id] += m.sent * sizeof(float);
    });
    CHECK(by_id[r] == stated);
  }
}

// ---- spatial partitions: halos at compile time ----------------------------------------------
// plan_cnn: 9 x 7 x 2 -> conv 3x3 pad 1 (9 x 7 x 4) -> relu -> max_pool 2 (4 x 3 x 4) -> conv 3x3 pad 1
// (4 x 3 x 5) -> tanh -> flatten. Over 3 x 1 units: the first map's rows 3 / 3 / 3, the pooled 2 / 1 / 1.
static_assert(plan_cnn_spatial3::world_size == 3 && plan_cnn_spatial3::splits[1] == nn::split_kind::spatial &&
              plan_cnn_spatial3::splits[7] == nn::split_kind::replicated);
static_assert(plan_cnn_spatial3::spatial_layers ==
              std::array<bool, 12>{false, true, true, true, true, true, false, false, false, false, false, false});
// Layer 1 reads the whole input: unit 1 computes rows 3-5 from rows 2-6 (one more each side).
static_assert(plan_cnn_spatial3::window_of(1, 1) == nn::map_region{2, 5, 0, 7});
static_assert(plan_cnn_spatial3::halo_of(1, 1) == nn::halo_extent{1, 1, 1, 1} ||
              plan_cnn_spatial3::halo_of(1, 1) == nn::halo_extent{1, 1, 0, 0});
// The pool (layer 3): unit 0's pooled rows 0-1 read rows 0-3, one row of unit 1's block; unit 1's
// row 2 reads rows 4-5 (not its row 3); unit 2's row 3 reads 6-7 (not its row 8); the 7th column is
// never read (floor).
static_assert(plan_cnn_spatial3::halo_of(0, 3) == nn::halo_extent{0, 1, 0, -1});
static_assert(plan_cnn_spatial3::halo_of(1, 3) == nn::halo_extent{-1, 0, 0, -1});
static_assert(plan_cnn_spatial3::halo_of(2, 3) == nn::halo_extent{0, -1, 0, -1});
// The second convolution (layer 4, padding 1): unit 0 (rows 0-1) reads row 2 below, its top is padding.
static_assert(plan_cnn_spatial3::halo_of(0, 4) == nn::halo_extent{0, 1, 0, 0});
static_assert(plan_cnn_spatial3::partition_of(0, 4).pad_top == 1 && plan_cnn_spatial3::partition_of(1, 4).pad_top == 0);
static_assert(plan_cnn_spatial3::halo_of(1, 4) == nn::halo_extent{1, 1, 0, 0});
// Blocks stay with their unit between spatial layers; the last one's map is gathered whole.
static_assert(plan_cnn_spatial3::partition_of(1, 4).sharded_input && plan_cnn_spatial3::partition_of(1, 4).sharded_output);
static_assert(!plan_cnn_spatial3::partition_of(1, 5).sharded_output &&
              plan_cnn_spatial3::partition_of(1, 5).output_width == 4 * 3 * 5);
static_assert(plan_cnn_spatial3::partition_of(1, 4).output_width == 1 * 3 * 5);
// 2 x 2: unit 3 (bottom right) holds rows 5-8 and columns 4-6 of the 9 x 7 map; its pooled rows 2-3
// and column 2 read rows 4-7 and columns 4-5: one row of the unit above, not its last row or column.
static_assert(plan_cnn_spatial2x2::halo_of(3, 3) == nn::halo_extent{1, -1, 0, -1});
static_assert(plan_cnn_spatial2x2::halo_of(0, 4) == nn::halo_extent{0, 1, 0, 1});
// Unit types: a spatial layer is a block of its map.
static_assert(std::is_same_v<boost::mp11::mp_at_c<plan_cnn_spatial3::unit<1>::layers, 4>,
                             nn::spatial_block<plan_cnn::layer_at<4>, 2, 1, 0, 3>>);
// The halos are messages of the step, in its bytes: unit 1 of 3 x 1 sends layer 3's rows to unit 0,
// layer 4's row to units 0 and 2, and their gradients back.
static_assert(plan_cnn_spatial3::message_count(1, 6) > plan_cnn_spatial2::message_count(0, 6));
static_assert(plan_cnn_spatial3::fingerprint != plan_cnn_spatial2::fingerprint &&
              plan_cnn_spatial2::fingerprint != nn::distribute<plan_cnn, nn::tensor_parallel<2>>::fingerprint);

// A 7 x 7 window over blocks of 3 / 2 / 2 / 2 rows: unit 1 (rows 3-4) reads rows 0-7, three rows
// above its block and three below, from three other units; the stride-2 convolution's unit 2
// (output row 3) reads rows 5-7, a row of unit 3.
static_assert(plan_cnn_wide_spatial4::halo_of(1, 3) == nn::halo_extent{3, 3, 0, 0});
static_assert(plan_cnn_wide_spatial4::halo_of(2, 5) == nn::halo_extent{0, 1, 0, 0});
static_assert(plan_cnn_wide_spatial4::partition_of(0, 5).pad_top == 1);

// Channel splits: output channels 4 over 3 shards are 2 / 1 / 1, each unit's block of the weights
// (out channels x 3 x 3 x 2) and biases; the unit types name them.
static_assert(plan_cnn_channels3::partition_of(0, 1).count == 2 && plan_cnn_channels3::partition_of(2, 1).begin == 3);
static_assert(plan_cnn_channels3::partition_of(1, 1).parameter_count == 1 * 3 * 3 * 2 + 1);
static_assert(plan_cnn_channels3::partition_of(1, 4).parameter_count == 2 * 3 * 3 * 4 + 2);
static_assert(std::is_same_v<boost::mp11::mp_at_c<plan_cnn_channels3::unit<2>::layers, 4>,
                             nn::channel_shard<plan_cnn::layer_at<4>, 4, 5>>);
static_assert(plan_cnn_channels3::splits[2] == nn::split_kind::none && !plan_cnn_channels3::chained[1]);
// Input channels 4 over 3 shards are 2 / 1 / 1: every output channel's columns of those channels
// for each of the 3 x 3 taps, and every bias.
static_assert(plan_cnn_inchannels3::partition_of(0, 4).input_count == 2 &&
              plan_cnn_inchannels3::partition_of(2, 4).input_begin == 3);
static_assert(plan_cnn_inchannels3::partition_of(1, 4).parameter_count == 5 * 3 * 3 * 1 + 5);
static_assert(plan_cnn_inchannels3::partition_of(0, 4).parameter_count == 5 * 3 * 3 * 2 + 5);
static_assert(std::is_same_v<boost::mp11::mp_at_c<plan_cnn_inchannels3::unit<2>::layers, 4>,
                             nn::channel_input_shard<plan_cnn::layer_at<4>, 3, 4>>);
static_assert(plan_cnn_inchannels3::splits[1] == nn::split_kind::none);
// Forward, the partial outputs (the whole 4 x 3 x 5 map) summed; backward, the input
// gradient's channel blocks gathered: 4 x 3 pixels of 4 channels, this unit's 1 of them.
static_assert([] {
  std::size_t reduces = 0, gathers = 0;
  plan_cnn_inchannels3::for_each_message(1, 12, [&](const nn::step_message& m) {
    if (m.layer != 4) return;
    if (m.kind == nn::message_kind::all_reduce && !m.backward && m.columns == 4 * 3 * 5) ++reduces;
    if (m.kind == nn::message_kind::all_gather && m.backward && m.columns == 4 && m.rows == 12 * 4 * 3) ++gathers;
  });
  return reduces == 1 && gathers == 1;
}());

// Schema ids are distinct within a unit's step, and decode to their fields.
static_assert([] {
  std::array<std::uint32_t, 64> ids{};
  std::size_t n = 0;
  plan_dp2_pp2_tp2::for_each_message(2, 12, [&](const nn::step_message& m) { ids[n++] = m.id; });
  for (std::size_t a = 0; a < n; ++a)
    for (std::size_t b = a + 1; b < n; ++b)
      if (ids[a] == ids[b]) return false;
  return n > 4;
}());
static_assert(nn::message_id(nn::message_kind::activation, false, 3, 1) !=
              nn::message_id(nn::message_kind::activation, false, 3, 2));
static_assert(nn::message_id(nn::message_kind::all_reduce, true, 5, 0) !=
              nn::message_id(nn::message_kind::all_reduce, false, 5, 0));

TEST_CASE("gradient buckets summed on the unit's second thread give the bits of summing them in line") {
  // Buckets close at layers 3 and 1 and at the end (the loss, count and padding): 117, 140 and 16 values.
  std::vector<std::array<std::size_t, 3>> buckets;
  plan_dp3_buckets::for_each_gradient_bucket(0, [&](std::size_t layer, std::size_t begin, std::size_t size) {
    buckets.push_back({layer, begin, size});
  });
  CHECK(buckets == std::vector<std::array<std::size_t, 3>>{{3, 156, 117}, {1, 16, 140}, {0, 0, 16}});
  const auto data = plan_data<float>();
  std::vector<std::vector<float>> weights[2];
  for (int overlap = 0; overlap < 2; ++overlap) {
    nn::local_cluster cluster(3, plan_dp3_buckets::fingerprint);
    weights[overlap].resize(3);
    cluster.run([&](nn::local_transport& t) {
      nn::distributed_options o;
      o.overlap = overlap == 1;
      nn::distributed_network<plan_dp3_buckets, nn::local_transport> net(t, 5, o);
      nn::trainer train(net, plan_sgd());
      train.fit(data, plan_fit<plan_dp3_buckets>());
      weights[overlap][t.rank()].assign(net.parameters().begin(), net.parameters().end());
    });
  }
  CHECK(weights[0] == weights[1]);
}

// ---- what a unit refuses ---------------------------------------------------------------------

TEST_CASE("a transport of another size or fingerprint is refused, naming both") {
  nn::local_cluster three(3, plan_dp2::fingerprint);
  three.run([](nn::local_transport& t) {
    CHECK_THROWS_WITH_AS((nn::distributed_network<plan_dp2, nn::local_transport>(t)),
                         doctest::Contains("the plan has 2 units"), nn::configuration_error);
  });
  nn::local_cluster other(2, plan_dp2::fingerprint + 1);
  other.run([](nn::local_transport& t) {
    CHECK_THROWS_WITH_AS((nn::distributed_network<plan_dp2, nn::local_transport>(t)), doctest::Contains("fingerprint"),
                         nn::configuration_error);
  });
}

TEST_CASE("a batch smaller than the number of replicas is refused") {
  const auto data = plan_data<float>();
  nn::local_cluster cluster(4, plan_dp4::fingerprint);
  cluster.run([&](nn::local_transport& t) {
    nn::distributed_network<plan_dp4, nn::local_transport> net(t);
    CHECK_THROWS_WITH_AS(net.compute_gradients(data.samples.topRows(3),
                                               std::span<const std::int32_t>(data.labels).first(3)),
                         doctest::Contains("data_parallel<4> needs at least 4 samples"), nn::configuration_error);
  });
}

TEST_CASE("micro-batches that do not split a replica's rows are refused, naming the policy") {
  const auto data = plan_data<float>();
  nn::local_cluster cluster(2, plan_pp2_1f1b::fingerprint);  // 3 micro-batches
  cluster.run([&](nn::local_transport& t) {
    nn::distributed_network<plan_pp2_1f1b, nn::local_transport> net(t);
    CHECK_THROWS_WITH_AS(net.compute_gradients(data.samples.topRows(10),
                                               std::span<const std::int32_t>(data.labels).first(10)),
                         doctest::Contains("microbatches<3>> needs every replica's rows to split into 3"),
                         nn::configuration_error);
  });
}

TEST_CASE("a batch one replica cannot split is refused on every unit, naming that replica") {
  const auto data = plan_data<float>();
  nn::local_cluster cluster(4, plan_dp2_pp2_buckets::fingerprint);  // 2 micro-batches per replica
  std::atomic<int> refused{0};
  cluster.run([&](nn::local_transport& t) {
    nn::distributed_network<plan_dp2_pp2_buckets, nn::local_transport> net(t);
    // 11 rows: replica 0 gets 6 (3 + 3), replica 1 gets 5; both replicas' units say so.
    CHECK_THROWS_WITH_AS(net.compute_gradients(data.samples.topRows(11),
                                               std::span<const std::int32_t>(data.labels).first(11)),
                         doctest::Contains("gives replica 1 5 rows"), nn::configuration_error);
    ++refused;
  });
  CHECK(refused == 4);
}

TEST_CASE("drop_last drops the short last batch that data_parallel<5> cannot split") {
  using plan_dp5 = nn::distribute<plan_mlp, nn::data_parallel<5>>;
  const auto data = plan_data<float>();  // 60 samples in batches of 14: the fifth has 4 rows
  nn::fit_options f;
  f.batch_size = 14;
  f.epochs = 1;
  nn::local_cluster cluster(5, plan_dp5::fingerprint);
  std::atomic<int> done{0};
  cluster.run([&](nn::local_transport& t) {
    nn::distributed_network<plan_dp5, nn::local_transport> net(t, 1);
    nn::trainer train(net, plan_sgd());
    CHECK_THROWS_WITH_AS(train.fit(data, f), doctest::Contains("set fit_options::drop_last"), nn::configuration_error);
  });
  f.drop_last = true;
  nn::local_cluster again(5, plan_dp5::fingerprint);  // the refusal ended the first cluster's links
  again.run([&](nn::local_transport& t) {
    nn::distributed_network<plan_dp5, nn::local_transport> net(t, 1);
    nn::trainer train(net, plan_sgd());
    const auto report = train.fit(data, f);
    CHECK(report.steps == 4);
    CHECK(report.train.samples == 56);
    ++done;
  });
  CHECK(done == 5);
}

TEST_CASE("trainer(unit, options) trains the unit's engine: one trainer for every plan") {
  using engine = nn::processing_unit<nn::local_transport, float>;
  nn::local_cluster cluster(2, plan_dp2::fingerprint);
  cluster.run([&](nn::local_transport& t) {
    nn::distributed_network<plan_dp2, nn::local_transport> net(t);
    nn::trainer train(net, plan_sgd());
    static_assert(std::is_same_v<decltype(train), nn::trainer<engine, nn::sgd>>);
    CHECK(&train.network() == static_cast<engine*>(&net));
  });
}

TEST_CASE(
    "each unit copies only its part of a batch: its replica's rows, samples on the first stage, labels on the last") {
  nn::local_cluster cluster(4, plan_pp4::fingerprint);
  std::vector<nn::batch_part> parts(4);
  cluster.run([&](nn::local_transport& t) {
    nn::distributed_network<plan_pp4, nn::local_transport> net(t);
    parts[t.rank()] = net.part_of_batch(12);
    // Another unit's part is refused.
    auto other = parts[t.rank()];
    other.samples = !other.samples;
    const nn::matrix<float> none(0, 13);
    CHECK_THROWS_AS(net.compute_gradients(none, {}, other), nn::configuration_error);
  });
  CHECK(parts[0] == nn::batch_part{12, 0, 12, true, false});
  CHECK(parts[1] == nn::batch_part{12, 0, 12, false, false});
  CHECK(parts[2] == nn::batch_part{12, 0, 12, false, false});
  CHECK(parts[3] == nn::batch_part{12, 0, 12, false, true});
  nn::local_cluster four(4, plan_dp4::fingerprint);
  four.run([&](nn::local_transport& t) {
    nn::distributed_network<plan_dp4, nn::local_transport> net(t);
    parts[t.rank()] = net.part_of_batch(10);
  });
  CHECK(parts[1] == nn::batch_part{10, 3, 3, true, true});
  CHECK(parts[3] == nn::batch_part{10, 8, 2, true, true});
}

/// Unit `leaving` of a 2-unit Plan leaves at once; the other must end its step on a batch of
/// `batch` in a comm_error (within the 2 s deadline), not hang.
template <class Plan>
int typed_errors_when_a_unit_leaves(nn::unit_id leaving, std::size_t batch) {
  const auto data = plan_data<float>();
  nn::local_cluster cluster(2, Plan::fingerprint);
  std::atomic<int> typed{0};
  cluster.run_collect([&](nn::local_transport& t) {
    if (t.rank() == leaving) return;
    nn::distributed_options o;
    o.timeout = std::chrono::milliseconds(2000);
    nn::distributed_network<Plan, nn::local_transport> net(t, 0, o);
    try {
      net.compute_gradients(data.samples.topRows(static_cast<Eigen::Index>(batch)),
                            std::span<const std::int32_t>(data.labels).first(batch));
    } catch (const nn::comm_error&) {
      ++typed;
    }
  });
  return typed;
}

TEST_CASE("a pipeline stage whose neighbour leaves gets a typed error, not a hang") {
  CHECK(typed_errors_when_a_unit_leaves<plan_pp2_gpipe>(0, 12) == 1);  // stage 1 waits for activations in vain
}

TEST_CASE("a unit whose peer leaves gets a typed error, not a hang") {
  CHECK(typed_errors_when_a_unit_leaves<plan_tp2>(1, 10) == 1);  // unit 0 waits for its shard in vain
}

TEST_CASE("plan: units of different plans say which policy or layer differs (peer_description)") {
  namespace d = f2d2n::detail::tcp_impl;
  using f2d2n::peer_description;
  const auto tp_out = peer_description<plan_tp2>(), tp_in = peer_description<plan_tp2_inputs>();
  const std::string by_split = d::description_difference(tp_out, tp_in, "unit 0", "unit 1");
  CAPTURE(by_split);
  CHECK(by_split.find("the plan reads") != std::string::npos);
  CHECK(by_split.find(":outputs[") != std::string::npos);
  CHECK(by_split.find(":inputs[") != std::string::npos);
  const std::string by_replicas =
      d::description_difference(peer_description<plan_dp2>(), peer_description<plan_dp4>(), "unit 0", "unit 1");
  CAPTURE(by_replicas);
  CHECK(by_replicas.find("data_parallel<2>") != std::string::npos);
  CHECK(by_replicas.find("data_parallel<4>") != std::string::npos);
  // Another model: the first layer that differs, by index.
  using other_mlp = f2d2n::sequential<f2d2n::input<13>, f2d2n::dense<10>, f2d2n::relu, f2d2n::dense<6>, f2d2n::tanh,
                                      f2d2n::dense<5>, f2d2n::softmax_cross_entropy>;
  using other_plan = f2d2n::distribute<other_mlp, f2d2n::data_parallel<2>>;
  const std::string by_model =
      d::description_difference(peer_description<plan_dp2>(), peer_description<other_plan>(), "unit 0", "unit 1");
  CAPTURE(by_model);
  CHECK(by_model.find("the model") != std::string::npos);
  CHECK(d::description_difference(tp_out, tp_out, "unit 0", "unit 1").empty());
}

// ---- the flight recorder and the statistics' checks --------------------------------------------

TEST_CASE("a unit that waits in vain names the peer, the message in words and its last operations") {
  const auto data = plan_data<float>();
  const auto x = data.samples.topRows(12);
  const auto labels = std::span<const std::int32_t>(data.labels).first(12);
  nn::local_cluster cluster(2, plan_pp2_gpipe::fingerprint);
  std::promise<void> stage_1_done;
  std::string what;
  std::size_t first_layer = 0;
  const auto errors = cluster.run_collect([&](nn::local_transport& t) {
    nn::distributed_options o;
    o.timeout = std::chrono::milliseconds(300);
    nn::distributed_network<plan_pp2_gpipe, nn::local_transport> net(t, 0, o);
    net.compute_gradients(x, labels);  // one step together
    if (t.rank() == 0) {               // then stage 0 stays, silent, until stage 1 has given up (at most 20 s)
      stage_1_done.get_future().wait_for(std::chrono::seconds(20));
      return;
    }
    first_layer = net.description().first;
    try {
      net.compute_gradients(x, labels);  // waits for stage 0's activations of step 1 in vain
    } catch (const nn::timeout_error& e) {
      what = e.what();
    }
    stage_1_done.set_value();
  });
  CHECK(!errors[0]);
  CHECK(!errors[1]);
  INFO(what);
  REQUIRE(first_layer > 0);
  // The transport's line, then the message in words, then the recorder's dump.
  CHECK(what.starts_with("f2d2n: unit 1, peer 0, message " +
                         std::to_string(nn::message_id(nn::message_kind::activation, false, first_layer, 0)) +
                         ", step 1: "));
  CHECK(what.find("; unit 1 waited for activation (forward) of layer " + std::to_string(first_layer) +
                  ", micro-batch 0 of step 1 from unit 0\n") != std::string::npos);
  CHECK(what.find("\nf2d2n flight recorder of unit 1 (replica 0, stage 1, shard 0): the last ") != std::string::npos);
  // Step 0's operations, done, and the one that timed out, last: the text ends with it.
  CHECK(what.find(" step 0 receive from unit 0 ") != std::string::npos);
  CHECK(what.find(" step 0 send to unit 0 ") != std::string::npos);
  CHECK(what.find(" done in ") != std::string::npos);
  const auto last = what.rfind("\n  #");
  REQUIRE(last != std::string::npos);
  CHECK(what.substr(last).find("step 1 receive from unit 0") != std::string::npos);
  CHECK(what.substr(last).find(" timed out in ") != std::string::npos);
  CHECK(what.ends_with(": activation (forward) of layer " + std::to_string(first_layer) + ", micro-batch 0"));
}

namespace {
/// A transport that writes `value` over every number of the statistics' sums its unit receives:
/// the evaluation's loss and count, and (training) the gradient buckets that carry the step's.
struct forging_transport {
  nn::local_transport& t;
  double value;
  [[nodiscard]] nn::unit_id rank() const noexcept { return t.rank(); }
  [[nodiscard]] nn::unit_id world_size() const noexcept { return t.world_size(); }
  [[nodiscard]] std::uint64_t fingerprint() const noexcept { return t.fingerprint(); }
  void send(nn::unit_id peer, const nn::wire::frame_header& h, std::span<const std::byte> payload, nn::deadline until) {
    t.send(peer, h, payload, until);
  }
  nn::wire::frame_header receive(nn::unit_id peer, const nn::wire::expectation& e, std::span<std::byte> out,
                                 nn::deadline until) {
    const auto h = t.receive(peer, e, out, until);
    const auto kind = nn::decode_message_id(e.message_id).kind;
    if (kind == nn::message_kind::evaluation) {
      for (std::size_t at = 0; at + sizeof(double) <= out.size(); at += sizeof(double))
        std::memcpy(out.data() + at, &value, sizeof(double));
    } else if (kind == nn::message_kind::gradients) {
      const auto v = static_cast<float>(value);
      for (std::size_t at = 0; at + sizeof(float) <= out.size(); at += sizeof(float))
        std::memcpy(out.data() + at, &v, sizeof(float));
    }
    return h;
  }
  void shutdown() { t.shutdown(); }
  void shutdown(const nn::shutdown_reason& reason) { t.shutdown(reason); }
};
static_assert(nn::transport<forging_transport>);

/// The message of each unit's exception (empty: none, or not a numerical_error).
std::vector<std::string> numerical_errors(const std::vector<std::exception_ptr>& errors) {
  std::vector<std::string> out;
  for (const auto& e : errors) {
    out.emplace_back();
    try {
      if (e) std::rethrow_exception(e);
    } catch (const nn::numerical_error& n) {
      out.back() = n.what();
    } catch (...) {
    }
  }
  return out;
}
}  // namespace

TEST_CASE("a forged all-reduced count is a numerical_error on the unit, not an accuracy of 1e17 %") {
  const auto data = plan_data<float>();
  for (const double forged : {1e19, -1.0}) {
    CAPTURE(forged);
    nn::local_cluster cluster(2, plan_dp2::fingerprint);
    const auto evaluated = numerical_errors(cluster.run_collect([&](nn::local_transport& lt) {
      forging_transport t{lt, forged};
      nn::distributed_network<plan_dp2, forging_transport> net(t, 1);
      nn::trainer train(net, plan_sgd());
      train.evaluate(data, 10);
    }));
    // Both units' sums are forged: each says which statistic, its value, the unit and the step.
    for (std::size_t r = 0; r < 2; ++r) {
      CAPTURE(r);
      INFO(evaluated[r]);
      CHECK(evaluated[r].starts_with("f2d2n: unit " + std::to_string(r) + " (replica " + std::to_string(r) +
                                     ", stage 0, shard 0), step 0: the evaluated batch's "));
      CHECK(evaluated[r].find("after the sum over the units") != std::string::npos);
      CHECK(evaluated[r].ends_with("a peer sent a corrupted or forged sum"));
    }
    if (forged > 0) {
      CHECK(evaluated[0].find("correct count is 1e+19 after the sum over the units, not a whole number from 0 to the "
                              "batch's 10 samples") != std::string::npos);
    } else {
      // The ring gives unit 0 the forged count, and unit 1 the forged loss sum and its own count
      // less 1 (which is right unless its own count was 0).
      CHECK(evaluated[0].find("correct count is -1 ") != std::string::npos);
      CHECK((evaluated[1].find("loss is -0.1 after the sum over the units, below 0") != std::string::npos ||
             evaluated[1].find("correct count is -1 ") != std::string::npos));
    }
  }
  nn::local_cluster cluster(2, plan_dp2::fingerprint);
  const auto trained = numerical_errors(cluster.run_collect([&](nn::local_transport& lt) {
    forging_transport t{lt, 1e19};
    nn::distributed_network<plan_dp2, forging_transport> net(t, 1);
    nn::trainer train(net, plan_sgd());
    train.fit(data, plan_fit<plan_dp2>());
  }));
  for (std::size_t r = 0; r < 2; ++r) {
    INFO(trained[r]);
    CHECK(trained[r].find("step 0: the training batch's correct count is 9.99999998e+18 after the sum") !=
          std::string::npos);
  }
}

TEST_CASE("NaN in the data stops every unit in the same step, each naming itself") {
  using linear =
      nn::distribute<nn::sequential<nn::input<13>, nn::dense<5>, nn::softmax_cross_entropy>, nn::data_parallel<2>>;
  auto data = plan_data<float>();
  data.samples(13, 4) = std::numeric_limits<float>::quiet_NaN();  // the second batch of 10, in order: replica 0
  nn::local_cluster cluster(2, linear::fingerprint);
  auto f = plan_fit<linear>();
  f.shuffle = false;
  const auto errors = numerical_errors(cluster.run_collect([&](nn::local_transport& t) {
    nn::distributed_network<linear, nn::local_transport> net(t, 1);
    nn::trainer train(net, plan_sgd());
    train.fit(data, f);
  }));
  for (std::size_t r = 0; r < 2; ++r)
    CHECK(errors[r] == "f2d2n: the training loss is nan in epoch 1, step 2 of 5 on unit " + std::to_string(r) +
                           " (replica " + std::to_string(r) +
                           ", stage 0, shard 0): the run diverged (a learning rate too large?) or the data hold NaN "
                           "or infinity; the step's update was not applied");
}
