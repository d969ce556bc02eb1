// f2d2n/plan/partition.hpp: what a plan says of one unit, as values and types: its coordinates
// and each layer's partition on it (the messages of its step are in plan/messages.hpp).
#pragma once

#include <f2d2n/core/unit.hpp>
#include <f2d2n/plan/messages.hpp>
#include <f2d2n/plan/policies.hpp>

#include <cstddef>
#include <cstdint>

namespace f2d2n {

/// Where a unit stands in the plan.
struct unit_coordinates {
  std::size_t replica = 0;  ///< which copy of the model (data_parallel)
  std::size_t stage = 0;    ///< which group of consecutive layers (pipeline)
  std::size_t shard = 0;    ///< which block of every split layer (tensor_parallel)
  friend constexpr bool operator==(const unit_coordinates&, const unit_coordinates&) = default;
};

/// One layer as one unit holds it. A split layer is a grid of out_parts x in_parts blocks of W
/// (by_outputs: S x 1, by_inputs: 1 x S); this unit holds block (out_index, in_index): neurons
/// [begin, begin + count) and input features [input_begin, input_begin + input_count).
struct layer_partition {
  bool held = false;  ///< the layer is in this unit's stage
  split_kind split = split_kind::none;
  std::size_t out_parts = 1, in_parts = 1, out_index = 0, in_index = 0;
  std::size_t begin = 0;        ///< first neuron held here
  std::size_t count = 0;        ///< neurons held here (the whole layer's when not split by neurons)
  std::size_t input_begin = 0;  ///< first input feature held here
  std::size_t input_count = 0;  ///< input features held here
  /// The layer's output stays in blocks (this unit keeps its own columns, nothing is gathered):
  /// a by_outputs layer chained into a by_inputs one, and the element-wise layers between them.
  bool sharded_output = false;
  /// The layer's input arrives in blocks (the end of such a chain, or an element-wise layer in it).
  bool sharded_input = false;
  std::size_t output_width = 0;      ///< this unit's columns of the layer's output
  std::size_t input_width = 0;       ///< this unit's columns of the layer's input
  std::size_t parameter_count = 0;   ///< this unit's parameters of the layer (0 when not held)
  std::size_t parameter_offset = 0;  ///< where they start in the unit's flat parameter buffer
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
/// Neurons [RowBegin, RowEnd) by input features [ColBegin, ColEnd) of a dense layer, and the
/// neurons' biases (by_grid).
template <std::size_t RowBegin, std::size_t RowEnd, std::size_t ColBegin, std::size_t ColEnd>
struct dense_block {
  static constexpr std::size_t neuron_begin = RowBegin, neuron_end = RowEnd, input_begin = ColBegin, input_end = ColEnd;
  static constexpr std::size_t parameter_count = (RowEnd - RowBegin) * (ColEnd - ColBegin) + (RowEnd - RowBegin);
};

}  // namespace f2d2n
