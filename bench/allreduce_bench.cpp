// bench/allreduce_bench.cpp: bus bandwidth of f2d2n's all-reduce over shared memory, TCP or MPI, one process
// per unit. Not Google Benchmark: every unit runs the same loop, started by f2d2n_launch (TCP) or
// mpirun (f2d2n's MPI transport, where it was built with f2d2n::mpi).
//
//   build/tools/f2d2n_launch -n 4 -- build/bench/allreduce_bench [options]
//   mpirun -np 4 build/bench/allreduce_bench [options]
//
// For each size (MiB of float32): the buffer is filled (rank + 1 everywhere), `warmup` all-reduces
// run (the first one is checked: every element must be p (p + 1) / 2), then `repetitions` timed
// ones. Before each timed all-reduce the buffer is refilled (untimed, so that the values stay
// finite and both this program and bench/compare/mpi_allreduce.cpp touch the same memory the same
// way) and a small all-reduce of p floats (one per segment, so every link carries a frame: a
// barrier) lines the units up. Unit 0 prints, per size,
//
//   f2d2n allreduce p=<p> bytes=<n> seconds=<median per op> busbw_GBps=<2 (p-1)/p * n / t / 1e9>
//
// the bus bandwidth of NCCL's and OSU's benchmarks: what each unit sends (and receives) per
// second in a bandwidth-optimal all-reduce. Lines starting with '#' are comments.
//
// Options:
//   --sizes-mib LIST    comma-separated sizes in MiB (default 1,4,16,64)
//   --repetitions N     timed all-reduces per size (default: 512 MiB / size, within 5..50)
//   --warmup N          untimed all-reduces per size first (default 2; at least 1 runs, checked)
//   --chunk-bytes N     call_options::chunk_bytes: the largest frame of a ring step (default the library's)
//   --timeout-ms N      collective::timeout (default 60000)
//   --pipeline N        call_options::pipeline: pieces sent ahead of the receives (0: lockstep;
//                       default the transport's: 2 over shared memory, 0 over TCP and MPI)
//   --algorithm A       call_options::algorithm: automatic (default), ring or halving-doubling
//
// With F2D2N_TLS_CA, F2D2N_TLS_CERT and F2D2N_TLS_KEY set, the units talk mutual TLS
// (bench/compare/allreduce_tls.sh runs both, side by side).
#include "allreduce_options.hpp"

#include <f2d2n/comm/primitives.hpp>
#include <f2d2n/launch/transport.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace {

using allreduce_bench::options;

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "allreduce_bench: %s\nusage: allreduce_bench [--sizes-mib 1,4,16,64] [--repetitions N] [--warmup N] "
               "[--chunk-bytes N] [--timeout-ms N] [--pipeline N] [--algorithm automatic|ring|halving-doubling]\n",
               why.c_str());
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    options o;
    try {
      o = allreduce_bench::parse(argc, argv, /*transport_options=*/true);
    } catch (const std::invalid_argument& e) {
      usage(e.what());
    }
    if (o.chunk_bytes == 0) o.chunk_bytes = f2d2n::call_options{}.chunk_bytes;
    const auto algorithm = o.algorithm == "ring"               ? f2d2n::collective_algorithm::ring
                           : o.algorithm == "halving-doubling" ? f2d2n::collective_algorithm::halving_doubling
                                                               : f2d2n::collective_algorithm::automatic;
    const f2d2n::cluster_config cfg = f2d2n::cluster_from_environment();
    const std::size_t p = cfg.world_size;
    f2d2n::cluster_transport unit(cfg, 0xa11'7ed0'ce00'0001ULL);
    auto& t = unit.get();
    const f2d2n::group world = f2d2n::group::world(cfg.world_size);

    std::uint64_t step = 0;  // every call of the run gets its own step; frames carry it
    auto call = [&](std::uint32_t message) {
      return f2d2n::call_options{.message_id = message,
                                 .step = step++,
                                 .timeout = std::chrono::milliseconds(o.timeout_ms),
                                 .chunk_bytes = o.chunk_bytes,
                                 .pipeline = o.pipeline,
                                 .algorithm = algorithm};
    };
    std::vector<float> token(p);
    auto barrier = [&] { f2d2n::all_reduce(t, world, std::span<float>(token), call(1)); };

    if (cfg.rank == 0)
      std::printf("# f2d2n %s all-reduce over %s, p=%zu, chunk_bytes=%zu, pipeline=%zu, warmup=%zu\n",
                  f2d2n::uses_halving_doubling(algorithm, p) ? "halving-doubling" : "ring",
                  unit.kind() == f2d2n::transport_kind::tcp && cfg.tls ? "TCP with mutual TLS" : unit.name(),
                  p, o.chunk_bytes, o.pipeline == SIZE_MAX ? f2d2n::ring_pipeline(t) : o.pipeline, o.warmup);
    const float expected = static_cast<float>(p * (p + 1) / 2);
    for (const std::size_t mib : o.sizes_mib) {
      const std::size_t bytes = mib << 20;
      std::vector<float> data(bytes / sizeof(float));
      const auto fill = [&] { std::fill(data.begin(), data.end(), static_cast<float>(cfg.rank + 1)); };
      for (std::size_t w = 0; w < std::max<std::size_t>(o.warmup, 1); ++w) {
        fill();
        barrier();
        f2d2n::all_reduce(t, world, std::span<float>(data), call(2));
        if (w == 0 && std::any_of(data.begin(), data.end(), [&](float x) { return x != expected; })) {
          std::fprintf(stderr, "allreduce_bench: unit %u: wrong sum for %zu MiB (expected %g everywhere)\n", cfg.rank,
                       mib, static_cast<double>(expected));
          return 1;
        }
      }
      const std::size_t reps = allreduce_bench::repetitions_for(bytes, o);
      std::vector<double> seconds;
      for (std::size_t r = 0; r < reps; ++r) {
        fill();
        barrier();
        const auto start = std::chrono::steady_clock::now();
        f2d2n::all_reduce(t, world, std::span<float>(data), call(2));
        seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      }
      if (data.front() != expected || data.back() != expected || data[data.size() / 2] != expected) {
        std::fprintf(stderr, "allreduce_bench: unit %u: wrong sum for %zu MiB after the timed runs\n", cfg.rank, mib);
        return 1;
      }
      if (cfg.rank == 0) {
        const double s = allreduce_bench::median(seconds);
        const double busbw =
            2.0 * static_cast<double>(p - 1) / static_cast<double>(p) * static_cast<double>(bytes) / s / 1e9;
        std::printf("f2d2n allreduce p=%zu bytes=%zu seconds=%.6e busbw_GBps=%.3f\n", p, bytes, s, busbw);
        std::fflush(stdout);
      }
    }
    barrier();  // nobody shuts down while a peer still waits for its last frame
    t.shutdown();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "allreduce_bench: %s\n", e.what());
    return 1;
  }
}
