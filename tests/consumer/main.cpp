// A downstream program: one include, one model type, a few training steps on synthetic data.
#include <f2d2n/f2d2n.hpp>

#include <cstdio>

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
  t.fit(data, {.epochs = 20, .batch_size = 16});
  const auto after = t.evaluate(data);
  std::printf("f2d2n %d.%d.%d consumer: loss %.4f -> %.4f\n", nn::version_major, nn::version_minor, nn::version_patch,
              before.loss, after.loss);
  return after.loss < before.loss ? 0 : 1;
}
