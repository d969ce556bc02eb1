// bench/compare/mpi_allreduce.cpp: bus bandwidth of Open MPI's MPI_Allreduce, the same loop as
// bench/allreduce_bench.cpp (same sizes, repetitions, fill, barrier and output), for
// bench/compare/allreduce_vs_mpi.sh.
//
//   mpirun --allow-run-as-root --oversubscribe -n 4 build/bench/mpi_allreduce [options]
//   mpirun ... --mca btl tcp,self --mca btl_tcp_if_include lo -n 4 build/bench/mpi_allreduce
//
// For each size (MiB of float32): the buffer is filled (rank + 1 everywhere), `warmup`
// MPI_Allreduce calls (MPI_FLOAT, MPI_SUM, in place) run (the first one is checked), then
// `repetitions` timed ones, each after an untimed refill and a small MPI_Allreduce of p floats
// (the barrier allreduce_bench uses). Rank 0 prints, per size,
//
//   openmpi allreduce p=<p> bytes=<n> seconds=<median per op> busbw_GBps=<2 (p-1)/p * n / t / 1e9>
//
// Options: --sizes-mib LIST (default 1,4,16,64), --repetitions N (default: 512 MiB / size, within
// 5..50), --warmup N (default 2; at least 1 runs, checked).
#include "../allreduce_options.hpp"

#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

using allreduce_bench::options;

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "mpi_allreduce: %s\nusage: mpi_allreduce [--sizes-mib 1,4,16,64] [--repetitions N] [--warmup N]\n",
               why.c_str());
  MPI_Abort(MPI_COMM_WORLD, 2);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  options o;
  try {
    o = allreduce_bench::parse(argc, argv, /*transport_options=*/false);
  } catch (const std::invalid_argument& e) {
    usage(e.what());
  }
  const auto p = static_cast<std::size_t>(size);

  std::vector<float> token(p);
  auto barrier = [&] { MPI_Allreduce(MPI_IN_PLACE, token.data(), size, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); };

  if (rank == 0)
    std::printf("# Open MPI MPI_Allreduce (MPI_FLOAT, MPI_SUM, in place), p=%zu, warmup=%zu\n", p, o.warmup);
  const float expected = static_cast<float>(p * (p + 1) / 2);
  for (const std::size_t mib : o.sizes_mib) {
    const std::size_t bytes = mib << 20;
    std::vector<float> data(bytes / sizeof(float));
    const int count = static_cast<int>(data.size());
    const auto fill = [&] { std::fill(data.begin(), data.end(), static_cast<float>(rank + 1)); };
    for (std::size_t w = 0; w < std::max<std::size_t>(o.warmup, 1); ++w) {
      fill();
      barrier();
      MPI_Allreduce(MPI_IN_PLACE, data.data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      if (w == 0 && std::any_of(data.begin(), data.end(), [&](float x) { return x != expected; })) {
        std::fprintf(stderr, "mpi_allreduce: rank %d: wrong sum for %zu MiB\n", rank, mib);
        MPI_Abort(MPI_COMM_WORLD, 1);
      }
    }
    const std::size_t reps = allreduce_bench::repetitions_for(bytes, o);
    std::vector<double> seconds;
    for (std::size_t r = 0; r < reps; ++r) {
      fill();
      barrier();
      const double start = MPI_Wtime();
      MPI_Allreduce(MPI_IN_PLACE, data.data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      seconds.push_back(MPI_Wtime() - start);
    }
    if (rank == 0) {
      const double s = allreduce_bench::median(seconds);
      const double busbw =
          2.0 * static_cast<double>(p - 1) / static_cast<double>(p) * static_cast<double>(bytes) / s / 1e9;
      std::printf("openmpi allreduce p=%zu bytes=%zu seconds=%.6e busbw_GBps=%.3f\n", p, bytes, s, busbw);
      std::fflush(stdout);
    }
  }
  MPI_Finalize();
  return 0;
}
