// f2d2n/kernel/transpose.hpp: an out-of-place transpose of a row-major matrix, in square tiles of
// one SIMD packet's width transposed in registers (Eigen's packet primitives), the edges element
// by element. Used where a GEMM backend lacks a transposed operand (kernel/gemm.hpp).
#pragma once

#include <Eigen/Core>

#include <cstddef>

namespace f2d2n::kernel {

// Eigen's packet types carry vector attributes that GCC drops (and warns about) in template
// arguments; Eigen silences the same warning in its own code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

/// out (cols x rows, row stride ldo) = in (rows x cols, row stride ldi) transposed.
template <class S>
void transpose(const S* in, std::ptrdiff_t ldi, S* out, std::ptrdiff_t ldo, std::ptrdiff_t rows, std::ptrdiff_t cols) {
  using packet = typename Eigen::internal::packet_traits<S>::type;
  constexpr std::ptrdiff_t width = Eigen::internal::unpacket_traits<packet>::size;
  std::ptrdiff_t r0 = 0;
  if constexpr (width > 1) {
    for (; r0 + width <= rows; r0 += width) {
      std::ptrdiff_t c0 = 0;
      for (; c0 + width <= cols; c0 += width) {
        Eigen::internal::PacketBlock<packet, width> tile;
        for (std::ptrdiff_t k = 0; k < width; ++k)
          tile.packet[k] = Eigen::internal::ploadu<packet>(in + (r0 + k) * ldi + c0);
        Eigen::internal::ptranspose(tile);
        for (std::ptrdiff_t k = 0; k < width; ++k) Eigen::internal::pstoreu(out + (c0 + k) * ldo + r0, tile.packet[k]);
      }
      for (std::ptrdiff_t c = c0; c < cols; ++c)
        for (std::ptrdiff_t r = r0; r < r0 + width; ++r) out[c * ldo + r] = in[r * ldi + c];
    }
  }
  for (std::ptrdiff_t r = r0; r < rows; ++r)
    for (std::ptrdiff_t c = 0; c < cols; ++c) out[c * ldo + r] = in[r * ldi + c];
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace f2d2n::kernel
