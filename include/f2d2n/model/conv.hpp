// f2d2n/model/conv.hpp: the layers of convolutional networks: conv2d, max_pool, avg_pool and
// dropout, in the style of model/layers.hpp (empty specification types, constexpr shapes and
// parameter counts, static_asserts that name the layer's index).
//
// Images are channels-last (NHWC): a sample of extents (height, width, channels) is stored row
// after row, each pixel's channels together, and the extents name the dimensions in that memory
// order: input<28, 28, 1>, or input<28, 28> for one channel. A convolution's output is always
// (height, width, channels). The layout was chosen by measured speed (docs/decisions.md): each
// kernel row of a patch is one contiguous run of width x channels values, and the products see
// the channels as the contiguous dimension.
//
// A convolution's weights are stored as PyTorch's dense layers store theirs: one row per output
// channel, (Channels) x (kernel height x kernel width x input channels) in that order, then the
// biases. The forward pass is im2col (the patches of a few samples into the layer's buffer) and
// one product through the kernel layer (kernel/gemm.hpp) per group of samples: Y = P W^T. The
// backward pass is dW = dY^T P, dP = dY W and col2im (adding each patch's gradient back).
#pragma once

#include <f2d2n/model/detail/conv_kernels.hpp>
#include <f2d2n/model/layers.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <type_traits>

// Eigen's packet types carry vector attributes that GCC drops (and warns about) in template
// arguments (max_pool's passes use them); Eigen silences the same warning in its own code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

namespace f2d2n {

/// A 2-D convolution of Channels output channels over a channels-last image: Kernel, Stride and
/// Padding are numbers or window{height, width}. The output is (height, width, Channels) with
/// height = (H + 2 padding - kernel) / stride + 1 (PyTorch's Conv2d, zero padding, floor).
/// Weights: Channels x (kernel height x kernel width x input channels), then Channels biases.
template <std::size_t Channels, auto Kernel, auto Stride = 1, auto Padding = 0, class Init = auto_init>
struct conv2d : detail::conv_kernels, detail::windowed {
  static constexpr std::string_view name = "conv2d";
  static constexpr layer_kind kind = layer_kind::hidden;
  static constexpr std::size_t channels = Channels;
  static constexpr window kernel_window = detail::as_window<Kernel>();
  static constexpr window stride_window = detail::as_window<Stride>();
  static constexpr window padding_window = detail::as_window<Padding>();
  using initializer = Init;

  static constexpr extents output(extents in) noexcept {
    const detail::image im = detail::image_of(in);
    const std::size_t ho = detail::sliding_outputs(im.height, kernel_window.height, stride_window.height,
                                                   padding_window.height),
                      wo = detail::sliding_outputs(im.width, kernel_window.width, stride_window.width,
                                                   padding_window.width);
    if (!im.ok || ho == 0 || wo == 0 || Channels == 0) return {};
    return extents{{ho, wo, Channels}, 3};
  }
  static constexpr std::size_t parameter_count(extents in) noexcept {
    const detail::image im = detail::image_of(in);
    if (!im.ok) return 0;
    return Channels * kernel_window.height * kernel_window.width * im.channels + Channels;
  }

  template <std::size_t Index, bool Last, std::size_t... In>
  struct at_layer {
    static constexpr std::size_t rank = sizeof...(In);
    static constexpr extents in{{In...}, rank};
    static_assert(Channels > 0,
                  "f2d2n: conv2d<Channels, ...> at the layer index named above has no output channels: Channels must "
                  "be at least 1");
    static_assert(kernel_window.height > 0 && kernel_window.width > 0,
                  "f2d2n: conv2d at the layer index named above has a kernel of extent 0");
    static_assert(stride_window.height > 0 && stride_window.width > 0,
                  "f2d2n: conv2d at the layer index named above has a stride of 0: the kernel would not move");
    static_assert(rank == 0 || rank == 2 || rank == 3,
                  "f2d2n: conv2d at the layer index named above needs an image (height, width[, channels]); its "
                  "input is flat or of another rank: put reshape<height, width, channels> before it");
    static_assert((rank != 2 && rank != 3) ||
                      (detail::image_of(in).height + 2 * padding_window.height >= kernel_window.height &&
                       detail::image_of(in).width + 2 * padding_window.width >= kernel_window.width),
                  "f2d2n: the kernel of conv2d at the layer index named above is larger than its padded input (input "
                  "shape named above)");
    static constexpr bool ok = true;
  };

  template <class S>
  static void forward(kernel::workspace<S>& ws, const S* params, const_matrix_ref<S> x, matrix_ref<S> y) {
    conv_kernels::forward(ws, geometry(ws.context), params, x, y);
  }
  template <class S>
  static void backward(kernel::workspace<S>& ws, const S* params, S* grads, const_matrix_ref<S> x,
                       const_matrix_ref<S> /*y*/, const_matrix_ref<S> dy, matrix_ref<S> dx, bool want_dx) {
    conv_kernels::backward(ws, geometry(ws.context), params, grads, x, dy, dx, want_dx);
  }

  /// Weight (j, k) from random stream `stream` as a dense layer's: fan-in kernel height x kernel
  /// width x input channels, fan-out Channels x kernel height x kernel width (PyTorch's).
  template <class S, class Resolved>
  static void initialize(std::span<S> params, std::size_t /*in*/, std::uint64_t seed, std::uint64_t stream) {
    const std::size_t fan_in = params.size() / Channels - 1;
    detail::dense_kernels::initialize_block(params, fan_in, 0, Channels, 0, fan_in,
                                            Resolved::limit(fan_in, Channels * kernel_window.height * kernel_window.width),
                                            seed, stream);
  }

  static detail::conv_geometry geometry(const layer_context& ctx) {
    return detail::geometry_of(ctx, kernel_window, stride_window, padding_window);
  }
};

/// The largest value of each channel in each window (PyTorch's MaxPool2d without padding); the
/// gradient goes to the window's first cell holding the largest value.
template <auto Kernel, auto Stride = Kernel>
struct max_pool : detail::pooling<Kernel, Stride> {
  static constexpr std::string_view name = "max_pool";
  using base = detail::pooling<Kernel, Stride>;

  template <class S>
  static void forward(kernel::workspace<S>& ws, const S*, const_matrix_ref<S> x, matrix_ref<S> y) {
    namespace ei = Eigen::internal;
    using packet = typename ei::packet_traits<S>::type;
    constexpr std::ptrdiff_t width = ei::unpacket_traits<packet>::size;
    const auto g = detail::pool_geometry_of(ws.context, base::kernel_window, base::stride_window);
    for (Eigen::Index n = 0; n < x.rows(); ++n) {
      const S* in = x.row(n).data();
      S* out = y.row(n).data();
      for (std::ptrdiff_t oh = 0; oh < g.ho; ++oh)
        for (std::ptrdiff_t ow = 0; ow < g.wo; ++ow) {
          S* o = out + (oh * g.wo + ow) * g.c;
          const S* corner = in + ((oh * g.sh) * g.w + ow * g.sw) * g.c;
          std::ptrdiff_t ch = 0;
          if constexpr (width > 1) {  // a SIMD packet of channels at a time
            for (; ch + width <= g.c; ch += width) {
              packet m = ei::ploadu<packet>(corner + ch);
              for (std::ptrdiff_t i = 0; i < g.kh; ++i)
                for (std::ptrdiff_t j = 0; j < g.kw; ++j)
                  m = ei::pmax(m, ei::ploadu<packet>(corner + (i * g.w + j) * g.c + ch));
              ei::pstoreu(o + ch, m);
            }
          }
          for (; ch < g.c; ++ch) {
            S m = corner[ch];
            for (std::ptrdiff_t i = 0; i < g.kh; ++i)
              for (std::ptrdiff_t j = 0; j < g.kw; ++j) m = std::max(m, corner[(i * g.w + j) * g.c + ch]);
            o[ch] = m;
          }
        }
    }
  }
  template <class S>
  static void backward(kernel::workspace<S>& ws, const S*, S*, const_matrix_ref<S> x, const_matrix_ref<S> y,
                       const_matrix_ref<S> dy, matrix_ref<S> dx, bool want_dx) {
    if (!want_dx) return;
    const auto g = detail::pool_geometry_of(ws.context, base::kernel_window, base::stride_window);
    for (Eigen::Index n = 0; n < x.rows(); ++n) {
      const S* in = x.row(n).data();
      const S* out = y.row(n).data();
      const S* d = dy.row(n).data();
      S* to = dx.row(n).data();
      std::fill_n(to, dx.cols(), S(0));
      for (std::ptrdiff_t oh = 0; oh < g.ho; ++oh)
        for (std::ptrdiff_t ow = 0; ow < g.wo; ++ow) {
          const std::ptrdiff_t o = (oh * g.wo + ow) * g.c, corner = ((oh * g.sh) * g.w + ow * g.sw) * g.c;
          route<S>(g, in + corner, out + o, d + o, to + corner);
        }
    }
  }

 private:
  /// One window's gradient, every channel: to the first cell holding the channel's maximum.
  /// Channels a SIMD packet at a time (Eigen's packet primitives: compare, mask, add), the rest
  /// one by one; `open` masks the channels whose maximum has not taken its gradient yet.
  template <class S>
  static void route(const detail::pool_geometry& g, const S* cell0, const S* top, const S* grad, S* target0) {
    namespace ei = Eigen::internal;
    using packet = typename ei::packet_traits<S>::type;
    constexpr std::ptrdiff_t width = ei::unpacket_traits<packet>::size;
    std::ptrdiff_t ch = 0;
    if constexpr (width > 1) {
      for (; ch + width <= g.c; ch += width) {
        const packet t = ei::ploadu<packet>(top + ch), dy = ei::ploadu<packet>(grad + ch);
        packet open = ei::ptrue(t);
        for (std::ptrdiff_t i = 0; i < g.kh; ++i)
          for (std::ptrdiff_t j = 0; j < g.kw; ++j) {
            const std::ptrdiff_t at = (i * g.w + j) * g.c + ch;
            const packet hit = ei::pand(ei::pcmp_eq(ei::ploadu<packet>(cell0 + at), t), open);
            ei::pstoreu(target0 + at, ei::padd(ei::ploadu<packet>(target0 + at), ei::pand(hit, dy)));
            open = ei::pxor(open, hit);
          }
      }
    }
    for (; ch < g.c; ++ch) {
      bool found = false;
      for (std::ptrdiff_t i = 0; i < g.kh && !found; ++i)
        for (std::ptrdiff_t j = 0; j < g.kw && !found; ++j) {
          const std::ptrdiff_t at = (i * g.w + j) * g.c + ch;
          if (cell0[at] == top[ch]) {
            target0[at] += grad[ch];
            found = true;
          }
        }
    }
  }
};

/// The mean of each channel in each window (PyTorch's AvgPool2d without padding).
template <auto Kernel, auto Stride = Kernel>
struct avg_pool : detail::pooling<Kernel, Stride> {
  static constexpr std::string_view name = "avg_pool";
  using base = detail::pooling<Kernel, Stride>;

  template <class S>
  static void forward(kernel::workspace<S>& ws, const S*, const_matrix_ref<S> x, matrix_ref<S> y) {
    const auto g = detail::pool_geometry_of(ws.context, base::kernel_window, base::stride_window);
    using row = Eigen::Map<Eigen::Array<S, Eigen::Dynamic, 1>>;
    using crow = Eigen::Map<const Eigen::Array<S, Eigen::Dynamic, 1>>;
    const S scale = S(1) / static_cast<S>(g.kh * g.kw);
    for (Eigen::Index n = 0; n < x.rows(); ++n) {
      const S* in = x.row(n).data();
      S* out = y.row(n).data();
      for (std::ptrdiff_t oh = 0; oh < g.ho; ++oh)
        for (std::ptrdiff_t ow = 0; ow < g.wo; ++ow) {
          row o(out + (oh * g.wo + ow) * g.c, g.c);
          const S* corner = in + ((oh * g.sh) * g.w + ow * g.sw) * g.c;
          o.setZero();
          for (std::ptrdiff_t i = 0; i < g.kh; ++i)
            for (std::ptrdiff_t j = 0; j < g.kw; ++j) o += crow(corner + (i * g.w + j) * g.c, g.c);
          o *= scale;
        }
    }
  }
  template <class S>
  static void backward(kernel::workspace<S>& ws, const S*, S*, const_matrix_ref<S> x, const_matrix_ref<S>,
                       const_matrix_ref<S> dy, matrix_ref<S> dx, bool want_dx) {
    if (!want_dx) return;
    const auto g = detail::pool_geometry_of(ws.context, base::kernel_window, base::stride_window);
    using row = Eigen::Map<Eigen::Array<S, Eigen::Dynamic, 1>>;
    using crow = Eigen::Map<const Eigen::Array<S, Eigen::Dynamic, 1>>;
    const S scale = S(1) / static_cast<S>(g.kh * g.kw);
    for (Eigen::Index n = 0; n < x.rows(); ++n) {
      const S* d = dy.row(n).data();
      S* to = dx.row(n).data();
      std::fill_n(to, dx.cols(), S(0));
      for (std::ptrdiff_t oh = 0; oh < g.ho; ++oh)
        for (std::ptrdiff_t ow = 0; ow < g.wo; ++ow) {
          const crow share(d + (oh * g.wo + ow) * g.c, g.c);
          S* corner = to + ((oh * g.sh) * g.w + ow * g.sw) * g.c;
          for (std::ptrdiff_t i = 0; i < g.kh; ++i)
            for (std::ptrdiff_t j = 0; j < g.kw; ++j) row(corner + (i * g.w + j) * g.c, g.c) += share * scale;
        }
    }
  }
};


/// Inverted dropout: in a training step each element is zeroed with probability Rate and the
/// others scaled by 1 / (1 - Rate); in evaluation the layer passes its input on. The mask is drawn
/// from counter-based random numbers keyed by the network's seed, the training step, the layer's
/// index and the element's place in the whole batch, so that a distributed run draws the serial
/// run's mask (layer_context says which step and rows).
template <double Rate>
struct dropout : detail::elementwise {
  static_assert(Rate >= 0.0 && Rate < 1.0, "f2d2n: dropout<Rate> needs 0 <= Rate < 1");
  static constexpr std::string_view name = "dropout";
  static constexpr double rate = Rate;

  template <class S>
  static void forward(kernel::workspace<S>& ws, const S*, const_matrix_ref<S> x, matrix_ref<S> y) {
    if (!ws.context.training || Rate == 0.0) y = x;
    else detail::apply_dropout<S>(ws.context, Rate, x, y);
  }
  template <class S>
  static void backward(kernel::workspace<S>& ws, const S*, S*, const_matrix_ref<S>, const_matrix_ref<S>,
                       const_matrix_ref<S> dy, matrix_ref<S> dx, bool want_dx) {
    if (!want_dx) return;
    if (!ws.context.training || Rate == 0.0) dx = dy;
    else detail::apply_dropout<S>(ws.context, Rate, dy, dx);
  }
};

}  // namespace f2d2n

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
