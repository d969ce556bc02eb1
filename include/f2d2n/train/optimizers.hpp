// f2d2n/train/optimizers.hpp: optimizers over one flat parameter buffer and its flat gradient buffer.
//
// Hyper-parameters are plain aggregates (sgd, adam) so that plans and experiments can name them
// with designated initialisers; optimizer<Scalar, Options> adds the state and the update.
// The updates follow PyTorch's torch.optim.SGD and torch.optim.Adam (weight_decay as L2 added to
// the gradient), so the two can be compared step for step.
#pragma once

#include <f2d2n/core/error.hpp>

#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace f2d2n {

/// Stochastic gradient descent with momentum and L2 weight decay:
///   g = grad + weight_decay * w;  v = momentum * v + g;  w -= learning_rate * v.
struct sgd {
  double learning_rate = 0.01;
  double momentum = 0.0;
  double weight_decay = 0.0;
};

/// Adam (Kingma & Ba) with bias correction and L2 weight decay added to the gradient.
struct adam {
  double learning_rate = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double epsilon = 1e-8;
  double weight_decay = 0.0;
};

namespace detail {
inline void check_finite_positive(double v, const char* what) {
  if (!(v > 0) || !std::isfinite(v)) throw configuration_error(std::string("f2d2n: ") + what + " must be positive and finite");
}
inline void check_unit_interval(double v, const char* what) {
  if (!(v >= 0 && v < 1)) throw configuration_error(std::string("f2d2n: ") + what + " must be in [0, 1)");
}
inline void check_non_negative(double v, const char* what) {
  if (!(v >= 0) || !std::isfinite(v)) throw configuration_error(std::string("f2d2n: ") + what + " must be zero or positive");
}
inline void validate(const sgd& o) {
  check_finite_positive(o.learning_rate, "sgd learning_rate");
  check_unit_interval(o.momentum, "sgd momentum");
  check_non_negative(o.weight_decay, "sgd weight_decay");
}
inline void validate(const adam& o) {
  check_finite_positive(o.learning_rate, "adam learning_rate");
  check_unit_interval(o.beta1, "adam beta1");
  check_unit_interval(o.beta2, "adam beta2");
  check_finite_positive(o.epsilon, "adam epsilon");
  check_non_negative(o.weight_decay, "adam weight_decay");
}
template <class S>
void check_sizes(std::span<S> params, std::span<const S> grads) {
  if (params.size() != grads.size())
    throw configuration_error("f2d2n: optimizer step over " + std::to_string(params.size()) + " parameters but " +
                              std::to_string(grads.size()) + " gradients");
}
}  // namespace detail

template <class Scalar, class Options>
class optimizer;

/// SGD's state: the momentum buffer (allocated on the first step, only when momentum > 0).
template <class Scalar>
class optimizer<Scalar, sgd> {
 public:
  explicit optimizer(sgd options) : options_(options) { detail::validate(options_); }

  void step(std::span<Scalar> params, std::span<const Scalar> grads) {
    detail::check_sizes(params, grads);
    const std::size_t n = params.size();
    const auto lr = static_cast<Scalar>(options_.learning_rate);
    const auto wd = static_cast<Scalar>(options_.weight_decay);
    const auto mu = static_cast<Scalar>(options_.momentum);
    Scalar* __restrict w = params.data();
    const Scalar* __restrict g = grads.data();
    // One pass over the buffers (the update is memory-bound): plain loops the compiler vectorises.
    if (options_.momentum == 0) {
      for (std::size_t i = 0; i < n; ++i) w[i] -= lr * (g[i] + wd * w[i]);
    } else {
      if (velocity_.size() != n) velocity_.assign(n, Scalar(0));
      Scalar* __restrict v = velocity_.data();
      for (std::size_t i = 0; i < n; ++i) {
        const Scalar vi = mu * v[i] + (g[i] + wd * w[i]);
        v[i] = vi;
        w[i] -= lr * vi;
      }
    }
    ++steps_;
  }

  [[nodiscard]] sgd& options() noexcept { return options_; }
  [[nodiscard]] const sgd& options() const noexcept { return options_; }
  [[nodiscard]] std::size_t steps() const noexcept { return steps_; }
  void set_learning_rate(double lr) {
    detail::check_finite_positive(lr, "sgd learning_rate");
    options_.learning_rate = lr;
  }

 private:
  sgd options_;
  std::vector<Scalar> velocity_;
  std::size_t steps_ = 0;
};

/// Adam's state: first and second moment estimates and the step count.
template <class Scalar>
class optimizer<Scalar, adam> {
 public:
  explicit optimizer(adam options) : options_(options) { detail::validate(options_); }

  void step(std::span<Scalar> params, std::span<const Scalar> grads) {
    detail::check_sizes(params, grads);
    const std::size_t n = params.size();
    if (m_.size() != n) {
      m_.assign(n, Scalar(0));
      v_.assign(n, Scalar(0));
    }
    ++steps_;
    const auto b1 = static_cast<Scalar>(options_.beta1);
    const auto b2 = static_cast<Scalar>(options_.beta2);
    const auto wd = static_cast<Scalar>(options_.weight_decay);
    const double t = static_cast<double>(steps_);
    const auto step_size = static_cast<Scalar>(options_.learning_rate / (1 - std::pow(options_.beta1, t)));
    const auto inv_sqrt_bc2 = static_cast<Scalar>(1 / std::sqrt(1 - std::pow(options_.beta2, t)));
    const auto eps = static_cast<Scalar>(options_.epsilon);
    Scalar* __restrict w = params.data();
    const Scalar* __restrict g = grads.data();
    Scalar* __restrict m = m_.data();
    Scalar* __restrict v = v_.data();
    for (std::size_t i = 0; i < n; ++i) {
      const Scalar gi = g[i] + wd * w[i];
      const Scalar mi = b1 * m[i] + (1 - b1) * gi;
      const Scalar vi = b2 * v[i] + (1 - b2) * gi * gi;
      m[i] = mi;
      v[i] = vi;
      w[i] -= step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
    }
  }

  [[nodiscard]] adam& options() noexcept { return options_; }
  [[nodiscard]] const adam& options() const noexcept { return options_; }
  [[nodiscard]] std::size_t steps() const noexcept { return steps_; }
  void set_learning_rate(double lr) {
    detail::check_finite_positive(lr, "adam learning_rate");
    options_.learning_rate = lr;
  }

 private:
  adam options_;
  std::vector<Scalar> m_, v_;
  std::size_t steps_ = 0;
};

}  // namespace f2d2n
