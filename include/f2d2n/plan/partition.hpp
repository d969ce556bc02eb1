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
  /// A spatially split layer (split == spatial; the grid is out_parts x in_parts rows and columns
  /// of units, this unit at (out_index, in_index)): its block of the output map, rows [out_row,
  /// out_row + out_rows) and columns [out_col, out_col + out_cols), every channel; and the window
  /// of the input map those outputs read, clipped to the map, with the zero padding above and left
  /// of it. sharded_input / sharded_output then say that the input arrives as / the output stays in
  /// blocks (a spatial layer of the same stage before / after it).
  std::size_t out_row = 0, out_rows = 0, out_col = 0, out_cols = 0;
  std::size_t in_row = 0, in_rows = 0, in_col = 0, in_cols = 0;
  std::size_t pad_top = 0, pad_left = 0;
  std::size_t parameter_count = 0;   ///< this unit's parameters of the layer (0 when not held)
  std::size_t parameter_offset = 0;  ///< where they start in the unit's flat parameter buffer
  friend constexpr bool operator==(const layer_partition&, const layer_partition&) = default;
};

/// A block of rows [Row, Row + Rows) and columns [Col, Col + Cols) of Layer's output map (spatial<R, C>).
template <class Layer, std::size_t Row, std::size_t Rows, std::size_t Col, std::size_t Cols>
struct spatial_block {
  using layer = Layer;
  static constexpr std::size_t row = Row, rows = Rows, col = Col, cols = Cols;
};

/// Output channels [Begin, End) of a convolution (split_layer<I, by_outputs> on a conv2d): those
/// rows of its weights and their biases.
template <class Layer, std::size_t Begin, std::size_t End>
struct channel_shard {
  using layer = Layer;
  static constexpr std::size_t channel_begin = Begin, channel_end = End;
};

/// Input channels [Begin, End) of a convolution (split_layer<I, by_inputs> on a conv2d): for each
/// of the kernel's taps, those columns of its weights; every bias.
template <class Layer, std::size_t Begin, std::size_t End>
struct channel_input_shard {
  using layer = Layer;
  static constexpr std::size_t input_channel_begin = Begin, input_channel_end = End;
};

/// A rectangle of a feature map's cells (every channel): rows [row, row + rows), columns [col, col + cols).
struct map_region {
  std::size_t row = 0, rows = 0, col = 0, cols = 0;
  [[nodiscard]] constexpr std::size_t cells() const noexcept { return rows * cols; }
  [[nodiscard]] constexpr bool empty() const noexcept { return rows == 0 || cols == 0; }
  friend constexpr bool operator==(const map_region&, const map_region&) = default;
};
/// The cells two regions share (empty when none).
[[nodiscard]] constexpr map_region overlap(const map_region& a, const map_region& b) noexcept {
  const std::size_t r0 = a.row > b.row ? a.row : b.row, c0 = a.col > b.col ? a.col : b.col;
  const std::size_t r1 = a.row + a.rows < b.row + b.rows ? a.row + a.rows : b.row + b.rows;
  const std::size_t c1 = a.col + a.cols < b.col + b.cols ? a.col + a.cols : b.col + b.cols;
  if (r1 <= r0 || c1 <= c0) return {};
  return {r0, r1 - r0, c0, c1 - c0};
}

/// How far a unit's input window reaches past the block of the input map it holds, each side (in
/// cells; negative: cells of its block its window does not read): the halo of a spatially split layer.
struct halo_extent {
  std::ptrdiff_t top = 0, bottom = 0, left = 0, right = 0;
  friend constexpr bool operator==(const halo_extent&, const halo_extent&) = default;
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
