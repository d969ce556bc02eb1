// Tests of the TCP transport: units are threads of this process, each with its own tcp_transport
// on 127.0.0.1 (ports picked by the system: listen on port 0, then connect). Forged frames come
// from a raw POSIX socket that completes the handshake by hand.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <f2d2n/transport/tcp.hpp>

#include <boost/asio/use_future.hpp>

#include <openssl/ssl.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
using f2d2n::tcp_transport;
using f2d2n::unit_id;
using ms = std::chrono::milliseconds;
using seconds = std::chrono::duration<double>;

constexpr std::uint64_t fingerprint = 0xf2d2'0000'0000'0042ull;

f2d2n::deadline in(ms d) { return f2d2n::clock::now() + d; }

double since(f2d2n::clock::time_point t0) { return seconds(f2d2n::clock::now() - t0).count(); }

/// Units 0 .. world-1 as threads: each listens on a port the system picks, connects to the others,
/// runs f, and shuts down (with the reason, shutdown_after, when f threw). Returns each unit's
/// exception (or null).
template <class F>
std::vector<std::exception_ptr> run_cluster(unit_id world, F f, f2d2n::tcp_options options = {},
                                            std::function<std::uint64_t(unit_id)> fingerprint_of = {}) {
  std::vector<std::unique_ptr<tcp_transport>> units;
  std::vector<f2d2n::endpoint> peers;
  for (unit_id r = 0; r < world; ++r) {
    units.push_back(
        std::make_unique<tcp_transport>(r, world, fingerprint_of ? fingerprint_of(r) : fingerprint, options));
    peers.push_back(units.back()->listen());
  }
  std::vector<std::exception_ptr> errors(world);
  std::vector<std::thread> threads;
  for (unit_id r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        units[r]->connect(peers, in(ms(5000)));
        f(*units[r]);
      } catch (...) {
        errors[r] = std::current_exception();
      }
      if (errors[r]) f2d2n::shutdown_after(*units[r], errors[r]);
      else units[r]->shutdown();
    });
  for (auto& t : threads) t.join();
  return errors;
}

void rethrow_first(const std::vector<std::exception_ptr>& errors) {
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
}

std::string what(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  }
}

/// Deterministic contents of message `m` from `from` to `to`.
std::vector<std::uint32_t> payload(unit_id from, unit_id to, std::uint32_t m, std::size_t n) {
  std::vector<std::uint32_t> v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = static_cast<std::uint32_t>((from * 1000003u) ^ (to * 7919u) ^ (m * 104729u) ^ (i * 2654435761u));
  return v;
}

std::size_t size_of(unit_id from, unit_id to, std::uint32_t m) {
  return (m % 4 == 0) ? 0 : 1 + (from * 37 + to * 11 + m * 101) % 3000;
}

/// A hand-driven peer: a POSIX socket with 5 s send/receive timeouts (a failing test never hangs).
class raw_client {
 public:
  explicit raw_client(const f2d2n::endpoint& to) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    REQUIRE(fd_ >= 0);
    const timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(to.port);
    REQUIRE(::inet_pton(AF_INET, to.host.c_str(), &a.sin_addr) == 1);
    REQUIRE(::connect(fd_, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0);
  }
  raw_client(const raw_client&) = delete;
  raw_client& operator=(const raw_client&) = delete;
  ~raw_client() { close(); }

  /// Writes all of b; false when the peer closed the connection first (for threads other than
  /// the test's own, where a failed REQUIRE cannot be reported).
  bool try_write(std::span<const std::byte> b) {
    while (!b.empty()) {
      const auto n = ::send(fd_, b.data(), b.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      b = b.subspan(static_cast<std::size_t>(n));
    }
    return true;
  }
  void write(std::span<const std::byte> b) {
    while (!b.empty()) {
      const auto n = ::send(fd_, b.data(), b.size(), MSG_NOSIGNAL);
      REQUIRE(n > 0);
      b = b.subspan(static_cast<std::size_t>(n));
    }
  }
  void write_frame(const f2d2n::wire::frame_header& h, std::span<const std::byte> p) {
    const auto b = f2d2n::wire::encode(h);
    write(b);
    write(p);
  }
  /// Up to n bytes: fewer when the peer closes the connection first (or 5 s pass).
  std::vector<std::byte> read_some(std::size_t n) {
    std::vector<std::byte> b(n);
    std::size_t got = 0;
    while (got < n) {
      const auto r = ::recv(fd_, b.data() + got, n - got, 0);
      if (r <= 0) break;
      got += static_cast<std::size_t>(r);
    }
    b.resize(got);
    return b;
  }
  std::vector<std::byte> read(std::size_t n) {
    std::vector<std::byte> b(n);
    std::size_t got = 0;
    while (got < n) {
      const auto r = ::recv(fd_, b.data() + got, n - got, 0);
      REQUIRE(r > 0);
      got += static_cast<std::size_t>(r);
    }
    return b;
  }
  std::pair<f2d2n::wire::frame_header, std::vector<std::byte>> read_frame() {
    const auto hb = read(f2d2n::wire::header_size);
    const auto h = f2d2n::wire::decode(std::span<const std::byte, f2d2n::wire::header_size>(hb.data(), hb.size()), {});
    return {h, read(static_cast<std::size_t>(h.payload_length))};
  }
  /// Proves `key` (empty: none) as unit `rank` of `world` dialling unit `target`; returns whether the
  /// other side proved it back (and that it is `target`).
  bool authenticate(unit_id rank, unit_id target, unit_id world, std::span<const std::byte> key = {}) {
    namespace d = f2d2n::detail::tcp_impl;
    const auto mine = d::fresh_nonce();
    write(d::encode_challenge(mine));
    const auto theirs = d::decode_challenge(read(d::challenge_bytes{}.size()));
    REQUIRE(theirs);
    const d::auth_claim c{rank, target, world};
    write(d::encode_dialler_proof(c, d::proof_mac(key, d::dialler_label, mine, *theirs, c)));
    d::acceptor_proof_bytes answer{};
    const auto got = read_some(answer.size());
    if (got.size() != answer.size()) return false;
    std::copy(got.begin(), got.end(), answer.begin());
    return d::acceptor_proof_holds(key, mine, *theirs, c, answer) && d::rank_of(answer) == target;
  }
  /// Authenticates (without a key) and completes the handshake as unit `rank` of `world` with
  /// unit 0; returns the other side's verdict frame.
  f2d2n::wire::frame_header handshake(unit_id rank, unit_id world, std::uint64_t fp) {
    namespace d = f2d2n::detail::tcp_impl;
    REQUIRE(authenticate(rank, 0, world));
    const auto hello = d::encode_hello({rank, world, fp, f2d2n::wire::wire_version, {}});
    write_frame(f2d2n::wire::make_header(f2d2n::wire::frame_kind::handshake, fp, d::hello_message, rank, 0, hello),
                hello);
    const auto theirs = read_frame();
    CHECK(theirs.first.kind == f2d2n::wire::frame_kind::handshake);
    const auto decoded = d::decode_hello(theirs.second);
    REQUIRE(decoded);
    write_frame(f2d2n::wire::make_header(f2d2n::wire::frame_kind::handshake, fp, d::verdict_message, rank, 0, {}), {});
    return read_frame().first;
  }
  /// Closes with a reset (SO_LINGER 0): what a crashed process's peer may see.
  void reset() {
    const linger l{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close();
  }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  [[nodiscard]] int fd() const noexcept { return fd_; }

 private:
  int fd_;
};

/// Unit 0 of a world of 2 whose unit 1 is a raw_client that has completed the handshake.
struct unit_and_raw_peer {
  unit_and_raw_peer() : unit(0, 2, fingerprint) {
    const auto here = unit.listen();
    auto connected = std::async(std::launch::async, [&] { unit.connect({here, {"127.0.0.1", 1}}, in(ms(5000))); });
    raw = std::make_unique<raw_client>(here);
    const auto verdict = raw->handshake(1, 2, fingerprint);
    CHECK(verdict.kind == f2d2n::wire::frame_kind::handshake);
    connected.get();
  }
  tcp_transport unit;
  std::unique_ptr<raw_client> raw;
};

f2d2n::wire::frame_header data_header(std::uint32_t message, std::uint64_t step, std::span<const std::byte> p) {
  return f2d2n::wire::make_header(f2d2n::wire::frame_kind::data, fingerprint, message, 1, step, p);
}

/// Receives message 7 of step 3 (16 floats) from unit 1 and returns the problem of the protocol_error.
f2d2n::frame_problem problem_of_next_receive(tcp_transport& t) {
  std::vector<float> out(16);
  try {
    f2d2n::receive_tensor(t, 1, 7, 3, std::span(out), in(ms(3000)));
  } catch (const f2d2n::protocol_error& e) {
    CHECK(std::string(e.what()).find("unit 0, peer 1, message 7, step 3") != std::string::npos);
    return e.problem();
  }
  FAIL("no protocol_error");
  return {};
}

/// After a rejected frame: the stream is unusable (peer_error), and shutdown is quick.
void check_broken_and_shutdown(tcp_transport& t) {
  std::vector<float> out(16);
  CHECK_THROWS_AS(f2d2n::receive_tensor(t, 1, 7, 4, std::span(out), in(ms(3000))), f2d2n::peer_error);
  const auto t0 = f2d2n::clock::now();
  t.shutdown();
  CHECK(since(t0) < 1.0);
}

}  // namespace

TEST_CASE("tcp: send_tensor / receive_tensor between every pair, in order, world sizes 2, 3 and 5") {
  for (const unit_id world : {2u, 3u, 5u}) {
    CAPTURE(world);
    constexpr std::uint32_t messages = 24;
    const auto errors = run_cluster(world, [&](tcp_transport& t) {
      const unit_id me = t.rank();
      for (std::uint32_t m = 0; m < messages; ++m)
        for (unit_id p = 0; p < world; ++p)
          if (p != me) {
            const auto v = payload(me, p, m, size_of(me, p, m));
            f2d2n::send_tensor(t, p, m, 100 + m, std::span<const std::uint32_t>(v), in(ms(5000)));
          }
      for (unit_id p = 0; p < world; ++p) {
        if (p == me) continue;
        for (std::uint32_t m = 0; m < messages; ++m) {
          std::vector<std::uint32_t> got(size_of(p, me, m));
          f2d2n::receive_tensor(t, p, m, 100 + m, std::span(got), in(ms(5000)));
          REQUIRE(got == payload(p, me, m, got.size()));
        }
      }
    });
    rethrow_first(errors);
  }
}

TEST_CASE("tcp: empty payloads and a 64 MiB payload both ways at once, copied and zero-copy") {
  constexpr std::size_t big = (std::size_t{64} << 20) / sizeof(std::uint32_t);
  for (const std::uint64_t send_buffer : {std::uint64_t{256} << 20, std::uint64_t{0}}) {
    CAPTURE(send_buffer);
    f2d2n::tcp_options options;
    options.send_buffer = send_buffer;
    const auto errors = run_cluster(
        2,
        [&](tcp_transport& t) {
          const unit_id other = 1 - t.rank();
          f2d2n::send_tensor(t, other, 1, 0, std::span<const float>(), in(ms(5000)));
          std::vector<std::uint32_t> v(big);
          for (std::size_t i = 0; i < big; ++i) v[i] = static_cast<std::uint32_t>(i * 2654435761u + t.rank());
          if (send_buffer != 0) {
            // Both send first, then receive: the frame the kernel cannot take is copied, so neither blocks.
            f2d2n::send_tensor(t, other, 2, 0, std::span<const std::uint32_t>(v), in(ms(10000)));
          } else if (t.rank() == 0) {
            // Zero-copy: send() returns once the kernel has the whole frame, i.e. as the peer reads.
            f2d2n::send_tensor(t, other, 2, 0, std::span<const std::uint32_t>(v), in(ms(10000)));
          }
          std::vector<float> none;
          f2d2n::receive_tensor(t, other, 1, 0, std::span(none), in(ms(5000)));
          if (send_buffer != 0 || t.rank() == 1) {
            std::vector<std::uint32_t> got(big);
            f2d2n::receive_tensor(t, other, 2, 0, std::span(got), in(ms(10000)));
            for (std::size_t i = 0; i < big; ++i)
              if (got[i] != static_cast<std::uint32_t>(i * 2654435761u + other)) FAIL("wrong element " << i);
          }
        },
        options);
    rethrow_first(errors);
  }
}

TEST_CASE("tcp: the async API with a callback, a future and a coroutine") {
  const auto errors = run_cluster(2, [](tcp_transport& t) {
    const unit_id other = 1 - t.rank();
    std::vector<double> mine(1000), theirs(1000);
    for (std::size_t i = 0; i < mine.size(); ++i) mine[i] = t.rank() * 1e6 + static_cast<double>(i);
    const auto bytes = std::as_bytes(std::span(mine));
    const auto header = f2d2n::wire::make_header(f2d2n::wire::frame_kind::data, t.fingerprint(), 5, t.rank(), 9, bytes);
    const f2d2n::wire::expectation expected{f2d2n::wire::frame_kind::data, t.fingerprint(), 5, other, 9, bytes.size()};

    // A callback: runs on the transport's io thread.
    std::promise<std::exception_ptr> sent;
    t.async_send(other, header, bytes, in(ms(5000)), [&](std::exception_ptr e) { sent.set_value(e); });
    // A future.
    auto received =
        t.async_receive(other, expected, std::as_writable_bytes(std::span(theirs)), in(ms(5000)), asio::use_future);
    CHECK_FALSE(sent.get_future().get());
    const auto h = received.get();
    CHECK(h.message_id == 5);
    CHECK(h.sender == other);
    CHECK(theirs[999] == other * 1e6 + 999);

    // A coroutine on the caller's own io_context.
    asio::io_context io;
    std::vector<double> again(1000);
    bool done = false;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          co_await t.async_send(other, header, bytes, in(ms(5000)), asio::use_awaitable);
          const auto h2 = co_await t.async_receive(other, expected, std::as_writable_bytes(std::span(again)),
                                                   in(ms(5000)), asio::use_awaitable);
          CHECK(h2.step == 9);
          done = true;
        },
        [](std::exception_ptr e) {
          if (e) std::rethrow_exception(e);
        });
    io.run_for(std::chrono::seconds(10));
    CHECK(done);
    CHECK(again == theirs);
  });
  rethrow_first(errors);
}

TEST_CASE("tcp: a handshake with another plan fingerprint fails on both sides, saying what differs") {
  const auto errors = run_cluster(
      2, [](tcp_transport&) {}, {}, [](unit_id r) { return std::uint64_t{0xa0 + r}; });
  for (unit_id r = 0; r < 2; ++r) {
    REQUIRE(errors[r]);
    CHECK_THROWS_AS(std::rethrow_exception(errors[r]), f2d2n::handshake_error);
    const auto text = what(errors[r]);
    CAPTURE(text);
    CHECK(text.find("plan fingerprint 0x00000000000000a0") != std::string::npos);
    CHECK(text.find("plan fingerprint 0x00000000000000a1") != std::string::npos);
  }
}

TEST_CASE("tcp: a handshake with another world size fails on both sides, saying what differs") {
  tcp_transport a(0, 2, fingerprint), b(1, 3, fingerprint);
  const auto ea = a.listen(), eb = b.listen();
  // b waits for its unit 2 (which never comes) until the deadline, then reports the refusal.
  auto fa = std::async(std::launch::async, [&] { a.connect({ea, eb}, in(ms(3000))); });
  auto fb = std::async(std::launch::async, [&] { b.connect({ea, eb, {"127.0.0.1", 1}}, in(ms(500))); });
  for (auto* f : {&fa, &fb}) {
    try {
      f->get();
      FAIL("the handshake succeeded");
    } catch (const f2d2n::handshake_error& e) {
      const std::string text = e.what();
      CAPTURE(text);
      CHECK(text.find("unit 0 has world size 2") != std::string::npos);
      CHECK(text.find("unit 1 world size 3") != std::string::npos);
    }
  }
}

TEST_CASE("tcp: a unit that proves another rank than the one dialled is not taken, and the dialler says so") {
  // Unit 2 is given the endpoints of units 0 and 1 swapped: the units there prove who they are, so
  // unit 2 keeps trying (the right unit may still come) and names them at its deadline; units 0
  // and 1 are not disturbed by the misdirected connections (they time out waiting for unit 2).
  std::vector<std::unique_ptr<tcp_transport>> units;
  std::vector<f2d2n::endpoint> peers;
  for (unit_id r = 0; r < 3; ++r) {
    units.push_back(std::make_unique<tcp_transport>(r, 3, fingerprint));
    peers.push_back(units.back()->listen());
  }
  std::vector<std::exception_ptr> errors(3);
  std::vector<std::thread> threads;
  for (unit_id r = 0; r < 3; ++r)
    threads.emplace_back([&, r] {
      auto mine = peers;
      if (r == 2) std::swap(mine[0], mine[1]);
      try {
        units[r]->connect(mine, in(ms(1500)));
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  REQUIRE(errors[2]);
  CHECK_THROWS_AS(std::rethrow_exception(errors[2]), f2d2n::timeout_error);
  CHECK(what(errors[2]).find("the unit there proved that it is unit 1, not unit 0") != std::string::npos);
  CHECK(what(errors[2]).find("the unit there proved that it is unit 0, not unit 1") != std::string::npos);
  for (unit_id r = 0; r < 2; ++r) {
    CAPTURE(r);
    REQUIRE(errors[r]);  // a unit that cannot reach everyone does not start
    CHECK_THROWS_AS(std::rethrow_exception(errors[r]), f2d2n::timeout_error);
    CHECK(what(errors[r]).find("unit(s) 2") != std::string::npos);
  }
}

TEST_CASE("tcp: attackers on loopback do not get in, do not lock a unit out and do not stop the cluster") {
  namespace d = f2d2n::detail::tcp_impl;
  constexpr unit_id world = 3;
  const f2d2n::cluster_key key("attack-test-key-0123456789abcdef");
  const f2d2n::cluster_key wrong("attack-test-key-0123456789abcdeF");
  f2d2n::tcp_options options;
  options.key = key;
  options.max_pending_connections = 8;  // the idle flood below is larger: the oldest are closed
  options.handshake_timeout = ms(1000);
  std::vector<std::unique_ptr<tcp_transport>> units;
  std::vector<f2d2n::endpoint> peers;
  for (unit_id r = 0; r < world; ++r) {
    units.push_back(std::make_unique<tcp_transport>(r, world, fingerprint, options));
    peers.push_back(units.back()->listen());
  }
  // Before the units connect: strangers on units 0 and 1. Each records how many bytes the unit
  // sent it: only the 40-byte challenge may come to anything that has not proved the key.
  constexpr std::size_t challenge = d::challenge_bytes{}.size();
  std::vector<std::size_t> answered(5, 0);
  std::vector<std::thread> attackers;
  // The attackers' connections are made here, before any unit connects, so that each unit accepts
  // them before its peers' (a unit accepts only during its connect(), in order, and closes whatever
  // is still queued once its cluster is set up: an attacker thread that the scheduler started late
  // would otherwise find its connection closed unanswered).
  const int targets[5] = {0, 0, 1, 1, 0};
  std::vector<std::unique_ptr<raw_client>> stranger;
  for (const int t : targets) stranger.push_back(std::make_unique<raw_client>(peers[static_cast<std::size_t>(t)]));
  const auto key_bytes = key.bytes();
  const auto wrong_bytes = wrong.bytes();
  // 0: the plan fingerprint read off the wire, in a well-formed hello claiming unit 1.
  attackers.emplace_back([&] {
    raw_client& c = *stranger[0];
    const auto hello = d::encode_hello({1, world, fingerprint, f2d2n::wire::wire_version, {}});
    const auto header = f2d2n::wire::encode(
        f2d2n::wire::make_header(f2d2n::wire::frame_kind::handshake, fingerprint, d::hello_message, 1, 0, hello));
    if (!c.try_write(header) || !c.try_write(hello)) return;
    answered[0] = c.read_some(4096).size();
  });
  // 1: a proof made with the wrong key, claiming unit 1 dialling unit 0.
  attackers.emplace_back([&] {
    raw_client& c = *stranger[1];
    const auto mine = d::fresh_nonce();
    (void)c.try_write(d::encode_challenge(mine));
    const auto got = c.read_some(challenge);
    answered[1] = got.size();
    const auto theirs = d::decode_challenge(got);
    if (!theirs) return;
    const d::auth_claim claim{1, 0, world};
    (void)c.try_write(
        d::encode_dialler_proof(claim, d::proof_mac(wrong_bytes, d::dialler_label, mine, *theirs, claim)));
    answered[1] += c.read_some(4096).size();
  });
  // 2: a replayed proof: made with the right key, for another connection's nonces.
  attackers.emplace_back([&] {
    raw_client& c = *stranger[2];
    const auto mine = d::fresh_nonce();
    (void)c.try_write(d::encode_challenge(mine));
    answered[2] = c.read_some(challenge).size();
    const d::auth_claim claim{2, 1, world};
    (void)c.try_write(
        d::encode_dialler_proof(claim, d::proof_mac(key_bytes, d::dialler_label, mine, d::fresh_nonce(), claim)));
    answered[2] += c.read_some(4096).size();
  });
  // 3: random bytes.
  attackers.emplace_back([&] {
    raw_client& c = *stranger[3];
    std::vector<std::byte> junk(100000);
    std::uint32_t x = 12345;
    for (auto& b : junk) b = static_cast<std::byte>((x = x * 1664525u + 1013904223u) >> 24);
    (void)c.try_write(std::span(junk).first(challenge + d::dialler_proof_bytes{}.size()));
    answered[3] = c.read_some(4096).size();
  });
  // 4: slowloris: a challenge one byte at a time, 20 ms apart (past the handshake deadline).
  attackers.emplace_back([&] {
    raw_client& c = *stranger[4];
    const auto bytes = d::encode_challenge(d::fresh_nonce());
    for (const std::byte b : bytes) {
      if (::send(c.fd(), &b, 1, MSG_NOSIGNAL) != 1) break;
      std::this_thread::sleep_for(ms(20));
    }
    answered[4] = c.read_some(4096).size();
  });
  // An idle flood: 40 connections to unit 2 that say nothing and stay open. Unit 2, which no
  // attacker above dials: the flood is over the unit's cap of pending connections, so the oldest
  // are closed, and on units 0 and 1 the oldest are the attackers', which could then be closed
  // before their challenge went out (seen in CI: attacker 0 read nothing).
  std::vector<std::unique_ptr<raw_client>> idle;
  for (int i = 0; i < 40; ++i) idle.push_back(std::make_unique<raw_client>(peers[2]));

  const auto errors = [&] {
    std::vector<std::exception_ptr> e(world);
    std::vector<std::thread> threads;
    for (unit_id r = 0; r < world; ++r)
      threads.emplace_back([&, r] {
        try {
          units[r]->connect(peers, in(ms(5000)));
          for (unit_id p = 0; p < world; ++p)
            if (p != r) {
              const auto v = payload(r, p, 1, 1000);
              f2d2n::send_tensor(*units[r], p, 1, 7, std::span<const std::uint32_t>(v), in(ms(5000)));
            }
          for (unit_id p = 0; p < world; ++p)
            if (p != r) {
              std::vector<std::uint32_t> got(1000);
              f2d2n::receive_tensor(*units[r], p, 1, 7, std::span(got), in(ms(5000)));
              if (got != payload(p, r, 1, 1000)) throw std::runtime_error("wrong payload");
            }
        } catch (...) {
          e[r] = std::current_exception();
        }
      });
    for (auto& t : threads) t.join();
    return e;
  }();
  for (auto& a : attackers) a.join();
  rethrow_first(errors);  // the cluster started and moved its data
  for (std::size_t i = 0; i < answered.size(); ++i) {
    CAPTURE(i);
    CHECK(answered[i] == challenge);  // the challenge, then the connection closed: nothing else
  }
  // Setup over: every stranger's connection is closed (a read ends with end of file at once).
  for (auto& c : idle) CHECK(c->read_some(4096).size() <= challenge);
  for (auto& u : units) u->shutdown();
}

TEST_CASE("tcp: out of descriptors, the accept loop closes strangers and waits instead of spinning") {
  // Unit 0 may open only a few more descriptors than it holds; a child process has queued 150 idle
  // connections on its port. Accepting them runs into EMFILE: unit 0 must close the oldest stranger
  // and back off (not spin on accept), and unit 1, queued behind them, must still get in.
  f2d2n::tcp_options options;
  options.key = f2d2n::cluster_key("descriptor-test-key-0123456789");
  options.handshake_timeout = ms(500);
  tcp_transport u0(0, 2, fingerprint, options), u1(1, 2, fingerprint, options);
  const std::vector<f2d2n::endpoint> peers{u0.listen(), {"127.0.0.1", 1}};
  (void)u1.listen();  // only to have its io_context's epoll descriptor made before the limit is lowered
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {  // only system calls here: socket, connect, sleep
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(peers[0].port);
    ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    for (int i = 0; i < 150; ++i) {
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      if (fd >= 0) (void)::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a);
    }
    ::sleep(10);
    ::_exit(0);
  }
  std::this_thread::sleep_for(ms(300));  // the child's connections are queued
  int open_now = 0;
  for (int fd = 0; fd < 4096; ++fd) open_now += ::fcntl(fd, F_GETFD) != -1 ? 1 : 0;
  rlimit before{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &before) == 0);
  rlimit tight = before;
  tight.rlim_cur = static_cast<rlim_t>(open_now + 12);
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &tight) == 0);
  rusage r0{};
  ::getrusage(RUSAGE_SELF, &r0);
  const auto t0 = f2d2n::clock::now();
  std::exception_ptr e0, e1;
  std::thread t([&] {
    try {
      u0.connect(peers, in(ms(15000)));
    } catch (...) {
      e0 = std::current_exception();
    }
  });
  std::this_thread::sleep_for(ms(100));  // unit 1 comes after the flood
  try {
    u1.connect(peers, in(ms(15000)));
  } catch (...) {
    e1 = std::current_exception();
  }
  t.join();
  const double wall = since(t0);
  rusage r1{};
  ::getrusage(RUSAGE_SELF, &r1);
  ::setrlimit(RLIMIT_NOFILE, &before);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  const auto cpu = [](const rusage& r) {
    return static_cast<double>(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
           static_cast<double>(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
  };
  const double used = cpu(r1) - cpu(r0);
  CAPTURE(wall);
  CAPTURE(used);
  if (e1) FAIL(what(e1));
  if (e0) FAIL(what(e0));
  CHECK(used < 0.5 * wall + 0.2);  // a spinning accept loop burns a whole core all along
  std::vector<std::uint32_t> got(4);
  const auto v = payload(1, 0, 1, 4);
  f2d2n::send_tensor(u1, 0, 1, 1, std::span<const std::uint32_t>(v), in(ms(5000)));
  f2d2n::receive_tensor(u0, 1, 1, 1, std::span(got), in(ms(5000)));
  CHECK(got == v);
}

TEST_CASE("tcp: a unit with the wrong key does not get in, and both sides say why at the deadline") {
  f2d2n::tcp_options a, b;
  a.key = f2d2n::cluster_key("the-right-key-0123456789");
  b.key = f2d2n::cluster_key("the-wrong-key-0123456789");
  tcp_transport u0(0, 2, fingerprint, a), u1(1, 2, fingerprint, b);
  const std::vector<f2d2n::endpoint> peers{u0.listen(), {"127.0.0.1", 1}};
  std::exception_ptr e0, e1;
  std::thread t0([&] {
    try {
      u0.connect(peers, in(ms(1000)));
    } catch (...) {
      e0 = std::current_exception();
    }
  });
  try {
    u1.connect(peers, in(ms(1000)));
  } catch (...) {
    e1 = std::current_exception();
  }
  t0.join();
  REQUIRE(e0);
  REQUIRE(e1);
  CHECK_THROWS_AS(std::rethrow_exception(e1), f2d2n::timeout_error);
  CHECK(what(e1).find("closed the connection during authentication (is its cluster key this unit's?)") !=
        std::string::npos);
  CHECK(what(e1).find("the-") == std::string::npos);  // no key in any message
  CHECK_THROWS_AS(std::rethrow_exception(e0), f2d2n::timeout_error);
}

TEST_CASE("tcp: cluster keys: length, files, the environment; a key never appears in a message") {
  CHECK_THROWS_WITH_AS(f2d2n::cluster_key("short"), doctest::Contains("at least 16"), f2d2n::configuration_error);
  const auto k = f2d2n::cluster_key::generate();
  CHECK(k.text().size() == 64);
  CHECK_FALSE(k == f2d2n::cluster_key::generate());
  const std::string path = "/tmp/f2d2n_tcp_test_key_" + std::to_string(::getpid());
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    REQUIRE(f);
    std::fputs("file-key-0123456789abcdef\n", f);
    std::fclose(f);
  }
  ::chmod(path.c_str(), 0644);
  CHECK_THROWS_WITH_AS(f2d2n::cluster_key::from_file(path), doctest::Contains("chmod 600"), f2d2n::configuration_error);
  ::chmod(path.c_str(), 0600);
  CHECK(f2d2n::cluster_key::from_file(path) == f2d2n::cluster_key("file-key-0123456789abcdef"));
  ::setenv(f2d2n::cluster_key_file_variable, path.c_str(), 1);
  ::setenv(f2d2n::cluster_key_variable, "env-key-0123456789abcdef", 1);
  CHECK_THROWS_WITH_AS((void)f2d2n::cluster_key_from_environment(), doctest::Contains("set one"),
                       f2d2n::configuration_error);
  ::unsetenv(f2d2n::cluster_key_file_variable);
  CHECK(f2d2n::cluster_key_from_environment() == f2d2n::cluster_key("env-key-0123456789abcdef"));
  ::setenv(f2d2n::cluster_key_variable, "tiny", 1);
  try {
    (void)f2d2n::cluster_key_from_environment();
    FAIL("a 4-character key was taken");
  } catch (const f2d2n::configuration_error& e) {
    CHECK(std::string(e.what()).find("tiny") == std::string::npos);
  }
  ::unsetenv(f2d2n::cluster_key_variable);
  CHECK_FALSE(f2d2n::cluster_key_from_environment());
  std::remove(path.c_str());
}

TEST_CASE("tcp: a silent peer is a timeout_error at the deadline, and the link stays usable") {
  std::atomic<bool> timed_out{false};
  const auto errors = run_cluster(2, [&](tcp_transport& t) {
    std::vector<float> v(8, 1.5f);
    if (t.rank() == 0) {
      const auto t0 = f2d2n::clock::now();
      try {
        f2d2n::receive_tensor(t, 1, 7, 3, std::span(v), in(ms(300)));
        FAIL("a message arrived from a silent peer");
      } catch (const f2d2n::timeout_error& e) {
        const double s = since(t0);
        CHECK(s >= 0.29);
        CHECK(s < 0.3 + 2.0);
        CHECK(std::string(e.what()).find("unit 0, peer 1, message 7, step 3") != std::string::npos);
      }
      timed_out = true;
      // Nothing of the frame had arrived: the next receive gets the frame sent after the timeout.
      f2d2n::receive_tensor(t, 1, 7, 3, std::span(v), in(ms(5000)));
      CHECK(v[0] == 2.5f);
    } else {
      while (!timed_out) std::this_thread::sleep_for(ms(5));
      std::fill(v.begin(), v.end(), 2.5f);
      f2d2n::send_tensor(t, 0, 7, 3, std::span<const float>(v), in(ms(5000)));
    }
  });
  rethrow_first(errors);
}

TEST_CASE("tcp: a peer that shuts down is a peer_error on the survivor, at once") {
  const auto errors = run_cluster(2, [](tcp_transport& t) {
    std::vector<float> v(4);
    if (t.rank() == 1) {
      std::this_thread::sleep_for(ms(100));
      return;  // run_cluster shuts the unit down
    }
    const auto t0 = f2d2n::clock::now();
    try {
      f2d2n::receive_tensor(t, 1, 2, 8, std::span(v), in(ms(10000)));
      FAIL("a message arrived");
    } catch (const f2d2n::peer_error& e) {
      CHECK(since(t0) < 2.0);
      CHECK(std::string(e.what()).find("unit 0, peer 1, message 2, step 8: the peer has shut down") !=
            std::string::npos);
    }
    CHECK_THROWS_AS(f2d2n::send_tensor(t, 1, 2, 8, std::span<const float>(v), in(ms(1000))), f2d2n::peer_error);
  });
  rethrow_first(errors);
}

TEST_CASE("tcp: a unit that fails tells its peers why; a bystander passes the origin on") {
  // A chain: unit 1 waits for unit 2, unit 0 for unit 1. Unit 2 fails; unit 1 fails because of it
  // and shuts down with the reason it was given; unit 0 hears only from unit 1, and must still
  // name unit 2 and its error (measured before: "peer 1 ... the peer has shut down", a bystander).
  const std::string cause = "unit 2 broke at step 9";
  const auto errors = run_cluster(3, [&](tcp_transport& t) {
    std::vector<float> v(4);
    if (t.rank() == 2) throw std::runtime_error(cause);
    if (t.rank() == 1) {
      f2d2n::receive_tensor(t, 2, 5, 9, std::span(v), in(ms(10000)));
      return;
    }
    const auto t0 = f2d2n::clock::now();
    try {
      f2d2n::receive_tensor(t, 1, 5, 9, std::span(v), in(ms(10000)));
      FAIL("a message arrived");
    } catch (const f2d2n::peer_error& e) {
      CHECK(since(t0) < 5.0);
      CHECK(e.origin() == 2u);
      CHECK(std::string(e.what()).find("unit 0, peer 1, message 5, step 9: the peer has shut down because unit 2 "
                                       "failed first: " +
                                       cause) != std::string::npos);
    }
    // Sending to a peer that said goodbye with a reason names the origin too.
    try {
      f2d2n::send_tensor(t, 1, 6, 9, std::span<const float>(v), in(ms(1000)));
      FAIL("a send to a unit that has shut down succeeded");
    } catch (const f2d2n::peer_error& e) {
      CHECK(e.origin() == 2u);
      CHECK((e.reason() == f2d2n::shutdown_reason{2, cause}));
    }
  });
  CHECK(what(errors[2]) == cause);
  REQUIRE(errors[1]);
  try {
    std::rethrow_exception(errors[1]);
  } catch (const f2d2n::peer_error& e) {
    CHECK(e.where().peer == 2);
    CHECK(e.origin() == 2u);
    CHECK(std::string(e.what()).find("because unit 2 failed first: " + cause) != std::string::npos);
  }
  CHECK(!errors[0]);
}

TEST_CASE("tcp: a send that finds the connection closed still names the unit that failed first") {
  // Unit 1 fails and closes; unit 0 only sends to it. Its writes end in a broken pipe before any
  // receive has read unit 1's goodbye: the goodbye waiting in the socket still names the cause
  // (seen in a ring of 4, where a unit's send to the failed unit broke first).
  const std::string cause = "unit 1 ran out of memory";
  const auto errors = run_cluster(2, [&](tcp_transport& t) {
    if (t.rank() == 1) throw std::runtime_error(cause);
    std::this_thread::sleep_for(ms(300));  // unit 1 has said goodbye and closed
    std::vector<float> v(1 << 16);
    for (int i = 0; i < 200; ++i) {
      try {
        f2d2n::send_tensor(t, 1, 5, 9, std::span<const float>(v), in(ms(1000)));
      } catch (const f2d2n::peer_error& e) {
        CHECK(e.origin() == 1u);
        CHECK(std::string(e.what()).find("unit 0, peer 1, message 5, step 9: the peer has shut down because unit 1 "
                                         "failed first: " +
                                         cause) != std::string::npos);
        return;
      }
      std::this_thread::sleep_for(ms(5));
    }
    FAIL("every send to a unit that has closed succeeded");
  });
  CHECK(what(errors[1]) == cause);
  CHECK(!errors[0]);
}

TEST_CASE("tcp: a goodbye's reason is read from the wire with care: a malformed one is reported, never trusted") {
  // The raw peer (unit 1 of 2) says goodbye with a reason payload that it writes by hand.
  auto goodbye_then_receive = [](std::vector<std::byte> payload, bool corrupt_checksum = false) {
    unit_and_raw_peer s;
    auto h = f2d2n::wire::make_header(f2d2n::wire::frame_kind::goodbye, fingerprint,
                                      f2d2n::wire::goodbye_reason_message, 1, 0, payload);
    if (corrupt_checksum) h.checksum ^= 1;
    s.raw->write_frame(h, payload);
    std::vector<float> out(16);
    try {
      f2d2n::receive_tensor(s.unit, 1, 7, 3, std::span(out), in(ms(3000)));
    } catch (const f2d2n::peer_error& e) {
      s.unit.shutdown();
      return std::make_pair(e.origin(), std::string(e.what()));
    }
    s.unit.shutdown();
    FAIL("no peer_error");
    return std::make_pair(std::optional<unit_id>(), std::string());
  };
  {
    const auto [origin, text] = goodbye_then_receive(f2d2n::wire::encode_reason({0, "unit 0's \x1b[2Jerror"}));
    CHECK(origin == 0u);
    CHECK(text.find("the peer has shut down because unit 0 failed first: unit 0's ?[2Jerror") != std::string::npos);
  }
  auto bad_version = f2d2n::wire::encode_reason({1, "x"});
  bad_version[0] = std::byte{2};
  struct malformed {
    std::vector<std::byte> payload;
    bool corrupt;
    std::string says;
  };
  const std::vector<malformed> cases{{bad_version, false, "version 2"},
                                     {f2d2n::wire::encode_reason({5, "x"}), false, "unit 5, outside a world of 2"},
                                     {std::vector<std::byte>(3, std::byte{1}), false, "fewer than the 7"},
                                     {f2d2n::wire::encode_reason({1, "x"}), true, "bad checksum"}};
  for (const auto& c : cases) {
    CAPTURE(c.says);
    const auto [origin, text] = goodbye_then_receive(c.payload, c.corrupt);
    CHECK(!origin);
    CHECK(text.find("unit 0, peer 1, message 7, step 3: the peer has shut down (the reason in its goodbye is "
                    "unreadable: ") != std::string::npos);
    CHECK(text.find(c.says) != std::string::npos);
  }
}

TEST_CASE("tcp: a connection reset by the peer is a peer_error, at once") {
  unit_and_raw_peer s;
  auto pending = std::async(std::launch::async, [&] {
    std::vector<float> out(16);
    f2d2n::receive_tensor(s.unit, 1, 7, 3, std::span(out), in(ms(10000)));
  });
  std::this_thread::sleep_for(ms(50));
  const auto t0 = f2d2n::clock::now();
  s.raw->reset();
  CHECK_THROWS_AS(pending.get(), f2d2n::peer_error);
  CHECK(since(t0) < 2.0);
  std::vector<float> v(16);
  CHECK_THROWS_AS(f2d2n::receive_tensor(s.unit, 1, 7, 4, std::span(v), in(ms(1000))), f2d2n::peer_error);
  s.unit.shutdown();
}

TEST_CASE("tcp: forged and damaged frames are typed protocol errors, checked before the payload is read") {
  std::vector<float> good(16, 3.0f);
  const auto good_bytes = std::as_bytes(std::span(good));

  SUBCASE("the connection closes in the middle of the payload") {
    unit_and_raw_peer s;
    const auto h = data_header(7, 3, good_bytes);
    s.raw->write(f2d2n::wire::encode(h));
    s.raw->write(good_bytes.first(10));
    s.raw->close();
    std::vector<float> out(16);
    try {
      f2d2n::receive_tensor(s.unit, 1, 7, 3, std::span(out), in(ms(3000)));
      FAIL("no error");
    } catch (const f2d2n::protocol_error& e) {
      CHECK(e.problem() == f2d2n::frame_problem::truncated);
    }
    check_broken_and_shutdown(s.unit);
  }
  SUBCASE("a length above the maximum frame is refused before anything is allocated") {
    unit_and_raw_peer s;
    auto h = data_header(7, 3, good_bytes);
    h.payload_length = std::uint64_t{1} << 40;
    s.raw->write(f2d2n::wire::encode(h));
    CHECK(problem_of_next_receive(s.unit) == f2d2n::frame_problem::too_large);
    check_broken_and_shutdown(s.unit);
  }
  SUBCASE("a corrupted payload byte") {
    unit_and_raw_peer s;
    auto bad = std::vector<std::byte>(good_bytes.begin(), good_bytes.end());
    const auto h = data_header(7, 3, bad);
    bad[17] ^= std::byte{0x40};
    s.raw->write_frame(h, bad);
    CHECK(problem_of_next_receive(s.unit) == f2d2n::frame_problem::bad_checksum);
    check_broken_and_shutdown(s.unit);
  }
  SUBCASE("another message") {
    unit_and_raw_peer s;
    s.raw->write_frame(data_header(8, 3, good_bytes), good_bytes);
    CHECK(problem_of_next_receive(s.unit) == f2d2n::frame_problem::wrong_message);
    check_broken_and_shutdown(s.unit);
  }
  SUBCASE("another step") {
    unit_and_raw_peer s;
    s.raw->write_frame(data_header(7, 4, good_bytes), good_bytes);
    CHECK(problem_of_next_receive(s.unit) == f2d2n::frame_problem::wrong_step);
    check_broken_and_shutdown(s.unit);
  }
  SUBCASE("another length") {
    unit_and_raw_peer s;
    s.raw->write_frame(data_header(7, 3, good_bytes.first(32)), good_bytes.first(32));
    CHECK(problem_of_next_receive(s.unit) == f2d2n::frame_problem::wrong_length);
    check_broken_and_shutdown(s.unit);
  }
  SUBCASE("bytes that are not a frame") {
    unit_and_raw_peer s;
    std::vector<std::byte> junk(f2d2n::wire::header_size, std::byte{0x5a});
    s.raw->write(junk);
    CHECK(problem_of_next_receive(s.unit) == f2d2n::frame_problem::bad_magic);
    check_broken_and_shutdown(s.unit);
  }
  SUBCASE("a good frame after all") {
    unit_and_raw_peer s;
    s.raw->write_frame(data_header(7, 3, good_bytes), good_bytes);
    std::vector<float> out(16);
    f2d2n::receive_tensor(s.unit, 1, 7, 3, std::span(out), in(ms(3000)));
    CHECK(out == good);
    s.unit.shutdown();
    // The raw peer is told: a goodbye frame, then the end of the stream.
    const auto [h, p] = s.raw->read_frame();
    CHECK(h.kind == f2d2n::wire::frame_kind::goodbye);
  }
}

TEST_CASE("tcp: a deadline that passes in the middle of a frame leaves that stream unusable") {
  unit_and_raw_peer s;
  std::vector<float> good(16, 3.0f);
  const auto bytes = std::as_bytes(std::span(good));
  s.raw->write(f2d2n::wire::encode(data_header(7, 3, bytes)));
  s.raw->write(bytes.first(20));
  std::vector<float> out(16);
  const auto t0 = f2d2n::clock::now();
  try {
    f2d2n::receive_tensor(s.unit, 1, 7, 3, std::span(out), in(ms(200)));
    FAIL("no timeout");
  } catch (const f2d2n::timeout_error& e) {
    CHECK(since(t0) < 0.2 + 2.0);
    CHECK(std::string(e.what()).find("68 bytes of the frame had arrived") != std::string::npos);
  }
  s.raw->write(bytes.subspan(20));
  try {
    f2d2n::receive_tensor(s.unit, 1, 7, 3, std::span(out), in(ms(1000)));
    FAIL("the stream was used after a timeout in the middle of a frame");
  } catch (const f2d2n::peer_error& e) {
    CHECK(std::string(e.what()).find("out of sync") != std::string::npos);
  }
}

TEST_CASE("tcp: connecting to units that never come is a timeout_error naming them") {
  SUBCASE("a unit that waits to be connected to") {
    tcp_transport t(0, 2, fingerprint);
    const auto here = t.listen();
    const auto t0 = f2d2n::clock::now();
    try {
      t.connect({here, {"127.0.0.1", 1}}, in(ms(300)));
      FAIL("connected to nobody");
    } catch (const f2d2n::timeout_error& e) {
      CHECK(since(t0) < 0.3 + 2.0);
      CHECK(std::string(e.what()).find("unit(s) 1 did not connect") != std::string::npos);
    }
  }
  SUBCASE("a unit that connects to a port where nobody listens") {
    std::uint16_t port = 0;
    {
      tcp_transport probe(0, 1, fingerprint);
      port = probe.listen().port;
    }  // closed: nobody listens there now
    tcp_transport t(1, 2, fingerprint);
    const auto t0 = f2d2n::clock::now();
    try {
      t.connect({{"127.0.0.1", port}, {"127.0.0.1", 0}}, in(ms(300)));
      FAIL("connected to nobody");
    } catch (const f2d2n::timeout_error& e) {
      CHECK(since(t0) < 0.3 + 2.0);
      const std::string text = e.what();
      CAPTURE(text);
      CHECK(text.find("unit(s) 0 (127.0.0.1:" + std::to_string(port)) != std::string::npos);
    }
  }
}

TEST_CASE("tcp: misuse is a configuration_error; operations after shutdown are peer_errors") {
  const auto errors = run_cluster(2, [](tcp_transport& t) {
    std::vector<float> v(4);
    CHECK_THROWS_AS(f2d2n::send_tensor(t, t.rank(), 1, 0, std::span<const float>(v), in(ms(1000))),
                    f2d2n::configuration_error);
    CHECK_THROWS_AS(f2d2n::send_tensor(t, 5, 1, 0, std::span<const float>(v), in(ms(1000))),
                    f2d2n::configuration_error);
    const auto bytes = std::as_bytes(std::span(v));
    const auto header =
        f2d2n::wire::make_header(f2d2n::wire::frame_kind::data, t.fingerprint(), 1, t.rank(), 0, bytes.first(8));
    CHECK_THROWS_AS(t.send(1 - t.rank(), header, bytes, in(ms(1000))), f2d2n::configuration_error);
    t.shutdown();
    t.shutdown();  // twice is fine
    CHECK_THROWS_AS(f2d2n::send_tensor(t, 1 - t.rank(), 1, 0, std::span<const float>(v), in(ms(1000))),
                    f2d2n::peer_error);
    CHECK_THROWS_AS(f2d2n::receive_tensor(t, 1 - t.rank(), 1, 0, std::span(v), in(ms(1000))), f2d2n::peer_error);
  });
  rethrow_first(errors);
}

TEST_CASE("tcp: listens on loopback unless told otherwise") {
  tcp_transport a(0, 2, fingerprint);
  CHECK(a.listen().host == "127.0.0.1");
  CHECK_THROWS_AS(a.listen(), f2d2n::configuration_error);
  f2d2n::tcp_options any;
  any.listen_any = true;
  tcp_transport keyless(0, 2, fingerprint, any);  // every interface: not without a key
  CHECK_THROWS_WITH_AS(keyless.listen({"127.0.0.1", 0}), doctest::Contains("has no cluster key"),
                       f2d2n::configuration_error);
  any.key = f2d2n::cluster_key("0123456789abcdef0123456789abcdef");
  tcp_transport b(0, 2, fingerprint, any);
  CHECK(b.listen({"127.0.0.1", 0}).host == "0.0.0.0");
}

TEST_CASE("tcp: the one-step constructor connects a world of 3") {
  // Ports: listen on port 0 with throw-away transports, then free them (the units start at once).
  std::vector<f2d2n::endpoint> peers;
  {
    std::vector<std::unique_ptr<tcp_transport>> probes;
    for (unit_id r = 0; r < 3; ++r) {
      probes.push_back(std::make_unique<tcp_transport>(0, 1, fingerprint));
      peers.push_back(probes.back()->listen());
    }
  }
  std::vector<std::exception_ptr> errors(3);
  std::vector<std::thread> threads;
  for (unit_id r = 0; r < 3; ++r)
    threads.emplace_back([&, r] {
      try {
        std::this_thread::sleep_for(ms(30 * (2 - r)));  // the lower ranks start last: connections are retried
        tcp_transport t(r, peers, fingerprint);
        std::vector<int> v{static_cast<int>(r)};
        for (unit_id p = 0; p < 3; ++p)
          if (p != r) f2d2n::send_tensor(t, p, 0, 0, std::span<const int>(v), in(ms(5000)));
        for (unit_id p = 0; p < 3; ++p)
          if (p != r) {
            f2d2n::receive_tensor(t, p, 0, 0, std::span(v), in(ms(5000)));
            CHECK(v[0] == static_cast<int>(p));
          }
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  rethrow_first(errors);
}

TEST_CASE("tcp: a send that the peer does not take by the deadline is a timeout_error") {
  f2d2n::tcp_options zero_copy;
  zero_copy.send_buffer = 0;  // send() waits for the kernel to take the whole frame
  std::atomic<bool> done{false};
  const auto errors = run_cluster(
      2,
      [&](tcp_transport& t) {
        if (t.rank() == 1) {  // never reads
          while (!done) std::this_thread::sleep_for(ms(5));
          return;
        }
        std::vector<std::uint8_t> big(std::size_t{32} << 20, 7);
        const auto t0 = f2d2n::clock::now();
        try {
          f2d2n::send_tensor(t, 1, 1, 0, std::span<const std::uint8_t>(big), in(ms(300)));
          FAIL("32 MiB went to a peer that reads nothing");
        } catch (const f2d2n::timeout_error& e) {
          CHECK(since(t0) < 0.3 + 2.0);
          CHECK(std::string(e.what()).find("bytes of the frame were sent") != std::string::npos);
        }
        // Part of the frame is on the wire: the stream to that peer cannot carry another frame.
        CHECK_THROWS_AS(f2d2n::send_tensor(t, 1, 1, 1, std::span<const std::uint8_t>(big).first(4), in(ms(300))),
                        f2d2n::peer_error);
        done = true;
      },
      zero_copy);
  rethrow_first(errors);
}

TEST_CASE("tcp: shutdown delivers the frames still queued, then the goodbye") {
  std::atomic<bool> sent{false};
  const auto errors = run_cluster(2, [&](tcp_transport& t) {
    std::vector<std::uint32_t> v(std::size_t{2} << 20);
    if (t.rank() == 0) {
      for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::uint32_t>(i);
      f2d2n::send_tensor(t, 1, 1, 0, std::span<const std::uint32_t>(v),
                         in(ms(5000)));  // copied: the peer is not reading
      sent = true;
      return;  // run_cluster shuts the unit down at once
    }
    while (!sent) std::this_thread::sleep_for(ms(5));
    std::this_thread::sleep_for(ms(50));
    f2d2n::receive_tensor(t, 0, 1, 0, std::span(v), in(ms(5000)));
    CHECK(v.back() == v.size() - 1);
    CHECK_THROWS_AS(f2d2n::receive_tensor(t, 0, 1, 1, std::span(v), in(ms(5000))), f2d2n::peer_error);
  });
  rethrow_first(errors);
}

TEST_CASE("tcp: exchange sends and receives at once, zero-copy, so a ring of big frames cannot deadlock") {
  f2d2n::tcp_options zero_copy;
  zero_copy.send_buffer = 0;  // send() alone would wait for the peer to read: send-then-receive rings would hang
  for (const unit_id world : {2u, 3u}) {
    CAPTURE(world);
    const auto errors = run_cluster(
        world,
        [&](tcp_transport& t) {
          const unit_id right = (t.rank() + 1) % world, left = (t.rank() + world - 1) % world;
          std::vector<double> mine(std::size_t{2} << 20, t.rank() + 1.0), theirs(mine.size());  // 16 MiB
          for (std::uint64_t step = 0; step < 3; ++step) {
            f2d2n::exchange_tensor(t, right, std::span<const double>(mine), left, std::span(theirs), 4, step,
                                   in(ms(10000)));
            CHECK(theirs.front() == left + 1.0);
            CHECK(theirs.back() == left + 1.0);
          }
        },
        zero_copy);
    rethrow_first(errors);
  }
}

TEST_CASE("tcp: a blocking receive waiting on the caller's thread ends at once when its unit shuts down") {
  unit_and_raw_peer s;
  auto pending = std::async(std::launch::async, [&] {
    std::vector<float> out(16);
    f2d2n::receive_tensor(s.unit, 1, 7, 3, std::span(out), in(ms(10000)));  // idle link: waits in poll() on this thread
  });
  std::this_thread::sleep_for(ms(100));
  const auto t0 = f2d2n::clock::now();
  s.unit.shutdown();
  try {
    pending.get();
    FAIL("a message arrived");
  } catch (const f2d2n::peer_error& e) {
    CHECK(std::string(e.what()).find("unit 0, peer 1, message 7, step 3: this unit has shut down") !=
          std::string::npos);
  }
  CHECK(since(t0) < 2.0);
}

TEST_CASE("tcp: frames keep their order when queued sends and blocking sends to one peer mix") {
  // Async sends queue on the peer's strand; a blocking send behind them must not overtake them by
  // writing on the caller's thread, nor a blocking receive read ahead of a queued one.
  const auto errors = run_cluster(2, [](tcp_transport& t) {
    constexpr std::uint64_t frames = 24;
    std::vector<std::vector<float>> data(frames);
    if (t.rank() == 0) {
      std::vector<std::future<void>> queued;
      for (std::uint64_t i = 0; i < frames; ++i) {
        data[i].assign(std::size_t{1} << 18, static_cast<float>(i));  // 1 MiB: the socket does not take it at once
        const auto bytes = std::as_bytes(std::span<const float>(data[i]));
        const auto header = f2d2n::wire::make_header(f2d2n::wire::frame_kind::data, t.fingerprint(), 5, 0, i, bytes);
        if (i % 3 == 2) t.send(1, header, bytes, in(ms(10000)));
        else queued.push_back(t.async_send(1, header, bytes, in(ms(10000)), asio::use_future));
      }
      for (auto& f : queued) f.get();
    } else {
      std::vector<float> out(std::size_t{1} << 18);
      std::vector<std::future<f2d2n::wire::frame_header>> queued;
      for (std::uint64_t i = 0; i < frames; ++i) {
        if (i % 4 == 1) {
          const f2d2n::wire::expectation e{f2d2n::wire::frame_kind::data, t.fingerprint(), 5, 0, i, out.size() * 4};
          data[i].resize(out.size());
          queued.push_back(
              t.async_receive(0, e, std::as_writable_bytes(std::span(data[i])), in(ms(10000)), asio::use_future));
          continue;
        }
        f2d2n::receive_tensor(t, 0, 5, i, std::span(out), in(ms(10000)));
        CHECK(out.front() == static_cast<float>(i));
        CHECK(out.back() == static_cast<float>(i));
      }
      for (auto& f : queued) f.get();
      for (std::uint64_t i = 1; i < frames; i += 4) CHECK(data[i].front() == static_cast<float>(i));
    }
  });
  rethrow_first(errors);
}

// ---- mutual TLS (tcp_options::tls) ----

namespace {

/// A throwaway cluster CA with a unit certificate, and a second CA with its own certificate (a
/// stranger's), made once per run with the openssl command in a temporary directory.
struct tls_files {
  std::string dir;
  f2d2n::tls_options unit;      // the cluster's CA, a certificate it signed and its key
  f2d2n::tls_options stranger;  // the cluster's CA, but a certificate signed by another CA

  static const tls_files& get() {
    static const tls_files files;
    return files;
  }

 private:
  tls_files() {
    char pattern[] = "/tmp/f2d2n-tls-test-XXXXXX";
    REQUIRE(::mkdtemp(pattern) != nullptr);
    dir = pattern;
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    const auto ca = [&](const std::string& name) {
      return "openssl req -x509" + ec + " -days 2 -subj /CN=" + name + " -keyout " + name + ".key -out " + name +
             ".pem";
    };
    const auto signed_by = [&](const std::string& name, const std::string& by) {
      return "openssl req" + ec + " -subj /CN=" + name + " -keyout " + name + ".key -out " + name +
             ".csr && openssl x509 -req -days 2 -in " + name + ".csr -CA " + by + ".pem -CAkey " + by +
             ".key -CAcreateserial -out " + name + ".pem";
    };
    const std::string script = "cd " + dir + " && (" + ca("cluster-ca") + " && " + signed_by("unit", "cluster-ca") +
                               " && " + ca("other-ca") + " && " + signed_by("stranger", "other-ca") + ") >log 2>&1";
    REQUIRE_MESSAGE(std::system(script.c_str()) == 0, "openssl could not make the test certificates: see " << dir);
    unit = {dir + "/cluster-ca.pem", dir + "/unit.pem", dir + "/unit.key"};
    stranger = {dir + "/cluster-ca.pem", dir + "/stranger.pem", dir + "/stranger.key"};
  }
};

f2d2n::tcp_options tls_options(std::uint64_t send_buffer = std::uint64_t{256} << 20) {
  f2d2n::tcp_options o;
  o.tls = tls_files::get().unit;
  o.send_buffer = send_buffer;
  return o;
}

/// A TLS client made with OpenSSL directly, without a certificate: it trusts the cluster CA and
/// completes its side of a TLS 1.3 handshake (the server refuses it afterwards).
struct certificateless_client {
  explicit certificateless_client(const f2d2n::endpoint& to) : raw(to), ctx(SSL_CTX_new(TLS_client_method())) {
    REQUIRE(ctx);
    SSL_CTX_load_verify_locations(ctx, tls_files::get().unit.ca_file.c_str(), nullptr);
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, raw.fd());
  }
  ~certificateless_client() {
    SSL_free(ssl);
    SSL_CTX_free(ctx);
  }
  certificateless_client(const certificateless_client&) = delete;
  certificateless_client& operator=(const certificateless_client&) = delete;
  /// Whether the server let it read anything after the handshake (the challenge, were it in).
  bool gets_in() {
    if (SSL_connect(ssl) != 1) return false;
    std::array<char, 64> b{};
    return SSL_read(ssl, b.data(), static_cast<int>(b.size())) > 0;
  }
  raw_client raw;
  SSL_CTX* ctx;
  SSL* ssl = nullptr;
};

/// A TCP relay between a dialler and `to`, as an attacker on the path would run one: it keeps
/// what passes from the dialler and, once told, changes one byte of it.
class relay {
 public:
  explicit relay(const f2d2n::endpoint& to) : to_(to), listener_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listener_, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(listener_, 4) == 0);
    socklen_t n = sizeof a;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &n);
    here = {"127.0.0.1", ntohs(a.sin_port)};
    thread_ = std::thread([this] { run(); });
  }
  relay(const relay&) = delete;
  relay& operator=(const relay&) = delete;
  ~relay() {
    stop_ = true;
    thread_.join();
    ::close(listener_);
  }
  f2d2n::endpoint here;
  std::atomic<bool> tamper{false};  // flip a bit of the next bytes from the dialler
  std::atomic<bool> tampered{false};
  /// Whether `text` passed from the dialler, as it is (after stop or join only).
  [[nodiscard]] bool saw(std::string_view text) {
    const std::lock_guard lock(m_);
    return std::string_view(seen_).find(text) != std::string_view::npos;
  }

 private:
  void run() {
    pollfd l{listener_, POLLIN, 0};
    while (!stop_ && ::poll(&l, 1, 50) <= 0) {
    }
    if (stop_) return;
    const int in = ::accept(listener_, nullptr, nullptr);
    raw_client out(to_);
    std::array<pollfd, 2> fds{pollfd{in, POLLIN, 0}, pollfd{out.fd(), POLLIN, 0}};
    std::vector<char> buf(1 << 16);
    while (!stop_) {
      if (::poll(fds.data(), 2, 50) <= 0) continue;
      bool closed = false;
      for (int k = 0; k < 2; ++k) {
        if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        const auto n = ::recv(fds[k].fd, buf.data(), buf.size(), 0);
        if (n <= 0) {
          closed = true;
          break;
        }
        if (k == 0) {
          const std::lock_guard lock(m_);
          seen_.append(buf.data(), static_cast<std::size_t>(n));
          if (tamper && !tampered && n > 8) {
            buf[static_cast<std::size_t>(n) / 2] ^= 0x01;
            tampered = true;
          }
        }
        std::size_t at = 0;
        while (at < static_cast<std::size_t>(n)) {
          const auto w = ::send(fds[1 - k].fd, buf.data() + at, static_cast<std::size_t>(n) - at, MSG_NOSIGNAL);
          if (w <= 0) break;
          at += static_cast<std::size_t>(w);
        }
      }
      if (closed) break;
    }
    ::close(in);
  }

  f2d2n::endpoint to_;
  int listener_;
  std::atomic<bool> stop_{false};
  std::mutex m_;
  std::string seen_;
  std::thread thread_;
};

}  // namespace

TEST_CASE("tcp over TLS: a world of 3 moves frames both ways: blocking, exchange, async, 16 MiB frames") {
  constexpr std::uint32_t messages = 12;
  const auto errors = run_cluster(
      3,
      [&](tcp_transport& t) {
        const unit_id me = t.rank(), world = 3;
        // Every pair, small frames, on the caller's thread while the directions are idle.
        for (std::uint32_t m = 0; m < messages; ++m)
          for (unit_id p = 0; p < world; ++p)
            if (p != me) {
              const auto v = payload(me, p, m, size_of(me, p, m));
              f2d2n::send_tensor(t, p, m, 100 + m, std::span<const std::uint32_t>(v), in(ms(5000)));
            }
        for (unit_id p = 0; p < world; ++p)
          for (std::uint32_t m = 0; p != me && m < messages; ++m) {
            std::vector<std::uint32_t> got(size_of(p, me, m));
            f2d2n::receive_tensor(t, p, m, 100 + m, std::span(got), in(ms(5000)));
            REQUIRE(got == payload(p, me, m, got.size()));
          }
        // A ring of 16 MiB frames, sent and received at once (both directions of TLS at work).
        const unit_id right = (me + 1) % world, left = (me + world - 1) % world;
        std::vector<std::uint32_t> mine(std::size_t{4} << 20), theirs(mine.size());
        for (std::size_t i = 0; i < mine.size(); ++i) mine[i] = static_cast<std::uint32_t>(i * 2654435761u + me);
        for (std::uint64_t step = 0; step < 2; ++step) {
          f2d2n::exchange_tensor(t, right, std::span<const std::uint32_t>(mine), left, std::span(theirs), 4, step,
                                 in(ms(20000)));
          for (std::size_t i = 0; i < theirs.size(); ++i)
            if (theirs[i] != static_cast<std::uint32_t>(i * 2654435761u + left)) FAIL("wrong element " << i);
        }
        // The async API: both directions queued on the strands, then a future.
        const auto bytes = std::as_bytes(std::span(mine));
        const auto header = f2d2n::wire::make_header(f2d2n::wire::frame_kind::data, t.fingerprint(), 5, me, 9, bytes);
        const f2d2n::wire::expectation expected{
            f2d2n::wire::frame_kind::data, t.fingerprint(), 5, left, 9, bytes.size()};
        auto sent = t.async_send(right, header, bytes, in(ms(20000)), asio::use_future);
        auto received =
            t.async_receive(left, expected, std::as_writable_bytes(std::span(theirs)), in(ms(20000)), asio::use_future);
        sent.get();
        CHECK(received.get().sender == left);
        CHECK(theirs.back() == static_cast<std::uint32_t>((mine.size() - 1) * 2654435761u + left));
      },
      tls_options());
  rethrow_first(errors);
}

TEST_CASE("tcp over TLS: a 64 MiB payload both ways at once, copied and zero-copy") {
  constexpr std::size_t big = (std::size_t{64} << 20) / sizeof(std::uint32_t);
  for (const std::uint64_t send_buffer : {std::uint64_t{256} << 20, std::uint64_t{0}}) {
    CAPTURE(send_buffer);
    const auto errors = run_cluster(
        2,
        [&](tcp_transport& t) {
          const unit_id other = 1 - t.rank();
          std::vector<std::uint32_t> v(big);
          for (std::size_t i = 0; i < big; ++i) v[i] = static_cast<std::uint32_t>(i * 2654435761u + t.rank());
          // Copied: both send, then receive. Zero-copy: unit 0 sends while unit 1 receives.
          if (send_buffer != 0 || t.rank() == 0)
            f2d2n::send_tensor(t, other, 2, 0, std::span<const std::uint32_t>(v), in(ms(20000)));
          if (send_buffer != 0 || t.rank() == 1) {
            std::vector<std::uint32_t> got(big);
            f2d2n::receive_tensor(t, other, 2, 0, std::span(got), in(ms(20000)));
            for (std::size_t i = 0; i < big; ++i)
              if (got[i] != static_cast<std::uint32_t>(i * 2654435761u + other)) FAIL("wrong element " << i);
          }
        },
        tls_options(send_buffer));
    rethrow_first(errors);
  }
}

TEST_CASE("tcp over TLS: another CA's certificate, no certificate, plain TCP: dropped; the real unit gets in") {
  constexpr unit_id world = 2;
  auto options = tls_options();
  options.handshake_timeout = ms(1000);
  tcp_transport unit0(0, world, fingerprint, options);
  const auto here = unit0.listen();
  auto connected = std::async(std::launch::async, [&] { unit0.connect({here, {"127.0.0.1", 1}}, in(ms(5000))); });
  // A unit whose certificate another CA signed (it trusts the cluster's CA): unit 0 refuses it.
  auto stranger_options = options;
  stranger_options.tls = tls_files::get().stranger;
  auto stranger = std::async(std::launch::async, [&] {
    tcp_transport s(1, world, fingerprint, stranger_options);
    try {
      s.connect({here, {"127.0.0.1", 1}}, in(ms(700)));
    } catch (const f2d2n::timeout_error& e) {
      return std::string(e.what());
    }
    return std::string("connected");
  });
  // A TLS client without a certificate; a plain-TCP client that proves the (empty) key.
  bool certificateless_in = true, plain_in = true;
  std::thread certificateless([&] {
    certificateless_client c(here);
    certificateless_in = c.gets_in();
  });
  std::thread plain([&] {  // the challenge of the key's exchange, where TLS is expected: no challenge comes back
    namespace d = f2d2n::detail::tcp_impl;
    raw_client c(here);
    c.write(d::encode_challenge(d::fresh_nonce()));
    const auto answer = c.read_some(d::challenge_bytes{}.size());
    plain_in = answer.size() == d::challenge_bytes{}.size();
  });
  certificateless.join();
  plain.join();
  CHECK_FALSE(certificateless_in);
  CHECK_FALSE(plain_in);
  const std::string refused = stranger.get();
  CAPTURE(refused);
  CHECK(refused.find("certificate") != std::string::npos);
  // The real unit 1 still gets in, and frames move.
  tcp_transport unit1(1, world, fingerprint, options);
  unit1.connect({here, {"127.0.0.1", 1}}, in(ms(5000)));
  connected.get();
  std::vector<float> v(1000, 4.5f), got(1000);
  f2d2n::send_tensor(unit1, 0, 3, 1, std::span<const float>(v), in(ms(5000)));
  f2d2n::receive_tensor(unit0, 1, 3, 1, std::span(got), in(ms(5000)));
  CHECK(got == v);
}

TEST_CASE("tcp over TLS: a connection silent in its TLS handshake is closed at the handshake deadline") {
  auto options = tls_options();
  options.handshake_timeout = ms(300);
  tcp_transport unit0(0, 2, fingerprint, options);
  const auto here = unit0.listen();
  auto connecting = std::async(std::launch::async, [&] {
    try {
      unit0.connect({here, {"127.0.0.1", 1}}, in(ms(1500)));
    } catch (const f2d2n::timeout_error&) {
    }
  });
  raw_client silent(here);
  const auto t0 = f2d2n::clock::now();
  CHECK(silent.read_some(1).empty());  // closed by the unit, without a byte
  CHECK(since(t0) < 0.3 + 1.0);
  connecting.get();
}

TEST_CASE("tcp over TLS: deadlines, the goodbye of a shutdown and a failure's reason pass through TLS") {
  std::atomic<bool> timed_out{false};
  const auto errors = run_cluster(
      2,
      [&](tcp_transport& t) {
        std::vector<float> v(8, 1.5f);
        if (t.rank() == 0) {
          const auto t0 = f2d2n::clock::now();
          CHECK_THROWS_AS(f2d2n::receive_tensor(t, 1, 7, 3, std::span(v), in(ms(300))), f2d2n::timeout_error);
          CHECK(since(t0) >= 0.29);
          CHECK(since(t0) < 0.3 + 2.0);
          timed_out = true;
          f2d2n::receive_tensor(t, 1, 7, 3, std::span(v), in(ms(5000)));  // the link is still usable
          CHECK(v[0] == 2.5f);
          try {
            f2d2n::receive_tensor(t, 1, 7, 4, std::span(v), in(ms(5000)));
            FAIL("a message arrived");
          } catch (const f2d2n::peer_error& e) {
            CHECK(std::string(e.what()).find("unit 1 failed first") != std::string::npos);
            CHECK(std::string(e.what()).find("it broke on purpose") != std::string::npos);
          }
          return;
        }
        while (!timed_out) std::this_thread::sleep_for(ms(5));
        std::fill(v.begin(), v.end(), 2.5f);
        f2d2n::send_tensor(t, 0, 7, 3, std::span<const float>(v), in(ms(5000)));
        throw std::runtime_error("it broke on purpose");  // run_cluster shuts down with the reason
      },
      tls_options());
  CHECK_FALSE(errors[0]);
  REQUIRE(errors[1]);
}

TEST_CASE("tcp over TLS: an attacker on the path sees no clear text, and a changed byte is detected") {
  auto options = tls_options();
  tcp_transport unit0(0, 2, fingerprint, options);
  tcp_transport unit1(1, 2, fingerprint, options);
  const auto here0 = unit0.listen();
  relay path(here0);
  auto connected = std::async(std::launch::async, [&] { unit0.connect({here0, {"127.0.0.1", 1}}, in(ms(5000))); });
  unit1.connect({path.here, {"127.0.0.1", 1}}, in(ms(5000)));  // unit 1 reaches unit 0 through the relay
  connected.get();
  const std::string secret = "f2d2n-secret-gradient-bytes-";
  std::string text;
  while (text.size() < 4096) text += secret;
  const auto bytes = std::span<const char>(text.data(), text.size());
  std::vector<char> got(text.size());
  f2d2n::send_tensor(unit1, 0, 3, 1, bytes, in(ms(5000)));
  f2d2n::receive_tensor(unit0, 1, 3, 1, std::span(got), in(ms(5000)));
  CHECK(std::string(got.data(), got.size()) == text);
  CHECK_FALSE(path.saw(secret));
  path.tamper = true;
  f2d2n::send_tensor(unit1, 0, 3, 2, bytes, in(ms(5000)));
  try {
    f2d2n::receive_tensor(unit0, 1, 3, 2, std::span(got), in(ms(5000)));
    FAIL("a changed frame was taken");
  } catch (const f2d2n::peer_error& e) {
    CHECK(path.tampered);
    CHECK(std::string(e.what()).find("TLS") != std::string::npos);
  }
}

TEST_CASE("tcp over TLS: unreadable files and half-set variables are configuration errors that name them") {
  auto options = tls_options();
  options.tls->private_key_file = tls_files::get().dir + "/missing.key";
  try {
    tcp_transport t(0, 2, fingerprint, options);
    FAIL("a unit started without its key");
  } catch (const f2d2n::configuration_error& e) {
    CHECK(std::string(e.what()).find("missing.key") != std::string::npos);
  }
  options = tls_options();
  options.tls->private_key_file = tls_files::get().dir + "/stranger.key";  // another certificate's key
  CHECK_THROWS_AS(tcp_transport(0, 2, fingerprint, options), f2d2n::configuration_error);
  ::setenv(f2d2n::tls_ca_variable, "ca.pem", 1);
  CHECK_THROWS_AS((void)f2d2n::tls_options_from_environment(), f2d2n::configuration_error);
  ::setenv(f2d2n::tls_cert_variable, "unit.pem", 1);
  ::setenv(f2d2n::tls_key_variable, "unit.key", 1);
  const auto o = f2d2n::tls_options_from_environment();
  REQUIRE(o);
  CHECK(o->certificate_file == "unit.pem");
  ::unsetenv(f2d2n::tls_ca_variable);
  ::unsetenv(f2d2n::tls_cert_variable);
  ::unsetenv(f2d2n::tls_key_variable);
  CHECK_FALSE(f2d2n::tls_options_from_environment());
}
