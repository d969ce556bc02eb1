// f2d2n/comm/halo.hpp: halo exchange on a Cartesian partition, and its adjoint.
//
// Each unit stores its box of the global tensor with ghost cells around it: along dimension k,
// `left[k]` cells before its owned cells and `right[k]` after, so its local array has extents
// owned_k + left[k] + right[k] (row-major; ghosts are allocated at the global boundary too).
// Forward: every ghost cell that has a neighbour behind it takes the value of the neighbour's
// owned cell it mirrors; ghosts at the global boundary and owned cells keep their values.
// Dimensions are exchanged one after the other, each over the whole local extent of the other
// dimensions, so corners arrive right (through two hops).
// Adjoint: in the reverse order, every such ghost cell's value is added into the owned cell it
// mirrors on the neighbour, and the ghost cell becomes zero.
#pragma once

#include <f2d2n/comm/cartesian.hpp>
#include <f2d2n/comm/primitives.hpp>

#include <span>
#include <string>
#include <vector>

namespace f2d2n {

/// Ghost widths per dimension.
struct halo_widths {
  std::vector<std::size_t> left, right;
};

/// The local array's extents for the unit at `index`: owned extents plus ghosts.
[[nodiscard]] inline std::vector<std::size_t> halo_local_extents(const cartesian_partition& part, const halo_widths& h,
                                                                 std::size_t index) {
  const box b = part.owned(index);
  std::vector<std::size_t> e(part.dims());
  for (std::size_t k = 0; k < part.dims(); ++k) e[k] = b.hi[k] - b.lo[k] + h.left[k] + h.right[k];
  return e;
}

/// Number of elements of the local array of the unit at `index`.
[[nodiscard]] inline std::size_t halo_local_size(const cartesian_partition& part, const halo_widths& h,
                                                 std::size_t index) {
  std::size_t n = 1;
  for (std::size_t e : halo_local_extents(part, h, index)) n *= e;
  return n;
}

namespace detail {

struct halo_geometry {
  box local;  // [0, local extent) in every dimension
  std::vector<std::size_t> owned, coords;
};

inline halo_geometry halo_setup(const cartesian_partition& part, const halo_widths& h, std::size_t me) {
  const std::size_t d = part.dims();
  if (h.left.size() != d || h.right.size() != d)
    throw configuration_error("f2d2n: halo widths need one value per dimension (" + std::to_string(d) + ")");
  halo_geometry geo{box{std::vector<std::size_t>(d, 0), halo_local_extents(part, h, me)}, {}, part.coordinates(me)};
  const box b = part.owned(me);
  for (std::size_t k = 0; k < d; ++k) {
    geo.owned.push_back(b.hi[k] - b.lo[k]);
    const bool has_neighbour = geo.coords[k] > 0 || geo.coords[k] + 1 < part.shape[k];
    if (has_neighbour && geo.owned[k] < std::max(h.left[k], h.right[k]))
      throw configuration_error("f2d2n: halo of width " + std::to_string(std::max(h.left[k], h.right[k])) +
                                " in dimension " + std::to_string(k) + " is wider than the " +
                                std::to_string(geo.owned[k]) +
                                " cells a unit owns there: use fewer units along that dimension or a narrower halo");
  }
  return geo;
}

/// Index of the unit next to `coords` along dimension k (dir -1: before, +1: after), or -1 at the
/// edge of the grid.
inline std::ptrdiff_t neighbour(const cartesian_partition& part, std::vector<std::size_t> coords, std::size_t k,
                                int dir) {
  if (dir < 0 && coords[k] == 0) return -1;
  if (dir > 0 && coords[k] + 1 == part.shape[k]) return -1;
  coords[k] = dir < 0 ? coords[k] - 1 : coords[k] + 1;
  return static_cast<std::ptrdiff_t>(part.index(coords));
}

/// The slab [lo, hi) along dimension k, the whole local extent along the others.
inline box slab(const box& local, std::size_t k, std::size_t lo, std::size_t hi) {
  box b = local;
  b.lo[k] = lo;
  b.hi[k] = hi;
  return b;
}

/// One direction of one dimension: send `send_region` to unit `to` (if any) while receiving
/// `recv_region` from unit `from` (if any); `land` stores or adds what arrived.
template <transport T, class S>
void halo_shift(T& t, const group& g, std::span<S> local, const box& geo_local, const box& send_region,
                std::ptrdiff_t to, const box& recv_region, std::ptrdiff_t from, bool add, const call_options& c,
                deadline until) {
  std::vector<S> send_buf(to >= 0 ? send_region.volume() : 0), recv_buf(from >= 0 ? recv_region.volume() : 0);
  if (to >= 0) copy_region(send_region, local.data(), geo_local, send_buf.data(), send_region);
  if (to >= 0 && from >= 0)
    exchange_tensor(t, g[static_cast<std::size_t>(to)], std::span<const S>(send_buf), g[static_cast<std::size_t>(from)],
                    std::span<S>(recv_buf), c.message_id, c.step, until);
  else if (to >= 0)
    send_tensor(t, g[static_cast<std::size_t>(to)], c.message_id, c.step, std::span<const S>(send_buf), until);
  else if (from >= 0)
    receive_tensor(t, g[static_cast<std::size_t>(from)], c.message_id, c.step, std::span<S>(recv_buf), until);
  if (from >= 0) copy_region(recv_region, recv_buf.data(), recv_region, local.data(), geo_local, add);
}

template <class S>
void zero_region(std::span<S> local, const box& local_box, const box& region) {
  std::vector<S> zeros(region.volume(), S(0));
  copy_region(region, zeros.data(), region, local.data(), local_box);
}

}  // namespace detail

/// Halo exchange: fills this unit's ghost cells from its neighbours' owned cells (see the top).
/// `local` is this unit's local array (halo_local_size elements). (Adjoint: halo_exchange_adjoint.)
template <transport T, wire_scalar S>
void halo_exchange(T& t, const group& g, const cartesian_partition& part, const halo_widths& h, std::span<S> local,
                   const call_options& c) {
  const std::size_t me = g.index_of(t.rank());
  if (me >= part.units()) return;  // a member without a box takes no part
  const auto geo = detail::halo_setup(part, h, me);
  detail::check_extent(local, geo.local.volume(), "halo_exchange's local array");
  const deadline until = c.until();
  for (std::size_t k = 0; k < part.dims(); ++k) {
    const std::size_t l = h.left[k], r = h.right[k], n = geo.owned[k];
    const auto left_unit = detail::neighbour(part, geo.coords, k, -1);
    const auto right_unit = detail::neighbour(part, geo.coords, k, +1);
    // My last l owned cells go to the right neighbour's left ghosts; mine come from the left.
    if (l > 0)
      detail::halo_shift(t, g, local, geo.local, detail::slab(geo.local, k, n, l + n), right_unit,
                         detail::slab(geo.local, k, 0, l), left_unit, false, c, until);
    // My first r owned cells go to the left neighbour's right ghosts; mine come from the right.
    if (r > 0)
      detail::halo_shift(t, g, local, geo.local, detail::slab(geo.local, k, l, l + r), left_unit,
                         detail::slab(geo.local, k, l + n, l + n + r), right_unit, false, c, until);
  }
}

/// The adjoint of halo_exchange: adds every ghost cell that has a neighbour behind it into the
/// owned cell it mirrors, and zeroes it.
template <transport T, wire_scalar S>
void halo_exchange_adjoint(T& t, const group& g, const cartesian_partition& part, const halo_widths& h,
                           std::span<S> local, const call_options& c) {
  const std::size_t me = g.index_of(t.rank());
  if (me >= part.units()) return;
  const auto geo = detail::halo_setup(part, h, me);
  detail::check_extent(local, geo.local.volume(), "halo_exchange_adjoint's local array");
  const deadline until = c.until();
  for (std::size_t k = part.dims(); k-- > 0;) {
    const std::size_t l = h.left[k], r = h.right[k], n = geo.owned[k];
    const auto left_unit = detail::neighbour(part, geo.coords, k, -1);
    const auto right_unit = detail::neighbour(part, geo.coords, k, +1);
    if (r > 0) {
      // My right ghosts go back to the right neighbour's first r owned cells; the left
      // neighbour's right ghosts come back into my first r owned cells.
      const box ghosts = detail::slab(geo.local, k, l + n, l + n + r);
      detail::halo_shift(t, g, local, geo.local, ghosts, right_unit, detail::slab(geo.local, k, l, l + r), left_unit,
                         true, c, until);
      if (right_unit >= 0) detail::zero_region(local, geo.local, ghosts);
    }
    if (l > 0) {
      const box ghosts = detail::slab(geo.local, k, 0, l);
      detail::halo_shift(t, g, local, geo.local, ghosts, left_unit, detail::slab(geo.local, k, n, l + n), right_unit,
                         true, c, until);
      if (left_unit >= 0) detail::zero_region(local, geo.local, ghosts);
    }
  }
}

}  // namespace f2d2n
