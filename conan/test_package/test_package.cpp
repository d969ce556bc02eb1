// The package's smoke test: one model type, one batch's gradients, the version.
#include <f2d2n/f2d2n.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace nn = f2d2n;

int main() {
  using net_t = nn::sequential<nn::input<4>, nn::dense<8>, nn::relu, nn::dense<3>, nn::softmax_cross_entropy>;
  static_assert(net_t::parameter_count == 4 * 8 + 8 + 8 * 3 + 3);
  nn::network<net_t> net(1);
  const nn::matrix<float> x = nn::matrix<float>::Ones(2, 4);
  const std::vector<std::int32_t> labels{0, 2};
  const auto r = net.compute_gradients(x, labels);
  std::printf("f2d2n %d.%d.%d: %zu parameters, loss %g\n", nn::version_major, nn::version_minor, nn::version_patch,
              net_t::parameter_count, static_cast<double>(r.loss));
  return std::isfinite(r.loss) ? 0 : 1;
}
