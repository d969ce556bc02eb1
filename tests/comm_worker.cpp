// A unit of a cluster started by f2d2n_launch (tests/CMakeLists.txt runs it over TCP with 1 to 8
// processes). Modes:
//   adjoint      every primitive's adjoint check (tests/comm_suite.hpp); exit 0 when all pass
//   dead         unit 1 vanishes (_exit) after connecting; every other unit must end in a typed
//                comm_error within the deadline plus a margin (exit 0 when it does)
//   silent       unit 1 stays connected but says nothing; the others must time out in time
//   fingerprint  unit 1 runs another plan; every unit must be told by a handshake_error
//   stop         unit 1 stops itself (SIGSTOP) after connecting; the others wait on it with a 10 s
//                deadline. The launcher must report unit 1 as stopped at once, not a unit that
//                waited for it (tests/CMakeLists.txt checks the launcher's words)
#include "comm_suite.hpp"

#include <f2d2n/launch/config.hpp>
#include <f2d2n/launch/tcp.hpp>
#include <f2d2n/transport/tcp.hpp>

#include <unistd.h>

#include <csignal>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

namespace nn = f2d2n;

namespace {

constexpr std::uint64_t plan = 0x5eed;
constexpr auto deadline_in_test = std::chrono::milliseconds(1500);
constexpr auto margin = std::chrono::milliseconds(1500);

int report(const nn::cluster_config& c, const char* mode, bool ok, const std::string& what) {
  std::printf("unit %u of %u, %s: %s: %s\n", c.rank, c.world_size, mode, ok ? "ok" : "FAILED", what.c_str());
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string mode = argc > 1 ? argv[1] : "adjoint";
  const auto config = nn::config_from_environment();
  const bool odd_one = config.rank == 1;

  if (mode == "fingerprint") {
    try {
      nn::tcp_transport t(config.rank, config.peers, odd_one ? plan + 1 : plan, nn::tcp_options_of(config));
      return report(config, "fingerprint", config.world_size == 1, "connected without a handshake_error");
    } catch (const nn::handshake_error& e) {
      const bool names_it = std::strstr(e.what(), "fingerprint") != nullptr;
      return report(config, "fingerprint", names_it, e.what());
    }
  }

  nn::tcp_transport t(config.rank, config.peers, plan, nn::tcp_options_of(config));
  if (mode == "adjoint") {
    const auto failures = nn::testing::adjoint_suite(t);
    for (const auto& f : failures) report(config, "adjoint", false, f);
    return failures.empty() ? report(config, "adjoint", true, "every primitive passes its dot-product test") : 1;
  }
  if (mode == "stop") {
    if (odd_one) std::raise(SIGSTOP);  // until the launcher ends the run
    std::vector<double> data(1000, 1.0);
    nn::all_reduce(t, nn::group::world(config.world_size), std::span<double>(data),
                   nn::call_options{.message_id = 3, .step = 42, .timeout = std::chrono::seconds(10)});
    return report(config, "stop", false, "the all-reduce finished");
  }
  if (mode == "dead" || mode == "silent") {
    if (odd_one) {
      if (mode == "dead") ::_exit(0);  // gone without a word: no goodbye, no shutdown
      std::this_thread::sleep_for(deadline_in_test + 2 * margin);
      return 0;
    }
    const auto start = nn::clock::now();
    try {
      std::vector<double> data(1000, 1.0);
      nn::all_reduce(t, nn::group::world(config.world_size), std::span<double>(data),
                     nn::call_options{.message_id = 3, .step = 42, .timeout = deadline_in_test});
      return report(config, mode.c_str(), false, "the all-reduce finished without unit 1");
    } catch (const nn::comm_error& e) {
      const auto took = nn::clock::now() - start;
      const bool in_time = took <= deadline_in_test + margin;
      const bool named = e.where().unit == config.rank && e.where().message_id == 3 && e.where().step == 42;
      return report(config, mode.c_str(), in_time && named,
                    std::string(e.what()) + " after " +
                        std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()) + " ms");
    }
  }
  std::fprintf(stderr, "comm_worker: unknown mode '%s'\n", mode.c_str());
  return 2;
} catch (const std::exception& e) {
  std::fprintf(stderr, "comm_worker: %s\n", e.what());
  return 1;
}
