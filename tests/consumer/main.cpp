// A downstream program: one include per part, one model type, a few training steps on synthetic
// data, then the model through safetensors, a Boost archive and a checkpoint it resumes from.
#include <f2d2n/f2d2n.hpp>
#include <f2d2n/launch.hpp>  // cluster configuration: what a unit started by f2d2n_launch reads
#include <f2d2n/store.hpp>
#include <f2d2n/train/checkpoint.hpp>

#include <boost/archive/text_iarchive.hpp>
#include <boost/archive/text_oarchive.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <sstream>

namespace nn = f2d2n;

int main() {
  using net_t = nn::sequential<nn::input<4>, nn::dense<8>, nn::relu, nn::dense<2>, nn::softmax_cross_entropy>;
  static_assert(net_t::parameter_count == 4 * 8 + 8 + 8 * 2 + 2);
  nn::dataset<float> data;
  data.samples = nn::matrix<float>::Random(64, 4);
  data.classes = 2;
  data.source = "synthetic";
  for (Eigen::Index i = 0; i < data.samples.rows(); ++i) data.labels.push_back(data.samples(i, 0) > 0 ? 1 : 0);
  nn::network<net_t> net(1);
  nn::trainer t(net, nn::sgd{.learning_rate = 0.5, .momentum = 0.5});
  const auto before = t.evaluate(data);
  const auto dir = std::filesystem::temp_directory_path() / ("f2d2n_consumer_" + std::to_string(::getpid()));
  nn::directory_backend store(dir / "checkpoints");
  nn::checkpointer ck(t, store);
  t.add(ck);
  t.fit(data, {.epochs = 20, .batch_size = 16});
  const auto after = t.evaluate(data);
  auto same = [&](const nn::network<net_t>& other) {
    return std::equal(net.parameters().begin(), net.parameters().end(), other.parameters().begin());
  };

  nn::save_safetensors(net, dir / "model.safetensors");
  nn::network<net_t> from_file(2);
  nn::load_safetensors(from_file, dir / "model.safetensors");

  std::stringstream archive;
  boost::archive::text_oarchive(archive) << net;
  nn::network<net_t> from_archive(3);
  boost::archive::text_iarchive(archive) >> from_archive;

  nn::network<net_t> resumed(4);
  nn::trainer t2(resumed, nn::sgd{.learning_rate = 0.5, .momentum = 0.5});
  nn::checkpointer ck2(t2, store);
  const bool found = ck2.resume().has_value();
  std::filesystem::remove_all(dir);

  // The kernel backend the package chose reaches this program: with libxsmm, its generated code
  // runs (on every x86-64 CPU libxsmm generates code for).
  nn::kernel::workspace<float> ws;
  const nn::matrix<float> a = nn::matrix<float>::Random(5, 3), b = nn::matrix<float>::Random(3, 4);
  nn::matrix<float> c(5, 4);
  nn::kernel::multiply<float>(ws, nn::kernel::form::nn, a, b, c);
  const bool kernels = ws.kernels().size() == 1 &&
                       ws.kernels()[0].generated() == nn::kernel::generates_code() &&
                       c.isApprox(a * b, 1e-5f);

  static_assert(nn::default_base_port == 29500);
  const bool ok =
      after.loss < before.loss && same(from_file) && same(from_archive) && found && same(resumed) && kernels;
  std::printf("f2d2n %d.%d.%d consumer (kernels: %s): loss %.4f -> %.4f; safetensors, archive and checkpoint %s\n",
              nn::version_major, nn::version_minor, nn::version_patch, nn::kernel::backend_description().c_str(),
              before.loss, after.loss, ok ? "round-trip" : "FAILED");
  return ok ? 0 : 1;
}
