// f2d2n/comm/repartition.hpp: moving a tensor from one Cartesian partition to another
// (generalised all-to-all). Its adjoint is the reverse repartition: the operator only permutes
// elements, so it is orthogonal and the adjoint is its inverse.
#pragma once

#include <f2d2n/comm/cartesian.hpp>
#include <f2d2n/comm/primitives.hpp>

#include <span>
#include <string>
#include <vector>

namespace f2d2n {

/// Repartition: `in` holds this unit's box of partition `from`; `out` receives its box of
/// partition `to`. Both partitions cover the same global extents with grids whose units are the
/// members of `g` in order (the grids may differ in shape, and need not use every member: a grid
/// smaller than the group leaves the remaining members without a box). (Adjoint: repartition
/// from `to` back to `from`.)
template <transport T, wire_scalar S>
void repartition(T& t, const group& g, const cartesian_partition& from, const cartesian_partition& to,
                 std::span<const S> in, std::span<S> out, const call_options& c) {
  if (from.extents != to.extents)
    throw configuration_error("f2d2n: repartition between partitions of different global extents");
  if (from.units() > g.size() || to.units() > g.size())
    throw configuration_error("f2d2n: repartition's grids have more units (" +
                              std::to_string(std::max(from.units(), to.units())) + ") than its group (" +
                              std::to_string(g.size()) + ")");
  const std::size_t p = g.size(), me = g.index_of(t.rank());
  const auto box_of = [](const cartesian_partition& part, std::size_t i) {
    return i < part.units() ? part.owned(i)
                            : box{std::vector<std::size_t>(part.dims()), std::vector<std::size_t>(part.dims())};
  };
  const box mine_in = box_of(from, me), mine_out = box_of(to, me);
  detail::check_extent(in, mine_in.volume(), "repartition's input");
  detail::check_extent(out, mine_out.volume(), "repartition's output");
  const deadline until = c.until();
  std::vector<S> send_buf, recv_buf;
  // Step s pairs this unit with me + s (it sends there) and me - s (it receives from there): every
  // pair of units meets once, and both ends compute the same overlap, so they agree on whether a
  // frame flows at all.
  for (std::size_t s = 0; s < p; ++s) {
    const std::size_t dst = (me + s) % p, src = (me + p - s) % p;
    const box send_region = mine_in.intersect(box_of(to, dst));
    const box recv_region = box_of(from, src).intersect(mine_out);
    if (s == 0) {  // this unit to itself
      detail::copy_region(send_region, in.data(), mine_in, out.data(), mine_out);
      continue;
    }
    send_buf.resize(send_region.volume());
    recv_buf.resize(recv_region.volume());
    detail::copy_region(send_region, in.data(), mine_in, send_buf.data(), send_region);
    const bool sends = !send_region.empty(), receives = !recv_region.empty();
    if (sends && receives)
      exchange_tensor(t, g[dst], std::span<const S>(send_buf), g[src], std::span<S>(recv_buf), c.message_id, c.step,
                      until);
    else if (sends) send_tensor(t, g[dst], c.message_id, c.step, std::span<const S>(send_buf), until);
    else if (receives) receive_tensor(t, g[src], c.message_id, c.step, std::span<S>(recv_buf), until);
    detail::copy_region(recv_region, recv_buf.data(), recv_region, out.data(), mine_out);
  }
}

}  // namespace f2d2n
