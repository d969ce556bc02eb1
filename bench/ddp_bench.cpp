// bench/ddp_bench.cpp: training steps of the 784-256-128-10 MLP, data parallel over TCP (DP2:
// f2d2n::distribute<mlp, f2d2n::data_parallel<2>>, one process per unit) or serial (one process),
// timed by the wall clock. Not Google Benchmark: every unit runs the same loop, started by
// f2d2n_launch. bench/compare/ddp_vs_f2d2n.sh runs it next to PyTorch DistributedDataParallel.
//
//   build/tools/f2d2n_launch -n 2 -- build/bench/ddp_bench [options]     DP2 over TCP (loopback)
//   mpirun -np 2 build/bench/ddp_bench [options]                          DP2 over f2d2n's MPI transport
//   build/bench/ddp_bench --serial [options]                              f2d2n::network, one process
//
// A step, at global batch B: net.compute_gradients(x, labels) then optimizer<float, sgd>::step over
// the unit's parameters: the loop of f2d2n::trainer::fit without its shuffling and callbacks
// (subnormals flushed, as fit runs). In DP2 every unit is handed the whole batch and computes its
// replica's B/2 rows (distributed_network's balanced split); the gradients (with the loss sum and
// the correct count) are summed by one ring all-reduce at the end of compute_gradients. Serial: the
// same step on f2d2n::network with all B rows.
//
// Settings as bench/compare/pytorch_ddp.py: float32, SGD(lr 0.01, momentum 0.9), softmax
// cross-entropy (mean over the global batch), data: the synthetic pool of 4096 samples of
// bench/train_step_bench.cpp (pixel k = top 24 bits of random_bits(42, 0, k) / 2^24, label i =
// random_bits(42, 1, i) % 10); step s trains on samples [s*B, s*B + B) of the pool, cyclically.
//
// For each global batch size, `repetitions` runs, each: a fresh network (seed 1) and optimizer,
// `warmup` untimed steps, then `steps` timed ones (the median run by samples/s is printed); warmup + steps is at most
// 512 (a fresh model every 512 steps keeps the momentum of dead ReLU units out of subnormals on the PyTorch side, see
// train_step_bench.cpp). In DP2 the clock starts when the last warm-up step returns (its all-reduce lines the units up)
// and stops when the last timed step's optimizer update is done. Unit 0 (the only process when
// serial) prints one line per batch size:
//
//   ddp_bench mode=<dp2|serial> batch=<global B> steps=<n> seconds=<wall> samples/s=<n B / seconds>
//     step_ms=<median step> grad_ms=<median compute_gradients, its all-reduce included>
//     update_ms=<median optimizer step> allreduce_ms=<median of a lone all-reduce of the gradient buffer>
//
// (one line; allreduce_ms only in DP2: the same all-reduce as a step's, measured after the timed
// steps with the units lined up by a small all-reduce first, so it shows the cost of the
// communication itself, without waiting for the slower unit's compute). Lines starting with '#' are
// comments.
//
// Options:
//   --serial            one process, f2d2n::network (no cluster configuration needed)
//   --batches LIST      comma-separated global batch sizes (default 64,128); each must divide 4096
//   --steps N           timed steps per run (default 480)
//   --warmup N          untimed steps first (default 32)
//   --repetitions N     runs per batch size, each from a fresh network; the median run is printed (default 3)
//   --timeout-ms N      collective::timeout in DP2 (default 60000)
//   --buckets           DP2 sums the gradients in buckets of 32768 values (data_parallel<2, 32768>:
//                       the last layers' first, then the first layer's) instead of in one all-reduce
//   --overlap           with --buckets: on a second thread of each unit (distributed_options::overlap)
//   --flight-records N  the units' flight recorders keep N operations (distributed_options::flight_records,
//                       default 64); 0 records nothing: the recorder's cost is the difference
#include <f2d2n/comm/primitives.hpp>
#include <f2d2n/core/denormals.hpp>
#include <f2d2n/core/random.hpp>
#include <f2d2n/launch/transport.hpp>
#include <f2d2n/model/network.hpp>
#include <f2d2n/plan/distribute.hpp>
#include <f2d2n/train/distributed_network.hpp>
#include <f2d2n/train/optimizers.hpp>
#include <f2d2n/transport/tcp.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace nn = f2d2n;

using mlp = nn::sequential<nn::input<784>, nn::dense<256>, nn::relu, nn::dense<128>, nn::relu, nn::dense<10>,
                           nn::softmax_cross_entropy>;
using plan = nn::distribute<mlp, nn::data_parallel<2>>;
using bucketed_plan = nn::distribute<mlp, nn::data_parallel<2, 32768>>;
using clock_type = std::chrono::steady_clock;

static_assert(plan::world_size == 2);
static_assert(mlp::parameter_count == 235146);

constexpr std::uint64_t data_seed = 42;
constexpr Eigen::Index pool_samples = 4096;
constexpr Eigen::Index features = 784;
constexpr std::size_t steps_per_model = 512;
constexpr nn::sgd sgd_options{.learning_rate = 0.01, .momentum = 0.9};
// Message ids of this program's own collectives (the network's are in detail:: of
// train/distributed_network.hpp: small ones, 16 * layer + k, and 0x100000 upwards).
constexpr std::uint32_t line_up_message = 1001;
constexpr std::uint32_t lone_allreduce_message = 1002;

struct options {
  bool serial = false;
  bool buckets = false;
  bool overlap = false;
  std::vector<std::size_t> batches{64, 128};
  std::size_t steps = 480;
  std::size_t warmup = 32;
  std::size_t repetitions = 3;
  std::size_t timeout_ms = 60000;
  std::size_t flight_records = nn::flight_recorder::default_capacity;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "ddp_bench: %s\nusage: ddp_bench [--serial] [--batches 64,128] [--steps N] [--warmup N] "
               "[--repetitions N] [--timeout-ms N] [--buckets [--overlap]] [--flight-records N]\n"
               "  DP2: f2d2n_launch -n 2 -- ddp_bench ...\n",
               why.c_str());
  std::exit(2);
}

std::size_t number(std::string_view name, const std::string& text, std::size_t min) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || text[0] < '0' || text[0] > '9' || *end != '\0' || v < min)
    usage(std::string(name) + " wants a whole number of at least " + std::to_string(min) + ", not '" + text + "'");
  return static_cast<std::size_t>(v);
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--serial" || a == "--buckets" || a == "--overlap") {
      (a == "--serial" ? o.serial : a == "--buckets" ? o.buckets : o.overlap) = true;
      continue;
    }
    if (a == "--help" || a == "-h") usage("training steps of the MLP, DP2 over TCP or serial");
    if (i + 1 >= argc) usage("option " + std::string(a) + " is unknown or lacks its value");
    const std::string v = argv[++i];
    if (a == "--batches") {
      o.batches.clear();
      for (std::size_t b = 0; b <= v.size();) {
        const auto c = std::min(v.find(',', b), v.size());
        const std::size_t batch = number(a, v.substr(b, c - b), 2);
        if (static_cast<std::size_t>(pool_samples) % batch != 0)
          usage("batch " + std::to_string(batch) + " must divide the pool's 4096 samples");
        o.batches.push_back(batch);
        b = c + 1;
      }
    } else if (a == "--steps") {
      o.steps = number(a, v, 1);
    } else if (a == "--warmup") {
      o.warmup = number(a, v, 1);
    } else if (a == "--repetitions") {
      o.repetitions = number(a, v, 1);
    } else if (a == "--timeout-ms") {
      o.timeout_ms = number(a, v, 1);
    } else if (a == "--flight-records") {
      o.flight_records = number(a, v, 0);
    } else {
      usage("unknown option " + std::string(a));
    }
  }
  if (o.overlap && !o.buckets) usage("--overlap needs --buckets: one bucket leaves nothing to overlap");
  if (o.steps + o.warmup > steps_per_model)
    usage("--warmup + --steps must be at most " + std::to_string(steps_per_model) + " (one model, no subnormal trap)");
  return o;
}

struct synthetic_pool {
  nn::matrix<float> x;
  std::vector<std::int32_t> labels;
};

/// The pool of bench/train_step_bench.cpp; bench/compare/pytorch_ddp.py draws the same values.
synthetic_pool make_pool() {
  synthetic_pool r{nn::matrix<float>(pool_samples, features), std::vector<std::int32_t>(pool_samples)};
  for (Eigen::Index k = 0; k < r.x.size(); ++k)
    r.x.data()[k] = static_cast<float>(nn::random_bits(data_seed, 0, static_cast<std::uint64_t>(k)) >> 40) * 0x1.0p-24f;
  for (Eigen::Index i = 0; i < pool_samples; ++i)
    r.labels[static_cast<std::size_t>(i)] =
        static_cast<std::int32_t>(nn::random_bits(data_seed, 1, static_cast<std::uint64_t>(i)) % 10);
  return r;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double ms(clock_type::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct timing {
  double seconds = 0;
  std::vector<double> step_ms, grad_ms, update_ms;
};

/// Runs warmup + steps steps of `net` at global batch `batch`; times the steps after the warm-up.
template <class Net>
timing run_steps(Net& net, const synthetic_pool& pool, std::size_t batch, const options& o) {
  nn::optimizer<float, nn::sgd> opt(sgd_options);
  const auto b = static_cast<Eigen::Index>(batch);
  Eigen::Index start = 0;
  nn::batch_result r;
  timing t;
  clock_type::time_point begin;
  for (std::size_t s = 0; s < o.warmup + o.steps; ++s) {
    if (s == o.warmup) begin = clock_type::now();
    const auto t0 = clock_type::now();
    r = net.compute_gradients(pool.x.middleRows(start, b),
                              std::span<const std::int32_t>(pool.labels.data() + start, batch));
    const auto t1 = clock_type::now();
    opt.step(net.parameters(), net.gradients());
    const auto t2 = clock_type::now();
    if (s >= o.warmup) {
      t.step_ms.push_back(ms(t2 - t0));
      t.grad_ms.push_back(ms(t1 - t0));
      t.update_ms.push_back(ms(t2 - t1));
    }
    start = (start + b) % pool_samples;
  }
  t.seconds = std::chrono::duration<double>(clock_type::now() - begin).count();
  if (!std::isfinite(r.loss)) throw std::runtime_error("the loss is not finite: the steps measured are not sane ones");
  return t;
}

/// The run of median samples/s (the upper one of the middle two when even).
timing median_run(std::vector<timing> runs) {
  std::sort(runs.begin(), runs.end(), [](const timing& a, const timing& b) { return a.seconds > b.seconds; });
  return runs[runs.size() / 2];
}

void report(const char* mode, std::size_t batch, const options& o, const timing& t, double allreduce_ms) {
  std::printf(
      "ddp_bench mode=%s batch=%zu steps=%zu seconds=%.6f samples/s=%.1f step_ms=%.4f grad_ms=%.4f "
      "update_ms=%.4f",
      mode, batch, o.steps, t.seconds, static_cast<double>(o.steps * batch) / t.seconds, median(t.step_ms),
      median(t.grad_ms), median(t.update_ms));
  if (allreduce_ms >= 0) std::printf(" allreduce_ms=%.4f", allreduce_ms);
  std::printf("\n");
  std::fflush(stdout);
}

int run_serial(const options& o, const synthetic_pool& pool) {
  const nn::flush_denormals ftz;  // as trainer::fit runs its steps
  std::printf(
      "# f2d2n serial: network<mlp>, one process, one thread (Eigen %d.%d.%d, %s); synthetic pool of %ld; "
      "warmup %zu, %zu timed steps, %zu run(s) per batch size\n",
      EIGEN_WORLD_VERSION, EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION, Eigen::SimdInstructionSetsInUse(),
      static_cast<long>(pool_samples), o.warmup, o.steps, o.repetitions);
  for (const std::size_t batch : o.batches) {
    std::vector<timing> runs;
    for (std::size_t r = 0; r < o.repetitions; ++r) {
      nn::network<mlp, float> net(1);
      runs.push_back(run_steps(net, pool, batch, o));
    }
    report("serial", batch, o, median_run(std::move(runs)), -1);
  }
  return 0;
}

template <class Plan>
int run_dp2(const options& o, const synthetic_pool& pool) {
  const nn::cluster_config cfg = nn::cluster_from_environment();
  if (cfg.world_size != Plan::world_size)
    usage("DP2 needs 2 units (f2d2n_launch -n 2), this cluster has " + std::to_string(cfg.world_size));
  nn::cluster_transport unit(cfg, Plan::fingerprint);
  auto& t = unit.get();
  const nn::distributed_options dopts{.timeout = std::chrono::milliseconds(o.timeout_ms),
                                      .overlap = o.overlap,
                                      .flight_records = o.flight_records};
  const nn::group world = nn::group::world(cfg.world_size);
  std::uint64_t step = 0;  // this program's own collectives: their own ids and steps
  auto call = [&](std::uint32_t message) {
    return nn::call_options{.message_id = message, .step = step++, .timeout = std::chrono::milliseconds(o.timeout_ms)};
  };
  std::vector<float> token(cfg.world_size);
  auto line_up = [&] { nn::all_reduce(t, world, std::span<float>(token), call(line_up_message)); };

  const nn::flush_denormals ftz;
  if (cfg.rank == 0)
    std::printf(
        "# f2d2n DP2: distribute<mlp, data_parallel<2%s>> over %s, 2 processes, one "
        "thread of compute each%s; flight recorders of %zu operations; %zu bytes sent per unit and step at batch "
        "%zu; warmup %zu, %zu timed steps, %zu run(s) per batch size\n",
        o.buckets ? ", 32768" : "",
        unit.name(),
        o.overlap ? " and one summing the gradient buckets" : "", o.flight_records,
        static_cast<std::size_t>(Plan::bytes_sent_per_step(0, o.batches.front())), o.batches.front(), o.warmup, o.steps,
        o.repetitions);
  for (const std::size_t batch : o.batches) {
    std::vector<timing> runs;
    for (std::size_t r = 0; r < o.repetitions; ++r) {
      nn::distributed_network<Plan, nn::any_transport> net(t, /*seed=*/1, dopts);
      line_up();
      runs.push_back(run_steps(net, pool, batch, o));
    }
    const timing tm = median_run(std::move(runs));  // unit 0's runs (unit 1's differ by the last step's wait)
    // The step's all-reduce alone: the loss sum, correct count and padding, then the gradients.
    std::vector<float, Eigen::aligned_allocator<float>> grads(Plan::gradient_offset +
                                                                  Plan::parameter_count_of(cfg.rank),
                                                              1e-3f);
    std::vector<double> lone;
    for (int k = 0; k < 30; ++k) {
      line_up();
      const auto t0 = clock_type::now();
      nn::all_reduce(t, world, std::span<float>(grads.data(), grads.size()), call(lone_allreduce_message));
      lone.push_back(ms(clock_type::now() - t0));
    }
    if (cfg.rank == 0) report("dp2", batch, o, tm, median(lone));
  }
  line_up();  // nobody shuts down while a peer still waits for its last frame
  t.shutdown();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const options o = parse(argc, argv);
    const synthetic_pool pool = make_pool();
    if (o.serial) return run_serial(o, pool);
    if (!std::getenv(nn::world_size_variable) && nn::chosen_transport() != nn::transport_kind::mpi)
      usage(std::string("no cluster configuration (") + nn::world_size_variable +
            " is not set): start it with f2d2n_launch -n 2" + (nn::built_with_mpi() ? " or mpirun -np 2" : "") +
            ", or pass --serial");
    return o.buckets ? run_dp2<bucketed_plan>(o, pool) : run_dp2<plan>(o, pool);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ddp_bench: %s\n", e.what());
    return 1;
  }
}
