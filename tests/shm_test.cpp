// Shared-memory transport: units as threads (and, for a dead peer, a forked process) of one host
// over shm_transport with rings far smaller than the frames, so that every frame streams through
// in pieces: the adjoint suite, sends that overflow the ring before anyone receives, mismatched
// peers, a dead and a silent peer, goodbyes, bad frames, segments left by a crashed run.
#include <doctest/doctest.h>

#include "comm_suite.hpp"

#include <f2d2n/comm.hpp>
#include <f2d2n/transport/shm.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

namespace nn = f2d2n;
using nn::unit_id;
using namespace std::chrono_literals;

namespace {

/// A prefix no other test (or run of this test) uses at the same time.
std::string fresh_prefix(const char* what) {
  static std::atomic<int> n{0};
  return "f2d2n-test-" + std::to_string(::getpid()) + "-" + what + "-" + std::to_string(n++);
}

nn::shm_options small_rings() {
  nn::shm_options o;
  o.ring_bytes = 4096;
  o.connect_timeout = 5s;
  o.liveness_interval = 20ms;
  return o;
}

std::vector<unit_id> all_of(unit_id p) {
  std::vector<unit_id> g(p);
  std::iota(g.begin(), g.end(), 0u);
  return g;
}

/// Runs f(transport) on p threads, each a unit with its own shm_transport; the exceptions each threw.
std::vector<std::exception_ptr> on_host(unit_id p, const std::string& prefix, nn::shm_options o,
                                        const std::function<void(nn::shm_transport&)>& f,
                                        const std::function<std::uint64_t(unit_id)>& fingerprint = {}) {
  std::vector<std::exception_ptr> failed(p);
  std::vector<std::thread> threads;
  for (unit_id r = 0; r < p; ++r)
    threads.emplace_back([&, r] {
      try {
        nn::shm_transport t(r, p, all_of(p), prefix, fingerprint ? fingerprint(r) : 77, o);
        f(t);
      } catch (...) {
        failed[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  return failed;
}

std::string message_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  }
  return {};
}

bool segment_exists(const std::string& prefix, unit_id r) {
  return std::filesystem::exists("/dev/shm/" + prefix + "-" + std::to_string(r));
}

auto in(std::chrono::milliseconds d) { return nn::clock::now() + d; }

}  // namespace

TEST_CASE("shm: the adjoint suite passes on 1 to 5 units whose rings are smaller than the frames") {
  for (unit_id p : {1u, 2u, 3u, 5u}) {
    CAPTURE(p);
    const auto prefix = fresh_prefix("adjoint");
    std::vector<std::vector<std::string>> failures(p);
    const auto failed =
        on_host(p, prefix, small_rings(), [&](nn::shm_transport& t) { failures[t.rank()] = nn::testing::adjoint_suite(t); });
    for (unit_id r = 0; r < p; ++r) {
      CHECK_MESSAGE(!failed[r], message_of(failed[r]));
      for (const auto& f : failures[r]) FAIL_CHECK(f);
      CHECK_FALSE(segment_exists(prefix, r));  // unlinked once every peer had mapped it
    }
  }
}

TEST_CASE("shm: frames of every size arrive whole and in order; sends that overflow the ring before anyone receives") {
  const auto prefix = fresh_prefix("order");
  const auto failed = on_host(2, prefix, small_rings(), [](nn::shm_transport& t) {
    const unit_id other = 1 - t.rank();
    // Both units send 40 frames (1 byte to 100 KB) before either receives: the send buffer takes
    // what the 4 KiB ring cannot, and it moves on while the receives wait.
    std::vector<std::vector<std::uint8_t>> sent;
    for (std::uint32_t k = 0; k < 40; ++k) {
      std::vector<std::uint8_t> v(1 + k * k * 64);
      for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::uint8_t>(i * 7 + k + t.rank());
      nn::send_tensor(t, other, 100 + k, k, std::span<const std::uint8_t>(v), in(5000ms));
      sent.push_back(std::move(v));
    }
    for (std::uint32_t k = 0; k < 40; ++k) {
      std::vector<std::uint8_t> got(sent[k].size());
      nn::receive_tensor(t, other, 100 + k, k, std::span<std::uint8_t>(got), in(5000ms));
      for (std::size_t i = 0; i < got.size(); ++i)
        if (got[i] != static_cast<std::uint8_t>(i * 7 + k + other)) throw std::runtime_error("a byte differs");
    }
  });
  CHECK_MESSAGE(!failed[0], message_of(failed[0]));
  CHECK_MESSAGE(!failed[1], message_of(failed[1]));
}

TEST_CASE("shm: receive_add adds payloads straight from the ring, also where an element straddles its end") {
  for (const bool checksums : {false, true}) {
    CAPTURE(checksums);
    auto o = small_rings();
    o.payload_checksums = checksums;
    const auto failed = on_host(2, fresh_prefix("add"), o, [checksums](nn::shm_transport& t) {
      const unit_id other = 1 - t.rank();
      const auto until = in(5000ms);
      std::uint64_t step = 0;
      // A frame of `shift` bytes first, so that the next payloads start at every offset modulo 8,
      // and their elements straddle the 4 KiB ring's end.
      for (std::size_t shift = 0; shift < 8; ++shift) {
        std::vector<std::uint8_t> pad(shift + 1, 1);
        std::vector<double> d(700);
        std::vector<float> f(1001);
        for (std::size_t k = 0; k < d.size(); ++k) d[k] = static_cast<double>(k) + 1000.0 * shift;
        for (std::size_t k = 0; k < f.size(); ++k) f[k] = static_cast<float>(k) * 0.25f;
        if (t.rank() == 0) {
          nn::send_tensor(t, other, 1, ++step, std::span<const std::uint8_t>(pad), until);
          nn::send_tensor(t, other, 2, ++step, std::span<const double>(d), until);
          nn::send_tensor(t, other, 3, ++step, std::span<const float>(f), until);
          continue;
        }
        nn::receive_tensor(t, other, 1, ++step, std::span<std::uint8_t>(pad), until);
        std::vector<double> sum_d(d.size());
        std::vector<float> sum_f(f.size());
        for (std::size_t k = 0; k < sum_d.size(); ++k) sum_d[k] = 0.5 * static_cast<double>(k);
        for (std::size_t k = 0; k < sum_f.size(); ++k) sum_f[k] = 2.0f;
        const nn::wire::expectation ed{nn::wire::frame_kind::data, t.fingerprint(), 2, other, ++step, 8 * d.size()};
        const nn::wire::expectation ef{nn::wire::frame_kind::data, t.fingerprint(), 3, other, ++step, 4 * f.size()};
        if (checksums) {
          // Payload checksums need the whole payload: it says no and leaves the frame where it is.
          if (t.receive_add(other, ed, std::span<double>(sum_d), until)) throw std::runtime_error("added with checksums");
          nn::receive_tensor(t, other, 2, step - 1, std::span<double>(sum_d), until);
          nn::receive_tensor(t, other, 3, step, std::span<float>(sum_f), until);
          if (sum_d != d || sum_f != f) throw std::runtime_error("the frames after a refused receive_add differ");
          continue;
        }
        if (!t.receive_add(other, ed, std::span<double>(sum_d), until)) throw std::runtime_error("not added");
        if (!t.receive_add(other, ef, std::span<float>(sum_f), until)) throw std::runtime_error("not added");
        for (std::size_t k = 0; k < d.size(); ++k)
          if (sum_d[k] != d[k] + 0.5 * static_cast<double>(k))
            throw std::runtime_error("double " + std::to_string(k) + " of shift " + std::to_string(shift) + " is wrong");
        for (std::size_t k = 0; k < f.size(); ++k)
          if (sum_f[k] != f[k] + 2.0f) throw std::runtime_error("float " + std::to_string(k) + " is wrong");
      }
      if (t.rank() == 1 && !checksums) {  // a frame of another length is refused before anything is added
        std::vector<double> three(3, 1.0);
        const nn::wire::expectation e{nn::wire::frame_kind::data, t.fingerprint(), 4, other, 99, 24};
        try {
          t.receive_add(other, e, std::span<double>(three), until);
          throw std::runtime_error("a frame of the wrong length was added");
        } catch (const nn::protocol_error&) {
        }
        if (three != std::vector<double>(3, 1.0)) throw std::runtime_error("a refused frame changed the sum");
      } else if (t.rank() == 0 && !checksums) {
        const std::vector<double> two{5.0, 6.0};
        nn::send_tensor(t, other, 4, 99, std::span<const double>(two), until);
      }
    });
    CHECK_MESSAGE(!failed[0], message_of(failed[0]));
    CHECK_MESSAGE(!failed[1], message_of(failed[1]));
  }
}

TEST_CASE("shm: without a send buffer, a send that the peer does not take times out and cuts the stream") {
  auto o = small_rings();
  o.send_buffer = 0;
  std::atomic<bool> done{false};
  std::string first, second;
  const auto failed = on_host(2, fresh_prefix("cut"), o, [&](nn::shm_transport& t) {
    if (t.rank() == 1) {
      while (!done) std::this_thread::sleep_for(1ms);  // never receives
      return;
    }
    std::vector<float> big(10000, 1.0f);
    const auto start = nn::clock::now();
    try {
      nn::send_tensor(t, 1, 5, 1, std::span<const float>(big), in(300ms));
    } catch (const nn::timeout_error& e) {
      first = e.what();
      CHECK(nn::clock::now() - start < 2s);
    }
    try {
      nn::send_tensor(t, 1, 6, 2, std::span<const float>(big).first(1), in(300ms));
    } catch (const nn::peer_error& e) {
      second = e.what();
    }
    done = true;
  });
  CHECK(!failed[0]);
  CHECK(first.find("did not take the frame") != std::string::npos);
  CHECK(second.find("unusable") != std::string::npos);
}

TEST_CASE("shm: peers of another plan or ring size are refused at start, naming what differs") {
  SUBCASE("plan fingerprint") {
    const auto failed = on_host(
        3, fresh_prefix("fp"), small_rings(), [](nn::shm_transport&) {}, [](unit_id r) { return r == 2 ? 78u : 77u; });
    for (unit_id r = 0; r < 3; ++r) {
      REQUIRE(failed[r]);
      CHECK_THROWS_AS(std::rethrow_exception(failed[r]), nn::handshake_error);
      CHECK(message_of(failed[r]).find("plan fingerprint") != std::string::npos);
    }
  }
  SUBCASE("ring size") {
    const auto prefix = fresh_prefix("ring");
    std::exception_ptr failed[2];
    std::thread other([&] {
      auto o = small_rings();
      o.ring_bytes = 8192;
      try {
        nn::shm_transport t(1, 2, {0, 1}, prefix, 77, o);
      } catch (...) {
        failed[1] = std::current_exception();
      }
    });
    try {
      nn::shm_transport t(0, 2, {0, 1}, prefix, 77, small_rings());
    } catch (...) {
      failed[0] = std::current_exception();
    }
    other.join();
    for (auto& f : failed) {
      REQUIRE(f);
      CHECK(message_of(f).find("ring bytes") != std::string::npos);
    }
    CHECK_FALSE(segment_exists(prefix, 0));
    CHECK_FALSE(segment_exists(prefix, 1));
  }
}

TEST_CASE("shm: a peer that does not come is a timeout_error at the connect deadline, and nothing is left behind") {
  auto o = small_rings();
  o.connect_timeout = 300ms;
  const auto prefix = fresh_prefix("absent");
  const auto start = nn::clock::now();
  CHECK_THROWS_AS(nn::shm_transport(0, 2, {0, 1}, prefix, 77, o), nn::timeout_error);
  CHECK(nn::clock::now() - start < 3s);
  CHECK_FALSE(segment_exists(prefix, 0));
}

TEST_CASE("shm: a silent peer is a timeout_error within the deadline; a goodbye says why, after the frames before it") {
  std::string silent, bye;
  std::vector<float> got(3000);
  const auto failed = on_host(2, fresh_prefix("bye"), small_rings(), [&](nn::shm_transport& t) {
    std::vector<float> v(3000, 2.5f);
    if (t.rank() == 1) {
      std::this_thread::sleep_for(400ms);
      nn::send_tensor(t, 0, 9, 1, std::span<const float>(v), in(2000ms));
      t.shutdown(nn::shutdown_reason{1, "the disk is full"});
      return;
    }
    const auto start = nn::clock::now();
    try {
      nn::receive_tensor(t, 1, 9, 1, std::span<float>(got), in(100ms));
    } catch (const nn::timeout_error& e) {
      silent = e.what();
      CHECK(nn::clock::now() - start < 1s);
    }
    nn::receive_tensor(t, 1, 9, 1, std::span<float>(got), in(5000ms));  // sent before the goodbye
    try {
      nn::receive_tensor(t, 1, 10, 2, std::span<float>(got), in(5000ms));
    } catch (const nn::peer_error& e) {
      bye = e.what();
      REQUIRE(e.reason());
      CHECK(e.reason()->origin == 1);
    }
  });
  CHECK(!failed[0]);
  CHECK(!failed[1]);
  CHECK(silent.find("no frame arrived") != std::string::npos);
  CHECK(got[2999] == 2.5f);
  CHECK(bye.find("unit 1 failed first: the disk is full") != std::string::npos);
}

TEST_CASE("shm: a frame not the one expected is a protocol_error, and the stream from that peer is out of sync") {
  std::string first, second;
  const auto failed = on_host(2, fresh_prefix("wrong"), small_rings(), [&](nn::shm_transport& t) {
    std::vector<float> v(5000, 1.0f);
    if (t.rank() == 0) {
      nn::send_tensor(t, 1, 7, 1, std::span<const float>(v), in(2000ms));
      nn::send_tensor(t, 1, 8, 2, std::span<const float>(v), in(2000ms));
      std::vector<float> done(1);
      nn::receive_tensor(t, 1, 11, 3, std::span<float>(done), in(5000ms));
      return;
    }
    std::vector<float> out(5000);
    try {
      nn::receive_tensor(t, 0, 6, 1, std::span<float>(out), in(2000ms));
    } catch (const nn::protocol_error& e) {
      CHECK(e.problem() == nn::frame_problem::wrong_message);
      first = e.what();
    }
    try {
      nn::receive_tensor(t, 0, 8, 2, std::span<float>(out), in(2000ms));
    } catch (const nn::peer_error& e) {
      second = e.what();
    }
    std::vector<float> done(1);
    nn::send_tensor(t, 0, 11, 3, std::span<const float>(done), in(2000ms));
  });
  CHECK(!failed[0]);
  CHECK(!failed[1]);
  CHECK(first.find("received message 7") != std::string::npos);
  CHECK(second.find("out of sync") != std::string::npos);
}

TEST_CASE("shm: a peer whose process dies without a goodbye is a peer_error within the liveness interval") {
  const auto prefix = fresh_prefix("dead");
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {  // unit 1: starts, then dies without a word
    try {
      nn::shm_transport t(1, 2, {0, 1}, prefix, 77, small_rings());
      std::this_thread::sleep_for(100ms);
      ::_exit(0);  // before t's destructor could say goodbye
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(0);
  }
  std::string what;
  nn::clock::duration took{};
  try {
    nn::shm_transport t(0, 2, {0, 1}, prefix, 77, small_rings());
    std::vector<float> out(100);
    const auto start = nn::clock::now();
    try {
      nn::receive_tensor(t, 1, 3, 42, std::span<float>(out), in(10000ms));
    } catch (const nn::peer_error& e) {
      what = e.what();
      took = nn::clock::now() - start;
      CHECK(e.where().peer == 1);
      CHECK(e.where().step == 42);
    }
  } catch (const std::exception& e) {
    FAIL_CHECK(e.what());
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(what.find("process has died") != std::string::npos);
  CHECK(took < 3s);
}

TEST_CASE("shm: segments left by a crashed run are replaced; one held by a live unit is refused") {
  const auto prefix = fresh_prefix("stale");
  // What a crashed run leaves: unit 0's and unit 1's segments, one of another plan, nobody holding them.
  for (unit_id r : {0u, 1u}) {
    const auto name = "/" + prefix + "-" + std::to_string(r);
    const int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, 1 << 16) == 0);
    void* p = ::mmap(nullptr, 1 << 16, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    REQUIRE(p != MAP_FAILED);
    std::memset(p, r == 0 ? 0x5a : 0, 1 << 16);  // garbage, or a header with no magic
    ::munmap(p, 1 << 16);
    ::close(fd);
  }
  const auto failed = on_host(2, prefix, small_rings(), [](nn::shm_transport& t) {
    std::vector<double> v(1000, 1.0);
    nn::all_reduce(t, nn::group::world(2), std::span<double>(v),
                   nn::call_options{.message_id = 1, .step = 1, .timeout = 5s});
    if (v[999] != 2.0) throw std::runtime_error("the sum is wrong");
  });
  CHECK_MESSAGE(!failed[0], message_of(failed[0]));
  CHECK_MESSAGE(!failed[1], message_of(failed[1]));
  CHECK_FALSE(segment_exists(prefix, 0));
  CHECK_FALSE(segment_exists(prefix, 1));

  // A live process holds unit 0's segment (its lock): a second unit 0 is refused at once.
  const auto held = "/" + prefix + "-0";
  const int fd = ::shm_open(held.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(::flock(fd, LOCK_EX | LOCK_NB) == 0);
  try {
    nn::shm_transport t(0, 2, {0, 1}, prefix, 77, small_rings());
    FAIL_CHECK("a unit started on a segment a live process holds");
  } catch (const nn::configuration_error& e) {
    CHECK(std::string(e.what()).find("a live process holds") != std::string::npos);
  }
  ::close(fd);
  ::shm_unlink(held.c_str());
}

TEST_CASE("shm: bad configurations are configuration errors") {
  CHECK_THROWS_AS(nn::shm_transport(0, 2, {1}, "f2d2n-x", 1, small_rings()), nn::configuration_error);
  CHECK_THROWS_AS(nn::shm_transport(0, 2, {0, 2}, "f2d2n-x", 1, small_rings()), nn::configuration_error);
  CHECK_THROWS_AS(nn::shm_transport(0, 2, {0, 1}, "bad/name", 1, small_rings()), nn::configuration_error);
  auto o = small_rings();
  o.ring_bytes = 100;
  CHECK_THROWS_AS(nn::shm_transport(0, 2, {0, 1}, "f2d2n-x", 1, o), nn::configuration_error);
}
