// f2d2n/core/random.hpp: counter-based random numbers, so that any processing unit can draw the
// values of any slice of a tensor without drawing the rest first.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace f2d2n {

/// SplitMix64's finaliser: a bijective 64-bit mix with good avalanche.
[[nodiscard]] constexpr std::uint64_t mix64(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// The 64 random bits at position `index` of stream `stream` under `seed`. Pure function of its arguments.
[[nodiscard]] constexpr std::uint64_t random_bits(std::uint64_t seed, std::uint64_t stream,
                                                  std::uint64_t index) noexcept {
  return mix64(mix64(seed ^ mix64(stream)) ^ index);
}

/// A double uniformly distributed in [-1, 1), drawn from random_bits(seed, stream, index).
[[nodiscard]] constexpr double random_symmetric(std::uint64_t seed, std::uint64_t stream,
                                                std::uint64_t index) noexcept {
  // 53 random bits -> [0, 1) -> [-1, 1)
  const double u = static_cast<double>(random_bits(seed, stream, index) >> 11) * 0x1.0p-53;
  return 2.0 * u - 1.0;
}

/// A small sequential generator (SplitMix64) for shuffling: same seed, same sequence, on every platform.
class random_stream {
 public:
  explicit constexpr random_stream(std::uint64_t seed) noexcept : state_(seed) {}
  constexpr std::uint64_t next() noexcept {
    state_ += 0x9e3779b97f4a7c15ULL;
    std::uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  /// A uniform integer in [0, bound), bound > 0, without modulo bias (rejection of the short tail).
  constexpr std::uint64_t below(std::uint64_t bound) noexcept {
    const std::uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
    for (;;) {
      const std::uint64_t r = next();
      if (r >= threshold) return r % bound;
    }
  }

 private:
  std::uint64_t state_;
};

/// Fisher-Yates shuffle of `items` driven by random_stream(seed): the same permutation everywhere.
template <class T>
void shuffle(std::span<T> items, std::uint64_t seed) {
  random_stream rng(seed);
  for (std::size_t i = items.size(); i > 1; --i) {
    const auto j = static_cast<std::size_t>(rng.below(i));
    std::swap(items[i - 1], items[j]);
  }
}

}  // namespace f2d2n
