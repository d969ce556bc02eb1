#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

// Tests of the launch area: cluster configuration from the environment and from hosts files (every
// error case, with its typed error and what its message names), and the launcher with real child
// processes (/bin/sh -c ...): prefixes, environment, failures, signals, grace period, timeout.
// Deadlines below are bounds against hangs, not speed measurements.

#include "temp_dir.hpp"

#include <f2d2n/core/error.hpp>
#include <f2d2n/launch.hpp>

#include "launch/launcher.hpp"  // tools/launch/: the supervisor behind f2d2n_launch

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
using f2d2n::configuration_error;
using f2d2n::endpoint;
using namespace std::chrono_literals;

namespace {

/// A fresh directory for this test's files (tests/temp_dir.hpp).
struct temp_dir : f2d2n::testing::temp_dir {
  temp_dir() : f2d2n::testing::temp_dir("f2d2n-launch-test") {}
};

/// Sets (or unsets, for nullopt) environment variables for its lifetime, then restores them.
class scoped_environment {
 public:
  void set(const std::string& name, const std::optional<std::string>& value) {
    if (std::none_of(saved_.begin(), saved_.end(), [&](const auto& s) { return s.first == name; })) {
      const char* old = std::getenv(name.c_str());
      saved_.emplace_back(name, old != nullptr ? std::optional<std::string>(old) : std::nullopt);
    }
    if (value) ::setenv(name.c_str(), value->c_str(), 1);
    else ::unsetenv(name.c_str());
  }
  ~scoped_environment() {
    for (const auto& [name, value] : saved_) {
      if (value) ::setenv(name.c_str(), value->c_str(), 1);
      else ::unsetenv(name.c_str());
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

/// The message of the configuration_error `f` throws; fails the test if it throws nothing or another type.
std::string config_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const configuration_error& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("expected a configuration_error, got: " << e.what());
    return {};
  }
  FAIL("expected a configuration_error, nothing was thrown");
  return {};
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::size_t count_lines(const std::string& text, const std::string& line) {
  std::istringstream in(text);
  std::size_t n = 0;
  for (std::string l; std::getline(in, l);) n += l == line ? 1 : 0;
  return n;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// Whether `pid` is a live process (not gone, not a zombie awaiting its reaper).
bool running(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return false;
  const auto paren = text.rfind(')');
  return paren == std::string::npos || paren + 2 >= text.size() || text[paren + 2] != 'Z';
}

/// Waits up to `limit` for `pid` to end (signals are asynchronous: a process killed a moment ago may
/// still be on its way out). A bounded wait in the test, not in the library.
bool ends_within(pid_t pid, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (running(pid)) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

struct run_result {
  int code = -1;
  std::string out;
  std::string err;
  double seconds = 0;
};

run_result run(const f2d2n::launch_options& options, const std::vector<std::string>& command) {
  std::ostringstream out;
  std::ostringstream err;
  const auto start = std::chrono::steady_clock::now();
  run_result r;
  r.code = f2d2n::launch(options, command, out, err);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.out = out.str();
  r.err = err.str();
  return r;
}

run_result run_sh(f2d2n::launch_options options, const std::string& script) {
  return run(options, {"/bin/sh", "-c", script});
}

f2d2n::launch_options units(f2d2n::unit_id n, std::chrono::milliseconds grace = 2000ms) {
  f2d2n::launch_options o;
  o.processes = n;
  o.grace = grace;
  return o;
}

/// The pids a script wrote into `dir` as files named `prefix<rank>`.
std::vector<pid_t> pids_in(const temp_dir& dir, const std::string& prefix, int ranks) {
  std::vector<pid_t> pids;
  for (int r = 0; r < ranks; ++r) {
    const std::string text = read_file(dir.file(prefix + std::to_string(r)));
    if (!text.empty()) pids.push_back(static_cast<pid_t>(std::stol(text)));
  }
  return pids;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Endpoints and peer lists
// ------------------------------------------------------------------------------------------------

TEST_CASE("endpoints: host:port, IPv6 in brackets, round trip through the peers string") {
  CHECK(f2d2n::parse_endpoint("127.0.0.1:29500") == endpoint{"127.0.0.1", 29500});
  CHECK(f2d2n::parse_endpoint("node-a.lan:1") == endpoint{"node-a.lan", 1});
  CHECK(f2d2n::parse_endpoint("[::1]:65535") == endpoint{"::1", 65535});
  CHECK(f2d2n::to_string(endpoint{"::1", 7}) == "[::1]:7");
  const std::vector<endpoint> peers{{"127.0.0.1", 29500}, {"::1", 29501}, {"node_b", 80}};
  const std::string text = f2d2n::to_peers_string(peers);
  CHECK(text == "127.0.0.1:29500,[::1]:29501,node_b:80");
  CHECK(f2d2n::parse_peers(text) == peers);
  CHECK(f2d2n::parse_peers(" a:1 , b:2 ") == std::vector<endpoint>{{"a", 1}, {"b", 2}});
  CHECK(f2d2n::to_peers_string({}).empty());
}

// ------------------------------------------------------------------------------------------------
// Configuration from the environment
// ------------------------------------------------------------------------------------------------

TEST_CASE("environment: a good configuration") {
  scoped_environment env;
  env.set("F2D2N_RANK", "2");
  env.set("F2D2N_WORLD_SIZE", "3");
  env.set("F2D2N_PEERS", "127.0.0.1:29500,127.0.0.1:29501,[::1]:29500");
  const auto c = f2d2n::config_from_environment();
  CHECK(c.rank == 2);
  CHECK(c.world_size == 3);
  REQUIRE(c.peers.size() == 3);
  CHECK(c.peers[1] == endpoint{"127.0.0.1", 29501});
  CHECK(c.self() == endpoint{"::1", 29500});

  env.set("F2D2N_RANK", "0");
  env.set("F2D2N_WORLD_SIZE", "1");
  env.set("F2D2N_PEERS", "localhost:1");
  CHECK(f2d2n::config_from_environment().peers == std::vector<endpoint>{{"localhost", 1}});
}

TEST_CASE("environment: every problem is a configuration_error naming the variable and the value") {
  scoped_environment env;
  const auto good = [&] {
    env.set("F2D2N_RANK", "1");
    env.set("F2D2N_WORLD_SIZE", "2");
    env.set("F2D2N_PEERS", "127.0.0.1:29500,127.0.0.1:29501");
  };
  const auto error = [] { return config_error([] { (void)f2d2n::config_from_environment(); }); };

  SUBCASE("missing variables") {
    for (const char* name : {"F2D2N_RANK", "F2D2N_WORLD_SIZE", "F2D2N_PEERS"}) {
      CAPTURE(name);
      good();
      env.set(name, std::nullopt);
      CHECK(error() == std::string(name) + " is not set");
    }
  }
  SUBCASE("not a number") {
    for (const char* bad : {"x", "-1", "+1", "1.5", "", "1x", "0x1", "99999999999999999999"}) {
      CAPTURE(bad);
      good();
      env.set("F2D2N_RANK", bad);
      auto e = error();
      CHECK(contains(e, "F2D2N_RANK='" + std::string(bad) + "'"));
      CHECK(contains(e, "not a rank"));
      good();
      env.set("F2D2N_WORLD_SIZE", bad);
      e = error();
      CHECK(contains(e, "F2D2N_WORLD_SIZE='" + std::string(bad) + "'"));
      CHECK(contains(e, "not a number of units"));
    }
    good();
    env.set("F2D2N_WORLD_SIZE", "4294967296");  // one more than a unit_id holds
    CHECK(contains(error(), "F2D2N_WORLD_SIZE='4294967296'"));
  }
  SUBCASE("world size 0") {
    good();
    env.set("F2D2N_WORLD_SIZE", "0");
    CHECK(contains(error(), "F2D2N_WORLD_SIZE=0"));
  }
  SUBCASE("rank not below the world size") {
    good();
    env.set("F2D2N_RANK", "2");
    CHECK(error() == "F2D2N_RANK=2 is not below F2D2N_WORLD_SIZE=2");
  }
  SUBCASE("wrong number of peers") {
    good();
    env.set("F2D2N_PEERS", "127.0.0.1:29500");
    auto e = error();
    CHECK(contains(e, "F2D2N_PEERS='127.0.0.1:29500' names 1 endpoints"));
    CHECK(contains(e, "F2D2N_WORLD_SIZE=2"));
    env.set("F2D2N_PEERS", "a:1,a:2,a:3");
    CHECK(contains(error(), "names 3 endpoints"));
  }
  SUBCASE("bad host:port entries") {
    struct bad_case {
      const char* peers;
      const char* says;
    };
    for (const auto& c : {
             bad_case{"127.0.0.1,127.0.0.1:29501", "entry 0 '127.0.0.1' is not host:port"},
             bad_case{"a:1,b:http", "entry 1 'b:http': the port 'http' is not a number"},
             bad_case{"a:1,b:", "entry 1 'b:': the port '' is not a number"},
             bad_case{"a:1,:29501", "entry 1 ':29501': the host is empty"},
             bad_case{"a:1,::1:29501", "write an IPv6 address in brackets"},
             bad_case{"a:1,[::1:29501", "entry 1 '[::1:29501' is not [address]:port"},
             bad_case{"a:1,b/c:2", "the host 'b/c' contains '/'"},
             bad_case{"a:1,b c:2", "the host 'b c' contains a space"},
             bad_case{"a:1,b:0", "entry 1 'b:0': the port 0 is outside 1..65535"},
             bad_case{"a:1,b:65536", "the port 65536 is outside 1..65535"},
             bad_case{"a:1,b:-5", "the port '-5' is not a number"},
             bad_case{"a:1,b:99999999999999999999", "the port '99999999999999999999' is not a number"},
             bad_case{"a:1,,b:2", "entry 1 is empty"},
             bad_case{"a:1,", "entry 1 is empty"},
             bad_case{"a:1,a:1", "entries 0 and 1 are both a:1"},
             bad_case{"[::1]:5,[::1]:5", "entries 0 and 1 are both [::1]:5"},
         }) {
      CAPTURE(c.peers);
      good();
      env.set("F2D2N_PEERS", c.peers);
      const auto e = error();
      CHECK(contains(e, "F2D2N_PEERS='" + std::string(c.peers) + "'"));
      CHECK(contains(e, c.says));
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Hosts files
// ------------------------------------------------------------------------------------------------

TEST_CASE("hosts: consecutive ranks per line, default and explicit ports, comments, IPv6, CRLF") {
  const std::string text =
      "# machines of the cluster\n"
      "\n"
      "node-a.lan   2            # ranks 0, 1 on 29500, 29501\r\n"
      "\tnode-b.lan\t3\t31000\n"
      "   # indented comment\n"
      "[::1] 1 40000\n"
      "fe80::1%eth0 1";  // no final newline
  const auto entries = f2d2n::parse_hosts(text);
  REQUIRE(entries.size() == 4);
  CHECK(entries[1].line == 4);
  CHECK(entries[3].host == "fe80::1%eth0");
  for (f2d2n::unit_id rank = 0; rank < 7; ++rank) {
    const auto c = f2d2n::config_from_hosts(text, rank);
    CHECK(c.rank == rank);
    CHECK(c.world_size == 7);
  }
  const auto c = f2d2n::config_from_hosts(text, 4);
  CHECK(c.peers == std::vector<endpoint>{{"node-a.lan", 29500},
                                         {"node-a.lan", 29501},
                                         {"node-b.lan", 31000},
                                         {"node-b.lan", 31001},
                                         {"node-b.lan", 31002},
                                         {"::1", 40000},
                                         {"fe80::1%eth0", 29500}});
  CHECK(c.self() == endpoint{"node-b.lan", 31002});
  // The same host on two lines is fine when the ports do not overlap.
  CHECK(f2d2n::config_from_hosts("h 2 100\nh 2 102\n", 3).self() == endpoint{"h", 103});
  CHECK(f2d2n::config_from_hosts("h 1 65535", 0).self() == endpoint{"h", 65535});
}

TEST_CASE("hosts: every problem is a configuration_error naming the source and the line") {
  struct bad_case {
    const char* text;
    const char* says;
  };
  for (const auto& c : {
           bad_case{"a 1\nnode-b\n", "cluster.conf:2: 'node-b' names no number of units"},
           bad_case{"a 1 2 3\n", "cluster.conf:1: 'a 1 2 3' has 4 fields"},
           bad_case{"# c\n\na 0\n", "cluster.conf:3: the number of units '0' is not a whole number in 1..65535"},
           bad_case{"a x\n", "cluster.conf:1: the number of units 'x'"},
           bad_case{"a -1\n", "the number of units '-1'"},
           bad_case{"a 70000\n", "the number of units '70000'"},
           bad_case{"a 1\nb 1 0\n", "cluster.conf:2: the port 0 is outside 1..65535"},
           bad_case{"a 1 65536\n", "cluster.conf:1: the port 65536 is outside 1..65535"},
           bad_case{"a 1 port\n", "the port 'port' is not a number"},
           bad_case{"a 2 65535\n", "cluster.conf:1: 2 units from port 65535 would need ports beyond 65535"},
           bad_case{"a 2\nb 1\na 2 29501\n",
                    "cluster.conf:3: ports 29501..29502 on a overlap those of line 1 (29500..29501)"},
           bad_case{"a,b 1\n", "cluster.conf:1: the host 'a,b' contains ','"},
           bad_case{"[::1 1\n", "cluster.conf:1: the host '[::1' opens a bracket it does not close"},
           bad_case{"[] 1\n", "cluster.conf:1: the host is empty"},
           bad_case{"", "cluster.conf: names no machine"},
           bad_case{"# only\n\n   \n", "cluster.conf: names no machine"},
       }) {
    CAPTURE(c.text);
    const auto e = config_error([&c] { (void)f2d2n::config_from_hosts(c.text, 0, "cluster.conf"); });
    CHECK(contains(e, c.says));
  }
  const auto e = config_error([] { (void)f2d2n::config_from_hosts("a 2\nb 3\n", 5, "cluster.conf"); });
  CHECK(e == "cluster.conf: rank 5 is beyond the 5 units the file names (ranks 0..4)");
}

TEST_CASE("hosts files: read from disk; a missing file or a directory is a configuration_error") {
  temp_dir dir;
  const std::string path = dir.file("hosts");
  std::ofstream(path) << "127.0.0.1 2 30000\n127.0.0.2 1\n";
  const auto c = f2d2n::config_from_hosts_file(path, 2);
  CHECK(c.world_size == 3);
  CHECK(c.self() == endpoint{"127.0.0.2", 29500});

  std::ofstream(dir.file("bad")) << "127.0.0.1 2\n127.0.0.1 two\n";
  auto e = config_error([&] { (void)f2d2n::config_from_hosts_file(dir.file("bad"), 0); });
  CHECK(contains(e, dir.file("bad") + ":2: the number of units 'two'"));

  e = config_error([&] { (void)f2d2n::config_from_hosts_file(dir.file("missing"), 0); });
  CHECK(contains(e, "hosts file '" + dir.file("missing") + "' cannot be opened: No such file or directory"));
  e = config_error([&] { (void)f2d2n::config_from_hosts_file(dir.path().string(), 0); });
  CHECK(contains(e, "is a directory"));
}

// ------------------------------------------------------------------------------------------------
// The launcher
// ------------------------------------------------------------------------------------------------

TEST_CASE("launch: every unit succeeds; lines prefixed with the rank; each unit told its place") {
  scoped_environment env;
  env.set("F2D2N_RANK", "99");  // the launcher's own variables must not leak into the units
  env.set("F2D2N_PEERS", "stale:1");
  const auto r = run_sh(units(4),
                        "echo \"rank=$F2D2N_RANK world=$F2D2N_WORLD_SIZE local=$F2D2N_LOCAL_RANK/"
                        "$F2D2N_LOCAL_WORLD_SIZE peers=$F2D2N_PEERS\"; echo \"to-stderr $F2D2N_RANK\" >&2; "
                        "printf \"partial-$F2D2N_RANK\"");
  CHECK(r.code == 0);
  CHECK(r.seconds < 10);
  INFO("out:\n" << r.out << "err:\n" << r.err);

  std::set<std::string> peer_strings;
  for (int rank = 0; rank < 4; ++rank) {
    const std::string p = "[" + std::to_string(rank) + "] ";
    const std::string start =
        p + "rank=" + std::to_string(rank) + " world=4 local=" + std::to_string(rank) + "/4 peers=";
    std::size_t seen = 0;
    for (const auto& line : lines_of(r.out))
      if (line.rfind(start, 0) == 0) {
        ++seen;
        peer_strings.insert(line.substr(start.size()));
      }
    CHECK(seen == 1);
    CHECK(count_lines(r.out, p + "partial-" + std::to_string(rank)) == 1);
    CHECK(count_lines(r.err, p + "to-stderr " + std::to_string(rank)) == 1);
  }
  for (const auto& line : lines_of(r.out)) CHECK(line.size() > 4);
  CHECK(lines_of(r.out).size() == 8);
  CHECK(lines_of(r.err).size() == 4);  // no message from the launcher on success

  REQUIRE(peer_strings.size() == 1);                             // every unit saw the same list
  const auto peers = f2d2n::parse_peers(*peer_strings.begin());  // distinct, or it throws
  REQUIRE(peers.size() == 4);
  for (const auto& p : peers) {
    CHECK(p.host == "127.0.0.1");
    CHECK(p.port != 0);
  }
}

TEST_CASE("launch: base port, ordered output in bulk, stdin is /dev/null, scripts without #!") {
  auto o = units(3);
  o.base_port = 40100;
  auto r = run_sh(o, "echo \"$F2D2N_PEERS\"");
  CHECK(r.code == 0);
  CHECK(count_lines(r.out, "[2] 127.0.0.1:40100,127.0.0.1:40101,127.0.0.1:40102") == 1);

  // More output than a pipe holds, in order; a line longer than 64 KiB comes in pieces.
  r = run_sh(units(2),
             "i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done; "
             "head -c 70000 /dev/zero | tr '\\0' x");
  CHECK(r.code == 0);
  for (const std::string p : {"[0] ", "[1] "}) {
    std::vector<std::string> mine;
    for (const auto& line : lines_of(r.out))
      if (line.rfind(p, 0) == 0) mine.push_back(line.substr(p.size()));
    REQUIRE(mine.size() == 3002);
    for (int i = 0; i < 3000; ++i) CHECK_MESSAGE(mine[i] == "line-" + std::to_string(i), "at " << i);
    CHECK(mine[3000] == std::string(65536, 'x'));
    CHECK(mine[3001] == std::string(70000 - 65536, 'x'));
  }

  r = run(units(2), {"cat"});  // would wait forever on a terminal
  CHECK(r.code == 0);
  CHECK(r.out.empty());

  temp_dir dir;
  const std::string script = dir.file("unit-script");
  std::ofstream(script) << "echo script-ran $F2D2N_RANK \"$1\"\n";
  fs::permissions(script, fs::perms::owner_all);
  r = run(units(2), {script, "arg one"});
  CHECK(r.code == 0);
  CHECK(count_lines(r.out, "[1] script-ran 1 arg one") == 1);
}

TEST_CASE("launch: one unit fails; the others are ended at once, leaving nothing running") {
  temp_dir dir;
  const std::string d = dir.path().string();
  // Rank 1 waits (bounded) until ranks 0 and 2 have written their pids, then exits 3. Rank 0 is its
  // own `sleep`; rank 2 is a shell waiting for a `sleep` it started (a grandchild of the launcher).
  const std::string script =
      "R=$F2D2N_RANK; D='" + d +
      "'; echo $$ > \"$D/t\"$R; mv \"$D/t\"$R \"$D/sh\"$R; "
      "if [ $R = 1 ]; then i=0; while [ $i -lt 400 ] && { [ ! -e \"$D/sleep0\" ] || [ ! -e \"$D/sleep2\" ]; }; "
      "do sleep 0.02; i=$((i+1)); done; echo failing; exit 3; fi; "
      "if [ $R = 0 ]; then echo $$ > \"$D/t0\"; mv \"$D/t0\" \"$D/sleep0\"; exec sleep 30; fi; "
      "sleep 30 & echo $! > \"$D/t2\"; mv \"$D/t2\" \"$D/sleep2\"; wait";
  const auto r = run_sh(units(3), script);
  INFO("out:\n" << r.out << "err:\n" << r.err);
  CHECK(r.code == 3);
  CHECK(r.seconds < 10);
  CHECK(count_lines(r.out, "[1] failing") == 1);
  CHECK(count_lines(r.err, "[launch] rank 1 exited with code 3; ending the other units") == 1);
  CHECK(!contains(r.err, "SIGKILL"));  // SIGTERM was enough

  auto pids = pids_in(dir, "sh", 3);
  const auto sleeps = pids_in(dir, "sleep", 3);
  CHECK(pids.size() == 3);
  CHECK(sleeps.size() == 2);
  pids.insert(pids.end(), sleeps.begin(), sleeps.end());
  for (const pid_t pid : pids) {
    CAPTURE(pid);
    CHECK(ends_within(pid, 3000ms));
  }
}

TEST_CASE("launch: a unit killed by a signal gives 128 + its number") {
  const auto r = run_sh(units(2), "if [ $F2D2N_RANK = 0 ]; then kill -KILL $$; fi; exec sleep 30");
  INFO("err:\n" << r.err);
  CHECK(r.code == 128 + SIGKILL);
  CHECK(r.seconds < 10);
  CHECK(contains(r.err, "[launch] rank 0 was killed by SIGKILL (exit code 137)"));

  const auto one = run_sh(units(1), "kill -USR1 $$");
  CHECK(one.code == 128 + SIGUSR1);
  CHECK(contains(one.err, "[launch] rank 0 was killed by SIGUSR1 (exit code 138)\n"));  // no "others" with one unit
}

TEST_CASE("launch: a unit that ignores SIGTERM is killed after the grace period") {
  temp_dir dir;
  const std::string d = dir.path().string();
  const std::string script =
      "D='" + d +
      "'; if [ $F2D2N_RANK = 1 ]; then trap '' TERM; echo $$ > \"$D/t\"; mv \"$D/t\" \"$D/pid\"; "
      "exec sleep 30; fi; i=0; while [ $i -lt 400 ] && [ ! -e \"$D/pid\" ]; do sleep 0.02; i=$((i+1)); done; exit 4";
  const auto r = run_sh(units(2, 300ms), script);
  INFO("err:\n" << r.err);
  CHECK(r.code == 4);
  CHECK(r.seconds >= 0.3);
  CHECK(r.seconds < 10);
  CHECK(contains(r.err, "[launch] rank 1 did not end within 300 ms of SIGTERM: sending SIGKILL"));
  const std::string pid = read_file(dir.file("pid"));
  REQUIRE(!pid.empty());
  CHECK(ends_within(static_cast<pid_t>(std::stol(pid)), 3000ms));
}

TEST_CASE("launch: a unit stopped by SIGSTOP is reported at once, not the units that wait for it") {
  // Rank 1 stops itself; the others wait 3 s for it, then fail as units blocked on a silent peer
  // would. The launcher must name rank 1 at once (and end it: a stopped unit takes SIGTERM only
  // once continued).
  auto o = units(3, 500ms);
  o.timeout = 20s;
  const auto r = run_sh(o, "if [ $F2D2N_RANK = 1 ]; then kill -STOP $$; fi; sleep 3; exit 1");
  INFO("err:\n" << r.err);
  CHECK(r.code == 128 + SIGSTOP);
  CHECK(r.seconds < 2.5);
  CHECK(count_lines(r.err, "[launch] rank 1 was stopped by SIGSTOP and does not answer (exit code " +
                               std::to_string(128 + SIGSTOP) + "); ending the other units") == 1);
  CHECK(!contains(r.err, "SIGKILL"));  // SIGTERM, then SIGCONT, ended the stopped unit
  CHECK(!contains(r.err, "exited with code"));
}

TEST_CASE("launch: bystanders (exit code 86) are not reported; the unit that failed first is, with its code") {
  REQUIRE(f2d2n::bystander_exit_code == 86);
  SUBCASE("the unit that failed first exits after its bystanders") {
    // Ranks 0 and 1 fail at once because rank 2 failed (as units told by its goodbye would); rank 2
    // itself exits a moment later, with its own code.
    const auto r = run_sh(units(3), "if [ $F2D2N_RANK = 2 ]; then sleep 0.3; echo failing first; exit 3; fi; exit 86");
    INFO("err:\n" << r.err);
    CHECK(r.code == 3);
    CHECK(r.seconds < 10);
    CHECK(count_lines(r.err,
                      "[launch] rank 2 exited with code 3 (the first unit that failed; rank(s) 0, 1 exited before "
                      "it with code 86: failed because another unit failed); ending the other units") == 1);
    CHECK(count_lines(r.out, "[2] failing first") == 1);
  }
  SUBCASE("no unit is seen failing first within the grace period: the first bystander is reported") {
    const auto r = run_sh(units(3, 300ms), "if [ $F2D2N_RANK = 2 ]; then exec sleep 30; fi; exit 86");
    INFO("err:\n" << r.err);
    CHECK(r.code == 86);
    CHECK(r.seconds >= 0.3);
    CHECK(r.seconds < 10);
    // The first bystander to exit (0 or 1: they exit together) is reported, alone.
    const std::string said =
        " exited with code 86 (it failed because another unit failed, but no other unit was seen "
        "failing within 300 ms); ending the other units";
    CHECK(count_lines(r.err, "[launch] rank 0" + said) + count_lines(r.err, "[launch] rank 1" + said) == 1);
  }
  SUBCASE("the unit blamed exits 0: the bystander is reported once every unit has ended") {
    const auto r = run_sh(units(2, 5000ms), "if [ $F2D2N_RANK = 0 ]; then exit 86; fi; sleep 0.2; exit 0");
    INFO("err:\n" << r.err);
    CHECK(r.code == 86);
    CHECK(r.seconds < 4);  // not the grace period: nothing is left to wait for
    CHECK(count_lines(r.err,
                      "[launch] rank 0 exited with code 86 (it failed because another unit failed, but no "
                      "other unit failed); ending the other units") == 1);
  }
}

TEST_CASE("exit_code_of: 1 for a unit that failed first, bystander_exit_code for one that failed because another did") {
  const f2d2n::comm_context at{1, 2, 5, 7};
  auto code = [](f2d2n::unit_id self, auto e) { return f2d2n::exit_code_of(self, std::make_exception_ptr(e)); };
  CHECK(f2d2n::exit_code_of(1, nullptr) == 0);
  CHECK(code(1, std::runtime_error("the data loader failed")) == 1);
  CHECK(code(1, f2d2n::timeout_error(at, "no message arrived before the deadline")) == 1);  // names the silent peer
  CHECK(code(1, f2d2n::peer_error(at, "the peer closed the connection without a goodbye")) == 86);
  CHECK(code(1, f2d2n::peer_error(at, "the peer has shut down because unit 3 failed first: x", {3, "x"})) == 86);
  CHECK(code(1, f2d2n::peer_error(at, "the peer has shut down because unit 1 failed first: x", {1, "x"})) == 1);
}

TEST_CASE("launch: a program that cannot be run gives 127 and says why") {
  auto r = run(units(2), {"/nonexistent/f2d2n-no-such-program", "x"});
  CHECK(r.code == 127);
  CHECK(contains(r.err, "cannot run '/nonexistent/f2d2n-no-such-program': No such file or directory"));

  r = run(units(2), {"f2d2n-no-such-program-on-path"});
  CHECK(r.code == 127);
  CHECK(contains(r.err, "cannot run 'f2d2n-no-such-program-on-path': No such file or directory"));

  temp_dir dir;
  const std::string not_executable = dir.file("data.txt");
  std::ofstream(not_executable) << "echo hi\n";
  fs::permissions(not_executable, fs::perms::owner_read | fs::perms::owner_write);
  r = run(units(1), {not_executable});
  CHECK(r.code == 127);
  CHECK(contains(r.err, "cannot run '" + not_executable + "': Permission denied"));
}

TEST_CASE("launch: the whole-run timeout ends every unit and gives 124") {
  auto o = units(2, 200ms);
  o.timeout = std::chrono::seconds(1);
  const auto r = run_sh(o, "echo started; exec sleep 30");
  INFO("err:\n" << r.err);
  CHECK(r.code == f2d2n::launch_timeout_exit_code);
  CHECK(r.seconds >= 1.0);
  CHECK(r.seconds < 10);
  CHECK(contains(r.err, "[launch] the run did not end within 1 s; ending the units"));
  CHECK(count_lines(r.out, "[0] started") == 1);
  CHECK(count_lines(r.out, "[1] started") == 1);
}

TEST_CASE("launch: SIGINT to the launcher is passed on to the units; its handlers are restored") {
  struct sigaction before {};
  ::sigaction(SIGINT, nullptr, &before);
  // Rank 0 sends SIGINT to its parent, the launcher (this test process).
  const auto r = run_sh(units(3), "if [ $F2D2N_RANK = 0 ]; then kill -INT $PPID; fi; exec sleep 30");
  INFO("err:\n" << r.err);
  CHECK(r.code == 128 + SIGINT);
  CHECK(r.seconds < 10);
  CHECK(contains(r.err, "[launch] received SIGINT: passing it on to the units"));
  CHECK(!contains(r.err, "SIGKILL"));  // sleep ends on SIGINT
  struct sigaction after {};
  ::sigaction(SIGINT, nullptr, &after);
  CHECK((after.sa_handler == before.sa_handler));
}

TEST_CASE("launch: bad options are configuration_errors") {
  auto o = units(0);
  CHECK(contains(config_error([&] { (void)run(o, {"true"}); }), "the number of processes is 0"));
  CHECK(contains(config_error([] { (void)run(units(2), {}); }), "no program to run"));
  o = units(2);
  o.base_port = 65535;
  CHECK(contains(config_error([&] { (void)run(o, {"true"}); }), "would need ports beyond 65535"));
  o = units(1);
  o.host = "not a host";
  CHECK(contains(config_error([&] { (void)run(o, {"true"}); }), "the host 'not a host' contains a space"));
  o = units(1, -1ms);
  CHECK(contains(config_error([&] { (void)run(o, {"true"}); }), "grace period is negative"));
  o = units(1);
  o.timeout = std::chrono::seconds(0);
  CHECK(contains(config_error([&] { (void)run(o, {"true"}); }), "timeout must be at least 1 s"));
}

// ------------------------------------------------------------------------------------------------
// Restarts (max_restarts)
// ------------------------------------------------------------------------------------------------

TEST_CASE("launch restarts: rank 1 fails on the first attempt only; all units restart and succeed") {
  scoped_environment env;
  env.set("F2D2N_RESTART", "7");  // the launcher's own variable must not leak into the units
  temp_dir dir;
  const std::string d = dir.path().string();
  // Every unit records each F2D2N_RESTART it sees. On attempt 0 rank 1 waits (bounded) until ranks 0
  // and 2 have recorded theirs, then exits 5; ranks 0 and 2 wait to be ended. Attempt 1 succeeds.
  const std::string script =
      "R=$F2D2N_RANK; A=$F2D2N_RESTART; D='" + d +
      "'; echo \"$A\" >> \"$D/seen$R\"; : > \"$D/ready$R.$A\"; "
      "if [ \"$A\" = 0 ]; then if [ $R = 1 ]; then i=0; while [ $i -lt 400 ] && "
      "{ [ ! -e \"$D/ready0.0\" ] || [ ! -e \"$D/ready2.0\" ]; }; do sleep 0.02; i=$((i+1)); done; "
      "echo failing; exit 5; fi; exec sleep 30; fi; echo \"done $A $F2D2N_PEERS\"";
  auto o = units(3, 500ms);
  o.max_restarts = 1;
  const auto r = run_sh(o, script);
  INFO("out:\n" << r.out << "err:\n" << r.err);
  CHECK(r.code == 0);
  CHECK(r.seconds < 10);
  CHECK(count_lines(r.out, "[1] failing") == 1);
  CHECK(count_lines(r.err,
                    "[launch] rank 1 exited with code 5; ending the other units, then restarting all units "
                    "(restart 1 of 1)") == 1);
  CHECK(lines_of(r.err).size() == 1);  // SIGTERM was enough; nothing else to say
  for (int rank = 0; rank < 3; ++rank) {
    CAPTURE(rank);
    CHECK(read_file(dir.file("seen" + std::to_string(rank))) == "0\n1\n");
    std::string start(1, '[');  // appended: GCC 12 warns falsely on "[" + std::string (PR 105651)
    start.append(std::to_string(rank)).append("] done 1 ");
    std::size_t done = 0;
    for (const auto& line : lines_of(r.out))
      if (line.rfind(start, 0) == 0) {
        ++done;
        CHECK(f2d2n::parse_peers(line.substr(line.rfind(' ') + 1)).size() == 3);  // fresh, valid ports
      }
    CHECK(done == 1);
  }
}

TEST_CASE("launch restarts: a unit that always fails uses up the restarts; the launcher returns its code") {
  temp_dir dir;
  const std::string d = dir.path().string();
  auto o = units(2, 300ms);
  o.max_restarts = 2;
  const auto r = run_sh(o, "if [ $F2D2N_RANK = 0 ]; then echo \"$F2D2N_RESTART\" >> '" + d +
                               "/attempts'; exit 3; fi; exec sleep 30");
  INFO("err:\n" << r.err);
  CHECK(r.code == 3);
  CHECK(r.seconds < 10);
  CHECK(read_file(dir.file("attempts")) == "0\n1\n2\n");  // 3 attempts in all
  CHECK(count_lines(r.err,
                    "[launch] rank 0 exited with code 3; ending the other units, then restarting all units "
                    "(restart 1 of 2)") == 1);
  CHECK(count_lines(r.err,
                    "[launch] rank 0 exited with code 3; ending the other units, then restarting all units "
                    "(restart 2 of 2)") == 1);
  CHECK(count_lines(r.err, "[launch] rank 0 exited with code 3; ending the other units") == 1);  // the last
  CHECK(lines_of(r.err).size() == 3);
}

TEST_CASE("launch restarts: a unit killed by SIGKILL is restarted") {
  auto o = units(2, 300ms);
  o.max_restarts = 1;
  const auto r = run_sh(o,
                        "if [ $F2D2N_RANK = 0 ] && [ $F2D2N_RESTART = 0 ]; then kill -KILL $$; fi; "
                        "echo \"ok $F2D2N_RESTART\"");
  INFO("out:\n" << r.out << "err:\n" << r.err);
  CHECK(r.code == 0);
  CHECK(r.seconds < 10);
  CHECK(count_lines(r.err,
                    "[launch] rank 0 was killed by SIGKILL (exit code 137); ending the other units, then "
                    "restarting all units (restart 1 of 1)") == 1);
  CHECK(count_lines(r.out, "[0] ok 1") == 1);
  CHECK(count_lines(r.out, "[1] ok 1") == 1);
  CHECK(count_lines(r.out, "[0] ok 0") == 0);

  o = units(1, 300ms);  // one unit: no others to end
  o.max_restarts = 1;
  const auto one = run_sh(o, "[ $F2D2N_RESTART = 0 ] && kill -KILL $$; exit 0");
  CHECK(one.code == 0);
  CHECK(contains(one.err, "[launch] rank 0 was killed by SIGKILL (exit code 137); restarting it (restart 1 of 1)\n"));
}

TEST_CASE("launch restarts: max_restarts 0 behaves as before; no restart of what cannot run, nor on a signal") {
  temp_dir dir;
  const std::string d = dir.path().string();
  auto o = units(2, 300ms);
  REQUIRE(o.max_restarts == 0);
  auto r = run_sh(o, "if [ $F2D2N_RANK = 0 ]; then echo \"$F2D2N_RESTART\" >> '" + d +
                         "/attempts'; exit 3; fi; exec sleep 30");
  INFO("err:\n" << r.err);
  CHECK(r.code == 3);
  CHECK(read_file(dir.file("attempts")) == "0\n");
  CHECK(r.err == "[launch] rank 0 exited with code 3; ending the other units\n");

  // A program that cannot be started is not restarted.
  o.max_restarts = 3;
  r = run(o, {"/nonexistent/f2d2n-no-such-program"});
  CHECK(r.code == 127);
  CHECK(!contains(r.err, "restart"));

  // SIGINT to the launcher ends the run without a restart.
  r = run_sh(o, "if [ $F2D2N_RANK = 0 ]; then kill -INT $PPID; fi; exec sleep 30");
  CHECK(r.code == 128 + SIGINT);
  CHECK(r.seconds < 10);
  CHECK(!contains(r.err, "restart"));
}

TEST_CASE("launch restarts: the timeout covers every attempt together") {
  auto o = units(2, 200ms);
  o.max_restarts = 1000;
  o.timeout = std::chrono::seconds(1);
  const auto r = run_sh(o, "if [ $F2D2N_RANK = 0 ]; then sleep 0.2; exit 1; fi; exec sleep 30");
  INFO("err:\n" << r.err);
  CHECK(r.code == f2d2n::launch_timeout_exit_code);
  CHECK(r.seconds >= 1.0);
  CHECK(r.seconds < 10);
  CHECK(contains(r.err, "[launch] the run did not end within 1 s; "));
  CHECK(contains(r.err, "(restart 2 of 1000)"));
}

TEST_CASE("launch: a fresh cluster key per run unless one is set; deadlines passed to the units") {
  scoped_environment env;
  env.set("F2D2N_CLUSTER_KEY", std::nullopt);
  env.set("F2D2N_CLUSTER_KEY_FILE", std::nullopt);
  env.set("F2D2N_TIMEOUT", "7");
  auto o = units(2);
  o.unit_timeout = 2500ms;
  o.connect_timeout = 1500ms;
  const std::string script = "echo \"key=$F2D2N_CLUSTER_KEY t=$F2D2N_TIMEOUT c=$F2D2N_CONNECT_TIMEOUT\"";
  const auto first = run_sh(o, script), second = run_sh(o, script);
  INFO("out:\n" << first.out << second.out << "err:\n" << first.err);
  REQUIRE(first.code == 0);
  auto key_of = [](const std::string& out, int rank) {
    for (const auto& line : lines_of(out))
      if (line.rfind("[" + std::to_string(rank) + "] key=", 0) == 0) return line.substr(line.find('=') + 1, 64);
    return std::string();
  };
  const std::string k = key_of(first.out, 0);
  CHECK(k.size() == 64);
  CHECK(k.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(key_of(first.out, 1) == k);   // one key for the run's units
  CHECK(key_of(second.out, 0) != k);  // another for another run
  CHECK(first.out.find("t=2.500 c=1.500") != std::string::npos);
  CHECK(first.err.find(k) == std::string::npos);  // never printed by the launcher

  env.set("F2D2N_CLUSTER_KEY", "a-key-set-by-the-user-0123");
  const auto given = run_sh(units(1), script);
  CHECK(given.out.find("key=a-key-set-by-the-user-0123 t=7") != std::string::npos);
  env.set("F2D2N_CLUSTER_KEY", "short");  // refused before any unit starts
  CHECK(config_error([&] { (void)run_sh(units(1), "echo started"); }).find("at least 16") != std::string::npos);
}

TEST_CASE("environment: the cluster key and the deadlines") {
  scoped_environment env;
  env.set("F2D2N_RANK", "0");
  env.set("F2D2N_WORLD_SIZE", "1");
  env.set("F2D2N_PEERS", "127.0.0.1:29500");
  env.set("F2D2N_CLUSTER_KEY", std::nullopt);
  env.set("F2D2N_CLUSTER_KEY_FILE", std::nullopt);
  env.set("F2D2N_TIMEOUT", std::nullopt);
  env.set("F2D2N_CONNECT_TIMEOUT", std::nullopt);
  auto c = f2d2n::config_from_environment();
  CHECK_FALSE(c.key);
  CHECK(c.timeout == 60000ms);
  CHECK(c.connect_timeout == 10000ms);
  env.set("F2D2N_CLUSTER_KEY", "0123456789abcdef0123");
  env.set("F2D2N_TIMEOUT", "0.25");
  env.set("F2D2N_CONNECT_TIMEOUT", " 30 ");
  c = f2d2n::config_from_environment();
  CHECK(c.key == f2d2n::cluster_key("0123456789abcdef0123"));
  CHECK(c.timeout == 250ms);
  CHECK(c.connect_timeout == 30000ms);
  for (const char* bad : {"0", "-1", "ten", "1e99", "5s", ""}) {
    CAPTURE(bad);
    env.set("F2D2N_TIMEOUT", bad);
    if (*bad == '\0') {
      CHECK(f2d2n::config_from_environment().timeout == 60000ms);  // empty: not set
      continue;
    }
    CHECK(config_error([] { (void)f2d2n::config_from_environment(); }).find("F2D2N_TIMEOUT") != std::string::npos);
  }
}

TEST_CASE("launch: the launcher sleeps while its units run (no polling loop)") {
  // A launcher that spins takes a core from the units it supervises: while two units sleep for a
  // second, it may use a small part of that second, not all of it.
  rusage before{}, after{};
  ::getrusage(RUSAGE_SELF, &before);
  const auto r = run_sh(units(2), "sleep 1");
  ::getrusage(RUSAGE_SELF, &after);
  REQUIRE(r.code == 0);
  const auto cpu = [](const rusage& u) {
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
  };
  CAPTURE(r.seconds);
  CHECK(cpu(after) - cpu(before) < 0.25 * r.seconds);
}
