// f2d2n/train/detail/unit_description.hpp: what one unit of a plan runs, as plain data
// (train/processing_unit.hpp works from it, whatever the plan), and how it is made from a plan.
#pragma once

#include <f2d2n/comm/primitives.hpp>
#include <f2d2n/core/error.hpp>
#include <f2d2n/core/random.hpp>
#include <f2d2n/model/network.hpp>
#include <f2d2n/model/summary.hpp>
#include <f2d2n/plan/description.hpp>
#include <f2d2n/plan/distribute.hpp>
#include <f2d2n/train/callbacks.hpp>
#include <f2d2n/train/trainer.hpp>
#include <f2d2n/transport/concept.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace f2d2n::detail {

/// The initialiser's limit of each dense layer (null for the others), resolved as the serial
/// network resolves it, so that a shard draws the serial layer's values.
template <class L, class Next>
constexpr auto limit_of() -> double (*)(std::size_t, std::size_t) {
  if constexpr (is_dense_v<L> || std::is_base_of_v<conv_kernels, L>) return &resolved_initializer<L, Next>::limit;
  else return nullptr;
}
template <class... L, class... Next>
constexpr auto limit_table(boost::mp11::mp_list<L...>, boost::mp11::mp_list<Next...>) {
  return std::array<double (*)(std::size_t, std::size_t), sizeof...(L)>{limit_of<L, Next>()...};
}

/// Adds the time from its construction to its end to `into`.
class stopwatch {
 public:
  explicit stopwatch(double& into) : into_(into), start_(clock::now()) {}
  stopwatch(const stopwatch&) = delete;
  stopwatch& operator=(const stopwatch&) = delete;
  ~stopwatch() { into_ += std::chrono::duration<double>(clock::now() - start_).count(); }

 private:
  double& into_;
  clock::time_point start_;
};

/// A message as the engine names it: the plan's schema (plan/messages.hpp) gives its id and peer.
struct message_key {
  message_kind kind = message_kind::all_reduce;
  bool backward = false;
  std::size_t layer = 0;
  std::size_t index = 0;  ///< the micro-batch (gradients: the bucket)
};

/// The messages of a unit's training step as its plan states them: those it sends, and those its
/// neighbouring stages send to it; sorted by id. The engine takes every id and pipeline peer it
/// uses from here, and a message the schema does not state (or of another width or group) is a
/// logic_error before anything is sent: the engine cannot drift from the plan unnoticed.
struct message_schema {
  std::vector<step_message> messages;

  /// The message of `k` this unit exchanges with `peer` (a halo: one id, one message per neighbour).
  [[nodiscard]] const step_message& find(const message_key& k, std::size_t columns, unit_id peer) const {
    const std::uint32_t id = message_id(k.kind, k.backward, k.layer, k.index);
    auto it = std::lower_bound(messages.begin(), messages.end(), id,
                               [](const step_message& m, std::uint32_t v) { return m.id < v; });
    for (; it != messages.end() && it->id == id; ++it)
      if (it->peer == peer && it->columns == columns) return *it;
    throw std::logic_error("f2d2n: a unit's engine exchanges message (kind " + std::to_string(static_cast<int>(k.kind)) +
                           ", layer " + std::to_string(k.layer) + ", index " + std::to_string(k.index) + ", " +
                           std::to_string(columns) + " columns) with unit " + std::to_string(peer) +
                           ", which its plan's schema does not state");
  }

  [[nodiscard]] const step_message& find(const message_key& k, std::size_t columns, std::size_t group_size) const {
    const std::uint32_t id = message_id(k.kind, k.backward, k.layer, k.index);
    const auto it = std::lower_bound(messages.begin(), messages.end(), id,
                                     [](const step_message& m, std::uint32_t v) { return m.id < v; });
    if (it == messages.end() || it->id != id || it->kind != k.kind || it->columns != columns || it->group != group_size)
      throw std::logic_error("f2d2n: a unit's engine uses message (kind " + std::to_string(static_cast<int>(k.kind)) +
                             ", layer " + std::to_string(k.layer) + ", index " + std::to_string(k.index) + ", " +
                             std::to_string(columns) + " columns, group of " + std::to_string(group_size) +
                             ") that its plan's schema does not state");
    return *it;
  }
};

/// A spatially split layer's halo with one neighbour, in cells of the layer's input map: forward,
/// `send` (cells of this unit's block the neighbour's window reads) goes out and `receive` (cells
/// of this unit's window the neighbour holds) comes in; backward, their gradients the other way.
struct halo_transfer {
  unit_id peer = 0;
  map_region send, receive;
};

/// One layer as a unit runs it: its partition, extents, and the serial kernels.
template <class S>
struct unit_layer {
  layer_partition part;
  std::size_t in = 0, out = 0;    ///< features in and out of the whole layer
  extents in_shape{}, out_shape{};  ///< one sample's input and output extents (of the whole layer)
  std::size_t serial_offset = 0;  ///< where the whole layer's parameters start in the serial layout
  layer_ops<S> ops;               ///< the serial layer's kernels (forward, backward, initialise)
  double (*limit)(std::size_t, std::size_t) = nullptr;  ///< a dense layer's or convolution's initialiser limit
  /// Its weights as a matrix (dense: out x in; convolution: out channels x kernel height x kernel
  /// width x in channels), and the fan-in and fan-out its initialiser takes.
  std::size_t weight_rows = 0, weight_columns = 0, fan_in = 0, fan_out = 0;
  bool convolution = false;
  std::size_t taps = 1;  ///< a convolution's kernel height x width (its weight columns: taps x in channels)
  /// Calls f(row_begin, rows, column_begin, columns, offset) for each rectangle of the weight
  /// matrix this unit holds of a split layer, stored row-major and contiguous `offset` values into
  /// the layer's parameters: one block of its grid, or for a convolution split by input channels
  /// one block per tap (those channels' columns of the tap). Its biases (part.count) follow them.
  template <class F>
  void for_each_weight_block(F f) const {
    const auto& p = part;
    if (convolution && p.split == split_kind::inputs) {
      const std::size_t in_channels = weight_columns / taps;
      for (std::size_t t = 0; t < taps; ++t)
        f(std::size_t{0}, p.count, t * in_channels + p.input_begin, p.input_count, t * p.count * p.input_count);
    } else {
      f(p.begin, p.count, p.input_begin, p.input_count, std::size_t{0});
    }
  }
  /// A split layer's units: those with this unit's neurons (they sum partial outputs; a row of
  /// the grid) and those with its input features (they sum partial input gradients; a column).
  group row_group, column_group;
  /// A spatially split layer: the block of its input map this unit holds (when its input arrives in
  /// blocks), and its halo with each neighbour, in increasing order of the neighbours' ranks (every
  /// pair of units then meets in one global order: no cycle of waits).
  map_region owned_input;
  std::vector<halo_transfer> halo;
};

/// One bucket of the gradient all-reduce: posted when the backward pass has finished `layer`
/// (0: at the end of the step), over [begin, begin + size) of the buffer (loss, count, gradients).
struct gradient_bucket {
  std::size_t layer = 0, begin = 0, size = 0;
};

/// What a unit runs, as plain data: the part of distributed_network that does not depend on the
/// plan's type, so that every plan over one transport and scalar shares one instantiation of it.
template <class S>
struct unit_description {
  std::vector<unit_layer<S>> layers;
  S (*loss)(const_matrix_ref<S>, std::span<const std::int32_t>, matrix_ref<S>) = nullptr;
  std::size_t input_size = 0, output_size = 0, max_width = 0, serial_parameters = 0, parameters = 0;
  std::size_t replicas = 1, stages = 1, microbatches = 1, schedule = gpipe::id;
  std::size_t first = 1, end = 1;  ///< the hidden layers of this unit's stage: [first, end)
  unit_coordinates coordinates;
  group tensor_group, data_group, pipeline_group;
  std::vector<gradient_bucket> buckets;  ///< in the order they are summed (plan::for_each_gradient_bucket)
  std::size_t header = 2;                ///< values before the gradients: loss, correct count, padding
  message_schema schema;                 ///< every message of its step (plan::for_each_message)
  // What checkpoints record and check (train/checkpoint.hpp):
  const model_summary* model = nullptr;  ///< the whole model
  std::string plan;                      ///< the plan in words (plan_description)
  std::uint64_t plan_fingerprint = 0;
  std::size_t world_size = 1;
};

/// The description of unit `rank` of Plan.
template <class Plan, class Scalar>
unit_description<Scalar> describe_unit(unit_id rank) {
  using Net = typename Plan::model;
  static constexpr auto ops = ops_table<Scalar>(typename Net::layers{}, next_layers<typename Net::layers>{});
  static constexpr auto limits = limit_table(typename Net::layers{}, next_layers<typename Net::layers>{});
  unit_description<Scalar> d;
  d.coordinates = Plan::coordinates_of(rank);
  const auto c = d.coordinates;
  for (std::size_t i = 0; i < Net::size; ++i) {
    unit_layer<Scalar> l;
    l.part = Plan::partition_of(rank, i);
    l.in = Net::input_extents[i].size();
    l.out = Net::output_extents[i].size();
    l.in_shape = Net::input_extents[i];
    l.out_shape = Net::output_extents[i];
    l.serial_offset = Net::parameter_offsets[i];
    l.ops = ops[i];
    l.limit = limits[i];
    l.weight_rows = l.out;
    l.weight_columns = l.in;
    l.fan_in = l.in;
    l.fan_out = l.out;
    if (Plan::conv_layers[i]) {
      const auto o = image_of(l.out_shape);
      l.convolution = true;
      l.weight_rows = o.channels;
      l.weight_columns = Net::parameter_counts[i] / o.channels - 1;
      l.fan_in = l.weight_columns;
      l.taps = l.weight_columns / image_of(l.in_shape).channels;
      l.fan_out = o.channels * l.taps;  // out channels x kh x kw
    }
    const auto& p = l.part;
    for (std::size_t b = 0; b < p.in_parts; ++b)
      l.row_group.units.push_back(Plan::rank_of({c.replica, c.stage, p.out_index * p.in_parts + b}));
    for (std::size_t a = 0; a < p.out_parts; ++a)
      l.column_group.units.push_back(Plan::rank_of({c.replica, c.stage, a * p.in_parts + p.in_index}));
    if (p.split == split_kind::spatial) {
      l.owned_input = Plan::owned_input_of(rank, i);
      for (std::size_t v = 0; v < Plan::shards; ++v) {
        const unit_id peer = Plan::rank_of({c.replica, c.stage, v});
        if (peer == rank || !p.sharded_input) continue;
        const halo_transfer t{peer, overlap(l.owned_input, Plan::window_of(peer, i)),
                              overlap(Plan::window_of(rank, i), Plan::owned_input_of(peer, i))};
        if (!t.send.empty() || !t.receive.empty()) l.halo.push_back(t);
      }
    }
    d.layers.push_back(l);
  }
  d.loss = &Net::template layer_at<Net::size - 1>::template loss<Scalar>;
  d.input_size = Net::input_size;
  d.output_size = Net::output_size;
  d.max_width = Net::max_width;
  d.serial_parameters = Net::parameter_count;
  d.parameters = Plan::parameter_count_of(rank);
  d.replicas = Plan::replicas;
  d.stages = Plan::stages;
  d.microbatches = Plan::microbatch_count;
  d.schedule = Plan::schedule_id;
  d.first = Plan::stage_begin[c.stage];
  d.end = Plan::stage_begin[c.stage + 1];
  for (std::size_t s = 0; s < Plan::shards; ++s) d.tensor_group.units.push_back(Plan::rank_of({c.replica, c.stage, s}));
  for (std::size_t r = 0; r < Plan::replicas; ++r) d.data_group.units.push_back(Plan::rank_of({r, c.stage, c.shard}));
  d.header = Plan::gradient_offset;
  // The schema at one row per micro-batch: the engine checks widths, its rows follow the batch.
  const std::size_t nominal = Plan::replicas * Plan::microbatch_count;
  Plan::for_each_message(rank, nominal, [&](const step_message& m) { d.schema.messages.push_back(m); });
  Plan::for_each_received(rank, nominal, [&](const step_message& m) { d.schema.messages.push_back(m); });
  std::sort(d.schema.messages.begin(), d.schema.messages.end(),
            [](const step_message& a, const step_message& b) { return a.id < b.id; });
  Plan::for_each_gradient_bucket(rank, [&](std::size_t layer, std::size_t begin, std::size_t size) {
    d.buckets.push_back({layer, begin, size});
  });
  for (std::size_t s = 0; s < Plan::stages; ++s)
    d.pipeline_group.units.push_back(Plan::rank_of({c.replica, s, c.shard}));
  d.model = &summary_of<Net>();
  d.plan = plan_description<Plan>();
  d.plan_fingerprint = Plan::fingerprint;
  d.world_size = Plan::world_size;
  return d;
}

/// Refuses a transport that cannot carry Plan.
template <class Plan, class Transport>
const Transport& check_transport(const Transport& t) {
  if (t.world_size() != Plan::world_size)
    throw configuration_error("f2d2n: the plan has " + std::to_string(Plan::world_size) + " units (" +
                              std::to_string(Plan::replicas) + " replicas x " + std::to_string(Plan::stages) +
                              " stages x " + std::to_string(Plan::shards) +
                              " shards) but the transport's cluster has " + std::to_string(t.world_size()));
  if (t.fingerprint() != Plan::fingerprint)
    throw configuration_error("f2d2n: the transport was created with fingerprint " + std::to_string(t.fingerprint()) +
                              ", the plan's is " + std::to_string(Plan::fingerprint) +
                              ": create it with plan::fingerprint, so that units of another plan are refused");
  return t;
}

}  // namespace f2d2n::detail
