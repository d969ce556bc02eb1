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
#include <cstdint>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

namespace f2d2n {

/// How fit() walks the data.
struct fit_options {
  std::size_t epochs = 1;
  std::size_t batch_size = 64;
  bool shuffle = true;
  std::uint64_t seed = 0;               ///< shuffling seed (epoch e uses the order of seed, e)
  double learning_rate_decay = 1.0;     ///< the learning rate is multiplied by this after each epoch
  std::size_t max_steps_per_epoch = 0;  ///< 0: every batch; otherwise stop each epoch after this many
  bool flush_denormals = true;          ///< flush subnormal floats to zero during fit (see core/denormals.hpp)
};

/// Trains `Network` (a network<sequential<...>, Scalar>, or a distributed unit: see
/// train/distributed_network.hpp) with `Options` (sgd or adam).
template <class Network, class Options>
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

  /// Trains on `data`; when `validation` is given, evaluates on it after every epoch.
  /// Returns the last epoch's report. After resume(position), starts where that position says
  /// (the rest of its epoch, then the following ones), in the same data order.
  epoch_end fit(const dataset<scalar>& data, const fit_options& options, const dataset<scalar>* validation = nullptr) {
    check_fits(data, inputs(), outputs());
    if (validation) check_fits(*validation, inputs(), outputs());
    if (options.epochs == 0) throw configuration_error("f2d2n: fit needs at least one epoch");
    if (!(options.learning_rate_decay > 0)) throw configuration_error("f2d2n: learning_rate_decay must be positive");
    const f2d2n::flush_denormals ftz(options.flush_denormals);
    batcher<scalar> batches(data, options.batch_size, options.shuffle, options.seed);
    std::size_t steps = batches.batches();
    std::size_t samples_per_epoch = data.size();
    if (options.max_steps_per_epoch != 0 && options.max_steps_per_epoch < steps) {
      steps = options.max_steps_per_epoch;
      samples_per_epoch = steps * options.batch_size;
    }
    training_position start;
    start.batch_size = options.batch_size;
    start.seed = options.seed;
    start.shuffle = options.shuffle;
    start.max_steps_per_epoch = options.max_steps_per_epoch;
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
        if constexpr (requires { net_.part_of_batch(std::size_t{}); }) {
          // A distributed unit: copy only the rows (samples, labels) it computes.
          const auto part = net_.part_of_batch(batches.next_size());
          const auto b = batches.next(part);
          step_start = std::chrono::steady_clock::now();
          r = net_.compute_gradients(b.samples, b.labels, part);
        } else {
          const auto b = batches.next();
          step_start = std::chrono::steady_clock::now();
          r = net_.compute_gradients(b.samples, b.labels);
        }
        optimizer_.step(net_.parameters(), net_.gradients());
        position_.step = step + 1;
        ++position_.global_step;
        time_split t;
        if constexpr (requires { net_.take_time_split(); }) t = net_.take_time_split();
        t.compute = std::max(0.0, seconds_since(step_start) - t.communication - t.wait);
        s.time += t;
        loss_sum += r.loss * static_cast<double>(r.samples);
        correct += r.correct;
        s.step = step + 1;
        s.samples += r.samples;
        s.loss = loss_sum / static_cast<double>(s.samples);
        s.accuracy = static_cast<double>(correct) / static_cast<double>(s.samples);
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
  /// throws configuration_error when its batch size, seed, shuffling or step limit differ from the
  /// run's (another data order), or when the position is past its epoch's steps.
  void resume(const training_position& position) { resume_ = position; }

  /// Where the current (or last) fit stands: after step `step` of epoch `epoch` (0-based), or at
  /// the start of epoch `epoch` when `step` is 0; what a checkpoint records.
  [[nodiscard]] const training_position& position() const noexcept { return position_; }

  /// Mean loss and accuracy over `data`, in batches of `batch_size`; the model is not changed.
  /// Runs with subnormals flushed, as fit does.
  evaluation evaluate(const dataset<scalar>& data, std::size_t batch_size = 1000) {
    check_fits(data, inputs(), outputs());
    const f2d2n::flush_denormals ftz;
    if (batch_size == 0) throw configuration_error("f2d2n: batch size must be at least 1");
    evaluation e;
    double loss_sum = 0;
    std::size_t correct = 0;
    for (std::size_t begin = 0; begin < data.size(); begin += batch_size) {
      const auto n = std::min(batch_size, data.size() - begin);
      const auto r = net_.evaluate_batch(
          data.samples.middleRows(static_cast<Eigen::Index>(begin), static_cast<Eigen::Index>(n)),
          std::span<const std::int32_t>(data.labels).subspan(begin, n));
      loss_sum += r.loss * static_cast<double>(n);
      correct += r.correct;
    }
    e.samples = data.size();
    e.loss = e.samples ? loss_sum / static_cast<double>(e.samples) : 0;
    e.accuracy = e.samples ? static_cast<double>(correct) / static_cast<double>(e.samples) : 0;
    return e;
  }

  [[nodiscard]] Network& network() noexcept { return net_; }
  [[nodiscard]] optimizer<scalar, Options>& optimizer_state() noexcept { return optimizer_; }

 private:
  // The model's features and classes: constants of a network<...>, values of a distributed unit's
  // engine (whose trainer serves every plan over one transport and scalar).
  [[nodiscard]] std::size_t inputs() const {
    if constexpr (requires { net_.features(); }) return net_.features();
    else return Network::input_size;
  }
  [[nodiscard]] std::size_t outputs() const {
    if constexpr (requires { net_.classes(); }) return net_.classes();
    else return Network::output_size;
  }

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
    if (p.step > steps)
      throw configuration_error("f2d2n: cannot resume at step " + std::to_string(p.step) + " of an epoch of " +
                                std::to_string(steps) + " steps");
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
