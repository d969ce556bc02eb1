// Trains the MLP (or the CNN: --preset cnn) on Fashion-MNIST on a cluster of processing units over
// TCP (started by f2d2n_launch) or MPI (started by mpirun or srun), under a plan; the weights, and
// so the accuracy, are the one-process example's (main.cpp), up to rounding.
//
//   f2d2n_launch -n 4 -- fashion_mnist_cluster                    DP2 x TP2: 2 replicas of 2 neuron shards
//   mpirun -np 4 fashion_mnist_cluster                            the same over MPI (docs/mpi.md)
//   f2d2n_launch -n 2 -- fashion_mnist_cluster --plan dp2         data parallel
//   f2d2n_launch -n 2 -- fashion_mnist_cluster --plan tp2_inputs  F2D2N's input units (split by input features)
//   fashion_mnist_cluster --help
//   f2d2n_launch -n 2 -- fashion_mnist_cluster --plan pp2         2 pipeline stages, 4 micro-batches, 1F1B
//   f2d2n_launch -n 4 --max-restarts 3 -- fashion_mnist_cluster --checkpoint-dir ck --resume
//                                  checkpoints after every epoch; a unit that dies restarts them all from the newest
//   f2d2n_launch -n 4 -- fashion_mnist_cluster --preset cnn --plan spatial2x2
//                                  the CNN, every feature map in 2 x 2 blocks (halo exchange)
// Unit 0 draws the progress bar and prints the result. Plans: dp2, dp4, tp2, tp2_inputs, dp2_tp2,
// pp2, dp2_pp2; for the CNN (--preset cnn) dp2, dp4, tp2, dp2_tp2, pp2, dp2_pp2, spatial2,
// spatial2x2, dp2_spatial2, channels2, inchannels2. A unit that waits too long for a peer, or gets
// SIGUSR1, prints its flight recorder: its last messages (docs/debugging.md). A statistic that is not finite (a diverging run) or out of
// range (a corrupted sum) ends every unit with exit status 1.
#include "settings.hpp"

#include <f2d2n/launch/config.hpp>
#include <f2d2n/launch/transport.hpp>
#include <f2d2n/plan/description.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <exception>
#include <tuple>

namespace example {
/// Trains a unit as the settings say (train_unit.cpp: compiled apart from the plans).
int train_unit(f2d2n::processing_unit<f2d2n::any_transport, float>& unit, const settings& s, const data& d, bool report,
               const std::string& metrics);
}  // namespace example

namespace {

namespace nn = f2d2n;
using example::cnn;
using example::mlp;

template <class Plan>
int run(const example::settings& s, const nn::cluster_config& c) {
  nn::cluster_transport unit(c, Plan::fingerprint, nn::peer_description<Plan>());
  auto& t = unit.get();
  nn::distributed_options o;
  o.timeout = c.timeout;
  nn::distributed_network<Plan, nn::any_transport> net(t, s.seed, o);
  const bool report = c.rank == 0;
  const auto d = example::load(s);
  if (report) {
    std::cout << "f2d2n " << s.plan << ": " << Plan::world_size << " units (" << Plan::replicas << " replicas x "
              << Plan::stages << " stages x " << Plan::shards << " shards) over " << unit.name() << "; "
              << Plan::model::parameter_count
              << " parameters; " << d.train.size() << " training and " << d.test.size() << " test samples from "
              << s.data_dir << "\n";
    for (std::size_t r = 0; r < Plan::world_size; ++r)
      std::cout << "  unit " << r << ": replica " << Plan::coordinates_of(r).replica << ", stage "
                << Plan::coordinates_of(r).stage << ", shard " << Plan::coordinates_of(r).shard << ", "
                << Plan::parameter_count_of(r) << " parameters, " << Plan::bytes_sent_per_step(r, s.batch_size)
                << " bytes sent per step of " << s.batch_size << "\n";
    example::describe(s);
  }
  std::string metrics = s.metrics;  // metrics.csv -> metrics.unit<rank>.csv
  if (!metrics.empty()) {
    const auto dot = metrics.find_last_of('.');
    const auto slash = metrics.find_last_of('/');
    const auto at = dot != std::string::npos && (slash == std::string::npos || dot > slash) ? dot : metrics.size();
    metrics.insert(at, ".unit" + std::to_string(c.rank));
  }
  try {
    const int code = example::train_unit(net, s, d, report, metrics);
    t.shutdown();
    return code;
  } catch (const std::exception& e) {
    // Tell the other units why (the processing unit already did when a step failed), and exit 86
    // if another unit failed first, so that f2d2n_launch reports that unit (docs/launch.md).
    nn::shutdown_after(t, std::current_exception());
    std::cerr << "fashion_mnist_cluster: " << e.what() << "\n";
    return nn::exit_code_of(c.rank, std::current_exception());
  }
}

/// The CNN's plans. Its layers: 1 conv, 2 relu, 3 pool, 4 conv, 5 relu, 6 pool, 7 dropout, 8 conv,
/// 9 relu, 10 pool, 11 flatten, 12 dropout, 13 dense, 14 relu, 15 dropout, 16 dense.
int run_cnn(const example::settings& s, const nn::cluster_config& c) {
  if (s.plan == "dp2") return run<nn::distribute<cnn, nn::data_parallel<2>>>(s, c);
  if (s.plan == "dp4") return run<nn::distribute<cnn, nn::data_parallel<4>>>(s, c);
  // The dense layers split as Megatron pairs them (through relu and dropout); the convolutions
  // computed whole on both shards.
  using chain = nn::tensor_parallel<2, nn::by_outputs, nn::split_layer<16, nn::by_inputs>>;
  if (s.plan == "tp2") return run<nn::distribute<cnn, chain>>(s, c);
  if (s.plan == "dp2_tp2") return run<nn::distribute<cnn, nn::data_parallel<2>, chain>>(s, c);
  // The second stage from the second convolution on: its 14 x 14 x 16 input crosses.
  using pipe = nn::pipeline<2, nn::microbatches<4>, nn::one_f_one_b, nn::stage_starts<4>>;
  if (s.plan == "pp2") return run<nn::distribute<cnn, pipe>>(s, c);
  if (s.plan == "dp2_pp2") return run<nn::distribute<cnn, nn::data_parallel<2>, pipe>>(s, c);
  // Spatial partitions (DistDL): every unit computes a block of every feature map; halos exchanged.
  if (s.plan == "spatial2") return run<nn::distribute<cnn, nn::spatial<2>>>(s, c);
  if (s.plan == "spatial2x2") return run<nn::distribute<cnn, nn::spatial<2, 2>>>(s, c);
  if (s.plan == "dp2_spatial2") return run<nn::distribute<cnn, nn::data_parallel<2>, nn::spatial<2>>>(s, c);
  // The convolutions split by output channels, the dense layers by neurons.
  using channels = nn::tensor_parallel<2, nn::by_outputs, nn::split_layer<1, nn::by_outputs>,
                                       nn::split_layer<4, nn::by_outputs>, nn::split_layer<8, nn::by_outputs>>;
  if (s.plan == "channels2") return run<nn::distribute<cnn, channels>>(s, c);
  // The second and third convolutions split by input channels (partial outputs summed), the
  // first computed whole on both units.
  using input_channels =
      nn::tensor_parallel<2, nn::by_outputs, nn::split_layer<4, nn::by_inputs>, nn::split_layer<8, nn::by_inputs>>;
  if (s.plan == "inchannels2") return run<nn::distribute<cnn, input_channels>>(s, c);
  std::cerr << "fashion_mnist_cluster: unknown plan '" << s.plan << "' for the cnn preset (see --help)\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) try {
  example::settings s;
  auto opts = example::options(s, "Train the MLP on Fashion-MNIST on a cluster of units (start it with f2d2n_launch)");
  opts.add_options()("plan", boost::program_options::value(&s.plan)->default_value("dp2_tp2"),
                     "dp2, dp4 (data parallel), tp2 (neurons split over 2 units), tp2_inputs (inputs split, as "
                     "F2D2N's input units), dp2_tp2 (2 replicas of 2 shards: 4 units), pp2 (2 pipeline stages, "
                     "4 micro-batches, 1F1B), dp2_pp2 (2 replicas of 2 stages: 4 units); the cnn preset: dp2, dp4, "
                     "tp2 (its dense layers split), dp2_tp2, pp2, dp2_pp2, spatial2 (feature maps split in 2 blocks of "
                     "rows), spatial2x2 (2 x 2 blocks), dp2_spatial2 (2 replicas of 2 blocks), channels2 (the "
                     "convolutions' output channels split over 2 units), inchannels2 (the second and third "
                     "convolutions' input channels split over 2 units)");
  double timeout = 0, connect_timeout = 0;
  opts.add_options()("timeout", boost::program_options::value(&timeout),
                     "seconds a unit waits for a peer before it gives up (default: F2D2N_TIMEOUT, else 60)")(
      "connect-timeout", boost::program_options::value(&connect_timeout),
      "seconds a unit may take to connect to every other (default: F2D2N_CONNECT_TIMEOUT, else 10)");
  if (const auto stop = example::parse(argc, argv, s, opts)) return *stop;
  if (s.preset != "mlp" && s.preset != "cnn") {
    std::cerr << "fashion_mnist_cluster: the mlp and cnn presets run on a cluster (fashion_mnist runs f2d2n's)\n";
    return 2;
  }
  if (!s.save_model.empty() && s.checkpoint_dir.empty()) {
    std::cerr << "fashion_mnist_cluster: --save-model needs --checkpoint-dir on a cluster (the model is saved from "
                 "the run's last checkpoint, which holds every unit's part)\n";
    return 2;
  }
  if (!std::getenv(nn::world_size_variable) && nn::chosen_transport() != nn::transport_kind::mpi) {
    std::cerr << "fashion_mnist_cluster: no cluster configuration (" << nn::world_size_variable
              << " is not set): start it with f2d2n_launch, e.g. f2d2n_launch -n 4 -- fashion_mnist_cluster"
              << (nn::built_with_mpi() ? ", or with mpirun -np 4 fashion_mnist_cluster" : "") << "\n";
    return 2;
  }
  auto c = nn::cluster_from_environment();
  for (auto [value, name, into] : {std::tuple{timeout, "--timeout", &c.timeout},
                                   std::tuple{connect_timeout, "--connect-timeout", &c.connect_timeout}}) {
    if (value == 0) continue;
    const auto d = nn::seconds_duration(value);
    if (!d) {
      std::cerr << "fashion_mnist_cluster: " << name << " " << value << " is not a number of seconds above 0\n";
      return 2;
    }
    *into = *d;
  }
  // kill -USR1 <pid> prints the unit's last messages (docs/debugging.md); a timeout prints them too.
  const auto flight_recorder = nn::print_flight_recorder_on(SIGUSR1);
  if (s.preset == "cnn") return run_cnn(s, c);
  if (s.plan == "dp2") return run<nn::distribute<mlp, nn::data_parallel<2>>>(s, c);
  if (s.plan == "dp4") return run<nn::distribute<mlp, nn::data_parallel<4>>>(s, c);
  if (s.plan == "tp2") return run<nn::distribute<mlp, nn::tensor_parallel<2>>>(s, c);
  if (s.plan == "tp2_inputs") return run<nn::distribute<mlp, nn::tensor_parallel<2, nn::by_inputs>>>(s, c);
  if (s.plan == "dp2_tp2") return run<nn::distribute<mlp, nn::data_parallel<2>, nn::tensor_parallel<2>>>(s, c);
  using pipe = nn::pipeline<2, nn::microbatches<4>, nn::one_f_one_b>;
  if (s.plan == "pp2") return run<nn::distribute<mlp, pipe>>(s, c);
  if (s.plan == "dp2_pp2") return run<nn::distribute<mlp, nn::data_parallel<2>, pipe>>(s, c);
  std::cerr << "fashion_mnist_cluster: unknown plan '" << s.plan << "' (see --help)\n";
  return 2;
} catch (const boost::program_options::error& e) {
  std::cerr << "fashion_mnist_cluster: " << e.what() << " (see --help)\n";
  return 2;
} catch (const f2d2n::error& e) {
  std::cerr << "fashion_mnist_cluster: " << e.what() << "\n";
  return 1;
}
