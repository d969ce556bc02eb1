// f2d2n/plan/distribute.hpp: a model and its distribution as one type (docs/plan.md).
//
//   using plan = f2d2n::distribute<mlp, f2d2n::data_parallel<2>, f2d2n::tensor_parallel<2>>;
//   static_assert(plan::world_size == 4);
//   static_assert(plan::unit<3>::coordinates.replica == 1 && plan::unit<3>::coordinates.shard == 1);
//
// Policies (each at most once, in any order):
//   data_parallel<R>                 R replicas of the model, each on its share of every batch;
//                                    gradients summed by a ring all-reduce among the replicas.
//   pipeline<P, microbatches<M>, gpipe | one_f_one_b, balanced_by_parameters | stage_starts<...>>
//                                    the layers in P consecutive stages on different units, each
//                                    replica's rows in M micro-batches under the schedule.
//   tensor_parallel<S, Split, split_layer<I, Split>...>
//                                    every dense layer of a stage spread over S shards: by_outputs
//                                    (each shard owns a block of neurons; activations all-gathered),
//                                    by_inputs (a block of input features and the matching weight
//                                    columns, F2D2N's input units; partial pre-activations summed),
//                                    by_grid<Out, In> (DistDL's 2-D affine layer) or replicated;
//                                    split_layer<I, ...> overrides layer I.
//   spatial<Rows, Cols>              every feature map of a stage in Rows x Cols blocks, one per
//                                    shard (DistDL's spatial partition): halos exchanged before
//                                    each convolution and pool, their gradients added back after;
//                                    with tensor_parallel<S>, S = Rows x Cols.
// rank = (replica * P + stage) * S + shard. Everything below is constexpr: the world size, each
// unit's coordinates, the stages' layers, each unit's layer partitions (as values and as types),
// its parameter count, the bytes it sends per step for a given batch, and the plan's 64-bit
// fingerprint (exchanged in the handshake). A plan that cannot work (more shards than neurons or
// input features, a grid that does not cover the shards, more stages than layers, a split named
// for a layer without weights, a schedule that would deadlock, a spatial grid larger than a
// feature map) is a static_assert whose instantiation line names the layer index or the pipeline.
#pragma once

#include <f2d2n/comm/schedule.hpp>
#include <f2d2n/core/partition.hpp>
#include <f2d2n/core/unit.hpp>
#include <f2d2n/model/layers.hpp>
#include <f2d2n/model/sequential.hpp>
#include <f2d2n/plan/detail/checks.hpp>
#include <f2d2n/plan/partition.hpp>
#include <f2d2n/plan/policies.hpp>
#include <f2d2n/wire/frame.hpp>

#include <boost/mp11/algorithm.hpp>
#include <boost/mp11/list.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace f2d2n {

template <class T>
inline constexpr bool is_plan_v = false;

/// A model and its distribution: see the top of this file.
template <class Net, class... Policies>
struct distribute {
  static_assert(network_type<Net>,
                "f2d2n: the first argument of distribute<model, policies...> must be a sequential<...>");
  static_assert(((detail::is_a<Policies, detail::data_parallel_tag> ||
                  detail::is_a<Policies, detail::tensor_parallel_tag> ||
                  detail::is_a<Policies, detail::pipeline_tag> || detail::is_a<Policies, detail::spatial_tag>)&&...),
                "f2d2n: distribute<model, policies...> takes data_parallel<R>, pipeline<P, ...>, "
                "tensor_parallel<S, ...> and spatial<Rows, Cols>");
  using policies = boost::mp11::mp_list<Policies...>;
  template <class Tag>
  static constexpr std::size_t named = boost::mp11::mp_count_if_q<policies, detail::is_a_q<Tag>>::value;
  static_assert(named<detail::data_parallel_tag> <= 1, "f2d2n: distribute<...> names data_parallel more than once");
  static_assert(named<detail::tensor_parallel_tag> <= 1, "f2d2n: distribute<...> names tensor_parallel more than once");
  static_assert(named<detail::pipeline_tag> <= 1, "f2d2n: distribute<...> names pipeline more than once");
  static_assert(named<detail::spatial_tag> <= 1, "f2d2n: distribute<...> names spatial more than once");

  using model = Net;
  using data_policy = detail::policy_or<policies, detail::data_parallel_tag, data_parallel<1>>;
  using tensor_policy = detail::policy_or<policies, detail::tensor_parallel_tag, tensor_parallel<1>>;
  using pipeline_policy = detail::policy_or<policies, detail::pipeline_tag, pipeline<1>>;
  using spatial_policy = detail::policy_or<policies, detail::spatial_tag, spatial<1, 1>>;
  static constexpr bool has_spatial = named<detail::spatial_tag> == 1;

  static constexpr std::size_t replicas = data_policy::replicas;
  static constexpr std::size_t bucket_elements = data_policy::bucket_elements;
  static constexpr std::size_t stages = pipeline_policy::stages;
  /// The units of a stage: tensor_parallel's shards, spatial's grid (both: they must agree).
  static constexpr std::size_t shards =
      named<detail::tensor_parallel_tag> == 1 ? tensor_policy::shards : spatial_policy::shards;
  static constexpr std::size_t microbatch_count = pipeline_policy::microbatch_count;
  static constexpr std::size_t schedule_id = pipeline_policy::schedule::id;
  static constexpr std::size_t world_size = replicas * stages * shards;
  static constexpr std::size_t layer_count = Net::size;

 private:
  template <std::size_t I>
  using layer_t = typename Net::template layer_at<I>;

  template <class O>
  static constexpr bool dense_at() {
    if constexpr (O::index < layer_count)
      return detail::is_dense_v<layer_t<O::index>> || std::is_base_of_v<detail::conv_kernels, layer_t<O::index>>;
    else return false;
  }
  template <class O>
  using override_ok = std::bool_constant<plan_check::split_override<
      plan_check::layer<O::index>, plan_check::layers<layer_count>,
      std::conditional_t<dense_at<O>(), plan_check::with_weights, plan_check::without_weights>>::ok>;
  static constexpr bool overrides_ok = boost::mp11::mp_all_of<typename tensor_policy::overrides, override_ok>::value;

  struct split_choice {
    split_kind kind = split_kind::none;
    std::size_t out_parts = 1, in_parts = 1;
  };
  /// A layer's window (kernel, stride, padding) where it slides one over a feature map.
  struct window_params {
    bool windowed = false;
    std::size_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
  };
  template <class L>
  static constexpr window_params window_params_of() {
    if constexpr (std::is_base_of_v<detail::windowed, L>)
      return {true,
              L::kernel_window.height,
              L::kernel_window.width,
              L::stride_window.height,
              L::stride_window.width,
              L::padding_window.height,
              L::padding_window.width};
    else return {};
  }
  template <std::size_t... I>
  static constexpr std::array<window_params, layer_count> windows_of(std::index_sequence<I...>) {
    return {window_params_of<layer_t<I>>()...};
  }
  static constexpr auto windows_ = windows_of(std::make_index_sequence<layer_count>{});

 public:
  /// conv_layers[i]: layer i is a convolution (its splits are by output or input channels).
  static constexpr std::array<bool, layer_count> conv_layers = []<std::size_t... I>(std::index_sequence<I...>) {
    return std::array<bool, layer_count>{std::is_base_of_v<detail::conv_kernels, layer_t<I>>...};
  }(std::make_index_sequence<layer_count>{});

  /// spatial_layers[i]: layer i computes blocks of a feature map over spatial<R, C>'s grid: every
  /// convolution and pool, and every element-wise layer whose input is a feature map (rank 2 or 3).
  static constexpr std::array<bool, layer_count> spatial_layers = [] {
    std::array<bool, layer_count> r{};
    if (!has_spatial) return r;
    constexpr auto elementwise = [] {
      std::array<bool, layer_count> e{};
      constexpr auto list = []<std::size_t... I>(std::index_sequence<I...>) {
        return std::array<bool, layer_count>{std::is_base_of_v<detail::elementwise, layer_t<I>>...};
      }(std::make_index_sequence<layer_count>{});
      for (std::size_t i = 0; i < layer_count; ++i) e[i] = list[i];
      return e;
    }();
    for (std::size_t i = 1; i + 1 < layer_count; ++i) {
      const auto rank = Net::input_extents[i].rank;
      r[i] = windows_[i].windowed || (elementwise[i] && (rank == 2 || rank == 3));
    }
    return r;
  }();

 private:
  template <class Split>
  static constexpr split_choice choice_of() {
    return {Split::kind, Split::out_parts == 0 ? shards : Split::out_parts,
            Split::in_parts == 0 ? shards : Split::in_parts};
  }
  template <std::size_t... I>
  static constexpr std::array<split_choice, layer_count> choices_of(std::index_sequence<I...>) {
    constexpr bool is_dense[] = {detail::is_dense_v<layer_t<I>>...};
    constexpr bool is_conv[] = {std::is_base_of_v<detail::conv_kernels, layer_t<I>>...};
    std::array<split_choice, layer_count> s{};
    for (std::size_t i = 0; i < layer_count; ++i)
      s[i] = !is_dense[i]  ? split_choice{}
             : shards == 1 || named<detail::tensor_parallel_tag> == 0 ? split_choice{split_kind::replicated, 1, 1}
                           : choice_of<typename tensor_policy::default_split>();
    if constexpr (shards > 1) {
      boost::mp11::mp_for_each<typename tensor_policy::overrides>([&](auto o) {
        using O = decltype(o);
        if (O::index < layer_count && (is_dense[O::index] || is_conv[O::index]))
          s[O::index] = choice_of<typename O::split>();
      });
    }
    for (std::size_t i = 0; i < layer_count; ++i)
      if (spatial_layers[i]) s[i] = split_choice{split_kind::spatial, spatial_policy::rows, spatial_policy::cols};
    return s;
  }
  static constexpr auto choices_ = choices_of(std::make_index_sequence<layer_count>{});

  template <std::size_t... I>
  static constexpr std::array<std::string_view, layer_count> names_of(std::index_sequence<I...>) {
    return {detail::name_of<layer_t<I>>()...};
  }

  static constexpr std::size_t hidden_layers = layer_count >= 2 ? layer_count - 2 : 0;
  using hand = typename pipeline_policy::placement;
  static constexpr bool starts_valid = [] {
    std::size_t previous = 1;
    for (auto first : hand::starts) {
      if (first <= previous || first > layer_count - 2) return false;
      previous = first;
    }
    return true;
  }();
  static constexpr bool pipeline_ok = [] {
    if constexpr (!plan_check::pipeline_stages<plan_check::stages<stages>,
                                               plan_check::hidden_layers<hidden_layers>>::ok)
      return false;
    else if constexpr (hand::by_hand)
      return plan_check::pipeline_stage_starts<plan_check::stages<stages>,
                                               plan_check::stage_starts_named<hand::starts.size()>,
                                               std::conditional_t<starts_valid, plan_check::increasing_within_the_model,
                                                                  plan_check::not_increasing_within_the_model>>::ok;
    else return true;
  }();

 public:
  /// How each layer is spread over the shards (none for layers without weights).
  static constexpr std::array<split_kind, layer_count> splits = [] {
    std::array<split_kind, layer_count> s{};
    for (std::size_t i = 0; i < layer_count; ++i) s[i] = choices_[i].kind;
    return s;
  }();

  /// Stage s holds the hidden layers [stage_begin[s], stage_begin[s + 1]); stage 0 also holds the
  /// input, the last stage the loss. By hand (stage_starts<...>), or balanced: contiguous groups,
  /// the largest parameter count as small as it can be, each stage as full as that bound allows
  /// (so an activation stays with the dense layer before it).
  static constexpr std::array<std::size_t, stages + 1> stage_begin = [] {
    std::array<std::size_t, stages + 1> b{};
    b[0] = 1;
    b[stages] = layer_count - 1;
    if (!pipeline_ok) return b;  // reported by plan_check::pipeline_stages
    if constexpr (hand::by_hand) {
      for (std::size_t k = 0; k + 1 < stages; ++k) b[k + 1] = hand::starts[k];
    } else {
      detail::balanced_stages(Net::parameter_counts, b);
    }
    return b;
  }();

  /// The stage that holds layer i.
  static constexpr std::size_t stage_of_layer(std::size_t i) noexcept {
    if (i == 0) return 0;
    if (i + 1 >= layer_count) return stages - 1;
    std::size_t s = 0;
    while (s + 1 < stages && i >= stage_begin[s + 1]) ++s;
    return s;
  }

 private:
  template <std::size_t... I>
  static constexpr std::array<bool, layer_count> elementwise_of(std::index_sequence<I...>) {
    return {std::is_base_of_v<detail::elementwise, layer_t<I>>...};
  }

 public:
  /// chained[i]: layer i's output stays in blocks. A by_outputs layer whose next dense layer, past
  /// element-wise layers only and in the same stage, is split by_inputs over the same shards hands
  /// each unit exactly the input columns it holds there: neither the all-gather after the first
  /// layer's forward nor the one after the second's backward is needed (Megatron's pairing).
  static constexpr std::array<bool, layer_count> chained = [] {
    constexpr auto elementwise = elementwise_of(std::make_index_sequence<layer_count>{});
    std::array<bool, layer_count> c{};
    for (std::size_t i = 1; i + 1 < layer_count; ++i) {
      if (splits[i] != split_kind::outputs || conv_layers[i]) continue;
      std::size_t j = i + 1;
      while (j + 1 < layer_count && elementwise[j]) ++j;
      if (j + 1 >= layer_count || splits[j] != split_kind::inputs) continue;
      if (stage_of_layer(i) != stage_of_layer(j) || choices_[i].out_parts != choices_[j].in_parts) continue;
      for (std::size_t k = i; k < j; ++k) c[k] = true;
    }
    return c;
  }();

 private:
  /// Checks the splits of layers I, I + 1, ... up to the first that fails (one error per plan).
  template <std::size_t I = 0>
  static constexpr bool check_splits() {
    if constexpr (I == layer_count) {
      return true;
    } else if constexpr (conv_layers[I] && !spatial_layers[I]) {
      constexpr auto out = Net::output_extents[I];
      constexpr auto in = detail::image_of(Net::input_extents[I]);
      constexpr bool ok = plan_check::conv_split<plan_check::layer<I>, splits[I], plan_check::shards<shards>,
                                                 plan_check::channels<out.dims[2]>,
                                                 plan_check::input_channels<in.channels>>::ok;
      if constexpr (!ok) return false;
      else return check_splits<I + 1>();
    } else if constexpr (spatial_layers[I]) {
      constexpr auto out = Net::output_extents[I];
      constexpr bool ok =
          plan_check::spatial_split<plan_check::layer<I>, plan_check::grid<spatial_policy::rows, spatial_policy::cols>,
                                    plan_check::output_map<out.dims[0], out.dims[1]>>::ok;
      if constexpr (!ok) return false;
      else return check_splits<I + 1>();
    } else {
      constexpr bool ok = plan_check::dense_split<plan_check::layer<I>, splits[I], plan_check::shards<shards>,
                                                  plan_check::neurons<detail::neurons_of<layer_t<I>>()>,
                                                  plan_check::input_features<Net::input_extents[I].size()>,
                                                  plan_check::grid<choices_[I].out_parts, choices_[I].in_parts>>::ok;
      if constexpr (!ok) return false;
      else return check_splits<I + 1>();
    }
  }

  /// spatial<R, C> against tensor_parallel and the model.
  static constexpr bool spatial_ok = [] {
    if constexpr (!has_spatial) {
      return true;
    } else {
      constexpr bool any = [] {
        for (bool b : spatial_layers)
          if (b) return true;
        return false;
      }();
      return plan_check::spatial_policy<
                 plan_check::shards<named<detail::tensor_parallel_tag> == 1 ? tensor_policy::shards : 0>,
                 plan_check::grid<spatial_policy::rows, spatial_policy::cols>,
                 std::conditional_t<any, plan_check::with_feature_maps, plan_check::without_feature_maps>>::ok;
    }
  }();

 public:
  /// True when every check passed. The checks run on any use of the plan (the static_assert
  /// below evaluates this); each failed check is its own compile error, and the only one.
  static constexpr bool checked = [] {
    if constexpr (!Net::checked || !overrides_ok || !pipeline_ok || !spatial_ok) return false;
    else
      return check_splits() &&
             plan_check::pipeline_schedule<typename pipeline_policy::schedule, plan_check::stages<stages>,
                                           plan_check::micro_batches<microbatch_count>>::ok &&
             plan_check::message_fields<plan_check::layers<layer_count>,
                                        plan_check::micro_batches<microbatch_count>>::ok;
  }();
  static_assert(detail::evaluated<checked>);

  /// The coordinates of unit `rank`: rank = (replica * stages + stage) * shards + shard.
  static constexpr unit_coordinates coordinates_of(std::size_t rank) noexcept {
    return {rank / (stages * shards), (rank / shards) % stages, rank % shards};
  }
  /// The unit at the given coordinates.
  static constexpr unit_id rank_of(unit_coordinates c) noexcept {
    return static_cast<unit_id>((c.replica * stages + c.stage) * shards + c.shard);
  }

  /// Layer i as unit `rank` holds it.
  static constexpr layer_partition partition_of(std::size_t rank, std::size_t i) noexcept {
    const auto c = coordinates_of(rank);
    return layouts_[c.stage * shards + c.shard][i];
  }
  /// The block of layer i's input map unit `rank` holds under spatial<R, C> (the block of the
  /// layer before's output it computed), whether or not its input arrives in blocks.
  static constexpr map_region owned_input_of(std::size_t rank, std::size_t i) noexcept;
  /// The window of layer i's input map unit `rank`'s block of output reads (spatial layers).
  static constexpr map_region window_of(std::size_t rank, std::size_t i) noexcept;
  /// Layer i's halo on unit `rank` (spatial layers): how many cells its window reaches past the
  /// block of the input map it holds, each side (negative: cells of its block it does not read).
  /// From kernel, stride, padding and the grid, at compile time.
  static constexpr halo_extent halo_of(std::size_t rank, std::size_t i) noexcept;

  /// Parameters held by unit `rank`.
  static constexpr std::size_t parameter_count_of(std::size_t rank) noexcept {
    std::size_t n = 0;
    for (std::size_t i = 0; i < layer_count; ++i) n += partition_of(rank, i).parameter_count;
    return n;
  }

  /// Rows of a batch of `batch` samples that unit `rank` computes (its replica's share).
  static constexpr std::size_t rows_of(std::size_t rank, std::size_t batch) noexcept {
    return part_size(batch, replicas, coordinates_of(rank).replica);
  }

  /// Bytes of activations unit `rank` keeps between forward and backward for a batch: the output
  /// of every hidden layer of its stage for its rows (whole: split layers gather theirs, except in
  /// a chain, where the unit keeps its columns), plus what it receives from the stage before.
  template <class Scalar = float>
  static constexpr std::size_t activation_bytes_of(std::size_t rank, std::size_t batch) noexcept;

  /// Calls f(step_message) for every message unit `rank` sends in its training step on a batch of
  /// `batch` samples, in the order the unit meets them within each micro-batch (the replica's rows
  /// must split into the micro-batches evenly). A collective over a group of one unit is no
  /// message. Each carries its wire id (plan/messages.hpp): the units' engines send exactly these.
  template <class F>
  static constexpr void for_each_message(std::size_t rank, std::size_t batch, F&& f);

  /// Calls f(step_message) for every message unit `rank` receives from a neighbouring stage in
  /// its training step: the activations and gradients its neighbours' schemas send to it, with
  /// `peer` the unit it comes from.
  template <class F>
  static constexpr void for_each_received(std::size_t rank, std::size_t batch, F&& f);

  /// Values before a unit's gradients in the buffer its replicas sum: the step's loss and correct
  /// count, then zeros up to 64 bytes of double, so that the gradients keep the buffer's alignment
  /// (Eigen's vectorised kernels round alike only on alike-aligned operands).
  static constexpr std::size_t gradient_offset = 16;

  /// Calls f(layer, begin, size) for each bucket of unit `rank`'s gradient all-reduce, in the
  /// order they are summed. The buffer is gradient_offset values (the step's loss and correct
  /// count first), then the unit's gradients; walking the backward pass (last layer first), a bucket closes as soon as
  /// it holds bucket_elements values, at the layer named; the rest, with the loss and count, is the last.
  template <class F>
  static constexpr void for_each_gradient_bucket(std::size_t rank, F&& f);

  /// The number of messages of unit `rank`'s training step (see for_each_message).
  static constexpr std::size_t message_count(std::size_t rank, std::size_t batch) noexcept;

  /// Payload bytes unit `rank` sends in one training step on a batch of `batch` samples (frame
  /// headers not included): the sum over its messages (for_each_message).
  template <class Scalar = float>
  static constexpr std::size_t bytes_sent_per_step(std::size_t rank, std::size_t batch) noexcept;

 private:
  /// Layer i's spatial partition on shard s (grid position (s / cols, s % cols)): its block of the
  /// output map, the window of the input map that block reads (kernel, stride and padding), and
  /// whether its input arrives / its output stays in blocks.
  static constexpr void spatial_block_of(layer_partition& p, std::size_t i, std::size_t s);


  static constexpr auto layouts_ = [] {
    std::array<std::array<layer_partition, layer_count>, stages * shards> all{};
    for (std::size_t st = 0; st < stages; ++st)
      for (std::size_t s = 0; s < shards; ++s) {
        std::size_t offset = 0;
        for (std::size_t i = 0; i < layer_count; ++i) {
          layer_partition p;
          p.held = stage_of_layer(i) == st;
          p.split = splits[i];
          const std::size_t in = Net::input_extents[i].size(), out = Net::output_extents[i].size();
          p.count = out;
          p.input_count = in;
          p.parameter_count = Net::parameter_counts[i];
          if (conv_layers[i] && splits[i] == split_kind::outputs) {
            // A block of output channels: rows of the (channels) x (kh kw in) weights and their biases.
            const auto o = detail::image_of(Net::output_extents[i]);
            const std::size_t k = Net::parameter_counts[i] / o.channels - 1;
            p.out_parts = shards;
            p.out_index = s;
            p.begin = part_begin(o.channels, shards, s);
            p.count = part_size(o.channels, shards, s);
            p.input_begin = 0;
            p.input_count = k;
            p.parameter_count = p.count * k + p.count;
          } else if (conv_layers[i] && splits[i] == split_kind::inputs) {
            // A block of input channels: for each of the kernel's taps, those columns of the
            // (channels) x (kh kw in) weights (stored tap after tap: blocks of channels x its
            // inputs), and every bias (replicated, as a dense layer's by_inputs).
            const auto o = detail::image_of(Net::output_extents[i]);
            const auto im = detail::image_of(Net::input_extents[i]);
            const std::size_t taps = (Net::parameter_counts[i] / o.channels - 1) / im.channels;
            p.in_parts = shards;
            p.in_index = s;
            p.begin = 0;
            p.count = o.channels;
            p.input_begin = part_begin(im.channels, shards, s);
            p.input_count = part_size(im.channels, shards, s);
            p.parameter_count = o.channels * taps * p.input_count + o.channels;
          } else if (splits[i] == split_kind::outputs || splits[i] == split_kind::inputs || splits[i] == split_kind::grid) {
            p.out_parts = choices_[i].out_parts;
            p.in_parts = choices_[i].in_parts;
            p.out_index = s / p.in_parts;
            p.in_index = s % p.in_parts;
            p.begin = part_begin(out, p.out_parts, p.out_index);
            p.count = part_size(out, p.out_parts, p.out_index);
            p.input_begin = part_begin(in, p.in_parts, p.in_index);
            p.input_count = part_size(in, p.in_parts, p.in_index);
            p.parameter_count = p.count * p.input_count + p.count;
          }
          p.output_width = out;
          p.input_width = in;
          if (splits[i] == split_kind::spatial) spatial_block_of(p, i, s);
          // In a chain every unit keeps the columns of the chain's first layer it computed.
          if (chained[i]) p.sharded_output = true;
          if (i > 0 && chained[i - 1]) p.sharded_input = true;
          if (splits[i] != split_kind::spatial && (p.sharded_output || p.sharded_input)) {
            std::size_t first = i;  // the chain's by_outputs layer
            while (splits[first] != split_kind::outputs) --first;
            const std::size_t width = part_size(Net::output_extents[first].size(), shards, s);
            if (p.sharded_output) p.output_width = width;
            if (p.sharded_input) p.input_width = width;
          }
          if (!p.held) p.parameter_count = 0;
          p.parameter_offset = offset;
          offset += p.parameter_count;
          all[st * shards + s][i] = p;
        }
      }
    return all;
  }();

 public:
  /// Unit K of the plan as types and constants.
  template <std::size_t K>
  struct unit {
    static_assert(K < world_size, "f2d2n: plan::unit<K> names a unit past the plan's world size");
    static constexpr unit_id rank = K;
    static constexpr unit_coordinates coordinates = coordinates_of(K);
    static constexpr std::size_t parameter_count = parameter_count_of(K);
    /// The first and one past the last layer of the sequential this unit holds (its stage's
    /// hidden layers, with the input on the first stage and the loss on the last).
    static constexpr std::size_t first_layer = coordinates.stage == 0 ? 0 : stage_begin[coordinates.stage];
    static constexpr std::size_t end_layer =
        coordinates.stage + 1 == stages ? layer_count : stage_begin[coordinates.stage + 1];
    template <class I>
    struct partition_type_of {
      static constexpr std::size_t index = first_layer + I::value;
      static constexpr layer_partition p = partition_of(K, index);
      using type = std::conditional_t<
          p.split == split_kind::outputs && conv_layers[index], channel_shard<layer_t<index>, p.begin, p.begin + p.count>,
          std::conditional_t<
          p.split == split_kind::inputs && conv_layers[index],
          channel_input_shard<layer_t<index>, p.input_begin, p.input_begin + p.input_count>,
          std::conditional_t<
          p.split == split_kind::outputs, dense_shard<Net::input_extents[index].size(), p.begin, p.begin + p.count>,
          std::conditional_t<
              p.split == split_kind::inputs,
              dense_input_shard<Net::output_extents[index].size(), p.input_begin, p.input_begin + p.input_count>,
              std::conditional_t<
                  p.split == split_kind::grid && !conv_layers[index],
                  dense_block<p.begin, p.begin + p.count, p.input_begin, p.input_begin + p.input_count>,
                  std::conditional_t<p.split == split_kind::spatial,
                                     spatial_block<layer_t<index>, p.out_row, p.out_rows, p.out_col, p.out_cols>,
                                     layer_t<index>>>>>>>;
    };
    /// The layers this unit holds, in order: dense_shard<...> / dense_input_shard<...> /
    /// dense_block<...> for split dense layers, channel_shard<...> / channel_input_shard<...> for
    /// split convolutions, spatial_block<...> for a block of a map, the layer itself otherwise.
    using layers = boost::mp11::mp_transform_q<boost::mp11::mp_quote_trait<partition_type_of>,
                                               boost::mp11::mp_iota_c<end_layer - first_layer>>;
  };

  /// A 64-bit digest of the plan: wire version, policies, stages, and every layer's name,
  /// extents, parameter count and split. Units refuse a peer whose fingerprint differs.
  static constexpr std::uint64_t fingerprint = [] {
    detail::fnv1a h;
    h.text("f2d2n plan");
    h.number(wire::wire_version);
    h.number(replicas);
    h.number(bucket_elements);
    h.number(stages);
    h.number(shards);
    h.number(microbatch_count);
    h.number(schedule_id);
    for (auto b : stage_begin) h.number(b);
    constexpr std::array<std::string_view, layer_count> names = names_of(std::make_index_sequence<layer_count>{});
    for (std::size_t i = 0; i < layer_count; ++i) {
      h.text(names[i]);
      for (auto d : Net::input_extents[i].dims) h.number(d);
      for (auto d : Net::output_extents[i].dims) h.number(d);
      h.number(Net::parameter_counts[i]);
      h.number(static_cast<std::uint64_t>(splits[i]));
      h.number(choices_[i].out_parts);
      h.number(choices_[i].in_parts);
    }
    return h.h;
  }();
};

template <class Net, class... P>
inline constexpr bool is_plan_v<distribute<Net, P...>> = true;

/// A distribute<...> type.
template <class T>
concept plan_type = is_plan_v<T>;

}  // namespace f2d2n

#include <f2d2n/plan/impl/distribute.hpp>
