// f2d2n/kernel/gemm.hpp: the kernel layer. Every product of a layer's forward pass, weight
// gradient and input gradient goes through multiply() here, in one of two backends chosen when
// the program is configured (docs/kernels.md):
//
//   libxsmm  JIT-generated kernels for each shape (Debian's libxsmm-dev): the default where CMake
//            finds it. The f2d2n::f2d2n target then defines F2D2N_KERNELS_LIBXSMM=1 and links it.
//   eigen    Eigen's general matrix product: the portable fallback (-DF2D2N_KERNELS=eigen, or a
//            program that includes the headers without that definition).
//
// A workspace belongs to one layer of one unit (or network) and keeps that layer's kernels: one
// per shape, dispatched the first time the shape is seen (a batch size is the only extent not
// known at compile time) and reused after. Workspaces are not shared between threads; a network
// or processing unit computes on one thread.
//
// Matrices are row-major, as everywhere in f2d2n. libxsmm's kernels are column-major and, in
// version 1.17, take no transposed A: C = A B^T (the forward pass, both operands contiguous along
// the sum) is computed as B transposed into the workspace (kernel/transpose.hpp) then a plain
// product. A kernel computes each element of C as one sum over k in order, whatever m and n: rows
// computed by two units agree bit for bit with the same rows computed by one.
#pragma once

#include <f2d2n/core/layer_context.hpp>
#include <f2d2n/kernel/transpose.hpp>
#include <f2d2n/model/tensor.hpp>

#if F2D2N_KERNELS_LIBXSMM
#include <libxsmm.h>
#endif

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace f2d2n::kernel {

/// The GEMM backends.
enum class backend { eigen, libxsmm };

/// The backend this program was compiled with.
#if F2D2N_KERNELS_LIBXSMM
inline constexpr backend active_backend = backend::libxsmm;
#else
inline constexpr backend active_backend = backend::eigen;
#endif

[[nodiscard]] constexpr std::string_view name(backend b) noexcept {
  return b == backend::libxsmm ? "libxsmm" : "eigen";
}

/// Whether products run generated code on this CPU: the libxsmm backend, and an instruction set
/// libxsmm generates code for (SSE3 and later; not with LIBXSMM_TARGET=generic, nor where the system
/// forbids writable-executable memory). Where not, every product runs Eigen's instead.
inline bool generates_code() {
#if F2D2N_KERNELS_LIBXSMM
  libxsmm_init();
  return libxsmm_get_target_archid() > LIBXSMM_X86_GENERIC;
#else
  return false;
#endif
}

/// The backend in words, for logs and benchmarks: "libxsmm 1.17 (code for cpx)" names the
/// instruction set libxsmm generates code for on this CPU (LIBXSMM_TARGET overrides it).
inline std::string backend_description() {
#if F2D2N_KERNELS_LIBXSMM
  libxsmm_init();
  return std::string("libxsmm ") + LIBXSMM_CONFIG_VERSION + " (code for " + libxsmm_get_target_arch() + ")" +
         (generates_code() ? "" : ": no code generated for this CPU, Eigen's products run");
#else
  return "eigen " + std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
         std::to_string(EIGEN_MINOR_VERSION);
#endif
}

/// Which operands a product transposes: C = A B, C = A B^T, C = A^T B.
enum class form : std::uint8_t { nn, nt, tn };

/// A product's shape in row-major terms: C is m x n, the sum runs over k; ld* are row strides.
struct gemm_shape {
  std::ptrdiff_t m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldc = 0;
  form op = form::nn;
  friend bool operator==(const gemm_shape&, const gemm_shape&) = default;
};

namespace detail {
template <class S>
inline constexpr bool jit_scalar = std::is_same_v<S, float> || std::is_same_v<S, double>;

/// The generated kernel's function type (a placeholder where there is none).
template <class S>
struct jit_of {
  using type = void*;
};
#if F2D2N_KERNELS_LIBXSMM
template <>
struct jit_of<float> {
  using type = libxsmm_smmfunction;
};
template <>
struct jit_of<double> {
  using type = libxsmm_dmmfunction;
};
template <class S>
using jit_function = typename jit_of<S>::type;

/// libxsmm's column-major kernel C = A op(B) (m x n, summing over k; op(B) = B^T when trans_b): a
/// null function where libxsmm has none (a shape or a CPU it does not
/// generate code for). Only plain and B-transposed kernels exist in libxsmm 1.17.
template <class S>
jit_function<S> dispatch(std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t k, std::ptrdiff_t lda, std::ptrdiff_t ldb,
                         std::ptrdiff_t ldc, bool trans_b, bool accumulate = false) {
  if (m <= 0 || n <= 0 || k <= 0) return nullptr;
  libxsmm_init();  // idempotent
  const S alpha = 1, beta = accumulate ? 1 : 0;
  const auto la = static_cast<libxsmm_blasint>(lda), lb = static_cast<libxsmm_blasint>(ldb),
             lc = static_cast<libxsmm_blasint>(ldc);
  const int flags = trans_b ? LIBXSMM_GEMM_FLAG_TRANS_B : LIBXSMM_GEMM_FLAG_NONE;
  const auto cm = static_cast<libxsmm_blasint>(m), cn = static_cast<libxsmm_blasint>(n),
             ck = static_cast<libxsmm_blasint>(k);
  if constexpr (std::is_same_v<S, float>)
    return libxsmm_smmdispatch(cm, cn, ck, &la, &lb, &lc, &alpha, &beta, &flags, nullptr);
  else
    return libxsmm_dmmdispatch(cm, cn, ck, &la, &lb, &lc, &alpha, &beta, &flags, nullptr);
}
#endif

template <class S>
using strided_map = Eigen::Map<const matrix<S>, 0, Eigen::OuterStride<>>;
template <class S>
using strided_out = Eigen::Map<matrix<S>, 0, Eigen::OuterStride<>>;

/// Eigen's product for one shape: the fallback backend, and where libxsmm has no kernel.
template <class S>
void eigen_multiply(const gemm_shape& s, const S* a, const S* b, S* c) {
  strided_out<S> C(c, s.m, s.n, Eigen::OuterStride<>(s.ldc));
  switch (s.op) {
    case form::nn:
      C.noalias() = strided_map<S>(a, s.m, s.k, Eigen::OuterStride<>(s.lda)) *
                    strided_map<S>(b, s.k, s.n, Eigen::OuterStride<>(s.ldb));
      break;
    case form::nt:
      C.noalias() = strided_map<S>(a, s.m, s.k, Eigen::OuterStride<>(s.lda)) *
                    strided_map<S>(b, s.n, s.k, Eigen::OuterStride<>(s.ldb)).transpose();
      break;
    case form::tn:
      C.noalias() = strided_map<S>(a, s.k, s.m, Eigen::OuterStride<>(s.lda)).transpose() *
                    strided_map<S>(b, s.k, s.n, Eigen::OuterStride<>(s.ldb));
      break;
  }
}
}  // namespace detail

/// The longest sum a tn product (the weight gradient, summing over the batch) hands to one libxsmm
/// kernel. libxsmm's kernels do not block for the caches and slow down as that sum grows (measured
/// at 784 x 256: 217 GFLOP/s over 256 rows, 110 over 4096, 51 over 10000, Eigen's product 131-156
/// throughout); past tn_chunk rows the sum runs in chunks: the first writes C, the others add to it.
inline constexpr std::ptrdiff_t tn_chunk = 512;

/// One product of a fixed shape: a JIT kernel where the backend has one, Eigen otherwise.
///
/// A row-major product is the column-major product of the transposes, C^T = op(B)^T op(A)^T, so
/// nn and tn map onto libxsmm's plain and B-transposed kernels directly. nt (C = A B^T: the forward
/// pass, both operands contiguous along the sum) takes one of two routes, whichever transposes
/// fewer elements through the workspace's scratch:
///   by_b  B^T (k x n) into scratch, then the plain kernel:             n k elements moved
///   by_a  A^T (k x m) into scratch, C^T = B A^T, then C^T back into C: m k + m n elements moved
/// (at batch 64, the first layer of the 784-256-128-10 MLP moves 66k elements by_a, 201k by_b).
/// Both sum each element of C over k in the same order, so the route changes no bit of C.
///
/// tn sums over the batch (the weight gradient), and libxsmm's kernels, which do not block for
/// the caches, slow down as that sum grows: past tn_chunk rows the sum runs in chunks (above).
template <class S>
class gemm {
 public:
  explicit gemm(const gemm_shape& s) : shape_(s) {
#if F2D2N_KERNELS_LIBXSMM
    if constexpr (detail::jit_scalar<S>) {
      switch (s.op) {
        case form::nn: jit_ = detail::dispatch<S>(s.n, s.m, s.k, s.ldb, s.lda, s.ldc, false); break;
        case form::tn:
          if (s.k <= tn_chunk) {
            jit_ = detail::dispatch<S>(s.n, s.m, s.k, s.ldb, s.lda, s.ldc, true);
          } else {
            jit_ = detail::dispatch<S>(s.n, s.m, tn_chunk, s.ldb, s.lda, s.ldc, true);
            add_ = detail::dispatch<S>(s.n, s.m, tn_chunk, s.ldb, s.lda, s.ldc, true, true);
            if (s.k % tn_chunk != 0)
              tail_ = detail::dispatch<S>(s.n, s.m, s.k % tn_chunk, s.ldb, s.lda, s.ldc, true, true);
            if (add_ == nullptr || (s.k % tn_chunk != 0 && tail_ == nullptr)) jit_ = nullptr;  // all or none
          }
          break;
        case form::nt:
          by_a_ = s.m * (s.k + s.n) < s.n * s.k;
          jit_ = by_a_ ? detail::dispatch<S>(s.m, s.n, s.k, s.m, s.ldb, s.m, false)
                       : detail::dispatch<S>(s.n, s.m, s.k, s.n, s.lda, s.ldc, false);
          break;
      }
    }
#endif
  }

  [[nodiscard]] const gemm_shape& shape() const noexcept { return shape_; }
  /// Whether a generated kernel runs this product (false: Eigen's product does).
  [[nodiscard]] bool generated() const noexcept { return jit_ != nullptr; }
  /// Elements of scratch operator() needs (0 but for a generated nt).
  [[nodiscard]] std::size_t scratch_size() const noexcept {
    if (jit_ == nullptr || shape_.op != form::nt) return 0;
    return static_cast<std::size_t>(by_a_ ? shape_.m * (shape_.k + shape_.n) : shape_.k * shape_.n);
  }

  /// C = op(A) op(B), overwriting C; `scratch` holds scratch_size() elements.
  void operator()(const S* a, const S* b, S* c, S* scratch) const {
#if F2D2N_KERNELS_LIBXSMM
    if constexpr (detail::jit_scalar<S>) {
      if (jit_ != nullptr) {
        const auto& s = shape_;
        if (s.op == form::tn && s.k > tn_chunk) {
          jit_(b, a, c);
          std::ptrdiff_t at = tn_chunk;
          for (; at + tn_chunk <= s.k; at += tn_chunk) add_(b + at * s.ldb, a + at * s.lda, c);
          if (at < s.k) tail_(b + at * s.ldb, a + at * s.lda, c);
        } else if (s.op != form::nt) {
          jit_(b, a, c);
        } else if (by_a_) {
          S* at = scratch;             // A^T: k x m
          S* ct = scratch + s.k * s.m;  // C^T: n x m
          transpose(a, s.lda, at, s.m, s.m, s.k);
          jit_(at, b, ct);
          transpose(ct, s.m, c, s.ldc, s.n, s.m);
        } else {
          transpose(b, s.ldb, scratch, s.n, s.n, s.k);  // B^T: k x n
          jit_(scratch, a, c);
        }
        return;
      }
    }
#endif
    (void)scratch;
    detail::eigen_multiply(shape_, a, b, c);
  }

 private:
  gemm_shape shape_;
  bool by_a_ = false;
  typename detail::jit_of<S>::type jit_ = nullptr;
  typename detail::jit_of<S>::type add_ = nullptr;   // tn past tn_chunk: a chunk added to C
  typename detail::jit_of<S>::type tail_ = nullptr;  // and the last, shorter chunk
};

/// One layer's kernels (one per shape seen, in the order first seen) and its scratch memory.
template <class S>
class workspace {
 public:
  /// The kernel for `s`, dispatched on first use.
  const gemm<S>& kernel(const gemm_shape& s) {
    for (const auto& g : kernels_)
      if (g.shape() == s) return g;
    return kernels_.emplace_back(s);
  }

  /// Scratch of at least `count` elements (grown, never shrunk).
  S* scratch(std::size_t count) {
    if (scratch_.size() < count) scratch_.resize(count);
    return scratch_.data();
  }

  /// The layer's own buffer `slot` (0 to 5) of at least `count` elements, 64-byte aligned
  /// (grown, never shrunk): memory a layer keeps apart from the products' scratch, e.g. a
  /// convolution's patches.
  S* buffer(std::size_t slot, std::size_t count) {
    auto& b = buffers_[slot];
    if (b.size() < count) b.resize(count);
    return b.data();
  }

  [[nodiscard]] const std::vector<gemm<S>>& kernels() const noexcept { return kernels_; }

  /// What the layer's owner says of the pass at hand (core/layer_context.hpp).
  layer_context context;

 private:
  std::vector<gemm<S>> kernels_;
  std::vector<S> scratch_;
  std::vector<S, Eigen::aligned_allocator<S>> buffers_[6];
};

/// c = op(a) op(b) through the layer's workspace: c = a b (nn), a b^T (nt), a^T b (tn).
template <class S>
void multiply(workspace<S>& ws, form op, const_matrix_ref<S> a, const_matrix_ref<S> b, matrix_ref<S> c) {
  // A one-row view may report any stride: never less than its row's length.
  const gemm_shape s{.m = c.rows(),
                     .n = c.cols(),
                     .k = op == form::tn ? a.rows() : a.cols(),
                     .lda = std::max<std::ptrdiff_t>(a.outerStride(), a.cols()),
                     .ldb = std::max<std::ptrdiff_t>(b.outerStride(), b.cols()),
                     .ldc = std::max<std::ptrdiff_t>(c.outerStride(), c.cols()),
                     .op = op};
  const auto& g = ws.kernel(s);
  const std::size_t scratch = g.scratch_size();
  g(a.data(), b.data(), c.data(), scratch > 0 ? ws.scratch(scratch) : nullptr);
}

}  // namespace f2d2n::kernel
