// Convolutional layers (model/conv.hpp): shapes at compile time, conv2d against a direct
// convolution, float64 gradient checks through conv2d, max_pool, avg_pool (strides, rectangular
// kernels, padding), the adjoint of im2col, dropout's counter-based mask and its adjoint.
#include <doctest/doctest.h>

#include "gradient_check.hpp"

#include <f2d2n/model.hpp>

#include <cmath>
#include <cstring>
#include <vector>

namespace nn = f2d2n;

namespace {
using lenet = nn::sequential<nn::input<28, 28>, nn::conv2d<16, 5, 1, 2>, nn::relu, nn::max_pool<2>,
                             nn::conv2d<32, 5, 1, 2>, nn::relu, nn::max_pool<2>, nn::flatten, nn::dense<48>, nn::relu,
                             nn::dense<10>, nn::softmax_cross_entropy>;

template <class S>
nn::matrix<S> random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint64_t stream) {
  nn::matrix<S> m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i)
    m.data()[i] = static_cast<S>(nn::random_symmetric(11, stream, static_cast<std::uint64_t>(i)));
  return m;
}

/// The convolution by its definition, one output at a time, channels-last, in double.
double direct(const nn::matrix<double>& x, const std::vector<double>& w, std::size_t n, const nn::detail::conv_geometry& g,
              std::ptrdiff_t oh, std::ptrdiff_t ow, std::ptrdiff_t co) {
  double sum = w[static_cast<std::size_t>(g.co * g.patch() + co)];
  for (std::ptrdiff_t i = 0; i < g.kh; ++i)
    for (std::ptrdiff_t j = 0; j < g.kw; ++j)
      for (std::ptrdiff_t c = 0; c < g.c; ++c) {
        const std::ptrdiff_t r = oh * g.sh - g.top + i, q = ow * g.sw - g.left + j;
        if (r < 0 || r >= g.h || q < 0 || q >= g.w) continue;
        sum += x(static_cast<Eigen::Index>(n), (r * g.w + q) * g.c + c) *
               w[static_cast<std::size_t>(co * g.patch() + (i * g.kw + j) * g.c + c)];
      }
  return sum;
}
}  // namespace

TEST_CASE("conv2d and pooling: shapes and parameter counts at compile time") {
  static_assert(lenet::output_extents[1] == nn::shape<28, 28, 16>::value);
  static_assert(lenet::output_extents[3] == nn::shape<14, 14, 16>::value);
  static_assert(lenet::output_extents[4] == nn::shape<14, 14, 32>::value);
  static_assert(lenet::output_extents[6] == nn::shape<7, 7, 32>::value);
  static_assert(lenet::parameter_counts[1] == 16 * 25 + 16);
  static_assert(lenet::parameter_counts[4] == 32 * 25 * 16 + 32);
  static_assert(lenet::parameter_counts[8] == 7 * 7 * 32 * 48 + 48);
  static_assert(lenet::parameter_count < 100000);
  // Rectangular kernels, strides and paddings; PyTorch's floor for the output size.
  using odd = nn::sequential<nn::input<9, 7, 3>, nn::conv2d<4, nn::window{5, 3}, 2, nn::window{2, 1}>,
                             nn::avg_pool<nn::window{2, 3}, 1>, nn::flatten, nn::dense<2>, nn::softmax_cross_entropy>;
  static_assert(odd::output_extents[1] == nn::shape<5, 4, 4>::value);  // (9 + 4 - 5) / 2 + 1, (7 + 2 - 3) / 2 + 1
  static_assert(odd::output_extents[2] == nn::shape<4, 2, 4>::value);
  static_assert(odd::parameter_counts[1] == 4 * 5 * 3 * 3 + 4);
  using strided_pool = nn::sequential<nn::input<7, 7>, nn::max_pool<3, 2>, nn::flatten, nn::dense<2>,
                                      nn::softmax_cross_entropy>;
  static_assert(strided_pool::output_extents[1] == nn::shape<3, 3>::value);
  CHECK(lenet::parameter_count == 416 + 12832 + 75312 + 490);
}

TEST_CASE_TEMPLATE("conv2d's forward pass equals the direct convolution (strides, padding, rectangular kernels)",
                   Image, nn::shape<9, 8, 3>, nn::shape<9, 8, 1>) {
  // One input channel with unit stride along the width takes the tap-by-tap route (conv_kernels::by_taps).
  using net = nn::sequential<nn::input<Image::value.dims[0], Image::value.dims[1], Image::value.dims[2]>,
                             nn::conv2d<5, nn::window{3, 4}, nn::window{2, 1}, nn::window{1, 2}>, nn::flatten,
                             nn::dense<2>, nn::softmax_cross_entropy>;
  using conv = typename net::template layer_at<1>;
  nn::kernel::workspace<double> ws;
  ws.context.in = net::input_extents[1];
  ws.context.out = net::output_extents[1];
  const auto g = conv::geometry(ws.context);
  CHECK(nn::detail::conv_kernels::by_taps(g) == (g.c == 1));
  CHECK(g.ho == 5);  // (9 + 2 - 3) / 2 + 1
  CHECK(g.wo == 9);  // (8 + 4 - 4) / 1 + 1
  const Eigen::Index batch = 5;  // more than one group of samples? no: small; see the next case for groups
  const auto x = random_matrix<double>(batch, static_cast<Eigen::Index>(net::input_size), 1);
  std::vector<double> w(net::parameter_counts[1]);
  for (std::size_t k = 0; k < w.size(); ++k) w[k] = nn::random_symmetric(3, 4, k);
  nn::matrix<double> y(batch, static_cast<Eigen::Index>(net::output_extents[1].size()));
  REQUIRE(x.cols() == g.h * g.w * g.c);
  conv::template forward<double>(ws, w.data(), x, y);
  double worst = 0;
  for (Eigen::Index n = 0; n < batch; ++n)
    for (std::ptrdiff_t oh = 0; oh < g.ho; ++oh)
      for (std::ptrdiff_t ow = 0; ow < g.wo; ++ow)
        for (std::ptrdiff_t co = 0; co < g.co; ++co)
          worst = std::max(worst, std::abs(y(n, (oh * g.wo + ow) * g.co + co) -
                                           direct(x, w, static_cast<std::size_t>(n), g, oh, ow, co)));
  CHECK(worst < 1e-12);
}

TEST_CASE_TEMPLATE("conv2d: many samples per product give each sample the values of one sample alone", Channels,
                   std::integral_constant<std::size_t, 2>, std::integral_constant<std::size_t, 1>) {
  // 8 x 8 x 2 patches of 3 x 3 x 2: 1152 values a sample, so 56 samples a group
  // (conv_kernels::group_elements); with one channel (by taps), 113 a group.
  constexpr std::size_t c = Channels::value;
  using net = nn::sequential<nn::input<8, 8, c>, nn::conv2d<3, 3, 1, 1>, nn::flatten, nn::dense<2>,
                             nn::softmax_cross_entropy>;
  using conv = typename net::template layer_at<1>;
  nn::kernel::workspace<double> ws, one;
  for (auto* w : {&ws, &one}) {
    w->context.in = net::input_extents[1];
    w->context.out = net::output_extents[1];
  }
  const Eigen::Index batch = 130;  // several groups, the last one short
  const auto in = static_cast<Eigen::Index>(64 * c);
  const auto x = random_matrix<double>(batch, in, 5);
  const auto dy = random_matrix<double>(batch, 8 * 8 * 3, 6);
  std::vector<double> w(net::parameter_counts[1]), g(w.size()), g1(w.size()), sum(w.size(), 0.0);
  for (std::size_t k = 0; k < w.size(); ++k) w[k] = nn::random_symmetric(3, 4, k);
  nn::matrix<double> y(batch, 192), y1(1, 192), dx(batch, in), dx1(1, in);
  conv::template forward<double>(ws, w.data(), x, y);
  conv::template backward<double>(ws, w.data(), g.data(), x, y, dy, dx, true);
  double worst_y = 0, worst_dx = 0, worst_g = 0;
  for (Eigen::Index n = 0; n < batch; ++n) {
    conv::template forward<double>(one, w.data(), x.middleRows(n, 1), y1);
    conv::template backward<double>(one, w.data(), g1.data(), x.middleRows(n, 1), y1, dy.middleRows(n, 1), dx1, true);
    worst_y = std::max(worst_y, (y.row(n) - y1.row(0)).cwiseAbs().maxCoeff());
    worst_dx = std::max(worst_dx, (dx.row(n) - dx1.row(0)).cwiseAbs().maxCoeff());
    for (std::size_t k = 0; k < sum.size(); ++k) sum[k] += g1[k];
  }
  for (std::size_t k = 0; k < sum.size(); ++k) worst_g = std::max(worst_g, std::abs(sum[k] - g[k]));
  CHECK(worst_y < 1e-12);
  CHECK(worst_dx < 1e-12);
  CHECK(worst_g < 1e-9);
}

TEST_CASE("im2col and col2im are adjoint: <im2col(x), p> == <x, col2im(p)>") {
  // h, w, c, ho, wo, co, kh, kw, sh, sw, top, left: strides, padding, a window that leaves the
  // last input rows and columns unread (floor), a block with padding on one side only.
  for (const auto& g : {nn::detail::conv_geometry{7, 6, 3, 4, 3, 2, 3, 4, 2, 2, 1, 1},
                        nn::detail::conv_geometry{5, 5, 1, 5, 5, 1, 5, 5, 1, 1, 2, 2},
                        nn::detail::conv_geometry{6, 4, 2, 2, 2, 1, 3, 3, 1, 1, 0, 0},
                        nn::detail::conv_geometry{8, 9, 2, 3, 4, 1, 3, 2, 2, 2, 0, 0},
                        nn::detail::conv_geometry{6, 5, 4, 6, 3, 1, 3, 3, 1, 2, 2, 0}}) {
    const auto in = g.h * g.w * g.c, patches = g.pixels() * g.patch();
    const auto x = random_matrix<double>(1, in, 20);
    const auto p = random_matrix<double>(1, patches, 21);
    using kernels = nn::detail::conv_kernels;
    std::vector<double> px(static_cast<std::size_t>(patches + kernels::copy_packet)), xp(static_cast<std::size_t>(in), 7.0),
        padded(kernels::padded_size(g));
    kernels::im2col(g, x.data(), px.data(), padded.data());
    kernels::col2im(g, p.data(), xp.data(), padded.data());  // overwrites xp
    double left = 0, right = 0;
    for (Eigen::Index k = 0; k < patches; ++k) left += px[static_cast<std::size_t>(k)] * p.data()[k];
    for (Eigen::Index k = 0; k < in; ++k) right += x.data()[k] * xp[static_cast<std::size_t>(k)];
    CHECK(std::abs(left - right) <= 1e-12 * (std::abs(left) + 1));
  }
}

TEST_CASE("gradient check: conv2d, relu, max_pool, conv2d, avg_pool, dense") {
  using net = nn::sequential<nn::input<8, 7, 2>, nn::conv2d<3, 3, 1, 1>, nn::relu, nn::max_pool<2>,
                             nn::conv2d<4, nn::window{3, 2}, 1, nn::window{1, 0}>, nn::tanh, nn::avg_pool<2, 1>,
                             nn::flatten, nn::dense<3>, nn::softmax_cross_entropy>;
  static_assert(net::output_extents[3] == nn::shape<4, 3, 3>::value);
  static_assert(net::output_extents[4] == nn::shape<4, 2, 4>::value);
  CHECK(test::gradient_check<net>(21, 3) < 1e-7);
}

TEST_CASE("gradient check: strided conv2d, overlapping max_pool, rectangular avg_pool, conv2d straight into the loss") {
  using net = nn::sequential<nn::input<9, 9>, nn::conv2d<3, 3, 2>, nn::sigmoid, nn::max_pool<2, 1>,
                             nn::avg_pool<nn::window{1, 2}>, nn::conv2d<2, nn::window{3, 1}>, nn::flatten,
                             nn::softmax_cross_entropy>;
  static_assert(net::output_extents[1] == nn::shape<4, 4, 3>::value);
  static_assert(net::output_extents[3] == nn::shape<3, 3, 3>::value);
  static_assert(net::output_extents[4] == nn::shape<3, 1, 3>::value);
  static_assert(net::output_extents[5] == nn::shape<1, 1, 2>::value);
  CHECK(test::gradient_check<net>(22, 4) < 1e-7);
}

namespace {
/// conv2d whose input gradient comes out reversed (a plausible indexing bug).
struct flipped : nn::conv2d<3, nn::window{3, 2}> {
  template <class S>
  static void backward(nn::kernel::workspace<S>& ws, const S* params, S* grads, nn::const_matrix_ref<S> x,
                       nn::const_matrix_ref<S> y, nn::const_matrix_ref<S> dy, nn::matrix_ref<S> dx, bool want_dx) {
    nn::conv2d<3, nn::window{3, 2}>::backward<S>(ws, params, grads, x, y, dy, dx, want_dx);
    if (want_dx) dx.reverseInPlace();
  }
};
}  // namespace

TEST_CASE("gradient check: one-channel convolutions by taps, after the input and inside the network") {
  // conv2d<1, ...> makes a one-channel map: the next convolution (stride 2 down, 1 across, a
  // rectangular kernel) takes the tap-by-tap route and passes its input gradient back.
  using net = nn::sequential<nn::input<7, 6>, nn::conv2d<1, 3, 1, 1>, nn::tanh,
                             nn::conv2d<2, nn::window{3, 2}, nn::window{2, 1}, 1>, nn::relu, nn::flatten, nn::dense<3>,
                             nn::softmax_cross_entropy>;
  static_assert(net::output_extents[3] == nn::shape<4, 7, 2>::value);
  CHECK(test::gradient_check<net>(24, 3) < 1e-7);
}

TEST_CASE("the gradient check catches a wrong conv2d backward pass") {
  using net = nn::sequential<nn::input<5, 4, 2>, nn::conv2d<2, 2>, flipped, nn::flatten, nn::dense<2>,
                             nn::softmax_cross_entropy>;
  CHECK(test::gradient_check<net>(23, 2) > 1e-3);
}

TEST_CASE("max_pool sends a window's gradient to the first cell holding its largest value") {
  using pool = nn::max_pool<2>;
  nn::kernel::workspace<double> ws;
  ws.context.in = nn::shape<2, 2, 1>::value;
  ws.context.out = nn::shape<1, 1, 1>::value;
  nn::matrix<double> x(1, 4), y(1, 1), dy(1, 1), dx(1, 4);
  x << 1, 3, 3, 2;
  pool::forward<double>(ws, nullptr, x, y);
  CHECK(y(0, 0) == 3);
  dy << 5;
  pool::backward<double>(ws, nullptr, nullptr, x, y, dy, dx, true);
  CHECK(dx(0, 0) == 0);
  CHECK(dx(0, 1) == 5);
  CHECK(dx(0, 2) == 0);
  CHECK(dx(0, 3) == 0);
  // 37 channels: whole SIMD packets and a tail. Channel ch's maximum is at cell (ch % 4) and also,
  // tied, at every later cell for even ch: the gradient goes to cell ch % 4 alone.
  constexpr Eigen::Index c = 37;
  ws.context.in = nn::shape<2, 2, c>::value;
  ws.context.out = nn::shape<1, 1, c>::value;
  nn::matrix<double> xs(1, 4 * c), ys(1, c), dys(1, c), dxs(1, 4 * c);
  for (Eigen::Index ch = 0; ch < c; ++ch) {
    for (Eigen::Index cell = 0; cell < 4; ++cell)
      xs(0, cell * c + ch) = cell < ch % 4 ? -1.0 - static_cast<double>(cell) : (cell == ch % 4 || ch % 2 == 0 ? 2.0 : 1.0);
    dys(0, ch) = 1.0 + static_cast<double>(ch);
  }
  pool::forward<double>(ws, nullptr, xs, ys);
  pool::backward<double>(ws, nullptr, nullptr, xs, ys, dys, dxs, true);
  bool routed = true;
  for (Eigen::Index ch = 0; ch < c; ++ch)
    for (Eigen::Index cell = 0; cell < 4; ++cell)
      if (dxs(0, cell * c + ch) != (cell == ch % 4 ? dys(0, ch) : 0.0) || ys(0, ch) != 2.0) routed = false;
  CHECK(routed);
}

TEST_CASE("dropout: a counter-based mask, the same for any split of the batch, identity in evaluation") {
  using drop = nn::dropout<0.25>;
  nn::kernel::workspace<float> ws;
  ws.context.seed = 7;
  ws.context.layer = 3;
  ws.context.step = 11;
  ws.context.training = true;
  const auto x = random_matrix<float>(64, 100, 30);
  nn::matrix<float> y(64, 100);
  drop::forward<float>(ws, nullptr, x, y);
  const double dropped = static_cast<double>((y.array() == 0.0F).count()) / static_cast<double>(y.size());
  CHECK(dropped > 0.22);
  CHECK(dropped < 0.28);
  bool scaled = true;
  for (Eigen::Index k = 0; k < y.size(); ++k)
    if (y.data()[k] != 0.0F && y.data()[k] != x.data()[k] * (1.0F / 0.75F)) scaled = false;
  CHECK(scaled);
  // Rows 40-63 and columns 50-99 drawn by another owner (a data-parallel replica, a shard).
  nn::kernel::workspace<float> part;
  part.context = ws.context;
  part.context.row_offset = 40;
  part.context.column_offset = 50;
  part.context.columns = 100;
  nn::matrix<float> yp(24, 50);
  drop::forward<float>(part, nullptr, x.block(40, 50, 24, 50), yp);
  CHECK((yp.array() == y.block(40, 50, 24, 50).array()).all());
  // Another step, another mask; evaluation passes the input on.
  nn::matrix<float> y2(64, 100);
  ws.context.step = 12;
  drop::forward<float>(ws, nullptr, x, y2);
  CHECK(((y2.array() == 0.0F) != (y.array() == 0.0F)).count() > 1000);
  ws.context.training = false;
  drop::forward<float>(ws, nullptr, x, y2);
  CHECK((y2.array() == x.array()).all());
}

TEST_CASE("dropout's backward pass is its forward pass's adjoint") {
  using drop = nn::dropout<0.5>;
  nn::kernel::workspace<double> ws;
  ws.context.seed = 9;
  ws.context.training = true;
  const auto x = random_matrix<double>(7, 13, 40);
  const auto dy = random_matrix<double>(7, 13, 41);
  nn::matrix<double> y(7, 13), dx(7, 13);
  drop::forward<double>(ws, nullptr, x, y);
  drop::backward<double>(ws, nullptr, nullptr, x, y, dy, dx, true);
  const double left = (y.array() * dy.array()).sum(), right = (x.array() * dx.array()).sum();
  CHECK(std::abs(left - right) < 1e-12);
  CHECK((dx.array() == 0.0).count() > 20);
}

TEST_CASE("a network with dropout: training steps draw new masks, evaluation is deterministic") {
  using net = nn::sequential<nn::input<6>, nn::dense<40>, nn::relu, nn::dropout<0.5>, nn::dense<3>,
                             nn::softmax_cross_entropy>;
  nn::network<net, double> a(3), b(3);
  const auto x = random_matrix<double>(8, 6, 50);
  const std::vector<std::int32_t> labels{0, 1, 2, 0, 1, 2, 0, 1};
  a.compute_gradients(x, labels);
  const std::vector<double> first(a.gradients().begin(), a.gradients().end());
  a.compute_gradients(x, labels);
  CHECK(!std::equal(first.begin(), first.end(), a.gradients().begin()));
  b.compute_gradients(x, labels);  // another network, same seed, same step: the same mask
  CHECK(std::equal(first.begin(), first.end(), b.gradients().begin()));
  CHECK(a.training_steps() == 2);
  b.set_training_steps(0);
  b.compute_gradients(x, labels);
  CHECK(std::equal(first.begin(), first.end(), b.gradients().begin()));
  CHECK(a.evaluate_batch(x, labels).loss == b.evaluate_batch(x, labels).loss);
}
