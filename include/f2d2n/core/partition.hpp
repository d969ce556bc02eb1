// f2d2n/core/partition.hpp: balanced decomposition of an extent over parts.
//
// Extent n over P parts gives part i the size n/P + (i < n%P): the first n%P parts get one more.
#pragma once

#include <algorithm>
#include <cstddef>

namespace f2d2n {

/// Size of part i of n split over parts.
[[nodiscard]] constexpr std::size_t part_size(std::size_t n, std::size_t parts, std::size_t i) noexcept {
  return n / parts + (i < n % parts ? 1 : 0);
}

/// First index of part i of n split over parts.
[[nodiscard]] constexpr std::size_t part_begin(std::size_t n, std::size_t parts, std::size_t i) noexcept {
  return i * (n / parts) + std::min(i, n % parts);
}

/// Which part index k of n split over parts falls in.
[[nodiscard]] constexpr std::size_t part_of(std::size_t n, std::size_t parts, std::size_t k) noexcept {
  const std::size_t small = n / parts, extra = n % parts;
  const std::size_t big_end = extra * (small + 1);
  return k < big_end ? k / (small + 1) : extra + (k - big_end) / small;
}

}  // namespace f2d2n
