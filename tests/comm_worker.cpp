// A unit of a cluster started by f2d2n_launch (tests/CMakeLists.txt runs it over TCP with 1 to 8
// processes) or by mpirun (over MPI, where it was built with f2d2n::mpi). Modes:
//   adjoint      every primitive's adjoint check (tests/comm_suite.hpp); exit 0 when all pass
//   dead         unit 1 vanishes (_exit) after connecting; every other unit must end in a typed
//                comm_error within the deadline plus a margin (exit 0 when it does)
//   silent       unit 1 stays connected but says nothing; the others must time out in time
//   fingerprint  unit 1 runs another plan; every unit must be told by a handshake_error
//   settings     (under mpirun, with F2D2N_MPI_CHECKSUMS=1 on rank 0 only) every rank must be told
//                by a handshake_error that names the payload checksums
//   wrong message|length  unit 0 sends unit 1 a frame it does not expect: a large one (100 KiB) of
//                another message, or a small one (1 KiB) of the expected message but another
//                length; unit 1 must refuse it with that protocol_error, and then refuse the next
//                frame from unit 0 with a peer_error: the stream is out of sync
//   stop         unit 1 stops itself (SIGSTOP) after connecting; the others wait on it with a 10 s
//                deadline. The launcher must report unit 1 as stopped at once, not a unit that
//                waited for it (tests/CMakeLists.txt checks the launcher's words)
//   soak S [F]   all-reduces of 16384 doubles, each result checked exactly, until unit 0 has run S
//                seconds or file F exists (unit 0 tells the others through the all-reduce, so all
//                stop at the same one);
//                each wait's deadline is F2D2N_TIMEOUT. Prints "soaking" once connected, then how
//                many all-reduces ran and the longest; exit 0 when all were right, 3 when a
//                comm_error ended the run (printed with its type), 1 for a wrong sum.
//                tests/netns.sh cuts links under it.
#include "comm_suite.hpp"

#include <f2d2n/launch/transport.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace nn = f2d2n;

namespace {

constexpr std::uint64_t plan = 0x5eed;
constexpr auto deadline_in_test = std::chrono::milliseconds(1500);
constexpr auto margin = std::chrono::milliseconds(1500);

int report(const nn::cluster_config& c, const char* mode, bool ok, const std::string& what) {
  std::printf("unit %u of %u, %s: %s: %s\n", c.rank, c.world_size, mode, ok ? "ok" : "FAILED", what.c_str());
  return ok ? 0 : 1;
}

long long ms(nn::clock::duration d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); }

const char* type_of(const nn::comm_error& e) {
  if (dynamic_cast<const nn::timeout_error*>(&e)) return "timeout_error";
  if (dynamic_cast<const nn::peer_error*>(&e)) return "peer_error";
  if (dynamic_cast<const nn::protocol_error*>(&e)) return "protocol_error";
  if (dynamic_cast<const nn::handshake_error*>(&e)) return "handshake_error";
  return "comm_error";
}

/// All-reduces until unit 0 has run `seconds` or finds `stop_file`; every result is checked exactly
/// (small integers).
int soak(nn::any_transport& t, const nn::cluster_config& c, double seconds, const std::string& stop_file) {
  std::printf("unit %u of %u, soak: soaking\n", c.rank, c.world_size);
  std::fflush(stdout);
  constexpr std::size_t n = 16384;                                   // the last value is unit 0's "stop" flag
  const double units_sum = c.world_size * (c.world_size + 1.0) / 2;  // sum of rank + 1
  std::vector<double> data(n);
  const auto start = nn::clock::now();
  const auto run_for = std::chrono::duration<double>(seconds);
  auto longest = nn::clock::duration::zero();
  std::uint64_t round = 0;
  try {
    for (bool stop = false; !stop; ++round) {
      for (std::size_t i = 0; i + 1 < n; ++i) data[i] = (c.rank + 1.0) * static_cast<double>((i + round) % 1000);
      data[n - 1] = c.rank == 0 && (nn::clock::now() - start >= run_for ||
                                    (!stop_file.empty() && std::filesystem::exists(stop_file)))
                        ? 1
                        : 0;
      const auto begun = nn::clock::now();
      nn::all_reduce(t, nn::group::world(c.world_size), std::span<double>(data),
                     nn::call_options{.message_id = 3, .step = round, .timeout = c.timeout});
      longest = std::max(longest, nn::clock::now() - begun);
      for (std::size_t i = 0; i + 1 < n; ++i)
        if (data[i] != units_sum * static_cast<double>((i + round) % 1000))
          return report(c, "soak", false,
                        "all-reduce " + std::to_string(round) + ", value " + std::to_string(i) + ": " +
                            std::to_string(data[i]) + ", expected " +
                            std::to_string(units_sum * static_cast<double>((i + round) % 1000)));
      stop = data[n - 1] != 0;
    }
  } catch (const nn::comm_error& e) {
    std::printf("unit %u of %u, soak: ended by a %s after %llu all-reduces, %lld ms into the run: %s\n", c.rank,
                c.world_size, type_of(e), static_cast<unsigned long long>(round), ms(nn::clock::now() - start),
                e.what());
    return 3;
  }
  return report(c, "soak", true,
                std::to_string(round) + " all-reduces in " + std::to_string(ms(nn::clock::now() - start)) +
                    " ms, every sum right; the longest took " + std::to_string(ms(longest)) + " ms");
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string mode = argc > 1 ? argv[1] : "adjoint";
  const auto config = nn::cluster_from_environment();
  const bool odd_one = config.rank == 1;

  if (mode == "fingerprint") {
    try {
      nn::cluster_transport t(config, odd_one ? plan + 1 : plan);
      return report(config, "fingerprint", config.world_size == 1, "connected without a handshake_error");
    } catch (const nn::handshake_error& e) {
      const bool names_it = std::strstr(e.what(), "fingerprint") != nullptr;
      return report(config, "fingerprint", names_it, e.what());
    }
  }

#ifdef F2D2N_WITH_MPI
  if (mode == "max_frame") {
    // One MPI message counts its bytes in an int: the largest frame that fits is taken, one byte
    // more is refused by name before anything is sent (run as a single rank under mpirun).
    if (!config.peers.empty()) return report(config, "max_frame", false, "needs mpirun, not f2d2n_launch");
    nn::detail::program_mpi();
    nn::mpi_options o;
    o.max_frame = static_cast<std::uint64_t>(INT_MAX) - nn::wire::header_size;
    { nn::mpi_transport fits(plan, o); }
    ++o.max_frame;
    try {
      nn::mpi_transport t(plan, o);
      return report(config, "max_frame", false, "a max_frame beyond one MPI message was taken");
    } catch (const nn::configuration_error& e) {
      return report(config, "max_frame", std::strstr(e.what(), "mpi_options::max_frame is 2147483600") != nullptr,
                    e.what());
    }
  }
#endif

  if (mode == "settings") {
    try {
      nn::cluster_transport t(config, plan);
      return report(config, "settings", false, "started without a handshake_error");
    } catch (const nn::handshake_error& e) {
      return report(config, "settings", std::strstr(e.what(), "payload checksums") != nullptr, e.what());
    }
  }

  nn::cluster_transport unit(config, plan);
  auto& t = unit.get();
  if (mode == "wrong") {
    // A large frame (100 KiB) of another message, or a small one (1 KiB) of the expected message
    // but not its length; then a frame unit 1 does expect.
    const bool length = argc > 2 && std::strcmp(argv[2], "length") == 0;
    const auto until = [] { return nn::clock::now() + std::chrono::seconds(10); };
    std::vector<float> wrong(length ? 256 : 25600, 1.0f), right(16, 2.0f), done(1);
    if (config.rank == 0) {
      nn::send_tensor(t, 1, 7, 1, std::span<const float>(wrong), until());
      nn::send_tensor(t, 1, 8, 2, std::span<const float>(right), until());
      try {
        nn::receive_tensor(t, 1, 10, 3, std::span<float>(done), until());  // unit 1 is through
      } catch (const nn::peer_error&) {                                    // or it has shut down
      }
      return report(config, "wrong", true, "sent both");
    }
    if (config.rank != 1) return report(config, "wrong", true, "not involved");
    std::string seen;
    bool ok = true;
    try {
      std::vector<float> out(length ? 512 : wrong.size());
      nn::receive_tensor(t, 0, length ? 7 : 6, 1, std::span<float>(out), until());
      ok = false;
      seen += "the wrong frame was accepted; ";
    } catch (const nn::protocol_error& e) {
      ok = e.problem() == (length ? nn::frame_problem::wrong_length : nn::frame_problem::wrong_message);
      seen += std::string(e.what()) + "; ";
    }
    try {  // the stream from unit 0 is out of sync now: refused, not misread
      std::vector<float> out(right.size());
      nn::receive_tensor(t, 0, 8, 2, std::span<float>(out), until());
      ok = false;
      seen += "the next frame was read after a rejected one";
    } catch (const nn::peer_error& e) {
      ok = ok && std::strstr(e.what(), "out of sync") != nullptr;
      seen += e.what();
    }
    nn::send_tensor(t, 0, 10, 3, std::span<const float>(done), until());
    return report(config, "wrong", ok, seen);
  }
  if (mode == "soak") return soak(t, config, argc > 2 ? std::stod(argv[2]) : 5.0, argc > 3 ? argv[3] : "");
  if (mode == "adjoint") {
    const auto failures = nn::testing::adjoint_suite(t);
    for (const auto& f : failures) report(config, "adjoint", false, f);
    return failures.empty() ? report(config, "adjoint", true,
                                     std::string("every primitive passes its dot-product test over ") + unit.name())
                            : 1;
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
