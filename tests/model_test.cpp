// Model area: compile-time shapes and layout, layer kernels, finite-difference gradient checks in
// float64 for every layer and loss, initialisation, run-time input checks.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <f2d2n/model.hpp>

#include <cmath>
#include <cstring>
#include <vector>

namespace nn = f2d2n;

using mlp = nn::sequential<nn::input<784>, nn::dense<256>, nn::relu, nn::dense<128>, nn::relu, nn::dense<10>,
                           nn::softmax_cross_entropy>;

TEST_CASE("shapes and parameter counts are computed at compile time") {
  static_assert(mlp::size == 7);
  constexpr std::size_t expected = (784 * 256 + 256) + (256 * 128 + 128) + (128 * 10 + 10);
  static_assert(mlp::parameter_count == expected);
  CHECK(mlp::parameter_count == 235146);
  CHECK(mlp::input_size == 784);
  CHECK(mlp::output_size == 10);
  CHECK(mlp::max_width == 784);
  CHECK(mlp::parameter_counts[1] == 784 * 256 + 256);
  CHECK(mlp::parameter_counts[2] == 0);
  CHECK(mlp::parameter_offsets[3] == 784 * 256 + 256);
  CHECK(mlp::parameter_offsets[5] == 784 * 256 + 256 + 256 * 128 + 128);
  CHECK(mlp::input_extents[3] == nn::flat(256));
  CHECK(mlp::output_extents[3] == nn::flat(128));
  CHECK(nn::network<mlp>::parameter_count == expected);
  static_assert(nn::network<mlp>::features() == 784 && nn::network<mlp>::classes() == 10);
}

TEST_CASE("multi-dimensional inputs flow through flatten, reshape and dense") {
  using net =
      nn::sequential<nn::input<1, 28, 28>, nn::reshape<28, 28>, nn::flatten, nn::dense<10>, nn::softmax_cross_entropy>;
  static_assert(net::input_shape == nn::shape<1, 28, 28>::value);
  CHECK(net::input_size == 784);
  CHECK(net::output_extents[1] == nn::shape<28, 28>::value);
  CHECK(net::output_extents[1].rank == 2);
  CHECK(net::output_extents[2] == nn::flat(784));
  CHECK(net::parameter_count == 7850);
  // dense reads a multi-dimensional input as flat features.
  using direct = nn::sequential<nn::input<28, 28>, nn::dense<10>, nn::softmax_cross_entropy>;
  CHECK(direct::parameter_count == 7850);
}

TEST_CASE("softmax cross-entropy: exact value and gradient on a small case") {
  nn::matrix<double> x(2, 2);
  x << 0, std::log(3.0),  // softmax = (1/4, 3/4)
      5, 5;               // softmax = (1/2, 1/2)
  const std::vector<std::int32_t> labels{1, 0};
  nn::matrix<double> dx(2, 2);
  const double loss = nn::softmax_cross_entropy::loss<double>(x, labels, dx);
  CHECK(loss == doctest::Approx((-std::log(0.75) - std::log(0.5)) / 2).epsilon(1e-14));
  CHECK(dx(0, 0) == doctest::Approx(0.25 / 2));
  CHECK(dx(0, 1) == doctest::Approx(-0.25 / 2));
  CHECK(dx(1, 0) == doctest::Approx(-0.5 / 2));
  CHECK(dx(1, 1) == doctest::Approx(0.5 / 2));
  // Stable for huge logits.
  nn::matrix<double> big(1, 2);
  big << 1000, 0;
  const std::vector<std::int32_t> one{1};
  nn::matrix<double> dbig(1, 2);
  CHECK(nn::softmax_cross_entropy::loss<double>(big, one, dbig) == doctest::Approx(1000));
  CHECK(std::isfinite(dbig(0, 0)));
}

TEST_CASE("mean squared error against one-hot labels matches PyTorch's definition") {
  nn::matrix<double> x(1, 3);
  x << 0.5, 1.0, -1.0;
  const std::vector<std::int32_t> labels{1};
  nn::matrix<double> dx(1, 3);
  // ((0.5)^2 + 0^2 + (-1)^2) / 3
  CHECK(nn::mean_squared_error::loss<double>(x, labels, dx) == doctest::Approx(1.25 / 3));
  CHECK(dx(0, 0) == doctest::Approx(2 * 0.5 / 3));
  CHECK(dx(0, 1) == doctest::Approx(0));
  CHECK(dx(0, 2) == doctest::Approx(-2.0 / 3));
}

TEST_CASE("activations compute their functions") {
  nn::matrix<double> x(1, 3), y(1, 3);
  x << -2, 0.5, 3;
  nn::kernel::workspace<double> ws;
  nn::relu::forward<double>(ws, nullptr, x, y);
  CHECK(y(0, 0) == 0);
  CHECK(y(0, 1) == 0.5);
  nn::sigmoid::forward<double>(ws, nullptr, x, y);
  CHECK(y(0, 2) == doctest::Approx(1 / (1 + std::exp(-3.0))));
  nn::tanh::forward<double>(ws, nullptr, x, y);
  CHECK(y(0, 0) == doctest::Approx(std::tanh(-2.0)));
}

#include "gradient_check.hpp"

TEST_CASE("gradient check: dense, relu, softmax cross-entropy") {
  using net = nn::sequential<nn::input<6>, nn::dense<5>, nn::relu, nn::dense<4>, nn::softmax_cross_entropy>;
  CHECK(test::gradient_check<net>(1, 7) < 1e-7);
}

TEST_CASE("gradient check: sigmoid and tanh") {
  using net = nn::sequential<nn::input<5>, nn::dense<4>, nn::sigmoid, nn::dense<4>, nn::tanh, nn::dense<3>,
                             nn::softmax_cross_entropy>;
  CHECK(test::gradient_check<net>(2, 5) < 1e-7);
}

TEST_CASE("gradient check: mean squared error") {
  using net = nn::sequential<nn::input<4>, nn::dense<6>, nn::tanh, nn::dense<3>, nn::mean_squared_error>;
  CHECK(test::gradient_check<net>(3, 4) < 1e-7);
}

TEST_CASE("gradient check: reshape and flatten pass gradients through") {
  using net = nn::sequential<nn::input<2, 3>, nn::reshape<3, 2>, nn::flatten, nn::dense<4>, nn::relu, nn::dense<3>,
                             nn::softmax_cross_entropy>;
  CHECK(test::gradient_check<net>(4, 3) < 1e-7);
}

TEST_CASE("gradient check: one sample and a loss straight after the input") {
  using net = nn::sequential<nn::input<3>, nn::dense<3>, nn::softmax_cross_entropy>;
  CHECK(test::gradient_check<net>(5, 1) < 1e-7);
}

namespace {
/// A user-defined layer (relu forward) whose backward forgets the relu mask: a wrong gradient.
struct leaky_backward_relu : nn::relu {
  template <class S>
  static void backward(nn::kernel::workspace<S>&, const S*, S*, nn::const_matrix_ref<S>, nn::const_matrix_ref<S>,
                       nn::const_matrix_ref<S> dy, nn::matrix_ref<S> dx, bool want_dx) {
    if (want_dx) dx = dy;
  }
};
}  // namespace

TEST_CASE("the gradient check catches a wrong backward pass in a user-defined layer") {
  static_assert(nn::layer<leaky_backward_relu>);
  using net = nn::sequential<nn::input<6>, nn::dense<5>, leaky_backward_relu, nn::dense<4>, nn::softmax_cross_entropy>;
  CHECK(test::gradient_check<net>(1, 7) > 1e-3);
}

TEST_CASE("initialisation: He before relu, Xavier otherwise, zero biases, counter-based") {
  nn::network<mlp> a(42), b(42), c(43);
  CHECK(std::memcmp(a.parameters().data(), b.parameters().data(), a.parameters().size_bytes()) == 0);
  CHECK(std::memcmp(a.parameters().data(), c.parameters().data(), a.parameters().size_bytes()) != 0);

  const auto check_layer = [&](std::size_t layer, std::size_t in, std::size_t out, double limit) {
    auto p = a.layer_parameters(layer);
    REQUIRE(p.size() == in * out + out);
    double max_abs = 0;
    for (std::size_t k = 0; k < in * out; ++k) max_abs = std::max(max_abs, std::abs(double(p[k])));
    CHECK(max_abs <= limit);
    CHECK(max_abs > 0.95 * limit);
    for (std::size_t k = in * out; k < p.size(); ++k) CHECK(p[k] == 0.0f);
    // Weight k of layer i is limit * random_symmetric(seed, i, k): any shard can draw its slice.
    CHECK(double(p[17]) == doctest::Approx(limit * nn::random_symmetric(42, layer, 17)).epsilon(1e-6));
  };
  check_layer(1, 784, 256, std::sqrt(6.0 / 784));        // followed by relu: He
  check_layer(3, 256, 128, std::sqrt(6.0 / 256));        // followed by relu: He
  check_layer(5, 128, 10, std::sqrt(6.0 / (128 + 10)));  // followed by the loss: Xavier
}

TEST_CASE("predict gives probabilities") {
  nn::network<mlp> net(1);
  nn::matrix<float> x = nn::matrix<float>::Random(5, 784);
  auto p = net.predict(x);
  REQUIRE(p.rows() == 5);
  REQUIRE(p.cols() == 10);
  for (Eigen::Index r = 0; r < 5; ++r) {
    CHECK(p.row(r).sum() == doctest::Approx(1.0f).epsilon(1e-5));
    CHECK(p.row(r).minCoeff() >= 0.0f);
  }
}

TEST_CASE("bad batches are typed errors") {
  nn::network<mlp> net(1);
  nn::matrix<float> wrong(3, 783);
  wrong.setZero();
  std::vector<std::int32_t> labels{0, 1, 2};
  CHECK_THROWS_AS(net.compute_gradients(wrong, labels), nn::configuration_error);
  CHECK_THROWS_WITH(net.predict(wrong), doctest::Contains("783 features"));
  nn::matrix<float> x(3, 784);
  x.setZero();
  std::vector<std::int32_t> too_few{0, 1};
  CHECK_THROWS_AS(net.compute_gradients(x, too_few), nn::configuration_error);
  std::vector<std::int32_t> bad_label{0, 1, 10};
  CHECK_THROWS_WITH_AS(net.compute_gradients(x, bad_label), doctest::Contains("label 10"), nn::configuration_error);
  std::vector<std::int32_t> negative{0, -1, 2};
  CHECK_THROWS_AS(net.evaluate_batch(x, negative), nn::configuration_error);
}
