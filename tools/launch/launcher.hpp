// tools/launch/launcher.hpp: start the units of a cluster as processes on this machine (what
// torchrun or mpirun do for one machine), POSIX only. The supervisor behind the f2d2n_launch
// program (tools/f2d2n_launch.cpp) and tests/launch_test.cpp; not one of the installed headers: a
// unit needs only <f2d2n/launch/config.hpp>.
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
// - as soon as one unit exits with a non-zero code, is killed by a signal or is stopped by one
//   (SIGSTOP, SIGTSTP, ...: a stopped unit holds every other unit up, so it is reported at once, as
//   "rank 2 was stopped by SIGSTOP and does not answer"), says on `err` which rank ended how, sends
//   SIGTERM to the others (and SIGCONT to a stopped one, so that it takes the SIGTERM), SIGKILL to
//   those still running `grace` later, and returns that unit's exit code (128 + the signal's number
//   for a signal, 127 when the program could not be started);
// - reports the unit that failed first, not a bystander: a unit that exits with
//   bystander_exit_code (86, launch/config.hpp: it failed only because another unit failed first,
//   as exit_code_of() tells a unit's main) does not end the run by itself; the launcher waits up to
//   `grace` for another unit to fail (or stop), and reports that one with its code; if none does
//   (or every unit has ended), it reports the first bystander, with code 86;
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

#include "process.hpp"

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

/// How launch() starts and supervises the units.
struct launch_options {
  unit_id processes = 1;                          ///< how many units to start (ranks 0 .. processes - 1)
  std::string host = "127.0.0.1";                 ///< where the units listen (and are reached)
  std::uint16_t base_port = 0;                    ///< unit r listens on base_port + r; 0: free ports on host
  std::chrono::milliseconds grace{2000};          ///< SIGTERM to SIGKILL
  std::optional<std::chrono::seconds> timeout{};  ///< whole-run deadline: end every unit, return 124
  unsigned max_restarts = 0;                      ///< times every unit is started again after a unit fails
  /// F2D2N_TIMEOUT for the units: how long one wait for a peer may take (unset: theirs, or 60 s).
  std::optional<std::chrono::milliseconds> unit_timeout{};
  /// F2D2N_CONNECT_TIMEOUT for the units: how long connecting may take (unset: theirs, or 10 s).
  std::optional<std::chrono::milliseconds> connect_timeout{};
};

/// What launch() returns when the whole-run timeout ends the units.
inline constexpr int launch_timeout_exit_code = 124;

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
    throw configuration_error("launch: the grace period is negative (" + std::to_string(options.grace.count()) +
                              " ms)");
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
  std::vector<std::string> inherited = proc::inherited_environment();
  // The cluster key: the one set for the launcher (checked here, before any unit starts), else a
  // fresh one for this run, which only the units learn (it is in no message and no output).
  if (!cluster_key_from_environment()) {
    auto set_to = [](std::string_view entry, std::string_view name) {
      return entry.size() > name.size() && entry.substr(0, name.size()) == name && entry[name.size()] == '=';
    };
    std::erase_if(inherited, [&](const std::string& e) {
      return set_to(e, cluster_key_variable) || set_to(e, cluster_key_file_variable);
    });
    inherited.push_back(std::string(cluster_key_variable) + "=" + cluster_key::generate().text());
  }
  auto seconds_text = [](std::chrono::milliseconds t) {
    return std::to_string(t.count() / 1000) + "." + std::to_string(1000 + t.count() % 1000).substr(1);
  };
  for (const auto& [value, name] : {std::pair{options.unit_timeout, timeout_variable},
                                    std::pair{options.connect_timeout, connect_timeout_variable}}) {
    if (!value) continue;
    std::erase_if(inherited, [name = std::string(name) + "="](const std::string& e) { return e.starts_with(name); });
    inherited.push_back(std::string(name) + "=" + seconds_text(*value));
  }

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
    // A stopped unit takes no signal but SIGKILL until it is continued: continue it, so that the
    // signal just sent ends it now rather than after the grace period.
    if (sig != SIGKILL)
      for (auto& u : units)
        if (u.stop_signal != 0 && !u.exited) proc::signal_unit(u, SIGCONT);
    if (sig == SIGKILL) {
      state = phase::killing;
      phase_deadline = clock::now() + proc::kill_wait;
    } else {
      state = phase::terminating;
      phase_deadline = clock::now() + options.grace;
    }
  };

  std::vector<unit_id> bystanders;  // units that exited with bystander_exit_code in this attempt, in order
  std::optional<clock::time_point> bystander_deadline;  // the latest time to wait for the unit they blame
  // Reports unit `u` as the first that failed (`how`: what happened to it; the bystanders that exited
  // before it are named, unless it is one), ends the other units, and restarts every unit while
  // restarts are left, unless the program cannot be run.
  auto fail = [&](const proc::unit_process& u, const std::string& how, int code, bool bystander = false) {
    restart_pending = restarts < options.max_restarts && !u.exec_errno;
    const std::string then = !restart_pending ? others
                             : n > 1 ? others + ", then restarting all units (restart " + std::to_string(restarts + 1) +
                                           " of " + std::to_string(options.max_restarts) + ")"
                                     : "; restarting it (restart " + std::to_string(restarts + 1) + " of " +
                                           std::to_string(options.max_restarts) + ")";
    std::vector<unit_id> ranks = bystanders;
    std::sort(ranks.begin(), ranks.end());  // in rank order: those that exit together are seen in any order
    std::string before;
    for (const unit_id b : ranks)
      if (b != u.rank) before += (before.empty() ? "" : ", ") + std::to_string(b);
    if (bystander) before.clear();
    if (!before.empty())
      before = " (the first unit that failed; rank(s) " + before + " exited before it with code " +
               std::to_string(bystander_exit_code) + ": failed because another unit failed)";
    say("rank " + std::to_string(u.rank) + " " + how + before + then);
    result = code == 0 ? 1 : code;
    end_units(SIGTERM);
  };

  std::vector<pollfd> fds;
  std::vector<std::pair<std::size_t, int>> sources;  // fds[i + 1] belongs to units[first], stream second
  while (true) {                                     // one pass per attempt: the first start and each restart
    start_units();
    state = phase::running;
    result = 0;
    restart_pending = false;
    bystanders.clear();
    bystander_deadline.reset();

    while (true) {
      // Units that have exited: their output is complete in the pipes; drain it, then report the
      // first unit that failed. A bystander (exit code bystander_exit_code: it failed because
      // another unit failed first) is not that unit: the launcher waits for the unit it blames, up
      // to the grace period, and reports the bystander only if none shows itself.
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
        if (!u.exec_errno && u.signal == 0 && u.exit_code == bystander_exit_code) {
          if (bystanders.empty()) bystander_deadline = clock::now() + options.grace;
          bystanders.push_back(u.rank);
          continue;
        }
        if (u.exec_errno) {
          fail(u, "cannot run '" + command.front() + "': " + std::strerror(*u.exec_errno) + " (exit code 127)",
               launch_cannot_run_exit_code);
        } else if (u.signal != 0) {
          fail(u,
               "was killed by " + proc::signal_name(u.signal) + " (exit code " + std::to_string(128 + u.signal) + ")",
               128 + u.signal);
        } else {
          fail(u, "exited with code " + std::to_string(u.exit_code), u.exit_code);
        }
      }
      // A stopped unit (SIGSTOP, SIGTSTP, ...) holds every other unit up: it is the one to report,
      // at once, before the others fail waiting for it.
      for (auto& u : units)
        if (state == phase::running && !u.exited && proc::check_stop(u))
          fail(u,
               "was stopped by " + proc::signal_name(u.stop_signal) + " and does not answer (exit code " +
                   std::to_string(128 + u.stop_signal) + ")",
               128 + u.stop_signal);
      const bool all_exited = std::all_of(units.begin(), units.end(), [](const auto& u) { return u.exited; });
      if (state == phase::running && !bystanders.empty() &&
          (all_exited || clock::now() >= *bystander_deadline)) {  // the unit they blame never failed here
        fail(units[bystanders.front()],
             "exited with code " + std::to_string(bystander_exit_code) +
                 " (it failed because another unit failed, but no other unit " +
                 (all_exited ? std::string("failed)")
                             : "was seen failing within " + std::to_string(options.grace.count()) + " ms)"),
             bystander_exit_code, true);
      }
      if (all_exited) break;

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
      if (state == phase::running) {
        next = run_deadline;
        if (bystander_deadline) next = next ? std::min(*next, *bystander_deadline) : bystander_deadline;
      } else if (restart_pending && run_deadline) {
        next = std::min(phase_deadline, *run_deadline);
      } else {
        next = phase_deadline;
      }
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
