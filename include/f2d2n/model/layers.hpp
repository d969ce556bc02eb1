// f2d2n/model/layers.hpp: the layer specifications that make up a sequential<...>.
//
// A layer specification is an empty type that provides, as static members:
//   output(extents in)          -> extents     its output shape for a given input shape (constexpr)
//   parameter_count(extents in) -> std::size_t (constexpr)
//   at_layer<Index, Last, InDims...>           a class template whose static_asserts check that the
//                                              layer fits at position Index after input shape InDims
//   forward / backward (see below)             kernels over runtime extents, templated on the scalar only;
//                                              their products go through the layer's kernel::workspace
//   kind                                        input, hidden or loss
//   name                                        a short name (optional; part of a plan's fingerprint)
// The kernels never depend on the layer's position, so a network of many layers instantiates each
// kernel once per scalar type.
#pragma once

#include <f2d2n/core/random.hpp>
#include <f2d2n/core/shape.hpp>
#include <f2d2n/kernel/gemm.hpp>
#include <f2d2n/model/tensor.hpp>

#include <cmath>
#include <cstdint>
#include <span>
#include <string_view>

namespace f2d2n {

/// Where a layer may stand in a sequential.
enum class layer_kind { input, hidden, loss };

// ---------------------------------------------------------------------------------------------
// Initialisers for dense weights. Biases start at zero.

/// Uniform in +-sqrt(6 / fan_in): He et al. 2015, for layers followed by relu.
struct he_uniform {
  static double limit(std::size_t fan_in, std::size_t /*fan_out*/) {
    return std::sqrt(6.0 / static_cast<double>(fan_in));
  }
};
/// Uniform in +-sqrt(6 / (fan_in + fan_out)): Glorot & Bengio 2010, for sigmoid, tanh and outputs.
struct xavier_uniform {
  static double limit(std::size_t fan_in, std::size_t fan_out) {
    return std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  }
};
/// He when the next layer is relu, Xavier otherwise (resolved by sequential).
struct auto_init {};

// ---------------------------------------------------------------------------------------------

/// The samples' shape: always layer 0 of a sequential. input<784>, input<28, 28>, input<1, 28, 28>.
template <std::size_t... Dims>
struct input {
  static_assert(sizeof...(Dims) >= 1 && sizeof...(Dims) <= max_rank,
                "f2d2n: input<...> takes between 1 and 4 extents, e.g. input<784> or input<1, 28, 28>");
  static constexpr std::string_view name = "input";
  static constexpr layer_kind kind = layer_kind::input;
  static constexpr extents output(extents) noexcept { return shape<Dims...>::value; }
  static constexpr std::size_t parameter_count(extents) noexcept { return 0; }

  template <std::size_t Index, bool Last, std::size_t... In>
  struct at_layer {
    static_assert(Index == 0,
                  "f2d2n: input<...> may only be layer 0 of a sequential (this one is at the index named above)");
    static_assert(((Dims > 0) && ...), "f2d2n: input<...> has an extent of zero");
    static constexpr bool ok = true;
  };
};

namespace detail {
/// The kernels of dense<N>, over runtime extents: the number of neurons is y's (dy's) columns,
/// so the same code serves a whole layer and a shard of its neurons (plan/), and is instantiated
/// once per scalar type, not once per N.
struct dense_kernels {
  template <class S>
  static void forward(kernel::workspace<S>& ws, const S* params, const_matrix_ref<S> x, matrix_ref<S> y) {
    const auto in = x.cols(), n = y.cols();
    const_matrix_map<S> w(params, n, in);
    Eigen::Map<const vector<S>> b(params + n * in, n);
    kernel::multiply<S>(ws, kernel::form::nt, x, w, y);
    y.rowwise() += b.transpose();
  }

  /// db = the sums of dy's columns, each added row after row. Every bit of it is set by dy's
  /// values alone: Eigen's colwise().sum() peels the columns before db's first aligned address
  /// off its vectorised loop, so two units holding copies of one bias at different offsets got
  /// different last bits.
  template <class Dy, class Db>
  static void bias_gradient(const Dy& dy, Db& db) {
    if (dy.rows() == 0) {
      db.setZero();
      return;
    }
    db = dy.row(0).transpose();
    for (Eigen::Index r = 1; r < dy.rows(); ++r) db += dy.row(r).transpose();
  }

  /// Writes (not adds) this layer's gradients; computes dx only when want_dx.
  template <class S>
  static void backward(kernel::workspace<S>& ws, const S* params, S* grads, const_matrix_ref<S> x,
                       const_matrix_ref<S> /*y*/, const_matrix_ref<S> dy, matrix_ref<S> dx, bool want_dx) {
    const auto in = x.cols(), n = dy.cols();
    const_matrix_map<S> w(params, n, in);
    matrix_map<S> dw(grads, n, in);
    Eigen::Map<vector<S>> db(grads + n * in, n);
    kernel::multiply<S>(ws, kernel::form::tn, dy, x, dw);
    bias_gradient(dy, db);
    if (want_dx) kernel::multiply<S>(ws, kernel::form::nn, dy, w, dx);
  }

  /// Fills the block of rows [row_begin, row_begin + rows) and input columns [col_begin,
  /// col_begin + cols) of a layer over `in` inputs: `params` holds the block's weights (rows x
  /// cols, row-major), then the rows' biases (zero). Weight (j, c) of the whole layer is element
  /// j * in + c of random stream `stream`, whichever unit draws it.
  template <class S>
  static void initialize_block(std::span<S> params, std::size_t in, std::size_t row_begin, std::size_t rows,
                               std::size_t col_begin, std::size_t cols, double limit, std::uint64_t seed,
                               std::uint64_t stream) {
    for (std::size_t j = 0; j < rows; ++j)
      for (std::size_t c = 0; c < cols; ++c)
        params[j * cols + c] =
            static_cast<S>(limit * random_symmetric(seed, stream, (row_begin + j) * in + col_begin + c));
    for (std::size_t k = rows * cols; k < rows * cols + rows; ++k) params[k] = S(0);
  }
};
}  // namespace detail

/// A fully connected layer of N neurons: y = x W^T + b, W stored row-major as N x in (PyTorch's
/// layout), then b (N). The input may have any shape; it is read as flat features.
template <std::size_t N, class Init = auto_init>
struct dense : detail::dense_kernels {
  static constexpr std::string_view name = "dense";
  static constexpr layer_kind kind = layer_kind::hidden;
  static constexpr std::size_t neurons = N;
  using initializer = Init;

  static constexpr extents output(extents) noexcept { return flat(N); }
  static constexpr std::size_t parameter_count(extents in) noexcept { return N * in.size() + N; }

  template <std::size_t Index, bool Last, std::size_t... In>
  struct at_layer {
    static_assert(N > 0, "f2d2n: dense<N> at the layer index named above has no neurons: N must be at least 1");
    static constexpr bool ok = N > 0;
  };

  /// Fills this layer's slice of the parameters, element k of the layer from random stream `stream`.
  template <class S, class Resolved>
  static void initialize(std::span<S> params, std::size_t in, std::uint64_t seed, std::uint64_t stream) {
    initialize_block(params, in, 0, N, 0, in, Resolved::limit(in, N), seed, stream);
  }
};

namespace detail {
/// Shared parts of parameter-free layers that keep their input's shape.
struct elementwise {
  static constexpr layer_kind kind = layer_kind::hidden;
  static constexpr extents output(extents in) noexcept { return in; }
  static constexpr std::size_t parameter_count(extents) noexcept { return 0; }
  template <std::size_t Index, bool Last, std::size_t... In>
  struct at_layer {
    static constexpr bool ok = true;
  };
};
}  // namespace detail

/// max(x, 0).
struct relu : detail::elementwise {
  static constexpr std::string_view name = "relu";
  template <class S>
  static void forward(kernel::workspace<S>&, const S*, const_matrix_ref<S> x, matrix_ref<S> y) {
    y.array() = x.array().max(S(0));
  }
  template <class S>
  static void backward(kernel::workspace<S>&, const S*, S*, const_matrix_ref<S>, const_matrix_ref<S> y,
                       const_matrix_ref<S> dy, matrix_ref<S> dx, bool want_dx) {
    if (want_dx) dx.array() = (y.array() > S(0)).select(dy.array(), S(0));
  }
};

/// 1 / (1 + exp(-x)).
struct sigmoid : detail::elementwise {
  static constexpr std::string_view name = "sigmoid";
  template <class S>
  static void forward(kernel::workspace<S>&, const S*, const_matrix_ref<S> x, matrix_ref<S> y) {
    y.array() = x.array().logistic();
  }
  template <class S>
  static void backward(kernel::workspace<S>&, const S*, S*, const_matrix_ref<S>, const_matrix_ref<S> y,
                       const_matrix_ref<S> dy, matrix_ref<S> dx, bool want_dx) {
    if (want_dx) dx.array() = dy.array() * y.array() * (S(1) - y.array());
  }
};

/// Hyperbolic tangent.
struct tanh : detail::elementwise {
  static constexpr std::string_view name = "tanh";
  template <class S>
  static void forward(kernel::workspace<S>&, const S*, const_matrix_ref<S> x, matrix_ref<S> y) {
    y.array() = x.array().tanh();
  }
  template <class S>
  static void backward(kernel::workspace<S>&, const S*, S*, const_matrix_ref<S>, const_matrix_ref<S> y,
                       const_matrix_ref<S> dy, matrix_ref<S> dx, bool want_dx) {
    if (want_dx) dx.array() = dy.array() * (S(1) - y.array().square());
  }
};

namespace detail {
/// Shared parts of layers that only reinterpret the shape (no arithmetic; data is copied as is).
struct reshaping {
  static constexpr layer_kind kind = layer_kind::hidden;
  static constexpr std::size_t parameter_count(extents) noexcept { return 0; }
  template <class S>
  static void forward(kernel::workspace<S>&, const S*, const_matrix_ref<S> x, matrix_ref<S> y) {
    y = x;
  }
  template <class S>
  static void backward(kernel::workspace<S>&, const S*, S*, const_matrix_ref<S>, const_matrix_ref<S>,
                       const_matrix_ref<S> dy, matrix_ref<S> dx, bool want_dx) {
    if (want_dx) dx = dy;
  }
};
}  // namespace detail

/// Views the input as flat features.
struct flatten : detail::reshaping {
  static constexpr std::string_view name = "flatten";
  static constexpr extents output(extents in) noexcept { return flat(in.size()); }
  template <std::size_t Index, bool Last, std::size_t... In>
  struct at_layer {
    static constexpr bool ok = true;
  };
};

/// Views the input as shape<Dims...>; the number of elements must not change.
template <std::size_t... Dims>
struct reshape : detail::reshaping {
  static constexpr std::string_view name = "reshape";
  static_assert(sizeof...(Dims) >= 1 && sizeof...(Dims) <= max_rank,
                "f2d2n: reshape<...> takes between 1 and 4 extents");
  static constexpr extents output(extents) noexcept { return shape<Dims...>::value; }
  template <std::size_t Index, bool Last, std::size_t... In>
  struct at_layer {
    static constexpr std::size_t input_size = (In * ... * 1);
    static_assert(sizeof...(In) == 0 || input_size == shape<Dims...>::size,
                  "f2d2n: reshape<...> at the layer index named above does not fit its input: the number of "
                  "elements must stay the same (input shape and reshape extents are named above)");
    static constexpr bool ok = sizeof...(In) == 0 || input_size == shape<Dims...>::size;
  };
};

// ---------------------------------------------------------------------------------------------
// Losses: always the last layer. forward() gives the model's prediction (probabilities for
// softmax_cross_entropy); loss() gives the mean loss over the batch and writes d(loss)/d(input).

namespace detail {
/// Shared parts of losses: the last layer, parameter-free, its prediction has its input's shape.
struct loss_layer {
  static constexpr layer_kind kind = layer_kind::loss;
  static constexpr extents output(extents in) noexcept { return in; }
  static constexpr std::size_t parameter_count(extents) noexcept { return 0; }
};
}  // namespace detail

/// Softmax over the classes followed by the cross-entropy with integer labels, fused and stable.
struct softmax_cross_entropy : detail::loss_layer {
  static constexpr std::string_view name = "softmax_cross_entropy";

  template <std::size_t Index, bool Last, std::size_t... In>
  struct at_layer {
    static_assert(
        Last,
        "f2d2n: softmax_cross_entropy at the layer index named above is not the last layer: a loss must end the sequential");
    static_assert(sizeof...(In) == 0 || sizeof...(In) == 1,
                  "f2d2n: softmax_cross_entropy needs flat logits: put dense<classes> (or flatten) before it");
    static_assert(sizeof...(In) == 0 || (In * ... * 1) >= 2,
                  "f2d2n: softmax_cross_entropy needs at least 2 classes: the layer before it has fewer outputs");
    static constexpr bool ok = true;
  };

  template <class S>
  static void forward(const S*, const_matrix_ref<S> x, matrix_ref<S> y) {
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      const S m = x.row(r).maxCoeff();
      y.row(r).array() = (x.row(r).array() - m).exp();
      y.row(r) /= y.row(r).sum();
    }
  }

  /// Mean cross-entropy over the batch; dx = (softmax(x) - onehot(label)) / batch.
  template <class S>
  static S loss(const_matrix_ref<S> x, std::span<const std::int32_t> labels, matrix_ref<S> dx) {
    const auto batch = x.rows();
    const S inv = S(1) / static_cast<S>(batch);
    S total = 0;
    for (Eigen::Index r = 0; r < batch; ++r) {
      const S m = x.row(r).maxCoeff();
      dx.row(r).array() = (x.row(r).array() - m).exp();
      const S sum = dx.row(r).sum();
      const auto label = labels[static_cast<std::size_t>(r)];
      total += std::log(sum) - (x(r, label) - m);
      dx.row(r) *= inv / sum;
      dx(r, label) -= inv;
    }
    return total * inv;
  }
};

/// Mean squared error against one-hot targets made from the labels, averaged over every element
/// (PyTorch's MSELoss with reduction='mean'); the prediction is the input itself.
struct mean_squared_error : detail::loss_layer {
  static constexpr std::string_view name = "mean_squared_error";

  template <std::size_t Index, bool Last, std::size_t... In>
  struct at_layer {
    static_assert(
        Last,
        "f2d2n: mean_squared_error at the layer index named above is not the last layer: a loss must end the sequential");
    static_assert(sizeof...(In) == 0 || sizeof...(In) == 1,
                  "f2d2n: mean_squared_error needs flat outputs: put dense<classes> (or flatten) before it");
    static constexpr bool ok = true;
  };

  template <class S>
  static void forward(const S*, const_matrix_ref<S> x, matrix_ref<S> y) {
    y = x;
  }

  template <class S>
  static S loss(const_matrix_ref<S> x, std::span<const std::int32_t> labels, matrix_ref<S> dx) {
    const auto batch = x.rows();
    const S inv = S(1) / static_cast<S>(x.size());
    dx = x;
    for (Eigen::Index r = 0; r < batch; ++r) dx(r, labels[static_cast<std::size_t>(r)]) -= S(1);
    const S total = dx.squaredNorm() * inv;
    dx *= S(2) * inv;
    return total;
  }
};

}  // namespace f2d2n
