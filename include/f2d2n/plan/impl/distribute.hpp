// f2d2n/plan/impl/distribute.hpp: what plan/distribute.hpp declares and computes from a unit's
// partitions: its spatial blocks, windows and halos, activation bytes, gradient buckets, and the
// message schema of its step (for_each_message, for_each_received).
#pragma once

#include <f2d2n/plan/distribute.hpp>

namespace f2d2n {

template <class Net, class... Policies>
constexpr void distribute<Net, Policies...>::spatial_block_of(layer_partition& p, std::size_t i, std::size_t s) {
  constexpr std::size_t rows = spatial_policy::rows, cols = spatial_policy::cols;
  const auto in = detail::image_of(Net::input_extents[i]), out = detail::image_of(Net::output_extents[i]);
  p.out_parts = rows;
  p.in_parts = cols;
  p.out_index = s / cols;
  p.in_index = s % cols;
  p.out_row = part_begin(out.height, rows, p.out_index);
  p.out_rows = part_size(out.height, rows, p.out_index);
  p.out_col = part_begin(out.width, cols, p.in_index);
  p.out_cols = part_size(out.width, cols, p.in_index);
  const auto& w = windows_[i];
  // The window's first and one-past-last input cell along one dimension (padding cells counted
  // as negative or past the map), clipped to the map, and the padding cells before it.
  auto reach = [](std::size_t first_out, std::size_t outs, std::size_t k, std::size_t stride, std::size_t pad,
                  std::size_t n, std::size_t& begin, std::size_t& count, std::size_t& padding) {
    const auto first = static_cast<std::ptrdiff_t>(first_out * stride) - static_cast<std::ptrdiff_t>(pad);
    const auto last = static_cast<std::ptrdiff_t>((first_out + outs - 1) * stride + k) - static_cast<std::ptrdiff_t>(pad);
    const std::ptrdiff_t lo = first < 0 ? 0 : first;
    const std::ptrdiff_t hi = last > static_cast<std::ptrdiff_t>(n) ? static_cast<std::ptrdiff_t>(n) : last;
    begin = static_cast<std::size_t>(lo);
    count = hi > lo ? static_cast<std::size_t>(hi - lo) : 0;
    padding = static_cast<std::size_t>(lo - first);
  };
  if (w.windowed) {
    reach(p.out_row, p.out_rows, w.kh, w.sh, w.ph, in.height, p.in_row, p.in_rows, p.pad_top);
    reach(p.out_col, p.out_cols, w.kw, w.sw, w.pw, in.width, p.in_col, p.in_cols, p.pad_left);
  } else {
    p.in_row = p.out_row;
    p.in_rows = p.out_rows;
    p.in_col = p.out_col;
    p.in_cols = p.out_cols;
  }
  p.sharded_input = i > 1 && spatial_layers[i - 1] && stage_of_layer(i - 1) == stage_of_layer(i);
  p.sharded_output = i + 2 < layer_count && spatial_layers[i + 1] && stage_of_layer(i + 1) == stage_of_layer(i);
  if (p.sharded_output) p.output_width = p.out_rows * p.out_cols * out.channels;
  if (p.sharded_input)
    p.input_width = part_size(in.height, rows, p.out_index) * part_size(in.width, cols, p.in_index) * in.channels;
}

template <class Net, class... Policies>
constexpr map_region distribute<Net, Policies...>::owned_input_of(std::size_t rank, std::size_t i) noexcept {
  const auto p = partition_of(rank, i);
  const auto in = detail::image_of(Net::input_extents[i]);
  return {part_begin(in.height, p.out_parts, p.out_index), part_size(in.height, p.out_parts, p.out_index),
          part_begin(in.width, p.in_parts, p.in_index), part_size(in.width, p.in_parts, p.in_index)};
}

template <class Net, class... Policies>
constexpr map_region distribute<Net, Policies...>::window_of(std::size_t rank, std::size_t i) noexcept {
  const auto p = partition_of(rank, i);
  return {p.in_row, p.in_rows, p.in_col, p.in_cols};
}

template <class Net, class... Policies>
constexpr halo_extent distribute<Net, Policies...>::halo_of(std::size_t rank, std::size_t i) noexcept {
  const auto o = owned_input_of(rank, i), w = window_of(rank, i);
  auto d = [](std::size_t a, std::size_t b) { return static_cast<std::ptrdiff_t>(a) - static_cast<std::ptrdiff_t>(b); };
  return {d(o.row, w.row), d(w.row + w.rows, o.row + o.rows), d(o.col, w.col), d(w.col + w.cols, o.col + o.cols)};
}

template <class Net, class... Policies>
template <class Scalar>
constexpr std::size_t distribute<Net, Policies...>::activation_bytes_of(std::size_t rank, std::size_t batch) noexcept {
  const auto c = coordinates_of(rank);
  std::size_t width = c.stage > 0 ? Net::input_extents[stage_begin[c.stage]].size() : 0;
  for (std::size_t i = stage_begin[c.stage]; i < stage_begin[c.stage + 1]; ++i)
    width += partition_of(rank, i).output_width;
  return rows_of(rank, batch) * width * sizeof(Scalar);
}

template <class Net, class... Policies>
template <class F>
constexpr void distribute<Net, Policies...>::for_each_gradient_bucket(std::size_t rank, F&& f) {
  std::size_t end = gradient_offset + parameter_count_of(rank);
  if (bucket_elements > 0 && replicas > 1)
    for (std::size_t i = layer_count - 1; i > 0; --i) {
      const auto p = partition_of(rank, i);
      if (!p.held || p.parameter_count == 0) continue;
      const std::size_t begin = gradient_offset + p.parameter_offset;
      if (end - begin >= bucket_elements) {
        f(i, begin, end - begin);
        end = begin;
      }
    }
  f(std::size_t{0}, std::size_t{0}, end);
}

template <class Net, class... Policies>
template <class F>
constexpr void distribute<Net, Policies...>::for_each_message(std::size_t rank, std::size_t batch, F&& f) {
  const auto c = coordinates_of(rank);
  const std::size_t m = microbatch_count, rows = rows_of(rank, batch) / m;  // rows per micro-batch
  const std::size_t first = stage_begin[c.stage], end = stage_begin[c.stage + 1];
  auto message = [&](message_kind kind, bool backward, std::size_t layer, std::size_t index, std::size_t r,
                     std::size_t columns, std::size_t group, unit_id peer, std::size_t sent) {
    if (group > 1)
      f(step_message{kind, backward, layer, index, r, columns, group, peer, sent,
                     message_id(kind, backward, layer, index)});
  };
  for (std::size_t mb = 0; mb < m; ++mb) {
    const std::size_t in_first = Net::input_extents[first].size();
    if (c.stage > 0)  // the gradient of this stage's input, back to the stage before
      message(message_kind::gradient, true, first, mb, rows, in_first, 2, rank_of({c.replica, c.stage - 1, c.shard}),
              rows * in_first);
    if (c.stage + 1 < stages)  // the activation entering the next stage's first layer
      message(message_kind::activation, false, end, mb, rows, Net::input_extents[end].size(), 2,
              rank_of({c.replica, c.stage + 1, c.shard}), rows * Net::input_extents[end].size());
    for (std::size_t i = first; i < end; ++i) {
      const std::size_t in = Net::input_extents[i].size(), out = Net::output_extents[i].size();
      const auto p = partition_of(rank, i);
      if (p.split == split_kind::spatial) {
        // The halo to the units whose windows read cells of this unit's block (forward), the
        // halo's gradient back to the units whose cells this unit's window read (backward).
        const std::size_t g = shards, me = c.shard, channels = detail::image_of(Net::input_extents[i]).channels;
        auto halo = [&](bool backward) {
          for (std::size_t v = 0; v < g; ++v) {
            if (v == me) continue;
            const auto peer = rank_of({c.replica, c.stage, v});
            const auto cells = backward ? overlap(window_of(rank, i), owned_input_of(peer, i))
                                        : overlap(owned_input_of(rank, i), window_of(peer, i));
            if (!cells.empty())
              message(message_kind::halo, backward, i, mb, rows, cells.cells() * channels, 2, peer,
                      rows * cells.cells() * channels);
          }
        };
        if (p.sharded_input) halo(false);
        // The blocks gathered whole where the next layer is not spatial (a sum of zero-padded blocks).
        if (!p.sharded_output)
          message(message_kind::all_gather, false, i, mb, rows, out, g, 0, all_reduce_sends(rows * out, g, me));
        if (i > 1) {
          if (p.sharded_input) halo(true);
          else  // the input was whole on every unit: the windows' gradients summed
            message(message_kind::all_reduce, true, i, mb, rows, in, g, 0, all_reduce_sends(rows * in, g, me));
        }
        if (mb + 1 == m && p.parameter_count > 0)
          message(message_kind::weight_gradient, true, i, 0, 1, p.parameter_count, g, 0,
                  all_reduce_sends(p.parameter_count, g, me));
        continue;
      }
      if (conv_layers[i] && p.split == split_kind::outputs) {
        // Output channels over the shards: the channel blocks of every pixel gathered; backward,
        // the shards' partial input gradients summed.
        const auto o = detail::image_of(Net::output_extents[i]);
        const std::size_t cells = o.height * o.width;
        message(message_kind::all_gather, false, i, mb, rows * cells, o.channels, p.out_parts, 0,
                all_gather_sends(o.channels, p.out_parts, p.out_index, rows * cells));
        if (i > 1)
          message(message_kind::all_reduce, true, i, mb, rows, in, p.out_parts, 0,
                  all_reduce_sends(rows * in, p.out_parts, p.out_index));
        continue;
      }
      if (conv_layers[i] && p.split == split_kind::inputs) {
        // Input channels over the shards: the partial outputs summed; backward, the shards' blocks
        // of input channels of every pixel gathered.
        const auto im = detail::image_of(Net::input_extents[i]);
        message(message_kind::all_reduce, false, i, mb, rows, out, p.in_parts, 0,
                all_reduce_sends(rows * out, p.in_parts, p.in_index));
        if (i > 1)
          message(message_kind::all_gather, true, i, mb, rows * im.height * im.width, im.channels, p.in_parts, 0,
                  all_gather_sends(im.channels, p.in_parts, p.in_index, rows * im.height * im.width));
        continue;
      }
      if (p.split != split_kind::outputs && p.split != split_kind::inputs && p.split != split_kind::grid) continue;
      // forward: sum the partial outputs over the grid's row, gather the neurons' blocks over its column
      message(message_kind::all_reduce, false, i, mb, rows, p.count, p.in_parts, 0,
              all_reduce_sends(rows * p.count, p.in_parts, p.in_index));
      if (!p.sharded_output)
        message(message_kind::all_gather, false, i, mb, rows, out, p.out_parts, 0,
                all_gather_sends(out, p.out_parts, p.out_index, rows));
      if (i > 1) {  // backward: sum the partial input gradients over the column, gather over the row
        message(message_kind::all_reduce, true, i, mb, rows, p.input_count, p.out_parts, 0,
                all_reduce_sends(rows * p.input_count, p.out_parts, p.out_index));
        if (!p.sharded_input)
          message(message_kind::all_gather, true, i, mb, rows, in, p.in_parts, 0,
                  all_gather_sends(in, p.in_parts, p.in_index, rows));
      }
    }
  }
  message(message_kind::statistics, true, 0, 0, 1, 2, stages, 0, all_reduce_sends(2, stages, c.stage));
  std::size_t bucket = 0;
  for_each_gradient_bucket(rank, [&](std::size_t first_layer, std::size_t, std::size_t size) {
    message(message_kind::gradients, true, first_layer, bucket++, 1, size, replicas, 0,
            all_reduce_sends(size, replicas, c.replica));
  });
}

template <class Net, class... Policies>
template <class F>
constexpr void distribute<Net, Policies...>::for_each_received(std::size_t rank, std::size_t batch, F&& f) {
  const auto c = coordinates_of(rank);
  auto from = [&](std::size_t stage) {
    const unit_id sender = rank_of({c.replica, stage, c.shard});
    for_each_message(sender, batch, [&](step_message msg) {
      if ((msg.kind != message_kind::activation && msg.kind != message_kind::gradient) || msg.peer != rank) return;
      msg.peer = sender;
      f(msg);
    });
  };
  if (c.stage > 0) from(c.stage - 1);
  if (c.stage + 1 < stages) from(c.stage + 1);
  if constexpr (has_spatial)  // the halos the other units of the grid send to this one
    for (std::size_t v = 0; v < shards; ++v) {
      if (v == c.shard) continue;
      const unit_id sender = rank_of({c.replica, c.stage, v});
      for_each_message(sender, batch, [&](step_message msg) {
        if (msg.kind != message_kind::halo || msg.peer != rank) return;
        msg.peer = sender;
        f(msg);
      });
    }
}

template <class Net, class... Policies>
constexpr std::size_t distribute<Net, Policies...>::message_count(std::size_t rank, std::size_t batch) noexcept {
  std::size_t n = 0;
  for_each_message(rank, batch, [&](const step_message&) { ++n; });
  return n;
}

template <class Net, class... Policies>
template <class Scalar>
constexpr std::size_t distribute<Net, Policies...>::bytes_sent_per_step(std::size_t rank, std::size_t batch) noexcept {
  std::size_t elements = 0;
  for_each_message(rank, batch, [&](const step_message& msg) { elements += msg.sent; });
  return elements * sizeof(Scalar);
}
}  // namespace f2d2n
