// f2d2n/plan/detail/checks.hpp: the compile-time checks of a plan (plan_check::, each a
// static_assert whose instantiation line names in words what is wrong), the pipeline schedule's
// simulation, and how distribute<...> finds its policies.
#pragma once

#include <f2d2n/plan/messages.hpp>
#include <f2d2n/plan/policies.hpp>

#include <f2d2n/core/partition.hpp>
#include <f2d2n/core/unit.hpp>
#include <f2d2n/model/conv.hpp>
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

/// Layers [1, counts.size() - 1) in stages.size() - 1 contiguous stages, the largest stage's
/// parameter count as small as it can be, each stage as full as that bound allows: greedy packing
/// under a bound is exact for contiguous groups, and the smallest bound is found by bisection.
/// Writes stage k's first layer to stages[k] (stages[last] = the loss layer).
template <std::size_t Layers, std::size_t StagesPlusOne>
constexpr void balanced_stages(const std::array<std::size_t, Layers>& counts,
                               std::array<std::size_t, StagesPlusOne>& stages) {
  constexpr std::size_t n = StagesPlusOne - 1;
  auto pack = [&](std::size_t bound, std::array<std::size_t, StagesPlusOne>& out) {
    std::size_t i = 1;
    for (std::size_t k = 0; k < n; ++k) {
      out[k] = i;
      const std::size_t must_leave = n - k - 1;  // layers the later stages need
      std::size_t sum = 0, taken = 0;
      while (i < Layers - 1 && Layers - 1 - i > must_leave) {
        if (sum + counts[i] > bound) break;
        sum += counts[i];
        ++taken;
        ++i;
      }
      if (taken == 0) return false;
    }
    out[n] = Layers - 1;
    return i == Layers - 1;
  };
  std::size_t lo = 0, hi = 0;
  for (auto c : counts) hi += c;
  std::array<std::size_t, StagesPlusOne> tmp{};
  while (lo < hi) {
    const std::size_t mid = lo + (hi - lo) / 2;
    if (pack(mid, tmp)) hi = mid;
    else lo = mid + 1;
  }
  pack(lo, stages);
}

/// Always true: static_assert(evaluated<X>) makes the compiler evaluate X (and the checks in it).
template <bool>
inline constexpr bool evaluated = true;

/// The policy of a kind (its tag) in the list, or the default when there is none.
template <class Policies, class Tag, class Default>
using policy_or =
    boost::mp11::mp_eval_if_c<boost::mp11::mp_count_if_q<Policies, is_a_q<Tag>>::value == 0, Default,
                              boost::mp11::mp_at, Policies, boost::mp11::mp_find_if_q<Policies, is_a_q<Tag>>>;

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

}  // namespace detail

/// The checks of a plan. Each is a class template whose arguments say in words what it checks
/// (layer<3>, shards<4>, neurons<2>, ...): a failed check's instantiation line names them, and
/// its static_assert says what is wrong and what to do. distribute<...> runs them all on any use
/// of the plan; each failure is one error, with no follow-on errors from the plan.
namespace plan_check {
template <std::size_t N>
struct layer {};
template <std::size_t N>
struct layers {};
template <std::size_t N>
struct shards {};
template <std::size_t N>
struct neurons {};
template <std::size_t N>
struct input_features {};
template <std::size_t Out, std::size_t In>
struct grid {};
template <std::size_t N>
struct stages {};
template <std::size_t N>
struct hidden_layers {};
template <std::size_t N>
struct micro_batches {};
template <std::size_t N>
struct stage_starts_named {};
template <std::size_t Height, std::size_t Width>
struct output_map {};
struct with_weights {};
struct without_weights {};
struct with_feature_maps {};
struct without_feature_maps {};
struct increasing_within_the_model {};
struct not_increasing_within_the_model {};

/// A dense layer split over the shards of tensor_parallel.
template <class Layer, split_kind Split, class Shards, class Neurons, class Inputs, class Grid>
struct dense_split;
template <std::size_t I, split_kind Split, std::size_t S, std::size_t N, std::size_t In, std::size_t Out, std::size_t P>
struct dense_split<layer<I>, Split, shards<S>, neurons<N>, input_features<In>, grid<Out, P>> {
  static_assert(Split != split_kind::outputs || N >= S,
                "f2d2n: tensor_parallel splits this dense layer by_outputs into more shards than it has neurons "
                "(layer, shards and neurons named above): use fewer shards, or split_layer<index, by_inputs> or "
                "split_layer<index, replicated> for this layer");
  static_assert(Split != split_kind::inputs || In >= S,
                "f2d2n: tensor_parallel splits this dense layer by_inputs into more shards than it has input "
                "features (layer, shards and input features named above): use fewer shards, or another split for "
                "this layer");
  static_assert(Split != split_kind::grid || Out * P == S,
                "f2d2n: by_grid<Out, In> at this layer does not cover the shards: Out x In (the grid named above) "
                "must equal tensor_parallel's shards");
  static_assert(Split != split_kind::grid || Out * P != S || (N >= Out && In >= P),
                "f2d2n: by_grid<Out, In> at this layer has more parts than the layer has neurons (Out) or input "
                "features (In), all named above");
  static constexpr bool ok = (Split != split_kind::outputs || N >= S) && (Split != split_kind::inputs || In >= S) &&
                             (Split != split_kind::grid || (Out * P == S && N >= Out && In >= P));
};

/// A layer of a feature map split over spatial<R, C>'s grid.
template <class Layer, class Grid, class Map>
struct spatial_split;
template <std::size_t I, std::size_t R, std::size_t C, std::size_t H, std::size_t W>
struct spatial_split<layer<I>, grid<R, C>, output_map<H, W>> {
  static_assert(H >= R && W >= C,
                "f2d2n: spatial<Rows, Cols> gives this layer's output map (layer, grid and map named above) to more "
                "rows or columns of units than it has rows or columns of cells: every unit needs a block; use a "
                "smaller grid");
  static constexpr bool ok = H >= R && W >= C;
};

/// spatial<R, C> against tensor_parallel's shards (0: no tensor_parallel) and the model.
template <class Shards, class Grid, class Maps>
struct spatial_policy;
template <std::size_t S, std::size_t R, std::size_t C, class Maps>
struct spatial_policy<shards<S>, grid<R, C>, Maps> {
  static_assert(S == 0 || S == R * C,
                "f2d2n: spatial<Rows, Cols> and tensor_parallel<S> share the units of a stage: S must equal "
                "Rows x Cols (both named above)");
  static_assert(std::is_same_v<Maps, with_feature_maps>,
                "f2d2n: spatial<Rows, Cols> names a model without a convolution, pooling layer or feature map to "
                "split (grid named above)");
  static constexpr bool ok = (S == 0 || S == R * C) && std::is_same_v<Maps, with_feature_maps>;
};

/// A convolution split over the shards of tensor_parallel (split_layer<I, by_outputs> or
/// split_layer<I, by_inputs>).
template <std::size_t N>
struct channels {};
template <std::size_t N>
struct input_channels {};
template <class Layer, split_kind Split, class Shards, class Channels, class InputChannels>
struct conv_split;
template <std::size_t I, split_kind Split, std::size_t S, std::size_t C, std::size_t Cin>
struct conv_split<layer<I>, Split, shards<S>, channels<C>, input_channels<Cin>> {
  static_assert(Split != split_kind::grid,
                "f2d2n: a convolution splits by_outputs (blocks of output channels), by_inputs (blocks of input "
                "channels) or stays replicated; by_grid is not built for convolutions (layer named above)");
  static_assert(Split != split_kind::outputs || C >= S,
                "f2d2n: tensor_parallel splits this convolution by_outputs into more shards than it has output "
                "channels (layer, shards and channels named above)");
  static_assert(Split != split_kind::inputs || Cin >= S,
                "f2d2n: tensor_parallel splits this convolution by_inputs into more shards than it has input "
                "channels (layer, shards and input channels named above)");
  static constexpr bool ok = Split != split_kind::grid && (Split != split_kind::outputs || C >= S) &&
                             (Split != split_kind::inputs || Cin >= S);
};

/// A split_layer<index, ...> override of tensor_parallel, against the model.
template <class Layer, class Layers, class Weights>
struct split_override;
template <std::size_t I, std::size_t L, class Weights>
struct split_override<layer<I>, layers<L>, Weights> {
  static_assert(I < L,
                "f2d2n: split_layer<index, ...> names a layer past the end of the model (layer and the "
                "model's layers named above)");
  static_assert(I >= L || std::is_same_v<Weights, with_weights>,
                "f2d2n: split_layer<index, ...> names a layer without weights (named above): only dense layers and "
                "convolutions can be split");
  static constexpr bool ok = I < L && std::is_same_v<Weights, with_weights>;
};

/// The stages of a pipeline, against the model's hidden layers.
template <class Stages, class Hidden>
struct pipeline_stages;
template <std::size_t P, std::size_t H>
struct pipeline_stages<stages<P>, hidden_layers<H>> {
  static_assert(P <= H,
                "f2d2n: pipeline<stages, ...> has more stages than the model has hidden layers (both named "
                "above): every stage needs at least one layer");
  static constexpr bool ok = P <= H;
};

/// A pipeline placed by hand: stage_starts<...> against the stages and the model.
template <class Stages, class Starts, class Order>
struct pipeline_stage_starts;
template <std::size_t P, std::size_t N, class Order>
struct pipeline_stage_starts<stages<P>, stage_starts_named<N>, Order> {
  static_assert(N + 1 == P,
                "f2d2n: stage_starts<...> must name where each stage after the first begins: one layer "
                "index per stage but the first (stages and indices named above)");
  static_assert(N + 1 != P || std::is_same_v<Order, increasing_within_the_model>,
                "f2d2n: stage_starts<...> must be increasing layer indices between 2 and the last hidden layer, so "
                "that every stage has at least one layer");
  static constexpr bool ok = N + 1 == P && std::is_same_v<Order, increasing_within_the_model>;
};

/// A pipeline schedule (gpipe or one_f_one_b) at its stages and micro-batches.
template <class Schedule, class Stages, class Microbatches>
struct pipeline_schedule;
template <class Schedule, std::size_t P, std::size_t M>
struct pipeline_schedule<Schedule, stages<P>, micro_batches<M>> {
  static constexpr bool ok = detail::schedule_completes(Schedule::id, P, M);
  static_assert(ok,
                "f2d2n: this pipeline schedule (schedule, stages and micro-batches named above) would deadlock "
                "or leave a message unreceived");
};

/// What a message id can hold (plan/messages.hpp): the model's layers and the micro-batches.
template <class Layers, class Microbatches>
struct message_fields;
template <std::size_t L, std::size_t M>
struct message_fields<layers<L>, micro_batches<M>> {
  static_assert(L <= max_message_layers,
                "f2d2n: a distributed model has at most 2048 layers (its message ids hold "
                "11 bits of layer; the model's layers named above)");
  static_assert(M <= max_message_index,
                "f2d2n: a pipeline has at most 65536 micro-batches (its message ids hold 16 "
                "bits of index; named above)");
  static constexpr bool ok = L <= max_message_layers && M <= max_message_index;
};
}  // namespace plan_check

}  // namespace f2d2n
