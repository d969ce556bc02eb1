// f2d2n/train/distributed_network.hpp: one processing unit's part of a plan (plan/distribute.hpp),
// over any transport. It has the calls of network<...> that the trainer uses, so
//
//   using plan = nn::distribute<mlp, nn::data_parallel<2>, nn::tensor_parallel<2>>;
//   nn::tcp_transport t(config.rank, config.peers, plan::fingerprint);
//   nn::distributed_network<plan, nn::tcp_transport> net(t, /*seed=*/1);
//   nn::trainer train(net, nn::adam{});   // every unit calls fit with the same data and options
//   train.fit(data, options);
//
// trains the unit's partition. Every unit gets the whole batch and computes its replica's share of
// the rows (balanced split), micro-batch by micro-batch under the pipeline's schedule. Split layers
// communicate among the units of one stage of one replica; stages pass activations forward and
// gradients back to their neighbours; gradients are summed among the replicas (the units with the
// same stage and shard). Every message is one of the plan's schema (plan/messages.hpp): it
// carries the schema's id and the unit's step counter, so a unit out of step with the others gets
// a protocol_error, never wrong numbers.
//
// What a split layer does on unit (a, b) of its grid (by_outputs: S x 1, by_inputs: 1 x S,
// by_grid<Out, In>), with y = x W^T + b over a batch's rows:
//   forward    y_a = sum over the grid's row of x_b W_ab^T, + b_a;   y = all_gather over the column
//   backward   dW_ab = dy_a^T x_b, db_a = sum dy_a;   dx_b = sum over the column of dy_a W_ab;
//              dx = all_gather over the row
// A collective over a group of one unit sends nothing, and in a chain (by_outputs into by_inputs,
// plan::chained) the units keep their blocks instead of gathering. Layers without weights and
// replicated layers run as in the serial network. The loss is computed on every unit of the last
// stage, on the whole logits; its gradient is scaled by rows / batch so that the sum over the
// replicas is the serial mean. The step's loss and correct count travel at the front of the
// gradient all-reduce's buffer (after a 2-value all-reduce among the stages: only the last stage
// knows them).
#pragma once

#include <f2d2n/plan/distribute.hpp>
#include <f2d2n/train/distributed_options.hpp>
#include <f2d2n/train/processing_unit.hpp>
#include <f2d2n/train/trainer.hpp>
#include <f2d2n/transport/concept.hpp>

#include <cstddef>
#include <cstdint>

namespace f2d2n {

/// One unit's partition of Plan in scalar type Scalar, communicating over Transport: a
/// processing_unit<Transport, Scalar> built from the plan (see the top of this file), with the
/// calls of network<...> that the trainer uses. The work is done by the plan-independent
/// processing_unit, so that many plans cost little compile time. (The plan's own checks run when
/// Plan is first used; a failed one is the only error.)
template <plan_type Plan, transport Transport, class Scalar = float>
class distributed_network : public processing_unit<Transport, Scalar> {
  using unit_type = processing_unit<Transport, Scalar>;

 public:
  using plan = Plan;
  using sequence = typename Plan::model;
  using scalar = Scalar;
  static constexpr std::size_t layer_count = sequence::size;
  static constexpr std::size_t input_size = sequence::input_size;
  static constexpr std::size_t output_size = sequence::output_size;

  /// This unit's partition of the model, initialised from `seed` with exactly the serial model's
  /// values for its part. Throws configuration_error when the transport's world size or
  /// fingerprint is not the plan's.
  explicit distributed_network(Transport& t, std::uint64_t seed = 0, distributed_options options = {})
      : unit_type(t, detail::describe_unit<Plan, Scalar>(detail::check_transport<Plan>(t).rank()), options) {
    unit_type::initialize(seed);
  }
};

/// trainer(unit, options) trains the unit as a processing_unit: one trainer type (and one
/// instantiation of fit) per transport and scalar serves every plan.
template <class Plan, class Transport, class Scalar, class Options>
trainer(distributed_network<Plan, Transport, Scalar>&, Options) -> trainer<processing_unit<Transport, Scalar>, Options>;

}  // namespace f2d2n
