// f2d2n/comm/schedule.hpp: which schedule a reduce-scatter, all-gather or all-reduce runs, and how
// many elements each unit sends in it: what comm/primitives.hpp runs and what a plan's message
// schema (plan/distribute.hpp) states, from one definition, without the transports.
#pragma once

#include <f2d2n/core/partition.hpp>

#include <cstddef>

namespace f2d2n {

/// The schedule of a reduce-scatter, all-gather or all-reduce (call_options::algorithm).
enum class collective_algorithm {
  automatic,         ///< halving-doubling for groups of 4, 8, 16 .. units, the ring otherwise
  ring,              ///< p - 1 rounds per phase, each unit with its two neighbours
  halving_doubling,  ///< log2 p rounds per phase, pairs at distance p/2 .. 1 (power-of-two groups only)
};

/// Whether `a` over p units runs halving-doubling: asked for (p a power of two), or automatic and p
/// one of 4, 8, 16 .. (for 2 units both schedules are the same one exchange).
[[nodiscard]] constexpr bool uses_halving_doubling(collective_algorithm a, std::size_t p) noexcept {
  const bool power_of_two = p >= 2 && (p & (p - 1)) == 0;
  if (a == collective_algorithm::halving_doubling) return power_of_two;
  return a == collective_algorithm::automatic && power_of_two && p >= 4;
}

/// Elements unit `me` of p sends in an all-gather of `blocks` blocks of `block` elements.
/// Ring: every segment but its right neighbour's. Halving-doubling: the range it holds before each
/// round (its segment, its pair's, its four's ..).
[[nodiscard]] constexpr std::size_t all_gather_sends(std::size_t blocks, std::size_t p, std::size_t me,
                                                     std::size_t block,
                                                     collective_algorithm a = collective_algorithm::automatic) noexcept {
  if (p <= 1) return 0;
  if (!uses_halving_doubling(a, p)) return (blocks - part_size(blocks, p, (me + 1) % p)) * block;
  std::size_t total = 0;
  for (std::size_t d = 1; d < p; d *= 2) {
    const std::size_t first = me / d * d;
    total += part_begin(blocks, p, first + d) - part_begin(blocks, p, first);
  }
  return total * block;
}

/// Elements unit `me` of p sends in a reduce-scatter of n elements: every segment but its own, in
/// either schedule.
[[nodiscard]] constexpr std::size_t reduce_scatter_sends(std::size_t n, std::size_t p, std::size_t me) noexcept {
  return p <= 1 ? 0 : n - part_size(n, p, me);
}

/// Elements unit `me` of p sends in an all-reduce of n elements: a reduce-scatter, then an all-gather.
[[nodiscard]] constexpr std::size_t all_reduce_sends(std::size_t n, std::size_t p, std::size_t me,
                                                     collective_algorithm a = collective_algorithm::automatic) noexcept {
  return p <= 1 ? 0 : reduce_scatter_sends(n, p, me) + all_gather_sends(n, p, me, 1, a);
}

}  // namespace f2d2n
