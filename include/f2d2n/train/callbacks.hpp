// f2d2n/train/callbacks.hpp: what a trainer reports while it fits, and the callbacks that show it.
#pragma once

#include <f2d2n/core/error.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>

namespace f2d2n {

/// Loss and accuracy of a model over a dataset.
struct evaluation {
  double loss = 0;
  double accuracy = 0;  ///< in [0, 1]
  std::size_t samples = 0;
};

/// Where a unit's training time went. A distributed network reports the time spent in
/// collectives (all-gathers and all-reduces, waiting for the slowest peer included) as
/// communication, and the time spent waiting for a pipeline neighbour's activations or gradients
/// (the pipeline's bubble and the transfer) as wait; compute is the rest of the step, the
/// optimizer's update included. A serial network's time is all compute.
struct time_split {
  double compute = 0;
  double communication = 0;
  double wait = 0;
  time_split& operator+=(const time_split& o) {
    compute += o.compute;
    communication += o.communication;
    wait += o.wait;
    return *this;
  }
};

/// Sent once before the first step.
struct fit_begin {
  std::size_t epochs = 0;
  std::size_t steps_per_epoch = 0;
  std::size_t samples_per_epoch = 0;
  std::size_t batch_size = 0;
};

/// Sent after every optimisation step.
struct step_end {
  std::size_t epoch = 0;  ///< 1-based
  std::size_t epochs = 0;
  std::size_t step = 0;  ///< 1-based, within the epoch
  std::size_t steps_per_epoch = 0;
  std::size_t samples = 0;  ///< samples done in this epoch
  std::size_t samples_per_epoch = 0;
  double loss = 0;               ///< running mean: the training loss over this epoch's samples so far
  double accuracy = 0;           ///< running: the training accuracy over this epoch's samples so far
  double step_loss = 0;          ///< this step's own loss: the mean over its batch, before its update
  std::size_t step_samples = 0;  ///< the samples of this step's batch
  double seconds = 0;            ///< since the epoch started
  time_split time;               ///< this unit's steps so far in this epoch
};

/// Sent after every epoch.
struct epoch_end {
  std::size_t epoch = 0;  ///< 1-based
  std::size_t epochs = 0;
  evaluation train;  ///< over the epoch's batches, as the weights moved
  std::optional<evaluation> validation;
  double seconds = 0;             ///< training time of the epoch (validation excluded)
  double samples_per_second = 0;  ///< training samples per second in the epoch
  double learning_rate = 0;       ///< the rate used during the epoch
  std::size_t steps = 0;          ///< optimisation steps in the epoch
  time_split time;                ///< where this unit's training time went in the epoch
};

/// Where a run stands: what a resumed run needs to continue the same data order.
struct training_position {
  std::uint64_t epoch = 0;        ///< the epoch under way (0-based)
  std::uint64_t step = 0;         ///< steps done in that epoch
  std::uint64_t global_step = 0;  ///< optimisation steps done in all
  // The data order's parameters (a resumed fit must use the same ones):
  std::uint64_t batch_size = 0;
  std::uint64_t seed = 0;
  bool shuffle = true;
  std::uint64_t max_steps_per_epoch = 0;
  bool drop_last = false;
  friend bool operator==(const training_position&, const training_position&) = default;
};

/// Receives a trainer's reports. Every member has an empty default.
class callback {
 public:
  virtual ~callback() = default;
  virtual void on_fit_begin(const fit_begin&) {}
  virtual void on_step_end(const step_end&) {}
  virtual void on_epoch_end(const epoch_end&) {}
  virtual void on_fit_end() {}
};

namespace detail {
inline std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) seconds = 0;
  const auto s = static_cast<long long>(seconds + 0.5);
  std::ostringstream o;
  if (s >= 3600) o << s / 3600 << "h" << std::setw(2) << std::setfill('0') << (s / 60) % 60 << "m";
  else if (s >= 60) o << s / 60 << "m" << std::setw(2) << std::setfill('0') << s % 60 << "s";
  else o << s << "s";
  return o.str();
}
inline std::string format_epoch_line(const epoch_end& e) {
  std::ostringstream o;
  o << std::fixed << "epoch " << e.epoch << "/" << e.epochs << ": loss " << std::setprecision(4) << e.train.loss
    << ", accuracy " << std::setprecision(2) << 100 * e.train.accuracy << "%";
  if (e.validation)
    o << " | test loss " << std::setprecision(4) << e.validation->loss << ", accuracy " << std::setprecision(2)
      << 100 * e.validation->accuracy << "%";
  o << " | " << std::setprecision(0) << e.samples_per_second << " samples/s, " << std::setprecision(1) << e.seconds
    << " s";
  const double total = e.time.compute + e.time.communication + e.time.wait;
  if (total > 0 && e.time.compute < total)  // a distributed unit: say where its time went
    o << " (compute " << std::setprecision(0) << 100 * e.time.compute / total << "%, communication "
      << 100 * e.time.communication / total << "%, wait " << 100 * e.time.wait / total << "%)";
  return o.str();
}
}  // namespace detail

/// A progress bar on a terminal (epoch, percentage, samples/s, loss, ETA, redrawn at most 10 times
/// a second); one plain line per epoch when the output is not a terminal.
class progress_bar : public callback {
 public:
  /// Draws on `out`; `terminal` says whether it is one (default: whether stdout is a terminal).
  explicit progress_bar(std::ostream& out = std::cout, std::optional<bool> terminal = std::nullopt)
      : out_(out), terminal_(terminal.value_or(::isatty(STDOUT_FILENO) == 1)) {}

  void on_step_end(const step_end& s) override {
    if (!terminal_) return;
    const auto now = std::chrono::steady_clock::now();
    if (s.step != s.steps_per_epoch && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    const double fraction = static_cast<double>(s.samples) / static_cast<double>(s.samples_per_epoch);
    const double rate = s.seconds > 0 ? static_cast<double>(s.samples) / s.seconds : 0;
    const double remaining_samples = static_cast<double>(s.samples_per_epoch - s.samples) +
                                     static_cast<double>((s.epochs - s.epoch) * s.samples_per_epoch);
    constexpr int width = 24;
    const int filled = static_cast<int>(fraction * width);
    std::ostringstream o;
    o << "\repoch " << s.epoch << "/" << s.epochs << " [" << std::string(static_cast<std::size_t>(filled), '=')
      << (filled < width ? ">" : "") << std::string(static_cast<std::size_t>(std::max(0, width - filled - 1)), ' ')
      << "] " << std::setw(3) << static_cast<int>(100 * fraction) << "% " << std::fixed << std::setprecision(0) << rate
      << " samples/s, loss " << std::setprecision(4) << s.loss << ", ETA "
      << detail::format_duration(rate > 0 ? remaining_samples / rate : 0) << "\x1b[K";
    out_ << o.str() << std::flush;
  }

  void on_epoch_end(const epoch_end& e) override {
    if (terminal_) out_ << "\r\x1b[K";
    out_ << detail::format_epoch_line(e) << std::endl;
  }

 private:
  std::ostream& out_;
  bool terminal_;
  std::chrono::steady_clock::time_point last_draw_{};
};

/// Writes one CSV row per epoch: epoch, train and validation loss and accuracy, seconds,
/// samples/s, learning rate, steps, and this unit's compute, communication and wait time per
/// step in milliseconds (see time_split). Validation columns are empty when there is no
/// validation set. Each unit of a cluster writes its own file.
class csv_logger : public callback {
 public:
  explicit csv_logger(const std::string& path) : path_(path), out_(path, std::ios::out | std::ios::trunc) {
    if (!out_) throw error("f2d2n: cannot write the metrics file " + path);
    out_ << "epoch,train_loss,train_accuracy,test_loss,test_accuracy,seconds,samples_per_second,learning_rate,steps,"
            "compute_ms_per_step,communication_ms_per_step,wait_ms_per_step\n";
    out_.flush();
  }

  void on_epoch_end(const epoch_end& e) override {
    out_ << std::setprecision(9) << e.epoch << ',' << e.train.loss << ',' << e.train.accuracy << ',';
    if (e.validation) out_ << e.validation->loss << ',' << e.validation->accuracy;
    else out_ << ',';
    const double per_step = e.steps > 0 ? 1000.0 / static_cast<double>(e.steps) : 0.0;
    out_ << ',' << e.seconds << ',' << e.samples_per_second << ',' << e.learning_rate << ',' << e.steps << ','
         << e.time.compute * per_step << ',' << e.time.communication * per_step << ',' << e.time.wait * per_step
         << '\n';
    out_.flush();
    if (!out_) throw error("f2d2n: writing the metrics file " + path_ + " failed");
  }

 private:
  std::string path_;
  std::ofstream out_;
};

}  // namespace f2d2n
