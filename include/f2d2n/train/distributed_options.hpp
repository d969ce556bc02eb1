// f2d2n/train/distributed_options.hpp: how a distributed network communicates.
#pragma once

#include <f2d2n/comm/primitives.hpp>

#include <chrono>
#include <cstddef>

namespace f2d2n {

/// How a distributed network communicates.
struct distributed_options {
  /// How long a unit waits in one collective before timeout_error (a dead or silent peer).
  std::chrono::milliseconds timeout{60000};
  /// Largest piece a ring step sends at once (call_options::chunk_bytes).
  std::size_t chunk_bytes = call_options{}.chunk_bytes;
  /// Pieces a unit sends ahead of what it has received in its rings (call_options::pipeline; 0:
  /// lockstep; the default leaves it to the transport). The sums are the same either way.
  std::size_t pipeline = call_options{}.pipeline;
  /// Sum the gradient buckets of data_parallel on a second thread of the unit while the backward
  /// pass goes on (the thread sleeps while it waits). Off by default: one compute thread per unit;
  /// then each bucket is summed in the compute thread as soon as it is complete. The messages and
  /// the results are the same either way. The second thread competes with the compute threads for
  /// the cores: it pays where a unit has a core to spare (measurements: docs/plan.md).
  bool overlap = false;
  /// How many of its last communication operations the unit keeps in its flight recorder
  /// (train/flight_recorder.hpp): a timeout_error carries them, print_flight_recorder_on prints
  /// them on a signal. Allocated once; recording costs two locks and two clock reads per frame. 0
  /// records nothing.
  std::size_t flight_records = 64;
};

}  // namespace f2d2n
