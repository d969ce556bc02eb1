// bench/train_step_bench.cpp: one training step (forward, backward, SGD update) of the
// 784-256-128-10 MLP, next to the same shapes' GEMMs (through the kernel layer and as plain Eigen
// products) and the core's FMA peak, measured in the same run.
//
//   BM_train_step/B  net.compute_gradients(x, labels) then optimizer<float, sgd>::step, batch B
//   BM_gemms/B/L     exactly the GEMMs a step performs, row-major like the library, nothing else,
//                    through the kernel layer (L = 1: the configured backend) or Eigen (L = 0):
//                      forward   Y = X W^T          (3 layers)
//                      backward  dW = dY^T X        (3 layers)
//                                dX = dY W          (layers 2 and 3; layer 1's dX is not computed)
//   BM_sgd_update    the optimizer step alone over the MLP's 235146 parameters (BM_adam_update: Adam's)
//   BM_gemm/B/L/F    one of those GEMMs alone (also at batches 4096 and 10000 for the first layer)
//   BM_transpose/K   the forward pass's transpose of the first layer's weights (K = 1: the kernel
//                    layer's, 0: Eigen's transpose() assignment)
//   BM_fma_peak      the core's single-precision FMA peak (see there)
//   BM_sgd_update_subnormal_velocity  the same with every momentum value stuck at a subnormal and
//                    zero gradients (dead units, always-zero input pixels): see "Training state"
//
// Counters: samples/s, and GFLOP/s = (sum of 2*m*n*k over the step's GEMMs) / time. The step's
// GFLOP/s uses the same FLOP count as its GEMMs, so step GFLOP/s / GEMM GFLOP/s is the share of
// the GEMMs' rate the whole step keeps (target: >= 0.8 at batch 64 and 256).
//
// Training state: every benchmark run starts from a freshly initialised network, and the network
// and the optimizer are re-initialised (untimed) every 512 steps, on both sides of the PyTorch
// comparison. Without that, what a run measures would depend on how long it trains: on this task
// ReLU units die, their gradients are exactly zero, and after about 800 steps their momentum decays
// into subnormal floats and gets stuck at a few times denorm_min (0.9 * v rounds back to v there);
// every update of those parameters then takes a microcode assist (the SGD update grows from about 0.08 ms to 1.3 ms,
// and PyTorch, which does the same arithmetic, slows from about 43k to 17k samples/s). f2d2n's trainer
// now runs with subnormals flushed (f2d2n::flush_denormals), and so does BM_train_step; the resets
// keep both sides of the comparison on the same workload. BM_sgd_update_subnormal_velocity shows the
// trap's cost with IEEE arithmetic and with the flush.
//
// Data: a pool of 4096 synthetic samples, drawn from f2d2n::random_bits so that
// bench/compare/pytorch_mlp.py builds bit-for-bit the same pool (pixel k = top 24 bits of
// random_bits(42, 0, k) / 2^24 in [0, 1); label i = random_bits(42, 1, i) % 10). Step s trains on
// samples [s*B, s*B + B) of the pool, cyclically, as the PyTorch script does.
//
// The CNN of bench/compare/cnn_vs_pytorch.sh (28 x 28 x 1 -> conv 16 5x5 pad 2 -> relu -> max pool 2
// -> conv 32 5x5 pad 2 -> relu -> max pool 2 -> dense 64 -> relu -> dense 10, channels-last):
//   BM_cnn_step/B       compute_gradients then the SGD step, batch B (pytorch_cnn.py is PyTorch's side)
//   BM_conv_layer/L/B   conv layer L (1: 1 -> 16 channels on 28 x 28; 2: 16 -> 32 on 14 x 14) alone:
//                       forward, then backward (weight gradient; input gradient for layer 2 only, as
//                       in the network), im2col and col2im included
//   BM_conv_gemms/L/B   exactly that layer's products on the same shapes, nothing else
// GFLOP/s of both: the layer's products' FLOPs; their ratio is the layer's share of its GEMMs' rate.
//
//   build/bench/train_step_bench --benchmark_min_time=0.5
//   bench/compare/mlp_vs_pytorch.sh
#include <f2d2n/core/denormals.hpp>
#include <f2d2n/core/random.hpp>
#include <f2d2n/kernel/gemm.hpp>
#include <f2d2n/model/conv.hpp>
#include <f2d2n/model/network.hpp>
#include <f2d2n/train/optimizers.hpp>

#include <benchmark/benchmark.h>

#include <Eigen/Core>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace {

using mlp = f2d2n::sequential<f2d2n::input<784>, f2d2n::dense<256>, f2d2n::relu, f2d2n::dense<128>, f2d2n::relu,
                              f2d2n::dense<10>, f2d2n::softmax_cross_entropy>;
using net_type = f2d2n::network<mlp, float>;
using matrix = f2d2n::matrix<float>;

constexpr std::array<Eigen::Index, 4> widths = {784, 256, 128, 10};  // the dense layers' in/out sizes
constexpr std::uint64_t data_seed = 42;
constexpr Eigen::Index pool_samples = 4096;  // a multiple of every batch size: no batch wraps around
constexpr f2d2n::sgd sgd_options{.learning_rate = 0.01, .momentum = 0.9};
constexpr int steps_per_model = 512;  // then the network and the optimizer start afresh (untimed)

static_assert(net_type::parameter_count == 235146);
static_assert(pool_samples % 256 == 0);

/// FLOPs of the GEMMs in one training step at batch `b` (2*m*n*k each).
double step_flops(Eigen::Index b) {
  double f = 0;
  for (std::size_t l = 0; l + 1 < widths.size(); ++l) {
    const double in = static_cast<double>(widths[l]), out = static_cast<double>(widths[l + 1]);
    const double mnk = static_cast<double>(b) * in * out;
    f += 2 * mnk;             // forward  Y = X W^T
    f += 2 * mnk;             // backward dW = dY^T X
    if (l > 0) f += 2 * mnk;  // backward dX = dY W
  }
  return f;
}

void set_counters(benchmark::State& state, Eigen::Index batch) {
  using benchmark::Counter;
  state.counters["samples/s"] = Counter(static_cast<double>(batch), Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = Counter(step_flops(batch) / 1e9, Counter::kIsIterationInvariantRate);
}

struct synthetic_pool {
  matrix x;
  std::vector<std::int32_t> labels;
};

/// The pool described at the top of the file; pytorch_mlp.py's make_pool() draws the same values.
const synthetic_pool& pool() {
  static const synthetic_pool p = [] {
    synthetic_pool r{matrix(pool_samples, widths[0]), std::vector<std::int32_t>(pool_samples)};
    for (Eigen::Index k = 0; k < r.x.size(); ++k)
      r.x.data()[k] =
          static_cast<float>(f2d2n::random_bits(data_seed, 0, static_cast<std::uint64_t>(k)) >> 40) * 0x1.0p-24f;
    for (Eigen::Index i = 0; i < pool_samples; ++i)
      r.labels[static_cast<std::size_t>(i)] =
          static_cast<std::int32_t>(f2d2n::random_bits(data_seed, 1, static_cast<std::uint64_t>(i)) % 10);
    return r;
  }();
  return p;
}

/// A rows x cols matrix uniform in [-scale, scale), from stream `stream`.
matrix random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint64_t stream, float scale) {
  matrix m(rows, cols);
  for (Eigen::Index k = 0; k < m.size(); ++k)
    m.data()[k] = scale * static_cast<float>(f2d2n::random_symmetric(7, stream, static_cast<std::uint64_t>(k)));
  return m;
}

/// Training steps of network type Net at the batch of argument 0: compute_gradients then the SGD
/// step, the network and optimizer afresh every steps_per_model steps (untimed); returns the last
/// step's result.
template <class Net>
f2d2n::batch_result train_steps(benchmark::State& state) {
  const f2d2n::flush_denormals ftz;  // as trainer::fit runs its steps
  const auto batch = static_cast<Eigen::Index>(state.range(0));
  const auto& data = pool();
  Net net(1);
  f2d2n::optimizer<float, f2d2n::sgd> opt(sgd_options);
  Eigen::Index start = 0;
  int steps = 0;
  f2d2n::batch_result r;
  for (auto _ : state) {
    if (steps == steps_per_model) {
      state.PauseTiming();
      net.initialize(1);
      opt = f2d2n::optimizer<float, f2d2n::sgd>(sgd_options);
      start = 0;
      steps = 0;
      state.ResumeTiming();
    }
    ++steps;
    r = net.compute_gradients(data.x.middleRows(start, batch),
                              std::span<const std::int32_t>(data.labels.data() + start,
                                                            static_cast<std::size_t>(batch)));
    opt.step(net.parameters(), net.gradients());
    benchmark::DoNotOptimize(r);
    benchmark::ClobberMemory();
    start = (start + batch) % pool_samples;
  }
  if (!std::isfinite(r.loss)) state.SkipWithError("the loss is not finite: the step measured is not a sane one");
  return r;
}

void BM_train_step(benchmark::State& state) {
  train_steps<net_type>(state);
  set_counters(state, static_cast<Eigen::Index>(state.range(0)));
}

/// The step's GEMMs, with operands laid out as the library lays them out (samples are rows, W is
/// out x in). Argument 1: through the kernel layer (the backend this program was built with,
/// kernel/gemm.hpp), each layer with its own workspace as in a network; 0: Eigen's products
/// directly (the portable fallback's rate, whatever the backend).
void BM_gemms(benchmark::State& state) {
  namespace k = f2d2n::kernel;
  const auto b = static_cast<Eigen::Index>(state.range(0));
  const bool kernel_layer = state.range(1) != 0;
  const auto [d0, d1, d2, d3] = widths;
  const matrix x0 = pool().x.topRows(b);
  const matrix w1 = random_matrix(d1, d0, 1, 0.08f), w2 = random_matrix(d2, d1, 2, 0.15f),
               w3 = random_matrix(d3, d2, 3, 0.2f);
  matrix y1(b, d1), y2(b, d2), y3(b, d3);
  const matrix dy3 = random_matrix(b, d3, 4, 0.01f);
  matrix dy2(b, d2), dy1(b, d1);
  matrix dw1(d1, d0), dw2(d2, d1), dw3(d3, d2);
  std::array<k::workspace<float>, 3> ws;
  for (auto _ : state) {
    if (kernel_layer) {
      k::multiply<float>(ws[0], k::form::nt, x0, w1, y1);
      k::multiply<float>(ws[1], k::form::nt, y1, w2, y2);
      k::multiply<float>(ws[2], k::form::nt, y2, w3, y3);
      k::multiply<float>(ws[2], k::form::tn, dy3, y2, dw3);
      k::multiply<float>(ws[2], k::form::nn, dy3, w3, dy2);
      k::multiply<float>(ws[1], k::form::tn, dy2, y1, dw2);
      k::multiply<float>(ws[1], k::form::nn, dy2, w2, dy1);
      k::multiply<float>(ws[0], k::form::tn, dy1, x0, dw1);
    } else {
      y1.noalias() = x0 * w1.transpose();
      y2.noalias() = y1 * w2.transpose();
      y3.noalias() = y2 * w3.transpose();
      dw3.noalias() = dy3.transpose() * y2;
      dy2.noalias() = dy3 * w3;
      dw2.noalias() = dy2.transpose() * y1;
      dy1.noalias() = dy2 * w2;
      dw1.noalias() = dy1.transpose() * x0;
    }
    benchmark::DoNotOptimize(y3.data());
    benchmark::DoNotOptimize(dw1.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, b);
}

/// One GEMM of the step alone, through the kernel layer: args batch, layer (0..2), form (0 nn, 1 nt
/// forward, 2 tn weight gradient).
void BM_gemm(benchmark::State& state) {
  namespace k = f2d2n::kernel;
  const auto b = static_cast<Eigen::Index>(state.range(0));
  const auto layer = static_cast<std::size_t>(state.range(1));
  const auto op = static_cast<k::form>(state.range(2));
  const Eigen::Index in = widths[layer], out = widths[layer + 1];
  const matrix x = random_matrix(b, in, 8, 1), w = random_matrix(out, in, 9, 0.1f), dy = random_matrix(b, out, 10, 0.1f);
  matrix y(b, out), dw(out, in), dx(b, in);
  k::workspace<float> ws;
  for (auto _ : state) {
    switch (op) {
      case k::form::nt: k::multiply<float>(ws, op, x, w, y); break;
      case k::form::tn: k::multiply<float>(ws, op, dy, x, dw); break;
      case k::form::nn: k::multiply<float>(ws, op, dy, w, dx); break;
    }
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(b * in * out) / 1e9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

/// The transpose behind the forward pass's nt form (kernel/transpose.hpp) on the first layer's
/// 256 x 784 weights; argument 1: kernel::transpose, 0: Eigen's transpose() assignment.
void BM_transpose(benchmark::State& state) {
  const matrix w = random_matrix(widths[1], widths[0], 11, 1);
  matrix t(widths[0], widths[1]);
  for (auto _ : state) {
    if (state.range(0) != 0)
      f2d2n::kernel::transpose(w.data(), w.cols(), t.data(), t.cols(), w.rows(), w.cols());
    else
      t.noalias() = w.transpose();
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * w.size() * static_cast<std::int64_t>(sizeof(float)));
}

// Eigen's packet types carry vector attributes that GCC drops (and warns about) in template arguments.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif
/// The core's single-precision peak: an FMA loop over 16 independent accumulators of Eigen's
/// widest packet for this build (-march=native: 16 floats with AVX-512), enough to cover the FMA
/// units' latency, nothing loaded from memory. GFLOP/s counts 2 per lane per FMA. What the step's
/// and the GEMMs' rates are compared with (mlp_vs_pytorch.sh); no GEMM can beat it, and the
/// script checks that none did (a probe that runs below the core's peak would flatter the step).
void BM_fma_peak(benchmark::State& state) {
  using packet = Eigen::internal::packet_traits<float>::type;
  constexpr int lanes = Eigen::internal::unpacket_traits<packet>::size;
  constexpr int accumulators = 16;
  constexpr int rounds = 4096;
  std::array<packet, accumulators> acc{};
  for (int j = 0; j < accumulators; ++j) acc[static_cast<std::size_t>(j)] = Eigen::internal::pset1<packet>(float(j));
  // a = a * 0.999 + 0.5 converges to 500: no overflow, no subnormal, whatever the iteration count.
  const packet x = Eigen::internal::pset1<packet>(0.999f), y = Eigen::internal::pset1<packet>(0.5f);
  for (auto _ : state) {
    for (int i = 0; i < rounds; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < accumulators; ++j)
        acc[static_cast<std::size_t>(j)] = Eigen::internal::pmadd(acc[static_cast<std::size_t>(j)], x, y);
    }
    for (auto& a : acc) benchmark::DoNotOptimize(a);
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * lanes * accumulators * rounds / 1e9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
  state.counters["lanes"] = lanes;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

/// One optimizer's update alone over the MLP's parameters: SGD with momentum (w, g and v read, v
/// and w written: 5 buffers' bytes) and Adam, the examples' default (w, g, m and v read, m, v and w
/// written: 7).
template <class Options, int Buffers>
void update_benchmark(benchmark::State& state, Options options) {
  constexpr auto n = static_cast<Eigen::Index>(net_type::parameter_count);
  f2d2n::vector<float> params = random_matrix(n, 1, 5, 0.1f);
  const f2d2n::vector<float> grads = random_matrix(n, 1, 6, 1e-3f);
  f2d2n::optimizer<float, Options> opt(options);
  for (auto _ : state) {
    opt.step(std::span<float>(params.data(), static_cast<std::size_t>(n)),
             std::span<const float>(grads.data(), static_cast<std::size_t>(n)));
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * static_cast<std::int64_t>(sizeof(float)) * Buffers);
  state.counters["params/s"] =
      benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}
void BM_sgd_update(benchmark::State& state) { update_benchmark<f2d2n::sgd, 5>(state, sgd_options); }
void BM_adam_update(benchmark::State& state) { update_benchmark<f2d2n::adam, 7>(state, f2d2n::adam{}); }

/// The end state of the trap described at the top: every momentum value subnormal and stuck there
/// (0.9 * 4 * denorm_min rounds back to 4 * denorm_min), gradients exactly zero. Argument 0: IEEE
/// arithmetic; 1: under f2d2n::flush_denormals, as trainer::fit runs (the fix).
void BM_sgd_update_subnormal_velocity(benchmark::State& state) {
  const f2d2n::flush_denormals ftz(state.range(0) != 0);
  constexpr auto n = static_cast<Eigen::Index>(net_type::parameter_count);
  f2d2n::vector<float> params = random_matrix(n, 1, 5, 0.1f);
  f2d2n::vector<float> grads = f2d2n::vector<float>::Constant(n, 4 * std::numeric_limits<float>::denorm_min());
  f2d2n::optimizer<float, f2d2n::sgd> opt(sgd_options);
  const auto step = [&] {
    opt.step(std::span<float>(params.data(), static_cast<std::size_t>(n)),
             std::span<const float>(grads.data(), static_cast<std::size_t>(n)));
  };
  step();  // velocity = 4 * denorm_min everywhere
  grads.setZero();
  for (auto _ : state) {
    step();
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * static_cast<std::int64_t>(sizeof(float)) * 5);
  state.counters["params/s"] =
      benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}


// ---------------------------------------------------------------------------------------------
// The CNN (see the top of the file).

using cnn = f2d2n::sequential<f2d2n::input<28, 28>, f2d2n::conv2d<16, 5, 1, 2>, f2d2n::relu, f2d2n::max_pool<2>,
                              f2d2n::conv2d<32, 5, 1, 2>, f2d2n::relu, f2d2n::max_pool<2>, f2d2n::flatten,
                              f2d2n::dense<64>, f2d2n::relu, f2d2n::dense<10>, f2d2n::softmax_cross_entropy>;
using cnn_type = f2d2n::network<cnn, float>;

void BM_cnn_step(benchmark::State& state) {
  train_steps<cnn_type>(state);
  state.counters["samples/s"] =
      benchmark::Counter(static_cast<double>(state.range(0)), benchmark::Counter::kIsIterationInvariantRate);
}

/// Conv layer 1 or 2 of the CNN: its index in the sequential, and its geometry.
struct conv_case {
  std::size_t index;
  f2d2n::detail::conv_geometry g;
  bool input_gradient;
};
conv_case conv_of(std::int64_t which) {
  const std::size_t i = which == 1 ? 1 : 4;
  f2d2n::layer_context ctx;
  ctx.in = cnn::input_extents[i];
  ctx.out = cnn::output_extents[i];
  return {i, f2d2n::detail::geometry_of(ctx, f2d2n::window{5, 5}, f2d2n::window{1, 1}, f2d2n::window{2, 2}), which != 1};
}
double conv_flops(const conv_case& c, Eigen::Index batch) {
  const double mnk = static_cast<double>(batch * c.g.pixels() * c.g.co * c.g.patch());
  return 2 * mnk * (c.input_gradient ? 3 : 2);
}

void BM_conv_layer(benchmark::State& state) {
  const auto c = conv_of(state.range(0));
  const auto batch = static_cast<Eigen::Index>(state.range(1));
  const auto in = static_cast<Eigen::Index>(c.g.h * c.g.w * c.g.c), out = static_cast<Eigen::Index>(c.g.pixels() * c.g.co);
  const matrix x = random_matrix(batch, in, 20, 1), dy = random_matrix(batch, out, 21, 0.01f);
  const matrix w = random_matrix(1, c.g.co * c.g.patch() + c.g.co, 22, 0.1f);
  matrix y(batch, out), dx(batch, in), g(1, w.cols());
  f2d2n::kernel::workspace<float> ws;
  for (auto _ : state) {
    f2d2n::detail::conv_kernels::forward<float>(ws, c.g, w.data(), x, y);
    f2d2n::detail::conv_kernels::backward<float>(ws, c.g, w.data(), g.data(), x, dy, dx, c.input_gradient);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(conv_flops(c, batch) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

/// The products BM_conv_layer runs, in the same groups of samples and the same route (patches,
/// or taps for one input channel: conv_kernels::by_taps), on ready operands.
void BM_conv_gemms(benchmark::State& state) {
  namespace k = f2d2n::kernel;
  const auto c = conv_of(state.range(0));
  const auto batch = static_cast<Eigen::Index>(state.range(1));
  const auto group = f2d2n::detail::conv_kernels::samples_per_group(c.g, batch, true);
  const bool taps = f2d2n::detail::conv_kernels::by_taps(c.g);
  const auto rows = c.g.pixels() * group, patch = c.g.patch();
  const matrix p = random_matrix(rows, patch, 23, 1), q = random_matrix(patch, rows, 23, 1),
               w = random_matrix(c.g.co, patch, 24, 0.1f), wt = random_matrix(patch, c.g.co, 24, 0.1f),
               dy = random_matrix(rows, c.g.co, 25, 0.01f);
  matrix y(rows, c.g.co), dw(c.g.co, patch), gt(patch, c.g.co), dp(rows, patch), dq(patch, rows);
  k::workspace<float> ws;
  for (auto _ : state) {
    for (Eigen::Index n0 = 0; n0 < batch; n0 += group) {
      const auto r = std::min(group, batch - n0) * c.g.pixels();
      if (taps) k::multiply<float>(ws, k::form::tn, q.leftCols(r), wt, y.topRows(r));
      else k::multiply<float>(ws, k::form::nt, p.topRows(r), w, y.topRows(r));
    }
    for (Eigen::Index n0 = 0; n0 < batch; n0 += group) {
      const auto r = std::min(group, batch - n0) * c.g.pixels();
      if (taps) {
        k::multiply<float>(ws, k::form::nn, q.leftCols(r), dy.topRows(r), gt);
        if (c.input_gradient) k::multiply<float>(ws, k::form::nt, wt, dy.topRows(r), dq.leftCols(r));
      } else {
        k::multiply<float>(ws, k::form::tn, dy.topRows(r), p.topRows(r), dw);
        if (c.input_gradient) k::multiply<float>(ws, k::form::nn, dy.topRows(r), w, dp.topRows(r));
      }
    }
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(conv_flops(c, batch) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK(BM_cnn_step)->Arg(64)->Arg(256)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_conv_layer)->ArgNames({"layer", "batch"})->ArgsProduct({{1, 2}, {64}})->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_conv_gemms)->ArgNames({"layer", "batch"})->ArgsProduct({{1, 2}, {64}})->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_train_step)->Arg(32)->Arg(64)->Arg(256)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_gemms)
    ->ArgNames({"batch", "kernel_layer"})
    ->ArgsProduct({{32, 64, 256}, {1, 0}})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_gemm)->ArgNames({"batch", "layer", "form"})->ArgsProduct({{64, 256}, {0, 1, 2}, {0, 1, 2}})
    ->Unit(benchmark::kMicrosecond);
// Long sums: the weight gradient (form 2) over large batches runs in chunks of kernel::tn_chunk rows.
BENCHMARK(BM_gemm)->ArgNames({"batch", "layer", "form"})->ArgsProduct({{4096, 10000}, {0}, {0, 1, 2}})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_transpose)->ArgName("kernel")->Arg(1)->Arg(0)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_fma_peak)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_sgd_update)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_adam_update)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_sgd_update_subnormal_velocity)->ArgName("flushed")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string_view(argv[1]) == "--backend") {  // for bench/compare/mlp_vs_pytorch.sh
    std::printf("%s\n", f2d2n::kernel::backend_description().c_str());
    return 0;
  }
  benchmark::AddCustomContext("kernels", f2d2n::kernel::backend_description());
  benchmark::AddCustomContext("eigen", std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) +
                                           "." + std::to_string(EIGEN_MINOR_VERSION));
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
  benchmark::AddCustomContext("eigen_threads", std::to_string(Eigen::nbThreads()));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
