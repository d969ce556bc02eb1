// f2d2n/comm/primitives.hpp: parallel data movement as linear operators, each forward operator
// beside its adjoint (DistDL, Hewett & Grady 2020), written once over any transport.
//
//   operator                          adjoint
//   broadcast   (root -> all)         sum_reduce  (all -> root, summed)
//   sum_reduce                        broadcast
//   all_reduce  (sum, ring)           all_reduce  (self-adjoint)
//   reduce_scatter                    all_gather
//   all_gather                        reduce_scatter
//   scatter     (root -> segments)    gather
//   gather                            scatter
//
// A group is an ordered list of units; "index" means a position in it. Vectors are split over a
// group by balanced decomposition (core/partition.hpp): segment i is part i of p. Every frame of
// one call carries the call's message id and step; frames between two units stay in order, so a
// collective needs one id. Every receive has the call's deadline: a dead peer is a peer_error and a
// silent one a timeout_error on every unit that waits for it, naming the message and the step.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/core/partition.hpp>
#include <f2d2n/transport/concept.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace f2d2n {

/// Units taking part in a collective, in order. Every member must call it with the same group.
struct group {
  std::vector<unit_id> units;

  /// All units 0 .. world_size - 1.
  [[nodiscard]] static group world(unit_id world_size) {
    group g;
    for (unit_id r = 0; r < world_size; ++r) g.units.push_back(r);
    return g;
  }
  [[nodiscard]] std::size_t size() const noexcept { return units.size(); }
  [[nodiscard]] unit_id operator[](std::size_t i) const { return units[i]; }
  /// Position of `rank` in the group; configuration_error if it is not a member.
  [[nodiscard]] std::size_t index_of(unit_id rank) const {
    const auto it = std::find(units.begin(), units.end(), rank);
    if (it == units.end())
      throw configuration_error("f2d2n: unit " + std::to_string(rank) +
                                " is not a member of the group it communicates in");
    return static_cast<std::size_t>(it - units.begin());
  }
};

/// What identifies one collective call on the wire, and how long a unit waits in it.
struct call_options {
  std::uint32_t message_id = 0;
  std::uint64_t step = 0;
  std::chrono::milliseconds timeout{30000};
  /// Largest piece a ring step sends at once: big buffers stream in pieces of this size.
  std::size_t chunk_bytes = std::size_t{1} << 18;

  [[nodiscard]] deadline until() const { return clock::now() + timeout; }
};

namespace detail {
inline void check_root(const group& g, std::size_t root) {
  if (root >= g.size())
    throw configuration_error("f2d2n: root index " + std::to_string(root) + " is outside a group of " +
                              std::to_string(g.size()));
}
template <class S>
void check_extent(std::span<S> s, std::size_t n, const char* what) {
  if (s.size() != n)
    throw configuration_error(std::string("f2d2n: ") + what + " has " + std::to_string(s.size()) +
                              " elements, expected " + std::to_string(n));
}
/// Position relative to the root, so that the root is 0 in tree algorithms.
inline std::size_t relative(std::size_t index, std::size_t root, std::size_t p) { return (index + p - root) % p; }
}  // namespace detail

// --- broadcast and its adjoint, sum_reduce: binomial trees rooted at `root` --------------------

/// Broadcast: every member's `data` becomes the root's. (Adjoint: sum_reduce.)
template <transport T, wire_scalar S>
void broadcast(T& t, const group& g, std::size_t root, std::span<S> data, const call_options& c) {
  detail::check_root(g, root);
  const std::size_t p = g.size(), me = g.index_of(t.rank()), rel = detail::relative(me, root, p);
  const deadline until = c.until();
  // Receive from the parent (the member that differs in rel's lowest set bit), then send down.
  std::size_t mask = 1;
  while (mask < p) {
    if (rel & mask) {
      receive_tensor(t, g[(rel - mask + root) % p], c.message_id, c.step, data, until);
      break;
    }
    mask <<= 1;
  }
  for (mask >>= 1; mask > 0; mask >>= 1)
    if (rel + mask < p)
      send_tensor(t, g[(rel + mask + root) % p], c.message_id, c.step, std::span<const S>(data), until);
}

/// Sum-reduce: the root's `data` becomes the sum of every member's `data`. Other members' `data`
/// is used as scratch (it ends holding partial sums). (Adjoint: broadcast.)
template <transport T, wire_scalar S>
void sum_reduce(T& t, const group& g, std::size_t root, std::span<S> data, const call_options& c) {
  detail::check_root(g, root);
  const std::size_t p = g.size(), me = g.index_of(t.rank()), rel = detail::relative(me, root, p);
  const deadline until = c.until();
  std::vector<S> incoming(data.size());
  // The mirror image of broadcast: receive from children in increasing distance, then send up.
  for (std::size_t mask = 1; mask < p; mask <<= 1) {
    if (rel & mask) {
      send_tensor(t, g[(rel - mask + root) % p], c.message_id, c.step, std::span<const S>(data), until);
      return;
    }
    if (rel + mask < p) {
      receive_tensor(t, g[(rel + mask + root) % p], c.message_id, c.step, std::span<S>(incoming), until);
      for (std::size_t k = 0; k < data.size(); ++k) data[k] += incoming[k];
    }
  }
}

// --- ring reduce-scatter and all-gather; all-reduce is one then the other ----------------------

namespace detail {
/// One ring step: send data[send_seg] to the right neighbour while receiving the left
/// neighbour's piece of recv_seg, in chunks; `combine(dst, src)` adds what arrived into place.
/// Without a combine (Direct), pieces are received straight into recv_part: no scratch, no copy.
struct direct_t {};
template <transport T, class S, class Combine>
void ring_step(T& t, const group& g, std::size_t me, std::span<const S> send_part, std::span<S> recv_part,
               std::vector<S>& scratch, const call_options& c, deadline until, Combine combine) {
  constexpr bool direct = std::is_same_v<Combine, direct_t>;
  const std::size_t p = g.size();
  const unit_id right = g[(me + 1) % p], left = g[(me + p - 1) % p];
  const std::size_t chunk = std::max<std::size_t>(1, c.chunk_bytes / sizeof(S));
  // How many frames cross a link depends only on the segment crossing it, so the two ends agree.
  const std::size_t send_pieces = (send_part.size() + chunk - 1) / chunk;
  const std::size_t recv_pieces = (recv_part.size() + chunk - 1) / chunk;
  for (std::size_t k = 0; k < std::max(send_pieces, recv_pieces); ++k) {
    const auto out = k < send_pieces ? send_part.subspan(k * chunk, std::min(chunk, send_part.size() - k * chunk))
                                     : std::span<const S>();
    const auto in =
        k < recv_pieces ? recv_part.subspan(k * chunk, std::min(chunk, recv_part.size() - k * chunk)) : std::span<S>();
    std::span<S> landing = direct ? in : std::span<S>(scratch.data(), in.size());
    if (k < send_pieces && k < recv_pieces) {
      exchange_tensor(t, right, out, left, landing, c.message_id, c.step, until);
    } else if (k < send_pieces) {
      send_tensor(t, right, c.message_id, c.step, out, until);
      continue;
    } else {
      receive_tensor(t, left, c.message_id, c.step, landing, until);
    }
    if constexpr (!direct) combine(in, std::span<const S>(landing));
  }
}
}  // namespace detail

namespace detail {
/// The reduce-scatter ring in `data` itself: at step s, send the partial sum of segment me-1-s
/// right, receive segment me-2-s from the left and add it in. Segment me is then complete here;
/// the others hold partial sums.
template <transport T, class S>
void ring_reduce_scatter_in_place(T& t, const group& g, std::size_t me, std::span<S> data, const call_options& c,
                                  std::size_t block = 1) {
  const std::size_t p = g.size(), n = data.size() / block;
  const deadline until = c.until();
  auto seg = [&](std::size_t s) { return data.subspan(part_begin(n, p, s) * block, part_size(n, p, s) * block); };
  std::vector<S> scratch(std::min(part_size(n, p, 0) * block, std::max<std::size_t>(1, c.chunk_bytes / sizeof(S))));
  for (std::size_t s = 0; s + 1 < p; ++s)
    ring_step(t, g, me, std::span<const S>(seg((me + 2 * p - 1 - s) % p)), seg((me + 2 * p - 2 - s) % p), scratch, c,
              until, [](std::span<S> dst, std::span<const S> src) {
                for (std::size_t k = 0; k < dst.size(); ++k) dst[k] += src[k];
              });
}
}  // namespace detail

namespace detail {
/// The vector is `block`-element blocks, split over the group block by block.
template <class S>
std::size_t blocks_of(std::span<S> v, std::size_t block, const char* what) {
  if (block == 0 || v.size() % block != 0)
    throw configuration_error(std::string("f2d2n: ") + what + " has " + std::to_string(v.size()) +
                              " elements, not a whole number of blocks of " + std::to_string(block));
  return v.size() / block;
}
}  // namespace detail

/// Reduce-scatter: member i's `out` becomes segment i of the sum of every member's `in`. The
/// vector is split by balanced decomposition of its blocks of `block` elements (default: single
/// elements), so that e.g. the column shards of a batch, stored shard after shard, stay whole.
/// (Adjoint: all_gather with the same block.)
template <transport T, wire_scalar S>
void reduce_scatter(T& t, const group& g, std::span<const S> in, std::span<S> out, const call_options& c,
                    std::size_t block = 1) {
  const std::size_t p = g.size(), me = g.index_of(t.rank()), n = detail::blocks_of(in, block, "reduce_scatter's input");
  detail::check_extent(out, part_size(n, p, me) * block, "reduce_scatter's output");
  // Accumulate in a copy of the input (which is read-only).
  std::vector<S> acc(in.begin(), in.end());
  detail::ring_reduce_scatter_in_place(t, g, me, std::span<S>(acc), c, block);
  std::copy_n(acc.data() + part_begin(n, p, me) * block, part_size(n, p, me) * block, out.data());
}

/// All-gather: every member's `out` becomes the concatenation of every member's `in` (member i
/// contributes segment i of out's blocks of `block` elements split over the group).
/// (Adjoint: reduce_scatter with the same block.)
template <transport T, wire_scalar S>
void all_gather(T& t, const group& g, std::span<const S> in, std::span<S> out, const call_options& c,
                std::size_t block = 1) {
  const std::size_t p = g.size(), me = g.index_of(t.rank()), n = detail::blocks_of(out, block, "all_gather's output");
  detail::check_extent(in, part_size(n, p, me) * block, "all_gather's input");
  const deadline until = c.until();
  const auto begin = [&](std::size_t s) { return part_begin(n, p, s) * block; };
  const auto size = [&](std::size_t s) { return part_size(n, p, s) * block; };
  S* mine = out.data() + begin(me);
  if (in.data() != mine) std::copy(in.begin(), in.end(), mine);  // all_reduce passes its own segment
  std::vector<S> none;
  // At step s, pass segment me-s on to the right, receive segment me-1-s from the left, straight
  // into its place in out.
  for (std::size_t s = 0; s + 1 < p; ++s) {
    const std::size_t send_seg = (me + p - s) % p, recv_seg = (me + 2 * p - 1 - s) % p;
    detail::ring_step(t, g, me, std::span<const S>(out.data() + begin(send_seg), size(send_seg)),
                      std::span<S>(out.data() + begin(recv_seg), size(recv_seg)), none, c, until, detail::direct_t{});
  }
}

/// All-reduce (sum): every member's `data` becomes the sum of every member's `data`. A ring:
/// reduce-scatter then all-gather, each streaming in chunks of call_options::chunk_bytes; every
/// unit sends and receives 2 (p-1)/p of the buffer. In place: partial sums accumulate in `data`
/// and the all-gather receives straight into it (the only buffer is one chunk of scratch).
/// Self-adjoint.
template <transport T, wire_scalar S>
void all_reduce(T& t, const group& g, std::span<S> data, const call_options& c) {
  const std::size_t p = g.size(), me = g.index_of(t.rank()), n = data.size();
  if (p == 1) return;
  detail::ring_reduce_scatter_in_place(t, g, me, data, c);
  const auto mine = data.subspan(part_begin(n, p, me), part_size(n, p, me));
  all_gather(t, g, std::span<const S>(mine), data, c);
}

// --- scatter and gather: the root talks to every member directly ------------------------------

/// Scatter: member i's `out` becomes segment i of the root's `in` (in is read on the root only;
/// other members may pass an empty span). (Adjoint: gather.)
template <transport T, wire_scalar S>
void scatter(T& t, const group& g, std::size_t root, std::span<const S> in, std::span<S> out, std::size_t n,
             const call_options& c) {
  detail::check_root(g, root);
  const std::size_t p = g.size(), me = g.index_of(t.rank());
  detail::check_extent(out, part_size(n, p, me), "scatter's output");
  const deadline until = c.until();
  if (me == root) {
    detail::check_extent(in, n, "scatter's input on the root");
    for (std::size_t i = 0; i < p; ++i) {
      const auto part = in.subspan(part_begin(n, p, i), part_size(n, p, i));
      if (i == me) std::copy(part.begin(), part.end(), out.begin());
      else send_tensor(t, g[i], c.message_id, c.step, part, until);
    }
  } else {
    receive_tensor(t, g[root], c.message_id, c.step, out, until);
  }
}

/// Gather: the root's `out` becomes the concatenation of every member's `in` (segment i from
/// member i; out is written on the root only). (Adjoint: scatter.)
template <transport T, wire_scalar S>
void gather(T& t, const group& g, std::size_t root, std::span<const S> in, std::span<S> out, std::size_t n,
            const call_options& c) {
  detail::check_root(g, root);
  const std::size_t p = g.size(), me = g.index_of(t.rank());
  detail::check_extent(in, part_size(n, p, me), "gather's input");
  const deadline until = c.until();
  if (me == root) {
    detail::check_extent(out, n, "gather's output on the root");
    for (std::size_t i = 0; i < p; ++i) {
      const auto part = out.subspan(part_begin(n, p, i), part_size(n, p, i));
      if (i == me) std::copy(in.begin(), in.end(), part.begin());
      else receive_tensor(t, g[i], c.message_id, c.step, part, until);
    }
  } else {
    send_tensor(t, g[root], c.message_id, c.step, in, until);
  }
}

}  // namespace f2d2n
