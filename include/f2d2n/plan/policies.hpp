// f2d2n/plan/policies.hpp: the policies of distribute<model, policies...> (plan/distribute.hpp):
// data_parallel, tensor_parallel with its splits, pipeline with its schedules and placements.
#pragma once

#include <boost/mp11/list.hpp>

#include <array>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace f2d2n {

namespace detail {
/// What each policy type is: it derives from one of these tags, and one trait (is_a) asks.
struct data_parallel_tag {};
struct tensor_parallel_tag {};
struct pipeline_tag {};
struct split_tag {};        // by_outputs, by_inputs, by_grid<Out, In>, replicated
struct split_layer_tag {};  // split_layer<I, Split>
struct schedule_tag {};     // gpipe, one_f_one_b
struct placement_tag {};    // balanced_by_parameters, stage_starts<...>
struct microbatches_tag {};
struct spatial_tag {};
template <class T, class Tag>
inline constexpr bool is_a = std::is_base_of_v<Tag, T>;
/// is_a as a quoted metafunction (for Mp11's *_q algorithms).
template <class Tag>
struct is_a_q {
  template <class T>
  using fn = std::bool_constant<is_a<T, Tag>>;
};
}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Policies

/// R replicas of the model, each trained on its share of every batch (balanced split of the rows).
/// The gradients are summed in buckets of at least BucketElements values, each started as soon as
/// the backward pass has finished its layers (0: one all-reduce after the backward pass).
template <std::size_t Replicas, std::size_t BucketElements = (std::size_t{1} << 18)>
struct data_parallel : detail::data_parallel_tag {
  static_assert(Replicas >= 1, "f2d2n: data_parallel<R> needs at least one replica");
  static constexpr std::size_t replicas = Replicas;
  static constexpr std::size_t bucket_elements = BucketElements;
};

/// How a dense layer is spread over the shards of tensor_parallel.
enum class split_kind : std::uint8_t {
  none,        ///< a layer without weights: every shard computes it whole
  replicated,  ///< every shard holds the whole layer
  outputs,     ///< shard s owns a block of neurons (rows of W and their biases)
  inputs,      ///< shard s owns a block of input features (columns of W); the biases are replicated
  grid,        ///< shard s owns a block of a P_out x P_in grid over W (DistDL's distributed affine layer)
  spatial,     ///< a feature map's layer: shard s computes a block of rows x columns of its output (spatial<R, C>)
};

/// Split a dense layer by output neurons: y = all_gather(x W_s^T + b_s); backward dx = all_reduce(dy_s W_s).
/// (The grid of 1 column: by_grid<S, 1>.)
struct by_outputs : detail::split_tag {
  static constexpr split_kind kind = split_kind::outputs;
  static constexpr std::size_t out_parts = 0, in_parts = 1;  // 0: all the shards
};
/// Split a dense layer by input features (F2D2N's input units): y = all_reduce(x_s W_s^T) + b;
/// backward dx = all_gather(dy W_s). (The grid of 1 row: by_grid<1, S>.)
struct by_inputs : detail::split_tag {
  static constexpr split_kind kind = split_kind::inputs;
  static constexpr std::size_t out_parts = 1, in_parts = 0;
};
/// Split a dense layer on a Out x In grid of the shards (Out * In of them; DistDL's distributed
/// affine layer): shard (a, b) holds rows a and input columns b of W and the biases of rows a;
/// y_a = sum over b of x_b W_ab^T, + b_a; y = all_gather over a. Backward: dx_b = sum over a of
/// dy_a W_ab; dx = all_gather over b.
template <std::size_t Out, std::size_t In>
struct by_grid : detail::split_tag {
  static_assert(Out >= 1 && In >= 1, "f2d2n: by_grid<Out, In> needs at least one part each way");
  static constexpr split_kind kind = split_kind::grid;
  static constexpr std::size_t out_parts = Out, in_parts = In;
};
/// Keep the layer whole on every shard.
struct replicated : detail::split_tag {
  static constexpr split_kind kind = split_kind::replicated;
  static constexpr std::size_t out_parts = 1, in_parts = 1;
};

/// Overrides the split of layer Index (its position in the sequential, input = 0).
template <std::size_t Index, class Split>
struct split_layer : detail::split_layer_tag {
  static_assert(detail::is_a<Split, detail::split_tag>,
                "f2d2n: split_layer<index, Split> takes by_outputs, by_inputs, by_grid<Out, In> or replicated");
  static constexpr std::size_t index = Index;
  using split = Split;
};

/// Every dense layer spread over Shards units, by `Default` unless a split_layer<I, ...> says otherwise.
template <std::size_t Shards, class Default = by_outputs, class... Overrides>
struct tensor_parallel : detail::tensor_parallel_tag {
  static_assert(Shards >= 1, "f2d2n: tensor_parallel<S> needs at least one shard");
  static_assert(detail::is_a<Default, detail::split_tag>,
                "f2d2n: the second argument of tensor_parallel<S, Split> must be by_outputs, by_inputs, "
                "by_grid<Out, In> or replicated");
  static_assert((detail::is_a<Overrides, detail::split_layer_tag> && ...),
                "f2d2n: tensor_parallel<S, Split, ...> takes per-layer overrides as split_layer<index, by_outputs | "
                "by_inputs | by_grid<Out, In> | replicated>");
  static constexpr std::size_t shards = Shards;
  using default_split = Default;
  using overrides = boost::mp11::mp_list<Overrides...>;
};

/// Every convolution and pooling layer (and the element-wise layers between them) computes a
/// block of its output feature map on each of Rows x Cols units: unit (a, b) holds rows
/// part(a) and columns part(b) of the map, all channels (DistDL's spatial partition). Before a
/// convolution or pool, units exchange the halo its window needs from their neighbours' blocks;
/// its adjoint adds the halo's gradient back. The weights are copies; their gradients are summed
/// over the grid. Where the map goes on to a layer that is not spatial (flatten, dense), the
/// blocks are gathered whole on every unit. The units are the shards of a stage: with
/// tensor_parallel<S> too, S must equal Rows x Cols (its splits apply to the dense layers).
template <std::size_t Rows, std::size_t Cols = 1>
struct spatial : detail::spatial_tag {
  static_assert(Rows >= 1 && Cols >= 1, "f2d2n: spatial<Rows, Cols> needs at least one part each way");
  static constexpr std::size_t rows = Rows, cols = Cols, shards = Rows * Cols;
};

/// M micro-batches per replica and step: the replica's rows split evenly (M must divide them).
template <std::size_t M>
struct microbatches : detail::microbatches_tag {
  static_assert(M >= 1, "f2d2n: microbatches<M> needs at least one micro-batch");
  static constexpr std::size_t count = M;
};
/// Pipeline schedules: fill-drain (every forward, then every backward) and one-forward-one-backward
/// (each stage runs stages - stage - 1 forwards ahead, then alternates, then drains).
struct gpipe : detail::schedule_tag {
  static constexpr std::size_t id = 1;
};
struct one_f_one_b : detail::schedule_tag {
  static constexpr std::size_t id = 2;
};
/// Layers assigned to stages automatically: contiguous, the largest stage's parameter count as
/// small as it can be, parameter-free layers kept with the layer before them.
struct balanced_by_parameters : detail::placement_tag {
  static constexpr bool by_hand = false;
  static constexpr std::array<std::size_t, 0> starts{};
};
/// Layers assigned by hand: stage k + 1 starts at layer First[k] (stage 0 starts at layer 1).
template <std::size_t... First>
struct stage_starts : detail::placement_tag {
  static constexpr bool by_hand = true;
  static constexpr std::array<std::size_t, sizeof...(First)> starts{First...};
};

/// Stages consecutive groups of layers on different units, each batch cut into micro-batches
/// that flow through them under a schedule.
template <std::size_t Stages, class Microbatches = microbatches<1>, class Schedule = gpipe,
          class Placement = balanced_by_parameters>
struct pipeline : detail::pipeline_tag {
  static_assert(Stages >= 1, "f2d2n: pipeline<stages, ...> needs at least one stage");
  static_assert(
      detail::is_a<Microbatches, detail::microbatches_tag>,
      "f2d2n: the second argument of pipeline<stages, microbatches<M>, schedule, placement> is microbatches<M>");
  static_assert(detail::is_a<Schedule, detail::schedule_tag>,
                "f2d2n: the schedule of pipeline<stages, microbatches<M>, schedule> is gpipe or one_f_one_b");
  static_assert(detail::is_a<Placement, detail::placement_tag>,
                "f2d2n: the placement of pipeline<stages, microbatches<M>, schedule, placement> is "
                "balanced_by_parameters or stage_starts<first layer of each stage after the first...>");
  static constexpr std::size_t stages = Stages;
  static constexpr std::size_t microbatch_count = Microbatches::count;
  using schedule = Schedule;
  using placement = Placement;
};

}  // namespace f2d2n
