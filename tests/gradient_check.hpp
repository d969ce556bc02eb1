// A finite-difference gradient check of a whole float64 network, shared by the model tests.
#pragma once

#include <doctest/doctest.h>

#include <f2d2n/model.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace test {

/// Central-difference check of every parameter gradient of a float64 network; returns the worst
/// relative error max|analytic - numeric| / max(1, max|numeric|).
template <class Net>
double gradient_check(std::uint64_t seed, std::size_t batch) {
  f2d2n::network<Net, double> net(seed);
  // Random, non-zero biases so that every path is exercised.
  for (std::size_t k = 0; k < Net::parameter_count; ++k)
    net.parameters()[k] += 0.1 * f2d2n::random_symmetric(seed, 999, k);
  f2d2n::matrix<double> x(static_cast<Eigen::Index>(batch), static_cast<Eigen::Index>(Net::input_size));
  for (Eigen::Index i = 0; i < x.size(); ++i)
    x.data()[i] = f2d2n::random_symmetric(seed, 7, static_cast<std::uint64_t>(i));
  std::vector<std::int32_t> labels(batch);
  for (std::size_t i = 0; i < batch; ++i)
    labels[i] = static_cast<std::int32_t>(f2d2n::random_bits(seed, 8, i) % Net::output_size);

  net.compute_gradients(x, labels);
  const std::vector<double> analytic(net.gradients().begin(), net.gradients().end());
  double worst = 0, scale = 1;
  const double h = 1e-6;
  for (std::size_t k = 0; k < Net::parameter_count; ++k) {
    const double saved = net.parameters()[k];
    net.parameters()[k] = saved + h;
    const double up = net.evaluate_batch(x, labels).loss;
    net.parameters()[k] = saved - h;
    const double down = net.evaluate_batch(x, labels).loss;
    net.parameters()[k] = saved;
    const double numeric = (up - down) / (2 * h);
    worst = std::max(worst, std::abs(numeric - analytic[k]));
    scale = std::max(scale, std::abs(numeric));
  }
  // The analytic gradient must not have changed while probing (evaluate_batch leaves it alone).
  for (std::size_t k = 0; k < Net::parameter_count; ++k) REQUIRE(net.gradients()[k] == analytic[k]);
  return worst / scale;
}

}  // namespace test
