// The dot-product (adjoint) checks of every primitive, written once over any transport and run
// by every unit of a cluster: on `local` by tests/comm_test.cpp, across processes over TCP by
// tests/comm_worker.cpp under f2d2n_launch. Sums over units travel through the transport itself
// (an integer-valued all_reduce is checked exactly first, so the sums can be trusted).
#pragma once

#include <f2d2n/comm.hpp>
#include <f2d2n/core/random.hpp>

#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace f2d2n::testing {

inline std::vector<double> random_vector(std::size_t n, std::uint64_t stream) {
  std::vector<double> v(n);
  for (std::size_t k = 0; k < n; ++k) v[k] = random_symmetric(2024, stream, k);
  return v;
}
inline double dot(std::span<const double> a, std::span<const double> b) {
  if (a.size() != b.size())
    throw std::invalid_argument("dot of vectors of " + std::to_string(a.size()) + " and " + std::to_string(b.size()) +
                                " elements");
  return std::inner_product(a.begin(), a.end(), b.begin(), 0.0);
}

/// Runs every primitive's adjoint check on this unit; returns the failures (the same list on every
/// unit). Every unit of the transport's world must call it.
template <transport T>
std::vector<std::string> adjoint_suite(T& t, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  const auto p = t.world_size();
  const auto me = t.rank();
  const group g = group::world(p);
  std::uint64_t step = 0;
  auto call = [&] { return call_options{.message_id = 11, .step = ++step, .timeout = timeout, .chunk_bytes = 64}; };
  std::vector<std::string> failures;
  auto total = [&](double local) {  // the sum over units of a per-unit value
    std::vector<double> v{local};
    all_reduce(t, g, std::span<double>(v), call());
    return v[0];
  };
  auto expect_adjoint = [&](const std::string& what, double fx_y, double x_fty, double norm_fx, double norm_y) {
    if (!(std::abs(fx_y - x_fty) <= 1e-10 * norm_fx * norm_y) || !(norm_fx * norm_y > 0))
      failures.push_back(what + ": <Fx,y> = " + std::to_string(fx_y) + ", <x,F*y> = " + std::to_string(x_fty));
  };

  {  // exact integer sums first: the sums below rely on all_reduce
    std::vector<double> v(37);
    for (std::size_t k = 0; k < v.size(); ++k) v[k] = static_cast<double>(me + k);
    all_reduce(t, g, std::span<double>(v), call());
    for (std::size_t k = 0; k < v.size(); ++k)
      if (v[k] != static_cast<double>(p * (p - 1) / 2 + p * k)) {
        failures.push_back("all_reduce: wrong sum at " + std::to_string(k));
        return failures;
      }
  }
  const std::size_t n = 29;
  {  // broadcast / sum_reduce from the last unit
    const std::size_t root = p - 1;
    const auto x = random_vector(n, 1000);
    std::vector<double> data = me == root ? x : std::vector<double>(n, 0.0);
    broadcast(t, g, root, std::span<double>(data), call());
    const auto y = random_vector(n, me);
    const double fx_y = total(dot(data, y));
    std::vector<double> r = y;
    sum_reduce(t, g, root, std::span<double>(r), call());
    const double x_fty = total(me == root ? dot(x, r) : 0.0);
    expect_adjoint("broadcast/sum_reduce", fx_y, x_fty, std::sqrt(p * dot(x, x)), std::sqrt(total(dot(y, y))));
  }
  {  // all_reduce, self-adjoint
    const auto x = random_vector(n, me), y = random_vector(n, 100 + me);
    std::vector<double> ax = x, ay = y;
    all_reduce(t, g, std::span<double>(ax), call());
    all_reduce(t, g, std::span<double>(ay), call());
    expect_adjoint("all_reduce", total(dot(ax, y)), total(dot(x, ay)), std::sqrt(total(dot(ax, ax))),
                   std::sqrt(total(dot(y, y))));
  }
  {  // reduce_scatter / all_gather
    const auto x = random_vector(n, me);
    std::vector<double> rs(part_size(n, p, me));
    reduce_scatter(t, g, std::span<const double>(x), std::span<double>(rs), call());
    const auto y = random_vector(rs.size(), 200 + me);
    std::vector<double> ag(n);
    all_gather(t, g, std::span<const double>(y), std::span<double>(ag), call());
    expect_adjoint("reduce_scatter/all_gather", total(dot(rs, y)), total(dot(x, ag)), std::sqrt(total(dot(rs, rs))),
                   std::sqrt(total(dot(y, y))));
  }
  {  // reduce_scatter / all_gather by blocks: 7 blocks of 3 (a batch of 3 rows, shard after shard)
    const std::size_t blocks = 7, block = 3;
    const auto x = random_vector(blocks * block, 500 + me);
    std::vector<double> rs(part_size(blocks, p, me) * block);
    reduce_scatter(t, g, std::span<const double>(x), std::span<double>(rs), call(), block);
    const auto y = random_vector(rs.size(), 600 + me);
    std::vector<double> ag(blocks * block);
    all_gather(t, g, std::span<const double>(y), std::span<double>(ag), call(), block);
    expect_adjoint("reduce_scatter/all_gather by blocks", total(dot(rs, y)), total(dot(x, ag)),
                   std::sqrt(total(dot(rs, rs))), std::sqrt(total(dot(y, y))));
    // member i's y lands at blocks [part_begin, part_end) of ag, exactly
    std::vector<double> mine(y);
    std::vector<double> all(blocks * block, 0.0);
    std::copy(mine.begin(), mine.end(), all.begin() + static_cast<std::ptrdiff_t>(part_begin(blocks, p, me) * block));
    all_reduce(t, g, std::span<double>(all), call());
    if (all != ag) failures.push_back("all_gather by blocks: segments are not where the partition puts them");
  }
  {  // scatter / gather from unit 0
    const auto x = random_vector(n, 300);
    std::vector<double> sc(part_size(n, p, me));
    scatter(t, g, 0, me == 0 ? std::span<const double>(x) : std::span<const double>(), std::span<double>(sc), n,
            call());
    const auto y = random_vector(sc.size(), 400 + me);
    std::vector<double> ga(me == 0 ? n : 0);
    gather(t, g, 0, std::span<const double>(y), std::span<double>(ga), n, call());
    expect_adjoint("scatter/gather", total(dot(sc, y)), total(me == 0 ? dot(x, ga) : 0.0), std::sqrt(dot(x, x)),
                   std::sqrt(total(dot(y, y))));
  }
  {  // repartition between a p x 1 and a 1 x p grid of a 7 x 9 tensor, and back
    const cartesian_partition rows({7, 9}, {p, 1}), cols({7, 9}, {1, p});
    const auto x = random_vector(rows.local_size(me), me);
    std::vector<double> rx(cols.local_size(me));
    repartition(t, g, rows, cols, std::span<const double>(x), std::span<double>(rx), call());
    const auto y = random_vector(rx.size(), 500 + me);
    std::vector<double> ry(rows.local_size(me));
    repartition(t, g, cols, rows, std::span<const double>(y), std::span<double>(ry), call());
    expect_adjoint("repartition", total(dot(rx, y)), total(dot(x, ry)), std::sqrt(total(dot(x, x))),
                   std::sqrt(total(dot(y, y))));
  }
  {  // halo exchange on a 1-D split of 4p cells, widths 1 and 2
    const cartesian_partition part({4 * std::size_t{p}}, {p});
    const halo_widths h{{1}, {2}};
    auto x = random_vector(halo_local_size(part, h, me), me);
    const auto x0 = x;
    halo_exchange(t, g, part, h, std::span<double>(x), call());
    auto y = random_vector(x.size(), 600 + me);
    const auto y0 = y;
    halo_exchange_adjoint(t, g, part, h, std::span<double>(y), call());
    expect_adjoint("halo_exchange", total(dot(x, y0)), total(dot(x0, y)), std::sqrt(total(dot(x, x))),
                   std::sqrt(total(dot(y0, y0))));
  }
  return failures;
}

}  // namespace f2d2n::testing
