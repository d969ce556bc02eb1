// Training and its report for the Fashion-MNIST examples: the optimizer, the progress bar and CSV,
// checkpoints and resume, the model's export (see settings.hpp for the command line).
#pragma once

#include "settings.hpp"

#include <f2d2n/store.hpp>
#include <f2d2n/store/s3_backend.hpp>
#include <f2d2n/train/checkpoint.hpp>

#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

namespace example {

/// Saves the network as safetensors to a file, or to an object (s3://bucket/prefix/name.safetensors).
template <class Network>
void save_model(const Network& net, const std::string& where) {
  if (!nn::is_s3_location(where)) {
    nn::save_safetensors(net, where);
    return;
  }
  const auto slash = where.rfind('/');
  if (slash == std::string::npos || slash < 5 || slash + 1 == where.size())
    throw nn::configuration_error("--save-model: '" + where + "' names no object (s3://bucket/[prefix/]name)");
  nn::s3_backend store(where.substr(0, slash));
  nn::save_safetensors(net, store, where.substr(slash + 1));
}

/// Trains with the optimizer the settings name; `report`: this process draws the progress bar and
/// prints the result (one unit of a cluster does). `metrics` is the CSV file this process writes.
/// With --checkpoint-dir, checkpoints as it trains (and resumes first with --resume).
template <class Net>
int train_and_report(Net& net, const settings& s, const data& d, bool report, const std::string& metrics) {
  auto go = [&](auto t) {
    nn::progress_bar bar;
    std::optional<nn::csv_logger> csv;
    std::unique_ptr<nn::storage_backend> store;  // a directory or s3://bucket/prefix
    std::optional<nn::checkpointer<decltype(t)>> checkpoints;
    if (report) t.add(bar);
    if (!metrics.empty()) t.add(csv.emplace(metrics));
    const nn::fit_options fit{.epochs = s.epochs,
                              .batch_size = s.batch_size,
                              .seed = s.seed,
                              .learning_rate_decay = s.decay};
    if (!s.checkpoint_dir.empty()) {
      store = nn::open_storage(s.checkpoint_dir);
      nn::checkpoint_options o;
      o.every_steps = s.checkpoint_every;
      o.keep = s.checkpoint_keep;
      t.add(checkpoints.emplace(t, *store, o));
      if (s.resume) {
        const auto info = checkpoints->resume();
        if (report && info)
          for (const auto& why : info->skipped) std::printf("passed over the damaged checkpoint %s\n", why.c_str());
        if (report && info)
          std::printf("resumed from %s/%s: epoch %llu, step %llu (%llu steps done; written by %s)\n",
                      s.checkpoint_dir.c_str(), info->name.c_str(),
                      static_cast<unsigned long long>(info->position.epoch + 1),
                      static_cast<unsigned long long>(info->position.step),
                      static_cast<unsigned long long>(info->position.global_step), info->plan.c_str());
        else if (report)
          std::printf("no checkpoint in %s yet: starting from the beginning\n", s.checkpoint_dir.c_str());
      }
    }
    const auto start = std::chrono::steady_clock::now();
    t.fit(d.train, fit, &d.test);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const auto result = t.evaluate(d.test);
    if (!s.save_model.empty()) {
      if constexpr (requires { net.description(); }) {  // a cluster's unit
        // A unit holds only its part: unit 0 reads the whole model back from the run's last
        // checkpoint (committed by every unit at the end of the last epoch).
        if (report) {
          auto save = [&](auto whole) {
            nn::load_parameters(whole, *store, *nn::latest_checkpoint(*store));
            save_model(whole, s.save_model);
          };
          if (s.preset == "cnn") save(nn::network<cnn>{});
          else save(nn::network<mlp>{});
        }
      } else {
        save_model(net, s.save_model);
      }
      if (report) std::printf("saved the model to %s\n", s.save_model.c_str());
    }
    if (report)
      std::printf("test accuracy %.2f%% (loss %.4f) after %zu epochs in %.1f s\n", 100 * result.accuracy, result.loss,
                  s.epochs, seconds);
    return 0;
  };
  if (s.optimizer == "adam")
    return go(nn::trainer(net, nn::adam{.learning_rate = s.learning_rate, .weight_decay = s.weight_decay}));
  return go(
      nn::trainer(net,
                  nn::sgd{.learning_rate = s.learning_rate, .momentum = s.momentum, .weight_decay = s.weight_decay}));
}

}  // namespace example
