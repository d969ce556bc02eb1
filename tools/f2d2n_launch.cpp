// Starts N units of a program on this machine, each told its rank and where every unit listens
// (F2D2N_RANK, F2D2N_WORLD_SIZE, F2D2N_PEERS), prefixes their output with their rank, and ends them
// all as soon as one fails (see docs/launch.md).
//
//   f2d2n_launch -n 4 -- ./train --epochs 3
//   f2d2n_launch -n 2 --base-port 29500 --timeout 600 -- python3 unit.py
//   f2d2n_launch -n 4 --max-restarts 3 -- ./train --resume   # F2D2N_RESTART tells a restart
//   f2d2n_launch --help
#include "launch/launcher.hpp"

#include <boost/program_options.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

namespace po = boost::program_options;

namespace {

constexpr const char* usage =
    "usage: f2d2n_launch -n N [--host H] [--base-port P] [--grace-ms G] [--timeout S] [--max-restarts K]\n"
    "                    [--unit-timeout S] [--connect-timeout S] -- PROGRAM [ARGS...]\n"
    "\n"
    "Starts N processes of PROGRAM on this machine with F2D2N_RANK (0..N-1), F2D2N_WORLD_SIZE (N),\n"
    "F2D2N_PEERS (host:port of every unit, in rank order), F2D2N_LOCAL_RANK and F2D2N_LOCAL_WORLD_SIZE\n"
    "set, and prefixes each line they print with '[rank] '. Exits 0 when every unit exits 0; as soon as\n"
    "one fails or is stopped by a signal, ends the others (SIGTERM, then SIGKILL after the grace period)\n"
    "and exits with its code (128 + signal number for a signal, 127 when PROGRAM cannot be run, 124\n"
    "after --timeout). A unit that exits 86 failed because another unit failed first: the launcher\n"
    "waits up to the grace period for that unit, and reports it rather than the bystander.\n"
    "With --max-restarts K, a failure instead ends the others and starts all N units again, up to K\n"
    "times, with F2D2N_RESTART set to the number of restarts so far (0 at the first start); --timeout\n"
    "covers all attempts together.\n"
    "The units share a cluster key: F2D2N_CLUSTER_KEY or F2D2N_CLUSTER_KEY_FILE when one is set for the\n"
    "launcher, else a fresh random key for this run, given to the units in F2D2N_CLUSTER_KEY.\n";

/// A whole number within [low, high] from an option's text; a po::error naming the option otherwise.
std::int64_t in_range(const po::variables_map& vm, const char* name, std::int64_t low, std::int64_t high) {
  const std::int64_t value = vm[name].as<std::int64_t>();
  const std::string shown = std::strcmp(name, "processes") == 0 ? "-n" : "--" + std::string(name);
  if (value < low || value > high)
    throw po::error(shown + " " + std::to_string(value) + " is outside " + std::to_string(low) + ".." +
                    std::to_string(high));
  return value;
}

}  // namespace

int main(int argc, char** argv) try {
  // Everything after the first "--" is the command; the options come before it.
  int split = 1;
  while (split < argc && std::strcmp(argv[split], "--") != 0) ++split;
  const bool has_command = split < argc;
  std::vector<std::string> command(argv + (has_command ? split + 1 : argc), argv + argc);

  po::options_description opts("options");
  // clang-format off
  opts.add_options()
    ("help,h", "show this help")
    ("processes,n", po::value<std::int64_t>(), "number of units to start (1..65535)")
    ("host", po::value<std::string>()->default_value("127.0.0.1"),
        "address the units listen on and are reached at (loopback unless told otherwise)")
    ("base-port", po::value<std::int64_t>()->default_value(0),
        "unit r listens on base-port + r; 0: free ports picked on host (a port may be taken by another "
        "process between the pick and the unit's bind: pass a base port where that matters)")
    ("grace-ms", po::value<std::int64_t>()->default_value(2000),
        "milliseconds between SIGTERM and SIGKILL when the units are ended")
    ("timeout", po::value<std::int64_t>(), "end every unit after this many seconds and exit 124")
    ("unit-timeout", po::value<double>(),
        "seconds a unit waits for a peer before it fails (F2D2N_TIMEOUT for the units; theirs: 60)")
    ("connect-timeout", po::value<double>(),
        "seconds a unit may take to connect to the others (F2D2N_CONNECT_TIMEOUT; theirs: 10)")
    ("max-restarts", po::value<std::int64_t>()->default_value(0),
        "when a unit fails, end the others and start all units again, up to this many times (0..1000)");
  // clang-format on
  po::variables_map vm;
  po::store(po::command_line_parser(split, argv).options(opts).run(), vm);
  if (vm.count("help")) {
    std::cout << usage << "\n" << opts << "\n";
    return 0;
  }
  po::notify(vm);
  if (!vm.count("processes")) throw po::error("-n N (the number of units) is required");
  if (!has_command) throw po::error("no program to run: write it after '--' (f2d2n_launch -n 2 -- ./unit ARGS...)");
  if (command.empty()) throw po::error("no program to run after '--'");

  f2d2n::launch_options options;
  options.processes = static_cast<f2d2n::unit_id>(in_range(vm, "processes", 1, 65535));
  options.host = vm["host"].as<std::string>();
  options.base_port = static_cast<std::uint16_t>(in_range(vm, "base-port", 0, 65535));
  options.grace = std::chrono::milliseconds(in_range(vm, "grace-ms", 0, 24 * 3600 * 1000));
  options.max_restarts = static_cast<unsigned>(in_range(vm, "max-restarts", 0, 1000));
  if (vm.count("timeout")) options.timeout = std::chrono::seconds(in_range(vm, "timeout", 1, 365LL * 24 * 3600));
  for (auto [name, into] :
       {std::pair{"unit-timeout", &options.unit_timeout}, std::pair{"connect-timeout", &options.connect_timeout}}) {
    if (!vm.count(name)) continue;
    const double v = vm[name].as<double>();
    *into = f2d2n::seconds_duration(v);
    if (!*into)
      throw po::error("--" + std::string(name) + " " + std::to_string(v) + " is not a number of seconds above 0");
  }
  return f2d2n::launch(options, command, std::cout, std::cerr);
} catch (const po::error& e) {
  std::cerr << "f2d2n_launch: " << e.what() << " (see --help)\n";
  return 2;
} catch (const f2d2n::error& e) {
  std::cerr << "f2d2n_launch: " << e.what() << "\n";
  return 1;
}
