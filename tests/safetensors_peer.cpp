// The C++ side of the safetensors peer test: f2d2n and PyTorch (or numpy, where PyTorch is not
// installed) exchange the 784-256-128-10 ReLU MLP through safetensors files, both ways, on
// Fashion-MNIST. tests/torch_peer.py drives it and compares the logits (ctest -R safetensors_peer).
//
//   safetensors_peer export <data dir> <out dir>
//       trains the MLP for 300 steps (Adam, batch 64, seed 1), writes <out dir>/f2d2n_mlp.safetensors
//       and the logits of the test set, <out dir>/f2d2n_logits.f32
//   safetensors_peer logits <data dir> <model.safetensors> <logits file>
//       loads the file into the MLP and writes the logits of the test set
//
// Logits files are raw little-endian float32, row-major: one row of 10 per test sample, in the
// order of t10k-images. They are the output of the last dense layer (before softmax), computed by
// f2d2n's own forward pass: the parameters are copied into a twin network whose loss layer is
// mean_squared_error, whose prediction is the identity.
#include <f2d2n/data.hpp>
#include <f2d2n/model.hpp>
#include <f2d2n/store/safetensors.hpp>
#include <f2d2n/train/optimizers.hpp>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>

namespace nn = f2d2n;

namespace {

using mlp = nn::sequential<nn::input<28, 28>, nn::dense<256>, nn::relu, nn::dense<128>, nn::relu, nn::dense<10>,
                           nn::softmax_cross_entropy>;
/// The same layers with an identity "prediction": its predict() is the logits.
using mlp_logits = nn::sequential<nn::input<28, 28>, nn::dense<256>, nn::relu, nn::dense<128>, nn::relu, nn::dense<10>,
                                  nn::mean_squared_error>;
static_assert(mlp::parameter_count == mlp_logits::parameter_count);
static_assert(std::endian::native == std::endian::little, "logits files are written as this machine's floats");

/// Writes the logits of `data` under `net` and returns how many samples they classify right
/// (checked against the softmax network's own evaluation).
std::size_t write_logits(nn::network<mlp>& net, const nn::dataset<float>& data, const std::string& path) {
  nn::network<mlp_logits> twin;
  std::copy(net.parameters().begin(), net.parameters().end(), twin.parameters().begin());
  std::ofstream out(path, std::ios::binary);
  std::size_t correct = 0, correct_softmax = 0;
  const Eigen::Index rows = data.samples.rows(), chunk = 1000;
  for (Eigen::Index first = 0; first < rows; first += chunk) {
    const Eigen::Index n = std::min(chunk, rows - first);
    const auto x = data.samples.middleRows(first, n);
    const std::span<const std::int32_t> labels(data.labels.data() + first, static_cast<std::size_t>(n));
    const auto logits = twin.predict(x);
    for (Eigen::Index r = 0; r < n; ++r) {
      Eigen::Index best = 0;
      logits.row(r).maxCoeff(&best);
      correct += best == labels[static_cast<std::size_t>(r)];
      out.write(reinterpret_cast<const char*>(logits.row(r).data()), static_cast<std::streamsize>(10 * sizeof(float)));
    }
    correct_softmax += net.evaluate_batch(x, labels).correct;
  }
  if (!out) throw std::runtime_error("cannot write " + path);
  if (correct != correct_softmax)
    throw std::runtime_error("the logits classify " + std::to_string(correct) + " samples right, the network " +
                             std::to_string(correct_softmax));
  return correct;
}

int run(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (!((mode == "export" && argc == 4) || (mode == "logits" && argc == 5))) {
    std::fprintf(stderr,
                 "usage: safetensors_peer export <data dir> <out dir>\n"
                 "       safetensors_peer logits <data dir> <model.safetensors> <logits file>\n");
    return 2;
  }
  const auto test = nn::load_mnist(argv[2], nn::split::test);
  nn::network<mlp> net(1);
  if (mode == "export") {
    const auto train = nn::load_mnist(argv[2], nn::split::train);
    nn::optimizer<float, nn::adam> opt(nn::adam{});
    nn::batcher<float> batches(train, 64, true, 1);
    std::size_t epoch = 0;
    for (int step = 0; step < 300; ++step) {
      if (batches.done()) batches.start_epoch(++epoch);
      const auto b = batches.next();
      net.compute_gradients(b.samples, b.labels);
      opt.step(net.parameters(), net.gradients());
    }
    const std::filesystem::path dir = argv[3];
    nn::save_safetensors(net, dir / "f2d2n_mlp.safetensors");
    const auto correct = write_logits(net, test, (dir / "f2d2n_logits.f32").string());
    std::printf("f2d2n: trained 300 steps, test accuracy %.4f; wrote %s\n",
                static_cast<double>(correct) / static_cast<double>(test.size()),
                (dir / "f2d2n_mlp.safetensors").c_str());
  } else {
    nn::load_safetensors(net, std::filesystem::path(argv[3]));
    const auto correct = write_logits(net, test, argv[4]);
    std::printf("f2d2n: loaded %s, test accuracy %.4f\n", argv[3],
                static_cast<double>(correct) / static_cast<double>(test.size()));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "safetensors_peer: %s\n", e.what());
    return 1;
  }
}
