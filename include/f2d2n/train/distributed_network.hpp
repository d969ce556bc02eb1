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
// same stage and shard). Each message of a step carries its layer's or micro-batch's id and the
// unit's step counter, so a unit out of step with the others gets a protocol_error, never wrong
// numbers.
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
// replicas is the serial mean. The step's loss and correct count travel at the end of the gradient
// all-reduce (after a 2-value all-reduce among the stages, which only the last one knows them).
#pragma once

#include <f2d2n/comm/primitives.hpp>
#include <f2d2n/core/error.hpp>
#include <f2d2n/core/random.hpp>
#include <f2d2n/model/network.hpp>
#include <f2d2n/model/summary.hpp>
#include <f2d2n/plan/distribute.hpp>
#include <f2d2n/train/callbacks.hpp>
#include <f2d2n/train/trainer.hpp>
#include <f2d2n/transport/concept.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace f2d2n {

/// How a distributed network communicates.
struct distributed_options {
  /// How long a unit waits in one collective before timeout_error (a dead or silent peer).
  std::chrono::milliseconds timeout{60000};
  /// Largest piece a ring step sends at once (collective::chunk_bytes).
  std::size_t chunk_bytes = collective{}.chunk_bytes;
  /// Sum the gradient buckets of data_parallel on a second thread of the unit while the backward
  /// pass goes on (the thread sleeps while it waits). Off by default: one compute thread per unit;
  /// then each bucket is summed in the compute thread as soon as it is complete. The messages and
  /// the results are the same either way. On the 2-core development machine, with 2 units and
  /// buckets of 32768 values, overlapping made the MLP's DP2 step slower (47-58k against 88k
  /// samples/s with one bucket; bench/ddp_bench.cpp --buckets --overlap): the second thread
  /// competes with the compute threads for the cores. It pays where a unit has a core to spare.
  bool overlap = false;
};

namespace detail {
/// The initialiser's limit of each dense layer (null for the others), resolved as the serial
/// network resolves it, so that a shard draws the serial layer's values.
template <class L, class Next>
constexpr auto limit_of() -> double (*)(std::size_t, std::size_t) {
  if constexpr (is_dense_v<L>) return &resolved_initializer<L, Next>::limit;
  else return nullptr;
}
template <class... L, class... Next>
constexpr auto limit_table(boost::mp11::mp_list<L...>, boost::mp11::mp_list<Next...>) {
  return std::array<double (*)(std::size_t, std::size_t), sizeof...(L)>{limit_of<L, Next>()...};
}

/// Adds the time from its construction to its end to `into`.
class stopwatch {
 public:
  explicit stopwatch(double& into) : into_(into), start_(clock::now()) {}
  stopwatch(const stopwatch&) = delete;
  stopwatch& operator=(const stopwatch&) = delete;
  ~stopwatch() { into_ += std::chrono::duration<double>(clock::now() - start_).count(); }

 private:
  double& into_;
  clock::time_point start_;
};

/// Message ids of a distributed network's collectives (frames between two units are matched by
/// id and step; a pair of units shares at most one group, the ids keep the calls apart anyway).
inline constexpr std::uint32_t evaluation_message = 2;
inline constexpr std::uint32_t statistics_message = 3;
inline constexpr std::uint32_t checkpoint_message = 4;
constexpr std::uint32_t pipeline_activation_message(std::size_t microbatch) {
  return static_cast<std::uint32_t>(0x100000 + microbatch);
}
constexpr std::uint32_t pipeline_gradient_message(std::size_t microbatch) {
  return static_cast<std::uint32_t>(0x200000 + microbatch);
}
constexpr std::uint32_t bucket_message(std::size_t bucket) { return static_cast<std::uint32_t>(0x300000 + bucket); }
constexpr std::uint32_t forward_message(std::size_t layer) { return static_cast<std::uint32_t>(16 * layer + 1); }
constexpr std::uint32_t backward_message(std::size_t layer) { return static_cast<std::uint32_t>(16 * layer + 2); }
constexpr std::uint32_t forward_gather_message(std::size_t layer) { return static_cast<std::uint32_t>(16 * layer + 3); }
constexpr std::uint32_t backward_gather_message(std::size_t layer) { return static_cast<std::uint32_t>(16 * layer + 4); }

/// One layer as a unit runs it: its partition, extents, and the serial kernels.
template <class S>
struct unit_layer {
  layer_partition part;
  std::size_t in = 0, out = 0;     ///< features in and out of the whole layer
  std::size_t serial_offset = 0;   ///< where the whole layer's parameters start in the serial layout
  layer_ops<S> ops;                ///< the serial layer's kernels (forward, backward, initialise)
  double (*limit)(std::size_t, std::size_t) = nullptr;  ///< a dense layer's initialiser limit
  /// A split layer's units: those with this unit's neurons (they sum partial outputs; a row of
  /// the grid) and those with its input features (they sum partial input gradients; a column).
  group row_group, column_group;
};

/// One bucket of the gradient all-reduce: posted when the backward pass has finished `layer`
/// (0: at the end of the step), over [begin, begin + size) of the buffer (loss, count, gradients).
struct gradient_bucket {
  std::size_t layer = 0, begin = 0, size = 0;
};

/// What a unit runs, as plain data: the part of distributed_network that does not depend on the
/// plan's type, so that every plan over one transport and scalar shares one instantiation of it.
template <class S>
struct unit_description {
  std::vector<unit_layer<S>> layers;
  S (*loss)(const_matrix_ref<S>, std::span<const std::int32_t>, matrix_ref<S>) = nullptr;
  std::size_t input_size = 0, output_size = 0, max_width = 0, serial_parameters = 0, parameters = 0;
  std::size_t replicas = 1, stages = 1, microbatches = 1, schedule = gpipe::id;
  std::size_t first = 1, end = 1;  ///< the hidden layers of this unit's stage: [first, end)
  unit_coordinates coordinates;
  unit_id previous = 0, next = 0;  ///< the units of the stages before and after (same replica and shard)
  group tensor_group, data_group, pipeline_group;
  std::vector<gradient_bucket> buckets;  ///< in the order they are summed (plan::for_each_gradient_bucket)
  std::size_t header = 2;                ///< values before the gradients: loss, correct count, padding
  // What checkpoints record and check (train/checkpoint.hpp):
  const model_summary* model = nullptr;  ///< the whole model
  std::string plan;                      ///< the plan in words (plan_description)
  std::uint64_t plan_fingerprint = 0;
  std::size_t world_size = 1;
};

/// The unit's forward, backward, initialisation and collectives over its description.
template <transport Transport, class Scalar>
class unit_engine {
 public:
  using scalar = Scalar;

  unit_engine(Transport& t, unit_description<Scalar> d, distributed_options options)
      : t_(t), d_(std::move(d)), options_(options), acts_(d_.microbatches), inputs_(d_.microbatches),
        dlogits_(d_.microbatches) {
    for (auto& a : acts_) a.resize(d_.layers.size());
    params_.assign(d_.parameters, Scalar(0));
    grads_.assign(d_.header + d_.parameters, Scalar(0));  // the step's loss and correct count, padding, the gradients
    if (options_.overlap && d_.replicas > 1 && d_.buckets.size() > 1)
      summer_ = std::thread([this] { sum_buckets(); });
  }
  unit_engine(const unit_engine&) = delete;
  unit_engine& operator=(const unit_engine&) = delete;
  ~unit_engine() {
    if (!summer_.joinable()) return;
    {
      const std::lock_guard lock(jobs_m_);
      stop_ = true;
    }
    jobs_cv_.notify_all();
    summer_.join();  // a bucket in flight ends by itself: every collective has a deadline
  }

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

  /// What this unit runs: its layers' partitions, its groups, its model and plan.
  [[nodiscard]] const unit_description<Scalar>& description() const noexcept { return d_; }

  /// Sums `values` over every unit of the cluster (how the units of a checkpoint agree that all
  /// wrote their part). Every unit must call it together, as a step of its own.
  void agree(std::span<double> values) {
    group everyone;
    for (std::size_t r = 0; r < d_.world_size; ++r) everyone.units.push_back(static_cast<unit_id>(r));
    if (everyone.size() > 1) all_reduce(t_, everyone, values, call(checkpoint_message));
    ++step_;
  }

  /// Re-initialises this unit's parameters: the serial network's values for its part.
  void initialize(std::uint64_t seed) {
    for (std::size_t i = 0; i < d_.layers.size(); ++i) {
      const auto& l = d_.layers[i];
      if (!l.part.held || l.part.parameter_count == 0) continue;
      auto w = layer_parameters(i);
      if (split(l.part))
        dense_kernels::initialize_block(w, l.in, l.part.begin, l.part.count, l.part.input_begin, l.part.input_count,
                                        l.limit(l.in, l.out), seed, i);
      else if (l.ops.initialize)
        l.ops.initialize(w, l.in, seed, i);
    }
  }

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
    if (batch < d_.replicas)
      throw configuration_error("f2d2n: data_parallel<" + std::to_string(d_.replicas) + "> needs at least " +
                                std::to_string(d_.replicas) + " samples per batch; this batch has " +
                                std::to_string(batch));
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
    if (part.samples && (static_cast<std::size_t>(x.rows()) != part.count ||
                         static_cast<std::size_t>(x.cols()) != d_.input_size))
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
    accumulate_ = m > 1;
    if (accumulate_) std::fill(grads_.begin() + static_cast<std::ptrdiff_t>(d_.header), grads_.end(), Scalar(0));
    loss_sum_ = 0;
    correct_ = 0;
    next_bucket_ = 0;
    if (summer_.joinable()) {
      const std::lock_guard lock(jobs_m_);
      failure_seen_ = false;  // a new step: its buckets are sent
    }
    const drain_on_exit drain{*this};  // no bucket outlives the step, even when it fails
    for (std::size_t k = 0; k < 2 * m; ++k) {
      const auto op = schedule_op(d_.schedule, d_.stages, d_.coordinates.stage, m, k);
      last_backward_ = k + 1 == 2 * m;  // the gradients become final in the step's last backward
      if (op.forward) forward_micro(x, labels, sh, op.microbatch, true);
      else backward_micro(x, sh, op.microbatch);
    }
    grads_[0] = static_cast<Scalar>(loss_sum_);
    grads_[1] = static_cast<Scalar>(correct_);
    if (d_.stages > 1) {  // the loss is known on the last stage: every stage learns it
      const stopwatch timing(times_.communication);
      all_reduce(t_, d_.pipeline_group, std::span<Scalar>(grads_).first(2), call(statistics_message));
    }
    while (next_bucket_ < d_.buckets.size()) post_bucket();  // the last one holds the loss and count
    {
      const stopwatch timing(times_.communication);  // with overlap: the part the backward did not hide
      wait_for_buckets();
    }
    ++step_;
    batch_result r;
    r.samples = static_cast<std::size_t>(sh.batch);
    r.loss = static_cast<double>(grads_[0]) / static_cast<double>(sh.batch);
    r.correct = static_cast<std::size_t>(grads_[1]);
    return r;
  }



 public:
  /// Loss and correct predictions over one batch, without touching the gradients (the replica's
  /// rows pass the stages as one micro-batch). Every unit must call it with the same batch.
  batch_result evaluate_batch(const_matrix_ref<Scalar> x, std::span<const std::int32_t> labels) {
    const auto sh = share_of(x, labels, false);
    const time_split kept = times_;  // evaluation is not a training step's time
    loss_sum_ = 0;
    correct_ = 0;
    forward_micro(x, labels, sh, 0, false);
    std::array<double, 2> sums{loss_sum_, static_cast<double>(correct_)};
    if (d_.stages > 1) {
      const stopwatch timing(times_.communication);
      all_reduce(t_, d_.pipeline_group, std::span<double>(sums), call(statistics_message));
    }
    {
      const stopwatch timing(times_.communication);
      all_reduce(t_, d_.data_group, std::span<double>(sums), call(evaluation_message));
    }
    ++step_;
    batch_result r;
    r.samples = static_cast<std::size_t>(sh.batch);
    r.loss = sums[0] / static_cast<double>(sh.batch);
    r.correct = static_cast<std::size_t>(sums[1]);
    times_ = kept;
    return r;
  }

 private:
  /// The replica's rows of a batch, and how they split into micro-batches.
  struct share {
    Eigen::Index first, rows, batch, micro_rows;
  };

  share share_of(const_matrix_ref<Scalar> x, std::span<const std::int32_t> labels, bool training) const {
    if (static_cast<std::size_t>(x.cols()) != d_.input_size)
      throw configuration_error("f2d2n: network input has " + std::to_string(x.cols()) +
                                " features per sample, the model expects " + std::to_string(d_.input_size));
    if (labels.size() != static_cast<std::size_t>(x.rows()))
      throw configuration_error("f2d2n: batch has " + std::to_string(x.rows()) + " samples but " +
                                std::to_string(labels.size()) + " labels");
    const auto batch = static_cast<std::size_t>(x.rows());
    if (batch < d_.replicas)
      throw configuration_error("f2d2n: data_parallel<" + std::to_string(d_.replicas) + "> needs at least " +
                                std::to_string(d_.replicas) + " samples per batch; this batch has " +
                                std::to_string(batch));
    check_labels(labels);
    const std::size_t replica = d_.coordinates.replica, rows = part_size(batch, d_.replicas, replica);
    const std::size_t m = training ? d_.microbatches : 1;
    check_microbatches(batch, rows, m);
    return {static_cast<Eigen::Index>(part_begin(batch, d_.replicas, replica)), static_cast<Eigen::Index>(rows),
            static_cast<Eigen::Index>(batch), static_cast<Eigen::Index>(rows / m)};
  }

  /// The share of a part given alone: its rows start at 0.
  share share_of_part(const batch_part& part) const {
    check_microbatches(part.batch, part.count, d_.microbatches);
    return {0, static_cast<Eigen::Index>(part.count), static_cast<Eigen::Index>(part.batch),
            static_cast<Eigen::Index>(part.count / d_.microbatches)};
  }

  void check_labels(std::span<const std::int32_t> labels) const {
    for (auto l : labels)
      if (l < 0 || static_cast<std::size_t>(l) >= d_.output_size)
        throw configuration_error("f2d2n: label " + std::to_string(l) + " is outside the model's " +
                                  std::to_string(d_.output_size) + " outputs");
  }

  void check_microbatches(std::size_t batch, std::size_t rows, std::size_t m) const {
    if (rows % m != 0)
      throw configuration_error("f2d2n: pipeline<..., microbatches<" + std::to_string(m) +
                                ">> needs every replica's rows to split into " + std::to_string(m) +
                                " equal micro-batches; a batch of " + std::to_string(batch) + " gives replica " +
                                std::to_string(d_.coordinates.replica) + " " + std::to_string(rows) + " rows");
  }

  [[nodiscard]] collective call(std::uint32_t message) const {
    collective c;
    c.message_id = message;
    c.step = step_;
    c.timeout = options_.timeout;
    c.chunk_bytes = options_.chunk_bytes;
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
                      const group& g, std::size_t me, std::uint32_t message) {
    const std::size_t p = g.size(), r = static_cast<std::size_t>(rows);
    if (p > 1) {
      const auto mine = blocks.subspan(part_begin(cols, p, me) * r, part_size(cols, p, me) * r);
      const stopwatch timing(times_.communication);
      all_gather(t_, g, std::span<const Scalar>(mine), blocks, call(message), r);
    }
    for (std::size_t s = 0; s < p; ++s) {
      const auto b = static_cast<Eigen::Index>(part_begin(cols, p, s));
      const auto n = static_cast<Eigen::Index>(part_size(cols, p, s));
      out.middleCols(b, n) = const_matrix_map<Scalar>(blocks.data() + static_cast<std::size_t>(b) * r, rows, n);
    }
  }

  /// Sums a contiguous rows x cols block over group g (in place) when g has more than this unit.
  template <class Block>
  void sum_over(const group& g, Block&& m, std::uint32_t message) {
    if (g.size() < 2) return;
    const stopwatch timing(times_.communication);
    all_reduce(t_, g, std::span<Scalar>(m.data(), static_cast<std::size_t>(m.size())), call(message));
  }

  /// Micro-batch m forward through this unit's stage: its input from the batch (first stage) or
  /// from the stage before; its output to the stage after, or into the loss (last stage).
  void forward_micro(const_matrix_ref<Scalar> x, std::span<const std::int32_t> labels, const share& sh,
                     std::size_t m, bool training) {
    const Eigen::Index rows = training ? sh.micro_rows : sh.rows;
    const Eigen::Index first_row = sh.first + static_cast<Eigen::Index>(m) * rows;
    const bool first_stage = d_.coordinates.stage == 0, last_stage = d_.coordinates.stage + 1 == d_.stages;
    if (!first_stage) {
      ensure(inputs_[m], rows, d_.layers[d_.first].in);
      {
        const stopwatch timing(times_.wait);
        receive_tensor(t_, d_.previous, pipeline_activation_message(m), step_,
                       std::span<Scalar>(inputs_[m].data(), static_cast<std::size_t>(inputs_[m].size())),
                       clock::now() + options_.timeout);
      }
    }
    const_matrix_ref<Scalar> in = first_stage ? const_matrix_ref<Scalar>(x.middleRows(first_row, rows))
                                              : const_matrix_ref<Scalar>(inputs_[m]);
    forward(m, in);
    const auto out = acts_[m][d_.end - 1].topRows(rows);
    if (!last_stage) {
      const stopwatch timing(times_.communication);
      send_tensor(t_, d_.next, pipeline_activation_message(m), step_,
                  std::span<const Scalar>(out.data(), static_cast<std::size_t>(out.size())),
                  clock::now() + options_.timeout);
      return;
    }
    const auto my_labels = labels.subspan(static_cast<std::size_t>(first_row), static_cast<std::size_t>(rows));
    ensure(dlogits_[m], rows, d_.output_size);
    const Scalar loss = d_.loss(out, my_labels, dlogits_[m]);
    loss_sum_ += static_cast<double>(loss) * static_cast<double>(rows);
    correct_ += count_correct<Scalar>(out, my_labels);
    if (training) dlogits_[m] *= static_cast<Scalar>(rows) / static_cast<Scalar>(sh.batch);  // replicas' sum = serial mean
  }

  /// Micro-batch m backward through this unit's stage: the loss gradient (last stage) or the
  /// gradient from the stage after; the gradient of the stage's input to the stage before.
  void backward_micro(const_matrix_ref<Scalar> x, const share& sh, std::size_t m) {
    const Eigen::Index rows = sh.micro_rows;
    const Eigen::Index first_row = sh.first + static_cast<Eigen::Index>(m) * rows;
    const bool first_stage = d_.coordinates.stage == 0, last_stage = d_.coordinates.stage + 1 == d_.stages;
    auto dy = gradient_buffer(0, rows, d_.layers[d_.end - 1].part.output_width);
    if (last_stage) {
      dy = dlogits_[m];
    } else {
      const stopwatch timing(times_.wait);
      receive_tensor(t_, d_.next, pipeline_gradient_message(m), step_,
                     std::span<Scalar>(dy.data(), static_cast<std::size_t>(dy.size())), clock::now() + options_.timeout);
    }
    const std::size_t last_buffer = backward(
        m, first_stage ? const_matrix_ref<Scalar>(x.middleRows(first_row, rows)) : const_matrix_ref<Scalar>(inputs_[m]),
        rows);
    if (!first_stage) {
      const auto dx = gradient_buffer(last_buffer, rows, d_.layers[d_.first].in);
      const stopwatch timing(times_.communication);
      send_tensor(t_, d_.previous, pipeline_gradient_message(m), step_,
                  std::span<const Scalar>(dx.data(), static_cast<std::size_t>(dx.size())),
                  clock::now() + options_.timeout);
    }
  }

  void forward(std::size_t m, const_matrix_ref<Scalar> stage_input) {
    const Eigen::Index rows = stage_input.rows();
    for (std::size_t i = d_.first; i < d_.end; ++i) {
      const auto& l = d_.layers[i];
      const auto& p = l.part;
      const Scalar* w = params_.data() + p.parameter_offset;
      const auto in = input_of(m, i, stage_input);
      auto y = output(m, i, rows);
      if (split(p)) {
        // y_a = sum over the row's units of x_b W_ab^T, + b_a; then y = the column's blocks, gathered
        // (in a chain this unit keeps its block y_a). A chained input is this unit's columns only.
        const auto rows_n = static_cast<Eigen::Index>(p.count), cols = static_cast<Eigen::Index>(p.input_count);
        const auto x = in.middleCols(p.sharded_input ? 0 : static_cast<Eigen::Index>(p.input_begin), cols);
        const_matrix_map<Scalar> ws(w, rows_n, cols);
        Eigen::Map<const vector<Scalar>> b(w + p.count * p.input_count, rows_n);
        if (p.sharded_output) {
          y.noalias() = x * ws.transpose();
          sum_over(l.row_group, y, forward_message(i));
          y.rowwise() += b.transpose();
        } else {
          const auto blocks = gather_buffer(static_cast<std::size_t>(rows) * l.out);
          matrix_map<Scalar> mine(blocks.data() + p.begin * static_cast<std::size_t>(rows), rows, rows_n);
          mine.noalias() = x * ws.transpose();
          sum_over(l.row_group, mine, forward_message(i));
          mine.rowwise() += b.transpose();
          gather_columns(blocks, rows, l.out, y, l.column_group, p.out_index, forward_gather_message(i));
        }
      } else {
        l.ops.forward(w, in, y);
      }
    }
  }

  /// Walks the stage's layers from last to first; the gradient of the stage's output is in
  /// dgrad_[0] on entry. Returns which dgrad_ buffer holds the gradient of the stage's input.
  std::size_t backward(std::size_t m, const_matrix_ref<Scalar> stage_input, Eigen::Index rows) {
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
      if (split(p)) {
        // dW_ab = dy_a^T x_b, db_a = sum dy_a; dx_b = sum over the column's units of dy_a W_ab; then
        // dx = the row's blocks, gathered.
        const auto rows_n = static_cast<Eigen::Index>(p.count), cols = static_cast<Eigen::Index>(p.input_count);
        const auto dys = dy.middleCols(p.sharded_output ? 0 : static_cast<Eigen::Index>(p.begin), rows_n);
        const_matrix_map<Scalar> ws(w, rows_n, cols);
        matrix_map<Scalar> dws(g, rows_n, cols);
        Eigen::Map<vector<Scalar>> db(g + p.count * p.input_count, rows_n);
        dws.noalias() = dys.transpose() * in.middleCols(p.sharded_input ? 0 : static_cast<Eigen::Index>(p.input_begin), cols);
        db.noalias() = dys.colwise().sum().transpose();
        if (want_dx && p.sharded_input) {  // the chain's units keep their own columns of dx
          dx.noalias() = dys * ws;
          sum_over(l.column_group, dx, backward_message(i));
        } else if (want_dx) {
          const auto blocks = gather_buffer(static_cast<std::size_t>(rows) * l.in);
          matrix_map<Scalar> mine(blocks.data() + p.input_begin * static_cast<std::size_t>(rows), rows, cols);
          mine.noalias() = dys * ws;
          sum_over(l.column_group, mine, backward_message(i));
          gather_columns(blocks, rows, l.in, dx, l.row_group, p.in_index, backward_gather_message(i));
        }
      } else {
        l.ops.backward(w, g, in, acts_[m][i].topRows(rows), dy, dx, want_dx);
      }
      if (accumulate_) {
        Scalar* to = grads_.data() + d_.header + p.parameter_offset;
        for (std::size_t k = 0; k < p.parameter_count; ++k) to[k] += g[k];
      }
      // This layer's gradients are final: start the buckets that close here.
      while (last_backward_ && next_bucket_ + 1 < d_.buckets.size() && d_.buckets[next_bucket_].layer == i)
        post_bucket();
      current = 1 - current;
      if (i == d_.first) break;
    }
    return current;
  }

  /// Starts the next bucket of the gradient all-reduce: on the summing thread when there is one,
  /// otherwise here.
  void post_bucket() {
    const auto& b = d_.buckets[next_bucket_];
    collective c = call(bucket_message(next_bucket_));
    ++next_bucket_;
    if (d_.replicas < 2) return;
    const std::span<Scalar> part = std::span<Scalar>(grads_).subspan(b.begin, b.size);
    if (!summer_.joinable()) {
      const stopwatch timing(times_.communication);
      all_reduce(t_, d_.data_group, part, c);
      return;
    }
    {
      const std::lock_guard lock(jobs_m_);
      jobs_.push_back({part, c});
      ++pending_;
    }
    jobs_cv_.notify_all();
  }

  /// Waits until every posted bucket is summed; rethrows the first failure of one.
  void wait_for_buckets() {
    if (!summer_.joinable()) return;
    std::unique_lock lock(jobs_m_);
    done_cv_.wait(lock, [this] { return pending_ == 0; });
    if (auto e = std::exchange(failure_, nullptr)) std::rethrow_exception(e);
  }

  /// On the way out of compute_gradients, by return or by exception: the summing thread must not
  /// be writing the gradients when the step is over.
  struct drain_on_exit {
    unit_engine& e;
    ~drain_on_exit() {
      if (!e.summer_.joinable()) return;
      std::unique_lock lock(e.jobs_m_);
      e.done_cv_.wait(lock, [this] { return e.pending_ == 0; });
      e.failure_ = nullptr;  // after a failed step only the step's own exception is reported
    }
  };

  /// The summing thread: one bucket after another, in the order posted; sleeps while it waits.
  void sum_buckets() {
    for (;;) {
      job j;
      {
        std::unique_lock lock(jobs_m_);
        jobs_cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        j = jobs_.front();
        jobs_.pop_front();
      }
      std::exception_ptr failed;
      if (!failure_seen_) {
        try {
          all_reduce(t_, d_.data_group, j.part, j.call);
        } catch (...) {
          failed = std::current_exception();
        }
      }
      {
        const std::lock_guard lock(jobs_m_);
        if (failed) {
          failure_seen_ = true;  // the ring is out of step: the later buckets of this step are not sent
          if (!failure_) failure_ = failed;
        }
        --pending_;
      }
      done_cv_.notify_all();
    }
  }

  /// Calls f(serial offset, local offset, count) for each contiguous piece of this unit's
  /// parameters in the serial layout.
  template <class F>
  void for_each_piece(std::size_t serial_size, F f) const {
    if (serial_size != d_.serial_parameters)
      throw configuration_error("f2d2n: a serial parameter buffer of this model has " +
                                std::to_string(d_.serial_parameters) + " values, not " + std::to_string(serial_size));
    for (const auto& l : d_.layers) {
      const auto& p = l.part;
      if (!p.held || p.parameter_count == 0) continue;
      const std::size_t at = l.serial_offset, local = p.parameter_offset;
      if (split(p)) {
        if (p.input_count == l.in) {
          f(at + p.begin * l.in, local, p.count * l.in);  // whole rows of W: one piece
        } else {
          for (std::size_t j = 0; j < p.count; ++j)
            f(at + (p.begin + j) * l.in + p.input_begin, local + j * p.input_count, p.input_count);
        }
        f(at + l.out * l.in + p.begin, local + p.count * p.input_count, p.count);  // the rows' biases
      } else {
        f(at, local, p.parameter_count);
      }
    }
  }

  Transport& t_;
  unit_description<Scalar> d_;
  distributed_options options_;
  // Eigen's alignment for every buffer a kernel reads: Eigen peels unaligned heads off its
  // vectorised reductions, so the alignment of an operand decides the order of a sum. With
  // malloc's alignment, two runs of one plan differed in the last bit.
  using buffer_type = std::vector<Scalar, Eigen::aligned_allocator<Scalar>>;
  buffer_type params_, grads_, scratch_, gather_;
  std::vector<std::vector<matrix<Scalar>>> acts_;  // [micro-batch][layer]: each layer's output
  std::vector<matrix<Scalar>> inputs_;             // [micro-batch]: what the stage before sent
  std::vector<matrix<Scalar>> dlogits_;            // [micro-batch]: the loss gradient (last stage)
  matrix<Scalar> dgrad_[2];
  bool accumulate_ = false;
  bool last_backward_ = false;
  std::size_t next_bucket_ = 0;
  time_split times_;
  // The summing thread and its queue (only when overlapping a data-parallel all-reduce).
  struct job {
    std::span<Scalar> part;
    collective call;
  };
  std::mutex jobs_m_;
  std::condition_variable jobs_cv_, done_cv_;
  std::deque<job> jobs_;
  std::size_t pending_ = 0;
  bool stop_ = false, failure_seen_ = false;
  std::exception_ptr failure_;
  std::thread summer_;  // last: started when everything it uses exists, joined first
  double loss_sum_ = 0;
  std::size_t correct_ = 0;
  std::uint64_t step_ = 0;
};

/// The description of unit `rank` of Plan.
template <class Plan, class Scalar>
unit_description<Scalar> describe_unit(unit_id rank) {
  using Net = typename Plan::model;
  static constexpr auto ops = ops_table<Scalar>(typename Net::layers{}, next_layers<typename Net::layers>{});
  static constexpr auto limits = limit_table(typename Net::layers{}, next_layers<typename Net::layers>{});
  unit_description<Scalar> d;
  d.coordinates = Plan::coordinates_of(rank);
  const auto c = d.coordinates;
  for (std::size_t i = 0; i < Net::size; ++i) {
    unit_layer<Scalar> l;
    l.part = Plan::partition_of(rank, i);
    l.in = Net::input_extents[i].size();
    l.out = Net::output_extents[i].size();
    l.serial_offset = Net::parameter_offsets[i];
    l.ops = ops[i];
    l.limit = limits[i];
    const auto& p = l.part;
    for (std::size_t b = 0; b < p.in_parts; ++b)
      l.row_group.units.push_back(Plan::rank_of({c.replica, c.stage, p.out_index * p.in_parts + b}));
    for (std::size_t a = 0; a < p.out_parts; ++a)
      l.column_group.units.push_back(Plan::rank_of({c.replica, c.stage, a * p.in_parts + p.in_index}));
    d.layers.push_back(l);
  }
  d.loss = &Net::template layer_at<Net::size - 1>::template loss<Scalar>;
  d.input_size = Net::input_size;
  d.output_size = Net::output_size;
  d.max_width = Net::max_width;
  d.serial_parameters = Net::parameter_count;
  d.parameters = Plan::parameter_count_of(rank);
  d.replicas = Plan::replicas;
  d.stages = Plan::stages;
  d.microbatches = Plan::microbatch_count;
  d.schedule = Plan::schedule_id;
  d.first = Plan::stage_begin[c.stage];
  d.end = Plan::stage_begin[c.stage + 1];
  if (c.stage > 0) d.previous = Plan::rank_of({c.replica, c.stage - 1, c.shard});
  if (c.stage + 1 < Plan::stages) d.next = Plan::rank_of({c.replica, c.stage + 1, c.shard});
  for (std::size_t s = 0; s < Plan::shards; ++s) d.tensor_group.units.push_back(Plan::rank_of({c.replica, c.stage, s}));
  for (std::size_t r = 0; r < Plan::replicas; ++r) d.data_group.units.push_back(Plan::rank_of({r, c.stage, c.shard}));
  d.header = Plan::gradient_header;
  Plan::for_each_gradient_bucket(rank, [&](std::size_t layer, std::size_t begin, std::size_t size) {
    d.buckets.push_back({layer, begin, size});
  });
  for (std::size_t s = 0; s < Plan::stages; ++s) d.pipeline_group.units.push_back(Plan::rank_of({c.replica, s, c.shard}));
  d.model = &summary_of<Net>();
  d.plan = plan_description<Plan>();
  d.plan_fingerprint = Plan::fingerprint;
  d.world_size = Plan::world_size;
  return d;
}

/// Refuses a transport that cannot carry Plan.
template <class Plan, class Transport>
const Transport& check_transport(const Transport& t) {
  if (t.world_size() != Plan::world_size)
    throw configuration_error("f2d2n: the plan has " + std::to_string(Plan::world_size) + " units (" +
                              std::to_string(Plan::replicas) + " replicas x " + std::to_string(Plan::shards) +
                              " shards) but the transport's cluster has " + std::to_string(t.world_size()));
  if (t.fingerprint() != Plan::fingerprint)
    throw configuration_error("f2d2n: the transport was created with fingerprint " + std::to_string(t.fingerprint()) +
                              ", the plan's is " + std::to_string(Plan::fingerprint) +
                              ": create it with plan::fingerprint, so that units of another plan are refused");
  return t;
}
}  // namespace detail

/// One unit's partition of Plan in scalar type Scalar, communicating over Transport. It has the
/// calls of network<...> that trainer<...> uses (see the top of this file); the work is done by
/// a plan-independent engine, so that many plans cost little compile time.
template <plan_type Plan, transport Transport, class Scalar = float>
class distributed_network : public detail::unit_engine<Transport, Scalar> {
  static_assert(Plan::checked);
  using engine = detail::unit_engine<Transport, Scalar>;

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
      : engine(t, detail::describe_unit<Plan, Scalar>(detail::check_transport<Plan>(t).rank()), options) {
    engine::initialize(seed);
  }
};

/// trainer(unit, options) trains the unit's engine: one trainer type (and one instantiation of
/// fit) per transport and scalar serves every plan.
template <class Plan, class Transport, class Scalar, class Options>
trainer(distributed_network<Plan, Transport, Scalar>&, Options) -> trainer<detail::unit_engine<Transport, Scalar>, Options>;

}  // namespace f2d2n
