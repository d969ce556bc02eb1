// f2d2n/train/trainer.hpp: fit and evaluate a network with an optimizer.
//
// trainer<Network, Optimizer> is the serial trainer; the distributed trainer keeps the same calls
// (fit, evaluate, callbacks), so a program switches between them by changing one type.
#pragma once

#include <f2d2n/core/denormals.hpp>
#include <f2d2n/core/error.hpp>
#include <f2d2n/data/dataset.hpp>
#include <f2d2n/model/network.hpp>
#include <f2d2n/train/callbacks.hpp>
#include <f2d2n/train/optimizers.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace f2d2n {

/// How fit() walks the data. By default every epoch is shuffled (shuffle = true, seed 0: epoch e
/// takes the order shuffle(mix64(seed) + e)) and ends with a short batch when the batch size does
/// not divide the data set (drop_last = false).
struct fit_options {
  std::size_t epochs = 1;
  std::size_t batch_size = 64;
  bool shuffle = true;                  ///< on by default; false walks the data set in its order
  std::uint64_t seed = 0;               ///< shuffling seed (epoch e uses the order of seed, e)
  double learning_rate_decay = 1.0;     ///< the learning rate is multiplied by this after each epoch
  std::size_t max_steps_per_epoch = 0;  ///< 0: every batch; otherwise stop each epoch after this many
  bool flush_denormals = true;          ///< flush subnormal floats to zero during fit (see core/denormals.hpp)
  /// Drop each epoch's last batch when it is short (fewer than batch_size samples), as PyTorch's
  /// DataLoader(drop_last=True) does: every step then takes a whole batch. Without it the short
  /// batch is a step of its own; a serial network takes any batch, but a distributed unit refuses,
  /// with a configuration_error in that step, a batch it cannot split: fewer samples than
  /// data_parallel<R>'s replicas, or a replica's rows that do not split into the pipeline's
  /// micro-batches.
  bool drop_last = false;
};

/// What the trainer needs of a network: a network<sequential<...>, Scalar> and a distributed unit's
/// engine (train/distributed_network.hpp) both are one. `x` is a batch's samples (one row each),
/// `labels` their labels.
template <class N>
concept trainable_network =
    // Its parameters and gradients are floating-point numbers (the optimizers' arithmetic).
    std::floating_point<typename N::scalar> &&
    requires(N& net, const N& cnet, const_matrix_ref<typename N::scalar> x, std::span<const std::int32_t> labels) {
  // The features of a sample and the model's outputs (classes): fit and evaluate check the
  // data against them.
  { cnet.features() } -> std::convertible_to<std::size_t>;
  { cnet.classes() } -> std::convertible_to<std::size_t>;
  // The parameters the optimizer updates and their gradients, flat, of the same length.
  { net.parameters() } -> std::convertible_to<std::span<typename N::scalar>>;
  { net.gradients() } -> std::convertible_to<std::span<typename N::scalar>>;
  // Forward, loss and backward of a whole batch: gradients() becomes d(mean loss)/d(parameters);
  // returns the batch's mean loss and correct predictions, as of the parameters before the update.
  { net.compute_gradients(x, labels) } -> std::same_as<batch_result>;
  // The loss and correct predictions of a batch, the parameters and gradients unchanged (evaluate).
  { net.evaluate_batch(x, labels) } -> std::same_as<batch_result>;
};

/// A trainable network that computes only part of each batch (a distributed unit): the trainer
/// hands it only the rows it asks for, and asks it where its time went.
template <class N>
concept partial_batch_network = trainable_network<N> &&
    requires(N& net, const N& cnet, const_matrix_ref<typename N::scalar> x, std::span<const std::int32_t> labels,
             const batch_part& part) {
  // The rows of a batch of this many samples it computes, and whether it needs their samples
  // and labels.
  { cnet.part_of_batch(std::size_t{}) } -> std::same_as<batch_part>;
  // compute_gradients given only that part of the batch (the result is still the whole batch's);
  // a batch it cannot split is a configuration_error (here or in part_of_batch).
  { net.compute_gradients(x, labels, part) } -> std::same_as<batch_result>;
  // The time of its steps spent in communication and waiting since the last call (the
  // trainer counts the rest as compute); a serial network's time is all compute.
  { net.take_time_split() } -> std::same_as<time_split>;
};

/// Trains `Network` (a network<sequential<...>, Scalar>, or a distributed unit: see
/// train/distributed_network.hpp) with `Options` (sgd or adam).
template <trainable_network Network, class Options>
class trainer {
 public:
  using scalar = typename Network::scalar;
  using options_type = Options;

  trainer(Network& net, Options options) : net_(net), optimizer_(options) {}

  /// Adds a callback; it must outlive the trainer's calls to fit().
  trainer& add(callback& cb) {
    callbacks_.push_back(&cb);
    return *this;
  }

  /// Trains on `data` in batches of options.batch_size, shuffled unless options.shuffle is false
  /// (shuffling is on by default: see fit_options); when `validation` is given, evaluates on it
  /// after every epoch. Each epoch's last batch is short when the batch size does not divide the
  /// data set, unless options.drop_last drops it (a distributed unit refuses a batch it cannot
  /// split: see fit_options::drop_last). Returns the last epoch's report. After resume(position),
  /// starts where that position says (the rest of its epoch, then the following ones), in the same
  /// data order.
  epoch_end fit(const dataset<scalar>& data, const fit_options& options, const dataset<scalar>* validation = nullptr) {
    check_fits(data, net_.features(), net_.classes());
    if (validation) check_fits(*validation, net_.features(), net_.classes());
    if (options.epochs == 0) throw configuration_error("f2d2n: fit needs at least one epoch");
    if (!(options.learning_rate_decay > 0)) throw configuration_error("f2d2n: learning_rate_decay must be positive");
    const f2d2n::flush_denormals ftz(options.flush_denormals);
    batcher<scalar> batches(data, options.batch_size, options.shuffle, options.seed);
    // The epoch's steps: its batches, less a short last one under drop_last, at most max_steps_per_epoch.
    std::size_t steps = options.drop_last ? data.size() / options.batch_size : batches.batches();
    if (steps == 0)
      throw configuration_error("f2d2n: drop_last leaves no batch: the data set (" + data.source + ") has " +
                                std::to_string(data.size()) + " samples, fewer than a batch of " +
                                std::to_string(options.batch_size));
    if (options.max_steps_per_epoch != 0) steps = std::min(steps, options.max_steps_per_epoch);
    const std::size_t samples_per_epoch = std::min(data.size(), steps * options.batch_size);
    training_position start;
    start.batch_size = options.batch_size;
    start.seed = options.seed;
    start.shuffle = options.shuffle;
    start.max_steps_per_epoch = options.max_steps_per_epoch;
    start.drop_last = options.drop_last;
    if (resume_) {
      check_resumable(*resume_, start, steps);
      start = *std::exchange(resume_, std::nullopt);
    }
    position_ = start;
    const fit_begin begin{options.epochs, steps, samples_per_epoch, options.batch_size};
    for (auto* cb : callbacks_) cb->on_fit_begin(begin);

    epoch_end report;
    for (std::size_t epoch = start.epoch; epoch < options.epochs; ++epoch) {
      batches.start_epoch(epoch);
      const std::size_t first_step = epoch == start.epoch ? start.step : 0;
      batches.skip(first_step);
      const auto start_time = std::chrono::steady_clock::now();
      step_end s{};
      s.epoch = epoch + 1;
      s.epochs = options.epochs;
      s.steps_per_epoch = steps;
      s.samples_per_epoch = samples_per_epoch;
      s.step = first_step;
      double loss_sum = 0;
      std::size_t correct = 0;
      for (std::size_t step = first_step; step < steps && !batches.done(); ++step) {
        batch_result r;
        auto step_start = std::chrono::steady_clock::now();
        const std::size_t batch = batches.next_size();
        if constexpr (partial_batch_network<Network>) {
          // A distributed unit: copy only the rows (samples, labels) it computes.
          const auto part = net_.part_of_batch(batch);
          const auto b = batches.next(part);
          step_start = std::chrono::steady_clock::now();
          r = net_.compute_gradients(b.samples, b.labels, part);
        } else {
          const auto b = batches.next();
          step_start = std::chrono::steady_clock::now();
          r = net_.compute_gradients(b.samples, b.labels);
        }
        // Before the update: a step whose loss is not finite leaves the parameters as they were.
        check_result(r, batch, "training", [&] {
          return "in epoch " + std::to_string(epoch + 1) + ", step " + std::to_string(step + 1) + " of " +
                 std::to_string(steps);
        });
        optimizer_.step(net_.parameters(), net_.gradients());
        position_.step = step + 1;
        ++position_.global_step;
        time_split t;
        if constexpr (partial_batch_network<Network>) t = net_.take_time_split();
        t.compute = std::max(0.0, seconds_since(step_start) - t.communication - t.wait);
        s.time += t;
        loss_sum += r.loss * static_cast<double>(r.samples);
        correct += r.correct;
        s.step = step + 1;
        s.samples += r.samples;
        s.loss = loss_sum / static_cast<double>(s.samples);
        s.accuracy = static_cast<double>(correct) / static_cast<double>(s.samples);
        s.step_loss = r.loss;
        s.step_samples = r.samples;
        s.seconds = seconds_since(start_time);
        for (auto* cb : callbacks_) cb->on_step_end(s);
      }
      report = epoch_end{};
      report.epoch = epoch + 1;
      report.epochs = options.epochs;
      report.train = {s.loss, s.accuracy, s.samples};
      report.seconds = seconds_since(start_time);
      report.samples_per_second = s.samples > 0 ? static_cast<double>(s.samples) / report.seconds : 0;
      report.learning_rate = optimizer_.options().learning_rate;
      report.steps = s.step - first_step;
      report.time = s.time;
      check_range("training", report.train, "over epoch " + std::to_string(epoch + 1));
      if (validation) report.validation = evaluate(*validation);
      // The epoch is over: the next one's rate, and the position a checkpoint taken now resumes at.
      if (options.learning_rate_decay != 1.0)
        optimizer_.set_learning_rate(optimizer_.options().learning_rate * options.learning_rate_decay);
      position_.epoch = epoch + 1;
      position_.step = 0;
      for (auto* cb : callbacks_) cb->on_epoch_end(report);
    }
    for (auto* cb : callbacks_) cb->on_fit_end();
    return report;
  }

  /// Makes the next fit continue a run from `position` (a checkpoint's: see train/checkpoint.hpp):
  /// the optimizer's state and learning rate must already be the run's at that position. fit
  /// throws configuration_error when its batch size, seed, shuffling, step limit or drop_last
  /// differ from the run's (another data order), or when the position is past its epoch's steps.
  void resume(const training_position& position) { resume_ = position; }

  /// Where the current (or last) fit stands: after step `step` of epoch `epoch` (0-based), or at
  /// the start of epoch `epoch` when `step` is 0; what a checkpoint records.
  [[nodiscard]] const training_position& position() const noexcept { return position_; }

  /// Mean loss and accuracy over `data`, in batches of `batch_size`; the model is not changed.
  /// Runs with subnormals flushed, as fit does.
  evaluation evaluate(const dataset<scalar>& data, std::size_t batch_size = 1000) {
    check_fits(data, net_.features(), net_.classes());
    const f2d2n::flush_denormals ftz;
    if (batch_size == 0) throw configuration_error("f2d2n: batch size must be at least 1");
    evaluation e;
    double loss_sum = 0;
    std::size_t correct = 0;
    for (std::size_t begin = 0; begin < data.size(); begin += batch_size) {
      const auto n = std::min(batch_size, data.size() - begin);
      const auto r =
          net_.evaluate_batch(data.samples.middleRows(static_cast<Eigen::Index>(begin), static_cast<Eigen::Index>(n)),
                              std::span<const std::int32_t>(data.labels).subspan(begin, n));
      check_result(r, n, "evaluation", [&] {
        return "on samples " + std::to_string(begin) + " to " + std::to_string(begin + n - 1) + " of " + data.source;
      });
      loss_sum += r.loss * static_cast<double>(n);
      correct += r.correct;
    }
    e.samples = data.size();
    e.loss = e.samples ? loss_sum / static_cast<double>(e.samples) : 0;
    e.accuracy = e.samples ? static_cast<double>(correct) / static_cast<double>(e.samples) : 0;
    check_range("evaluation", e, "over " + data.source);
    return e;
  }

  [[nodiscard]] Network& network() noexcept { return net_; }
  [[nodiscard]] optimizer<scalar, Options>& optimizer_state() noexcept { return optimizer_; }

 private:
  static void check_resumable(const training_position& p, const training_position& now, std::size_t steps) {
    auto differs = [](const char* what, std::uint64_t was, std::uint64_t is) {
      return configuration_error(std::string("f2d2n: cannot resume: the run used ") + what + " " + std::to_string(was) +
                                 ", this fit uses " + std::to_string(is) + " (the data order would differ)");
    };
    if (p.batch_size != now.batch_size) throw differs("batch size", p.batch_size, now.batch_size);
    if (p.seed != now.seed) throw differs("seed", p.seed, now.seed);
    if (p.shuffle != now.shuffle) throw differs("shuffling", p.shuffle, now.shuffle);
    if (p.max_steps_per_epoch != now.max_steps_per_epoch)
      throw differs("max_steps_per_epoch", p.max_steps_per_epoch, now.max_steps_per_epoch);
    if (p.drop_last != now.drop_last) throw differs("drop_last", p.drop_last, now.drop_last);
    if (p.step > steps)
      throw configuration_error("f2d2n: cannot resume at step " + std::to_string(p.step) + " of an epoch of " +
                                std::to_string(steps) + " steps");
  }

  // A statistic that is not finite or outside its range is a numerical_error (core/error.hpp)
  // naming the statistic, its value, where (epoch and step, or the samples) and the unit: the
  // rest of the run would be meaningless. A distributed unit's statistics are sums over every
  // unit, the same on all of them: every unit stops in the same step.

  /// " on unit 3 (replica 1, stage 0, shard 1)" for a distributed unit; nothing for a serial network.
  [[nodiscard]] std::string on_unit() const {
    if constexpr (requires { net_.name(); }) return " on " + net_.name();
    else return {};
  }

  [[noreturn]] void fail(const std::string& statistic, double value, const std::string& where,
                         const std::string& why) const {
    throw numerical_error(statistic, value,
                          "f2d2n: the " + statistic + " is " + detail::format_value(value) + " " + where + on_unit() +
                              ": " + why);
  }

  /// One batch's result: a finite loss, a correct count within the batch's samples. `where()`
  /// says where in words; it runs only when a check fails (this runs once per step).
  template <class Where>
  void check_result(const batch_result& r, std::size_t batch, const char* what, const Where& where) const {
    const std::string name(what);
    if (!std::isfinite(r.loss))
      fail(name + " loss", r.loss, where(),
           name == "training" ? "the run diverged (a learning rate too large?) or the data hold NaN or infinity; the "
                                "step's update was not applied"
                              : "the model has diverged or the data hold NaN or infinity");
    if (r.samples != batch)
      fail(name + " sample count", static_cast<double>(r.samples), where(),
           "the network computed another number of samples than the batch's " + std::to_string(batch));
    if (r.correct > batch)
      fail(name + " correct count", static_cast<double>(r.correct), where(),
           "more than the batch's " + std::to_string(batch) + " samples");
  }

  /// A mean over many batches: a finite loss, an accuracy in [0, 1].
  void check_range(const char* what, const evaluation& e, const std::string& where) const {
    const std::string name(what);
    if (!std::isfinite(e.loss)) fail(name + " loss", e.loss, where, "not a finite number");
    if (!(e.accuracy >= 0 && e.accuracy <= 1)) fail(name + " accuracy", e.accuracy, where, "outside [0, 1]");
  }

  static double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  Network& net_;
  optimizer<scalar, Options> optimizer_;
  std::vector<callback*> callbacks_;
  training_position position_;
  std::optional<training_position> resume_;
};

}  // namespace f2d2n
