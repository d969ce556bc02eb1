// f2d2n/train/impl/processing_unit.hpp: a unit's passes through its stage (forward and backward of a
// micro-batch, of its layers) and its parameters' places in the serial layout (initialise,
// export, import); declared in train/processing_unit.hpp.
#pragma once

#include <f2d2n/train/processing_unit.hpp>

namespace f2d2n {

template <transport Transport, class Scalar>
void processing_unit<Transport, Scalar>::initialize(std::uint64_t seed) {
  seed_ = seed;
  for (std::size_t i = 0; i < d_.layers.size(); ++i) {
    const auto& l = d_.layers[i];
    if (!l.part.held || l.part.parameter_count == 0) continue;
    auto w = layer_parameters(i);
    if (split(l.part)) {
      // The serial layer's values (drawn by their place in its weight matrix) for each block held.
      const double limit = l.limit(l.fan_in, l.fan_out);
      l.for_each_weight_block([&](std::size_t r0, std::size_t rows, std::size_t c0, std::size_t cols, std::size_t at) {
        for (std::size_t j = 0; j < rows; ++j)
          for (std::size_t c = 0; c < cols; ++c)
            w[at + j * cols + c] =
                static_cast<Scalar>(limit * random_symmetric(seed, i, (r0 + j) * l.weight_columns + c0 + c));
      });
      std::fill(w.end() - static_cast<std::ptrdiff_t>(l.part.count), w.end(), Scalar(0));
    } else if (l.ops.initialize) {
      l.ops.initialize(w, l.in, seed, i);
    }
  }
}

template <transport Transport, class Scalar>
template <class F>
void processing_unit<Transport, Scalar>::for_each_piece(std::size_t serial_size, F f) const {
  if (serial_size != d_.serial_parameters)
    throw configuration_error("f2d2n: a serial parameter buffer of this model has " +
                              std::to_string(d_.serial_parameters) + " values, not " + std::to_string(serial_size));
  for (const auto& l : d_.layers) {
    const auto& p = l.part;
    if (!p.held || p.parameter_count == 0) continue;
    const std::size_t at = l.serial_offset, local = p.parameter_offset;
    if (split(p)) {
      const std::size_t width = l.weight_columns;
      l.for_each_weight_block([&](std::size_t r0, std::size_t rows, std::size_t c0, std::size_t cols, std::size_t o) {
        if (cols == width) {
          f(at + r0 * width, local + o, rows * width);  // whole rows of W: one piece
        } else {
          for (std::size_t j = 0; j < rows; ++j) f(at + (r0 + j) * width + c0, local + o + j * cols, cols);
        }
      });
      f(at + l.weight_rows * width + p.begin, local + p.parameter_count - p.count, p.count);  // the rows' biases
    } else {
      f(at, local, p.parameter_count);
    }
  }
}

template <transport Transport, class Scalar>
void processing_unit<Transport, Scalar>::forward_micro(const_matrix_ref<Scalar> x, std::span<const std::int32_t> labels,
                                                       const share& sh, std::size_t m, bool training) {
  const Eigen::Index rows = training ? sh.micro_rows : sh.rows;
  const Eigen::Index first_row = sh.first + static_cast<Eigen::Index>(m) * rows;
  const bool first_stage = d_.coordinates.stage == 0, last_stage = d_.coordinates.stage + 1 == d_.stages;
  if (!first_stage) {
    ensure(inputs_[m], rows, d_.layers[d_.first].in);
    const auto& msg = message({message_kind::activation, false, d_.first, m}, d_.layers[d_.first].in, 2);
    {
      const detail::stopwatch timing(times_.wait);
      receive_tensor(rt_, msg.peer, msg.id, step_,
                     std::span<Scalar>(inputs_[m].data(), static_cast<std::size_t>(inputs_[m].size())),
                     clock::now() + options_.timeout);
    }
  }
  const_matrix_ref<Scalar> in =
      first_stage ? const_matrix_ref<Scalar>(x.middleRows(first_row, rows)) : const_matrix_ref<Scalar>(inputs_[m]);
  set_rows(sh.origin + static_cast<Eigen::Index>(m) * rows);
  forward(m, in);
  const auto out = acts_[m][d_.end - 1].topRows(rows);
  if (!last_stage) {
    const auto& msg = message({message_kind::activation, false, d_.end, m}, d_.layers[d_.end].in, 2);
    const detail::stopwatch timing(times_.communication);
    send_tensor(rt_, msg.peer, msg.id, step_, std::span<const Scalar>(out.data(), static_cast<std::size_t>(out.size())),
                clock::now() + options_.timeout);
    return;
  }
  const auto my_labels = labels.subspan(static_cast<std::size_t>(first_row), static_cast<std::size_t>(rows));
  ensure(dlogits_[m], rows, d_.output_size);
  const Scalar loss = d_.loss(out, my_labels, dlogits_[m]);
  loss_sum_ += static_cast<double>(loss) * static_cast<double>(rows);
  correct_ += detail::count_correct<Scalar>(out, my_labels);
  if (training)
    dlogits_[m] *= static_cast<Scalar>(rows) / static_cast<Scalar>(sh.batch);  // replicas' sum = serial mean
}

template <transport Transport, class Scalar>
void processing_unit<Transport, Scalar>::backward_micro(const_matrix_ref<Scalar> x, const share& sh, std::size_t m) {
  const Eigen::Index rows = sh.micro_rows;
  const Eigen::Index first_row = sh.first + static_cast<Eigen::Index>(m) * rows;
  const bool first_stage = d_.coordinates.stage == 0, last_stage = d_.coordinates.stage + 1 == d_.stages;
  auto dy = gradient_buffer(0, rows, d_.layers[d_.end - 1].part.output_width);
  if (last_stage) {
    dy = dlogits_[m];
  } else {
    const auto& msg = message({message_kind::gradient, true, d_.end, m}, d_.layers[d_.end].in, 2);
    const detail::stopwatch timing(times_.wait);
    receive_tensor(rt_, msg.peer, msg.id, step_, std::span<Scalar>(dy.data(), static_cast<std::size_t>(dy.size())),
                   clock::now() + options_.timeout);
  }
  set_rows(sh.origin + static_cast<Eigen::Index>(m) * rows);
  const std::size_t last_buffer = backward(m,
                                           first_stage ? const_matrix_ref<Scalar>(x.middleRows(first_row, rows))
                                                       : const_matrix_ref<Scalar>(inputs_[m]),
                                           rows);
  if (!first_stage) {
    const auto dx = gradient_buffer(last_buffer, rows, d_.layers[d_.first].in);
    const auto& msg = message({message_kind::gradient, true, d_.first, m}, d_.layers[d_.first].in, 2);
    const detail::stopwatch timing(times_.communication);
    send_tensor(rt_, msg.peer, msg.id, step_, std::span<const Scalar>(dx.data(), static_cast<std::size_t>(dx.size())),
                clock::now() + options_.timeout);
  }
}

template <transport Transport, class Scalar>
void processing_unit<Transport, Scalar>::forward(std::size_t m, const_matrix_ref<Scalar> stage_input) {
  const Eigen::Index rows = stage_input.rows();
  for (std::size_t i = d_.first; i < d_.end; ++i) {
    const auto& l = d_.layers[i];
    const auto& p = l.part;
    const Scalar* w = params_.data() + p.parameter_offset;
    const auto in = input_of(m, i, stage_input);
    if (p.split == split_kind::spatial) {
      forward_spatial(m, i, in, rows);
      continue;
    }
    auto y = output(m, i, rows);
    if (l.convolution && p.split == split_kind::inputs) {
      forward_input_channels(m, i, in, y);
    } else if (l.convolution && split(p)) {
      forward_channels(m, i, in, y);
    } else if (split(p)) {
      // y_a = sum over the row's units of x_b W_ab^T, + b_a; then y = the column's blocks, gathered
      // (in a chain this unit keeps its block y_a). A chained input is this unit's columns only.
      const auto rows_n = static_cast<Eigen::Index>(p.count), cols = static_cast<Eigen::Index>(p.input_count);
      const auto x = in.middleCols(p.sharded_input ? 0 : static_cast<Eigen::Index>(p.input_begin), cols);
      const_matrix_map<Scalar> ws(w, rows_n, cols);
      Eigen::Map<const vector<Scalar>> b(w + p.count * p.input_count, rows_n);
      if (p.sharded_output) {
        kernel::multiply<Scalar>(workspaces_[i], kernel::form::nt, x, ws, y);
        sum_over(l.row_group, y, {message_kind::all_reduce, false, i, m});
        y.rowwise() += b.transpose();
      } else {
        const auto blocks = gather_buffer(static_cast<std::size_t>(rows) * l.out);
        matrix_map<Scalar> mine(blocks.data() + p.begin * static_cast<std::size_t>(rows), rows, rows_n);
        kernel::multiply<Scalar>(workspaces_[i], kernel::form::nt, x, ws, mine);
        sum_over(l.row_group, mine, {message_kind::all_reduce, false, i, m});
        mine.rowwise() += b.transpose();
        gather_columns(blocks, rows, l.out, y, l.column_group, p.out_index, {message_kind::all_gather, false, i, m});
      }
    } else {
      l.ops.forward(workspaces_[i], w, in, y);
    }
  }
}

template <transport Transport, class Scalar>
std::size_t processing_unit<Transport, Scalar>::backward(std::size_t m, const_matrix_ref<Scalar> stage_input,
                                                         Eigen::Index rows) {
  std::size_t current = 0;
  for (std::size_t i = d_.end - 1; i >= d_.first; --i) {
    const auto& l = d_.layers[i];
    const auto& p = l.part;
    const Scalar* w = params_.data() + p.parameter_offset;
    // Micro-batches add up their gradients: the kernels write theirs into scratch first.
    if (accumulate_ && scratch_.size() < p.parameter_count) scratch_.resize(p.parameter_count);
    Scalar* g = accumulate_ ? scratch_.data() : grads_.data() + d_.header + p.parameter_offset;
    auto dy = gradient_buffer(current, rows, p.output_width);
    auto dx = gradient_buffer(1 - current, rows, p.input_width);
    const bool want_dx = i > 1;
    const auto in = input_of(m, i, stage_input);
    if (p.split == split_kind::spatial) {
      backward_spatial(m, i, g, dy, dx, want_dx);
    } else if (l.convolution && p.split == split_kind::inputs) {
      backward_input_channels(i, g, in, dy, dx, want_dx, m);
    } else if (l.convolution && split(p)) {
      backward_channels(i, g, in, dy, dx, want_dx, m);
    } else if (split(p)) {
      // dW_ab = dy_a^T x_b, db_a = sum dy_a; dx_b = sum over the column's units of dy_a W_ab; then
      // dx = the row's blocks, gathered.
      const auto rows_n = static_cast<Eigen::Index>(p.count), cols = static_cast<Eigen::Index>(p.input_count);
      const auto dys = dy.middleCols(p.sharded_output ? 0 : static_cast<Eigen::Index>(p.begin), rows_n);
      const_matrix_map<Scalar> ws(w, rows_n, cols);
      matrix_map<Scalar> dws(g, rows_n, cols);
      Eigen::Map<vector<Scalar>> db(g + p.count * p.input_count, rows_n);
      kernel::multiply<Scalar>(workspaces_[i], kernel::form::tn, dys,
                               in.middleCols(p.sharded_input ? 0 : static_cast<Eigen::Index>(p.input_begin), cols), dws);
      detail::dense_kernels::bias_gradient(dys, db);
      if (want_dx && p.sharded_input) {  // the chain's units keep their own columns of dx
        kernel::multiply<Scalar>(workspaces_[i], kernel::form::nn, dys, ws, dx);
        sum_over(l.column_group, dx, {message_kind::all_reduce, true, i, m});
      } else if (want_dx) {
        const auto blocks = gather_buffer(static_cast<std::size_t>(rows) * l.in);
        matrix_map<Scalar> mine(blocks.data() + p.input_begin * static_cast<std::size_t>(rows), rows, cols);
        kernel::multiply<Scalar>(workspaces_[i], kernel::form::nn, dys, ws, mine);
        sum_over(l.column_group, mine, {message_kind::all_reduce, true, i, m});
        gather_columns(blocks, rows, l.in, dx, l.row_group, p.in_index, {message_kind::all_gather, true, i, m});
      }
    } else {
      l.ops.backward(workspaces_[i], w, g, in, acts_[m][i].topRows(rows), dy, dx, want_dx);
    }
    if (accumulate_) {
      Scalar* to = grads_.data() + d_.header + p.parameter_offset;
      for (std::size_t k = 0; k < p.parameter_count; ++k) to[k] += g[k];
    }
    // A spatially split layer's copies of the weights each saw one block: their sum is the gradient.
    if (last_backward_ && p.split == split_kind::spatial && p.parameter_count > 0)
      sum_over(d_.tensor_group,
               matrix_map<Scalar>(grads_.data() + d_.header + p.parameter_offset, 1,
                                  static_cast<Eigen::Index>(p.parameter_count)),
               {message_kind::weight_gradient, true, i, 0});
    // This layer's gradients are final: start the buckets that close here.
    while (last_backward_ && next_bucket_ + 1 < d_.buckets.size() && d_.buckets[next_bucket_].layer == i) post_bucket();
    current = 1 - current;
    if (i == d_.first) break;
  }
  return current;
}

template <transport Transport, class Scalar>
void processing_unit<Transport, Scalar>::copy_cells(const Scalar* from, const map_region& from_region, Scalar* to,
                                                    const map_region& to_region, const map_region& cells,
                                                    std::size_t channels, Eigen::Index rows, bool add) {
  if (cells.empty()) return;
  const std::size_t from_width = from_region.cells() * channels, to_width = to_region.cells() * channels;
  const std::size_t run = cells.cols * channels;
  for (Eigen::Index n = 0; n < rows; ++n)
    for (std::size_t r = cells.row; r < cells.row + cells.rows; ++r) {
      const Scalar* a = from + static_cast<std::size_t>(n) * from_width +
                        ((r - from_region.row) * from_region.cols + (cells.col - from_region.col)) * channels;
      Scalar* b = to + static_cast<std::size_t>(n) * to_width +
                  ((r - to_region.row) * to_region.cols + (cells.col - to_region.col)) * channels;
      if (add)
        for (std::size_t k = 0; k < run; ++k) b[k] += a[k];
      else
        std::copy_n(a, run, b);
    }
}

template <transport Transport, class Scalar>
void processing_unit<Transport, Scalar>::exchange_halo(const detail::halo_transfer& t, const detail::message_key& key,
                                                       std::size_t send_columns, std::size_t receive_columns) {
  const bool sends = !t.send.empty(), receives = !t.receive.empty();
  // Both directions are in the plan's schema (the id is one; the peer and width tell them apart).
  if (sends) (void)d_.schema.find(key, send_columns, t.peer);
  if (receives) (void)d_.schema.find(key, receive_columns, t.peer);
  const std::uint32_t id = message_id(key.kind, key.backward, key.layer, key.index);
  const std::span<const Scalar> out(halo_out_.data(), static_cast<std::size_t>(halo_out_.rows()) * send_columns);
  const std::span<Scalar> in(halo_in_.data(), static_cast<std::size_t>(halo_in_.rows()) * receive_columns);
  const auto until = clock::now() + options_.timeout;
  const detail::stopwatch timing(times_.communication);
  if (sends && receives) exchange_tensor(rt_, t.peer, out, t.peer, in, id, step_, until);
  else if (sends) send_tensor(rt_, t.peer, id, step_, out, until);
  else if (receives) receive_tensor(rt_, t.peer, id, step_, in, until);
}

template <transport Transport, class Scalar>
void processing_unit<Transport, Scalar>::set_block(std::size_t i) {
  const auto& l = d_.layers[i];
  const auto& p = l.part;
  auto& c = workspaces_[i].context;
  const auto in = detail::image_of(l.in_shape), out = detail::image_of(l.out_shape);
  c.in = extents{{p.in_rows, p.in_cols, in.channels}, 3};
  c.out = extents{{p.out_rows, p.out_cols, out.channels}, 3};
  c.block = true;
  c.pad_top = p.pad_top;
  c.pad_left = p.pad_left;
  c.block_row = p.out_row;  // where the block stands in the whole map (dropout's element indices)
  c.block_col = p.out_col;
  c.map_width = out.width;
  c.columns = l.out;
}

template <transport Transport, class Scalar>
void processing_unit<Transport, Scalar>::forward_spatial(std::size_t m, std::size_t i, const_matrix_ref<Scalar> in,
                                                         Eigen::Index rows) {
  const auto& l = d_.layers[i];
  const auto& p = l.part;
  const std::size_t channels = detail::image_of(l.in_shape).channels, out_channels = detail::image_of(l.out_shape).channels;
  const map_region window{p.in_row, p.in_rows, p.in_col, p.in_cols}, block{p.out_row, p.out_rows, p.out_col, p.out_cols};
  auto& x = windows_[m][i];
  ensure(x, rows, window.cells() * channels);
  if (!p.sharded_input) {  // the whole map is here: take the window
    const auto whole = detail::image_of(l.in_shape);
    copy_cells(in.data(), {0, whole.height, 0, whole.width}, x.data(), window, window, channels, rows, false);
  } else {  // this unit's block, and the halo from the units that hold the rest of the window
    copy_cells(in.data(), l.owned_input, x.data(), window, overlap(l.owned_input, window), channels, rows, false);
    for (const auto& t : l.halo) {
      ensure(halo_out_, rows, t.send.cells() * channels);
      ensure(halo_in_, rows, t.receive.cells() * channels);
      copy_cells(in.data(), l.owned_input, halo_out_.data(), t.send, t.send, channels, rows, false);
      exchange_halo(t, {message_kind::halo, false, i, m}, t.send.cells() * channels, t.receive.cells() * channels);
      copy_cells(halo_in_.data(), t.receive, x.data(), window, t.receive, channels, rows, false);
    }
  }
  set_block(i);
  const Scalar* w = params_.data() + p.parameter_offset;
  if (p.sharded_output) {
    l.ops.forward(workspaces_[i], w, x, output(m, i, rows));
    return;
  }
  // The next layer needs the whole map: the blocks, each in place in a zero map, summed over the grid.
  auto& b = blocks_[m][i];
  ensure(b, rows, block.cells() * out_channels);
  l.ops.forward(workspaces_[i], w, x, b);
  auto y = output(m, i, rows);
  y.setZero();
  const auto whole = detail::image_of(l.out_shape);
  copy_cells(b.data(), block, y.data(), {0, whole.height, 0, whole.width}, block, out_channels, rows, false);
  sum_over(d_.tensor_group, y, {message_kind::all_gather, false, i, m});
}

template <transport Transport, class Scalar>
void processing_unit<Transport, Scalar>::backward_spatial(std::size_t m, std::size_t i, Scalar* g,
                                                          const_matrix_ref<Scalar> dy, matrix_ref<Scalar> dx,
                                                          bool want_dx) {
  const auto& l = d_.layers[i];
  const auto& p = l.part;
  const std::size_t channels = detail::image_of(l.in_shape).channels, out_channels = detail::image_of(l.out_shape).channels;
  const map_region window{p.in_row, p.in_rows, p.in_col, p.in_cols}, block{p.out_row, p.out_rows, p.out_col, p.out_cols};
  const auto& x = windows_[m][i];
  const Eigen::Index rows = x.rows();
  set_block(i);
  const Scalar* w = params_.data() + p.parameter_offset;
  ensure(window_grad_, rows, want_dx ? window.cells() * channels : 0);
  if (p.sharded_output) {
    l.ops.backward(workspaces_[i], w, g, x, acts_[m][i].topRows(rows), dy, window_grad_, want_dx);
  } else {  // this unit's block of the whole map's gradient (the same on every unit)
    ensure(block_grad_, rows, block.cells() * out_channels);
    const auto whole = detail::image_of(l.out_shape);
    copy_cells(dy.data(), {0, whole.height, 0, whole.width}, block_grad_.data(), block, block, out_channels, rows, false);
    l.ops.backward(workspaces_[i], w, g, x, blocks_[m][i], block_grad_, window_grad_, want_dx);
  }
  if (!want_dx) return;
  dx.setZero();
  if (!p.sharded_input) {  // every unit took its window of the whole input: their gradients add up
    const auto whole = detail::image_of(l.in_shape);
    copy_cells(window_grad_.data(), window, dx.data(), {0, whole.height, 0, whole.width}, window, channels, rows, true);
    sum_over(d_.tensor_group, dx, {message_kind::all_reduce, true, i, m});
    return;
  }
  // The halo's adjoint: the gradient of the cells read from a neighbour goes back to it, and the
  // gradient of this unit's cells read by its neighbours comes back and adds up here.
  copy_cells(window_grad_.data(), window, dx.data(), l.owned_input, overlap(l.owned_input, window), channels, rows,
             true);
  for (const auto& t : l.halo) {
    ensure(halo_out_, rows, t.receive.cells() * channels);
    ensure(halo_in_, rows, t.send.cells() * channels);
    copy_cells(window_grad_.data(), window, halo_out_.data(), t.receive, t.receive, channels, rows, false);
    const detail::halo_transfer back{t.peer, t.receive, t.send};
    exchange_halo(back, {message_kind::halo, true, i, m}, t.receive.cells() * channels, t.send.cells() * channels);
    copy_cells(halo_in_.data(), t.send, dx.data(), l.owned_input, t.send, channels, rows, true);
  }
}

template <transport Transport, class Scalar>
void processing_unit<Transport, Scalar>::forward_channels(std::size_t m, std::size_t i, const_matrix_ref<Scalar> in,
                                                          matrix_ref<Scalar> y) {
  const auto& l = d_.layers[i];
  const auto& p = l.part;
  const auto o = detail::image_of(l.out_shape);
  const Eigen::Index rows = in.rows();
  const auto cells = static_cast<Eigen::Index>(o.height * o.width);
  // The channel blocks, shard after shard, each (rows x cells) x its channels: this unit's in place.
  const auto blocks = gather_buffer(static_cast<std::size_t>(rows * cells) * o.channels);
  matrix_map<Scalar> mine(blocks.data() + p.begin * static_cast<std::size_t>(rows * cells), rows,
                          cells * static_cast<Eigen::Index>(p.count));
  l.ops.forward(workspaces_[i], params_.data() + p.parameter_offset, in, mine);
  gather_columns(blocks, rows * cells, o.channels, matrix_map<Scalar>(y.data(), rows * cells, static_cast<Eigen::Index>(o.channels)),
                 l.column_group, p.out_index, {message_kind::all_gather, false, i, m});
}

template <transport Transport, class Scalar>
void processing_unit<Transport, Scalar>::backward_channels(std::size_t i, Scalar* g, const_matrix_ref<Scalar> in,
                                                           const_matrix_ref<Scalar> dy, matrix_ref<Scalar> dx,
                                                           bool want_dx, std::size_t m) {
  const auto& l = d_.layers[i];
  const auto& p = l.part;
  const auto o = detail::image_of(l.out_shape);
  const Eigen::Index rows = in.rows();
  const auto cells = static_cast<Eigen::Index>(o.height * o.width);
  // This unit's channels of every pixel's gradient, contiguous as its kernels read them.
  take_channels(dy.data(), rows, cells, o.channels, p.begin, p.count, block_grad_);
  l.ops.backward(workspaces_[i], params_.data() + p.parameter_offset, g, in, block_grad_, block_grad_, dx, want_dx);
  if (want_dx) sum_over(l.column_group, dx, {message_kind::all_reduce, true, i, m});
}

template <transport Transport, class Scalar>
void processing_unit<Transport, Scalar>::take_channels(const Scalar* from, Eigen::Index rows, Eigen::Index cells,
                                                       std::size_t channels, std::size_t begin, std::size_t count,
                                                       matrix<Scalar>& to) {
  ensure(to, rows, static_cast<std::size_t>(cells) * count);
  matrix_map<Scalar>(to.data(), rows * cells, static_cast<Eigen::Index>(count)) =
      const_matrix_map<Scalar>(from, rows * cells, static_cast<Eigen::Index>(channels))
          .middleCols(static_cast<Eigen::Index>(begin), static_cast<Eigen::Index>(count));
}

template <transport Transport, class Scalar>
const Scalar* processing_unit<Transport, Scalar>::pack_input_channels(std::size_t i) {
  const auto& l = d_.layers[i];
  const auto& p = l.part;
  const std::size_t outs = p.count, mine = p.input_count, taps = l.taps, weights = outs * taps * mine;
  if (packed_.size() < p.parameter_count) packed_.resize(p.parameter_count);
  const Scalar* w = params_.data() + p.parameter_offset;
  for (std::size_t t = 0; t < taps; ++t)  // stored: tap t's block (outs x mine); packed: row o, columns t x mine
    for (std::size_t o = 0; o < outs; ++o)
      std::copy_n(w + (t * outs + o) * mine, mine, packed_.data() + o * taps * mine + t * mine);
  if (p.in_index == 0) std::copy_n(w + weights, outs, packed_.data() + weights);
  else std::fill_n(packed_.data() + weights, outs, Scalar(0));
  return packed_.data();
}

template <transport Transport, class Scalar>
void processing_unit<Transport, Scalar>::unpack_input_channels(std::size_t i, const Scalar* packed, Scalar* g) const {
  const auto& l = d_.layers[i];
  const auto& p = l.part;
  const std::size_t outs = p.count, mine = p.input_count, taps = l.taps, weights = outs * taps * mine;
  for (std::size_t t = 0; t < taps; ++t)
    for (std::size_t o = 0; o < outs; ++o)
      std::copy_n(packed + o * taps * mine + t * mine, mine, g + (t * outs + o) * mine);
  std::copy_n(packed + weights, outs, g + weights);  // every unit's bias gradient: the whole sum of dy
}

template <transport Transport, class Scalar>
void processing_unit<Transport, Scalar>::forward_input_channels(std::size_t m, std::size_t i,
                                                                const_matrix_ref<Scalar> in, matrix_ref<Scalar> y) {
  const auto& l = d_.layers[i];
  const auto im = detail::image_of(l.in_shape);
  take_channels(in.data(), in.rows(), static_cast<Eigen::Index>(im.height * im.width), im.channels, l.part.input_begin,
                l.part.input_count, channel_input_);
  l.ops.forward(workspaces_[i], pack_input_channels(i), channel_input_, y);
  sum_over(l.row_group, y, {message_kind::all_reduce, false, i, m});
}

template <transport Transport, class Scalar>
void processing_unit<Transport, Scalar>::backward_input_channels(std::size_t i, Scalar* g, const_matrix_ref<Scalar> in,
                                                                 const_matrix_ref<Scalar> dy, matrix_ref<Scalar> dx,
                                                                 bool want_dx, std::size_t m) {
  const auto& l = d_.layers[i];
  const auto& p = l.part;
  const auto im = detail::image_of(l.in_shape);
  const Eigen::Index rows = in.rows();
  const auto pixels = rows * static_cast<Eigen::Index>(im.height * im.width);
  take_channels(in.data(), rows, static_cast<Eigen::Index>(im.height * im.width), im.channels, p.input_begin,
                p.input_count, channel_input_);
  const Scalar* w = pack_input_channels(i);
  if (packed_grad_.size() < p.parameter_count) packed_grad_.resize(p.parameter_count);
  // The gradient of this unit's channels, in its place among the shards' blocks for the gather.
  const auto blocks = gather_buffer(static_cast<std::size_t>(pixels) * im.channels);
  matrix_map<Scalar> mine(blocks.data() + p.input_begin * static_cast<std::size_t>(pixels), rows,
                          static_cast<Eigen::Index>(im.height * im.width * p.input_count));
  l.ops.backward(workspaces_[i], w, packed_grad_.data(), channel_input_, dy, dy, mine, want_dx);
  unpack_input_channels(i, packed_grad_.data(), g);
  if (want_dx)
    gather_columns(blocks, pixels, im.channels,
                   matrix_map<Scalar>(dx.data(), pixels, static_cast<Eigen::Index>(im.channels)), l.row_group,
                   p.in_index, {message_kind::all_gather, true, i, m});
}

}  // namespace f2d2n
