// f2d2n/train/checkpoint.hpp: checkpoints of a training run (store/checkpoint.hpp is the format),
// and resuming from them, for one network or for a distributed unit of any plan.
//
//   nn::directory_backend store("checkpoints");
//   nn::trainer t(net, nn::adam{});
//   nn::checkpointer ck(t, store, {.every_steps = 500, .keep = 3});  // and after every epoch
//   t.add(ck);
//   ck.resume();                       // the newest committed checkpoint, if there is one
//   t.fit(data, options, &test);       // continues its data order; bitwise the uninterrupted run
//
// Every unit of a cluster runs the same calls: each writes its own blocks, unit 0 commits the
// manifest, and a checkpoint of one plan loads into any plan of the same model.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/model/network.hpp>
#include <f2d2n/model/summary.hpp>
#include <f2d2n/store/backend.hpp>
#include <f2d2n/store/checkpoint.hpp>
#include <f2d2n/store/checkpoint_reader.hpp>
#include <f2d2n/train/callbacks.hpp>
#include <f2d2n/train/distributed_network.hpp>
#include <f2d2n/train/optimizers.hpp>
#include <f2d2n/train/trainer.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace f2d2n {

/// The layout of a whole network: every tensor whole, at its place in the flat buffer.
template <network_type Net, class S>
checkpoint_layout layout_of(const network<Net, S>&) {
  return serial_layout(summary_of<Net>());
}

/// The layout of a distributed unit: the blocks of its partition (plan/distribute.hpp's
/// layer_partition). Replica 0 owns what it holds; a block that several shards hold whole (a
/// replicated layer, the biases of a layer split by inputs) is owned by the first of them.
template <class T, class S>
checkpoint_layout layout_of(const processing_unit<T, S>& unit) {
  const auto& d = unit.description();
  checkpoint_layout l;
  l.model = d.model;
  l.size = d.parameters;
  l.rank = unit.rank();
  l.world_size = d.world_size;
  l.plan = d.plan;
  l.plan_fingerprint = d.plan_fingerprint;
  const bool first_replica = d.coordinates.replica == 0;
  for (std::size_t i = 0; i < d.layers.size(); ++i) {
    const auto& layer = d.layers[i];
    const auto& p = layer.part;
    if (!p.held || p.parameter_count == 0) continue;
    const bool split = p.split == split_kind::outputs || p.split == split_kind::inputs || p.split == split_kind::grid;
    for (std::size_t t = 0; t < d.model->tensors.size(); ++t) {
      const auto& tensor = d.model->tensors[t];
      if (tensor.layer != i) continue;
      if (!split) {
        l.blocks.push_back({t, 0, tensor.rows(), 0, tensor.columns(),
                            p.parameter_offset + (tensor.offset - layer.serial_offset),
                            first_replica && d.coordinates.shard == 0});
      } else if (tensor.shape.size() >= 2) {
        // The weights: this unit's block of the grid (of rows, for a convolution split by output
        // channels; one per tap, of columns, for one split by input channels).
        layer.for_each_weight_block([&](std::size_t r0, std::size_t rows, std::size_t c0, std::size_t cols, std::size_t at) {
          l.blocks.push_back({t, r0, rows, c0, cols, p.parameter_offset + at, first_replica});
        });
      } else {  // the biases of its neurons, which the grid's row shares
        l.blocks.push_back({t, p.begin, p.count, 0, 1, p.parameter_offset + p.parameter_count - p.count,
                            first_replica && p.in_index == 0});
      }
    }
  }
  return l;
}

namespace detail {
inline nlohmann::json options_json(const sgd& o) {
  return {{"learning_rate", o.learning_rate}, {"momentum", o.momentum}, {"weight_decay", o.weight_decay}};
}
inline nlohmann::json options_json(const adam& o) {
  return {{"learning_rate", o.learning_rate},
          {"beta1", o.beta1},
          {"beta2", o.beta2},
          {"epsilon", o.epsilon},
          {"weight_decay", o.weight_decay}};
}

template <class Network>
agree_function agreement(Network& net) {
  if constexpr (requires(std::span<double> v) { net.agree(v); }) return [&net](std::span<double> v) { net.agree(v); };
  else return {};
}
}  // namespace detail

/// Writes a checkpoint of the trainer's network, optimizer and position into folder `name` of
/// `store` (every unit of a cluster calls it together); see write_checkpoint.
template <class Network, class Options>
void save_checkpoint(trainer<Network, Options>& t, storage_backend& store, const std::string& name,
                     std::size_t keep = 0, const checkpoint_hook& hook = {}) {
  using S = typename Network::scalar;
  auto& net = t.network();
  auto& opt = t.optimizer_state();
  const auto layout = layout_of(net);
  unit_state<S> state;
  state.parameters = std::span<const S>(net.parameters());
  state.optimizer = Options::name;
  for (std::size_t k = 0; k < opt.state_names.size(); ++k) {
    state.state_names.push_back(opt.state_names[k]);
    state.state.push_back(std::as_const(opt).state(k));
  }
  state.optimizer_steps = opt.steps();
  state.learning_rate = opt.options().learning_rate;
  state.optimizer_options = detail::options_json(opt.options());
  state.position = t.position();
  write_checkpoint(store, name, layout, state, detail::agreement(net), keep, hook);
}

namespace detail {
/// What load_checkpoint checks before it changes anything: the state the checkpoint holds (all
/// of the optimizer's buffers or none), the learning rate, and every chunk (reader.verify()).
/// Returns whether the checkpoint holds the optimizer's state.
template <class Network, class Options, class S>
bool check_loadable(trainer<Network, Options>& t, checkpoint_reader<S>& reader, const storage_backend& store) {
  auto& opt = t.optimizer_state();
  std::size_t held = 0;
  for (std::size_t k = 0; k < opt.state_names.size(); ++k) held += reader.has_state(k);
  if (held != 0 && held != opt.state_names.size())
    throw storage_error(store.location() + "/" + reader.info().name, storage_problem::model_mismatch,
                        "the checkpoint holds only part of the optimizer's state (another configuration of it)");
  auto options = opt.options();
  options.learning_rate = reader.info().learning_rate;
  validate(options);
  reader.verify();
  return held != 0;
}

/// Changes the trainer to the checked checkpoint of `reader` (see check_loadable).
template <class Network, class Options, class S>
void apply_checkpoint(trainer<Network, Options>& t, checkpoint_reader<S>& reader, std::size_t size, bool has_state) {
  auto& opt = t.optimizer_state();
  opt.reset_state(has_state ? size : 0);
  std::vector<std::span<S>> state;
  if (opt.has_state())
    for (std::size_t k = 0; k < opt.state_names.size(); ++k) state.push_back(opt.state(k));
  reader.read_into(t.network().parameters(), state);
  opt.set_steps(reader.info().optimizer_steps);
  opt.set_learning_rate(reader.info().learning_rate);
  t.resume(reader.info().position);
  // Layers that draw per step (dropout) count the run's training steps: resumed, they draw the
  // masks the uninterrupted run drew.
  if constexpr (requires(Network& n) { n.set_training_steps(std::uint64_t{}); })
    t.network().set_training_steps(reader.info().position.global_step);
}

template <class Optimizer>
std::vector<std::string_view> state_names_of(const Optimizer& opt) {
  return {opt.state_names.begin(), opt.state_names.end()};
}
}  // namespace detail

/// Loads checkpoint `name` into the trainer: the network's parameters, the optimizer's state, step
/// count and learning rate, and the position its next fit resumes at. The checkpoint may come from
/// any plan of the same model. Everything is read and checked before anything changes (the values
/// are then read again straight into the network and optimizer: a file changed in between is a
/// storage_error with the trainer partly loaded).
template <class Network, class Options>
checkpoint_info load_checkpoint(trainer<Network, Options>& t, const storage_backend& store, const std::string& name) {
  using S = typename Network::scalar;
  const auto layout = layout_of(t.network());
  const auto names = detail::state_names_of(t.optimizer_state());
  checkpoint_reader<S> reader(store, name, layout, Options::name, names);
  const bool has_state = detail::check_loadable(t, reader, store);
  detail::apply_checkpoint(t, reader, layout.size, has_state);
  return reader.info();
}

/// Loads only the parameters of checkpoint `name` (from any plan of the same model) into a network
/// or a distributed unit: for evaluation, export or fine-tuning. Checked before anything changes,
/// as load_checkpoint.
template <class Network>
checkpoint_info load_parameters(Network& net, const storage_backend& store, const std::string& name) {
  using S = typename Network::scalar;
  const auto layout = layout_of(net);
  checkpoint_reader<S> reader(store, name, layout);
  reader.verify();
  reader.read_into(net.parameters(), {});
  return reader.info();
}

/// When a checkpointer writes.
struct checkpoint_options {
  std::size_t every_steps = 0;  ///< every this many optimisation steps (0: not by steps)
  bool every_epoch = true;      ///< after every epoch (after its evaluation and learning-rate decay)
  std::size_t keep = 3;         ///< the newest committed checkpoints kept (0: all of them)
  checkpoint_hook hook{};       ///< called at each phase of each write (progress, fault-injection tests)
};

/// A trainer callback that writes checkpoints as it trains and resumes from the newest one.
template <class Trainer>
class checkpointer : public callback {
 public:
  checkpointer(Trainer& t, storage_backend& store, checkpoint_options options = {})
      : trainer_(t), store_(store), options_(std::move(options)) {}

  /// Writes a checkpoint now (every unit of a cluster together), named by the global step.
  void save() {
    const auto name = detail::checkpoint_name(trainer_.position().global_step);
    save_checkpoint(trainer_, store_, name, options_.keep, options_.hook);
    last_saved_ = trainer_.position();
  }

  /// Loads the newest committed checkpoint that every unit can read and check, so that the next
  /// fit continues from it; returns what it loaded (with, in `skipped`, the newer checkpoints that
  /// failed their checks on some unit, and why), or nothing when the store holds no checkpoint.
  /// The units of a cluster must see the same checkpoints, and agree on each candidate (one
  /// unit's damaged chunk makes every unit skip that checkpoint). storage_error when none loads.
  std::optional<checkpoint_info> resume() {
    using S = typename Trainer::scalar;
    const auto all = list_checkpoints(store_);
    const double newest = all.empty() ? -1.0 : static_cast<double>(*detail::step_of_name(all.back()));
    auto agree = detail::agreement(trainer_.network());
    if (agree) {
      double v[2] = {newest, 1.0};
      agree(v);
      if (v[0] != newest * v[1])
        throw storage_error(store_.location(), storage_problem::incomplete,
                            "the units see different newest checkpoints (this one: " +
                                (all.empty() ? std::string("none") : all.back()) + ")");
    }
    if (all.empty()) return std::nullopt;
    const auto layout = layout_of(trainer_.network());
    const auto names = detail::state_names_of(trainer_.optimizer_state());
    std::vector<std::string> skipped;
    for (auto it = all.rbegin(); it != all.rend(); ++it) {
      std::optional<checkpoint_reader<S>> reader;
      bool has_state = false;
      std::string why;
      try {
        reader.emplace(store_, *it, layout, Trainer::options_type::name, names);
        has_state = detail::check_loadable(trainer_, *reader, store_);
      } catch (const error& e) {  // a damaged or foreign checkpoint (storage_error, or a bad learning rate)
        why = e.what();
      }
      double failed[1] = {why.empty() ? 0.0 : 1.0};
      if (agree) agree(failed);
      if (failed[0] == 0) {
        detail::apply_checkpoint(trainer_, *reader, layout.size, has_state);
        checkpoint_info info = reader->info();
        info.skipped = std::move(skipped);
        last_saved_ = info.position;
        return info;
      }
      skipped.push_back(*it + ": " + (why.empty() ? "another unit could not read or check it" : why));
    }
    throw storage_error(store_.location(), storage_problem::corrupt,
                        "no checkpoint could be loaded; the newest: " + skipped.front());
  }

  void on_step_end(const step_end& s) override {
    if (options_.every_steps == 0 || trainer_.position().global_step % options_.every_steps != 0) return;
    if (options_.every_epoch && s.step == s.steps_per_epoch) return;  // the epoch's checkpoint follows
    save();
  }
  void on_epoch_end(const epoch_end&) override {
    if (options_.every_epoch && !(last_saved_ && *last_saved_ == trainer_.position())) save();
  }

 private:
  Trainer& trainer_;
  storage_backend& store_;
  checkpoint_options options_;
  std::optional<training_position> last_saved_;
};

}  // namespace f2d2n
