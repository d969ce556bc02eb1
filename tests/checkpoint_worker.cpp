// A unit that trains with checkpoints, started by f2d2n_launch over TCP (tests/checkpoint_*.sh):
// interrupted and resumed, or killed and restarted, its run must end bitwise where the
// uninterrupted run ends.
//
//   checkpoint_worker train <plan> <dir> [--resume] [--stop-after S] [--kill A:R:S:PHASE[,...]]
//       trains <plan> (serial, dp2_tp2, pp2) for 6 epochs of 5 steps on tests/plan_suite.hpp's
//       data, a checkpoint every 2 steps and after every epoch (the newest 2 kept) into <dir>.
//       --resume: first resume from the newest committed checkpoint, if any.
//       --stop-after S: every unit exits (code 0) after global step S, as if the job had ended.
//       --kill: on attempt A (F2D2N_RESTART), unit R kills itself with SIGKILL at global step S,
//       at PHASE: "step" (after the optimizer's step), or inside the checkpoint of step S: "data"
//       (its data file written), "agreed" (all parts written), "committed" (manifest committed).
//   checkpoint_worker compare <dir A> <dir B>
//       exit 0 when the newest checkpoints of both are at the same position and hold bitwise the
//       same parameters and optimizer state.
#include "plan_suite.hpp"

#include <f2d2n/launch/config.hpp>
#include <f2d2n/launch/tcp.hpp>
#include <f2d2n/plan/description.hpp>
#include <f2d2n/train/checkpoint.hpp>
#include <f2d2n/transport/tcp.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

namespace nn = f2d2n;
using namespace f2d2n::testing;

namespace {

struct kill_point {
  unsigned attempt = 0, rank = 0;
  std::uint64_t step = 0;
  std::string phase;
};

struct settings {
  std::string plan, dir;
  bool resume = false;
  std::uint64_t stop_after = 0;
  std::vector<kill_point> kills;
  unsigned attempt = 0;
};

nn::fit_options fit() {
  nn::fit_options f;
  f.epochs = 6;
  f.max_steps_per_epoch = 5;
  f.batch_size = 12;
  f.seed = 3;
  return f;
}

/// Stops the run where the settings say.
class stopper : public nn::callback {
 public:
  stopper(const settings& s, unsigned rank, const nn::training_position& p) : s_(s), rank_(rank), position_(p) {}
  void on_step_end(const nn::step_end&) override {
    const auto step = position_.global_step;
    for (const auto& k : s_.kills)
      if (k.attempt == s_.attempt && k.rank == rank_ && k.step == step && k.phase == "step") die("step");
    if (s_.stop_after != 0 && step == s_.stop_after) {
      std::printf("unit %u: stopping after step %llu\n", rank_, static_cast<unsigned long long>(step));
      std::fflush(stdout);
      std::_Exit(0);
    }
  }
  void die(const char* where) const {
    std::printf("unit %u: killing myself at step %llu (%s)\n", rank_,
                static_cast<unsigned long long>(position_.global_step), where);
    std::fflush(stdout);
    std::raise(SIGKILL);
  }

 private:
  const settings& s_;
  unsigned rank_;
  const nn::training_position& position_;
};

template <class Network>
int train(Network& net, const settings& s, unsigned rank) {
  nn::directory_backend store(s.dir);
  nn::trainer t(net, plan_sgd());
  stopper stop(s, rank, t.position());
  nn::checkpoint_options o;
  o.every_steps = 2;
  o.keep = 2;
  o.hook = [&](std::string_view phase) {
    const auto step = t.position().global_step;
    for (const auto& k : s.kills)
      if (k.attempt == s.attempt && k.rank == rank && k.step == step &&
          ((k.phase == "data" && phase == "data written") || (k.phase == "agreed" && phase == "parts agreed") ||
           (k.phase == "committed" && phase == "manifest committed")))
        stop.die(k.phase.c_str());
  };
  nn::checkpointer ck(t, store, o);
  t.add(ck);
  t.add(stop);
  if (s.resume) {
    if (const auto info = ck.resume())
      std::printf("unit %u: resumed from %s (epoch %llu, step %llu)\n", rank, info->name.c_str(),
                  static_cast<unsigned long long>(info->position.epoch),
                  static_cast<unsigned long long>(info->position.step));
    else std::printf("unit %u: no checkpoint yet, starting\n", rank);
  }
  t.fit(plan_data<float>(), fit());
  std::printf("unit %u: trained to step %llu\n", rank, static_cast<unsigned long long>(t.position().global_step));
  return 0;
}

template <class Plan>
int train_plan(const settings& s) {
  const auto c = nn::config_from_environment();
  nn::tcp_transport t(c.rank, c.peers, Plan::fingerprint, nn::tcp_options_of(c, {}, nn::peer_description<Plan>()));
  nn::distributed_network<Plan, nn::tcp_transport> net(t, 11);
  const int code = train(net, s, c.rank);
  t.shutdown();
  return code;
}

int compare(const std::string& a, const std::string& b) {
  nn::directory_backend sa(a), sb(b);
  const auto na = nn::latest_checkpoint(sa), nb = nn::latest_checkpoint(sb);
  if (!na || !nb) {
    std::printf("compare: no checkpoint in %s\n", !na ? a.c_str() : b.c_str());
    return 1;
  }
  using net_type = nn::network<plan_mlp, float>;
  net_type x(1), y(2);
  nn::trainer tx(x, plan_sgd()), ty(y, plan_sgd());
  const auto ia = nn::load_checkpoint(tx, sa, *na), ib = nn::load_checkpoint(ty, sb, *nb);
  const bool same_position = ia.position == ib.position && ia.optimizer_steps == ib.optimizer_steps;
  const bool same_weights = std::equal(x.parameters().begin(), x.parameters().end(), y.parameters().begin());
  const auto mx = tx.optimizer_state().state(0), my = ty.optimizer_state().state(0);
  const bool same_state = std::equal(mx.begin(), mx.end(), my.begin(), my.end());
  std::printf("compare: %s (step %llu) and %s (step %llu): position %s, parameters %s, momentum %s\n", na->c_str(),
              static_cast<unsigned long long>(ia.position.global_step), nb->c_str(),
              static_cast<unsigned long long>(ib.position.global_step), same_position ? "same" : "DIFFERENT",
              same_weights ? "bitwise equal" : "DIFFERENT", same_state ? "bitwise equal" : "DIFFERENT");
  return same_position && same_weights && same_state ? 0 : 1;
}

std::vector<kill_point> parse_kills(const std::string& text) {
  std::vector<kill_point> out;
  std::stringstream list(text);
  std::string item;
  while (std::getline(list, item, ',')) {
    kill_point k;
    char phase[16] = {};
    unsigned long long step = 0;
    if (std::sscanf(item.c_str(), "%u:%u:%llu:%15s", &k.attempt, &k.rank, &step, phase) != 4)
      throw nn::configuration_error("bad --kill item '" + item + "' (attempt:rank:step:phase)");
    k.step = step;
    k.phase = phase;
    out.push_back(k);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 3 && args[0] == "compare") return compare(args[1], args[2]);
  if (args.size() < 3 || args[0] != "train") {
    std::fprintf(stderr, "usage: checkpoint_worker train <serial|dp2_tp2|pp2> <dir> [options] | compare <dir> <dir>\n");
    return 2;
  }
  settings s;
  s.plan = args[1];
  s.dir = args[2];
  for (std::size_t i = 3; i < args.size(); ++i) {
    if (args[i] == "--resume") s.resume = true;
    else if (args[i] == "--stop-after" && i + 1 < args.size()) s.stop_after = std::stoull(args[++i]);
    else if (args[i] == "--kill" && i + 1 < args.size()) s.kills = parse_kills(args[++i]);
    else throw nn::configuration_error("unknown argument " + args[i]);
  }
  if (const char* r = std::getenv(nn::restart_variable)) s.attempt = static_cast<unsigned>(std::atoi(r));
  if (s.plan == "serial") {
    nn::network<plan_mlp, float> net(11);
    return train(net, s, 0);
  }
  if (s.plan == "dp2_tp2") return train_plan<plan_dp2_tp2>(s);
  if (s.plan == "pp2") return train_plan<plan_pp2_1f1b>(s);
  std::fprintf(stderr, "checkpoint_worker: unknown plan %s\n", s.plan.c_str());
  return 2;
} catch (const std::exception& e) {
  std::fprintf(stderr, "checkpoint_worker: %s\n", e.what());
  return 1;
}
