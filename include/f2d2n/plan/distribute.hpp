// f2d2n/plan/distribute.hpp: a model and its distribution as one type.
//
//   using plan = f2d2n::distribute<mlp, f2d2n::data_parallel<2>, f2d2n::tensor_parallel<2>>;
//   static_assert(plan::world_size == 4);
//   static_assert(plan::unit<3>::coordinates.replica == 1 && plan::unit<3>::coordinates.shard == 1);
//
// Policies (each at most once, in any order):
//   data_parallel<R>                 R replicas of the model, each on its share of every batch;
//                                    gradients summed by a ring all-reduce among the replicas.
//   tensor_parallel<S, Split, split_layer<I, Split>...>
//                                    every dense layer spread over S shards: by_outputs (each shard
//                                    owns a block of neurons; activations all-gathered), by_inputs
//                                    (each shard owns a block of input features and the matching
//                                    weight columns, F2D2N's input units; partial pre-activations
//                                    summed) or replicated; split_layer<I, ...> overrides layer I.
// Units are numbered replica by replica, shards of one replica next to each other:
// rank = replica * S + shard. Everything below is constexpr: the world size, each unit's
// coordinates, its layer partitions (as values and as types), its parameter count, the bytes it
// sends per step for a given batch, and the plan's 64-bit fingerprint (exchanged in the handshake).
// A plan that cannot work (more shards than neurons or input features, a split named for a layer
// without weights) is a static_assert whose instantiation line names the layer index.
#pragma once

#include <f2d2n/comm/partition.hpp>
#include <f2d2n/core/unit.hpp>
#include <f2d2n/model/layers.hpp>
#include <f2d2n/model/sequential.hpp>
#include <f2d2n/wire/frame.hpp>

#include <boost/mp11/algorithm.hpp>
#include <boost/mp11/list.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <utility>

namespace f2d2n {

// ---------------------------------------------------------------------------------------------
// Policies

/// R replicas of the model, each trained on its share of every batch (balanced split of the rows).
template <std::size_t Replicas>
struct data_parallel {
  static_assert(Replicas >= 1, "f2d2n: data_parallel<R> needs at least one replica");
  static constexpr std::size_t replicas = Replicas;
};

/// How a dense layer is spread over the shards of tensor_parallel.
enum class split_kind : std::uint8_t {
  none,        ///< a layer without weights: every shard computes it whole
  replicated,  ///< every shard holds the whole layer
  outputs,     ///< shard s owns a block of neurons (rows of W and their biases)
  inputs,      ///< shard s owns a block of input features (columns of W); the biases are replicated
};

/// Split a dense layer by output neurons: y = all_gather(x W_s^T + b_s); backward dx = all_reduce(dy_s W_s).
struct by_outputs {
  static constexpr split_kind kind = split_kind::outputs;
};
/// Split a dense layer by input features (F2D2N's input units): y = all_reduce(x_s W_s^T) + b;
/// backward dx = all_gather(dy W_s).
struct by_inputs {
  static constexpr split_kind kind = split_kind::inputs;
};
/// Keep the layer whole on every shard.
struct replicated {
  static constexpr split_kind kind = split_kind::replicated;
};

/// Overrides the split of layer Index (its position in the sequential, input = 0).
template <std::size_t Index, class Split>
struct split_layer {
  static constexpr std::size_t index = Index;
  using split = Split;
};

namespace detail {
template <class T>
concept split_policy = std::is_same_v<T, by_outputs> || std::is_same_v<T, by_inputs> || std::is_same_v<T, replicated>;
template <class T>
inline constexpr bool is_split_layer_v = false;
template <std::size_t I, class S>
inline constexpr bool is_split_layer_v<split_layer<I, S>> = split_policy<S>;
}  // namespace detail

/// Every dense layer spread over Shards units, by `Default` unless a split_layer<I, ...> says otherwise.
template <std::size_t Shards, class Default = by_outputs, class... Overrides>
struct tensor_parallel {
  static_assert(Shards >= 1, "f2d2n: tensor_parallel<S> needs at least one shard");
  static_assert(detail::split_policy<Default>,
                "f2d2n: the second argument of tensor_parallel<S, Split> must be by_outputs, by_inputs or replicated");
  static_assert((detail::is_split_layer_v<Overrides> && ...),
                "f2d2n: tensor_parallel<S, Split, ...> takes per-layer overrides as split_layer<index, by_outputs | "
                "by_inputs | replicated>");
  static constexpr std::size_t shards = Shards;
  using default_split = Default;
  using overrides = boost::mp11::mp_list<Overrides...>;
};

namespace detail {
template <class T>
inline constexpr bool is_data_parallel_v = false;
template <std::size_t R>
inline constexpr bool is_data_parallel_v<data_parallel<R>> = true;
template <class T>
inline constexpr bool is_tensor_parallel_v = false;
template <std::size_t S, class D, class... O>
inline constexpr bool is_tensor_parallel_v<tensor_parallel<S, D, O...>> = true;

template <class T>
using is_data_parallel = std::bool_constant<is_data_parallel_v<T>>;
template <class T>
using is_tensor_parallel = std::bool_constant<is_tensor_parallel_v<T>>;

/// The policy of a kind in the list, or the default when there is none.
template <class Policies, template <class> class Is, class Default>
using policy_or = boost::mp11::mp_eval_if_c<boost::mp11::mp_count_if<Policies, Is>::value == 0, Default,
                                            boost::mp11::mp_at, Policies, boost::mp11::mp_find_if<Policies, Is>>;

/// A layer with a dense layer's weights (N x in, then N biases) and kernels.
template <class L>
inline constexpr bool is_dense_v = std::is_base_of_v<dense_kernels, L>;

template <class L>
constexpr std::size_t neurons_of() {
  if constexpr (is_dense_v<L>) return L::neurons;
  else return 0;
}

template <class L>
constexpr std::string_view name_of() {
  if constexpr (requires { L::name; }) {
    return L::name;
  } else {
    // A user's layer without a name: the compiler's spelling of its type (so units built by
    // different compilers disagree on the fingerprint of a plan that uses it; give it a name).
    return std::string_view(__PRETTY_FUNCTION__);
  }
}

/// FNV-1a, 64 bits: the fingerprint's hash (a plan is a few hundred bytes of description).
struct fnv1a {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  constexpr void byte(std::uint8_t b) {
    h ^= b;
    h *= 0x100000001b3ULL;
  }
  constexpr void number(std::uint64_t v) {
    for (int k = 0; k < 8; ++k) byte(static_cast<std::uint8_t>(v >> (8 * k)));
  }
  constexpr void text(std::string_view s) {
    number(s.size());
    for (char c : s) byte(static_cast<std::uint8_t>(c));
  }
};

/// The checks of a split, instantiated for each dense layer: a failure's instantiation line names
/// the layer index, the split, the shards, the layer's neurons and its input features.
template <std::size_t Index, split_kind Split, std::size_t Shards, std::size_t Neurons, std::size_t Inputs>
struct split_check {
  static_assert(Split != split_kind::outputs || Neurons >= Shards,
                "f2d2n: tensor_parallel splits the dense layer at the index named above by_outputs into more "
                "shards than it has neurons (shards and neurons are named above): use fewer shards, or "
                "split_layer<index, by_inputs> or split_layer<index, replicated> for this layer");
  static_assert(Split != split_kind::inputs || Inputs >= Shards,
                "f2d2n: tensor_parallel splits the dense layer at the index named above by_inputs into more "
                "shards than it has input features (shards and inputs are named above): use fewer shards, or "
                "another split for this layer");
  static constexpr bool ok = (Split != split_kind::outputs || Neurons >= Shards) &&
                             (Split != split_kind::inputs || Inputs >= Shards);
};

/// The checks of one split_layer override against the model.
template <std::size_t Index, std::size_t Layers, bool Dense>
struct override_check {
  static_assert(Index < Layers,
                "f2d2n: split_layer<index, ...> names a layer past the end of the sequential (index named above)");
  static_assert(Index >= Layers || Dense,
                "f2d2n: split_layer<index, ...> names a layer without weights (index named above): only dense "
                "layers can be split");
  static constexpr bool ok = Index < Layers && Dense;
};
}  // namespace detail

// ---------------------------------------------------------------------------------------------
// The plan

/// Where a unit stands in the plan.
struct unit_coordinates {
  std::size_t replica = 0;  ///< which copy of the model (data_parallel)
  std::size_t shard = 0;    ///< which block of every split layer (tensor_parallel)
  friend constexpr bool operator==(const unit_coordinates&, const unit_coordinates&) = default;
};

/// One layer as one unit holds it.
struct layer_partition {
  split_kind split = split_kind::none;
  std::size_t begin = 0;            ///< first neuron (outputs) or input feature (inputs) held here
  std::size_t count = 0;            ///< neurons or input features held here (the whole extent otherwise)
  std::size_t parameter_count = 0;  ///< this unit's parameters of the layer
  std::size_t parameter_offset = 0; ///< where they start in the unit's flat parameter buffer
  friend constexpr bool operator==(const layer_partition&, const layer_partition&) = default;
};

/// Shard [Begin, End) of the neurons of a dense layer over In input features (by_outputs).
template <std::size_t In, std::size_t Begin, std::size_t End>
struct dense_shard {
  static constexpr std::size_t inputs = In, neuron_begin = Begin, neuron_end = End;
  static constexpr std::size_t parameter_count = (End - Begin) * In + (End - Begin);
};
/// Input features [Begin, End) of a dense layer of Neurons neurons (by_inputs; biases replicated).
template <std::size_t Neurons, std::size_t Begin, std::size_t End>
struct dense_input_shard {
  static constexpr std::size_t neurons = Neurons, input_begin = Begin, input_end = End;
  static constexpr std::size_t parameter_count = Neurons * (End - Begin) + Neurons;
};

template <class T>
inline constexpr bool is_plan_v = false;

/// A model and its distribution: see the top of this file.
template <class Net, class... Policies>
struct distribute {
  static_assert(network_type<Net>, "f2d2n: the first argument of distribute<model, policies...> must be a sequential<...>");
  static_assert(((detail::is_data_parallel_v<Policies> || detail::is_tensor_parallel_v<Policies>) && ...),
                "f2d2n: distribute<model, policies...> takes data_parallel<R> and tensor_parallel<S, ...> "
                "(pipeline<...> is not built yet)");
  using policies = boost::mp11::mp_list<Policies...>;
  static_assert(boost::mp11::mp_count_if<policies, detail::is_data_parallel>::value <= 1,
                "f2d2n: distribute<...> names data_parallel more than once");
  static_assert(boost::mp11::mp_count_if<policies, detail::is_tensor_parallel>::value <= 1,
                "f2d2n: distribute<...> names tensor_parallel more than once");

  using model = Net;
  using data_policy = detail::policy_or<policies, detail::is_data_parallel, data_parallel<1>>;
  using tensor_policy = detail::policy_or<policies, detail::is_tensor_parallel, tensor_parallel<1>>;

  static constexpr std::size_t replicas = data_policy::replicas;
  static constexpr std::size_t shards = tensor_policy::shards;
  static constexpr std::size_t world_size = replicas * shards;
  static constexpr std::size_t layer_count = Net::size;

 private:
  template <std::size_t I>
  using layer_t = typename Net::template layer_at<I>;

  template <class O>
  static constexpr bool dense_at() {
    if constexpr (O::index < layer_count) return detail::is_dense_v<layer_t<O::index>>;
    else return false;
  }
  template <class O>
  using override_ok = std::bool_constant<detail::override_check<O::index, layer_count, dense_at<O>()>::ok>;
  static constexpr bool overrides_ok =
      boost::mp11::mp_all_of<typename tensor_policy::overrides, override_ok>::value;

  template <std::size_t... I>
  static constexpr std::array<split_kind, layer_count> splits_of(std::index_sequence<I...>) {
    constexpr bool is_dense[] = {detail::is_dense_v<layer_t<I>>...};
    std::array<split_kind, layer_count> s{};
    for (std::size_t i = 0; i < layer_count; ++i)
      s[i] = !is_dense[i] ? split_kind::none : shards == 1 ? split_kind::replicated : tensor_policy::default_split::kind;
    if constexpr (shards > 1) {
      boost::mp11::mp_for_each<typename tensor_policy::overrides>([&](auto o) {
        using O = decltype(o);
        if (O::index < layer_count && is_dense[O::index]) s[O::index] = O::split::kind;
      });
    }
    return s;
  }

  template <std::size_t... I>
  static constexpr std::array<std::string_view, layer_count> names_of(std::index_sequence<I...>) {
    return {detail::name_of<layer_t<I>>()...};
  }

  /// Elements a unit sends in a ring all-gather of `blocks` blocks of `block` elements over p units.
  static constexpr std::size_t ring_gather_sends(std::size_t blocks, std::size_t p, std::size_t me,
                                                 std::size_t block) noexcept {
    if (p == 1) return 0;
    return (blocks - part_size(blocks, p, (me + 1) % p)) * block;
  }
  /// Elements a unit sends in a ring all-reduce of n elements over p units (reduce-scatter: every
  /// segment but its own; all-gather: every segment but its right neighbour's).
  static constexpr std::size_t ring_reduce_sends(std::size_t n, std::size_t p, std::size_t me) noexcept {
    if (p == 1) return 0;
    return (n - part_size(n, p, me)) + (n - part_size(n, p, (me + 1) % p));
  }

 public:
  /// How each layer is spread over the shards (none for layers without weights).
  static constexpr std::array<split_kind, layer_count> splits = splits_of(std::make_index_sequence<layer_count>{});

 private:
  template <std::size_t... I>
  static constexpr bool check_splits(std::index_sequence<I...>) {
    constexpr bool results[] = {
        detail::split_check<I, splits[I], shards, detail::neurons_of<layer_t<I>>(), Net::input_extents[I].size()>::ok...};
    for (bool r : results)
      if (!r) return false;
    return true;
  }

 public:
  /// True when every check passed (each failed check is a compile error first).
  static constexpr bool checked = Net::checked && overrides_ok && check_splits(std::make_index_sequence<layer_count>{});

  /// The coordinates of unit `rank`.
  static constexpr unit_coordinates coordinates_of(std::size_t rank) noexcept {
    return {rank / shards, rank % shards};
  }
  /// The unit at the given coordinates.
  static constexpr unit_id rank_of(unit_coordinates c) noexcept {
    return static_cast<unit_id>(c.replica * shards + c.shard);
  }

  /// Layer i as shard `shard` holds it (the same on every replica).
  static constexpr layer_partition partition_of(std::size_t shard, std::size_t i) noexcept {
    return shard_layouts_[shard][i];
  }
  /// Parameters held by a unit of shard `shard`.
  static constexpr std::size_t shard_parameter_count(std::size_t shard) noexcept {
    const auto& l = shard_layouts_[shard][layer_count - 1];
    return l.parameter_offset + l.parameter_count;
  }
  /// Parameters held by unit `rank`.
  static constexpr std::size_t parameter_count_of(std::size_t rank) noexcept {
    return shard_parameter_count(coordinates_of(rank).shard);
  }

  /// Rows of a batch of `batch` samples that unit `rank` computes (its replica's share).
  static constexpr std::size_t rows_of(std::size_t rank, std::size_t batch) noexcept {
    return part_size(batch, replicas, coordinates_of(rank).replica);
  }

  /// Bytes of activations unit `rank` keeps between forward and backward for a batch: the output
  /// of every hidden layer for its rows, whole (split layers gather theirs), in `Scalar`.
  template <class Scalar = float>
  static constexpr std::size_t activation_bytes_of(std::size_t rank, std::size_t batch) noexcept {
    std::size_t width = 0;
    for (std::size_t i = 1; i + 1 < layer_count; ++i) width += Net::output_extents[i].size();
    return rows_of(rank, batch) * width * sizeof(Scalar);
  }

  /// Payload bytes unit `rank` sends in one training step on a batch of `batch` samples (frame
  /// headers not included): the all-gathers and all-reduces of split layers, forward and backward,
  /// and the all-reduce of the gradients (plus the step's loss and correct count) among replicas.
  template <class Scalar = float>
  static constexpr std::size_t bytes_sent_per_step(std::size_t rank, std::size_t batch) noexcept {
    const auto c = coordinates_of(rank);
    const std::size_t rows = rows_of(rank, batch);
    std::size_t elements = 0;
    for (std::size_t i = 1; i + 1 < layer_count; ++i) {
      const std::size_t in = Net::input_extents[i].size(), out = Net::output_extents[i].size();
      const bool want_dx = i > 1;
      if (splits[i] == split_kind::outputs) {
        elements += ring_gather_sends(out, shards, c.shard, rows);
        if (want_dx) elements += ring_reduce_sends(rows * in, shards, c.shard);
      } else if (splits[i] == split_kind::inputs) {
        elements += ring_reduce_sends(rows * out, shards, c.shard);
        if (want_dx) elements += ring_gather_sends(in, shards, c.shard, rows);
      }
    }
    elements += ring_reduce_sends(shard_parameter_count(c.shard) + 2, replicas, c.replica);
    return elements * sizeof(Scalar);
  }

  /// Unit K of the plan as types and constants.
  template <std::size_t K>
  struct unit {
    static_assert(K < world_size, "f2d2n: plan::unit<K> names a unit past the plan's world size");
    static constexpr unit_id rank = K;
    static constexpr unit_coordinates coordinates = coordinates_of(K);
    static constexpr std::size_t parameter_count = parameter_count_of(K);
    template <class I>
    struct partition_type_of {
      static constexpr layer_partition p = partition_of(coordinates.shard, I::value);
      using type = std::conditional_t<
          p.split == split_kind::outputs,
          dense_shard<Net::input_extents[I::value].size(), p.begin, p.begin + p.count>,
          std::conditional_t<p.split == split_kind::inputs,
                             dense_input_shard<Net::output_extents[I::value].size(), p.begin, p.begin + p.count>,
                             layer_t<I::value>>>;
    };
    /// Each layer as this unit holds it: dense_shard<...> / dense_input_shard<...> for split
    /// layers, the layer itself otherwise.
    using layers = boost::mp11::mp_transform_q<
        boost::mp11::mp_quote_trait<partition_type_of>,
        boost::mp11::mp_iota_c<layer_count>>;

  };

 private:
  static constexpr auto shard_layouts_ = [] {
    std::array<std::array<layer_partition, layer_count>, shards> all{};
    for (std::size_t s = 0; s < shards; ++s) {
      std::size_t offset = 0;
      for (std::size_t i = 0; i < layer_count; ++i) {
        layer_partition p;
        p.split = splits[i];
        const std::size_t in = Net::input_extents[i].size(), out = Net::output_extents[i].size();
        p.parameter_count = Net::parameter_counts[i];
        if (splits[i] == split_kind::outputs) {
          p.begin = part_begin(out, shards, s);
          p.count = part_size(out, shards, s);
          p.parameter_count = p.count * in + p.count;
        } else if (splits[i] == split_kind::inputs) {
          p.begin = part_begin(in, shards, s);
          p.count = part_size(in, shards, s);
          p.parameter_count = out * p.count + out;
        } else {
          p.count = out;
        }
        p.parameter_offset = offset;
        offset += p.parameter_count;
        all[s][i] = p;
      }
    }
    return all;
  }();
 public:
  /// A 64-bit digest of the plan: wire version, policies, and every layer's name, extents,
  /// parameter count and split. Units refuse a peer whose fingerprint differs.
  static constexpr std::uint64_t fingerprint = [] {
    detail::fnv1a h;
    h.text("f2d2n plan");
    h.number(wire::wire_version);
    h.number(replicas);
    h.number(shards);
    constexpr std::array<std::string_view, layer_count> names = names_of(std::make_index_sequence<layer_count>{});
    for (std::size_t i = 0; i < layer_count; ++i) {
      h.text(names[i]);
      for (auto d : Net::input_extents[i].dims) h.number(d);
      for (auto d : Net::output_extents[i].dims) h.number(d);
      h.number(Net::parameter_counts[i]);
      h.number(static_cast<std::uint64_t>(splits[i]));
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
