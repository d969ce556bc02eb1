// f2d2n/transport/mpi.hpp: the transport over MPI (Open MPI's C API), for clusters whose jobs start
// under mpirun or Slurm.
//
//   int main(int argc, char** argv) {
//     f2d2n::mpi_environment mpi(argc, argv);        // MPI_Init_thread; MPI_Finalize when it ends
//     f2d2n::mpi_transport t(Plan::fingerprint);     // every rank of MPI_COMM_WORLD is a unit
//     f2d2n::distributed_network<Plan, f2d2n::mpi_transport> net(t);
//
// Link with f2d2n::mpi (CMake: find_package(f2d2n) finds MPI when it is installed), which is
// f2d2n::f2d2n plus MPI's library (MPI::MPI_CXX, without the C++ bindings). The C API, not Boost.MPI: Debian's Boost.MPI is a compiled library
// built against one MPI and adds serialization f2d2n does not need (frames are bytes).
//
// How frames travel. A frame is one MPI message of its 48-byte header followed by its payload
// (tag 1) when the payload is at most mpi_inline_bytes; a larger frame is a header message (tag 1)
// and then a payload message (tag 2), so that the receiver checks the header (kind, fingerprint,
// sender, message, step, exact length: wire::check) before it lets the payload into the caller's
// buffer, which it then receives straight into (no copy). MPI keeps messages of one sender, tag and
// communicator in order, so the n-th large header of a peer goes with its n-th payload message; a
// unit's two messages of a frame are posted together under the transport's lock.
//
// Deadlines. MPI has no timeouts: every wait polls a non-blocking call (MPI_Improbe, MPI_Test)
// against the deadline: for at most mpi_options::spin (1 ms) it polls, then it sleeps between
// polls, 20 us doubling to mpi_options::max_nap (200 us). A thread that waits has its timer slack
// set to 1 us (prctl PR_SET_TIMERSLACK; Linux adds 50 us by default), so that its sleeps end when
// they should. The
// communicator is duplicated with MPI_Comm_idup and its errors return (MPI_ERRORS_RETURN), so an
// MPI failure is a typed error here, not an abort.
//
// Start check. The constructor gathers every rank's plan fingerprint, wire version and
// payload-checksum setting (MPI_Iallgather, within connect_timeout): ranks that differ are refused
// with a handshake_error naming them, on every rank.
//
// Sending. send() copies the frame into a buffer the transport owns and returns (MPI_Isend); at
// most send_buffer bytes wait to be delivered, beyond which send() waits for earlier frames to
// leave, until its deadline. exchange() sends a large payload from the caller's memory and returns
// when both directions are complete.
//
// Shutting down. shutdown() sends each peer a goodbye (with the reason after a failure); a peer
// waiting on this unit gets peer_error. The destructor waits up to mpi_options::linger for frames
// still on their way, then frees the communicator.
//
// Limits, by MPI's design: a rank that dies ends the whole job (mpirun and srun kill the others
// and report the rank), so a dead peer is reported by the launcher rather than as a peer_error;
// a stopped or silent peer is a timeout_error as on TCP. After a timeout inside exchange(), MPI
// may still read the caller's payload (Open MPI cannot cancel a send): the unit must shut down, as
// processing units do after any failure. MPI authenticates nothing: peers are the job's ranks,
// which mpirun started; the fingerprint check and the frame checks still hold.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/core/unit.hpp>
#include <f2d2n/transport/concept.hpp>
#include <f2d2n/wire/frame.hpp>
#include <f2d2n/wire/goodbye.hpp>

// MPI's C API only: without these, Open MPI's and MPICH's mpi.h pull in the C++ bindings (removed
// in MPI 3), which need libmpi_cxx at link time.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <algorithm>
#include <array>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace f2d2n {

/// Payloads up to this size travel in one message with their header; larger ones in a second
/// message. A constant of the wire mapping: both sides must agree on it.
inline constexpr std::size_t mpi_inline_bytes = std::size_t{64} << 10;

/// Initializes MPI for the process (MPI_Init_thread, asking for MPI_THREAD_MULTIPLE) unless it
/// already is, and finalizes it when it ends if it initialized it. Create one in main, before any
/// mpi_transport, and keep it until the last transport is gone.
class mpi_environment {
 public:
  mpi_environment() : mpi_environment(nullptr, nullptr) {}
  mpi_environment(int& argc, char**& argv) : mpi_environment(&argc, &argv) {}
  mpi_environment(const mpi_environment&) = delete;
  mpi_environment& operator=(const mpi_environment&) = delete;
  ~mpi_environment() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owner_ && !finalized) MPI_Finalize();
  }

  /// The thread level MPI provides (MPI_THREAD_SERIALIZED at least: the transport serializes its
  /// calls itself, and a unit's second thread, which sums gradients, calls it too).
  [[nodiscard]] int thread_level() const noexcept { return provided_; }

 private:
  mpi_environment(int* argc, char*** argv) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided_) != MPI_SUCCESS)
        throw configuration_error("f2d2n: MPI_Init_thread failed");
      owner_ = true;
    }
    MPI_Query_thread(&provided_);
    if (provided_ < MPI_THREAD_SERIALIZED)
      throw configuration_error("f2d2n: this MPI provides thread level " + std::to_string(provided_) +
                                "; f2d2n needs MPI_THREAD_SERIALIZED at least (a unit calls MPI from two threads)");
  }
  bool owner_ = false;
  int provided_ = 0;
};

/// What an mpi_transport may do.
struct mpi_options {
  /// Frames above this are refused (a single MPI message counts bytes in an int).
  std::uint64_t max_frame = wire::default_max_frame;
  /// Bytes of sent frames the transport may hold until the peers take them.
  std::size_t send_buffer = std::size_t{256} << 20;
  /// How long the start check (every rank's fingerprint) may take.
  std::chrono::milliseconds connect_timeout{10000};
  /// How long the destructor waits for frames still on their way.
  std::chrono::milliseconds linger{2000};
  /// How long a wait polls without sleeping before it sleeps between polls. Measured here
  /// (docs/mpi.md): sleeping after 100 us made a 2-stage pipeline 2.5x slower than 1 ms of
  /// polling; a wake-up from a sleep costs this machine tens of microseconds.
  std::chrono::microseconds spin{1000};
  /// The longest sleep between two polls: sleeps start at 20 us and double up to it.
  std::chrono::microseconds max_nap{200};
  /// Whether frames carry a checksum of their payload (XXH3, as on TCP). Off by default: MPI
  /// delivers bytes intact or fails, and hashing every payload twice cost a third of the
  /// all-reduce's time on shared memory (docs/mpi.md); the header keeps its own checksum. Every
  /// rank must agree (the start check refuses ranks that differ).
  bool payload_checksums = false;
  /// Whether a polling wait yields the core between polls (sched_yield). Off: on a busy machine
  /// each yield gave the core away for a whole time slice (an all-reduce of 0.94 MB took 16 ms
  /// instead of 0.2 ms while another build ran; docs/mpi.md).
  bool yield = false;
};

/// A transport over an MPI communicator (MPI_COMM_WORLD by default): see the top of this file.
class mpi_transport {
 public:
  explicit mpi_transport(std::uint64_t fingerprint, mpi_options options = {}, MPI_Comm comm = MPI_COMM_WORLD)
      : fingerprint_(fingerprint), options_(options) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized)
      throw configuration_error("f2d2n: MPI is not initialized: create an f2d2n::mpi_environment in main first");
    if (options_.max_frame > static_cast<std::uint64_t>(INT_MAX) - wire::header_size)
      throw configuration_error("f2d2n: mpi_options::max_frame is " + std::to_string(options_.max_frame) +
                                " bytes; one MPI message holds at most " +
                                std::to_string(static_cast<std::uint64_t>(INT_MAX) - wire::header_size));
    int rank = 0, size = 0;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    rank_ = static_cast<unit_id>(rank);
    world_ = static_cast<unit_id>(size);
    const comm_context where{rank_, rank_, 0, 0};
    const auto until = clock::now() + options_.connect_timeout;
    MPI_Request request = MPI_REQUEST_NULL;
    call(MPI_Comm_idup(comm, &comm_, &request), where, "MPI_Comm_idup");
    wait(request, until, where, "duplicating the communicator");
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    peers_ = std::make_unique<peer_state[]>(world_);
    start_check(until);
  }
  mpi_transport(const mpi_transport&) = delete;
  mpi_transport& operator=(const mpi_transport&) = delete;

  ~mpi_transport() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;  // MPI ended first (an mpi_environment destroyed before this): nothing to free
    shutdown();
    const auto until = clock::now() + options_.linger;
    poll_until([&] { return reap() == 0; }, until);
    const std::lock_guard lock(mpi_);
    for (auto& p : pending_)
      for (auto& r : p.requests)
        if (r != MPI_REQUEST_NULL) MPI_Request_free(&r);  // delivered later or dropped at MPI_Finalize
    MPI_Comm_free(&comm_);
  }

  [[nodiscard]] unit_id rank() const noexcept { return rank_; }
  [[nodiscard]] unit_id world_size() const noexcept { return world_; }
  [[nodiscard]] std::uint64_t fingerprint() const noexcept { return fingerprint_; }
  [[nodiscard]] bool payload_checksums() const noexcept { return options_.payload_checksums; }
  /// The communicator the transport talks on (a duplicate of the one it was given).
  [[nodiscard]] MPI_Comm communicator() const noexcept { return comm_; }

  void send(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload, deadline until) {
    const comm_context where{rank_, peer, header.message_id, header.step};
    check_peer(peer, where);
    check_size(payload.size(), where);
    if (closed()) return;  // this unit was shut down: nothing more leaves it
    const std::size_t bytes = wire::header_size + payload.size();
    if (!poll_until([&] { return room_for(bytes); }, until))
      throw timeout_error(where, "the peers took no frame before the deadline (the send buffer of " +
                                     std::to_string(options_.send_buffer) + " bytes is full)");
    auto f = frame_of(header, payload);
    const auto* large = payload.size() > mpi_inline_bytes ? f.buffer.data() + wire::header_size : nullptr;
    post(peer, std::move(f), large, payload.size(), nullptr, where);
  }

  wire::frame_header receive(unit_id peer, const wire::expectation& expected, std::span<std::byte> out,
                             deadline until) {
    const comm_context where{rank_, peer, expected.message_id, expected.step};
    check_peer(peer, where);
    auto& p = peers_[peer];
    std::unique_lock lock(p.receiving, std::defer_lock);
    if (!lock.try_lock_until(until))
      throw timeout_error(where, "another receive from this peer took until the deadline");
    if (p.gone) {
      if (p.reason) throw peer_error(where, wire::describe_goodbye(*p.reason), *p.reason);
      throw peer_error(where, "the peer has shut down");
    }
    if (!p.down.empty()) throw peer_error(where, p.down);
    try {
      return receive_frame(p, peer, expected, out, until, where);
    } catch (const protocol_error& e) {
      // The rest of that frame (a large one's payload message) may still be on its way: what
      // comes next from this peer cannot be trusted to line up.
      p.down = std::string("an earlier frame from this peer was rejected (") + to_string(e.problem()) +
               "); the stream from this peer is out of sync";
      throw;
    }
  }

  /// Sends a frame to `to` while receiving one from `from`: a large payload is sent from the
  /// caller's memory, and the call returns when both are done.
  wire::frame_header exchange(unit_id to, const wire::frame_header& header, std::span<const std::byte> payload,
                              unit_id from, const wire::expectation& expected, std::span<std::byte> out,
                              deadline until) {
    if (payload.size() <= mpi_inline_bytes || closed()) {
      send(to, header, payload, until);
      return receive(from, expected, out, until);
    }
    const comm_context where{rank_, to, header.message_id, header.step};
    check_peer(to, where);
    check_size(payload.size(), where);
    auto f = frame_of(header, {});
    // The header is the transport's (pending_); the payload is the caller's, and this call keeps
    // its request until the peer has it.
    MPI_Request payload_request = MPI_REQUEST_NULL;
    post(to, std::move(f), payload.data(), payload.size(), &payload_request, where);
    try {
      const auto received = receive(from, expected, out, until);
      if (!poll_until([&] { return test(payload_request, where); }, until))
        throw timeout_error(where, "the peer did not take the payload before the deadline");
      return received;
    } catch (...) {
      abandon(payload_request);
      throw;
    }
  }

  void shutdown() { close(std::nullopt); }
  void shutdown(const shutdown_reason& reason) { close(reason); }

 private:
  static constexpr int header_tag = 1;
  static constexpr int payload_tag = 2;

  struct peer_state {
    std::timed_mutex receiving;
    std::vector<std::byte> scratch;         // the header message
    bool gone = false;                      // its goodbye arrived
    std::string down;                       // why nothing more is read from it (out of sync)
    std::optional<shutdown_reason> reason;  // and said why
  };
  struct outgoing {
    std::vector<std::byte> buffer;
    std::array<MPI_Request, 2> requests{MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    std::size_t bytes = 0;
  };

  /// receive() once the peer is known to be fit: the next header message, checked, then the payload.
  wire::frame_header receive_frame(peer_state& p, unit_id peer, const wire::expectation& expected,
                                   std::span<std::byte> out, deadline until, const comm_context& where) {
    MPI_Message message = MPI_MESSAGE_NULL;
    MPI_Status status{};
    const bool arrived = poll_until(
        [&] {
          int found = 0;
          const std::lock_guard l(mpi_);
          call(MPI_Improbe(static_cast<int>(peer), header_tag, comm_, &found, &message, &status), where, "MPI_Improbe");
          return found != 0;
        },
        until);
    if (!arrived) throw timeout_error(where, "no message arrived before the deadline");
    int count = 0;
    MPI_Get_count(&status, MPI_BYTE, &count);
    const auto length = static_cast<std::size_t>(std::max(count, 0));
    // The header message holds at most a header and an inline payload: more is refused unread.
    p.scratch.resize(std::min(length, wire::header_size + mpi_inline_bytes));
    {
      const std::lock_guard l(mpi_);
      const int rc = MPI_Mrecv(p.scratch.data(), static_cast<int>(p.scratch.size()), MPI_BYTE, &message, &status);
      if (rc != MPI_SUCCESS && length <= p.scratch.size()) call(rc, where, "MPI_Mrecv");
    }
    if (length < wire::header_size)
      throw protocol_error(where, frame_problem::truncated, "a message of " + std::to_string(length) + " bytes");
    if (length > p.scratch.size())
      throw protocol_error(where, frame_problem::too_large,
                           "a header message of " + std::to_string(length) + " bytes (at most " +
                               std::to_string(p.scratch.size()) + ")");
    const auto header =
        wire::decode(std::span<const std::byte, wire::header_size>(p.scratch.data(), wire::header_size), where);
    if (header.kind == wire::frame_kind::goodbye && header.sender == peer) goodbye(p, header, length, where);
    wire::check(header, expected, options_.max_frame, where);
    const auto inline_payload = std::span<const std::byte>(p.scratch).subspan(wire::header_size);
    if (header.payload_length <= mpi_inline_bytes) {
      if (inline_payload.size() != header.payload_length)
        throw protocol_error(where, frame_problem::truncated,
                             "the header announces " + std::to_string(header.payload_length) +
                                 " bytes, the message holds " + std::to_string(inline_payload.size()));
      wire::verify(header, inline_payload, where, options_.payload_checksums);
      if (!inline_payload.empty()) std::memcpy(out.data(), inline_payload.data(), inline_payload.size());
      return header;
    }
    if (!inline_payload.empty())
      throw protocol_error(where, frame_problem::wrong_length,
                           "a large frame's header message holds " + std::to_string(inline_payload.size()) +
                               " bytes of payload");
    try {
      receive_payload(peer, header, out, until, where);
    } catch (const timeout_error&) {
      p.down = "a receive gave up in the middle of a frame; the stream from this peer is out of sync";
      throw;
    }
    wire::verify(header, out.first(header.payload_length), where, options_.payload_checksums);
    return header;
  }

  /// A frame's bytes, owned: its header, then `payload`.
  static outgoing frame_of(const wire::frame_header& header, std::span<const std::byte> payload) {
    outgoing f;
    const auto h = wire::encode(header);
    const std::size_t bytes = std::min<std::size_t>(payload.size(), INT_MAX);  // check_size() held it to max_frame
    f.buffer.resize(h.size() + bytes);
    std::memcpy(f.buffer.data(), h.data(), h.size());
    if (bytes != 0) std::memcpy(f.buffer.data() + h.size(), payload.data(), bytes);
    return f;
  }

  void start_check(deadline until) {
    const comm_context where{rank_, rank_, 0, 0};
    constexpr std::size_t k = 3;  // what each rank says: fingerprint, wire version, payload checksums
    const std::array<std::uint64_t, k> mine{fingerprint_, wire::wire_version, options_.payload_checksums ? 1u : 0u};
    std::vector<std::uint64_t> all(k * static_cast<std::size_t>(world_));
    MPI_Request request = MPI_REQUEST_NULL;
    call(MPI_Iallgather(mine.data(), k, MPI_UINT64_T, all.data(), k, MPI_UINT64_T, comm_, &request), where,
         "MPI_Iallgather");
    wait(request, until, where, "the start check (every rank's plan fingerprint)");
    const auto says = [&](const std::uint64_t* v) {
      return "plan fingerprint " + std::to_string(v[0]) + ", wire version " + std::to_string(v[1]) +
             (v[2] ? ", payload checksums" : ", no payload checksums");
    };
    std::string differ;
    unit_id first = rank_;
    for (unit_id r = 0; r < world_; ++r) {
      const auto* theirs = all.data() + k * r;
      if (std::equal(mine.begin(), mine.end(), theirs)) continue;
      if (first == rank_) first = r;
      differ += (differ.empty() ? "" : ", ") + std::string("rank ") + std::to_string(r) + " (" + says(theirs) + ")";
    }
    if (!differ.empty())
      throw handshake_error(comm_context{rank_, first, 0, 0},
                            "the ranks of this MPI job run different plans or settings: this unit has " +
                                says(mine.data()) + "; these differ: " + differ);
  }

  void check_peer(unit_id peer, const comm_context&) const {
    if (peer >= world_)
      throw configuration_error("f2d2n: unit " + std::to_string(peer) + " does not exist (the MPI job has " +
                                std::to_string(world_) + " ranks)");
  }
  void check_size(std::size_t bytes, const comm_context& where) const {
    if (bytes > options_.max_frame)
      throw protocol_error(where, frame_problem::too_large,
                           std::to_string(bytes) + " bytes exceed the maximum frame of " +
                               std::to_string(options_.max_frame));
  }

  static void call(int rc, const comm_context& where, const char* what) {
    if (rc == MPI_SUCCESS) return;
    std::array<char, MPI_MAX_ERROR_STRING> text{};
    int length = 0;
    MPI_Error_string(rc, text.data(), &length);
    throw peer_error(where,
                     std::string(what) + " failed: " + std::string(text.data(), static_cast<std::size_t>(length)));
  }

  /// Calls done() until it is true (returns true) or the deadline passes (false): for at most
  /// options_.spin without sleeping (yielding between calls if options_.yield), then sleeping
  /// between calls, 20 us doubling up to options_.max_nap.
  template <class Done>
  bool poll_until(Done&& done, deadline until) const {
    const auto start = clock::now();
    auto nap = std::chrono::microseconds(20);
    for (;;) {
      if (done()) return true;
      const auto now = clock::now();
      if (now >= until) return false;
      if (now - start < options_.spin) {
        if (options_.yield) std::this_thread::yield();
        continue;
      }
      precise_sleeps();
      std::this_thread::sleep_for(std::min<clock::duration>(nap, until - now));
      nap = std::min(nap * 2, options_.max_nap);
    }
  }

  /// Sleeps of this thread end within a few microseconds of their time (PR_SET_TIMERSLACK 1 us),
  /// not the 50 us Linux adds by default: a poll's sleep is a message's latency.
  static void precise_sleeps() noexcept {
#ifdef __linux__
    thread_local const bool done = [] { return ::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL) == 0; }();
    (void)done;
#endif
  }

  bool test(MPI_Request& request, const comm_context& where) {
    int done = 0;
    const std::lock_guard l(mpi_);
    call(MPI_Test(&request, &done, MPI_STATUS_IGNORE), where, "MPI_Test");
    return done != 0;
  }

  void wait(MPI_Request& request, deadline until, const comm_context& where, const char* what) {
    if (!poll_until([&] { return test(request, where); }, until))
      throw timeout_error(where, std::string(what) + " did not complete before the deadline");
  }

  /// Posts a frame's messages, both under one lock (so that frames to a peer stay in order): the
  /// header message from f.buffer (with the payload when it is inline), and the payload message
  /// from `large` when it is not. The payload's request goes to `keep` when given (the caller's
  /// memory), else into f, which pending_ holds until it has left.
  void post(unit_id peer, outgoing&& f, const std::byte* large, std::size_t payload_bytes, MPI_Request* keep,
            const comm_context& where) {
    const std::lock_guard l(mpi_);
    const int head_bytes = static_cast<int>(wire::header_size + (large ? 0 : payload_bytes));
    call(MPI_Isend(f.buffer.data(), head_bytes, MPI_BYTE, static_cast<int>(peer), header_tag, comm_, &f.requests[0]),
         where, "MPI_Isend");
    if (large) {
      const int rc = MPI_Isend(large, static_cast<int>(payload_bytes), MPI_BYTE, static_cast<int>(peer), payload_tag,
                               comm_, keep ? keep : &f.requests[1]);
      if (rc != MPI_SUCCESS) pending_.push_back(std::move(f));  // the header message is on its way: keep its bytes
      call(rc, where, "MPI_Isend");
    }
    f.bytes = f.buffer.size();
    held_ += f.bytes;
    pending_.push_back(std::move(f));
  }

  /// Whether `bytes` more fit in the send buffer, once the frames that have left are forgotten (an
  /// empty buffer takes any frame).
  bool room_for(std::size_t bytes) {
    const auto still = reap();
    const std::lock_guard l(mpi_);
    return still == 0 || held_ + bytes <= options_.send_buffer;
  }

  /// Keeps a request on the caller's memory that could not complete (a failed exchange) until it
  /// does, or until the destructor frees it: the unit shuts down after such a failure.
  void abandon(MPI_Request& request) {
    if (request == MPI_REQUEST_NULL) return;
    const std::lock_guard l(mpi_);
    outgoing f;
    f.requests[1] = request;
    pending_.push_back(std::move(f));
    request = MPI_REQUEST_NULL;
  }

  /// Forgets the frames that have left; returns how many are still on their way.
  std::size_t reap() {
    const std::lock_guard l(mpi_);
    for (auto it = pending_.begin(); it != pending_.end();) {
      int done = 0;
      MPI_Testall(2, it->requests.data(), &done, MPI_STATUSES_IGNORE);
      if (done) {
        held_ -= std::min(held_, it->bytes);
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    return pending_.size();
  }

  void receive_payload(unit_id peer, const wire::frame_header& header, std::span<std::byte> out, deadline until,
                       const comm_context& where) {
    MPI_Request request = MPI_REQUEST_NULL;
    MPI_Status status{};
    {
      const std::lock_guard l(mpi_);
      call(MPI_Irecv(out.data(), static_cast<int>(header.payload_length), MPI_BYTE, static_cast<int>(peer), payload_tag,
                     comm_, &request),
           where, "MPI_Irecv");
    }
    int done = 0;
    const bool arrived = poll_until(
        [&] {
          const std::lock_guard l(mpi_);
          const int rc = MPI_Test(&request, &done, &status);
          if (rc != MPI_SUCCESS && rc != MPI_ERR_IN_STATUS) call(rc, where, "MPI_Test");
          return done != 0;
        },
        until);
    if (!arrived) {
      const std::lock_guard l(mpi_);
      MPI_Cancel(&request);
      MPI_Request_free(&request);
      throw timeout_error(where, "the frame's payload did not arrive before the deadline");
    }
    int count = 0;
    MPI_Get_count(&status, MPI_BYTE, &count);
    if (status.MPI_ERROR == MPI_ERR_TRUNCATE || static_cast<std::uint64_t>(count) != header.payload_length)
      throw protocol_error(where, frame_problem::wrong_length,
                           "the payload message does not hold the " + std::to_string(header.payload_length) +
                               " bytes its header announces");
  }

  [[noreturn]] void goodbye(peer_state& p, const wire::frame_header& header, std::size_t length,
                            const comm_context& where) {
    const auto said = std::span<const std::byte>(p.scratch.data(), length).subspan(wire::header_size);
    if (said.size() != header.payload_length)
      throw protocol_error(where, frame_problem::truncated, "a goodbye whose length is not its header's");
    wire::verify(header, said, where);
    p.gone = true;
    if (said.empty()) throw peer_error(where, "the peer has shut down");
    std::string problem;
    if (const auto r = wire::decode_reason(said, world_, problem)) {
      p.reason = *r;
      throw peer_error(where, wire::describe_goodbye(*r), *r);
    }
    throw peer_error(where, "the peer has shut down (the reason in its goodbye is unreadable: " + problem + ")");
  }

  bool closed() const {
    const std::lock_guard l(mpi_);
    return closed_;
  }

  void close(const std::optional<shutdown_reason>& reason) {
    {
      const std::lock_guard l(mpi_);
      if (closed_) return;  // only the first shutdown counts
      closed_ = true;
    }
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;  // no goodbye can leave after MPI_Finalize
    const auto said = reason ? wire::encode_reason(*reason) : std::vector<std::byte>{};
    const auto header =
        wire::make_header(wire::frame_kind::goodbye, fingerprint_, wire::goodbye_reason_message, rank_, 0, said);
    for (unit_id r = 0; r < world_; ++r) {
      if (r == rank_) continue;
      auto f = frame_of(header, said);
      try {
        post(r, std::move(f), nullptr, said.size(), nullptr, comm_context{rank_, r, wire::goodbye_reason_message, 0});
      } catch (const comm_error&) {  // a peer that cannot be told is gone already
      }
    }
  }

  std::uint64_t fingerprint_;
  mpi_options options_;
  unit_id rank_ = 0;
  unit_id world_ = 0;
  MPI_Comm comm_ = MPI_COMM_NULL;
  mutable std::mutex mpi_;  // every MPI call: the transport needs MPI_THREAD_SERIALIZED only
  std::unique_ptr<peer_state[]> peers_;
  std::deque<outgoing> pending_;  // frames on their way, in the order they were posted
  std::size_t held_ = 0;          // their bytes
  bool closed_ = false;
};

static_assert(transport<mpi_transport>);

}  // namespace f2d2n
