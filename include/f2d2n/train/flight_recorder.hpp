// f2d2n/train/flight_recorder.hpp: a processing unit's flight recorder (PyTorch's NCCL flight
// recorder is the model; this one names the layer). Each unit keeps its last communication
// operations in a ring of fixed capacity: which message (decoded into words through the plan's
// ids: kind, pass, layer, micro-batch or bucket), the step, the peer, the bytes, the state
// (started, done, failed, timed out) and when. A unit's timeout_error carries the message it
// waited for, in words, and the recorder's dump; print_flight_recorder_on(SIGUSR1) prints the dump
// of every unit of the process whenever the signal arrives, while the run goes on.
//
//   const auto printer = f2d2n::print_flight_recorder_on(SIGUSR1);   // then: kill -USR1 <pid>
//
// The unit records through detail::recording_transport, a decorator of its transport: the
// primitives and the transports are unchanged (docs/decisions.md, docs/debugging.md).
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/core/unit.hpp>
#include <f2d2n/plan/messages.hpp>
#include <f2d2n/transport/concept.hpp>
#include <f2d2n/wire/frame.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

namespace f2d2n {

/// What a recorded operation did: one frame out, one frame in, or both at once (a ring step).
enum class operation_kind : std::uint8_t { send, receive, exchange };

/// Where a recorded operation stands. `started` is an operation still in progress (a unit blocked
/// in it shows it last, with the time it has waited so far).
enum class operation_state : std::uint8_t { started, done, failed, timed_out };

[[nodiscard]] constexpr const char* to_string(operation_kind k) noexcept {
  switch (k) {
    case operation_kind::send: return "send";
    case operation_kind::receive: return "receive";
    case operation_kind::exchange: return "exchange";
  }
  return "unknown";
}

[[nodiscard]] constexpr const char* to_string(operation_state s) noexcept {
  switch (s) {
    case operation_state::started: return "started";
    case operation_state::done: return "done";
    case operation_state::failed: return "failed";
    case operation_state::timed_out: return "timed out";
  }
  return "unknown";
}

/// One communication operation of a unit.
struct flight_record {
  std::uint64_t number = 0;  ///< the unit's operations are numbered from 1
  operation_kind kind = operation_kind::send;
  operation_state state = operation_state::started;
  std::uint32_t message_id = 0;  ///< plan/messages.hpp: describe_message() puts it in words
  std::uint64_t step = 0;        ///< the frames' step (the unit's training and evaluation steps)
  unit_id peer = 0;              ///< send: the unit it goes to; receive: the unit it comes from; exchange: to
  unit_id from = 0;              ///< exchange: the unit the incoming frame comes from
  std::size_t bytes_out = 0;     ///< payload bytes sent
  std::size_t bytes_in = 0;      ///< payload bytes expected
  clock::time_point start{}, end{};
};

namespace detail {
class recorder_registry;
}  // namespace detail

/// A ring of a unit's last `capacity` operations. Allocates once, at construction; recording an
/// operation takes two locks and two clock reads. Safe to use from several threads (a unit's compute
/// thread and its bucket-summing thread). Every recorder of the process is known to
/// dump_flight_recorders() while it exists. Capacity 0 records nothing.
class flight_recorder {
 public:
  static constexpr std::size_t default_capacity = 64;

  /// `name` says which unit it is ("unit 3 (replica 1, stage 0, shard 1)").
  inline flight_recorder(unit_id unit, std::string name, std::size_t capacity = default_capacity);
  inline ~flight_recorder();
  flight_recorder(const flight_recorder&) = delete;
  flight_recorder& operator=(const flight_recorder&) = delete;

  [[nodiscard]] unit_id unit() const noexcept { return unit_; }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] std::size_t capacity() const noexcept { return ring_.size(); }

  /// Records the start of an operation; returns its number (0 when recording is off), which
  /// finish() takes.
  std::uint64_t begin(operation_kind kind, std::uint32_t message_id, std::uint64_t step, unit_id peer, unit_id from,
                      std::size_t bytes_out, std::size_t bytes_in) {
    if (ring_.empty()) return 0;
    const auto now = clock::now();
    const std::lock_guard lock(m_);
    const std::uint64_t n = ++count_;
    ring_[(n - 1) % ring_.size()] = {n,          kind,      operation_state::started,
                                     message_id, step,      peer,
                                     from,       bytes_out, bytes_in,
                                     now,        {}};
    return n;
  }

  /// Records how operation `number` ended (nothing when the ring has moved past it).
  void finish(std::uint64_t number, operation_state state) {
    if (number == 0) return;
    const auto now = clock::now();
    const std::lock_guard lock(m_);
    auto& r = ring_[(number - 1) % ring_.size()];
    if (r.number != number) return;
    r.state = state;
    r.end = now;
  }

  /// Operations recorded so far (those before the last capacity() are gone).
  [[nodiscard]] std::uint64_t operations() const {
    const std::lock_guard lock(m_);
    return count_;
  }

  /// The operations the ring holds, oldest first.
  [[nodiscard]] std::vector<flight_record> records() const {
    const std::lock_guard lock(m_);
    std::vector<flight_record> out;
    const std::uint64_t held = std::min<std::uint64_t>(count_, ring_.size());
    out.reserve(static_cast<std::size_t>(held));
    for (std::uint64_t n = count_ - held + 1; n <= count_; ++n) out.push_back(ring_[(n - 1) % ring_.size()]);
    return out;
  }

  /// The operations in words, one line each, oldest first, under a line naming the unit: what
  /// a timeout_error carries and what the signal prints.
  [[nodiscard]] std::string dump() const {
    const auto held = records();
    const auto total = operations();
    const auto now = clock::now();
    std::string s = "f2d2n flight recorder of " + name_ + ": ";
    if (ring_.empty()) return s + "off (distributed_options::flight_records is 0)\n";
    if (held.empty()) return s + "no operation yet\n";
    s += "the last " + std::to_string(held.size()) + " of " + std::to_string(total) +
         " communication operations, oldest first\n";
    for (const auto& r : held) s += "  " + line(r, now) + "\n";
    return s;
  }

  /// One record in words, e.g. "#12 step 3 receive from unit 0 (4096 bytes) started, for 2.0 s so far:
  /// activation (forward) of layer 3, micro-batch 0".
  [[nodiscard]] static std::string line(const flight_record& r, clock::time_point now) {
    std::string s = "#" + std::to_string(r.number) + " step " + std::to_string(r.step) + " " + to_string(r.kind);
    switch (r.kind) {
      case operation_kind::send:
        s += " to unit " + std::to_string(r.peer) + " (" + std::to_string(r.bytes_out) + " bytes)";
        break;
      case operation_kind::receive:
        s += " from unit " + std::to_string(r.peer) + " (" + std::to_string(r.bytes_in) + " bytes)";
        break;
      case operation_kind::exchange:
        s += " to unit " + std::to_string(r.peer) + " (" + std::to_string(r.bytes_out) + " bytes), from unit " +
             std::to_string(r.from) + " (" + std::to_string(r.bytes_in) + " bytes)";
        break;
    }
    s += std::string(" ") + to_string(r.state);
    if (r.state == operation_state::started) s += ", for " + duration(now - r.start) + " so far";
    else s += " in " + duration(r.end - r.start);
    return s + ": " + describe_message(r.message_id);
  }

 private:
  static std::string duration(clock::duration d) {
    char text[32];
    const double us = std::chrono::duration<double, std::micro>(d).count();
    if (us < 1000) std::snprintf(text, sizeof text, "%.0f us", us);
    else if (us < 1e6) std::snprintf(text, sizeof text, "%.1f ms", us / 1e3);
    else std::snprintf(text, sizeof text, "%.1f s", us / 1e6);
    return text;
  }

  unit_id unit_;
  std::string name_;
  mutable std::mutex m_;
  std::vector<flight_record> ring_;
  std::uint64_t count_ = 0;
};

namespace detail {

/// Every flight recorder alive in the process, for the signal's dump.
class recorder_registry {
 public:
  static recorder_registry& instance() {
    static recorder_registry r;
    return r;
  }
  void add(const flight_recorder* r) {
    const std::lock_guard lock(m_);
    recorders_.push_back(r);
  }
  void remove(const flight_recorder* r) {
    const std::lock_guard lock(m_);  // waits for a dump in progress: it never reads a recorder that is gone
    recorders_.erase(std::remove(recorders_.begin(), recorders_.end(), r), recorders_.end());
  }
  std::string dump() {
    const std::lock_guard lock(m_);
    if (recorders_.empty()) return "f2d2n flight recorder: no processing unit in this process (yet, or any more)\n";
    std::string s;
    for (const auto* r : recorders_) s += r->dump();
    return s;
  }

 private:
  std::mutex m_;
  std::vector<const flight_recorder*> recorders_;
};

}  // namespace detail

inline flight_recorder::flight_recorder(unit_id unit, std::string name, std::size_t capacity)
    : unit_(unit), name_(std::move(name)), ring_(capacity) {
  detail::recorder_registry::instance().add(this);
}
inline flight_recorder::~flight_recorder() { detail::recorder_registry::instance().remove(this); }

/// The dumps of every flight recorder of this process (every processing unit alive in it).
[[nodiscard]] inline std::string dump_flight_recorders() { return detail::recorder_registry::instance().dump(); }

namespace detail {

/// A transport that records every operation of the transport it wraps into a flight recorder, and
/// adds to a timeout_error the message waited for, in words, and the recorder's dump. Everything
/// else passes through unchanged (exchange too: a transport's own overlapped one stays in use).
template <transport Transport>
class recording_transport {
 public:
  recording_transport(Transport& t, flight_recorder& r) : t_(t), r_(r) {}

  [[nodiscard]] unit_id rank() const { return t_.rank(); }
  [[nodiscard]] unit_id world_size() const { return t_.world_size(); }
  [[nodiscard]] std::uint64_t fingerprint() const { return t_.fingerprint(); }
  [[nodiscard]] bool payload_checksums() const { return f2d2n::payload_checksums(t_); }
  void shutdown() { t_.shutdown(); }
  void shutdown(const shutdown_reason& reason) { t_.shutdown(reason); }

  void send(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload, deadline until) {
    recorded(r_.begin(operation_kind::send, header.message_id, header.step, peer, peer, payload.size(), 0),
             [&] { t_.send(peer, header, payload, until); });
  }

  wire::frame_header receive(unit_id peer, const wire::expectation& expected, std::span<std::byte> out,
                             deadline until) {
    wire::frame_header h;
    recorded(r_.begin(operation_kind::receive, expected.message_id, expected.step, peer, peer, 0, out.size()),
             [&] { h = t_.receive(peer, expected, out, until); });
    return h;
  }

  wire::frame_header exchange(unit_id to, const wire::frame_header& header, std::span<const std::byte> payload,
                              unit_id from, const wire::expectation& expected, std::span<std::byte> out,
                              deadline until) {
    wire::frame_header h;
    recorded(r_.begin(operation_kind::exchange, header.message_id, header.step, to, from, payload.size(), out.size()),
             [&] { h = f2d2n::exchange(t_, to, header, payload, from, expected, out, until); });
    return h;
  }

 private:
  template <class F>
  void recorded(std::uint64_t n, F&& f) {
    try {
      f();
    } catch (const timeout_error& e) {
      r_.finish(n, operation_state::timed_out);
      const auto& w = e.where();
      auto dump = r_.dump();
      dump.pop_back();  // the error's text ends without a line break, as every error's does
      throw timeout_error(e, "; unit " + std::to_string(w.unit) + " waited for " + describe_message(w.message_id) +
                                 " of step " + std::to_string(w.step) + " from unit " + std::to_string(w.peer) + "\n" +
                                 dump);
    } catch (...) {
      r_.finish(n, operation_state::failed);
      throw;
    }
    r_.finish(n, operation_state::done);
  }

  Transport& t_;
  flight_recorder& r_;
};

/// The write end of the signal's pipe (-1: no printer). The handler reads it: a lock-free atomic.
inline std::atomic<int> flight_signal_pipe{-1};
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler reads an atomic int");

/// The signal handler: one write() of one byte, which is async-signal-safe; errno is kept.
extern "C" inline void flight_recorder_signal_handler(int) {
  const int saved = errno;
  const int fd = flight_signal_pipe.load(std::memory_order_relaxed);
  if (fd >= 0) {
    const char wake = 1;
    [[maybe_unused]] const auto written = ::write(fd, &wake, 1);  // a full pipe already has a dump coming
  }
  errno = saved;
}

}  // namespace detail

/// Prints dump_flight_recorders() each time `signal` arrives, for as long as it exists (see
/// print_flight_recorder_on). The handler only writes a byte into a pipe; a thread blocked in
/// read() on the pipe (it sleeps; no polling) makes the dump and hands it to the sink (standard
/// error by default). The destructor puts back the signal's previous action and stops the thread.
/// One at a time per process: a second is a configuration_error.
class flight_recorder_printer {
 public:
  using sink = std::function<void(const std::string&)>;

  explicit flight_recorder_printer(int signal, sink out = {}) : signal_(signal), out_(std::move(out)) {
    if (!out_)
      out_ = [](const std::string& text) {
        std::fwrite(text.data(), 1, text.size(), stderr);
        std::fflush(stderr);
      };
    if (active().exchange(true))
      throw configuration_error("f2d2n: a flight recorder printer is already installed in this process");
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      active() = false;
      throw configuration_error("f2d2n: cannot make the flight recorder's signal pipe (pipe2 failed)");
    }
    read_ = fds[0];
    write_ = fds[1];
    ::fcntl(write_, F_SETFL, ::fcntl(write_, F_GETFL) | O_NONBLOCK);  // the handler never blocks
    try {
      thread_ = std::thread([this] { run(); });
    } catch (...) {
      ::close(read_);
      ::close(write_);
      active() = false;
      throw;
    }
    detail::flight_signal_pipe.store(write_);
    struct sigaction action {};
    action.sa_handler = &detail::flight_recorder_signal_handler;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    if (::sigaction(signal_, &action, &previous_) != 0) {
      stop();
      throw configuration_error("f2d2n: cannot install the flight recorder's handler of signal " +
                                std::to_string(signal_));
    }
  }
  flight_recorder_printer(const flight_recorder_printer&) = delete;
  flight_recorder_printer& operator=(const flight_recorder_printer&) = delete;
  ~flight_recorder_printer() {
    ::sigaction(signal_, &previous_, nullptr);
    stop();
  }

 private:
  static std::atomic<bool>& active() {
    static std::atomic<bool> a{false};
    return a;
  }

  void run() {
    for (;;) {
      char byte = 0;
      const auto n = ::read(read_, &byte, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0 || stopping_.load()) return;
      try {
        out_(dump_flight_recorders());
      } catch (...) {  // a sink that fails loses this dump, not the process
      }
    }
  }

  /// Ends the thread: no handler writes into the pipe any more; one byte wakes the thread, which
  /// sees stopping_ (when the pipe is full, the bytes in it wake it as well).
  void stop() {
    detail::flight_signal_pipe.store(-1);
    stopping_ = true;
    const char wake = 0;
    [[maybe_unused]] const auto written = ::write(write_, &wake, 1);
    thread_.join();
    ::close(read_);
    ::close(write_);
    active() = false;
  }

  int signal_;
  sink out_;
  int read_ = -1, write_ = -1;
  std::atomic<bool> stopping_{false};
  struct sigaction previous_ {};
  std::thread thread_;
};

/// Prints every unit's flight recorder to standard error (or to `out`) whenever `signal` arrives
/// (kill -USR1 <pid>), until the returned printer is destroyed:
///
///   const auto printer = f2d2n::print_flight_recorder_on(SIGUSR1);
[[nodiscard]] inline flight_recorder_printer print_flight_recorder_on(int signal,
                                                                      flight_recorder_printer::sink out = {}) {
  return flight_recorder_printer(signal, std::move(out));
}

}  // namespace f2d2n
