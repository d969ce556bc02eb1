// f2d2n/launch/launcher.hpp: start the units of a cluster as processes on this machine (what
// torchrun or mpirun do for one machine), POSIX only.
//
//   f2d2n::launch({.processes = 4}, {"./train", "--epochs", "3"}, std::cout, std::cerr);
//
// starts 4 processes of ./train with F2D2N_RANK, F2D2N_WORLD_SIZE, F2D2N_PEERS, F2D2N_LOCAL_RANK,
// F2D2N_LOCAL_WORLD_SIZE and F2D2N_RESTART set (see config.hpp), each listening on its own free
// loopback port, and
//
// - forwards every line a unit writes to its stdout to `out` and to its stderr to `err`, prefixed
//   with `[rank] ` (a last line without newline is flushed when the unit ends; a line longer than
//   64 KiB is cut into 64 KiB pieces); units read stdin from /dev/null;
// - returns 0 once every unit has exited with code 0;
// - as soon as one unit exits with a non-zero code or is killed by a signal, says on `err` which
//   rank ended how, sends SIGTERM to the others, SIGKILL to those still running `grace` later, and
//   returns that unit's exit code (128 + the signal's number for a signal, 127 when the program
//   could not be started);
// - on SIGINT or SIGTERM to the launcher, passes the signal on to the units, ends them the same way
//   and returns 128 + the signal's number (a second signal sends SIGKILL at once);
// - after `timeout`, if one is set, ends the units the same way and returns 124 (as timeout(1)).
//
// Restarts (max_restarts > 0): when a unit fails and fewer than max_restarts restarts have been
// made, the launcher says so on `err`, ends the other units as above, waits for all of them, and
// starts all units again (on free ports picked again when base_port is 0), with F2D2N_RESTART set
// to the number of restarts so far (0 at the first start), so that a program can resume, e.g. from
// its latest checkpoint. When the restarts are used up, a failure ends the run as above. A program
// that cannot be started is not restarted; a signal to the launcher, or the timeout, during the
// ending cancels the restart; the timeout covers every attempt together.
//
// Each unit runs in a process group of its own, so that signals reach what the unit started too
// (a shell and its children); when the run is ended, whatever is left in those groups is killed.
//
// Free ports (base_port == 0): the launcher binds one socket per unit on `host`, to a free port
// below the kernel's ephemeral range where there is room (so that no unit's outgoing connection
// can be given another unit's port), and keeps it bound until just before it starts the units
// (all released at once: a forked child holds the launcher's sockets until it execs).
// Between that moment and the unit's own bind another process may take the port (a race that no
// launcher which hands out ports can close); the unit then fails to listen and the run fails. Pass
// base_port (units listen on base_port + rank) where that matters.
//
// While it runs, launch() handles SIGCHLD, SIGINT and SIGTERM and ignores SIGPIPE, restoring the
// previous dispositions before it returns; only one launch() may run in a process at a time, and
// it is meant for a program's main thread (the CLI f2d2n_launch is one). Every wait has a deadline
// or ends with an event (output, a unit's exit, a signal): nothing polls in a loop.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/core/unit.hpp>
#include <f2d2n/launch/config.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace f2d2n {

/// The operating system refused something the launcher needs (a pipe, a process, a socket).
class launch_error : public error {
 public:
  using error::error;
};

/// How launch() starts and supervises the units.
struct launch_options {
  unit_id processes = 1;                   ///< how many units to start (ranks 0 .. processes - 1)
  std::string host = "127.0.0.1";          ///< where the units listen (and are reached)
  std::uint16_t base_port = 0;             ///< unit r listens on base_port + r; 0: free ports on host
  std::chrono::milliseconds grace{2000};   ///< SIGTERM to SIGKILL
  std::optional<std::chrono::seconds> timeout{};  ///< whole-run deadline: end every unit, return 124
  unsigned max_restarts = 0;               ///< times every unit is started again after a unit fails
};

/// What launch() returns when the whole-run timeout ends the units.
inline constexpr int launch_timeout_exit_code = 124;
/// The exit code of a unit whose program could not be started (the shells' convention).
inline constexpr int launch_cannot_run_exit_code = 127;

namespace detail::process {

/// How long launch() waits for units to disappear after SIGKILL before it gives up on them.
inline constexpr std::chrono::seconds kill_wait{5};
/// Longest line forwarded in one piece.
inline constexpr std::size_t max_line = 64 * 1024;

/// A file descriptor, closed on destruction.
class file {
 public:
  file() = default;
  explicit file(int fd) noexcept : fd_(fd) {}
  file(file&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  file& operator=(file&& other) noexcept {
    if (this != &other) {
      close();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  file(const file&) = delete;
  file& operator=(const file&) = delete;
  ~file() { close(); }

  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] bool open() const noexcept { return fd_ >= 0; }
  void close() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

[[nodiscard]] inline std::string system_message(const std::string& what, int code) {
  return what + ": " + std::strerror(code);
}

/// A pipe whose both ends close on exec; the read end is non-blocking when asked.
[[nodiscard]] inline std::pair<file, file> make_pipe(bool nonblocking_read) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw launch_error(system_message("launch: cannot create a pipe", errno));
  std::pair<file, file> ends{file(fds[0]), file(fds[1])};
  if (nonblocking_read && ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK) != 0)
    throw launch_error(system_message("launch: cannot make a pipe non-blocking", errno));
  return ends;
}

// --- signals: handlers set flags and write a byte to a pipe that poll() watches ---------------

static_assert(std::atomic<int>::is_always_lock_free, "signal handlers need lock-free atomics");
inline std::atomic<int> wake_fd{-1};
inline std::atomic<int> last_signal{0};
inline std::atomic<int> signal_count{0};
inline std::atomic<bool> active{false};

inline void on_signal(int sig) noexcept {
  const int saved = errno;
  if (sig == SIGINT || sig == SIGTERM) {
    last_signal.store(sig);
    signal_count.fetch_add(1);
  }
  if (const int fd = wake_fd.load(); fd >= 0) {
    const char byte = 0;
    [[maybe_unused]] const auto written = ::write(fd, &byte, 1);  // a full pipe already wakes poll()
  }
  errno = saved;
}

/// While alive: SIGCHLD, SIGINT and SIGTERM handled by on_signal, SIGPIPE ignored, and a pipe that
/// becomes readable whenever one of those signals arrives. Restores everything on destruction.
class signal_scope {
 public:
  signal_scope() {
    auto [read_end, write_end] = make_pipe(true);
    if (::fcntl(write_end.get(), F_SETFL, ::fcntl(write_end.get(), F_GETFL) | O_NONBLOCK) != 0)
      throw launch_error(system_message("launch: cannot make a pipe non-blocking", errno));
    wake_read_ = std::move(read_end);
    wake_write_ = std::move(write_end);
    wake_fd.store(wake_write_.get());

    struct sigaction handler {};
    handler.sa_handler = on_signal;
    sigemptyset(&handler.sa_mask);
    for (const int s : caught) sigaddset(&handler.sa_mask, s);
    handler.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    for (std::size_t i = 0; i < 4; ++i) {
      const int s = i < 3 ? caught[i] : SIGPIPE;
      if (::sigaction(s, i < 3 ? &handler : &ignore, &previous_[i]) != 0) {
        const int code = errno;
        restore(i);
        throw launch_error(system_message("launch: cannot install a signal handler", code));
      }
    }
  }
  signal_scope(const signal_scope&) = delete;
  signal_scope& operator=(const signal_scope&) = delete;
  ~signal_scope() { restore(4); }

  [[nodiscard]] int wake_fd_to_poll() const noexcept { return wake_read_.get(); }

  /// Empties the wake-up pipe.
  void drain() const noexcept {
    char buffer[256];
    while (::read(wake_read_.get(), buffer, sizeof buffer) > 0) {
    }
  }

  static constexpr int caught[3] = {SIGCHLD, SIGINT, SIGTERM};

 private:
  void restore(std::size_t installed) noexcept {
    for (std::size_t i = 0; i < installed; ++i) ::sigaction(i < 3 ? caught[i] : SIGPIPE, &previous_[i], nullptr);
    wake_fd.store(-1);
  }

  file wake_read_;
  file wake_write_;
  struct sigaction previous_[4] {};
};

[[nodiscard]] inline std::string signal_name(int sig) {
  switch (sig) {
    case SIGHUP: return "SIGHUP";
    case SIGINT: return "SIGINT";
    case SIGQUIT: return "SIGQUIT";
    case SIGILL: return "SIGILL";
    case SIGABRT: return "SIGABRT";
    case SIGFPE: return "SIGFPE";
    case SIGKILL: return "SIGKILL";
    case SIGSEGV: return "SIGSEGV";
    case SIGPIPE: return "SIGPIPE";
    case SIGALRM: return "SIGALRM";
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    case SIGBUS: return "SIGBUS";
    default: return "signal " + std::to_string(sig);
  }
}

// --- ports ---------------------------------------------------------------------------------

/// The kernel's range of ephemeral ports (those it gives outgoing connections), [low, high].
[[nodiscard]] inline std::pair<std::uint32_t, std::uint32_t> ephemeral_port_range() {
  std::uint32_t low = 32768, high = 60999;  // Linux's default
  if (std::FILE* f = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "r")) {
    unsigned a = 0, b = 0;
    if (std::fscanf(f, "%u %u", &a, &b) == 2 && a >= 1 && a <= b && b <= 65535) {
      low = a;
      high = b;
    }
    std::fclose(f);
  }
  return {low, high};
}

/// Binds `count` sockets on `host` and returns them with their ports. Ports are taken below the
/// kernel's ephemeral range when there is room (from 10000 up, starting at a place that depends on
/// the process id): a port from the ephemeral range could be handed to another unit's outgoing
/// connection between the moment the launcher frees it and the moment its unit binds it. Ports
/// the system chooses (bind to port 0) fill in when there is no such room.
[[nodiscard]] inline std::vector<file> reserve_ports(const std::string& host, unit_id count,
                                                     std::vector<std::uint16_t>& ports) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(host.c_str(), "0", &hints, &found); rc != 0 || found == nullptr)
    throw configuration_error("launch: the host '" + host + "' cannot be resolved: " + ::gai_strerror(rc));
  struct release {
    addrinfo* list;
    ~release() { ::freeaddrinfo(list); }
  } guard{found};

  auto with_port = [&](std::uint16_t port) {
    sockaddr_storage a{};
    std::memcpy(&a, found->ai_addr, found->ai_addrlen);
    if (a.ss_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(&a)->sin6_port = htons(port);
    else reinterpret_cast<sockaddr_in*>(&a)->sin_port = htons(port);
    return a;
  };
  auto new_socket = [&] {
    file s(::socket(found->ai_family, found->ai_socktype | SOCK_CLOEXEC, found->ai_protocol));
    if (!s.open()) throw launch_error(system_message("launch: cannot create a socket", errno));
    return s;
  };
  auto bound_port = [&](const file& s) {
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    if (::getsockname(s.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0)
      throw launch_error(system_message("launch: cannot read a socket's port", errno));
    return address.ss_family == AF_INET6 ? ntohs(reinterpret_cast<const sockaddr_in6*>(&address)->sin6_port)
                                         : ntohs(reinterpret_cast<const sockaddr_in*>(&address)->sin_port);
  };

  std::vector<file> sockets;
  const auto [ephemeral_low, ephemeral_high] = ephemeral_port_range();
  (void)ephemeral_high;
  constexpr std::uint32_t lowest = 10000;
  if (ephemeral_low > lowest + count) {
    const std::uint32_t span = ephemeral_low - lowest;
    const std::uint32_t start = static_cast<std::uint32_t>(::getpid()) * 7919u % span;
    for (std::uint32_t k = 0; k < span && sockets.size() < count; ++k) {
      const auto port = static_cast<std::uint16_t>(lowest + (start + k) % span);
      file s = new_socket();
      const sockaddr_storage a = with_port(port);
      if (::bind(s.get(), reinterpret_cast<const sockaddr*>(&a), found->ai_addrlen) == 0) {
        ports.push_back(port);
        sockets.push_back(std::move(s));
      } else if (errno != EADDRINUSE && errno != EACCES) {
        throw launch_error(system_message("launch: cannot bind a port on '" + host + "'", errno));
      }
    }
  }
  while (sockets.size() < count) {
    file s = new_socket();
    if (::bind(s.get(), found->ai_addr, found->ai_addrlen) != 0)
      throw launch_error(system_message("launch: cannot bind a port on '" + host + "'", errno));
    ports.push_back(bound_port(s));
    sockets.push_back(std::move(s));
  }
  return sockets;
}

// --- the program and its environment ---------------------------------------------------------

/// The file execvp would run for `name`: `name` itself when it holds a '/', else the first
/// executable regular file named so in a directory of PATH; empty when there is none.
[[nodiscard]] inline std::string resolve_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path_variable = std::getenv("PATH");
  const std::string_view path = path_variable != nullptr ? path_variable : "/bin:/usr/bin";
  std::size_t begin = 0;
  while (begin <= path.size()) {
    const auto colon = path.find(':', begin);
    std::string_view dir = path.substr(begin, colon == std::string_view::npos ? colon : colon - begin);
    begin = colon == std::string_view::npos ? path.size() + 1 : colon + 1;
    if (dir.empty()) dir = std::string_view(".");  // an empty PATH entry is the working directory
    std::string candidate;
    candidate.reserve(dir.size() + 1 + name.size());
    candidate.append(dir).append(1, '/').append(name);
    struct stat info {};
    if (::stat(candidate.c_str(), &info) == 0 && S_ISREG(info.st_mode) && ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
  }
  return {};
}

/// This process's environment without the variables the launcher sets.
[[nodiscard]] inline std::vector<std::string> inherited_environment() {
  const std::string_view ours[] = {rank_variable,       world_size_variable,       peers_variable,
                                   local_rank_variable, local_world_size_variable, restart_variable};
  std::vector<std::string> env;
  for (char** e = ::environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const bool replaced = std::any_of(std::begin(ours), std::end(ours), [&](std::string_view name) {
      return entry.size() > name.size() && entry.substr(0, name.size()) == name && entry[name.size()] == '=';
    });
    if (!replaced) env.emplace_back(entry);
  }
  return env;
}

[[nodiscard]] inline std::vector<char*> pointers_to(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  pointers.reserve(strings.size() + 1);
  for (auto& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

// --- the units --------------------------------------------------------------------------------

/// One stream of a unit's output: the pipe's read end and the unfinished line.
struct stream {
  file pipe;
  std::string pending;
};

struct unit_process {
  unit_id rank = 0;
  pid_t pid = -1;
  stream out;
  stream err;
  file exec_status;  ///< the child writes errno here when exec fails; end of file when it succeeds
  std::optional<int> exec_errno;
  bool exited = false;  ///< seen by waitid(WNOWAIT): a zombie, so pid and process group stay reserved
  bool reaped = false;
  int exit_code = 0;    ///< valid when exited and signal == 0
  int signal = 0;       ///< the signal that ended it, or 0
};

/// Writes the complete lines of `s.pending` (all of it, if `final`) to `os`, each prefixed.
inline void emit(stream& s, const std::string& prefix, std::ostream& os, bool final) {
  std::string text;
  std::size_t begin = 0;
  while (begin < s.pending.size()) {
    const auto newline = s.pending.find('\n', begin);
    std::size_t end = newline;
    if (newline == std::string::npos) {
      if (final) end = s.pending.size();
      else if (s.pending.size() - begin >= max_line) end = begin + max_line;
      else break;
    } else if (newline - begin > max_line) {
      end = begin + max_line;
    }
    text += prefix;
    text.append(s.pending, begin, end - begin);
    text += '\n';
    begin = end < s.pending.size() && s.pending[end] == '\n' ? end + 1 : end;
  }
  s.pending.erase(0, begin);
  if (!text.empty()) {
    os.write(text.data(), static_cast<std::streamsize>(text.size()));
    os.flush();
  }
}

/// Reads what is in `s.pipe` now (once, or until it is empty when `drain`); closes it at end of file.
inline void read_stream(stream& s, const std::string& prefix, std::ostream& os, bool drain) {
  char buffer[16384];
  while (s.pipe.open()) {
    const auto n = ::read(s.pipe.get(), buffer, sizeof buffer);
    if (n > 0) {
      s.pending.append(buffer, static_cast<std::size_t>(n));
      emit(s, prefix, os, false);
      if (!drain) return;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    s.pipe.close();  // end of file, or an error that ends this stream
  }
}

inline void read_exec_status(unit_process& u) {
  int code = 0;
  ssize_t n;
  do n = ::read(u.exec_status.get(), &code, sizeof code);
  while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof code)) u.exec_errno = code;
  u.exec_status.close();
}

/// Sends `sig` to the unit's process group (to the unit alone if it has no group yet).
inline void signal_unit(const unit_process& u, int sig) noexcept {
  if (u.pid <= 0 || u.reaped) return;
  if (::kill(-u.pid, sig) != 0 && errno == ESRCH) ::kill(u.pid, sig);
}

/// Whether the unit has exited (without reaping it); records how.
inline bool check_exit(unit_process& u) {
  if (u.exited || u.pid <= 0) return u.exited;
  siginfo_t info{};
  if (::waitid(P_PID, static_cast<id_t>(u.pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid != u.pid)
    return false;
  u.exited = true;
  if (info.si_code == CLD_EXITED) u.exit_code = info.si_status;
  else u.signal = info.si_status;
  return true;
}

inline void reap(unit_process& u) noexcept {
  if (u.pid <= 0 || u.reaped) return;
  int status = 0;
  if (::waitpid(u.pid, &status, WNOHANG) == u.pid) u.reaped = true;
}

/// Owns the started units: on destruction (an exception while starting or supervising), kills
/// what is left of them and reaps them, waiting at most kill_wait.
class unit_set {
 public:
  explicit unit_set(const signal_scope& signals) : signals_(signals) {}
  unit_set(const unit_set&) = delete;
  unit_set& operator=(const unit_set&) = delete;
  ~unit_set() {
    for (auto& u : units) signal_unit(u, SIGKILL);
    const auto deadline = std::chrono::steady_clock::now() + kill_wait;
    while (true) {
      bool left = false;
      for (auto& u : units) {
        reap(u);
        left = left || (u.pid > 0 && !u.reaped);
      }
      const auto now = std::chrono::steady_clock::now();
      if (!left || now >= deadline) break;
      pollfd wake{signals_.wake_fd_to_poll(), POLLIN, 0};
      const auto ms = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
      ::poll(&wake, 1, static_cast<int>(std::min<long long>(ms, INT_MAX)));
      signals_.drain();
    }
  }

  std::vector<unit_process> units;

 private:
  const signal_scope& signals_;
};

/// Starts one unit: pipes for its output and for exec failures, its own process group, stdin
/// from /dev/null, default signal dispositions, then exec (through /bin/sh for a script without #!).
inline void start_unit(unit_process& u, const std::string& program, std::vector<char*>& argv,
                       std::vector<char*>& sh_argv, std::vector<char*>& envp, int devnull) {
  auto [out_read, out_write] = make_pipe(true);
  auto [err_read, err_write] = make_pipe(true);
  auto [status_read, status_write] = make_pipe(false);

  sigset_t blocked;
  sigset_t previous;
  sigemptyset(&blocked);
  for (const int s : signal_scope::caught) sigaddset(&blocked, s);
  ::pthread_sigmask(SIG_BLOCK, &blocked, &previous);
  const pid_t pid = ::fork();
  if (pid == 0) {
    // The child: only async-signal-safe calls from here to exec.
    struct sigaction defaults {};
    defaults.sa_handler = SIG_DFL;
    sigemptyset(&defaults.sa_mask);
    for (const int s : {SIGCHLD, SIGINT, SIGTERM, SIGPIPE}) ::sigaction(s, &defaults, nullptr);
    ::setpgid(0, 0);
    // Move the sources above 2 first, so that no dup2 overwrites another's source.
    const int in_fd = ::fcntl(devnull, F_DUPFD_CLOEXEC, 3);
    const int out_fd = ::fcntl(out_write.get(), F_DUPFD_CLOEXEC, 3);
    const int err_fd = ::fcntl(err_write.get(), F_DUPFD_CLOEXEC, 3);
    int failure = 0;
    if (in_fd < 0 || out_fd < 0 || err_fd < 0 || ::dup2(in_fd, 0) < 0 || ::dup2(out_fd, 1) < 0 ||
        ::dup2(err_fd, 2) < 0)
      failure = errno;
    ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    if (failure == 0) {
      if (program.empty()) {
        failure = ENOENT;
      } else {
        ::execve(program.c_str(), argv.data(), envp.data());
        failure = errno;
        if (failure == ENOEXEC) {
          ::execve("/bin/sh", sh_argv.data(), envp.data());
          failure = errno;
        }
      }
    }
    [[maybe_unused]] const auto written = ::write(status_write.get(), &failure, sizeof failure);
    ::_exit(launch_cannot_run_exit_code);
  }
  const int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (pid < 0) throw launch_error(system_message("launch: cannot start rank " + std::to_string(u.rank), fork_errno));
  ::setpgid(pid, pid);  // also here, so that the group exists before the parent signals it
  u.pid = pid;
  u.out.pipe = std::move(out_read);
  u.err.pipe = std::move(err_read);
  u.exec_status = std::move(status_read);
}

}  // namespace detail::process

/// Starts `options.processes` units running `command` (program and arguments, found on PATH like
/// execvp does) on this machine and supervises them; see the top of this header for what it does
/// and returns. Bad options are a configuration_error; a refusal of the operating system (no pipe,
/// no process, no port) a launch_error, after the units already started are killed.
inline int launch(const launch_options& options, const std::vector<std::string>& command, std::ostream& out,
                  std::ostream& err) {
  namespace proc = detail::process;
  using clock = std::chrono::steady_clock;

  if (options.processes == 0) throw configuration_error("launch: the number of processes is 0; start at least 1");
  if (options.processes > 65535)
    throw configuration_error("launch: " + std::to_string(options.processes) +
                              " processes: each needs a port of its own, and there are 65535");
  if (command.empty() || command.front().empty())
    throw configuration_error("launch: no program to run (the command is empty)");
  if (options.base_port != 0 && std::uint32_t{options.base_port} + options.processes - 1 > 65535)
    throw configuration_error("launch: " + std::to_string(options.processes) + " units from base port " +
                              std::to_string(options.base_port) + " would need ports beyond 65535");
  if (options.grace.count() < 0)
    throw configuration_error("launch: the grace period is negative (" + std::to_string(options.grace.count()) + " ms)");
  if (options.timeout && options.timeout->count() <= 0)
    throw configuration_error("launch: the timeout must be at least 1 s (got " +
                              std::to_string(options.timeout->count()) + " s)");
  {
    std::string_view host = options.host;
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    detail::check_host(host, "launch: host");
  }
  std::string host = options.host;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);

  bool idle = false;
  if (!proc::active.compare_exchange_strong(idle, true))
    throw launch_error("launch: another launch() is running in this process");
  struct deactivate {
    ~deactivate() { proc::active.store(false); }
  } deactivate_on_exit;

  const unit_id n = options.processes;
  proc::signal_scope signals;
  const int signals_seen_before = proc::signal_count.load();

  const std::string program = proc::resolve_program(command.front());
  std::vector<std::string> arguments = command;
  auto argv = proc::pointers_to(arguments);
  std::vector<std::string> sh_arguments{"/bin/sh", program};
  sh_arguments.insert(sh_arguments.end(), command.begin() + 1, command.end());
  auto sh_argv = proc::pointers_to(sh_arguments);
  const std::vector<std::string> inherited = proc::inherited_environment();

  proc::file devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!devnull.open()) throw launch_error(proc::system_message("launch: cannot open /dev/null", errno));

  proc::unit_set set(signals);
  auto& units = set.units;
  unsigned restarts = 0;  // how many times every unit was started again

  // Starts attempt `restarts`: every unit, on ports picked again when base_port is 0.
  auto start_units = [&] {
    std::vector<std::uint16_t> ports;
    std::vector<proc::file> reserved;
    if (options.base_port == 0) {
      reserved = proc::reserve_ports(host, n, ports);
    } else {
      for (unit_id r = 0; r < n; ++r) ports.push_back(static_cast<std::uint16_t>(options.base_port + r));
    }
    std::vector<endpoint> peers;
    for (const auto port : ports) peers.push_back(endpoint{host, port});
    const std::string peers_text = to_peers_string(peers);

    // Release every reserved port before the first fork: a child holds copies of the launcher's
    // sockets from fork until exec (CLOEXEC acts at exec), so a reservation still open then could
    // keep the next unit from binding its port (seen under load: "Address already in use").
    reserved.clear();

    units.clear();
    units.resize(n);
    for (unit_id r = 0; r < n; ++r) {
      std::vector<std::string> env = inherited;
      env.push_back(std::string(rank_variable) + "=" + std::to_string(r));
      env.push_back(std::string(world_size_variable) + "=" + std::to_string(n));
      env.push_back(std::string(peers_variable) + "=" + peers_text);
      env.push_back(std::string(local_rank_variable) + "=" + std::to_string(r));
      env.push_back(std::string(local_world_size_variable) + "=" + std::to_string(n));
      env.push_back(std::string(restart_variable) + "=" + std::to_string(restarts));
      auto envp = proc::pointers_to(env);
      units[r].rank = r;
      proc::start_unit(units[r], program, argv, sh_argv, envp, devnull.get());
    }
  };

  // --- supervise ---
  enum class phase { running, terminating, killing };
  phase state = phase::running;
  int result = 0;
  bool restart_pending = false;  // a unit failed and the units are being ended to start them again
  int signals_handled = signals_seen_before;
  const auto start = clock::now();
  const std::optional<clock::time_point> run_deadline =
      options.timeout ? std::optional<clock::time_point>(start + *options.timeout) : std::nullopt;
  clock::time_point phase_deadline{};
  int sent_signal = 0;  // what end_units sent last, for the messages
  const std::string others = n > 1 ? "; ending the other units" : "";
  auto say = [&err](const std::string& text) {
    err << "[launch] " << text << '\n';
    err.flush();
  };
  auto prefix = [](unit_id r) {
    std::string p(1, '[');  // built by appending: GCC 12 warns falsely on "[" + std::string (PR 105651)
    return p.append(std::to_string(r)).append("] ");
  };
  auto end_units = [&](int sig) {
    sent_signal = sig;
    for (auto& u : units) proc::signal_unit(u, sig);
    if (sig == SIGKILL) {
      state = phase::killing;
      phase_deadline = clock::now() + proc::kill_wait;
    } else {
      state = phase::terminating;
      phase_deadline = clock::now() + options.grace;
    }
  };

  std::vector<pollfd> fds;
  std::vector<std::pair<std::size_t, int>> sources;  // fds[i + 1] belongs to units[first], stream second
  while (true) {  // one pass per attempt: the first start and each restart
    start_units();
    state = phase::running;
    result = 0;
    restart_pending = false;

    while (true) {
      // Units that have exited: their output is complete in the pipes; drain it, then report.
      for (auto& u : units) {
        if (u.exited || !proc::check_exit(u)) continue;
        proc::read_stream(u.out, prefix(u.rank), out, true);
        proc::read_stream(u.err, prefix(u.rank), err, true);
        proc::emit(u.out, prefix(u.rank), out, true);
        proc::emit(u.err, prefix(u.rank), err, true);
        u.out.pipe.close();  // a process the unit left behind may hold the pipe; stop listening to it
        u.err.pipe.close();
        if (u.exec_status.open()) proc::read_exec_status(u);
        if (state != phase::running || (u.signal == 0 && u.exit_code == 0)) continue;
        // A failure restarts every unit while restarts are left, unless the program cannot be run.
        restart_pending = restarts < options.max_restarts && !u.exec_errno;
        const std::string then =
            !restart_pending ? others
            : n > 1 ? others + ", then restarting all units (restart " + std::to_string(restarts + 1) + " of " +
                          std::to_string(options.max_restarts) + ")"
                    : "; restarting it (restart " + std::to_string(restarts + 1) + " of " +
                          std::to_string(options.max_restarts) + ")";
        if (u.exec_errno) {
          say("rank " + std::to_string(u.rank) + " cannot run '" + command.front() + "': " +
              std::strerror(*u.exec_errno) + " (exit code 127)" + then);
          result = launch_cannot_run_exit_code;
        } else if (u.signal != 0) {
          say("rank " + std::to_string(u.rank) + " was killed by " + proc::signal_name(u.signal) + " (exit code " +
              std::to_string(128 + u.signal) + ")" + then);
          result = 128 + u.signal;
        } else {
          say("rank " + std::to_string(u.rank) + " exited with code " + std::to_string(u.exit_code) + then);
          result = u.exit_code;
        }
        if (result == 0) result = 1;
        end_units(SIGTERM);
      }
      if (std::all_of(units.begin(), units.end(), [](const auto& u) { return u.exited; })) break;

      // Signals to the launcher: pass the first on, answer a second with SIGKILL. One that comes
      // while the units are being ended for a restart cancels the restart.
      if (const int count = proc::signal_count.load(); count != signals_handled) {
        signals_handled = count;
        const int sig = proc::last_signal.load();
        if (state == phase::running) {
          say("received " + proc::signal_name(sig) + ": passing it on to the units");
          result = 128 + sig;
          end_units(sig);
        } else if (restart_pending) {
          say("received " + proc::signal_name(sig) + ": not restarting");
          restart_pending = false;
        } else if (state == phase::terminating) {
          say("received " + proc::signal_name(sig) + " again: killing the units");
          end_units(SIGKILL);
        }
      }

      // Deadlines. The whole-run timeout covers every attempt, and the ending before a restart too.
      const auto now = clock::now();
      if (restart_pending && run_deadline && now >= *run_deadline) {
        say("the run did not end within " + std::to_string(options.timeout->count()) + " s; not restarting");
        result = launch_timeout_exit_code;
        restart_pending = false;
      }
      if (state == phase::running && run_deadline && now >= *run_deadline) {
        say("the run did not end within " + std::to_string(options.timeout->count()) + " s; ending the units");
        result = launch_timeout_exit_code;
        end_units(SIGTERM);
      } else if (state == phase::terminating && now >= phase_deadline) {
        for (const auto& u : units)
          if (!u.exited)
            say("rank " + std::to_string(u.rank) + " did not end within " + std::to_string(options.grace.count()) +
                " ms of " + proc::signal_name(sent_signal) + ": sending SIGKILL");
        end_units(SIGKILL);
      } else if (state == phase::killing && now >= phase_deadline) {
        for (const auto& u : units)
          if (!u.exited)
            say("rank " + std::to_string(u.rank) + " (pid " + std::to_string(u.pid) + ") did not end " +
                std::to_string(proc::kill_wait.count()) + " s after SIGKILL; leaving it" +
                (restart_pending ? " and not restarting" : ""));
        restart_pending = false;
        break;
      }

      // Wait for output, an exec report, a signal (SIGCHLD included), or the next deadline.
      std::optional<clock::time_point> next;
      if (state == phase::running) next = run_deadline;
      else if (restart_pending && run_deadline) next = std::min(phase_deadline, *run_deadline);
      else next = phase_deadline;
      int wait_ms = -1;
      if (next) {
        const auto ms = std::chrono::ceil<std::chrono::milliseconds>(*next - clock::now()).count();
        wait_ms = static_cast<int>(std::clamp<long long>(ms, 0, INT_MAX));
      }
      fds.clear();
      sources.clear();
      fds.push_back(pollfd{signals.wake_fd_to_poll(), POLLIN, 0});
      for (std::size_t k = 0; k < units.size(); ++k) {
        const int streams[3] = {units[k].out.pipe.get(), units[k].err.pipe.get(), units[k].exec_status.get()};
        for (int which = 0; which < 3; ++which)
          if (streams[which] >= 0) {
            fds.push_back(pollfd{streams[which], POLLIN, 0});
            sources.emplace_back(k, which);
          }
      }
      const int ready = ::poll(fds.data(), static_cast<nfds_t>(fds.size()), wait_ms);
      if (ready < 0 && errno != EINTR) throw launch_error(proc::system_message("launch: poll failed", errno));
      if (ready <= 0) continue;
      if (fds[0].revents != 0) signals.drain();
      for (std::size_t i = 0; i < sources.size(); ++i) {
        if ((fds[i + 1].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        auto& u = units[sources[i].first];
        switch (sources[i].second) {
          case 0: proc::read_stream(u.out, prefix(u.rank), out, false); break;
          case 1: proc::read_stream(u.err, prefix(u.rank), err, false); break;
          default: proc::read_exec_status(u); break;
        }
      }
    }

    // The attempt is over. When it was ended, kill whatever the units left in their process groups
    // (each unit is still a zombie, so its group id cannot have been reused); then reap the units.
    if (state != phase::running)
      for (auto& u : units) proc::signal_unit(u, SIGKILL);
    for (auto& u : units) proc::reap(u);
    // A signal or the timeout that came as the last units ended still cancels the restart.
    if (restart_pending && proc::signal_count.load() != signals_handled) {
      say("received " + proc::signal_name(proc::last_signal.load()) + ": not restarting");
      restart_pending = false;
    } else if (restart_pending && run_deadline && clock::now() >= *run_deadline) {
      say("the run did not end within " + std::to_string(options.timeout->count()) + " s; not restarting");
      result = launch_timeout_exit_code;
      restart_pending = false;
    }
    if (!restart_pending) return result;
    ++restarts;
  }
}

}  // namespace f2d2n
