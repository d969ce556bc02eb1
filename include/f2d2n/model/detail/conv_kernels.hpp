// f2d2n/model/detail/conv_kernels.hpp: what the layers of model/conv.hpp run on (their geometry
// at run time, im2col / taps and their adjoints, the convolution's products, the pools' shared
// checks, dropout's mask), and the public window type their template arguments use.
#pragma once

#include <f2d2n/core/layer_context.hpp>
#include <f2d2n/core/random.hpp>
#include <f2d2n/kernel/gemm.hpp>
#include <f2d2n/model/layers.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

// Eigen's packet types carry vector attributes that GCC drops (and warns about) in template
// arguments; Eigen silences the same warning in its own code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

namespace f2d2n {

/// A two-dimensional extent: a rectangular kernel, stride or padding, e.g.
/// conv2d<16, window{5, 3}, 1, window{2, 1}>. A single number means the same both ways.
struct window {
  std::size_t height = 1, width = 1;
  friend constexpr bool operator==(const window&, const window&) = default;
};

namespace detail {

/// A kernel, stride or padding given as a number (negative: a window of extent 0, refused by the
/// layer's checks) or as a window.
template <auto V>
constexpr window as_window() {
  if constexpr (std::is_same_v<std::remove_cv_t<decltype(V)>, window>) {
    return V;
  } else {
    static_assert(std::is_integral_v<decltype(V)>,
                  "f2d2n: a kernel, stride or padding is a number or f2d2n::window{height, width}");
    const auto n = V < 0 ? std::size_t{0} : static_cast<std::size_t>(V);
    return window{n, n};
  }
}

/// An image's extents: (height, width, channels), or (height, width) with one channel.
struct image {
  std::size_t height = 0, width = 0, channels = 0;
  bool ok = false;
};
constexpr image image_of(const extents& e) noexcept {
  if (e.rank == 3) return {e.dims[0], e.dims[1], e.dims[2], true};
  if (e.rank == 2) return {e.dims[0], e.dims[1], 1, true};
  return {};
}

/// Outputs of a window of `k` moved by `s` over `n` cells with `p` zero cells each side (0 when it does not fit).
constexpr std::size_t sliding_outputs(std::size_t n, std::size_t k, std::size_t s, std::size_t p) noexcept {
  if (s == 0 || k == 0 || n + 2 * p < k) return 0;
  return (n + 2 * p - k) / s + 1;
}

/// Layers that slide a window over a feature map (conv2d and the pools): a plan's spatial
/// partition gives each unit the window of input its block of output reads (plan/distribute.hpp).
struct windowed {};

/// One sample's convolution as the kernels run it: the input block (h x w x c, with any halo),
/// the output block (ho x wo x co), the kernel and stride, and the zero rows and columns before
/// the block's first input row and column (the rest of the padding follows from the extents).
struct conv_geometry {
  std::ptrdiff_t h = 0, w = 0, c = 0, ho = 0, wo = 0, co = 0, kh = 0, kw = 0, sh = 1, sw = 1, top = 0, left = 0;
  [[nodiscard]] std::ptrdiff_t patch() const noexcept { return kh * kw * c; }
  [[nodiscard]] std::ptrdiff_t pixels() const noexcept { return ho * wo; }
};

/// The block the owner set in the context, with the layer's own padding unless the owner set the block's.
inline conv_geometry geometry_of(const layer_context& ctx, window k, window s, window p) {
  const image in = image_of(ctx.in), out = image_of(ctx.out);
  conv_geometry g;
  g.h = static_cast<std::ptrdiff_t>(in.height);
  g.w = static_cast<std::ptrdiff_t>(in.width);
  g.c = static_cast<std::ptrdiff_t>(in.channels);
  g.ho = static_cast<std::ptrdiff_t>(out.height);
  g.wo = static_cast<std::ptrdiff_t>(out.width);
  g.co = static_cast<std::ptrdiff_t>(out.channels);
  g.kh = static_cast<std::ptrdiff_t>(k.height);
  g.kw = static_cast<std::ptrdiff_t>(k.width);
  g.sh = static_cast<std::ptrdiff_t>(s.height);
  g.sw = static_cast<std::ptrdiff_t>(s.width);
  g.top = static_cast<std::ptrdiff_t>(ctx.block ? ctx.pad_top : p.height);
  g.left = static_cast<std::ptrdiff_t>(ctx.block ? ctx.pad_left : p.width);
  return g;
}

/// The kernels of conv2d over run-time geometry: instantiated once per scalar type.
struct conv_kernels {
  /// Patch values of the samples one product handles: about 256 KiB of floats (the patches of a
  /// group stay in the core's L2 cache between im2col and the product). At least one sample.
  static constexpr std::ptrdiff_t group_elements = std::ptrdiff_t{1} << 16;

  static std::ptrdiff_t samples_per_group(const conv_geometry& g, std::ptrdiff_t batch, bool contiguous) {
    if (!contiguous) return 1;
    const std::ptrdiff_t per_sample = std::max<std::ptrdiff_t>(1, g.pixels() * g.patch());
    return std::clamp<std::ptrdiff_t>(group_elements / per_sample, 1, std::max<std::ptrdiff_t>(batch, 1));
  }

  /// Rows and columns of a sample's input with its zero padding around it: every cell a kernel
  /// window reads (and the input's own cells, should the windows not reach them all).
  static std::ptrdiff_t padded_rows(const conv_geometry& g) noexcept {
    return std::max((g.ho - 1) * g.sh + g.kh, g.top + g.h);
  }
  static std::ptrdiff_t padded_columns(const conv_geometry& g) noexcept {
    return std::max((g.wo - 1) * g.sw + g.kw, g.left + g.w);
  }
  /// Values of a padded sample, with room for the last run's whole-packet copy.
  static std::size_t padded_size(const conv_geometry& g) noexcept {
    return static_cast<std::size_t>(padded_rows(g) * padded_columns(g) * g.c + copy_packet);
  }
  /// Runs are copied in whole packets of this many values (one 64-byte store for float).
  static constexpr std::ptrdiff_t copy_packet = 16;

  /// One sample's input into `xp` with its zero padding: later reads need no bounds.
  template <class S>
  static void pad(const conv_geometry& g, const S* x, S* xp) {
    const std::ptrdiff_t rows = padded_rows(g), cols = padded_columns(g), line = cols * g.c;
    std::fill_n(xp, padded_size(g), S(0));
    const std::ptrdiff_t w = std::min(g.w, cols - g.left);
    for (std::ptrdiff_t r = 0; r < g.h && r + g.top < rows; ++r)
      std::copy_n(x + r * g.w * g.c, w * g.c, xp + (r + g.top) * line + g.left * g.c);
  }

  /// One padded sample's patches: p is pixels x patch, row-major, and has copy_packet values of
  /// room after its end. Each kernel row of a patch is one run of kw x c values of the padded input,
  /// copied in whole packets: a copy past the run's end lands on the next run of the same patch, or
  /// the next patch's first, both written after it (hence the loop order), or on the room at the end.
  template <class S>
  static void im2col_padded(const conv_geometry& g, const S* xp, S* p) {
    const std::ptrdiff_t patch = g.patch(), run = g.kw * g.c, line = padded_columns(g) * g.c;
    for (std::ptrdiff_t oh = 0; oh < g.ho; ++oh)
      for (std::ptrdiff_t ow = 0; ow < g.wo; ++ow) {
        S* row = p + (oh * g.wo + ow) * patch;
        const S* corner = xp + oh * g.sh * line + ow * g.sw * g.c;
        for (std::ptrdiff_t k = 0; k < g.kh; ++k) {
          S* to = row + k * run;
          const S* from = corner + k * line;
          for (std::ptrdiff_t i = 0; i < run; i += copy_packet) {
            S packet[copy_packet];
            std::copy_n(from + i, copy_packet, packet);
            std::copy_n(packet, copy_packet, to + i);
          }
        }
      }
  }

  /// One sample's patch gradients added into the padded dxp (zeroed by the caller): im2col's adjoint.
  template <class S>
  static void col2im_padded(const conv_geometry& g, const S* dp, S* dxp) {
    const std::ptrdiff_t patch = g.patch(), run = g.kw * g.c, line = padded_columns(g) * g.c;
    for (std::ptrdiff_t oh = 0; oh < g.ho; ++oh)
      for (std::ptrdiff_t ow = 0; ow < g.wo; ++ow) {
        const S* row = dp + (oh * g.wo + ow) * patch;
        S* corner = dxp + oh * g.sh * line + ow * g.sw * g.c;
        for (std::ptrdiff_t k = 0; k < g.kh; ++k) {
          const S* from = row + k * run;
          S* to = corner + k * line;
          for (std::ptrdiff_t i = 0; i < run; ++i) to[i] += from[i];
        }
      }
  }

  /// The input cells of a padded gradient back into dx (the padding's gradients are dropped).
  template <class S>
  static void unpad(const conv_geometry& g, const S* dxp, S* dx) {
    const std::ptrdiff_t rows = padded_rows(g), cols = padded_columns(g), line = cols * g.c;
    const std::ptrdiff_t w = std::min(g.w, cols - g.left);
    for (std::ptrdiff_t r = 0; r < g.h; ++r) {
      S* to = dx + r * g.w * g.c;
      if (r + g.top >= rows) {
        std::fill_n(to, g.w * g.c, S(0));
        continue;
      }
      std::copy_n(dxp + (r + g.top) * line + g.left * g.c, w * g.c, to);
      std::fill(to + w * g.c, to + g.w * g.c, S(0));
    }
  }

  /// im2col for one sample through a padded copy in `xp` (padded_size values).
  template <class S>
  static void im2col(const conv_geometry& g, const S* x, S* p, S* xp) {
    pad(g, x, xp);
    im2col_padded(g, xp, p);
  }
  /// col2im for one sample into dx (overwritten) through a padded buffer `dxp` (padded_size values).
  template <class S>
  static void col2im(const conv_geometry& g, const S* dp, S* dx, S* dxp) {
    std::fill_n(dxp, padded_size(g), S(0));
    col2im_padded(g, dp, dxp);
    unpad(g, dxp, dx);
  }

  /// Patches tap by tap, for one input channel and unit stride along the width: row t = (kernel
  /// row k, column j) of q holds, for every output pixel of the sample (pixels in row-major order,
  /// `ldq` apart between rows of q), the padded input cell that tap reads: for each output row,
  /// one run of wo consecutive cells. The transpose of im2col's patches, built from runs of the
  /// output's width instead of runs of the kernel's (5 values for a 5 x 5 kernel over one channel).
  template <class S>
  static void taps_padded(const conv_geometry& g, const S* xp, S* q, std::ptrdiff_t ldq) {
    const std::ptrdiff_t line = padded_columns(g);
    for (std::ptrdiff_t k = 0; k < g.kh; ++k)
      for (std::ptrdiff_t j = 0; j < g.kw; ++j) {
        S* row = q + (k * g.kw + j) * ldq;
        for (std::ptrdiff_t oh = 0; oh < g.ho; ++oh) {
          const S* from = xp + (oh * g.sh + k) * line + j;
          S* to = row + oh * g.wo;
          for (std::ptrdiff_t ow = 0; ow < g.wo; ++ow) to[ow] = from[ow];  // short: no call to memmove
        }
      }
  }
  /// The adjoint of taps_padded: every tap's gradient added back into the padded sample's cells.
  template <class S>
  static void taps_add_padded(const conv_geometry& g, const S* dq, std::ptrdiff_t ldq, S* dxp) {
    const std::ptrdiff_t line = padded_columns(g);
    for (std::ptrdiff_t k = 0; k < g.kh; ++k)
      for (std::ptrdiff_t j = 0; j < g.kw; ++j) {
        const S* row = dq + (k * g.kw + j) * ldq;
        for (std::ptrdiff_t oh = 0; oh < g.ho; ++oh) {
          S* to = dxp + (oh * g.sh + k) * line + j;
          const S* from = row + oh * g.wo;
          for (std::ptrdiff_t ow = 0; ow < g.wo; ++ow) to[ow] += from[ow];
        }
      }
  }
  /// Whether a layer takes the tap-by-tap route: one input channel, unit stride along the width.
  static bool by_taps(const conv_geometry& g) noexcept { return g.c == 1 && g.sw == 1; }

  template <class S>
  static void forward(kernel::workspace<S>& ws, const conv_geometry& g, const S* params, const_matrix_ref<S> x,
                      matrix_ref<S> y) {
    if (by_taps(g)) return forward_taps(ws, g, params, x, y);
    const std::ptrdiff_t batch = x.rows(), patch = g.patch(), pixels = g.pixels();
    const_matrix_map<S> w(params, g.co, patch);
    Eigen::Map<const vector<S>> b(params + g.co * patch, g.co);
    const std::ptrdiff_t group = samples_per_group(g, batch, y.outerStride() == y.cols());
    S* p = ws.buffer(0, static_cast<std::size_t>(group * pixels * patch + copy_packet));
    S* xp = ws.buffer(3, padded_size(g));
    for (std::ptrdiff_t n0 = 0; n0 < batch; n0 += group) {
      const std::ptrdiff_t nb = std::min(group, batch - n0);
      for (std::ptrdiff_t j = 0; j < nb; ++j) im2col(g, x.row(n0 + j).data(), p + j * pixels * patch, xp);
      matrix_map<S> out(y.row(n0).data(), nb * pixels, g.co);
      kernel::multiply<S>(ws, kernel::form::nt, const_matrix_map<S>(p, nb * pixels, patch), w, out);
      out.rowwise() += b.transpose();
    }
  }

  /// forward by taps: Y = Q^T W^T (the kernel layer's tn form) over each group's taps Q.
  template <class S>
  static void forward_taps(kernel::workspace<S>& ws, const conv_geometry& g, const S* params, const_matrix_ref<S> x,
                           matrix_ref<S> y) {
    const std::ptrdiff_t batch = x.rows(), patch = g.patch(), pixels = g.pixels();
    Eigen::Map<const vector<S>> b(params + g.co * patch, g.co);
    const std::ptrdiff_t group = samples_per_group(g, batch, y.outerStride() == y.cols());
    S* q = ws.buffer(0, static_cast<std::size_t>(group * pixels * patch));
    S* xp = ws.buffer(3, padded_size(g));
    matrix_map<S> wt(ws.buffer(4, static_cast<std::size_t>(patch * g.co)), patch, g.co);
    wt = const_matrix_map<S>(params, g.co, patch).transpose();
    for (std::ptrdiff_t n0 = 0; n0 < batch; n0 += group) {
      const std::ptrdiff_t nb = std::min(group, batch - n0), m = nb * pixels;
      for (std::ptrdiff_t j = 0; j < nb; ++j) {
        pad(g, x.row(n0 + j).data(), xp);
        taps_padded(g, xp, q + j * pixels, m);
      }
      matrix_map<S> out(y.row(n0).data(), m, g.co);
      kernel::multiply<S>(ws, kernel::form::tn, const_matrix_map<S>(q, patch, m), wt, out);
      out.rowwise() += b.transpose();
    }
  }

  /// backward by taps: dW = (Q dY)^T, dQ = W^T dY^T, added back tap by tap.
  template <class S>
  static void backward_taps(kernel::workspace<S>& ws, const conv_geometry& g, const S* params, S* grads,
                            const_matrix_ref<S> x, const_matrix_ref<S> dy, matrix_ref<S> dx, bool want_dx) {
    const std::ptrdiff_t batch = x.rows(), patch = g.patch(), pixels = g.pixels();
    matrix_map<S> dw(grads, g.co, patch);
    const bool contiguous = dy.outerStride() == dy.cols() && (!want_dx || dx.outerStride() == dx.cols());
    const std::ptrdiff_t group = samples_per_group(g, batch, contiguous);
    const auto size = static_cast<std::size_t>(group * pixels * patch);
    S* q = ws.buffer(0, size);
    S* dq = want_dx ? ws.buffer(1, size) : nullptr;
    matrix_map<S> gt(ws.buffer(2, static_cast<std::size_t>(patch * g.co)), patch, g.co);  // (Q dY): patch x co
    S* xp = ws.buffer(3, padded_size(g));
    matrix_map<S> wt(ws.buffer(4, static_cast<std::size_t>(patch * g.co)), patch, g.co);
    if (want_dx) wt = const_matrix_map<S>(params, g.co, patch).transpose();
    if (batch == 0) dw.setZero();
    for (std::ptrdiff_t n0 = 0; n0 < batch; n0 += group) {
      const std::ptrdiff_t nb = std::min(group, batch - n0), m = nb * pixels;
      for (std::ptrdiff_t j = 0; j < nb; ++j) {
        pad(g, x.row(n0 + j).data(), xp);
        taps_padded(g, xp, q + j * pixels, m);
      }
      const const_matrix_map<S> dyg(dy.row(n0).data(), m, g.co);
      kernel::multiply<S>(ws, kernel::form::nn, const_matrix_map<S>(q, patch, m), dyg, gt);
      if (n0 == 0) dw = gt.transpose();
      else dw += gt.transpose();
      if (!want_dx) continue;
      kernel::multiply<S>(ws, kernel::form::nt, wt, dyg, matrix_map<S>(dq, patch, m));
      for (std::ptrdiff_t j = 0; j < nb; ++j) {
        std::fill_n(xp, padded_size(g), S(0));
        taps_add_padded(g, dq + j * pixels, m, xp);
        unpad(g, xp, dx.row(n0 + j).data());
      }
    }
  }

  /// Writes (not adds) the weight and bias gradients; dx only when want_dx.
  template <class S>
  static void backward(kernel::workspace<S>& ws, const conv_geometry& g, const S* params, S* grads,
                       const_matrix_ref<S> x, const_matrix_ref<S> dy, matrix_ref<S> dx, bool want_dx) {
    const std::ptrdiff_t batch = x.rows(), patch = g.patch(), pixels = g.pixels();
    const_matrix_map<S> w(params, g.co, patch);
    matrix_map<S> dw(grads, g.co, patch);
    Eigen::Map<vector<S>> db(grads + g.co * patch, g.co);
    // The bias gradient: every pixel's dy added in order, sample after sample, into the layer's
    // own buffer (a plain loop over the channels: the order of each sum is fixed, whatever the
    // alignment of db, which differs between units holding copies of the layer).
    S* acc = ws.buffer(5, static_cast<std::size_t>(g.co));
    std::fill_n(acc, g.co, S(0));
    for (std::ptrdiff_t n = 0; n < batch; ++n) {
      const S* row = dy.row(n).data();
      for (std::ptrdiff_t q = 0; q < pixels; ++q)
        for (std::ptrdiff_t c = 0; c < g.co; ++c) acc[c] += row[q * g.co + c];
    }
    std::copy_n(acc, g.co, db.data());
    if (by_taps(g)) return backward_taps(ws, g, params, grads, x, dy, dx, want_dx);
    const bool contiguous = dy.outerStride() == dy.cols() && (!want_dx || dx.outerStride() == dx.cols());
    const std::ptrdiff_t group = samples_per_group(g, batch, contiguous);
    const auto size = static_cast<std::size_t>(group * pixels * patch + copy_packet);
    S* p = ws.buffer(0, size);
    S* dp = want_dx ? ws.buffer(1, size) : nullptr;
    S* part = ws.buffer(2, static_cast<std::size_t>(g.co * patch));
    S* xp = ws.buffer(3, padded_size(g));
    if (batch == 0) dw.setZero();
    for (std::ptrdiff_t n0 = 0; n0 < batch; n0 += group) {
      const std::ptrdiff_t nb = std::min(group, batch - n0);
      for (std::ptrdiff_t j = 0; j < nb; ++j) im2col(g, x.row(n0 + j).data(), p + j * pixels * patch, xp);
      const const_matrix_map<S> dyg(dy.row(n0).data(), nb * pixels, g.co);
      const const_matrix_map<S> pg(p, nb * pixels, patch);
      if (n0 == 0) {
        kernel::multiply<S>(ws, kernel::form::tn, dyg, pg, dw);
      } else {
        matrix_map<S> partial(part, g.co, patch);
        kernel::multiply<S>(ws, kernel::form::tn, dyg, pg, partial);
        dw += partial;
      }
      if (!want_dx) continue;
      matrix_map<S> dpg(dp, nb * pixels, patch);
      kernel::multiply<S>(ws, kernel::form::nn, dyg, w, dpg);
      for (std::ptrdiff_t j = 0; j < nb; ++j) col2im(g, dp + j * pixels * patch, dx.row(n0 + j).data(), xp);
    }
  }
};

/// One sample's pooling as the kernels run it (no padding: windows start at the block's first cell).
struct pool_geometry {
  std::ptrdiff_t h = 0, w = 0, c = 0, ho = 0, wo = 0, kh = 0, kw = 0, sh = 1, sw = 1;
};
inline pool_geometry pool_geometry_of(const layer_context& ctx, window k, window s) {
  const image in = image_of(ctx.in), out = image_of(ctx.out);
  return {static_cast<std::ptrdiff_t>(in.height),  static_cast<std::ptrdiff_t>(in.width),
          static_cast<std::ptrdiff_t>(in.channels), static_cast<std::ptrdiff_t>(out.height),
          static_cast<std::ptrdiff_t>(out.width),  static_cast<std::ptrdiff_t>(k.height),
          static_cast<std::ptrdiff_t>(k.width),    static_cast<std::ptrdiff_t>(s.height),
          static_cast<std::ptrdiff_t>(s.width)};
}

/// Shared parts of the pooling layers: shapes and checks.
template <auto Kernel, auto Stride>
struct pooling : windowed {
  static constexpr window kernel_window = as_window<Kernel>();
  static constexpr window stride_window = as_window<Stride>();
  static constexpr window padding_window{0, 0};
  static constexpr layer_kind kind = layer_kind::hidden;
  static constexpr std::size_t parameter_count(extents) noexcept { return 0; }
  static constexpr extents output(extents in) noexcept {
    const image im = image_of(in);
    const std::size_t ho = sliding_outputs(im.height, kernel_window.height, stride_window.height, 0),
                      wo = sliding_outputs(im.width, kernel_window.width, stride_window.width, 0);
    if (!im.ok || ho == 0 || wo == 0) return {};
    return in.rank == 2 ? extents{{ho, wo}, 2} : extents{{ho, wo, im.channels}, 3};
  }
  template <std::size_t Index, bool Last, std::size_t... In>
  struct at_layer {
    static constexpr std::size_t rank = sizeof...(In);
    static constexpr extents in{{In...}, rank};
    static_assert(kernel_window.height > 0 && kernel_window.width > 0,
                  "f2d2n: the pooling layer at the layer index named above has a window of extent 0");
    static_assert(stride_window.height > 0 && stride_window.width > 0,
                  "f2d2n: the pooling layer at the layer index named above has a stride of 0: it would not move");
    static_assert(rank == 0 || rank == 2 || rank == 3,
                  "f2d2n: the pooling layer at the layer index named above needs an image (height, width[, channels]); "
                  "its input is flat or of another rank: put reshape<height, width, channels> before it");
    static_assert((rank != 2 && rank != 3) ||
                      (image_of(in).height >= kernel_window.height && image_of(in).width >= kernel_window.width),
                  "f2d2n: the pooling window at the layer index named above is larger than its input (input shape "
                  "named above)");
    static constexpr bool ok = true;
  };
};

}  // namespace detail

namespace detail {
/// Applies a training step's dropout mask to `in` (rows x cols) into `out`: element (r, c) is kept
/// and scaled when random_bits(seed, mix64(tag ^ step) ^ layer, index) >> 32 >= Rate x 2^32, where
/// index is the element's place in the whole batch and layer: (batch row) x (the layer's features)
/// + (its feature), whichever rows, columns or block of a feature map the context says `in` holds.
/// The same mask in the forward pass (x to y) and the backward pass (dy to dx): the layer is linear.
template <class S>
void apply_dropout(const layer_context& ctx, double rate, const_matrix_ref<S> in, matrix_ref<S> out) {
  const auto threshold = static_cast<std::uint64_t>(rate * 4294967296.0);
  const S scale = static_cast<S>(1.0 / (1.0 - rate));
  const std::uint64_t key = mix64(ctx.seed ^ mix64(mix64(0x64726f706f7574ULL ^ ctx.step) ^ ctx.layer));
  const auto cols = in.cols();
  const std::uint64_t width = ctx.columns != 0 ? ctx.columns : static_cast<std::uint64_t>(cols);
  const image block = image_of(ctx.out);
  const bool map_block = ctx.map_width != 0 && block.ok;
  for (Eigen::Index r = 0; r < in.rows(); ++r) {
    const std::uint64_t base = (ctx.row_offset + static_cast<std::uint64_t>(r)) * width;
    const S* x = in.row(r).data();
    S* y = out.row(r).data();
    if (!map_block) {
      const std::uint64_t first = base + ctx.column_offset;
      // One mix of a counter per element: vectorised where the CPU multiplies 64-bit lanes.
      for (Eigen::Index c = 0; c < cols; ++c)
        y[c] = (mix64(key ^ (first + static_cast<std::uint64_t>(c))) >> 32) >= threshold ? x[c] * scale : S(0);
      continue;
    }
    // A block of a map: each run of the block's row is a run of the whole map's.
    const std::size_t run = block.width * block.channels;
    for (std::size_t br = 0; br < block.height; ++br) {
      const std::uint64_t first =
          base + ((ctx.block_row + br) * ctx.map_width + ctx.block_col) * block.channels;
      const S* xr = x + br * run;
      S* yr = y + br * run;
      for (std::size_t c = 0; c < run; ++c)
        yr[c] = (mix64(key ^ (first + c)) >> 32) >= threshold ? xr[c] * scale : S(0);
    }
  }
}
}  // namespace detail

}  // namespace f2d2n

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
