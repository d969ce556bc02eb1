// f2d2n/core/shape.hpp: tensor extents as compile-time types and as constexpr values.
#pragma once

#include <array>
#include <cstddef>

namespace f2d2n {

/// The most dimensions a sample may have (features; height x width; channels x height x width; ...).
inline constexpr std::size_t max_rank = 4;

/// The extents of one sample as a value: usable in constexpr code and at run time alike.
struct extents {
  std::array<std::size_t, max_rank> dims{};
  std::size_t rank = 0;

  /// Number of elements (0 for a rank-0 value, which stands for "no shape").
  [[nodiscard]] constexpr std::size_t size() const noexcept {
    if (rank == 0) return 0;
    std::size_t n = 1;
    for (std::size_t i = 0; i < rank; ++i) n *= dims[i];
    return n;
  }
  [[nodiscard]] constexpr bool valid() const noexcept { return rank > 0 && size() > 0; }
  friend constexpr bool operator==(const extents&, const extents&) = default;
};

/// A flat (rank-1) extents value of n features.
[[nodiscard]] constexpr extents flat(std::size_t n) noexcept { return extents{{n}, 1}; }

/// The extents of one sample as a type: shape<784>, shape<28, 28>, shape<1, 28, 28>.
template <std::size_t... Dims>
struct shape {
  static_assert(sizeof...(Dims) >= 1 && sizeof...(Dims) <= max_rank, "f2d2n: a shape has between 1 and 4 extents");
  static constexpr extents value{{Dims...}, sizeof...(Dims)};
  static constexpr std::size_t size = value.size();
};

}  // namespace f2d2n
