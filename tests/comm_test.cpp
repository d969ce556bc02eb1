// Comm area: every primitive passes the dot-product (adjoint) test in float64 for world sizes 1 to
// 8 with uneven extents, gives exact values on small cases, and fails with typed errors (dead
// peer, silent peer, bad frames) instead of hanging. Transport: local (units are threads).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "comm_suite.hpp"
#include "counting_transport.hpp"

#include <f2d2n/comm.hpp>
#include <f2d2n/core/random.hpp>
#include <f2d2n/transport/local.hpp>

#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace nn = f2d2n;
using nn::unit_id;

namespace {

using nn::testing::dot;
using nn::testing::random_vector;
double norm2(std::span<const double> a) { return dot(a, a); }

/// Runs f(transport) on every unit of a local cluster of p units; f returns a double per unit.
template <class F>
std::vector<double> on_cluster(unit_id p, F f) {
  std::vector<double> result(p);
  nn::local_cluster cluster(p);
  cluster.run([&](nn::local_transport& t) { result[t.rank()] = f(t); });
  return result;
}
double sum(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0); }

/// |<F x, y> - <x, F* y>| <= tol ||F x|| ||y||
void check_adjoint(double fx_y, double x_fty, double norm_fx, double norm_y) {
  INFO("<Fx,y> = ", fx_y, ", <x,F*y> = ", x_fty);
  CHECK(std::abs(fx_y - x_fty) <= 1e-10 * norm_fx * norm_y);
  CHECK(norm_fx * norm_y > 0);  // the test saw real data
}

const nn::call_options call{.message_id = 7, .step = 3, .timeout = std::chrono::seconds(20), .chunk_bytes = 40};

}  // namespace

TEST_CASE("partition: balanced decomposition") {
  CHECK(nn::part_size(10, 3, 0) == 4);
  CHECK(nn::part_size(10, 3, 1) == 3);
  CHECK(nn::part_size(10, 3, 2) == 3);
  CHECK(nn::part_begin(10, 3, 2) == 7);
  CHECK(nn::part_size(2, 5, 1) == 1);
  CHECK(nn::part_size(2, 5, 2) == 0);
  for (std::size_t n : {0u, 1u, 7u, 10u, 23u})
    for (std::size_t p = 1; p <= 8; ++p) {
      std::size_t total = 0;
      for (std::size_t i = 0; i < p; ++i) {
        CHECK(nn::part_begin(n, p, i) == total);
        for (std::size_t k = total; k < total + nn::part_size(n, p, i); ++k) CHECK(nn::part_of(n, p, k) == i);
        total += nn::part_size(n, p, i);
      }
      CHECK(total == n);
    }
}

TEST_CASE("grid types number units row-major and make the same partition as run-time shapes") {
  using g23 = nn::grid<2, 3>;
  static_assert(g23::size == 6 && g23::rank == 2);
  CHECK(g23::coordinates(5) == std::array<std::size_t, 2>{1, 2});
  CHECK(g23::coordinates(3) == std::array<std::size_t, 2>{1, 0});
  for (std::size_t i = 0; i < g23::size; ++i) CHECK(g23::index(g23::coordinates(i)) == i);
  const auto typed = nn::cartesian_partition::of<g23>({10, 7});
  const nn::cartesian_partition runtime({10, 7}, {2, 3});
  REQUIRE(typed.units() == 6);
  for (std::size_t i = 0; i < 6; ++i) {
    CHECK(typed.owned(i).lo == runtime.owned(i).lo);
    CHECK(typed.owned(i).hi == runtime.owned(i).hi);
    const auto c = g23::coordinates(i);
    CHECK(runtime.coordinates(i) == std::vector<std::size_t>(c.begin(), c.end()));
  }
  CHECK(runtime.owned(5).lo == std::vector<std::size_t>{5, 5});  // rows 5..9, columns 5..6
  CHECK(runtime.owned(5).hi == std::vector<std::size_t>{10, 7});
  CHECK_THROWS_AS(nn::cartesian_partition({10, 7}, {2}), nn::configuration_error);
  CHECK_THROWS_AS(nn::cartesian_partition({10}, {0}), nn::configuration_error);
}

TEST_CASE("broadcast and sum_reduce are adjoint; broadcast copies exactly") {
  const std::size_t n = 13;
  for (unit_id p = 1; p <= 8; ++p)
    for (std::size_t root : {std::size_t{0}, std::size_t{p - 1}, std::size_t{p / 2}}) {
      CAPTURE(p);
      CAPTURE(root);
      const auto x = random_vector(n, 1000);
      const auto g = nn::group::world(p);
      // <F x, y>: broadcast x from the root, each unit takes <x, y_i>.
      const double fx_y = sum(on_cluster(p, [&](nn::local_transport& t) {
        std::vector<double> data(n, t.rank() == g[root] ? 0.0 : -1.0);
        if (t.rank() == g[root]) data = x;
        nn::broadcast(t, g, root, std::span<double>(data), call);
        CHECK(data == x);
        return dot(data, random_vector(n, t.rank()));
      }));
      // <x, F* y>: sum-reduce the y_i to the root.
      const double x_fty = sum(on_cluster(p, [&](nn::local_transport& t) {
        auto data = random_vector(n, t.rank());
        nn::sum_reduce(t, g, root, std::span<double>(data), call);
        return t.rank() == g[root] ? dot(x, data) : 0.0;
      }));
      double ny = 0;
      for (unit_id r = 0; r < p; ++r) ny += norm2(random_vector(n, r));
      check_adjoint(fx_y, x_fty, std::sqrt(p * norm2(x)), std::sqrt(ny));
    }
}

TEST_CASE("the dot-product test catches a wrong adjoint") {
  // Pretend broadcast is its own adjoint: <x, B y> sees only the root's y, not the sum of all.
  const unit_id p = 4;
  const std::size_t n = 9;
  const auto g = nn::group::world(p);
  const auto x = random_vector(n, 1000);
  const double fx_y = sum(on_cluster(p, [&](nn::local_transport& t) {
    std::vector<double> data = x;
    nn::broadcast(t, g, 0, std::span<double>(data), call);
    return dot(data, random_vector(n, t.rank()));
  }));
  const double wrong = sum(on_cluster(p, [&](nn::local_transport& t) {
    auto data = random_vector(n, t.rank());
    nn::broadcast(t, g, 0, std::span<double>(data), call);
    return t.rank() == 0 ? dot(x, data) : 0.0;
  }));
  double ny = 0;
  for (unit_id r = 0; r < p; ++r) ny += norm2(random_vector(n, r));
  CHECK(std::abs(fx_y - wrong) > 1e-10 * std::sqrt(p * norm2(x)) * std::sqrt(ny));
}

TEST_CASE("all_reduce is self-adjoint and sums exactly, in chunks, for uneven extents") {
  for (unit_id p = 1; p <= 8; ++p)
    for (std::size_t n : {std::size_t{1}, std::size_t{5}, std::size_t{37}}) {
      CAPTURE(p);
      CAPTURE(n);
      const auto g = nn::group::world(p);
      // <A x, y> where x_i, y_i live on unit i.
      const double ax_y = sum(on_cluster(p, [&](nn::local_transport& t) {
        auto data = random_vector(n, t.rank());
        nn::all_reduce(t, g, std::span<double>(data), call);
        return dot(data, random_vector(n, 100 + t.rank()));
      }));
      const double x_ay = sum(on_cluster(p, [&](nn::local_transport& t) {
        auto data = random_vector(n, 100 + t.rank());
        nn::all_reduce(t, g, std::span<double>(data), call);
        return dot(random_vector(n, t.rank()), data);
      }));
      std::vector<double> sx(n, 0.0);
      double ny = 0;
      for (unit_id r = 0; r < p; ++r) {
        const auto xr = random_vector(n, r);
        for (std::size_t k = 0; k < n; ++k) sx[k] += xr[k];
        ny += norm2(random_vector(n, 100 + r));
      }
      check_adjoint(ax_y, x_ay, std::sqrt(p * norm2(sx)), std::sqrt(ny));
      // Exact values: unit i holds i + k; the sum is p (p - 1) / 2 + p k on every unit.
      on_cluster(p, [&](nn::local_transport& t) {
        std::vector<float> data(n);
        for (std::size_t k = 0; k < n; ++k) data[k] = static_cast<float>(t.rank() + k);
        nn::all_reduce(t, g, std::span<float>(data), call);
        for (std::size_t k = 0; k < n; ++k) CHECK(data[k] == static_cast<float>(p * (p - 1) / 2 + p * k));
        return 0.0;
      });
    }
}


TEST_CASE("every schedule and pipeline depth sums the same, bit for bit, and sends what the schema states") {
  using algo = nn::collective_algorithm;
  for (unit_id p = 1; p <= 8; ++p) {
    CAPTURE(p);
    const auto g = nn::group::world(p);
    const bool power_of_two = (p & (p - 1)) == 0;
    nn::local_cluster cluster(p);
    cluster.run([&](nn::local_transport& lt) {
      nn::testing::counting_transport t{lt};
      std::uint64_t step = 0;
      for (std::size_t n : {std::size_t{1}, std::size_t{6}, std::size_t{37}, std::size_t{300}})
        for (std::size_t chunk : {std::size_t{8}, std::size_t{40}, std::size_t{1} << 18})
          for (algo a : {algo::ring, algo::halving_doubling, algo::automatic}) {
            if (a == algo::halving_doubling && !power_of_two) continue;
            CAPTURE(n);
            CAPTURE(chunk);
            CAPTURE(static_cast<int>(a));
            std::vector<double> lockstep;
            for (std::size_t depth : {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{5}, std::size_t{1000}}) {
              CAPTURE(depth);
              auto data = random_vector(n, t.rank());
              const nn::call_options c{.message_id = 9, .step = ++step, .timeout = std::chrono::seconds(20),
                                       .chunk_bytes = chunk, .pipeline = depth, .algorithm = a};
              const std::size_t before = t.sent;
              nn::all_reduce(t, g, std::span<double>(data), c);
              CHECK(t.sent - before == sizeof(double) * nn::all_reduce_sends(n, p, t.rank(), a));
              if (depth == 0) {
                lockstep = data;
                for (std::size_t k = 0; k < n; ++k) {  // the sum, up to rounding
                  double s = 0;
                  for (unit_id r = 0; r < p; ++r) s += random_vector(n, r)[k];
                  CHECK(std::abs(data[k] - s) <= 1e-12 * p);
                }
              } else {
                CHECK(std::memcmp(data.data(), lockstep.data(), n * sizeof(double)) == 0);
              }
              // Every unit ends with the same bits: unit 0's are broadcast and compared.
              std::vector<double> first = data;
              nn::broadcast(t, g, 0, std::span<double>(first), c);
              CHECK(std::memcmp(data.data(), first.data(), n * sizeof(double)) == 0);
              // reduce_scatter and all_gather over blocks of 3 with the same options: exact values.
              std::vector<double> x(3 * n), seg(3 * nn::part_size(n, p, t.rank())), all(3 * n);
              for (std::size_t k = 0; k < x.size(); ++k) x[k] = static_cast<double>(t.rank() * 1000 + k);
              nn::reduce_scatter(t, g, std::span<const double>(x), std::span<double>(seg), c, 3);
              const std::size_t lo = 3 * nn::part_begin(n, p, t.rank());
              for (std::size_t k = 0; k < seg.size(); ++k)
                CHECK(seg[k] == static_cast<double>(1000 * p * (p - 1) / 2 + p * (lo + k)));
              const std::size_t gathered = t.sent;
              nn::all_gather(t, g, std::span<const double>(seg), std::span<double>(all), c, 3);
              CHECK(t.sent - gathered == sizeof(double) * nn::all_gather_sends(n, p, t.rank(), 3, a));
              for (std::size_t k = 0; k < all.size(); ++k)
                CHECK(all[k] == static_cast<double>(1000 * p * (p - 1) / 2 + p * k));
            }
          }
    });
  }
  nn::local_cluster three(3);
  CHECK_THROWS_WITH_AS(three.run([&](nn::local_transport& t) {
    std::vector<double> d(5);
    nn::all_reduce(t, nn::group::world(3), std::span<double>(d),
                   nn::call_options{.algorithm = nn::collective_algorithm::halving_doubling});
  }),
                       doctest::Contains("power of two, not 3"), nn::configuration_error);
}

TEST_CASE("halving-doubling in a sub-group listed out of order, while other units do something else") {
  nn::local_cluster cluster(6);
  const nn::group g{{5, 2, 0, 3}};  // index 0 is unit 5, index 1 unit 2, ..
  cluster.run([&](nn::local_transport& t) {
    if (t.rank() == 1 || t.rank() == 4) return;
    const std::size_t me = g.index_of(t.rank());
    for (std::size_t depth : {std::size_t{0}, std::size_t{2}}) {
      const nn::call_options c{.message_id = 5, .step = depth, .timeout = std::chrono::seconds(20), .chunk_bytes = 24,
                               .pipeline = depth, .algorithm = nn::collective_algorithm::halving_doubling};
      std::vector<double> data(11);
      for (std::size_t k = 0; k < data.size(); ++k) data[k] = static_cast<double>(10 * me + k);
      nn::all_reduce(t, g, std::span<double>(data), c);
      for (std::size_t k = 0; k < data.size(); ++k) CHECK(data[k] == static_cast<double>(60 + 4 * k));
      // Blocks of 2: index i gets blocks part_begin(7, 4, i) .. of the sum.
      std::vector<double> x(14), seg(2 * nn::part_size(7, 4, me)), all(14);
      for (std::size_t k = 0; k < x.size(); ++k) x[k] = static_cast<double>(me + k);
      nn::reduce_scatter(t, g, std::span<const double>(x), std::span<double>(seg), c, 2);
      for (std::size_t k = 0; k < seg.size(); ++k)
        CHECK(seg[k] == static_cast<double>(6 + 4 * (2 * nn::part_begin(7, 4, me) + k)));
      nn::all_gather(t, g, std::span<const double>(seg), std::span<double>(all), c, 2);
      for (std::size_t k = 0; k < all.size(); ++k) CHECK(all[k] == static_cast<double>(6 + 4 * k));
    }
  });
}

TEST_CASE("reduce_scatter and all_gather are adjoint") {
  for (unit_id p = 1; p <= 8; ++p)
    for (std::size_t n : {std::size_t{3}, std::size_t{23}}) {
      CAPTURE(p);
      CAPTURE(n);
      const auto g = nn::group::world(p);
      // F = reduce_scatter: x_i (length n) on every unit -> segment i of the sum on unit i.
      const double fx_y = sum(on_cluster(p, [&](nn::local_transport& t) {
        const auto x = random_vector(n, t.rank());
        std::vector<double> out(nn::part_size(n, p, t.rank()));
        nn::reduce_scatter(t, g, std::span<const double>(x), std::span<double>(out), call);
        return dot(out, random_vector(out.size(), 200 + t.rank()));
      }));
      // F* = all_gather: y_i (segment i) -> the whole vector on every unit.
      const double x_fty = sum(on_cluster(p, [&](nn::local_transport& t) {
        const auto y = random_vector(nn::part_size(n, p, t.rank()), 200 + t.rank());
        std::vector<double> out(n);
        nn::all_gather(t, g, std::span<const double>(y), std::span<double>(out), call);
        for (unit_id r = 0; r < p; ++r) {  // exact: segment r is unit r's y
          const auto yr = random_vector(nn::part_size(n, p, r), 200 + r);
          for (std::size_t k = 0; k < yr.size(); ++k) CHECK(out[nn::part_begin(n, p, r) + k] == yr[k]);
        }
        return dot(random_vector(n, t.rank()), out);
      }));
      std::vector<double> sx(n, 0.0);
      double ny = 0;
      for (unit_id r = 0; r < p; ++r) {
        const auto xr = random_vector(n, r);
        for (std::size_t k = 0; k < n; ++k) sx[k] += xr[k];
        ny += norm2(random_vector(nn::part_size(n, p, r), 200 + r));
      }
      check_adjoint(fx_y, x_fty, std::sqrt(norm2(sx)), std::sqrt(ny));
    }
}

TEST_CASE("scatter and gather are adjoint and move segments exactly") {
  const std::size_t n = 23;
  for (unit_id p = 1; p <= 8; ++p)
    for (std::size_t root : {std::size_t{0}, std::size_t{p - 1}}) {
      CAPTURE(p);
      CAPTURE(root);
      const auto g = nn::group::world(p);
      const auto x = random_vector(n, 300);
      const double fx_y = sum(on_cluster(p, [&](nn::local_transport& t) {
        std::vector<double> out(nn::part_size(n, p, t.rank()));
        const bool is_root = t.rank() == g[root];
        nn::scatter(t, g, root, is_root ? std::span<const double>(x) : std::span<const double>(),
                    std::span<double>(out), n, call);
        for (std::size_t k = 0; k < out.size(); ++k) CHECK(out[k] == x[nn::part_begin(n, p, t.rank()) + k]);
        return dot(out, random_vector(out.size(), 400 + t.rank()));
      }));
      const double x_fty = sum(on_cluster(p, [&](nn::local_transport& t) {
        const auto y = random_vector(nn::part_size(n, p, t.rank()), 400 + t.rank());
        const bool is_root = t.rank() == g[root];
        std::vector<double> out(is_root ? n : 0);
        nn::gather(t, g, root, std::span<const double>(y), std::span<double>(out), n, call);
        return is_root ? dot(x, out) : 0.0;
      }));
      double ny = 0;
      for (unit_id r = 0; r < p; ++r) ny += norm2(random_vector(nn::part_size(n, p, r), 400 + r));
      check_adjoint(fx_y, x_fty, std::sqrt(norm2(x)), std::sqrt(ny));
    }
}

TEST_CASE("collectives run in a sub-group while other units do something else") {
  nn::local_cluster cluster(5);
  const nn::group g{{4, 1, 3}};
  cluster.run([&](nn::local_transport& t) {
    if (t.rank() == 0 || t.rank() == 2) return;
    std::vector<double> data(10, static_cast<double>(t.rank()));
    nn::all_reduce(t, g, std::span<double>(data), call);
    for (double v : data) CHECK(v == 8.0);
    std::vector<double> b(4, t.rank() == 3 ? 42.0 : 0.0);
    nn::broadcast(t, g, 2, std::span<double>(b), call);  // index 2 of the group is unit 3
    for (double v : b) CHECK(v == 42.0);
  });
  nn::local_cluster other(2);
  CHECK_THROWS_AS(other.run([&](nn::local_transport& t) {
    std::vector<double> d(3);
    nn::all_reduce(t, nn::group{{0, 5}}, std::span<double>(d), call);
  }),
                  nn::configuration_error);
}

TEST_CASE("a dead unit makes every other unit fail with a typed error, fast") {
  for (unit_id p : {2u, 3u, 5u}) {
    CAPTURE(p);
    nn::local_cluster cluster(p);
    const auto start = nn::clock::now();
    auto errors = cluster.run_collect([&](nn::local_transport& t) {
      if (t.rank() == 1) throw std::runtime_error("unit 1 died");
      std::vector<double> data(100, 1.0);
      nn::all_reduce(t, nn::group::world(p), std::span<double>(data), call);  // deadline 20 s
    });
    CHECK(nn::clock::now() - start < std::chrono::seconds(5));
    for (unit_id r = 0; r < p; ++r) {
      CAPTURE(r);
      REQUIRE(errors[r]);
      if (r == 1) continue;
      try {
        std::rethrow_exception(errors[r]);
      } catch (const nn::comm_error& e) {
        CHECK(e.where().unit == r);
        CHECK(e.where().message_id == 7);
        CHECK(e.where().step == 3);
        CHECK(std::string(e.what()).find("message 7, step 3") != std::string::npos);
      } catch (...) {
        FAIL("unit ", r, " failed with something else than a comm_error");
      }
    }
  }
}

TEST_CASE("a unit that fails tells its peers why; bystanders pass the origin on, so every unit names it") {
  // A ring of 4: unit 3 receives from unit 2, unit 0 from unit 3, unit 1 from unit 0. Only unit 3
  // hears from unit 2 itself; units 0 and 1 learn of it through a bystander's goodbye. Measured
  // before goodbyes carried a reason: unit 0 said "peer 3 has shut down", naming a bystander.
  const std::string cause = "unit 2's data loader failed at step 3";
  nn::local_cluster cluster(4);
  auto errors = cluster.run_collect([&](nn::local_transport& t) {
    std::vector<double> data(100, 1.0);
    nn::all_reduce(t, nn::group::world(4), std::span<double>(data), call);  // a first step that works
    if (t.rank() == 2) throw std::runtime_error(cause);                     // run_collect shuts it down with the reason
    nn::all_reduce(t, nn::group::world(4), std::span<double>(data), call);
  });
  for (unit_id r = 0; r < 4; ++r) {
    CAPTURE(r);
    REQUIRE(errors[r]);
    const auto reason = nn::shutdown_reason_of(r, errors[r]);
    CHECK((reason == nn::shutdown_reason{2, cause}));
    CHECK(nn::is_bystander(r, reason) == (r != 2));
    if (r == 2) continue;
    try {
      std::rethrow_exception(errors[r]);
    } catch (const nn::peer_error& e) {
      INFO(e.what());
      CHECK(e.origin() == 2u);
      CHECK(std::string(e.what()).find("the peer has shut down because unit 2 failed first: " + cause) !=
            std::string::npos);
      CHECK(e.where().unit == r);
    } catch (...) {
      FAIL("unit ", r, " failed with something else than a peer_error");
    }
  }
}

TEST_CASE("a silent unit is a timeout_error within the deadline plus a margin") {
  nn::local_cluster cluster(3);
  const auto timeout = std::chrono::milliseconds(300);
  nn::call_options c = call;
  c.timeout = timeout;
  const auto start = nn::clock::now();
  auto errors = cluster.run_collect([&](nn::local_transport& t) {
    if (t.rank() == 2) {
      std::this_thread::sleep_for(std::chrono::seconds(2));  // alive, but says nothing
      return;
    }
    std::vector<double> data(8, 1.0);
    nn::all_reduce(t, nn::group::world(3), std::span<double>(data), c);
  });
  const auto elapsed = nn::clock::now() - start;
  bool some_timeout = false;
  for (unit_id r : {0u, 1u}) {
    REQUIRE(errors[r]);
    try {
      std::rethrow_exception(errors[r]);
    } catch (const nn::timeout_error&) {
      some_timeout = true;
    } catch (const nn::peer_error&) {  // a neighbour of a unit that timed out sees it go away
    }
  }
  CHECK(some_timeout);
  CHECK(elapsed < std::chrono::seconds(2) + timeout + std::chrono::seconds(1));
}

TEST_CASE("bad frames are protocol errors, and the receiver goes on") {
  nn::local_cluster cluster(2, /*fingerprint=*/99, /*max_frame=*/1024);
  auto& a = cluster.unit(0);
  auto& b = cluster.unit(1);
  const auto soon = [] { return nn::clock::now() + std::chrono::seconds(2); };
  std::vector<float> good{1, 2, 3};
  std::vector<float> out(3);
  auto expect_problem = [&](nn::frame_problem problem) {
    INFO("expected problem: ", std::string(nn::to_string(problem)));
    try {
      nn::receive_tensor(b, 0, 5, 1, std::span<float>(out), soon());
      FAIL("a bad frame was accepted");
    } catch (const nn::protocol_error& e) {
      CHECK(e.problem() == problem);
      CHECK(e.where().unit == 1);
      CHECK(e.where().peer == 0);
    }
  };
  const auto bytes = std::as_bytes(std::span<const float>(good));
  auto header = nn::wire::make_header(nn::wire::frame_kind::data, 99, 5, 0, 1, bytes);

  auto raw = nn::wire::encode(header);
  a.send_raw(1, std::span<const std::byte>(raw.data(), 20), bytes);  // header cut short
  expect_problem(nn::frame_problem::truncated);

  raw = nn::wire::encode(header);
  raw[0] = std::byte{'G'};  // magic
  a.send_raw(1, raw, bytes);
  expect_problem(nn::frame_problem::bad_magic);

  auto other = header;
  other.fingerprint = 98;
  a.send_raw(1, nn::wire::encode(other), bytes);
  expect_problem(nn::frame_problem::wrong_fingerprint);

  other = header;
  other.message_id = 6;
  a.send_raw(1, nn::wire::encode(other), bytes);
  expect_problem(nn::frame_problem::wrong_message);

  other = header;
  other.step = 2;
  a.send_raw(1, nn::wire::encode(other), bytes);
  expect_problem(nn::frame_problem::wrong_step);

  other = header;
  other.payload_length = 1u << 20;
  a.send_raw(1, nn::wire::encode(other), bytes);
  expect_problem(nn::frame_problem::too_large);

  other = header;
  other.payload_length = 8;
  a.send_raw(1, nn::wire::encode(other), bytes);
  expect_problem(nn::frame_problem::wrong_length);

  std::vector<float> corrupted = good;
  corrupted[1] = 2.5f;
  a.send_raw(1, nn::wire::encode(header), std::as_bytes(std::span<const float>(corrupted)));
  expect_problem(nn::frame_problem::bad_checksum);

  other = header;
  other.sender = 1;  // claims to be someone else
  other.checksum = nn::wire::checksum(other, bytes);
  a.send_raw(1, nn::wire::encode(other), bytes);
  expect_problem(nn::frame_problem::wrong_sender);

  // After all that, a good frame still arrives intact.
  a.set_fingerprint(99);
  nn::send_tensor(a, 1, 5, 1, std::span<const float>(good), soon());
  nn::receive_tensor(b, 0, 5, 1, std::span<float>(out), soon());
  CHECK(out == good);
}

TEST_CASE("goodbye reason: encoded bounded and versioned; a malformed one is refused, never trusted") {
  namespace w = nn::wire;
  std::string problem;
  const nn::shutdown_reason r{3, "unit 3: the loss is NaN at step 12"};
  const auto bytes = w::encode_reason(r);
  CHECK(bytes.size() == w::reason_prefix + r.error.size());
  CHECK(bytes[0] == std::byte{w::reason_version});
  CHECK(w::decode_reason(bytes, 4, problem) == r);
  CHECK(w::describe_goodbye(r) == "the peer has shut down because unit 3 failed first: " + r.error);

  // A long message is cut to max_reason_text bytes; control characters are not printed as such.
  const auto long_one = w::decode_reason(w::encode_reason({0, std::string(5000, 'x')}), 1, problem);
  REQUIRE(long_one);
  CHECK(long_one->error.size() == w::max_reason_text);
  CHECK(long_one->error.ends_with("..."));
  CHECK(w::decode_reason(w::encode_reason({0, "a\x1b[31mb\nc"}), 1, problem)->error == "a?[31mb?c");

  auto refused = [&](std::vector<std::byte> b, nn::unit_id world) {
    problem.clear();
    const bool none = !w::decode_reason(b, world, problem);
    return none && !problem.empty();
  };
  CHECK(refused({}, 4));                                                      // shorter than the fixed part
  CHECK(refused(std::vector<std::byte>(bytes.begin(), bytes.end() - 1), 4));  // the text cut short
  auto longer = bytes;
  longer.push_back(std::byte{'!'});
  CHECK(refused(longer, 4));  // trailing bytes
  auto version = bytes;
  version[0] = std::byte{9};
  CHECK(refused(version, 4));
  CHECK(problem.find("version 9") != std::string::npos);
  CHECK(refused(bytes, 3));  // unit 3 is outside a world of 3
  CHECK(problem.find("unit 3, outside a world of 3") != std::string::npos);
  auto huge = bytes;
  huge[5] = std::byte{0xff};
  huge[6] = std::byte{0xff};
  CHECK(refused(huge, 4));  // 65535 bytes announced: more than max_reason_text
}

TEST_CASE("frame header: encode and decode round-trip, the checksum covers the header") {
  const std::vector<std::byte> payload{std::byte{1}, std::byte{2}, std::byte{3}};
  const auto h = nn::wire::make_header(nn::wire::frame_kind::data, 0x0123456789abcdefULL, 0xfeedbeef, 7,
                                       0xfffffffffffffff0ULL, payload);
  const auto bytes = nn::wire::encode(h);
  CHECK(bytes[0] == std::byte{'F'});
  CHECK(bytes[1] == std::byte{'2'});
  CHECK(bytes[2] == std::byte{'D'});
  CHECK(bytes[3] == std::byte{'N'});
  const auto back = nn::wire::decode(bytes, {});
  CHECK(back == h);
  nn::wire::verify(back, payload, {});
  auto changed = back;
  changed.step ^= 1;  // a flipped header bit changes the checksum's seed
  CHECK_THROWS_AS(nn::wire::verify(changed, payload, {}), nn::protocol_error);
  auto wrong_version = bytes;
  wrong_version[4] = std::byte{2};
  CHECK_THROWS_WITH_AS((void)nn::wire::decode(wrong_version, {}), doctest::Contains("wire version 2"),
                       nn::protocol_error);
}

TEST_CASE("frame header without a payload checksum (MPI's default): the header stays covered, both ends agree") {
  const std::vector<std::byte> payload{std::byte{1}, std::byte{2}, std::byte{3}};
  const auto h = nn::wire::make_header(nn::wire::frame_kind::data, 42, 5, 1, 9, payload, /*payload_checksum=*/false);
  CHECK(h.payload_length == payload.size());
  CHECK(h != nn::wire::make_header(nn::wire::frame_kind::data, 42, 5, 1, 9, payload));  // another checksum
  nn::wire::verify(h, payload, {}, false);
  auto other_payload = payload;
  other_payload[1] = std::byte{7};
  nn::wire::verify(h, other_payload, {}, false);  // the payload is not covered: MPI delivers it intact
  auto changed = h;
  changed.message_id ^= 1;
  CHECK_THROWS_AS(nn::wire::verify(changed, payload, {}, false), nn::protocol_error);
  // An end that expects payload checksums refuses such a frame, and the other way round.
  CHECK_THROWS_AS(nn::wire::verify(h, payload, {}), nn::protocol_error);
  const auto full = nn::wire::make_header(nn::wire::frame_kind::data, 42, 5, 1, 9, payload);
  CHECK_THROWS_AS(nn::wire::verify(full, payload, {}, false), nn::protocol_error);
}

// --- repartition and halo exchange ------------------------------------------------------------

namespace {

/// The value at global position `at` of a reference tensor: distinct for every position.
double global_value(const std::vector<std::size_t>& at) {
  double v = 0;
  for (std::size_t k : at) v = v * 97 + static_cast<double>(k) + 1;
  return v;
}

/// Fills a row-major array that stores `stored` (global coordinates) with f(global position).
template <class F>
void fill_box(std::span<double> a, const nn::box& stored, F f) {
  const std::size_t d = stored.dims();
  std::vector<std::size_t> at(stored.lo);
  for (std::size_t i = 0; i < a.size(); ++i) {
    a[i] = f(at);
    for (std::size_t k = d; k-- > 0;) {
      if (++at[k] < stored.hi[k]) break;
      at[k] = stored.lo[k];
    }
  }
}

struct repartition_case {
  std::vector<std::size_t> extents, from, to;
};

}  // namespace

TEST_CASE("repartition moves every element to its new owner and is adjoint to the reverse repartition") {
  const std::vector<repartition_case> cases{
      {{10}, {3}, {5}},         {{10}, {1}, {7}},         {{7, 5}, {2, 3}, {3, 2}},
      {{7, 5}, {6, 1}, {1, 6}}, {{9, 4}, {2, 2}, {4, 1}}, {{5, 6, 7}, {2, 2, 2}, {1, 4, 2}},
      {{3, 3}, {1, 1}, {2, 2}}, {{8, 3}, {5, 1}, {1, 3}},
  };
  for (const auto& rc : cases) {
    const nn::cartesian_partition from(rc.extents, rc.from), to(rc.extents, rc.to);
    const auto p = static_cast<unit_id>(std::max(from.units(), to.units()));
    CAPTURE(p);
    CAPTURE(from.units());
    CAPTURE(to.units());
    const auto g = nn::group::world(p);
    auto own = [](const nn::cartesian_partition& part, unit_id r) {
      return r < part.units() ? part.owned(r)
                              : nn::box{std::vector<std::size_t>(part.dims()), std::vector<std::size_t>(part.dims())};
    };
    // Exact: every unit ends with the reference tensor's values over its new box.
    on_cluster(p, [&](nn::local_transport& t) {
      const auto in_box = own(from, t.rank()), out_box = own(to, t.rank());
      std::vector<double> in(in_box.volume()), out(out_box.volume(), -1.0);
      fill_box(in, in_box, global_value);
      nn::repartition(t, g, from, to, std::span<const double>(in), std::span<double>(out), call);
      std::vector<double> expected(out.size());
      fill_box(expected, out_box, global_value);
      CHECK(out == expected);
      return 0.0;
    });
    // Adjoint: <R x, y> = <x, R* y> with R* the repartition from `to` back to `from`.
    const double rx_y = sum(on_cluster(p, [&](nn::local_transport& t) {
      const auto x = random_vector(own(from, t.rank()).volume(), t.rank());
      std::vector<double> out(own(to, t.rank()).volume());
      nn::repartition(t, g, from, to, std::span<const double>(x), std::span<double>(out), call);
      return dot(out, random_vector(out.size(), 500 + t.rank()));
    }));
    const double x_ry = sum(on_cluster(p, [&](nn::local_transport& t) {
      const auto y = random_vector(own(to, t.rank()).volume(), 500 + t.rank());
      std::vector<double> out(own(from, t.rank()).volume());
      nn::repartition(t, g, to, from, std::span<const double>(y), std::span<double>(out), call);
      return dot(random_vector(out.size(), t.rank()), out);
    }));
    double nx = 0, ny = 0;
    for (unit_id r = 0; r < p; ++r) {
      nx += norm2(random_vector(own(from, r).volume(), r));
      ny += norm2(random_vector(own(to, r).volume(), 500 + r));
    }
    check_adjoint(rx_y, x_ry, std::sqrt(nx), std::sqrt(ny));  // R permutes: ||R x|| = ||x||
  }
}

namespace {
struct halo_case {
  std::vector<std::size_t> extents, grid, left, right;
};
}  // namespace

TEST_CASE("halo exchange fills ghosts (corners included) and is adjoint to halo_exchange_adjoint") {
  const std::vector<halo_case> cases{
      {{10}, {3}, {1}, {2}},
      {{11}, {7}, {1}, {1}},
      {{9, 8}, {2, 3}, {1, 1}, {1, 1}},
      {{7, 9}, {3, 2}, {2, 0}, {1, 2}},
      {{6, 5, 7}, {2, 1, 2}, {1, 1, 1}, {1, 1, 2}},
      {{5}, {1}, {2}, {2}},
  };
  for (const auto& hc : cases) {
    const nn::cartesian_partition part(hc.extents, hc.grid);
    const nn::halo_widths h{hc.left, hc.right};
    const auto p = static_cast<unit_id>(part.units());
    CAPTURE(p);
    const auto g = nn::group::world(p);
    // The local array of a unit, in global coordinates shifted by the left widths (so that no
    // coordinate is negative): it stores [lo - left + left, hi + right + left) = [lo, hi + l + r).
    auto stored = [&](unit_id r) {
      auto b = part.owned(r);
      for (std::size_t k = 0; k < b.dims(); ++k) b.hi[k] += h.left[k] + h.right[k];
      return b;
    };
    // Exact: a ghost with a neighbour behind it holds the reference value of the global position
    // it mirrors; owned cells and ghosts at the boundary keep theirs (marked -1 here).
    on_cluster(p, [&](nn::local_transport& t) {
      const auto sb = stored(t.rank());
      const auto own = part.owned(t.rank());
      std::vector<double> local(nn::halo_local_size(part, h, t.rank()));
      auto is_owned = [&](const std::vector<std::size_t>& at) {
        for (std::size_t k = 0; k < at.size(); ++k)
          if (at[k] < own.lo[k] + h.left[k] || at[k] >= own.hi[k] + h.left[k]) return false;
        return true;
      };
      auto global_of = [&](const std::vector<std::size_t>& at) {  // shifted -> global, or empty if outside
        std::vector<std::size_t> gpos(at.size());
        for (std::size_t k = 0; k < at.size(); ++k) {
          if (at[k] < h.left[k] || at[k] - h.left[k] >= hc.extents[k]) return std::vector<std::size_t>{};
          gpos[k] = at[k] - h.left[k];
        }
        return gpos;
      };
      fill_box(local, sb,
               [&](const std::vector<std::size_t>& at) { return is_owned(at) ? global_value(global_of(at)) : -1.0; });
      nn::halo_exchange(t, g, part, h, std::span<double>(local), call);
      std::vector<double> expected(local.size());
      fill_box(expected, sb, [&](const std::vector<std::size_t>& at) {
        const auto gpos = global_of(at);
        return gpos.empty() ? -1.0 : global_value(gpos);
      });
      CHECK(local == expected);
      return 0.0;
    });
    // Adjoint: <H x, y> = <x, H* y> over the local arrays of all units.
    const double hx_y = sum(on_cluster(p, [&](nn::local_transport& t) {
      auto x = random_vector(nn::halo_local_size(part, h, t.rank()), t.rank());
      nn::halo_exchange(t, g, part, h, std::span<double>(x), call);
      return dot(x, random_vector(x.size(), 600 + t.rank()));
    }));
    const double x_hy = sum(on_cluster(p, [&](nn::local_transport& t) {
      auto y = random_vector(nn::halo_local_size(part, h, t.rank()), 600 + t.rank());
      nn::halo_exchange_adjoint(t, g, part, h, std::span<double>(y), call);
      return dot(random_vector(y.size(), t.rank()), y);
    }));
    double nhx = 0, ny = 0;
    for (unit_id r = 0; r < p; ++r) ny += norm2(random_vector(nn::halo_local_size(part, h, r), 600 + r));
    nhx = sum(on_cluster(p, [&](nn::local_transport& t) {
      auto x = random_vector(nn::halo_local_size(part, h, t.rank()), t.rank());
      nn::halo_exchange(t, g, part, h, std::span<double>(x), call);
      return norm2(x);
    }));
    check_adjoint(hx_y, x_hy, std::sqrt(nhx), std::sqrt(ny));
  }
}

TEST_CASE("a halo wider than a unit's cells is a configuration error") {
  const nn::cartesian_partition part({4}, {4});
  CHECK_THROWS_AS(
      on_cluster(4,
                 [&](nn::local_transport& t) {
                   std::vector<double> local(nn::halo_local_size(part, {{2}, {2}}, t.rank()));
                   nn::halo_exchange(t, nn::group::world(4), part, {{2}, {2}}, std::span<double>(local), call);
                   return 0.0;
                 }),
      nn::configuration_error);
}

TEST_CASE("the transport-independent adjoint suite passes on local clusters of 1 to 8 units") {
  for (unit_id p = 1; p <= 8; ++p) {
    CAPTURE(p);
    nn::local_cluster cluster(p);
    std::vector<std::vector<std::string>> failures(p);
    cluster.run([&](nn::local_transport& t) { failures[t.rank()] = nn::testing::adjoint_suite(t); });
    for (const auto& f : failures) CHECK(f.empty());
  }
}
