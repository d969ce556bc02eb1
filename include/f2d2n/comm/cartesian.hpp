// f2d2n/comm/cartesian.hpp: tensors split over Cartesian grids of units.
//
// A grid of shape (P_0, ..., P_{d-1}) numbers its units row-major: the unit at coordinates c has
// index sum c_k * stride_k within its group. A tensor of global extents (n_0, ..., n_{d-1}) over
// that grid gives the unit at c the box [part_begin(n_k, P_k, c_k), + part_size(n_k, P_k, c_k))
// in every dimension (balanced decomposition), stored row-major. grid<P...> states a grid as a
// type; cartesian_partition is the run-time value every primitive works on.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/core/partition.hpp>

#include <array>
#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

namespace f2d2n {

/// A Cartesian grid of units as a type: grid<2, 3> has 6 units in 2 rows of 3.
template <std::size_t... P>
struct grid {
  static_assert(sizeof...(P) >= 1, "f2d2n: a grid has at least one dimension");
  static_assert(((P >= 1) && ...), "f2d2n: every extent of a grid is at least 1");
  static constexpr std::size_t rank = sizeof...(P);
  static constexpr std::array<std::size_t, rank> shape{P...};
  static constexpr std::size_t size = (P * ...);

  /// Coordinates of the unit at `index` (row-major).
  static constexpr std::array<std::size_t, rank> coordinates(std::size_t index) noexcept {
    std::array<std::size_t, rank> c{};
    for (std::size_t k = rank; k-- > 0;) {
      c[k] = index % shape[k];
      index /= shape[k];
    }
    return c;
  }
  /// Index of the unit at coordinates c.
  static constexpr std::size_t index(const std::array<std::size_t, rank>& c) noexcept {
    std::size_t i = 0;
    for (std::size_t k = 0; k < rank; ++k) i = i * shape[k] + c[k];
    return i;
  }
};

/// An axis-aligned box [lo, hi) in d dimensions.
struct box {
  std::vector<std::size_t> lo, hi;

  [[nodiscard]] std::size_t dims() const noexcept { return lo.size(); }
  [[nodiscard]] std::size_t volume() const noexcept {
    std::size_t v = 1;
    for (std::size_t k = 0; k < lo.size(); ++k) v *= hi[k] > lo[k] ? hi[k] - lo[k] : 0;
    return v;
  }
  [[nodiscard]] bool empty() const noexcept { return volume() == 0; }
  [[nodiscard]] box intersect(const box& o) const {
    box r{lo, hi};
    for (std::size_t k = 0; k < lo.size(); ++k) {
      r.lo[k] = std::max(lo[k], o.lo[k]);
      r.hi[k] = std::max(r.lo[k], std::min(hi[k], o.hi[k]));
    }
    return r;
  }
};

/// A global tensor of `extents` split over a grid of `shape` (one extent per dimension).
struct cartesian_partition {
  std::vector<std::size_t> extents;
  std::vector<std::size_t> shape;

  cartesian_partition(std::vector<std::size_t> global_extents, std::vector<std::size_t> grid_shape)
      : extents(std::move(global_extents)), shape(std::move(grid_shape)) {
    if (extents.empty() || extents.size() != shape.size())
      throw configuration_error("f2d2n: a partition needs one grid extent per tensor dimension (" +
                                std::to_string(extents.size()) + " tensor dimensions, " + std::to_string(shape.size()) +
                                " grid dimensions)");
    for (std::size_t p : shape)
      if (p == 0) throw configuration_error("f2d2n: a grid extent of a partition is zero");
  }
  /// The same partition from a grid type: cartesian_partition::of<grid<2, 2>>({10, 7}).
  template <class Grid>
  static cartesian_partition of(std::vector<std::size_t> global_extents) {
    return {std::move(global_extents), std::vector<std::size_t>(Grid::shape.begin(), Grid::shape.end())};
  }

  [[nodiscard]] std::size_t dims() const noexcept { return extents.size(); }
  [[nodiscard]] std::size_t units() const noexcept {
    std::size_t n = 1;
    for (std::size_t p : shape) n *= p;
    return n;
  }
  [[nodiscard]] std::vector<std::size_t> coordinates(std::size_t index) const {
    std::vector<std::size_t> c(dims());
    for (std::size_t k = dims(); k-- > 0;) {
      c[k] = index % shape[k];
      index /= shape[k];
    }
    return c;
  }
  [[nodiscard]] std::size_t index(const std::vector<std::size_t>& c) const {
    std::size_t i = 0;
    for (std::size_t k = 0; k < dims(); ++k) i = i * shape[k] + c[k];
    return i;
  }
  /// The box of the global tensor that the unit at `index` owns.
  [[nodiscard]] box owned(std::size_t index) const {
    const auto c = coordinates(index);
    box b{std::vector<std::size_t>(dims()), std::vector<std::size_t>(dims())};
    for (std::size_t k = 0; k < dims(); ++k) {
      b.lo[k] = part_begin(extents[k], shape[k], c[k]);
      b.hi[k] = b.lo[k] + part_size(extents[k], shape[k], c[k]);
    }
    return b;
  }
  /// Elements the unit at `index` owns.
  [[nodiscard]] std::size_t local_size(std::size_t index) const { return owned(index).volume(); }
};

namespace detail {
/// Copies `region` between two row-major arrays: `src` stores exactly the box `src_box`, `dst`
/// the box `dst_box` (all three in one coordinate system, and region inside both boxes).
/// Contiguous runs along the last dimension are copied with memcpy; with `add`, the values are
/// added into dst instead of stored.
template <class S>
void copy_region(const box& region, const S* src, const box& src_box, S* dst, const box& dst_box, bool add = false) {
  const std::size_t d = region.dims();
  if (region.empty()) return;
  std::vector<std::size_t> src_stride(d), dst_stride(d);
  src_stride[d - 1] = dst_stride[d - 1] = 1;
  for (std::size_t k = d - 1; k-- > 0;) {
    src_stride[k] = src_stride[k + 1] * (src_box.hi[k + 1] - src_box.lo[k + 1]);
    dst_stride[k] = dst_stride[k + 1] * (dst_box.hi[k + 1] - dst_box.lo[k + 1]);
  }
  const std::size_t run = region.hi[d - 1] - region.lo[d - 1];
  std::vector<std::size_t> at(region.lo);  // odometer over all but the last dimension
  for (;;) {
    std::size_t so = 0, doff = 0;
    for (std::size_t k = 0; k < d; ++k) {
      so += (at[k] - src_box.lo[k]) * src_stride[k];
      doff += (at[k] - dst_box.lo[k]) * dst_stride[k];
    }
    if (add) {
      for (std::size_t i = 0; i < run; ++i) dst[doff + i] += src[so + i];
    } else {
      std::memcpy(dst + doff, src + so, run * sizeof(S));
    }
    std::size_t k = d - 1;
    while (k-- > 0) {
      if (++at[k] < region.hi[k]) break;
      at[k] = region.lo[k];
    }
    if (k == static_cast<std::size_t>(-1)) return;
  }
}
}  // namespace detail

}  // namespace f2d2n
