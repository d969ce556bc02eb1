// f2d2n/plan/detail/checks.hpp: the compile-time checks of a plan (each a static_assert whose
// instantiation line names what is wrong), the pipeline schedule's simulation, and the policy traits
// distribute<...> is built from.
#pragma once

#include <f2d2n/plan/policies.hpp>

#include <f2d2n/comm/partition.hpp>
#include <f2d2n/core/unit.hpp>
#include <f2d2n/model/layers.hpp>
#include <f2d2n/model/sequential.hpp>

#include <boost/mp11/algorithm.hpp>
#include <boost/mp11/list.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace f2d2n {

namespace detail {
template <class T>
inline constexpr bool is_pipeline_v = false;
template <std::size_t P, class M, class S, class L>
inline constexpr bool is_pipeline_v<pipeline<P, M, S, L>> = true;
template <class T>
using is_pipeline = std::bool_constant<is_pipeline_v<T>>;

template <class Placement>
struct hand_placement {
  static constexpr bool by_hand = false;
  static constexpr std::array<std::size_t, 0> starts{};
};
template <std::size_t... First>
struct hand_placement<stage_starts<First...>> {
  static constexpr bool by_hand = true;
  static constexpr std::array<std::size_t, sizeof...(First)> starts{First...};
};

/// The checks of a pipeline against the model (a failure's instantiation line names the stages
/// and the model's hidden layers).
template <std::size_t Stages, std::size_t HiddenLayers, bool ByHand, std::size_t Starts, bool StartsValid>
struct pipeline_check {
  static_assert(Stages <= HiddenLayers,
                "f2d2n: pipeline<stages, ...> has more stages than the model has hidden layers (both named above): "
                "every stage needs at least one layer");
  static_assert(!ByHand || Starts + 1 == Stages,
                "f2d2n: stage_starts<...> must name where each stage after the first begins: one layer index per "
                "stage but the first");
  static_assert(!ByHand || Starts + 1 != Stages || StartsValid,
                "f2d2n: stage_starts<...> must be increasing layer indices between 2 and the last hidden layer, "
                "so that every stage has at least one layer");
  static constexpr bool ok = Stages <= HiddenLayers && (!ByHand || (Starts + 1 == Stages && StartsValid));
};

/// One pipeline stage's program for a step: forward (F) and backward (B) of micro-batches.
struct pipeline_op {
  bool forward = true;
  std::size_t microbatch = 0;
};

/// Op k of stage `stage`'s program (2 M ops in all).
constexpr pipeline_op schedule_op(std::size_t schedule, std::size_t stages, std::size_t stage, std::size_t m,
                                  std::size_t k) {
  if (schedule == gpipe::id) return k < m ? pipeline_op{true, k} : pipeline_op{false, k - m};
  const std::size_t warm = std::min(stages - stage - 1, m);
  if (k < warm) return {true, k};
  const std::size_t steady = 2 * (m - warm);
  if (k < warm + steady) {
    const std::size_t j = k - warm;
    return j % 2 == 0 ? pipeline_op{true, warm + j / 2} : pipeline_op{false, j / 2};
  }
  return {false, (m - warm) + (k - warm - steady)};
}

/// Runs every stage's program with blocking receives and buffered sends (as the transports send)
/// and tells whether all of them finish: each receive finds exactly one send of its message (the
/// activation or the gradient of its micro-batch, from its neighbour), and no send is left over.
constexpr bool schedule_completes(std::size_t schedule, std::size_t stages, std::size_t m) {
  if (stages == 1) return m >= 1;  // no messages between stages
  // pc[s]: the next op of stage s; sent_act[s * m + mb]: activations of mb sent by stage s to s+1
  // and not yet received; sent_grad likewise from stage s to s-1. (Sized exactly: the constant
  // evaluator is slow over large arrays, and every plan runs this.)
  std::vector<std::size_t> pc(stages, 0);
  std::vector<int> sent_act(stages * m, 0), sent_grad(stages * m, 0);
  bool progress = true;
  while (progress) {
    progress = false;
    for (std::size_t s = 0; s < stages; ++s) {
      while (pc[s] < 2 * m) {
        const auto op = schedule_op(schedule, stages, s, m, pc[s]);
        if (op.forward) {
          if (s > 0) {
            if (sent_act[(s - 1) * m + op.microbatch] == 0) break;  // waits for the activation
            --sent_act[(s - 1) * m + op.microbatch];
          }
          if (s + 1 < stages) ++sent_act[s * m + op.microbatch];
        } else {
          if (s + 1 < stages) {
            if (sent_grad[(s + 1) * m + op.microbatch] == 0) break;  // waits for the gradient
            --sent_grad[(s + 1) * m + op.microbatch];
          }
          if (s > 0) ++sent_grad[s * m + op.microbatch];
        }
        ++pc[s];
        progress = true;
      }
    }
  }
  for (std::size_t s = 0; s < stages; ++s) {
    if (pc[s] != 2 * m) return false;
    for (std::size_t mb = 0; mb < m; ++mb)
      if (sent_act[s * m + mb] != 0 || sent_grad[s * m + mb] != 0) return false;
  }
  // Each stage runs every micro-batch forward once and backward once, forward first.
  for (std::size_t s = 0; s < stages; ++s)
    for (std::size_t mb = 0; mb < m; ++mb) {
      std::size_t f = 2 * m, b = 2 * m, fc = 0, bc = 0;
      for (std::size_t k = 0; k < 2 * m; ++k) {
        const auto op = schedule_op(schedule, stages, s, m, k);
        if (op.microbatch != mb) continue;
        if (op.forward) ++fc, f = k;
        else ++bc, b = k;
      }
      if (fc != 1 || bc != 1 || !(f < b)) return false;
    }
  return true;
}

template <std::size_t Schedule, std::size_t Stages, std::size_t M, bool Completes>
struct schedule_check {
  static_assert(Completes,
                "f2d2n: the pipeline schedule named above (1: gpipe, 2: one_f_one_b; stages, micro-batches) "
                "would deadlock or leave a message unreceived");
  static constexpr bool ok = Completes;
};

template <class T>
inline constexpr bool is_data_parallel_v = false;
template <std::size_t R, std::size_t B>
inline constexpr bool is_data_parallel_v<data_parallel<R, B>> = true;
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
/// the layer index, the split, the shards, the layer's neurons and input features, and the grid
/// (parts of the neurons x parts of the inputs).
template <std::size_t Index, split_kind Split, std::size_t Shards, std::size_t Neurons, std::size_t Inputs,
          std::size_t OutParts, std::size_t InParts>
struct split_check {
  static_assert(Split != split_kind::outputs || Neurons >= Shards,
                "f2d2n: tensor_parallel splits the dense layer at the index named above by_outputs into more "
                "shards than it has neurons (shards and neurons are named above): use fewer shards, or "
                "split_layer<index, by_inputs> or split_layer<index, replicated> for this layer");
  static_assert(Split != split_kind::inputs || Inputs >= Shards,
                "f2d2n: tensor_parallel splits the dense layer at the index named above by_inputs into more "
                "shards than it has input features (shards and inputs are named above): use fewer shards, or "
                "another split for this layer");
  static_assert(Split != split_kind::grid || OutParts * InParts == Shards,
                "f2d2n: by_grid<Out, In> at the layer index named above does not cover the shards: Out x In must "
                "equal tensor_parallel's shard count (all named above)");
  static_assert(Split != split_kind::grid || (Neurons >= OutParts && Inputs >= InParts),
                "f2d2n: by_grid<Out, In> at the layer index named above has more parts than the layer has neurons "
                "(Out) or input features (In)");
  static constexpr bool ok = (Split != split_kind::outputs || Neurons >= Shards) &&
                             (Split != split_kind::inputs || Inputs >= Shards) &&
                             (Split != split_kind::grid || (OutParts * InParts == Shards && Neurons >= OutParts &&
                                                            Inputs >= InParts));
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

}  // namespace f2d2n
