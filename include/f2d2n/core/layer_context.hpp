// f2d2n/core/layer_context.hpp: what the owner of a layer (a network, or a processing unit) tells
// the layer's kernels besides their operands: the shape of the block of one sample they compute,
// and the training step (for layers that draw random numbers, such as dropout).
#pragma once

#include <f2d2n/core/shape.hpp>

#include <cstddef>
#include <cstdint>

namespace f2d2n {

/// Set by the layer's owner before each pass; kernels only read it. A network sets the whole
/// layer's extents; a processing unit that holds a block of a feature map (a spatial partition)
/// sets its block's, the zero padding that block has on its top and left (the padding of the
/// whole map where the block touches its border, none inside), and its place in the map.
struct layer_context {
  extents in{}, out{};  ///< one sample's input (with any halo rows and columns) and output, as this owner holds them
  bool block = false;   ///< the owner set pad_top / pad_left (a block of a map); otherwise the layer's own padding
  std::size_t pad_top = 0, pad_left = 0;  ///< zero rows above and zero columns left of the block's input
  std::size_t layer = 0;                  ///< the layer's index in its sequential
  std::uint64_t seed = 0;                 ///< the network's seed (the one its weights were drawn from)
  std::uint64_t step = 0;                 ///< training steps taken before this one
  std::size_t row_offset = 0;  ///< the batch row of the first row the kernels see (data parallelism, micro-batches)
  std::size_t column_offset = 0;   ///< the whole layer's feature of the first column the kernels see
  std::size_t columns = 0;         ///< features of one sample of the whole layer's output (0: the kernels' width)
  bool training = false;           ///< a training step (dropout drops), not an evaluation
  /// A block of a feature map (spatial plans): its first output row and column in the whole map,
  /// and the whole map's width in cells (0: not a block of a map); `columns` is then the whole
  /// map's values per sample.
  std::size_t block_row = 0, block_col = 0, map_width = 0;
};

}  // namespace f2d2n
