// A downstream program on the MPI transport, as a user builds it with f2d2n::mpi: two ranks under
// mpirun all-reduce a vector (exit 1 when a sum is wrong) and compute a data-parallel step of a
// small network.
#include <f2d2n/f2d2n.hpp>
#include <f2d2n/transport/mpi.hpp>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <span>
#include <vector>

namespace nn = f2d2n;

int main(int argc, char** argv) try {
  nn::mpi_environment mpi(argc, argv);
  using net_t = nn::sequential<nn::input<4>, nn::dense<8>, nn::relu, nn::dense<2>, nn::softmax_cross_entropy>;
  using plan = nn::distribute<net_t, nn::data_parallel<2>>;
  nn::mpi_transport t(plan::fingerprint);
  if (t.world_size() != 2) {
    std::fprintf(stderr, "mpi consumer: run me with mpirun -np 2\n");
    return 2;
  }
  std::vector<double> v(1000, t.rank() + 1.0);
  nn::all_reduce(t, nn::group::world(2), std::span<double>(v), nn::call_options{.message_id = 9, .step = 0});
  for (double x : v)
    if (x != 3.0) return 1;
  nn::distributed_network<plan, nn::mpi_transport> net(t, 1);
  nn::matrix<float> x = nn::matrix<float>::Random(8, 4);
  std::vector<std::int32_t> labels(8, 1);
  net.compute_gradients(x, std::span<const std::int32_t>(labels));
  std::printf("mpi consumer: rank %u of %u: all-reduce and a data-parallel step over MPI\n", t.rank(), t.world_size());
  t.shutdown();
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "mpi consumer: %s\n", e.what());
  return 1;
}
