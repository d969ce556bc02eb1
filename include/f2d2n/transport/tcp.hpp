// f2d2n/transport/tcp.hpp: units as processes that talk over TCP (Boost.Asio, C++20 coroutines).
//
//   // one step: listen at peers[rank], connect to every other unit, handshake (options.connect_timeout)
//   f2d2n::tcp_transport t(rank, peers, plan_fingerprint);
//
//   // or in steps, e.g. to let the system pick the port:
//   f2d2n::tcp_transport t(rank, world_size, plan_fingerprint);
//   f2d2n::endpoint here = t.listen({"127.0.0.1", 0});
//   ... tell the others `here` ...
//   t.connect(peers, f2d2n::clock::now() + 10s);
//
// One connection per pair of units: unit r accepts the connections of the units above it and
// connects to the units below it, retrying until the deadline (units start at different times).
// On each connection both sides send a handshake (rank, world size, plan fingerprint, wire
// version); a mismatched peer is refused and both sides throw handshake_error saying what differs.
//
// One io thread per transport runs a boost::asio::io_context and sleeps in epoll when idle; each
// peer has its own strand, on which every operation with that peer runs. The public operations
// take a completion token (callbacks, use_future, use_awaitable) and a deadline; the blocking
// send / receive / exchange of the transport concept are built on the same operations, and run on
// the caller's thread instead (non-blocking reads and writes, poll() until the deadline) when the
// directions they use are idle, saving the hand-over to the io thread. Nothing is
// read from the wire before the header has been checked against what the caller expects, and
// nothing is allocated from a length the wire announces. See docs/tcp.md.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/core/unit.hpp>
#include <f2d2n/transport/concept.hpp>
#include <f2d2n/transport/endpoint.hpp>
#include <f2d2n/wire/frame.hpp>

#include <utility>  // before Boost.Asio: 1.74's asio/awaitable.hpp needs it under g++ 12

#include <boost/archive/binary_iarchive.hpp>
#include <boost/archive/binary_oarchive.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/execution.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>
#include <boost/system/system_error.hpp>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <initializer_list>
#include <ios>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

namespace f2d2n {

/// How a tcp_transport connects, what it accepts, how much it buffers.
struct tcp_options {
  /// How long the one-step constructor may take to connect to every unit and handshake.
  std::chrono::milliseconds connect_timeout{10000};
  /// The largest payload accepted from the wire (checked before anything is read or stored).
  std::uint64_t max_frame = wire::default_max_frame;
  /// Bind the listening socket to every interface (0.0.0.0 or ::) instead of the listen address.
  bool listen_any = false;
  /// Bytes of frames, per peer, that the blocking send() may copy when the socket cannot take
  /// them at once, so that it returns without waiting for the peer to read. Beyond it send()
  /// waits (until its deadline) for the peer. 0: send() always waits until the kernel has the frame.
  std::uint64_t send_buffer = std::uint64_t{256} << 20;
  /// How long shutdown() may spend delivering frames still queued, then the goodbye frame.
  std::chrono::milliseconds linger{2000};
};

namespace detail::tcp_impl {

namespace asio = boost::asio;
using error_code = boost::system::error_code;
using socket_type = asio::ip::tcp::socket;
using acceptor_type = asio::ip::tcp::acceptor;
using strand_type = asio::strand<asio::io_context::executor_type>;
using timer_type = asio::steady_timer;

/// A handshake or goodbye payload above this is refused before it is read.
inline constexpr std::size_t max_handshake_payload = 4096;
/// Handshake frames: message 0 is the hello, message 1 the verdict "accepted".
inline constexpr std::uint32_t hello_message = 0;
inline constexpr std::uint32_t verdict_message = 1;

/// What a unit claims when it connects.
struct hello {
  unit_id rank = 0;
  unit_id world_size = 0;
  std::uint64_t fingerprint = 0;
  std::uint16_t version = wire::wire_version;
};

/// The hello as a Boost.Serialization binary archive (no_header): four fields, native byte order.
[[nodiscard]] inline std::vector<std::byte> encode_hello(const hello& h) {
  std::ostringstream os(std::ios::binary);
  {
    boost::archive::binary_oarchive ar(os, boost::archive::no_header);
    ar << h.rank << h.world_size << h.fingerprint << h.version;
  }
  const std::string s = os.str();
  std::vector<std::byte> bytes(s.size());
  if (!s.empty()) std::memcpy(bytes.data(), s.data(), s.size());
  return bytes;
}

/// The hello in `bytes`, or nothing when they are not exactly one encoded hello.
[[nodiscard]] inline std::optional<hello> decode_hello(std::span<const std::byte> bytes) {
  try {
    std::istringstream is(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()), std::ios::binary);
    boost::archive::binary_iarchive ar(is, boost::archive::no_header);
    hello h;
    ar >> h.rank >> h.world_size >> h.fingerprint >> h.version;
    if (is.rdbuf()->in_avail() != 0) return std::nullopt;  // trailing bytes: not a hello of this version
    return h;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

[[nodiscard]] inline std::string hex(std::uint64_t v) {
  std::array<char, 19> b{};
  std::snprintf(b.data(), b.size(), "0x%016llx", static_cast<unsigned long long>(v));
  return b.data();
}

[[nodiscard]] inline std::string describe(const endpoint& e) {
  const std::string host = e.host.empty() ? std::string("127.0.0.1") : e.host;
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(e.port);
}

/// What differs between two claims, in words both sides can print ("" when nothing does).
[[nodiscard]] inline std::string differences(const hello& a, const hello& b) {
  std::string d;
  auto add = [&d](const std::string& s) { d += (d.empty() ? "" : "; ") + s; };
  const std::string ua = "unit " + std::to_string(a.rank), ub = "unit " + std::to_string(b.rank);
  if (a.version != b.version)
    add(ua + " speaks wire version " + std::to_string(a.version) + ", " + ub + " version " + std::to_string(b.version));
  if (a.world_size != b.world_size)
    add(ua + " has world size " + std::to_string(a.world_size) + ", " + ub + " world size " + std::to_string(b.world_size));
  if (a.fingerprint != b.fingerprint)
    add(ua + " runs plan fingerprint " + hex(a.fingerprint) + ", " + ub + " plan fingerprint " + hex(b.fingerprint));
  return d;
}

/// Why an operation failed. It travels from the io thread to the thread that waits, which builds
/// the typed exception itself: an exception object never passes between threads on the blocking
/// path (ThreadSanitizer cannot see libstdc++'s reference counting of exception_ptr).
struct failure {
  enum class kind { none, timeout, peer, protocol, handshake, configuration };
  kind what = kind::none;
  comm_context where{};
  frame_problem problem = frame_problem::truncated;
  std::string text;  // the detail, without the "f2d2n: unit ..., peer ...: " prefix

  explicit operator bool() const noexcept { return what != kind::none; }

  static failure timeout(const comm_context& w, std::string t) { return {kind::timeout, w, {}, std::move(t)}; }
  static failure peer(const comm_context& w, std::string t) { return {kind::peer, w, {}, std::move(t)}; }
  static failure handshake(const comm_context& w, std::string t) { return {kind::handshake, w, {}, std::move(t)}; }
  static failure configuration(const comm_context& w, std::string t) {
    return {kind::configuration, w, {}, "f2d2n: " + w.describe() + ": " + std::move(t)};
  }

  /// The failure an exception stands for; `fallback` names the place when the exception does not.
  static failure capture(const std::exception_ptr& e, const comm_context& fallback) {
    auto detail = [](const comm_error& x, const std::string& more) {
      const std::string prefix = "f2d2n: " + x.where().describe() + ": " + more;
      const std::string all = x.what();
      return all.compare(0, prefix.size(), prefix) == 0 ? all.substr(prefix.size()) : all;
    };
    try {
      std::rethrow_exception(e);
    } catch (const protocol_error& x) {
      return {kind::protocol, x.where(), x.problem(), detail(x, std::string(to_string(x.problem())) + ": ")};
    } catch (const timeout_error& x) {
      return {kind::timeout, x.where(), {}, detail(x, "")};
    } catch (const handshake_error& x) {
      return {kind::handshake, x.where(), {}, detail(x, "")};
    } catch (const comm_error& x) {
      return {kind::peer, x.where(), {}, detail(x, "")};
    } catch (const configuration_error& x) {
      return {kind::configuration, fallback, {}, x.what()};
    } catch (const std::exception& x) {
      return {kind::peer, fallback, {}, x.what()};
    } catch (...) {
      return {kind::peer, fallback, {}, "unknown error"};
    }
  }

  [[noreturn]] void raise() const {
    switch (what) {
      case kind::timeout: throw timeout_error(where, text);
      case kind::protocol: throw protocol_error(where, problem, text);
      case kind::handshake: throw handshake_error(where, text);
      case kind::configuration: throw configuration_error(text);
      case kind::none:
      case kind::peer: break;
    }
    throw peer_error(where, text);
  }

  [[nodiscard]] std::exception_ptr to_exception_ptr() const {
    if (!*this) return nullptr;
    try {
      raise();
    } catch (...) {
      return std::current_exception();
    }
  }

  [[nodiscard]] std::string message() const {
    try {
      raise();
    } catch (const std::exception& x) {
      return x.what();
    }
  }
};

/// The executor that keeps `ex`'s execution context busy while an operation is pending.
template <class Executor>
auto tracked(const Executor& ex) {
  if constexpr (asio::execution::is_executor<Executor>::value)
    return asio::prefer(ex, asio::execution::outstanding_work.tracked);
  else
    return asio::make_work_guard(ex);  // Networking TS style executor
}

/// Marks a completion handler of the public API: it receives std::exception_ptr, not failure.
struct public_handler_t {};
inline constexpr public_handler_t public_handler{};

/// A completion handler with its type erased, so that queued operations of every token type fit
/// one queue; an operation yields a failure (empty on success) and `Results`. Calling it hands
/// them to the handler through the handler's associated executor (inline when that is where it
/// runs already) and releases the work it held there. A public handler gets the failure as a
/// std::exception_ptr, made on its own executor.
template <class... Results>
class completion {
 public:
  completion() = default;
  template <class Handler, class Fallback>
  completion(Handler&& h, const Fallback& fallback)
      : p_(std::make_unique<impl<std::decay_t<Handler>, Fallback, false>>(std::forward<Handler>(h), fallback)) {}
  template <class Handler, class Fallback>
  completion(public_handler_t, Handler&& h, const Fallback& fallback)
      : p_(std::make_unique<impl<std::decay_t<Handler>, Fallback, true>>(std::forward<Handler>(h), fallback)) {}

  explicit operator bool() const noexcept { return p_ != nullptr; }

  void operator()(failure f, Results... results) {
    auto p = std::move(p_);
    p->invoke(std::move(f), std::move(results)...);
  }

 private:
  struct base {
    virtual ~base() = default;
    virtual void invoke(failure f, Results... results) = 0;
  };
  template <class Handler, class Fallback, bool Public>
  struct impl final : base {
    impl(Handler h, const Fallback& fallback)
        : handler(std::move(h)), work(tracked(asio::get_associated_executor(handler, fallback))) {}
    void invoke(failure f, Results... results) override {
      auto run = [h = std::move(handler), f = std::move(f), ... r = std::move(results)]() mutable {
        if constexpr (Public)
          std::move(h)(f.to_exception_ptr(), std::move(r)...);
        else
          std::move(h)(std::move(f), std::move(r)...);
      };
      if constexpr (asio::execution::is_executor<decltype(work)>::value)
        asio::dispatch(work, std::move(run));
      else
        asio::dispatch(work.get_executor(), std::move(run));
    }
    Handler handler;
    decltype(tracked(asio::get_associated_executor(std::declval<Handler&>(), std::declval<const Fallback&>()))) work;
  };
  std::unique_ptr<base> p_;
};

using send_completion = completion<>;
using receive_completion = completion<wire::frame_header>;

/// Where a blocking call waits for its operation; the operation's own deadline timer answers it.
template <class... Results>
struct sync_wait {
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  failure f;
  std::tuple<Results...> results;

  /// The completion handler that answers this wait.
  static auto handler(std::shared_ptr<sync_wait> w) {
    return [w](failure f, Results... r) {
      {
        const std::lock_guard lock(w->m);
        w->f = std::move(f);
        w->results = std::tuple<Results...>(std::move(r)...);
        w->done = true;
      }
      w->cv.notify_all();
    };
  }
  /// Waits for the answer (the operation's deadline timer bounds the wait).
  void wait() {
    std::unique_lock lock(m);
    cv.wait(lock, [this] { return done; });
  }
  /// Waits for the answer; throws the typed error of a failure.
  std::tuple<Results...> get() {
    wait();
    if (f) f.raise();
    return std::move(results);
  }
};

/// A frame on its way to a peer: written from the caller's memory, or from `owned` once copied.
struct send_op {
  wire::header_bytes header{};
  std::span<const std::byte> payload;
  std::vector<std::byte> owned;  // bytes [copied_at, total) of the frame, once copied
  bool copied = false;
  std::size_t copied_at = 0;
  std::size_t sent = 0;   // bytes of header + payload the kernel has taken
  std::size_t total = 0;  // header + payload
  bool may_copy = false;  // a blocking send(): may be copied and answered before it is written
  comm_context where;
  std::unique_ptr<timer_type> timer;
  send_completion done;  // empty once the caller has its answer

  [[nodiscard]] std::array<asio::const_buffer, 2> rest() const {
    if (copied) return {asio::buffer(owned.data() + (sent - copied_at), total - sent), asio::const_buffer()};
    if (sent < wire::header_size)
      return {asio::buffer(header.data() + sent, wire::header_size - sent), asio::buffer(payload.data(), payload.size())};
    const std::size_t off = sent - wire::header_size;
    return {asio::buffer(payload.data() + off, payload.size() - off), asio::const_buffer()};
  }
  void copy_rest() {
    owned.resize(total - sent);
    std::size_t at = 0;
    for (const auto& b : rest()) {
      if (b.size() != 0) std::memcpy(owned.data() + at, b.data(), b.size());
      at += b.size();
    }
    copied_at = sent;
    copied = true;
  }
};

/// A receive waiting for its frame: the header is read into `header_bytes`, the payload into `out`.
struct receive_op {
  wire::expectation expected;
  std::span<std::byte> out;
  wire::header_bytes header_bytes{};
  wire::frame_header header{};
  std::size_t got = 0;         // bytes of the frame read so far (header + payload)
  bool have_header = false;    // header read and accepted
  bool goodbye = false;        // the frame is the peer's goodbye
  comm_context where;
  std::unique_ptr<timer_type> timer;
  receive_completion done;

  [[nodiscard]] std::size_t total() const noexcept {
    return wire::header_size + (have_header ? static_cast<std::size_t>(header.payload_length) : 0);
  }
};

/// The connection to one peer. Its strand runs the queued operations; everything below `m` is
/// touched only with `m` held, by the strand or by a caller's thread on the fast path of a
/// blocking call (recursive: completion handlers may run inline on the strand and start more).
struct link {
  link(asio::io_context& io, unit_id p, socket_type s)
      : peer(p), strand(asio::make_strand(io)), socket(std::move(s)), fd(socket.native_handle()) {}
  unit_id peer;
  strand_type strand;
  std::recursive_mutex m;
  socket_type socket;
  int fd;                     // the socket's descriptor, for poll() on a caller's thread
  bool tx_caller = false;     // a caller's thread writes a frame: the strand writes nothing meanwhile
  bool rx_caller = false;     // a caller's thread reads a frame: the strand reads nothing meanwhile
  bool close_deferred = false;  // shutdown() closed the link while a caller's thread held it
  std::deque<std::shared_ptr<send_op>> sends;
  std::uint64_t backlog = 0;  // bytes copied and not yet written
  bool writing = false;       // a writer coroutine waits for the socket to take more
  std::deque<std::shared_ptr<receive_op>> receives;
  bool reading = false;       // a reader coroutine waits for bytes
  std::string goodbye_text;   // the payload of the peer's goodbye frame
  std::string tx_down;        // why frames can no longer be sent ("" while they can)
  std::string rx_down;        // why frames can no longer be received
  bool closing = false;       // this unit is shutting the link down
};

/// The state of one connect(). A pair whose handshake fails does not stop the others: every
/// pair settles (connected or refused, so that each unit hears its own verdict from every peer),
/// then connect() succeeds as a whole or throws the first refusal.
struct setup_session {
  setup_session(const strand_type& strand, std::vector<endpoint> p, deadline u, unit_id world)
      : peers(std::move(p)), until(u), timer(strand), ready(world), claimed(world, false), settled(world, false),
        problems(world) {}
  std::vector<endpoint> peers;
  deadline until;
  timer_type timer;
  std::vector<std::optional<socket_type>> ready;  // handshaken connections, by peer
  std::vector<bool> claimed;                      // units whose hello was accepted
  std::vector<bool> settled;                      // units whose pair is connected or refused
  std::vector<std::string> problems;              // last failure to reach each unit
  std::vector<socket_type*> open;                 // connections in the middle of their handshake
  std::size_t unsettled = 0;
  failure first;                                  // the first failure (a handshake refusal first)
  bool finished = false;
  std::promise<failure> result;  // a failure, not an exception: see failure
};

/// Keeps a socket in the session's list of open connections while its handshake runs.
class open_guard {
 public:
  open_guard(setup_session& s, socket_type* p) : s_(&s), p_(p) { s_->open.push_back(p_); }
  open_guard(const open_guard&) = delete;
  open_guard& operator=(const open_guard&) = delete;
  ~open_guard() { release(); }
  void release() {
    if (!p_) return;
    std::erase(s_->open, p_);
    p_ = nullptr;
  }

 private:
  setup_session* s_;
  socket_type* p_;
};

template <class Op>
void cancel_timer(Op& op) {
  if (op.timer) op.timer->cancel();
}
inline void finish(send_op& op, failure f = {}) {
  cancel_timer(op);
  if (op.done) op.done(std::move(f));
}
inline void finish(receive_op& op, failure f, const wire::frame_header& h = {}) {
  cancel_timer(op);
  if (op.done) op.done(std::move(f), h);
}

/// How far one pass over a socket took an operation.
enum class progress { wait, complete, failed };

[[nodiscard]] inline bool would_block(const error_code& ec) {
  return ec == asio::error::would_block || ec == asio::error::try_again;
}

[[nodiscard]] inline std::string connection_failure(const error_code& ec) {
  if (ec == asio::error::eof || ec == asio::error::broken_pipe || ec == asio::error::connection_reset)
    return "the connection was closed by the peer (" + ec.message() + ")";
  return "the connection failed: " + ec.message();
}

/// A pipe that shutdown() writes to once, so that a caller's thread asleep in poll() on the fast
/// path of a blocking call wakes at once (it stays readable afterwards).
class wake_pipe {
 public:
  wake_pipe() {
    if (::pipe(fd_.data()) != 0) throw configuration_error("f2d2n: cannot create a pipe for the transport");
    for (const int f : fd_) (void)::fcntl(f, F_SETFD, FD_CLOEXEC);
    (void)::fcntl(fd_[1], F_SETFL, O_NONBLOCK);
  }
  wake_pipe(const wake_pipe&) = delete;
  wake_pipe& operator=(const wake_pipe&) = delete;
  ~wake_pipe() {
    for (const int f : fd_) (void)::close(f);
  }
  void signal() const noexcept {
    const char b = 1;
    (void)!::write(fd_[1], &b, 1);
  }
  [[nodiscard]] int read_end() const noexcept { return fd_[0]; }

 private:
  std::array<int, 2> fd_{-1, -1};
};

/// One unit's end of every connection, its io thread and its operations.
class engine {
 public:
  engine(unit_id rank, unit_id world_size, std::uint64_t fingerprint, const tcp_options& options)
      : rank_(rank), world_(world_size), fingerprint_(fingerprint), options_(options), io_(1),
        work_(asio::make_work_guard(io_)), setup_(asio::make_strand(io_)) {
    if (world_size == 0) throw configuration_error("f2d2n: a cluster needs at least one unit");
    if (rank >= world_size)
      throw configuration_error("f2d2n: unit " + std::to_string(rank) + " does not exist in a world of " +
                                std::to_string(world_size));
    links_.resize(world_size);
    auto finished = std::make_shared<std::promise<void>>();
    thread_done_ = finished->get_future();
    thread_ = std::thread([this, finished] {
      io_.run();  // an exception from a completion handler ends the process, as from any thread
      finished->set_value();
    });
  }
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  ~engine() {
    try {
      shutdown();
    } catch (...) {  // destructors do not throw; the links are closed either way below
    }
    work_.reset();
    // Every operation is finished and every socket closed: run() returns on its own. If it does
    // not within the linger time, something still waits; stop rather than hang.
    if (thread_done_.wait_for(options_.linger + std::chrono::seconds(5)) != std::future_status::ready) io_.stop();
    thread_.join();
  }

  [[nodiscard]] unit_id rank() const noexcept { return rank_; }
  [[nodiscard]] unit_id world_size() const noexcept { return world_; }
  [[nodiscard]] std::uint64_t fingerprint() const noexcept { return fingerprint_; }
  [[nodiscard]] const tcp_options& options() const noexcept { return options_; }
  [[nodiscard]] asio::io_context::executor_type executor() noexcept { return io_.get_executor(); }
  [[nodiscard]] bool on_io_thread() const noexcept { return std::this_thread::get_id() == thread_.get_id(); }

  // ---- listening and connecting ----

  endpoint listen(const endpoint& where) {
    if (acceptor_) throw configuration_error("f2d2n: unit " + std::to_string(rank_) + " is listening already");
    const std::string host = where.host.empty() ? std::string("127.0.0.1") : where.host;
    asio::ip::tcp::endpoint at;
    error_code ec;
    const auto addr = asio::ip::make_address(host, ec);
    if (!ec) {
      at = {addr, where.port};
    } else {
      asio::ip::tcp::resolver resolver(io_);
      const auto found = resolver.resolve(host, std::to_string(where.port), ec);
      if (ec || found.empty())
        throw configuration_error("f2d2n: unit " + std::to_string(rank_) + " cannot resolve " + host + ": " + ec.message());
      at = found.begin()->endpoint();
    }
    if (options_.listen_any)
      at = {at.address().is_v6() ? asio::ip::address(asio::ip::address_v6::any()) : asio::ip::address(asio::ip::address_v4::any()),
            at.port()};
    acceptor_.emplace(io_);
    acceptor_->open(at.protocol(), ec);
    if (!ec) acceptor_->set_option(acceptor_type::reuse_address(true), ec);
    if (!ec) acceptor_->bind(at, ec);
    if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      acceptor_.reset();
      throw configuration_error("f2d2n: unit " + std::to_string(rank_) + " cannot listen on " + at.address().to_string() +
                                ":" + std::to_string(at.port()) + ": " + ec.message());
    }
    return local_endpoint();
  }

  [[nodiscard]] endpoint local_endpoint() const {
    if (!acceptor_) return {};
    error_code ec;
    const auto e = acceptor_->local_endpoint(ec);
    if (ec) return {};
    return {e.address().to_string(), e.port()};
  }

  void connect(std::vector<endpoint> peers, deadline until) {
    if (on_io_thread()) throw configuration_error("f2d2n: connect() cannot run on the transport's own io thread");
    if (peers.size() != world_)
      throw configuration_error("f2d2n: unit " + std::to_string(rank_) + " has world size " + std::to_string(world_) +
                                " but was given " + std::to_string(peers.size()) + " endpoints");
    if (connect_started_) throw configuration_error("f2d2n: unit " + std::to_string(rank_) + " was connected already");
    if (shut_) throw configuration_error("f2d2n: unit " + std::to_string(rank_) + " has shut down");
    connect_started_ = true;
    if (world_ == 1) return;
    const bool accepts = rank_ + 1 < world_;
    if (accepts && !acceptor_) listen(peers[rank_]);
    auto s = std::make_shared<setup_session>(setup_, std::move(peers), until, world_);
    s->unsettled = world_ - 1;
    auto result = s->result.get_future();
    asio::post(setup_, [this, s, accepts] {
      s->timer.expires_at(s->until);
      s->timer.async_wait([this, s](const error_code& ec) {
        if (!ec) setup_timed_out(*s);
      });
      if (accepts)
        asio::co_spawn(setup_, accept_loop(s), asio::bind_executor(setup_, [this, s](std::exception_ptr e) {
                         if (e) finish_setup(*s, failure::capture(e, {rank_, rank_, hello_message, 0}));
                       }));
      for (unit_id r = 0; r < rank_; ++r)
        asio::co_spawn(setup_, dial(s, r), asio::bind_executor(setup_, [this, s, r](std::exception_ptr e) {
                         if (e) pair_failed(*s, r, failure::capture(e, {rank_, r, hello_message, 0}));
                       }));
    });
    if (const failure f = result.get()) f.raise();  // the session's timer answers by `until`
  }

  // ---- operations ----

  void start_send(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload, deadline until,
                  bool may_copy, send_completion done) {
    const auto op = make_send_op(peer, header, payload, may_copy);
    op->done = std::move(done);
    std::string problem;
    link* l = link_for(peer, problem);
    if (l && header.payload_length != payload.size())
      problem = "the header announces " + std::to_string(header.payload_length) + " bytes for a payload of " +
                std::to_string(payload.size());
    if (!problem.empty()) {
      asio::post(io_, [op, f = failure::configuration(op->where, problem)]() mutable { finish(*op, std::move(f)); });
      return;
    }
    // Queued at once, so that a later call cannot overtake it on the fast path (run_here).
    {
      const std::lock_guard lock(l->m);
      if (!l->tx_down.empty()) problem = l->tx_down;
      else if (l->closing) problem = "this unit has shut down";
      else l->sends.push_back(op);
    }
    if (!problem.empty()) {
      asio::post(l->strand, [op, f = failure::peer(op->where, problem)]() mutable { finish(*op, std::move(f)); });
      return;
    }
    asio::post(l->strand, [this, l, op, until] {
      const std::lock_guard lock(l->m);
      enqueue_send(*l, op, until);
    });
  }

  void start_receive(unit_id peer, const wire::expectation& expected, std::span<std::byte> out, deadline until,
                     receive_completion done) {
    auto op = std::make_shared<receive_op>(make_receive_op(peer, expected, out));
    op->done = std::move(done);
    std::string problem;
    link* l = link_for(peer, problem);
    if (l && expected.payload_length > out.size())
      problem = "the message has " + std::to_string(expected.payload_length) + " bytes, the buffer " +
                std::to_string(out.size());
    if (!problem.empty()) {
      asio::post(io_, [op, f = failure::configuration(op->where, problem)]() mutable { finish(*op, std::move(f)); });
      return;
    }
    {
      const std::lock_guard lock(l->m);
      if (!l->rx_down.empty()) problem = l->rx_down;
      else l->receives.push_back(op);
    }
    if (!problem.empty()) {
      asio::post(l->strand, [op, f = failure::peer(op->where, problem)]() mutable { finish(*op, std::move(f)); });
      return;
    }
    asio::post(l->strand, [this, l, op, until] {
      const std::lock_guard lock(l->m);
      enqueue_receive(*l, op, until);
    });
  }

  // The blocking calls' fast path (run_here): each returns false / nothing, having done nothing,
  // when the call cannot run on the calling thread (a direction busy, a misuse to report); the
  // caller then takes the queued path, which also reports misuse. Failures are thrown here.

  bool send_here(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload, deadline until) {
    std::string problem;
    link* l = link_for(peer, problem);
    if (!l || header.payload_length != payload.size()) return false;
    const auto op = make_send_op(peer, header, payload, true);
    failure sf, rf;
    if (!run_here(l, op, nullptr, nullptr, until, sf, rf)) return false;
    if (sf) sf.raise();
    return true;
  }

  std::optional<wire::frame_header> receive_here(unit_id peer, const wire::expectation& expected, std::span<std::byte> out,
                                                 deadline until) {
    std::string problem;
    link* l = link_for(peer, problem);
    if (!l || expected.payload_length > out.size()) return std::nullopt;
    receive_op op = make_receive_op(peer, expected, out);
    failure sf, rf;
    if (!run_here(nullptr, nullptr, l, &op, until, sf, rf)) return std::nullopt;
    if (rf) rf.raise();
    return op.header;
  }

  std::optional<wire::frame_header> exchange_here(unit_id to, const wire::frame_header& header,
                                                  std::span<const std::byte> payload, unit_id from,
                                                  const wire::expectation& expected, std::span<std::byte> out,
                                                  deadline until) {
    std::string problem;
    link* tl = link_for(to, problem);
    link* rl = link_for(from, problem);
    if (!tl || !rl || header.payload_length != payload.size() || expected.payload_length > out.size()) return std::nullopt;
    const auto s = make_send_op(to, header, payload, false);
    receive_op r = make_receive_op(from, expected, out);
    failure sf, rf;
    if (!run_here(tl, s, rl, &r, until, sf, rf)) return std::nullopt;
    if (sf) sf.raise();  // as the queued exchange: the send's failure first
    if (rf) rf.raise();
    return r.header;
  }

  /// Delivers what is queued (within options.linger), says goodbye to every peer and closes.
  void shutdown() {
    if (on_io_thread()) throw configuration_error("f2d2n: shutdown() cannot run on the transport's own io thread");
    if (shut_.exchange(true)) return;
    wake_.signal();
    struct countdown {
      std::atomic<std::size_t> left{0};
      std::promise<void> done;
    };
    auto c = std::make_shared<countdown>();
    std::size_t n = 0;
    for (auto& l : links_) n += l ? 1 : 0;
    c->left = n + 1;
    auto one_done = [c] {
      if (c->left.fetch_sub(1) == 1) c->done.set_value();
    };
    auto all = c->done.get_future();
    const deadline until = clock::now() + options_.linger;
    for (auto& l : links_)
      if (l) asio::post(l->strand, [this, p = l.get(), until, one_done] { close_link(*p, until, one_done); });
    asio::post(setup_, [this, one_done] {
      error_code ec;
      if (acceptor_) acceptor_->close(ec);
      one_done();
    });
    all.wait();  // bounded: each goodbye has the linger deadline
  }

 private:
  // ---- connection setup (on the setup strand) ----

  asio::awaitable<std::vector<asio::ip::tcp::endpoint>> resolve(const endpoint& e, comm_context where) {
    const std::string host = e.host.empty() ? std::string("127.0.0.1") : e.host;
    error_code ec;
    const auto addr = asio::ip::make_address(host, ec);
    if (!ec) co_return std::vector<asio::ip::tcp::endpoint>{{addr, e.port}};
    asio::ip::tcp::resolver resolver(setup_);
    const auto found =
        co_await resolver.async_resolve(host, std::to_string(e.port), asio::redirect_error(asio::use_awaitable, ec));
    if (ec || found.empty()) throw peer_error(where, "cannot resolve " + describe(e) + ": " + ec.message());
    std::vector<asio::ip::tcp::endpoint> all;
    for (const auto& r : found) all.push_back(r.endpoint());
    co_return all;
  }

  asio::awaitable<void> dial(std::shared_ptr<setup_session> s, unit_id r) {
    const comm_context where{rank_, r, hello_message, 0};
    socket_type sock(io_);
    open_guard guard(*s, &sock);
    const auto targets = co_await resolve(s->peers[r], where);
    timer_type pause(setup_);
    auto backoff = std::chrono::milliseconds(10);
    for (;;) {
      if (s->finished) co_return;
      error_code ec;
      for (const auto& t : targets) {
        error_code ignored;
        sock.close(ignored);
        sock.open(t.protocol(), ignored);
        // So that this connection's ephemeral port never keeps a unit that starts later from
        // listening there (Linux lets a listener share a port with connections that all set it).
        sock.set_option(socket_type::reuse_address(true), ignored);
        co_await sock.async_connect(t, asio::redirect_error(asio::use_awaitable, ec));
        if (!ec) break;
      }
      if (!ec) break;
      if (s->finished) co_return;
      s->problems[r] = describe(s->peers[r]) + ": " + ec.message();
      pause.expires_after(backoff);
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      backoff = std::min(backoff * 2, std::chrono::milliseconds(200));
    }
    error_code ignored;
    sock.set_option(asio::ip::tcp::no_delay(true), ignored);
    s->problems[r].clear();
    const unit_id peer = co_await handshake(s, sock, r);
    if (s->finished) co_return;
    guard.release();
    s->ready[peer].emplace(std::move(sock));
    pair_connected(*s, peer);
  }

  asio::awaitable<void> accept_loop(std::shared_ptr<setup_session> s) {
    for (;;) {
      socket_type sock(io_);
      error_code ec;
      co_await acceptor_->async_accept(sock, asio::redirect_error(asio::use_awaitable, ec));
      if (s->finished || ec == asio::error::operation_aborted || !acceptor_->is_open()) co_return;
      if (ec) continue;  // e.g. the connection was reset before it was accepted
      asio::co_spawn(setup_, serve(s, std::move(sock)), asio::bind_executor(setup_, [this, s](std::exception_ptr e) {
                       if (!e) return;
                       // A refusal names the unit the peer claimed to be; a connection that failed
                       // before saying who it is settles no pair (that unit may still come).
                       const failure f = failure::capture(e, {rank_, rank_, hello_message, 0});
                       if (f.what == failure::kind::handshake && f.where.peer > rank_ && f.where.peer < world_)
                         pair_failed(*s, f.where.peer, f);
                     }));
    }
  }

  asio::awaitable<void> serve(std::shared_ptr<setup_session> s, socket_type sock) {
    open_guard guard(*s, &sock);
    error_code ignored;
    sock.set_option(asio::ip::tcp::no_delay(true), ignored);
    const unit_id peer = co_await handshake(s, sock, std::nullopt);
    if (s->finished) co_return;
    guard.release();
    s->ready[peer].emplace(std::move(sock));
    pair_connected(*s, peer);
  }

  asio::awaitable<void> write_frame(socket_type& sock, wire::frame_kind kind, std::uint32_t message,
                                    std::span<const std::byte> payload) {
    const auto header = wire::encode(wire::make_header(kind, fingerprint_, message, rank_, 0, payload));
    const std::array<asio::const_buffer, 2> bufs{asio::buffer(header), asio::buffer(payload.data(), payload.size())};
    co_await asio::async_write(sock, bufs, asio::use_awaitable);
  }

  /// Reads one handshake or goodbye frame; its payload is bounded before it is read.
  asio::awaitable<std::pair<wire::frame_header, std::vector<std::byte>>> read_handshake_frame(socket_type& sock,
                                                                                               comm_context where) {
    wire::header_bytes b{};
    co_await asio::async_read(sock, asio::buffer(b), asio::use_awaitable);
    const wire::frame_header h = wire::decode(b, where);
    if (h.kind != wire::frame_kind::handshake && h.kind != wire::frame_kind::goodbye)
      throw protocol_error(where, frame_problem::bad_kind,
                           "frame kind " + std::to_string(static_cast<int>(h.kind)) + " during the handshake");
    if (h.payload_length > max_handshake_payload)
      throw protocol_error(where, frame_problem::too_large,
                           "a handshake of " + std::to_string(h.payload_length) + " bytes exceeds " +
                               std::to_string(max_handshake_payload));
    std::vector<std::byte> payload(static_cast<std::size_t>(h.payload_length));
    if (!payload.empty()) co_await asio::async_read(sock, asio::buffer(payload), asio::use_awaitable);
    wire::verify(h, payload, where);
    co_return std::pair<wire::frame_header, std::vector<std::byte>>{h, std::move(payload)};
  }

  static std::string text_of(std::span<const std::byte> p) { return {reinterpret_cast<const char*>(p.data()), p.size()}; }

  /// Both sides send a hello, check the other's, then send a verdict (accepted, or a goodbye
  /// saying what differs) and read the other's. Returns the peer's rank.
  asio::awaitable<unit_id> handshake(std::shared_ptr<setup_session> s, socket_type& sock, std::optional<unit_id> expected) {
    const hello mine{rank_, world_, fingerprint_, wire::wire_version};
    comm_context where{rank_, expected.value_or(rank_), hello_message, 0};
    try {
      const auto payload = encode_hello(mine);
      co_await write_frame(sock, wire::frame_kind::handshake, hello_message, payload);
      auto [h, p] = co_await read_handshake_frame(sock, where);
      if (!expected) where.peer = h.sender;
      if (h.kind == wire::frame_kind::goodbye) throw handshake_error(where, "the peer refused the handshake: " + text_of(p));
      if (h.message_id != hello_message)
        throw protocol_error(where, frame_problem::wrong_message, "handshake message " + std::to_string(h.message_id));
      const auto theirs = decode_hello(p);
      if (!theirs) throw handshake_error(where, "the peer's hello cannot be read");
      if (!expected) where.peer = theirs->rank;
      // The lower rank first, so that both sides print the same words.
      std::string diff = rank_ < theirs->rank ? differences(mine, *theirs) : differences(*theirs, mine);
      if (diff.empty()) {
        const std::string ut = "unit " + std::to_string(theirs->rank), um = "unit " + std::to_string(rank_);
        if (expected && theirs->rank != *expected)
          diff = um + " expected unit " + std::to_string(*expected) + " at " + describe(s->peers[*expected]) +
                 ", the unit there says it is " + ut;
        else if (!expected && (theirs->rank <= rank_ || theirs->rank >= world_))
          diff = ut + " connected to " + um + ", but only units " + std::to_string(rank_ + 1) + " to " +
                 std::to_string(world_ - 1) + " connect to it";
        else if (!expected && s->claimed[theirs->rank])
          diff = ut + " connected to " + um + " twice";
      }
      if (!diff.empty()) {
        error_code ignored;
        const auto header = wire::encode(wire::make_header(wire::frame_kind::goodbye, fingerprint_, hello_message, rank_, 0,
                                                           std::as_bytes(std::span(diff))));
        const std::array<asio::const_buffer, 2> bufs{asio::buffer(header), asio::buffer(diff)};
        co_await asio::async_write(sock, bufs, asio::redirect_error(asio::use_awaitable, ignored));
        sock.shutdown(socket_type::shutdown_send, ignored);
        throw handshake_error(where, "handshake refused: " + diff);
      }
      if (!expected) s->claimed[theirs->rank] = true;
      co_await write_frame(sock, wire::frame_kind::handshake, verdict_message, {});
      auto [v, vp] = co_await read_handshake_frame(sock, where);
      if (v.kind == wire::frame_kind::goodbye) throw handshake_error(where, "the peer refused the handshake: " + text_of(vp));
      if (v.message_id != verdict_message || !vp.empty())
        throw protocol_error(where, frame_problem::wrong_message, "handshake message " + std::to_string(v.message_id));
      co_return theirs->rank;
    } catch (const boost::system::system_error& e) {
      if (e.code() == asio::error::eof)
        throw peer_error(where, "the peer closed the connection during the handshake");
      throw peer_error(where, "the handshake failed: " + e.code().message());
    }
  }

  void pair_connected(setup_session& s, unit_id peer) {
    if (s.finished || s.settled[peer]) return;
    s.settled[peer] = true;
    if (--s.unsettled == 0) finish_setup(s, s.first);
  }

  void pair_failed(setup_session& s, unit_id peer, failure f) {
    if (s.finished || s.settled[peer]) return;
    s.settled[peer] = true;
    if (!s.first || (s.first.what != failure::kind::handshake && f.what == failure::kind::handshake)) s.first = std::move(f);
    if (--s.unsettled == 0) finish_setup(s, s.first);
  }

  void setup_timed_out(setup_session& s) {
    if (s.first) return finish_setup(s, s.first);  // a refusal says more than the units still missing
    std::string missing;
    unit_id first = rank_;
    for (unit_id r = 0; r < world_; ++r) {
      if (r == rank_ || s.settled[r]) continue;
      if (first == rank_) first = r;
      missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      if (!s.problems[r].empty()) missing += " (" + s.problems[r] + ")";
    }
    const comm_context where{rank_, first, hello_message, 0};
    finish_setup(s, failure::timeout(where, "unit(s) " + missing + " did not connect and complete the handshake before "
                                                                  "the deadline"));
  }

  /// Writes a goodbye now if the socket takes it (a connection that is given up).
  void goodbye_now(socket_type& sock, const std::string& why) {
    error_code ec;
    const auto text = std::string_view(why).substr(0, max_handshake_payload);
    const auto header = wire::encode(
        wire::make_header(wire::frame_kind::goodbye, fingerprint_, hello_message, rank_, 0, std::as_bytes(std::span(text))));
    const std::array<asio::const_buffer, 2> bufs{asio::buffer(header), asio::buffer(text.data(), text.size())};
    sock.non_blocking(true, ec);
    if (!ec) sock.write_some(bufs, ec);
    sock.shutdown(socket_type::shutdown_send, ec);
    sock.close(ec);
  }

  void finish_setup(setup_session& s, failure err) {
    if (s.finished) return;
    s.finished = true;
    error_code ec;
    s.timer.cancel();
    if (acceptor_) acceptor_->close(ec);
    if (err) {
      const std::string why = "unit " + std::to_string(rank_) + " gave up connecting: " + err.message();
      for (socket_type* p : s.open) goodbye_now(*p, why);
      for (auto& r : s.ready)
        if (r) goodbye_now(*r, why);
      s.result.set_value(std::move(err));
      return;
    }
    for (unit_id r = 0; r < world_; ++r) {
      if (!s.ready[r]) continue;
      s.ready[r]->non_blocking(true, ec);
      links_[r] = std::make_unique<link>(io_, r, std::move(*s.ready[r]));
    }
    s.result.set_value({});
  }

  // ---- operations on the links ----

  [[nodiscard]] std::shared_ptr<send_op> make_send_op(unit_id peer, const wire::frame_header& header,
                                                      std::span<const std::byte> payload, bool may_copy) const {
    auto op = std::make_shared<send_op>();
    op->where = {rank_, peer, header.message_id, header.step};
    op->header = wire::encode(header);
    op->payload = payload;
    op->total = wire::header_size + payload.size();
    op->may_copy = may_copy;
    return op;
  }

  [[nodiscard]] receive_op make_receive_op(unit_id peer, const wire::expectation& expected, std::span<std::byte> out) const {
    receive_op op;
    op.where = {rank_, peer, expected.message_id, expected.step};
    op.expected = expected;
    op.out = out;
    return op;
  }

  [[nodiscard]] link* link_for(unit_id peer, std::string& problem) {
    if (peer >= world_) {
      problem = "unit " + std::to_string(peer) + " does not exist in a world of " + std::to_string(world_);
      return nullptr;
    }
    if (peer == rank_) {
      problem = "a unit does not send frames to itself over tcp";
      return nullptr;
    }
    if (!links_[peer]) {
      problem = "not connected to unit " + std::to_string(peer) + " (call connect() first)";
      return nullptr;
    }
    return links_[peer].get();
  }

  // ---- sending (on the peer's strand, or on a caller's thread that holds the link's tx) ----

  /// Writes what the socket takes of `op` now. On a failure the link's tx is down and `f` says why.
  progress advance_send(link& l, send_op& op, failure& f) {
    while (op.sent < op.total) {
      error_code ec;
      const std::size_t n = l.socket.write_some(op.rest(), ec);
      if (would_block(ec)) return progress::wait;
      if (ec) {
        l.tx_down = connection_failure(ec);
        f = failure::peer(op.where, l.tx_down);
        return progress::failed;
      }
      op.sent += n;
    }
    return progress::complete;
  }

  /// A send's deadline passed: the failure to report; a frame given up half-way puts tx down.
  static failure send_timed_out(link& l, const send_op& op) {
    if (op.sent == 0) return failure::timeout(op.where, "the peer took nothing of the frame before the deadline");
    l.tx_down = "a send gave up in the middle of a frame; the stream to this peer is out of sync";
    return failure::timeout(op.where, "the deadline passed after " + std::to_string(op.sent) + " of " +
                                          std::to_string(op.total) +
                                          " bytes of the frame were sent; the stream to this peer is unusable now");
  }

  void enqueue_send(link& l, const std::shared_ptr<send_op>& op, deadline until) {
    pump_send(l);
    if (op->done && until != deadline::max()) arm_send_timer(l, op, until);
  }

  void arm_send_timer(link& l, const std::shared_ptr<send_op>& op, deadline until) {
    op->timer = std::make_unique<timer_type>(l.strand, until);
    op->timer->async_wait([this, &l, w = std::weak_ptr<send_op>(op)](const error_code& ec) {
      if (ec) return;
      const std::lock_guard lock(l.m);
      if (auto o = w.lock()) send_expired(l, o);
    });
  }

  /// Writes what the socket takes now; copies what it does not take for blocking sends that fit
  /// the send buffer; leaves the rest to the writer coroutine. Leaves the queue alone while a
  /// caller's thread writes a frame (it hands the queue back when it is done).
  void pump_send(link& l) {
    while (!l.sends.empty()) {
      if (!l.tx_down.empty()) return fail_sends(l);
      if (l.tx_caller) return;
      const auto op = l.sends.front();
      failure f;
      switch (advance_send(l, *op, f)) {
        case progress::wait:
          absorb(l);
          return start_writer(l);
        case progress::failed:
          return fail_sends(l);
        case progress::complete:
          l.sends.pop_front();
          if (op->copied) l.backlog -= op->owned.size();
          finish(*op);
          break;
      }
    }
  }

  /// Answers the blocking sends whose rest fits the send buffer, by copying it.
  void absorb(link& l) {
    for (const auto& op : l.sends) {
      if (!op->done || op->copied || !op->may_copy) continue;
      const std::uint64_t rest = op->total - op->sent;
      if (l.backlog + rest > options_.send_buffer) break;
      op->copy_rest();
      l.backlog += rest;
      finish(*op);
    }
  }

  void start_writer(link& l) {
    if (l.writing) return;
    l.writing = true;
    asio::co_spawn(l.strand, writer(l), asio::detached);
  }

  asio::awaitable<void> writer(link& l) {
    for (;;) {
      {
        const std::lock_guard lock(l.m);
        if (l.sends.empty() || !l.tx_down.empty() || l.tx_caller) {
          l.writing = false;
          break;
        }
      }
      error_code ec;
      co_await l.socket.async_wait(socket_type::wait_write, asio::redirect_error(asio::use_awaitable, ec));
      const std::lock_guard lock(l.m);
      if (ec && !l.socket.is_open()) {
        l.writing = false;
        break;
      }
      if (ec && ec != asio::error::operation_aborted) {
        l.tx_down = connection_failure(ec);
        fail_sends(l);
        l.writing = false;
        break;
      }
      pump_send(l);
    }
  }

  void send_expired(link& l, const std::shared_ptr<send_op>& op) {
    if (!op->done) return;  // answered already
    const auto it = std::find(l.sends.begin(), l.sends.end(), op);
    if (it == l.sends.end()) return;
    l.sends.erase(it);
    finish(*op, send_timed_out(l, *op));
    if (!l.tx_down.empty()) fail_sends(l);
  }

  void fail_sends(link& l) {
    auto queue = std::exchange(l.sends, {});
    l.backlog = 0;
    for (const auto& op : queue) finish(*op, failure::peer(op->where, l.tx_down));
  }

  // ---- receiving (on the peer's strand, or on a caller's thread that holds the link's rx) ----

  /// Reads what the socket holds for `op`: the header, checked against the expectation before
  /// anything else is read, then the payload straight into the caller's buffer, then its checksum.
  /// On a failure the link's rx is down and `f` says why.
  progress advance_receive(link& l, receive_op& op, failure& f) {
    for (;;) {
      if (op.have_header && op.got == op.total()) return complete_frame(l, op, f);
      asio::mutable_buffer buf;
      if (!op.have_header)
        buf = asio::buffer(op.header_bytes.data() + op.got, wire::header_size - op.got);
      else if (op.goodbye)
        buf = asio::buffer(l.goodbye_text.data() + (op.got - wire::header_size), op.total() - op.got);
      else
        buf = asio::buffer(op.out.data() + (op.got - wire::header_size), op.total() - op.got);
      error_code ec;
      const std::size_t n = l.socket.read_some(buf, ec);
      if (would_block(ec)) return progress::wait;
      if (ec) {
        f = read_failed(l, op, ec);
        return progress::failed;
      }
      op.got += n;
      if (!op.have_header && op.got == wire::header_size && !accept_header(l, op, f)) return progress::failed;
    }
  }

  /// The header of `op` is complete: decode and check it (a goodbye ends the stream).
  bool accept_header(link& l, receive_op& op, failure& f) {
    try {
      op.header = wire::decode(op.header_bytes, op.where);
      if (op.header.kind == wire::frame_kind::goodbye) {
        if (op.header.payload_length > max_handshake_payload) {
          l.rx_down = "the peer has shut down";
          f = failure::peer(op.where, l.rx_down);
          return false;
        }
        op.goodbye = true;
        l.goodbye_text.assign(static_cast<std::size_t>(op.header.payload_length), '\0');
      } else {
        wire::check(op.header, op.expected, options_.max_frame, op.where);
      }
      op.have_header = true;
      return true;
    } catch (const protocol_error&) {
      f = rejected(l, failure::capture(std::current_exception(), op.where));
      return false;
    }
  }

  /// The whole frame of `op` has arrived: a goodbye ends the stream, data is verified.
  progress complete_frame(link& l, receive_op& op, failure& f) {
    if (op.goodbye) {
      l.rx_down = "the peer has shut down";
      if (!l.goodbye_text.empty()) l.rx_down += ": " + l.goodbye_text;
      if (l.tx_down.empty()) l.tx_down = l.rx_down;
      f = failure::peer(op.where, l.rx_down);
      return progress::failed;
    }
    const std::size_t len = static_cast<std::size_t>(op.header.payload_length);
    try {
      wire::verify(op.header, op.out.first(len), op.where);
    } catch (const protocol_error&) {
      f = rejected(l, failure::capture(std::current_exception(), op.where));
      return progress::failed;
    }
    return progress::complete;
  }

  /// A frame breaks the protocol: the stream from this peer is out of sync. Returns `f`.
  static failure rejected(link& l, failure f) {
    l.rx_down = std::string("an earlier frame from this peer was rejected (") + to_string(f.problem) +
                "); the stream from this peer is out of sync";
    return f;
  }

  static failure read_failed(link& l, const receive_op& op, const error_code& ec) {
    if (ec == asio::error::eof && op.got == 0) {
      l.rx_down = "the peer closed the connection without a goodbye";
      return failure::peer(op.where, l.rx_down);
    }
    if (ec == asio::error::eof) {
      l.rx_down = "the connection was closed in the middle of a frame";
      return failure{failure::kind::protocol, op.where, frame_problem::truncated,
                     "the connection closed after " + std::to_string(op.got) + " of " +
                         (op.have_header ? std::to_string(op.total()) + " bytes of the frame"
                                         : std::to_string(wire::header_size) + " bytes of the frame's header")};
    }
    l.rx_down = connection_failure(ec);
    if (l.tx_down.empty()) l.tx_down = l.rx_down;
    return failure::peer(op.where, l.rx_down);
  }

  /// A receive's deadline passed: the failure to report; a frame given up half-way puts rx down.
  static failure receive_timed_out(link& l, const receive_op& op) {
    if (op.got == 0) return failure::timeout(op.where, "no message arrived before the deadline");
    l.rx_down = "a receive gave up in the middle of a frame; the stream from this peer is out of sync";
    return failure::timeout(op.where, "the deadline passed after " + std::to_string(op.got) +
                                          " bytes of the frame had arrived; the stream from this peer is unusable now");
  }

  void enqueue_receive(link& l, const std::shared_ptr<receive_op>& op, deadline until) {
    pump_receive(l);
    if (op->done && until != deadline::max()) {
      op->timer = std::make_unique<timer_type>(l.strand, until);
      op->timer->async_wait([this, &l, w = std::weak_ptr<receive_op>(op)](const error_code& ec) {
        if (ec) return;
        const std::lock_guard lock(l.m);
        if (auto o = w.lock()) receive_expired(l, o);
      });
    }
  }

  /// Serves the waiting receives in order with what the socket holds; leaves the queue alone
  /// while a caller's thread reads a frame (it hands the queue back when it is done).
  void pump_receive(link& l) {
    while (!l.receives.empty()) {
      if (!l.rx_down.empty()) return fail_receives(l);
      if (l.rx_caller) return;
      const auto op = l.receives.front();
      failure f;
      switch (advance_receive(l, *op, f)) {
        case progress::wait:
          return start_reader(l);
        case progress::failed:  // rx is down now: the loop fails the receives behind it
          l.receives.pop_front();
          finish(*op, std::move(f));
          break;
        case progress::complete:
          l.receives.pop_front();
          finish(*op, {}, op->header);
          break;
      }
    }
  }

  void start_reader(link& l) {
    if (l.reading) return;
    l.reading = true;
    asio::co_spawn(l.strand, reader(l), asio::detached);
  }

  asio::awaitable<void> reader(link& l) {
    for (;;) {
      {
        const std::lock_guard lock(l.m);
        if (l.receives.empty() || !l.rx_down.empty() || l.rx_caller) {
          l.reading = false;
          break;
        }
      }
      error_code ec;
      co_await l.socket.async_wait(socket_type::wait_read, asio::redirect_error(asio::use_awaitable, ec));
      const std::lock_guard lock(l.m);
      if (ec && !l.socket.is_open()) {
        l.reading = false;
        break;
      }
      if (ec && ec != asio::error::operation_aborted) {
        l.rx_down = connection_failure(ec);
        fail_receives(l);
        l.reading = false;
        break;
      }
      pump_receive(l);
    }
  }

  void receive_expired(link& l, const std::shared_ptr<receive_op>& op) {
    if (!op->done) return;
    const auto it = std::find(l.receives.begin(), l.receives.end(), op);
    if (it == l.receives.end()) return;
    l.receives.erase(it);
    finish(*op, receive_timed_out(l, *op));  // only the front receive can have read part of its frame
    if (!l.rx_down.empty()) fail_receives(l);
  }

  void fail_receives(link& l) {
    auto queue = std::exchange(l.receives, {});
    for (const auto& op : queue) finish(*op, failure::peer(op->where, l.rx_down));
  }

  // ---- the blocking calls on the caller's thread ----

  /// Runs a send to `tl` and/or a receive from `rl` on the calling thread, when their directions
  /// are idle (nothing queued, no coroutine waiting, nobody else writing or reading there, the
  /// stream up): non-blocking writes and reads, and poll() until the deadline while the sockets
  /// cannot go on. Saves the hand-overs to the io thread and the condition-variable waits of the
  /// queued path. Returns false, having done nothing, when a direction is busy (the caller then
  /// queues the operations on the strands). `sf` / `rf` get the send's / the receive's failure.
  /// A blocking send() whose rest fits the send buffer is copied and handed to the strand.
  /// One link's lock at a time: the io thread may take a second one inside a completion handler.
  bool run_here(link* tl, const std::shared_ptr<send_op>& s, link* rl, receive_op* r, deadline until, failure& sf,
                failure& rf) {
    if (shut_) return false;
    if (tl && !claim(*tl, true)) return false;
    if (rl && !claim(*rl, false)) {
      if (tl) hand_back(*tl, true);
      return false;
    }
    bool sending = tl != nullptr, receiving = rl != nullptr;
    bool watch_shutdown = true;
    for (;;) {
      // shutdown() ends a receive at once; a send that has begun goes on (the goodbye queues
      // behind it) until it is written, the deadline passes, or the link is closed.
      const bool shutting = watch_shutdown && shut_;
      if (shutting) watch_shutdown = false;
      const bool expired = clock::now() >= until;
      if (sending) {
        const std::lock_guard lock(tl->m);
        if (!tl->tx_down.empty()) {
          sf = failure::peer(s->where, tl->tx_down);
          sending = false;
        } else if (const progress p = advance_send(*tl, *s, sf); p != progress::wait) {
          sending = false;
        } else if (s->may_copy && tl->backlog + (s->total - s->sent) <= options_.send_buffer) {
          // As absorb(): the rest is copied and written by the strand, ahead of what queued behind.
          tl->backlog += s->total - s->sent;
          s->copy_rest();
          tl->sends.push_front(s);
          sending = false;
        } else if (shutting && s->sent == 0) {
          sf = failure::peer(s->where, "this unit has shut down");
          sending = false;
        } else if (expired) {
          sf = send_timed_out(*tl, *s);
          sending = false;
        }
      }
      if (receiving) {
        const std::lock_guard lock(rl->m);
        if (!rl->rx_down.empty()) {
          rf = failure::peer(r->where, rl->rx_down);
          receiving = false;
        } else if (advance_receive(*rl, *r, rf) != progress::wait) {
          receiving = false;
        } else if (shutting) {
          rl->rx_down = "this unit has shut down";
          rf = failure::peer(r->where, rl->rx_down);
          receiving = false;
        } else if (expired) {
          rf = receive_timed_out(*rl, *r);
          receiving = false;
        }
      }
      if (!sending && !receiving) break;
      wait_for_sockets(sending ? tl->fd : -1, receiving ? rl->fd : -1, watch_shutdown, until);
    }
    if (tl) hand_back(*tl, true);
    if (rl) hand_back(*rl, false);
    return true;
  }

  /// Takes a link's tx (or rx) for the calling thread when it is idle.
  static bool claim(link& l, bool tx) {
    const std::lock_guard lock(l.m);
    if (l.closing) return false;
    if (tx) {
      if (!l.sends.empty() || l.tx_caller || l.writing || !l.tx_down.empty()) return false;
      l.tx_caller = true;
    } else {
      if (!l.receives.empty() || l.rx_caller || l.reading || !l.rx_down.empty()) return false;
      l.rx_caller = true;
    }
    return true;
  }

  /// Gives a link's tx (or rx) back: the strand takes up what queued meanwhile, and closes a
  /// socket that shutdown() left open for the caller.
  void hand_back(link& l, bool tx) {
    const std::lock_guard lock(l.m);
    (tx ? l.tx_caller : l.rx_caller) = false;
    if (l.close_deferred) {
      if (l.tx_caller || l.rx_caller) return;
      l.close_deferred = false;
      asio::post(l.strand, [&l] {
        const std::lock_guard relock(l.m);
        error_code ec;
        l.socket.close(ec);
      });
    } else if (tx ? !l.sends.empty() : !l.receives.empty()) {
      asio::post(l.strand, [this, &l, tx] {
        const std::lock_guard relock(l.m);
        if (tx) pump_send(l);
        else pump_receive(l);
      });
    }
  }

  /// Sleeps in poll() until `write_fd` may take bytes, `read_fd` has some, shutdown() was called
  /// (when `watch_shutdown`), or the deadline. Never spins: poll() sleeps.
  void wait_for_sockets(int write_fd, int read_fd, bool watch_shutdown, deadline until) const {
    std::array<pollfd, 3> fds{};
    nfds_t n = 0;
    if (write_fd >= 0 && write_fd == read_fd) {
      fds[n++] = {write_fd, POLLOUT | POLLIN, 0};
    } else {
      if (write_fd >= 0) fds[n++] = {write_fd, POLLOUT, 0};
      if (read_fd >= 0) fds[n++] = {read_fd, POLLIN, 0};
    }
    if (watch_shutdown) fds[n++] = {wake_.read_end(), POLLIN, 0};
    int ms = -1;
    if (until != deadline::max()) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - clock::now()).count();
      ms = static_cast<int>(std::clamp<decltype(left)>(left, 0, std::numeric_limits<int>::max()));
    }
    // EINTR and the like: the caller looks at the sockets and the deadline again.
    (void)::poll(fds.data(), n, ms);
  }

  // ---- closing (on the peer's strand) ----

  void close_link(link& l, deadline until, const std::function<void()>& closed) {
    const std::lock_guard lock(l.m);
    l.closing = true;
    if (l.rx_down.empty()) l.rx_down = "this unit has shut down";
    fail_receives(l);
    if (!l.tx_down.empty() || !l.socket.is_open()) {
      end_link(l);
      return closed();
    }
    // The goodbye goes after the frames already queued (and a frame a caller's thread is
    // writing); its deadline bounds the whole flush.
    auto op = std::make_shared<send_op>();
    op->where = {rank_, l.peer, 0, 0};
    const auto header = wire::encode(wire::make_header(wire::frame_kind::goodbye, fingerprint_, 0, rank_, 0, {}));
    op->owned.assign(header.begin(), header.end());
    op->copied = true;
    op->total = wire::header_size;
    op->done = send_completion([this, &l, closed](failure) {
      end_link(l);
      closed();
    }, l.strand);
    l.sends.push_back(op);
    pump_send(l);
    if (op->done) arm_send_timer(l, op, until);
  }

  void end_link(link& l) {
    if (l.tx_down.empty()) l.tx_down = "this unit has shut down";
    fail_sends(l);
    error_code ec;
    l.socket.shutdown(socket_type::shutdown_send, ec);
    // Read what the peer sent and nobody will read, so that close() sends a FIN, not a reset.
    std::array<std::byte, 16384> sink;
    for (int i = 0; i < 64 && !ec; ++i)
      if (l.socket.read_some(asio::buffer(sink), ec) == 0) break;
    if (l.tx_caller || l.rx_caller) {
      // A caller's thread may be in poll() on this socket: wake it (it finds the link down) and
      // leave the close to hand_back(), so that the descriptor is not reused under it.
      l.socket.shutdown(socket_type::shutdown_both, ec);
      l.close_deferred = true;
      return;
    }
    l.socket.close(ec);
  }

  unit_id rank_;
  unit_id world_;
  std::uint64_t fingerprint_;
  tcp_options options_;
  asio::io_context io_;  // declared before everything that holds its executor: destroyed last
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  strand_type setup_;
  std::optional<acceptor_type> acceptor_;
  std::vector<std::unique_ptr<link>> links_;  // links_[peer]; null for this unit
  bool connect_started_ = false;
  std::atomic<bool> shut_{false};
  wake_pipe wake_;
  std::future<void> thread_done_;
  std::thread thread_;
};

}  // namespace detail::tcp_impl

/// One unit's end of a TCP cluster: one connection per pair of units, one io thread, one strand per peer.
class tcp_transport {
 public:
  /// The executor of the transport's io thread: plain callbacks given to async_send and
  /// async_receive run there (they must not block and must not call send or receive).
  using executor_type = boost::asio::io_context::executor_type;

  /// Listens at peers[rank] (when a unit above it exists), connects to every other unit and
  /// completes the handshakes within options.connect_timeout; throws timeout_error,
  /// handshake_error, peer_error or configuration_error otherwise.
  tcp_transport(unit_id rank, std::vector<endpoint> peers, std::uint64_t fingerprint, tcp_options options = {})
      : engine_(std::make_unique<detail::tcp_impl::engine>(rank, static_cast<unit_id>(peers.size()), fingerprint, options)) {
    engine_->connect(std::move(peers), clock::now() + options.connect_timeout);
  }

  /// A unit that is not connected yet: call listen() (optional) and connect().
  tcp_transport(unit_id rank, unit_id world_size, std::uint64_t fingerprint, tcp_options options = {})
      : engine_(std::make_unique<detail::tcp_impl::engine>(rank, world_size, fingerprint, options)) {}

  tcp_transport(tcp_transport&&) noexcept = default;
  tcp_transport& operator=(tcp_transport&&) noexcept = default;
  ~tcp_transport() = default;  // the engine shuts down, then joins its io thread

  /// Binds the listening socket (port 0: the system picks a free one) and returns where it listens.
  /// Without options.listen_any it binds to `where`'s address only (127.0.0.1 when the host is empty).
  endpoint listen(const endpoint& where = {"127.0.0.1", 0}) { return engine_->listen(where); }
  /// Where this unit listens ({"", 0} when it does not).
  [[nodiscard]] endpoint local_endpoint() const { return engine_->local_endpoint(); }
  /// Connects to every other unit (peers[r]: where unit r listens) and handshakes, by `until`.
  void connect(std::vector<endpoint> peers, deadline until) { engine_->connect(std::move(peers), until); }

  [[nodiscard]] unit_id rank() const noexcept { return engine_->rank(); }
  [[nodiscard]] unit_id world_size() const noexcept { return engine_->world_size(); }
  [[nodiscard]] std::uint64_t fingerprint() const noexcept { return engine_->fingerprint(); }
  [[nodiscard]] const tcp_options& options() const noexcept { return engine_->options(); }
  [[nodiscard]] executor_type get_executor() const noexcept { return engine_->executor(); }

  /// Sends a frame, written straight from `payload` (which must stay valid until completion).
  /// Completion signature void(std::exception_ptr): null once the kernel has the whole frame;
  /// timeout_error if the peer took none of it by `until` (nothing was sent) or only part of it
  /// (the stream to the peer is then unusable); peer_error if the connection is gone.
  template <class CompletionToken>
  auto async_send(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload, deadline until,
                  CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(std::exception_ptr)>(
        [e = engine_.get(), peer, header, payload, until](auto handler) {
          e->start_send(peer, header, payload, until, false,
                        detail::tcp_impl::send_completion(detail::tcp_impl::public_handler, std::move(handler), e->executor()));
        },
        token);
  }

  /// Receives the next frame from `peer` into `out` (valid until completion), after checking its
  /// header against `expected`. Completion signature void(std::exception_ptr, wire::frame_header):
  /// protocol_error for a frame that is not the one expected (the stream from that peer is then
  /// unusable), timeout_error when the deadline passes, peer_error when the peer is gone.
  template <class CompletionToken>
  auto async_receive(unit_id peer, const wire::expectation& expected, std::span<std::byte> out, deadline until,
                     CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(std::exception_ptr, wire::frame_header)>(
        [e = engine_.get(), peer, expected, out, until](auto handler) {
          e->start_receive(
              peer, expected, out, until,
              detail::tcp_impl::receive_completion(detail::tcp_impl::public_handler, std::move(handler), e->executor()));
        },
        token);
  }

  /// Sends a frame; returns when the kernel has it, or when what it did not take yet is copied
  /// (up to options.send_buffer per peer), so that two units may send to each other before either
  /// receives. Throws timeout_error, peer_error, configuration_error.
  void send(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload, deadline until) {
    refuse_on_io_thread();
    if (engine_->send_here(peer, header, payload, until)) return;
    auto wait = std::make_shared<detail::tcp_impl::sync_wait<>>();
    engine_->start_send(peer, header, payload, until, true,
                        detail::tcp_impl::send_completion(wait->handler(wait), engine_->executor()));
    wait->get();
  }

  /// Receives the next frame from `peer` into `out`; see async_receive.
  wire::frame_header receive(unit_id peer, const wire::expectation& expected, std::span<std::byte> out, deadline until) {
    refuse_on_io_thread();
    if (auto h = engine_->receive_here(peer, expected, out, until)) return *h;
    auto wait = std::make_shared<detail::tcp_impl::sync_wait<wire::frame_header>>();
    engine_->start_receive(peer, expected, out, until,
                           detail::tcp_impl::receive_completion(wait->handler(wait), engine_->executor()));
    return std::get<0>(wait->get());
  }

  /// Sends a frame to `to` while receiving the next frame from `from` (MPI_Sendrecv), both straight
  /// between the caller's memory and the sockets, nothing copied: a ring step in which every unit
  /// sends before it receives cannot deadlock, whatever the size and options.send_buffer. Returns
  /// once both are done (the send's failure is thrown first, then the receive's).
  wire::frame_header exchange(unit_id to, const wire::frame_header& header, std::span<const std::byte> payload, unit_id from,
                              const wire::expectation& expected, std::span<std::byte> out, deadline until) {
    refuse_on_io_thread();
    if (auto h = engine_->exchange_here(to, header, payload, from, expected, out, until)) return *h;
    auto sent = std::make_shared<detail::tcp_impl::sync_wait<>>();
    auto received = std::make_shared<detail::tcp_impl::sync_wait<wire::frame_header>>();
    engine_->start_send(to, header, payload, until, false,
                        detail::tcp_impl::send_completion(sent->handler(sent), engine_->executor()));
    engine_->start_receive(from, expected, out, until,
                           detail::tcp_impl::receive_completion(received->handler(received), engine_->executor()));
    sent->wait();  // both use the caller's memory until they end: wait for both before throwing
    received->wait();
    if (sent->f) sent->f.raise();
    return std::get<0>(received->get());
  }

  /// Delivers the frames still queued (within options.linger), sends every peer a goodbye (its
  /// waiting receives end in peer_error "the peer has shut down") and closes every connection.
  /// Later operations fail with peer_error. The io thread is joined by the destructor.
  void shutdown() {
    if (engine_) engine_->shutdown();
  }

 private:
  void refuse_on_io_thread() const {
    if (engine_->on_io_thread())
      throw configuration_error("f2d2n: a blocking send or receive on the transport's own io thread would wait forever; "
                                "use async_send / async_receive there");
  }

  std::unique_ptr<detail::tcp_impl::engine> engine_;
};

static_assert(transport<tcp_transport>);

}  // namespace f2d2n
