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

  trainer(Network& net, Options options) : net_(net), optimizer_(options) {}

  /// Adds a callback; it must outlive the trainer's calls to fit().
  trainer& add(callback& cb) {
    callbacks_.push_back(&cb);
    return *this;
  }

  /// Trains on `data`; when `validation` is given, evaluates on it after every epoch.
  /// Returns the last epoch's report.
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
    const fit_begin begin{options.epochs, steps, samples_per_epoch, options.batch_size};
    for (auto* cb : callbacks_) cb->on_fit_begin(begin);

    epoch_end report;
    for (std::size_t epoch = 0; epoch < options.epochs; ++epoch) {
      batches.start_epoch(epoch);
      const auto start = std::chrono::steady_clock::now();
      step_end s{};
      s.epoch = epoch + 1;
      s.epochs = options.epochs;
      s.steps_per_epoch = steps;
      s.samples_per_epoch = samples_per_epoch;
      double loss_sum = 0;
      std::size_t correct = 0;
      for (std::size_t step = 0; step < steps && !batches.done(); ++step) {
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
        s.seconds = seconds_since(start);
        for (auto* cb : callbacks_) cb->on_step_end(s);
      }
      report = epoch_end{};
      report.epoch = epoch + 1;
      report.epochs = options.epochs;
      report.train = {s.loss, s.accuracy, s.samples};
      report.seconds = seconds_since(start);
      report.samples_per_second = static_cast<double>(s.samples) / report.seconds;
      report.learning_rate = optimizer_.options().learning_rate;
      report.steps = s.step;
      report.time = s.time;
      if (validation) report.validation = evaluate(*validation);
      for (auto* cb : callbacks_) cb->on_epoch_end(report);
      if (options.learning_rate_decay != 1.0)
        optimizer_.set_learning_rate(optimizer_.options().learning_rate * options.learning_rate_decay);
    }
    for (auto* cb : callbacks_) cb->on_fit_end();
    return report;
  }

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

  static double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  Network& net_;
  optimizer<scalar, Options> optimizer_;
  std::vector<callback*> callbacks_;
};

}  // namespace f2d2n
