// f2d2n/core/denormals.hpp: flush subnormal floats to zero while training.
//
// Parameters whose gradient stays exactly zero (dead relu units, always-zero input pixels) see
// their momentum or Adam moments decay into subnormal numbers, where 0.9 * v rounds back to v: the
// values never reach zero, and every arithmetic operation on them takes a slow microcode assist
// (the README's status table has the measured cost). Flushing subnormals (FTZ: results, DAZ:
// inputs) keeps the update at full speed; the results differ from IEEE
// arithmetic only below 1.2e-38 (float) or 2.2e-308 (double).
#pragma once

#if defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>
#define F2D2N_HAS_MXCSR 1
#endif

namespace f2d2n {

/// While alive, this thread flushes subnormal floats and doubles to zero (x86: MXCSR's FTZ and DAZ
/// bits); the destructor restores the previous mode. A no-op where the CPU has no such mode here.
class flush_denormals {
 public:
  explicit flush_denormals(bool enable = true) noexcept {
#ifdef F2D2N_HAS_MXCSR
    saved_ = _mm_getcsr();
    if (enable) _mm_setcsr(saved_ | 0x8040u);  // FTZ (bit 15) | DAZ (bit 6)
#else
    (void)enable;
#endif
  }
  ~flush_denormals() {
#ifdef F2D2N_HAS_MXCSR
    _mm_setcsr(saved_);
#endif
  }
  flush_denormals(const flush_denormals&) = delete;
  flush_denormals& operator=(const flush_denormals&) = delete;

  /// Whether this build can flush subnormals at all.
  static constexpr bool supported() noexcept {
#ifdef F2D2N_HAS_MXCSR
    return true;
#else
    return false;
#endif
  }
  /// Whether subnormals are flushed on this thread now.
  static bool active() noexcept {
#ifdef F2D2N_HAS_MXCSR
    return (_mm_getcsr() & 0x8040u) == 0x8040u;
#else
    return false;
#endif
  }

 private:
  unsigned saved_ = 0;
};

}  // namespace f2d2n
