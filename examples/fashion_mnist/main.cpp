// Trains a network on Fashion-MNIST in one process and prints the test accuracy.
//
//   fashion_mnist                       784-256-128-10 ReLU MLP, Adam
//   fashion_mnist --preset cnn          the CNN (settings.hpp), Adam, 20 epochs
//   fashion_mnist_cnn                   the same program, the CNN by default
//   fashion_mnist --preset f2d2n        the F2D2N prototype: 784-30-10 sigmoid, softmax, SGD + L2, batch 30
//   fashion_mnist --help
// cluster.cpp trains the same models on a cluster of units under a plan.
#include "train.hpp"

#include <csignal>

namespace {

template <class Net>
int run(const example::settings& s) {
  const auto d = example::load(s);
  f2d2n::network<Net> net(s.seed);
  std::cout << "f2d2n " << s.preset << ": " << Net::size << " layers, " << Net::parameter_count << " parameters; "
            << d.train.size() << " training and " << d.test.size() << " test samples from " << s.data_dir << "\n";
  example::describe(s);
  return example::train_and_report(net, s, d, true, s.metrics);
}

}  // namespace

int main(int argc, char** argv) try {
  example::settings s;
#ifndef EXAMPLE_DEFAULT_PRESET
#define EXAMPLE_DEFAULT_PRESET "mlp"
#endif
  const auto opts =
      example::options(s, "Train a network on Fashion-MNIST (or any MNIST-format data)", EXAMPLE_DEFAULT_PRESET);
  if (const auto stop = example::parse(argc, argv, s, opts)) return *stop;
  // As the cluster's units do; one process has no messages, so SIGUSR1 only says so (and does not end it).
  const auto flight_recorder = f2d2n::print_flight_recorder_on(SIGUSR1);
  if (s.preset == "cnn") return run<example::cnn>(s);
  return s.preset == "f2d2n" ? run<example::prototype>(s) : run<example::mlp>(s);
} catch (const boost::program_options::error& e) {
  std::cerr << "fashion_mnist: " << e.what() << " (see --help)\n";
  return 2;
} catch (const f2d2n::error& e) {
  std::cerr << "fashion_mnist: " << e.what() << "\n";
  return 1;
}
