// f2d2n/train/processing_unit.hpp: one processing unit of any plan over a transport: what the
// trainer trains and checkpoints see (distributed_network<Plan, ...> is one, built from its
// plan; see train/distributed_network.hpp for what it does). Its passes through a stage are in
// train/impl/processing_unit.hpp.
#pragma once

#include <f2d2n/core/random.hpp>
#include <f2d2n/train/detail/bucket_summer.hpp>
#include <f2d2n/train/detail/unit_description.hpp>
#include <f2d2n/train/distributed_options.hpp>
#include <f2d2n/train/flight_recorder.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace f2d2n {

/// One unit's part of a plan, in scalar type Scalar over Transport: its forward, backward,
/// initialisation and collectives, run from the plan-independent description of the unit
/// (detail::unit_description), so that every plan over one transport and scalar shares one
/// instantiation of it (and of the trainer that trains it).
///
/// A step (compute_gradients, evaluate_batch, agree) that fails once it has begun exchanging
/// messages shuts the transport down with the reason (shutdown_after) before it rethrows: the
/// cluster cannot go on with half a step, and the peers learn at once which unit failed first and
/// why. A batch refused before the step begins (a configuration_error: wrong shape, labels out of
/// range, too few rows) leaves the transport as it is.
template <transport Transport, class Scalar>
class processing_unit {
  static_assert(std::is_floating_point_v<Scalar>,
                "f2d2n: a processing unit (distributed_network<plan, transport, Scalar>) needs a floating-point "
                "Scalar (float or double)");

 public:
  using scalar = Scalar;

  processing_unit(Transport& t, detail::unit_description<Scalar> d, distributed_options options)
      : t_(t), d_(std::move(d)), options_(options),
        recorder_(t.rank(), unit_name(t.rank(), d_), options.flight_records), rt_(t, recorder_), acts_(d_.microbatches),
        inputs_(d_.microbatches), dlogits_(d_.microbatches) {
    for (auto& a : acts_) a.resize(d_.layers.size());
    windows_.resize(d_.microbatches);
    blocks_.resize(d_.microbatches);
    for (auto& w : windows_) w.resize(d_.layers.size());
    for (auto& b : blocks_) b.resize(d_.layers.size());
    workspaces_.resize(d_.layers.size());
    for (std::size_t i = 0; i < d_.layers.size(); ++i) {
      const auto& l = d_.layers[i];
      auto& c = workspaces_[i].context;
      c.in = l.in_shape;
      c.out = l.out_shape;
      c.layer = i;
      // A convolution split by channels computes its block of output channels / reads its block of
      // input channels of every pixel.
      if (l.convolution && l.part.split == split_kind::outputs) {
        const auto o = detail::image_of(l.out_shape);
        c.out = extents{{o.height, o.width, l.part.count}, 3};
      } else if (l.convolution && l.part.split == split_kind::inputs) {
        const auto im = detail::image_of(l.in_shape);
        c.in = extents{{im.height, im.width, l.part.input_count}, 3};
      }
      // A layer inside a chain of sharded columns (an element-wise layer between a by_outputs and a
      // by_inputs layer) sees this unit's columns of the whole layer's.
      if (!split(l.part) && l.part.split != split_kind::spatial && l.part.output_width != l.out) {
        c.columns = l.out;
        c.column_offset = part_begin(l.out, d_.tensor_group.size(), d_.coordinates.shard);
      }
    }
    params_.assign(d_.parameters, Scalar(0));
    grads_.assign(d_.header + d_.parameters, Scalar(0));  // the step's loss and correct count, padding, the gradients
    if (options_.overlap && d_.replicas > 1 && d_.buckets.size() > 1) summer_.emplace(rt_, d_.data_group);
  }
  processing_unit(const processing_unit&) = delete;
  processing_unit& operator=(const processing_unit&) = delete;

  [[nodiscard]] unit_id rank() const noexcept { return t_.rank(); }
  [[nodiscard]] unit_coordinates coordinates() const noexcept { return d_.coordinates; }
  /// Features of a sample and classes of the model (what the trainer checks data against).
  [[nodiscard]] std::size_t features() const noexcept { return d_.input_size; }
  [[nodiscard]] std::size_t classes() const noexcept { return d_.output_size; }
  [[nodiscard]] std::size_t parameter_count() const noexcept { return params_.size(); }
  [[nodiscard]] std::span<Scalar> parameters() noexcept { return params_; }
  [[nodiscard]] std::span<const Scalar> parameters() const noexcept { return params_; }
  [[nodiscard]] std::span<Scalar> gradients() noexcept { return std::span<Scalar>(grads_).subspan(d_.header); }
  [[nodiscard]] std::span<const Scalar> gradients() const noexcept {
    return std::span<const Scalar>(grads_).subspan(d_.header);
  }
  /// Where this unit's time in compute_gradients went since the last call (communication and wait;
  /// the trainer counts the rest of the step as compute), and starts counting again.
  time_split take_time_split() noexcept { return std::exchange(times_, time_split{}); }

  /// Steps (training and evaluation) this unit has taken part in: the step of its next frames.
  [[nodiscard]] std::uint64_t steps() const noexcept { return step_; }

  /// Training steps (compute_gradients calls) since construction or set_training_steps: what keys
  /// the random numbers of layers such as dropout, as network<...>::training_steps() does.
  [[nodiscard]] std::uint64_t training_steps() const noexcept { return training_steps_; }
  void set_training_steps(std::uint64_t steps) noexcept { training_steps_ = steps; }

  /// How errors and the flight recorder name this unit: "unit 3 (replica 1, stage 0, shard 1)".
  [[nodiscard]] std::string name() const { return unit_name(t_.rank(), d_); }

  /// This unit's last communication operations (train/flight_recorder.hpp): what a timeout_error
  /// carries and print_flight_recorder_on prints.
  [[nodiscard]] const flight_recorder& recorder() const noexcept { return recorder_; }

  /// What this unit runs: its layers' partitions, its groups, its model and plan.
  [[nodiscard]] const detail::unit_description<Scalar>& description() const noexcept { return d_; }

  /// Sums `values` over every unit of the cluster (how the units of a checkpoint agree that all
  /// wrote their part). Every unit must call it together, as a step of its own.
  void agree(std::span<double> values) {
    group everyone;
    for (std::size_t r = 0; r < d_.world_size; ++r) everyone.units.push_back(static_cast<unit_id>(r));
    if (everyone.size() > 1) {
      try {
        all_reduce(rt_, everyone, values, call(message_id(message_kind::agreement, false, 0, 0)));
      } catch (...) {
        shut_down_after_failure();
        throw;
      }
    }
    ++step_;
  }

  /// Re-initialises this unit's parameters: the serial network's values for its part.
  void initialize(std::uint64_t seed);


  /// Writes this unit's parameters into their places in a buffer laid out as the serial
  /// network's (network<model>::parameters()); the rest of `serial` is left as it is.
  void export_parameters(std::span<Scalar> serial) const {
    for_each_piece(serial.size(), [&](std::size_t at, std::size_t local, std::size_t n) {
      std::copy_n(params_.data() + local, n, serial.data() + at);
    });
  }
  /// Reads this unit's parameters from a buffer laid out as the serial network's.
  void import_parameters(std::span<const Scalar> serial) {
    for_each_piece(serial.size(), [&](std::size_t at, std::size_t local, std::size_t n) {
      std::copy_n(serial.data() + at, n, params_.data() + local);
    });
  }

  /// Forward, loss and backward for one batch (the whole batch; this unit computes its replica's
  /// rows, micro-batch by micro-batch under the plan's schedule); gradients() becomes this unit's
  /// part of d(mean loss)/d(params) over the whole batch. Returns the loss and correct predictions
  /// of the whole batch. Every unit must call it with the same batch.
  batch_result compute_gradients(const_matrix_ref<Scalar> x, std::span<const std::int32_t> labels) {
    return step(x, labels, share_of(x, labels, true));
  }

  /// The rows of a batch of `batch` samples this unit computes, and whether it needs their samples
  /// (the first stage) and labels (the last stage).
  [[nodiscard]] batch_part part_of_batch(std::size_t batch) const {
    check_replicas(batch);
    const std::size_t replica = d_.coordinates.replica;
    return {batch, part_begin(batch, d_.replicas, replica), part_size(batch, d_.replicas, replica),
            d_.coordinates.stage == 0, d_.coordinates.stage + 1 == d_.stages};
  }

  /// compute_gradients given only this unit's part of the batch (part_of_batch): `x` holds the
  /// part's rows when part.samples, `labels` its labels when part.labels (both empty otherwise).
  batch_result compute_gradients(const_matrix_ref<Scalar> x, std::span<const std::int32_t> labels,
                                 const batch_part& part) {
    if (part != part_of_batch(part.batch))
      throw configuration_error("f2d2n: compute_gradients was given another unit's part of the batch");
    if (part.samples &&
        (static_cast<std::size_t>(x.rows()) != part.count || static_cast<std::size_t>(x.cols()) != d_.input_size))
      throw configuration_error("f2d2n: the part of the batch has " + std::to_string(x.rows()) + " x " +
                                std::to_string(x.cols()) + " samples, this unit needs " + std::to_string(part.count) +
                                " x " + std::to_string(d_.input_size));
    if (part.labels && labels.size() != part.count)
      throw configuration_error("f2d2n: the part of the batch has " + std::to_string(labels.size()) +
                                " labels, this unit needs " + std::to_string(part.count));
    check_labels(labels);
    return step(x, labels, share_of_part(part));
  }

 private:
  struct share;
  batch_result step(const_matrix_ref<Scalar> x, std::span<const std::int32_t> labels, const share& sh) {
    const std::size_t m = d_.microbatches;
    set_pass(true);
    ++training_steps_;
    accumulate_ = m > 1;
    if (accumulate_) std::fill(grads_.begin() + static_cast<std::ptrdiff_t>(d_.header), grads_.end(), Scalar(0));
    loss_sum_ = 0;
    correct_ = 0;
    next_bucket_ = 0;
    if (summer_) summer_->begin_step();
    const drain_on_exit drain{*this};  // no bucket outlives the step, even when it fails
    try {
      for (std::size_t k = 0; k < 2 * m; ++k) {
        const auto op = detail::schedule_op(d_.schedule, d_.stages, d_.coordinates.stage, m, k);
        last_backward_ = k + 1 == 2 * m;  // the gradients become final in the step's last backward
        if (op.forward) forward_micro(x, labels, sh, op.microbatch, true);
        else backward_micro(x, sh, op.microbatch);
      }
      grads_[0] = static_cast<Scalar>(loss_sum_);
      grads_[1] = static_cast<Scalar>(correct_);
      if (d_.stages > 1) {  // the loss is known on the last stage: every stage learns it
        const detail::stopwatch timing(times_.communication);
        all_reduce(rt_, d_.pipeline_group, std::span<Scalar>(grads_).first(2), call(statistics_id()));
      }
      while (next_bucket_ < d_.buckets.size()) post_bucket();  // the last one holds the loss and count
      {
        const detail::stopwatch timing(times_.communication);  // with overlap: the part the backward did not hide
        wait_for_buckets();
      }
    } catch (...) {
      shut_down_after_failure();  // before the drain: a bucket waiting on a peer ends at once
      throw;
    }
    check_sums(static_cast<double>(grads_[0]), static_cast<double>(grads_[1]), sh.batch, "training");
    ++step_;
    batch_result r;
    r.samples = static_cast<std::size_t>(sh.batch);
    r.loss = static_cast<double>(grads_[0]) / static_cast<double>(sh.batch);
    r.correct = static_cast<std::size_t>(grads_[1]);
    return r;
  }

  /// The batch's loss and correct count as the sums over the units gave them: a count that is not
  /// a whole number from 0 to the batch's samples, or a negative loss (every loss of the library
  /// is a mean of non-negative terms), cannot come from the units' own arithmetic: a corrupted or
  /// forged sum. A loss that is not finite is a diverging run or NaN in the data; the trainer
  /// reports it with its epoch and step.
  void check_sums(double loss_sum, double correct, Eigen::Index batch, const char* what) const {
    const auto n = static_cast<double>(batch);
    auto fail = [&](const char* statistic, double value, const std::string& expected) {
      throw numerical_error(statistic, value,
                            "f2d2n: " + name() + ", step " + std::to_string(step_) + ": the " + what + " batch's " +
                                statistic + " is " + detail::format_value(value) + " after the sum over the units, " +
                                expected + ": a peer sent a corrupted or forged sum");
    };
    if (!(correct >= 0 && correct <= n && correct == std::floor(correct)))
      fail("correct count", correct, "not a whole number from 0 to the batch's " + std::to_string(batch) + " samples");
    if (loss_sum < 0) fail("loss", loss_sum / n, "below 0 (the losses are never negative)");
  }

 public:
  /// Loss and correct predictions over one batch, without touching the gradients (the replica's
  /// rows pass the stages as one micro-batch). Every unit must call it with the same batch.
  batch_result evaluate_batch(const_matrix_ref<Scalar> x, std::span<const std::int32_t> labels) {
    const auto sh = share_of(x, labels, false);
    const time_split kept = times_;  // evaluation is not a training step's time
    set_pass(false);
    loss_sum_ = 0;
    correct_ = 0;
    std::array<double, 2> sums{};
    try {
      forward_micro(x, labels, sh, 0, false);
      sums = {loss_sum_, static_cast<double>(correct_)};
      if (d_.stages > 1) {
        const detail::stopwatch timing(times_.communication);
        all_reduce(rt_, d_.pipeline_group, std::span<double>(sums), call(statistics_id()));
      }
      {
        const detail::stopwatch timing(times_.communication);
        if (d_.data_group.size() > 1)
          all_reduce(rt_, d_.data_group, std::span<double>(sums),
                     call(message_id(message_kind::evaluation, false, 0, 0)));
      }
    } catch (...) {
      shut_down_after_failure();
      throw;
    }
    check_sums(sums[0], sums[1], sh.batch, "evaluated");
    ++step_;
    batch_result r;
    r.samples = static_cast<std::size_t>(sh.batch);
    r.loss = sums[0] / static_cast<double>(sh.batch);
    r.correct = static_cast<std::size_t>(sums[1]);
    times_ = kept;
    return r;
  }

 private:
  /// "unit 3 (replica 1, stage 0, shard 1)": how errors and the flight recorder name a unit.
  static std::string unit_name(unit_id rank, const detail::unit_description<Scalar>& d) {
    return "unit " + std::to_string(rank) + " (replica " + std::to_string(d.coordinates.replica) + ", stage " +
           std::to_string(d.coordinates.stage) + ", shard " + std::to_string(d.coordinates.shard) + ")";
  }

  /// The replica's rows of a batch, and how they split into micro-batches: `first` indexes the
  /// samples given, `origin` is the same row's place in the whole batch.
  struct share {
    Eigen::Index first, rows, batch, micro_rows, origin;
  };

  /// Tells every layer what pass comes: a training step (the count before it) or an evaluation.
  void set_pass(bool training) noexcept {
    for (auto& w : workspaces_) {
      w.context.training = training;
      w.context.step = training_steps_;
      w.context.seed = seed_;
    }
  }
  /// Tells every layer where the micro-batch's first row stands in the whole batch.
  void set_rows(Eigen::Index origin) noexcept {
    for (auto& w : workspaces_) w.context.row_offset = static_cast<std::size_t>(origin);
  }

  share share_of(const_matrix_ref<Scalar> x, std::span<const std::int32_t> labels, bool training) const {
    if (static_cast<std::size_t>(x.cols()) != d_.input_size)
      throw configuration_error("f2d2n: network input has " + std::to_string(x.cols()) +
                                " features per sample, the model expects " + std::to_string(d_.input_size));
    if (labels.size() != static_cast<std::size_t>(x.rows()))
      throw configuration_error("f2d2n: batch has " + std::to_string(x.rows()) + " samples but " +
                                std::to_string(labels.size()) + " labels");
    const auto batch = static_cast<std::size_t>(x.rows());
    check_replicas(batch);
    check_labels(labels);
    const std::size_t replica = d_.coordinates.replica, rows = part_size(batch, d_.replicas, replica);
    const std::size_t m = training ? d_.microbatches : 1;
    check_microbatches(batch, m);
    const auto first = static_cast<Eigen::Index>(part_begin(batch, d_.replicas, replica));
    return {first, static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(batch),
            static_cast<Eigen::Index>(rows / m), first};
  }

  /// The share of a part given alone: its rows start at 0.
  share share_of_part(const batch_part& part) const {
    check_microbatches(part.batch, d_.microbatches);
    return {0, static_cast<Eigen::Index>(part.count), static_cast<Eigen::Index>(part.batch),
            static_cast<Eigen::Index>(part.count / d_.microbatches), static_cast<Eigen::Index>(part.first)};
  }

  void check_labels(std::span<const std::int32_t> labels) const {
    for (auto l : labels)
      if (l < 0 || static_cast<std::size_t>(l) >= d_.output_size)
        throw configuration_error("f2d2n: label " + std::to_string(l) + " is outside the model's " +
                                  std::to_string(d_.output_size) + " outputs");
  }

  void check_replicas(std::size_t batch) const {
    if (batch < d_.replicas)
      throw configuration_error("f2d2n: data_parallel<" + std::to_string(d_.replicas) + "> needs at least " +
                                std::to_string(d_.replicas) + " samples per batch; this batch has " +
                                std::to_string(batch) +
                                " (an epoch's short last batch? set fit_options::drop_last to drop it)");
  }

  /// Every unit checks every replica's rows, so that all of them report the cause (not "peer has
  /// shut down" from the units of the replicas that could split theirs).
  void check_microbatches(std::size_t batch, std::size_t m) const {
    for (std::size_t replica = 0; replica < d_.replicas; ++replica) {
      const std::size_t rows = part_size(batch, d_.replicas, replica);
      if (rows % m != 0)
        throw configuration_error(
            "f2d2n: pipeline<..., microbatches<" + std::to_string(m) + ">> needs every replica's rows to split into " +
            std::to_string(m) + " equal micro-batches; a batch of " + std::to_string(batch) + " gives replica " +
            std::to_string(replica) + " " + std::to_string(rows) +
            " rows (if it is an epoch's short last batch, set fit_options::drop_last to drop it)");
    }
  }

  /// The schema's message for `k` over a group of `group_size` with rows of `columns` values.
  [[nodiscard]] const step_message& message(const detail::message_key& k, std::size_t columns,
                                            std::size_t group_size) const {
    return d_.schema.find(k, columns, group_size);
  }
  [[nodiscard]] std::uint32_t statistics_id() const {
    return message({message_kind::statistics, true, 0, 0}, 2, d_.stages).id;
  }

  [[nodiscard]] call_options call(std::uint32_t message) const {
    call_options c;
    c.message_id = message;
    c.step = step_;
    c.timeout = options_.timeout;
    c.chunk_bytes = options_.chunk_bytes;
    c.pipeline = options_.pipeline;
    return c;
  }

  std::span<Scalar> layer_parameters(std::size_t i) {
    return std::span<Scalar>(params_).subspan(d_.layers[i].part.parameter_offset, d_.layers[i].part.parameter_count);
  }

  /// Layer i's output for micro-batch m, `rows` rows (grown on demand, never shrunk).
  matrix_ref<Scalar> output(std::size_t m, std::size_t i, Eigen::Index rows) {
    auto& a = acts_[m][i];
    const auto cols = static_cast<Eigen::Index>(d_.layers[i].part.output_width);
    if (a.rows() < rows || a.cols() != cols) a.resize(rows, cols);
    return a.topRows(rows);
  }
  /// The input of layer i for micro-batch m: the stage's input for its first layer.
  const_matrix_ref<Scalar> input_of(std::size_t m, std::size_t i, const_matrix_ref<Scalar> stage_input) const {
    if (i == d_.first) return stage_input;
    return acts_[m][i - 1].topRows(stage_input.rows());
  }
  matrix_map<Scalar> gradient_buffer(std::size_t which, Eigen::Index rows, std::size_t cols) {
    auto& g = dgrad_[which];
    if (g.rows() < rows || static_cast<std::size_t>(g.cols()) < d_.max_width)
      g.resize(rows, static_cast<Eigen::Index>(d_.max_width));
    return matrix_map<Scalar>(g.data(), rows, static_cast<Eigen::Index>(cols));
  }
  /// Room for a whole rows x cols activation, stored shard after shard (all-gathers by blocks).
  std::span<Scalar> gather_buffer(std::size_t size) {
    if (gather_.size() < size) gather_.resize(size);
    return std::span<Scalar>(gather_).first(size);
  }
  static void ensure(matrix<Scalar>& a, Eigen::Index rows, std::size_t cols) {
    if (a.rows() != rows || static_cast<std::size_t>(a.cols()) != cols) a.resize(rows, static_cast<Eigen::Index>(cols));
  }

  /// A layer spread over units (by_outputs, by_inputs, by_grid: all blocks of a grid over W).
  static bool split(const layer_partition& p) {
    return p.split == split_kind::outputs || p.split == split_kind::inputs || p.split == split_kind::grid;
  }

  /// Gathers the column blocks of a rows x cols matrix over group g (member k's block holds part k
  /// of the columns; blocks are stored member after member, this unit's, number `me`, in place)
  /// into `out`.
  void gather_columns(std::span<Scalar> blocks, Eigen::Index rows, std::size_t cols, matrix_ref<Scalar> out,
                      const group& g, std::size_t me, const detail::message_key& key) {
    const std::size_t p = g.size(), r = static_cast<std::size_t>(rows);
    if (p > 1) {
      const auto mine = blocks.subspan(part_begin(cols, p, me) * r, part_size(cols, p, me) * r);
      const auto id = message(key, cols, p).id;
      const detail::stopwatch timing(times_.communication);
      all_gather(rt_, g, std::span<const Scalar>(mine), blocks, call(id), r);
    }
    for (std::size_t s = 0; s < p; ++s) {
      const auto b = static_cast<Eigen::Index>(part_begin(cols, p, s));
      const auto n = static_cast<Eigen::Index>(part_size(cols, p, s));
      out.middleCols(b, n) = const_matrix_map<Scalar>(blocks.data() + static_cast<std::size_t>(b) * r, rows, n);
    }
  }

  /// Sums a contiguous rows x cols block over group g (in place) when g has more than this unit.
  template <class Block>
  void sum_over(const group& g, Block&& m, const detail::message_key& key) {
    if (g.size() < 2) return;
    const auto id = message(key, static_cast<std::size_t>(m.cols()), g.size()).id;
    const detail::stopwatch timing(times_.communication);
    all_reduce(rt_, g, std::span<Scalar>(m.data(), static_cast<std::size_t>(m.size())), call(id));
  }

  /// Micro-batch m forward through this unit's stage: its input from the batch (first stage) or
  /// from the stage before; its output to the stage after, or into the loss (last stage).
  void forward_micro(const_matrix_ref<Scalar> x, std::span<const std::int32_t> labels, const share& sh, std::size_t m,
                     bool training);

  /// Micro-batch m backward through this unit's stage: the loss gradient (last stage) or the
  /// gradient from the stage after; the gradient of the stage's input to the stage before.
  void backward_micro(const_matrix_ref<Scalar> x, const share& sh, std::size_t m);

  void forward(std::size_t m, const_matrix_ref<Scalar> stage_input);

  /// A spatially split layer (plan: spatial<R, C>) forward: its input window (taken from the whole
  /// input, or this unit's block and the halo from its neighbours), its block of output, gathered
  /// whole where the next layer is not spatial.
  void forward_spatial(std::size_t m, std::size_t i, const_matrix_ref<Scalar> in, Eigen::Index rows);
  /// Its backward: the block's gradients, the window's gradient back to the units that hold its
  /// cells (the halo's adjoint) or summed over the grid (the whole input's); weight gradients are
  /// summed over the grid in the step's last backward pass (backward()).
  void backward_spatial(std::size_t m, std::size_t i, Scalar* g, const_matrix_ref<Scalar> dy, matrix_ref<Scalar> dx,
                        bool want_dx);
  /// Tells layer i's kernels the block they compute (spatial layers).
  void set_block(std::size_t i);

  /// A convolution split by output channels: this unit's channels of every pixel, gathered; and
  /// backward, its part of the input gradient, summed over the shards.
  void forward_channels(std::size_t m, std::size_t i, const_matrix_ref<Scalar> in, matrix_ref<Scalar> y);
  void backward_channels(std::size_t i, Scalar* g, const_matrix_ref<Scalar> in, const_matrix_ref<Scalar> dy,
                         matrix_ref<Scalar> dx, bool want_dx, std::size_t m);
  /// A convolution split by input channels: its partial output from this unit's channels, summed
  /// over the shards; backward, the gradient of its channels of every pixel, gathered.
  void forward_input_channels(std::size_t m, std::size_t i, const_matrix_ref<Scalar> in, matrix_ref<Scalar> y);
  void backward_input_channels(std::size_t i, Scalar* g, const_matrix_ref<Scalar> in, const_matrix_ref<Scalar> dy,
                               matrix_ref<Scalar> dx, bool want_dx, std::size_t m);
  /// Layer i's weights (split by input channels) as its kernels read them, out channels x (taps x
  /// this unit's channels), into packed_; its biases only on the shards' first unit (the others'
  /// partial outputs carry none). And the kernels' gradient in that order back into the stored order.
  const Scalar* pack_input_channels(std::size_t i);
  void unpack_input_channels(std::size_t i, const Scalar* packed, Scalar* g) const;
  /// Channels [begin, begin + count) of every pixel of `from` (rows of `cells` pixels of `channels`
  /// values each, channel-last) into `to`, contiguous (rows x cells x count).
  static void take_channels(const Scalar* from, Eigen::Index rows, Eigen::Index cells, std::size_t channels,
                            std::size_t begin, std::size_t count, matrix<Scalar>& to);

  /// One halo transfer with t.peer: halo_out_'s rows of `send_columns` out (when t.send has cells),
  /// halo_in_'s rows of `receive_columns` in (when t.receive has), both as the message of `key`.
  void exchange_halo(const detail::halo_transfer& t, const detail::message_key& key, std::size_t send_columns,
                     std::size_t receive_columns);

  /// Copies (or adds) the cells `cells` of every row's map from `from` (each row holds the cells of
  /// region `from_region` of a map, channel-last) into `to` (region `to_region`).
  static void copy_cells(const Scalar* from, const map_region& from_region, Scalar* to, const map_region& to_region,
                         const map_region& cells, std::size_t channels, Eigen::Index rows, bool add);

  /// Walks the stage's layers from last to first; the gradient of the stage's output is in
  /// dgrad_[0] on entry. Returns which dgrad_ buffer holds the gradient of the stage's input.
  std::size_t backward(std::size_t m, const_matrix_ref<Scalar> stage_input, Eigen::Index rows);

  /// Starts the next bucket of the gradient all-reduce: on the summing thread when there is one,
  /// otherwise here.
  void post_bucket() {
    const auto& b = d_.buckets[next_bucket_];
    const std::size_t k = next_bucket_++;
    if (d_.replicas < 2) return;
    call_options c = call(message({message_kind::gradients, true, b.layer, k}, b.size, d_.replicas).id);
    const std::span<Scalar> part = std::span<Scalar>(grads_).subspan(b.begin, b.size);
    if (!summer_) {
      const detail::stopwatch timing(times_.communication);
      all_reduce(rt_, d_.data_group, part, c);
      return;
    }
    summer_->post(part, c);
  }

  /// Waits until every posted bucket is summed; rethrows the first failure of one.
  void wait_for_buckets() {
    if (summer_) summer_->wait();
  }

  /// A step failed (the exception being handled): its messages are half exchanged, so the cluster
  /// cannot go on. The transport is shut down with the reason (shutdown_after, transport/concept.hpp),
  /// so that the peers waiting on this unit stop at once and name the unit that failed first: this
  /// one, or the one whose goodbye made this unit fail. The caller rethrows the failure.
  void shut_down_after_failure() noexcept {
    try {
      shutdown_after(t_, std::current_exception());
    } catch (...) {  // the failure being handled is what the caller must see
    }
  }

  /// On the way out of compute_gradients, by return or by exception: the summing thread must not
  /// be writing the gradients when the step is over.
  struct drain_on_exit {
    processing_unit& e;
    ~drain_on_exit() {
      if (e.summer_) e.summer_->drain();
    }
  };

  /// Calls f(serial offset, local offset, count) for each contiguous piece of this unit's
  /// parameters in the serial layout.
  template <class F>
  void for_each_piece(std::size_t serial_size, F f) const;


  Transport& t_;
  detail::unit_description<Scalar> d_;
  distributed_options options_;
  // Every operation on the transport goes through rt_, which records it in recorder_.
  flight_recorder recorder_;
  detail::recording_transport<Transport> rt_;
  // Eigen's alignment for every buffer a kernel reads: Eigen peels unaligned heads off its
  // vectorised reductions, so the alignment of an operand decides the order of a sum. With
  // malloc's alignment, two runs of one plan differed in the last bit.
  using buffer_type = std::vector<Scalar, Eigen::aligned_allocator<Scalar>>;
  buffer_type params_, grads_, scratch_, gather_, packed_, packed_grad_;
  std::vector<std::vector<matrix<Scalar>>> acts_;  // [micro-batch][layer]: each layer's output
  // Spatially split layers, [micro-batch][layer]: the input window the kernels read, and the block
  // of output where acts_ holds the gathered whole map.
  std::vector<std::vector<matrix<Scalar>>> windows_, blocks_;
  matrix<Scalar> halo_out_, halo_in_, block_grad_, window_grad_, channel_input_;
  std::vector<matrix<Scalar>> inputs_;             // [micro-batch]: what the stage before sent
  std::vector<matrix<Scalar>> dlogits_;            // [micro-batch]: the loss gradient (last stage)
  std::vector<kernel::workspace<Scalar>> workspaces_;  // [layer]: its kernels, per shape seen (kernel/gemm.hpp)
  matrix<Scalar> dgrad_[2];
  bool accumulate_ = false;
  bool last_backward_ = false;
  std::size_t next_bucket_ = 0;
  time_split times_;
  double loss_sum_ = 0;
  std::size_t correct_ = 0;
  std::uint64_t step_ = 0;
  std::uint64_t seed_ = 0;            // what initialize() drew the parameters from (keys dropout's masks)
  std::uint64_t training_steps_ = 0;  // compute_gradients calls (keys dropout's masks)
  // The summing thread (only when overlapping a data-parallel all-reduce). Last: started when
  // everything it uses exists, joined first.
  std::optional<detail::bucket_summer<detail::recording_transport<Transport>, Scalar>> summer_;
};

}  // namespace f2d2n

#include <f2d2n/train/impl/processing_unit.hpp>
