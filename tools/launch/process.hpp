// tools/launch/process.hpp: what launch() (tools/launch/launcher.hpp) is built from: file
// descriptors and pipes, process-wide signal handling, port reservation, starting, reading,
// signalling and reaping unit processes.
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
#include <cstdio>
#include <cstdlib>
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
    handler.sa_flags = SA_RESTART;  // SIGCHLD for a stopped unit too: a stopped unit is reported at once
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
  struct sigaction previous_[4]{};
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
    case SIGSTOP: return "SIGSTOP";
    case SIGTSTP: return "SIGTSTP";
    case SIGTTIN: return "SIGTTIN";
    case SIGTTOU: return "SIGTTOU";
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
  int stop_signal = 0;  ///< the signal that stopped it (SIGSTOP, SIGTSTP, ...), seen by check_stop, or 0
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

/// Whether the unit is stopped by a signal now (without consuming the report); records the signal.
inline bool check_stop(unit_process& u) {
  if (u.exited || u.pid <= 0) return false;
  siginfo_t info{};
  if (::waitid(P_PID, static_cast<id_t>(u.pid), &info, WSTOPPED | WNOHANG | WNOWAIT) != 0 || info.si_pid != u.pid ||
      info.si_code != CLD_STOPPED)
    return false;
  u.stop_signal = info.si_status;
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
    if (in_fd < 0 || out_fd < 0 || err_fd < 0 || ::dup2(in_fd, 0) < 0 || ::dup2(out_fd, 1) < 0 || ::dup2(err_fd, 2) < 0)
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

}  // namespace f2d2n
