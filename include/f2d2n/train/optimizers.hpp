// f2d2n/train/optimizers.hpp: optimizers over one flat parameter buffer and its flat gradient buffer.
//
// Hyper-parameters are plain aggregates (sgd, adam) so that plans and experiments can name them
// with designated initialisers; optimizer<Scalar, Options> adds the state and the update.
// The updates follow PyTorch's torch.optim.SGD and torch.optim.Adam (weight_decay as L2 added to
// the gradient), so the two can be compared step for step. Both serialize with Boost.Serialization
// (options, step count and state buffers; the archive types are the user's choice).
#pragma once

#include <f2d2n/core/error.hpp>

#if defined(__SSE2__)
#include <immintrin.h>  // square roots in SIMD registers (detail::square_roots)
#endif

#include <boost/serialization/array_wrapper.hpp>
#include <boost/serialization/nvp.hpp>
#include <boost/serialization/split_member.hpp>
#include <boost/serialization/string.hpp>
#include <boost/serialization/version.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace f2d2n {

/// Stochastic gradient descent with momentum and L2 weight decay:
///   g = grad + weight_decay * w;  v = momentum * v + g;  w -= learning_rate * v.
struct sgd {
  static constexpr std::string_view name = "sgd";
  double learning_rate = 0.01;
  double momentum = 0.0;
  double weight_decay = 0.0;
};

/// Adam (Kingma & Ba) with bias correction and L2 weight decay added to the gradient.
struct adam {
  static constexpr std::string_view name = "adam";
  double learning_rate = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double epsilon = 1e-8;
  double weight_decay = 0.0;
};

namespace detail {
/// out[i] = sqrt(v[i]), correctly rounded, for i < n, in SIMD registers where the target has them.
/// Not std::sqrt in a loop: it may set errno, so GCC keeps the loop scalar (Adam's update took 31 %
/// of the serial example's time), and no function attribute lifts that. Not Eigen's array sqrt:
/// under its default EIGEN_FAST_MATH its float packets approximate (rsqrt and a Newton step) while
/// its scalar tail rounds correctly, so an update would depend on the parameter's offset, and
/// copies of one parameter on two units would part. Every path here rounds correctly.
template <class Scalar>
void square_roots(const Scalar* __restrict v, Scalar* __restrict out, std::size_t n) {
  std::size_t i = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<Scalar, float>)
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, _mm512_sqrt_ps(_mm512_loadu_ps(v + i)));
  else if constexpr (std::is_same_v<Scalar, double>)
    for (; i + 8 <= n; i += 8) _mm512_storeu_pd(out + i, _mm512_sqrt_pd(_mm512_loadu_pd(v + i)));
#elif defined(__AVX__)
  if constexpr (std::is_same_v<Scalar, float>)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_sqrt_ps(_mm256_loadu_ps(v + i)));
  else if constexpr (std::is_same_v<Scalar, double>)
    for (; i + 4 <= n; i += 4) _mm256_storeu_pd(out + i, _mm256_sqrt_pd(_mm256_loadu_pd(v + i)));
#elif defined(__SSE2__)
  if constexpr (std::is_same_v<Scalar, float>)
    for (; i + 4 <= n; i += 4) _mm_storeu_ps(out + i, _mm_sqrt_ps(_mm_loadu_ps(v + i)));
  else if constexpr (std::is_same_v<Scalar, double>)
    for (; i + 2 <= n; i += 2) _mm_storeu_pd(out + i, _mm_sqrt_pd(_mm_loadu_pd(v + i)));
#endif
  for (; i < n; ++i) out[i] = std::sqrt(v[i]);
}

inline void check_finite_positive(double v, const char* what) {
  if (!(v > 0) || !std::isfinite(v))
    throw configuration_error(std::string("f2d2n: ") + what + " must be positive and finite");
}
inline void check_unit_interval(double v, const char* what) {
  if (!(v >= 0 && v < 1)) throw configuration_error(std::string("f2d2n: ") + what + " must be in [0, 1)");
}
inline void check_non_negative(double v, const char* what) {
  if (!(v >= 0) || !std::isfinite(v))
    throw configuration_error(std::string("f2d2n: ") + what + " must be zero or positive");
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

// --- Boost.Serialization of optimizers ---------------------------------------------------------
// An archive holds the optimizer's kind ("sgd", "adam"), its scalar's size, its options, its step
// count, then each state buffer as its length and its values. Buffers go in blocks of
// state_block values (one make_array each: contiguous, never value by value), so that a damaged
// length cannot make one huge allocation before the data is there; writing and reading use the
// same blocks, which XML needs (one element a block).

inline constexpr const char* optimizer_archive = "Boost.Serialization archive of an optimizer";
inline constexpr std::uint64_t state_block = std::uint64_t{1} << 22;

template <class Archive, class S>
void save_state(Archive& ar, const char* name, const char* length_name, std::span<const S> buffer) {
  using boost::serialization::make_nvp;
  const std::uint64_t n = buffer.size();
  ar << make_nvp(length_name, n);
  for (std::uint64_t at = 0; at < n; at += state_block)
    ar << make_nvp(name, boost::serialization::make_array(buffer.data() + at, std::min(state_block, n - at)));
}

template <class S, class Archive>
std::vector<S> load_state(Archive& ar, const char* name, const char* length_name) {
  using boost::serialization::make_nvp;
  std::uint64_t n = 0;
  ar >> make_nvp(length_name, n);
  std::vector<S> buffer;
  for (std::uint64_t at = 0; at < n; at += state_block) {
    const std::uint64_t count = std::min(state_block, n - at);
    buffer.resize(static_cast<std::size_t>(at + count));
    ar >> make_nvp(name, boost::serialization::make_array(buffer.data() + at, count));
  }
  return buffer;
}

/// The archive's kind, scalar size and class version against this optimizer's.
template <class Archive, class S>
void save_kind(Archive& ar, std::string_view kind) {
  using boost::serialization::make_nvp;
  const std::string k(kind);
  const std::uint32_t scalar_size = sizeof(S);
  ar << make_nvp("kind", k) << make_nvp("scalar_size", scalar_size);
}

template <class S, class Archive>
void load_kind(Archive& ar, std::string_view kind, unsigned version, unsigned expected_version) {
  using boost::serialization::make_nvp;
  if (version != expected_version)
    throw storage_error(optimizer_archive, storage_problem::bad_format,
                        "class version " + std::to_string(version) + ", this build reads version " +
                            std::to_string(expected_version));
  std::string k;
  std::uint32_t scalar_size = 0;
  ar >> make_nvp("kind", k) >> make_nvp("scalar_size", scalar_size);
  if (k != kind)
    throw storage_error(optimizer_archive, storage_problem::model_mismatch,
                        "the archive holds a '" + k + "' optimizer, this one is '" + std::string(kind) + "'");
  if (scalar_size != sizeof(S))
    throw storage_error(optimizer_archive, storage_problem::model_mismatch,
                        "the archive's state is in " + std::to_string(scalar_size) +
                            "-byte scalars, this optimizer's in " + std::to_string(sizeof(S)) + "-byte");
}

/// Options read from an archive must be valid ones.
template <class Options>
void validate_loaded(const Options& o) {
  try {
    validate(o);
  } catch (const configuration_error& e) {
    throw storage_error(optimizer_archive, storage_problem::corrupt, e.what());
  }
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
  void set_steps(std::size_t steps) noexcept { steps_ = steps; }

  /// The per-parameter state buffers, by PyTorch's names: the momentum buffer (empty until the
  /// first step, and always without momentum). Checkpoints store and restore them.
  static constexpr std::array<std::string_view, 1> state_names{"momentum_buffer"};
  [[nodiscard]] std::span<Scalar> state(std::size_t) noexcept { return velocity_; }
  [[nodiscard]] std::span<const Scalar> state(std::size_t) const noexcept { return velocity_; }
  /// Makes every state buffer n values long (zeros) or, with n = 0, empty.
  void reset_state(std::size_t n) { velocity_.assign(options_.momentum == 0 ? 0 : n, Scalar(0)); }
  /// Whether the state buffers are allocated (after the first step; never without momentum).
  [[nodiscard]] bool has_state() const noexcept { return !velocity_.empty(); }
  void set_learning_rate(double lr) {
    detail::check_finite_positive(lr, "sgd learning_rate");
    options_.learning_rate = lr;
  }

  /// The class version Boost.Serialization archives record (raise it when serialize changes).
  static constexpr unsigned serialization_version = 1;

 private:
  friend class boost::serialization::access;

  /// Boost.Serialization: options, step count and momentum buffer. Loading reads everything into
  /// temporaries first: on any error the optimizer is unchanged.
  BOOST_SERIALIZATION_SPLIT_MEMBER()
  template <class Archive>
  void save(Archive& ar, const unsigned int /*version*/) const {
    using boost::serialization::make_nvp;
    detail::save_kind<Archive, Scalar>(ar, sgd::name);
    const std::uint64_t steps = steps_;
    ar << make_nvp("learning_rate", options_.learning_rate) << make_nvp("momentum", options_.momentum)
       << make_nvp("weight_decay", options_.weight_decay) << make_nvp("steps", steps);
    detail::save_state(ar, "momentum_buffer", "momentum_buffer_length", std::span<const Scalar>(velocity_));
  }
  template <class Archive>
  void load(Archive& ar, const unsigned int version) {
    using boost::serialization::make_nvp;
    detail::load_kind<Scalar>(ar, sgd::name, version, serialization_version);
    sgd o;
    std::uint64_t steps = 0;
    ar >> make_nvp("learning_rate", o.learning_rate) >> make_nvp("momentum", o.momentum) >>
        make_nvp("weight_decay", o.weight_decay) >> make_nvp("steps", steps);
    detail::validate_loaded(o);
    auto velocity = detail::load_state<Scalar>(ar, "momentum_buffer", "momentum_buffer_length");
    if (o.momentum == 0 && !velocity.empty())
      throw storage_error(detail::optimizer_archive, storage_problem::corrupt, "a momentum buffer without momentum");
    options_ = o;
    velocity_ = std::move(velocity);
    steps_ = static_cast<std::size_t>(steps);
  }

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
    // In blocks that stay in the L1 cache: the moments, then their square roots, then the weights.
    // A plain std::sqrt may set errno, which kept the compiler from vectorising the whole loop (the
    // update took 31 % of the serial example's time); detail::square_roots has no errno to keep.
    constexpr std::size_t block = 1024;
    std::array<Scalar, block> root;
    for (std::size_t at = 0; at < n; at += block) {
      const std::size_t len = std::min(block, n - at);
      for (std::size_t i = at; i < at + len; ++i) {
        const Scalar gi = g[i] + wd * w[i];
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
      }
      detail::square_roots(v + at, root.data(), len);
      for (std::size_t i = 0; i < len; ++i) w[at + i] -= step_size * m[at + i] / (root[i] * inv_sqrt_bc2 + eps);
    }
  }

  [[nodiscard]] adam& options() noexcept { return options_; }
  [[nodiscard]] const adam& options() const noexcept { return options_; }
  [[nodiscard]] std::size_t steps() const noexcept { return steps_; }
  /// Sets the step count (it decides the bias correction of the next step).
  void set_steps(std::size_t steps) noexcept { steps_ = steps; }

  /// The per-parameter state buffers, by PyTorch's names: first and second moment estimates (empty
  /// until the first step). Checkpoints store and restore them.
  static constexpr std::array<std::string_view, 2> state_names{"exp_avg", "exp_avg_sq"};
  [[nodiscard]] std::span<Scalar> state(std::size_t k) noexcept { return k == 0 ? std::span<Scalar>(m_) : v_; }
  [[nodiscard]] std::span<const Scalar> state(std::size_t k) const noexcept {
    return k == 0 ? std::span<const Scalar>(m_) : v_;
  }
  /// Makes every state buffer n values long (zeros) or, with n = 0, empty.
  void reset_state(std::size_t n) {
    m_.assign(n, Scalar(0));
    v_.assign(n, Scalar(0));
  }
  /// Whether the state buffers are allocated (after the first step).
  [[nodiscard]] bool has_state() const noexcept { return !m_.empty(); }
  void set_learning_rate(double lr) {
    detail::check_finite_positive(lr, "adam learning_rate");
    options_.learning_rate = lr;
  }

  /// The class version Boost.Serialization archives record (raise it when serialize changes).
  static constexpr unsigned serialization_version = 1;

 private:
  friend class boost::serialization::access;

  /// Boost.Serialization: options, step count and both moment estimates. Loading reads
  /// everything into temporaries first: on any error the optimizer is unchanged.
  BOOST_SERIALIZATION_SPLIT_MEMBER()
  template <class Archive>
  void save(Archive& ar, const unsigned int /*version*/) const {
    using boost::serialization::make_nvp;
    detail::save_kind<Archive, Scalar>(ar, adam::name);
    const std::uint64_t steps = steps_;
    ar << make_nvp("learning_rate", options_.learning_rate) << make_nvp("beta1", options_.beta1)
       << make_nvp("beta2", options_.beta2) << make_nvp("epsilon", options_.epsilon)
       << make_nvp("weight_decay", options_.weight_decay) << make_nvp("steps", steps);
    detail::save_state(ar, "exp_avg", "exp_avg_length", std::span<const Scalar>(m_));
    detail::save_state(ar, "exp_avg_sq", "exp_avg_sq_length", std::span<const Scalar>(v_));
  }
  template <class Archive>
  void load(Archive& ar, const unsigned int version) {
    using boost::serialization::make_nvp;
    detail::load_kind<Scalar>(ar, adam::name, version, serialization_version);
    adam o;
    std::uint64_t steps = 0;
    ar >> make_nvp("learning_rate", o.learning_rate) >> make_nvp("beta1", o.beta1) >> make_nvp("beta2", o.beta2) >>
        make_nvp("epsilon", o.epsilon) >> make_nvp("weight_decay", o.weight_decay) >> make_nvp("steps", steps);
    detail::validate_loaded(o);
    auto m = detail::load_state<Scalar>(ar, "exp_avg", "exp_avg_length");
    auto v = detail::load_state<Scalar>(ar, "exp_avg_sq", "exp_avg_sq_length");
    if (m.size() != v.size())
      throw storage_error(detail::optimizer_archive, storage_problem::corrupt,
                          "the moment estimates have " + std::to_string(m.size()) + " and " + std::to_string(v.size()) +
                              " values");
    options_ = o;
    m_ = std::move(m);
    v_ = std::move(v);
    steps_ = static_cast<std::size_t>(steps);
  }

  adam options_;
  std::vector<Scalar> m_, v_;
  std::size_t steps_ = 0;
};

}  // namespace f2d2n

/// Archives record optimizer<Scalar, Options>'s class version (a class template: a partial
/// specialization, as BOOST_CLASS_VERSION cannot name one).
template <class Scalar, class Options>
struct boost::serialization::version<f2d2n::optimizer<Scalar, Options>> {
  using tag = boost::mpl::integral_c_tag;
  using type = boost::mpl::int_<f2d2n::optimizer<Scalar, Options>::serialization_version>;
  static constexpr int value = type::value;
};
