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

#include <f2d2n/comm/schedule.hpp>
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
  /// pipeline's default: the transport's choice (ring_pipeline(), transport/concept.hpp).
  static constexpr std::size_t transport_pipeline = static_cast<std::size_t>(-1);
  /// Pieces a unit sends ahead of what it has received in reduce_scatter, all_gather and
  /// all_reduce, so that the next pieces are on their way while it adds the current one (see
  /// detail::run_rounds). 0: lockstep, each piece exchanged and then added. The sums are the
  /// same, bit for bit, whatever the depth.
  std::size_t pipeline = transport_pipeline;
  /// The schedule of reduce_scatter, all_gather and all_reduce.
  collective_algorithm algorithm = collective_algorithm::automatic;

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

// --- ring and halving-doubling schedules: reduce-scatter, all-gather, all-reduce ---------------

namespace detail {
/// One round of a collective's schedule over one buffer: send [send_lo, send_lo + send_n) to `to`
/// while receiving [recv_lo, recv_lo + recv_n) from `from` (element ranges that do not overlap),
/// added into place (`add`) or received straight into it. Both ends of a link compute the same
/// ranges, so the frames crossing it agree in number and length.
struct round_plan {
  unit_id to = 0, from = 0;
  std::size_t send_lo = 0, send_n = 0, recv_lo = 0, recv_n = 0;
  bool add = false;
};

template <class S>
void add_into(std::span<S> dst, std::span<const S> src) {
  for (std::size_t k = 0; k < dst.size(); ++k) dst[k] += src[k];
}

/// Receives piece `in` from `from` and adds it into place: straight from the transport where it
/// can (shm_transport::receive_add: from the ring, no copy), else through `scratch`.
template <transport T, class S>
void receive_adding(T& t, unit_id from, std::span<S> in, std::vector<S>& scratch, const call_options& c,
                    deadline until) {
  if (receive_add_tensor(t, from, c.message_id, c.step, in, until)) return;
  const std::span<S> landing(scratch.data(), in.size());
  receive_tensor(t, from, c.message_id, c.step, landing, until);
  add_into(in, std::span<const S>(landing));
}

/// Runs `rounds` over `data` in pieces of call_options::chunk_bytes.
///
/// pipeline == 0: lockstep, piece by piece: exchange piece k (transport's exchange: TCP and MPI
/// move both directions from and into the caller's memory), then add it.
///
/// pipeline > 0: the sends run ahead of the receives. Before it waits for piece k of round r, a
/// unit has sent every piece that lockstep would have, and up to `pipeline` more: those of the
/// rest of the round and of the next rounds whose data is final (a piece that forwards what an
/// earlier round receives goes once that receive is added). So while a unit adds piece k, its
/// next pieces are on their way to its neighbour, and its neighbour's are on their way to it.
/// This relies on the transport concept's send returning before the receiver reads (every
/// transport buffers: kernel socket buffers and send_buffer on TCP, the ring and send_buffer on
/// shared memory, send_buffer on MPI); it cannot deadlock, since every send goes no later than it
/// would in lockstep. The sums are the same, bit for bit: only the timing changes.
template <transport T, class S>
void run_rounds(T& t, std::span<S> data, std::span<const round_plan> rounds, const call_options& c, deadline until) {
  const std::size_t chunk = std::max<std::size_t>(1, c.chunk_bytes / sizeof(S));
  const auto pieces = [chunk](std::size_t n) { return (n + chunk - 1) / chunk; };
  const auto piece = [&](std::size_t lo, std::size_t n, std::size_t k) {
    return data.subspan(lo + k * chunk, std::min(chunk, n - k * chunk));
  };
  std::size_t scratch_n = 0;
  for (const auto& r : rounds)
    if (r.add) scratch_n = std::max(scratch_n, std::min(chunk, r.recv_n));
  std::vector<S> scratch(scratch_n);

  const std::size_t depth = c.pipeline == call_options::transport_pipeline ? ring_pipeline(t) : c.pipeline;
  if (depth == 0) {
    for (const auto& r : rounds) {
      const std::size_t sp = pieces(r.send_n), rp = pieces(r.recv_n);
      for (std::size_t k = 0; k < std::max(sp, rp); ++k) {
        const auto in = k < rp ? piece(r.recv_lo, r.recv_n, k) : std::span<S>();
        const std::span<S> landing = r.add ? std::span<S>(scratch.data(), in.size()) : in;
        if (k < sp && k < rp) {
          exchange_tensor(t, r.to, std::span<const S>(piece(r.send_lo, r.send_n, k)), r.from, landing, c.message_id,
                          c.step, until);
        } else if (k < sp) {
          send_tensor(t, r.to, c.message_id, c.step, std::span<const S>(piece(r.send_lo, r.send_n, k)), until);
          continue;
        } else {
          receive_tensor(t, r.from, c.message_id, c.step, landing, until);
        }
        if (r.add) add_into(in, std::span<const S>(landing));
      }
    }
    return;
  }

  // Global piece numbers: round r's sends are send_base[r] .. send_base[r + 1) - 1, its receives
  // recv_base[r] ..
  const std::size_t R = rounds.size();
  std::vector<std::size_t> send_base(R + 1), recv_base(R + 1);
  for (std::size_t r = 0; r < R; ++r) {
    send_base[r + 1] = send_base[r] + pieces(rounds[r].send_n);
    recv_base[r + 1] = recv_base[r] + pieces(rounds[r].recv_n);
  }
  std::size_t sr = 0, sk = 0;  // the next send: round, piece
  // Sends the next pieces while fewer than `allowed` are sent and their data is final, given that
  // the first `received` receives are done (and added).
  const auto send_ready = [&](std::size_t received, std::size_t allowed) {
    for (;;) {
      while (sr < R && sk >= pieces(rounds[sr].send_n)) ++sr, sk = 0;
      if (sr == R || send_base[sr] + sk >= allowed) return;
      const round_plan& r = rounds[sr];
      const std::size_t lo = r.send_lo + sk * chunk, hi = lo + std::min(chunk, r.send_n - sk * chunk);
      for (std::size_t q = sr; q-- > 0;) {  // the latest earlier receive into this piece
        const round_plan& o = rounds[q];
        if (lo < o.recv_lo + o.recv_n && o.recv_lo < hi) {
          if (recv_base[q] + (std::min(hi, o.recv_lo + o.recv_n) - 1 - o.recv_lo) / chunk >= received) return;
          break;
        }
      }
      send_tensor(t, r.to, c.message_id, c.step, std::span<const S>(data.subspan(lo, hi - lo)), until);
      ++sk;
    }
  };
  for (std::size_t r = 0; r < R; ++r) {
    const round_plan& o = rounds[r];
    const std::size_t sp = pieces(o.send_n), rp = pieces(o.recv_n);
    for (std::size_t k = 0; k < rp; ++k) {
      send_ready(recv_base[r] + k, send_base[r] + std::min(k + 1, sp) + depth);
      const auto in = piece(o.recv_lo, o.recv_n, k);
      if (o.add) receive_adding(t, o.from, in, scratch, c, until);
      else receive_tensor(t, o.from, c.message_id, c.step, in, until);
    }
  }
  send_ready(recv_base[R], send_base[R]);
}

/// The vector is `block`-element blocks, split over the group block by block.
template <class S>
std::size_t blocks_of(std::span<S> v, std::size_t block, const char* what) {
  if (block == 0 || v.size() % block != 0)
    throw configuration_error(std::string("f2d2n: ") + what + " has " + std::to_string(v.size()) +
                              " elements, not a whole number of blocks of " + std::to_string(block));
  return v.size() / block;
}

/// Whether a collective over p units runs halving-doubling (else the ring); configuration_error
/// for halving-doubling asked of a group whose size is not a power of two.
inline bool halving_doubling(collective_algorithm a, std::size_t p) {
  if (a == collective_algorithm::halving_doubling && (p & (p - 1)) != 0)
    throw configuration_error("f2d2n: halving-doubling needs a group whose size is a power of two, not " +
                              std::to_string(p) + " (use the ring or automatic)");
  return uses_halving_doubling(a, p);
}

/// Ring rounds over n blocks of `block` elements: at step s, send segment me-lag-s to the right
/// and receive segment me-lag-s-1 from the left (added into place, or stored). The reduce-scatter
/// lags one segment behind the all-gather.
inline void ring_rounds(std::vector<round_plan>& out, const group& g, std::size_t me, std::size_t n, std::size_t block,
                        std::size_t lag, bool add) {
  const std::size_t p = g.size();
  const auto lo = [&](std::size_t seg) { return part_begin(n, p, seg) * block; };
  for (std::size_t s = 0; s + 1 < p; ++s) {
    const std::size_t a = (me + 2 * p - lag - s) % p, b = (a + p - 1) % p;
    out.push_back({g[(me + 1) % p], g[(me + p - 1) % p], lo(a), lo(a + 1) - lo(a), lo(b), lo(b + 1) - lo(b), add});
  }
}

/// The rounds of a reduce-scatter (add) over n blocks of `block` elements: after them, segment me
/// (part me of p) holds the sum. Ring: at step s send segment me-1-s right and add segment me-2-s
/// from the left. Halving-doubling: at distance d = p/2, p/4, .., 1 keep the half of the current
/// range of segments that holds me, send the other half to me xor d and add its copy of the half kept.
inline void reduce_scatter_rounds(std::vector<round_plan>& out, const group& g, std::size_t me, std::size_t n,
                                  std::size_t block, bool hd) {
  const std::size_t p = g.size();
  const auto lo = [&](std::size_t s) { return part_begin(n, p, s) * block; };
  if (!hd) return ring_rounds(out, g, me, n, block, 1, true);
  std::size_t first = 0, last = p;  // the segments this unit still sums: [first, last)
  for (std::size_t d = p / 2; d >= 1; d /= 2) {
    const std::size_t mid = first + d;
    const bool lower = (me & d) == 0;
    const std::size_t keep_a = lower ? first : mid, keep_b = lower ? mid : last;
    const std::size_t send_a = lower ? mid : first, send_b = lower ? last : mid;
    out.push_back(
        {g[me ^ d], g[me ^ d], lo(send_a), lo(send_b) - lo(send_a), lo(keep_a), lo(keep_b) - lo(keep_a), true});
    first = keep_a, last = keep_b;
  }
}

/// The rounds of an all-gather (received into place) over n blocks, from segment me in place.
/// Ring: at step s pass segment me-s right and receive me-1-s from the left. Halving-doubling: at
/// distance d = 1, 2, .., p/2 swap the range gathered so far with me xor d's.
inline void all_gather_rounds(std::vector<round_plan>& out, const group& g, std::size_t me, std::size_t n,
                              std::size_t block, bool hd) {
  const std::size_t p = g.size();
  const auto lo = [&](std::size_t s) { return part_begin(n, p, s) * block; };
  if (!hd) return ring_rounds(out, g, me, n, block, 0, false);
  std::size_t first = me, last = me + 1;
  for (std::size_t d = 1; d < p; d *= 2) {
    const std::size_t theirs = (me & d) == 0 ? last : first - d;
    out.push_back(
        {g[me ^ d], g[me ^ d], lo(first), lo(last) - lo(first), lo(theirs), lo(theirs + d) - lo(theirs), false});
    first = std::min(first, theirs), last = std::max(last, theirs + d);
  }
}

/// The rounds of a collective over n blocks of `block` elements, with the schedule `c` asks for
/// (configuration_error: halving-doubling for a group whose size is not a power of two): a
/// reduce-scatter's (`reduce`), then an all-gather's (`gather`).
inline std::vector<round_plan> collective_rounds(const group& g, std::size_t me, std::size_t n, std::size_t block,
                                                 const call_options& c, bool reduce, bool gather) {
  const bool hd = halving_doubling(c.algorithm, g.size());
  std::vector<round_plan> rounds;
  if (reduce) reduce_scatter_rounds(rounds, g, me, n, block, hd);
  if (gather) all_gather_rounds(rounds, g, me, n, block, hd);
  return rounds;
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
  const auto rounds = detail::collective_rounds(g, me, n, block, c, true, false);
  // Accumulate in a copy of the input (which is read-only).
  std::vector<S> acc(in.begin(), in.end());
  detail::run_rounds(t, std::span<S>(acc), std::span<const detail::round_plan>(rounds), c, c.until());
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
  const auto rounds = detail::collective_rounds(g, me, n, block, c, false, true);
  S* mine = out.data() + part_begin(n, p, me) * block;
  if (in.data() != mine) std::copy(in.begin(), in.end(), mine);  // `in` may be out's own segment
  detail::run_rounds(t, out, std::span<const detail::round_plan>(rounds), c, c.until());
}

/// All-reduce (sum): every member's `data` becomes the sum of every member's `data`: a
/// reduce-scatter then an all-gather in one schedule (the all-gather's first pieces leave while
/// the reduce-scatter's last are still being added), over the ring or, for a group of 4, 8, 16 ..
/// units, halving-doubling (Rabenseifner: 2 log2 p rounds instead of 2 (p - 1), the same bytes);
/// call_options::algorithm chooses. Every unit sends and receives about 2 (p-1)/p of the buffer.
/// In place: partial sums accumulate in `data` and the all-gather receives straight into it (the
/// only buffer is one chunk of scratch). Self-adjoint.
template <transport T, wire_scalar S>
void all_reduce(T& t, const group& g, std::span<S> data, const call_options& c) {
  const std::size_t p = g.size(), me = g.index_of(t.rank()), n = data.size();
  if (p == 1) return;
  const auto rounds = detail::collective_rounds(g, me, n, 1, c, true, true);
  detail::run_rounds(t, data, std::span<const detail::round_plan>(rounds), c, c.until());
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
