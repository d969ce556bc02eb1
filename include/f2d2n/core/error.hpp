// f2d2n/core/error.hpp: the typed errors every part of f2d2n throws.
#pragma once

#include <f2d2n/core/unit.hpp>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

namespace f2d2n {

/// Base of every error f2d2n throws; catch this to catch them all.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A run-time configuration that cannot work: a bad option value, a data set whose samples do not
/// fit the model, an impossible batch size.
class configuration_error : public error {
 public:
  using error::error;
};

/// A training statistic that is not finite or outside its range: a loss that is NaN or infinite
/// (a diverging run, or NaN in the data), an accuracy outside [0, 1], a correct count that is
/// negative, not whole or larger than its batch (a corrupted or forged sum from a peer). The rest
/// of a run would be meaningless, so it stops. The message names the statistic, its value and
/// where (the epoch and step, the unit); statistic() and value() give them to a program.
class numerical_error : public error {
 public:
  numerical_error(std::string statistic, double value, const std::string& what)
      : error(what), statistic_(std::move(statistic)), value_(value) {}

  [[nodiscard]] const std::string& statistic() const noexcept { return statistic_; }
  [[nodiscard]] double value() const noexcept { return value_; }

 private:
  std::string statistic_;
  double value_;
};

namespace detail {
/// A statistic's value as errors print it: nine significant digits, "nan" (whatever its sign bit),
/// "inf", "-inf".
[[nodiscard]] inline std::string format_value(double v) {
  if (v != v) return "nan";
  char text[32];
  std::snprintf(text, sizeof text, "%.9g", v);
  return text;
}
}  // namespace detail

/// What is wrong with a data file.
enum class data_problem {
  missing,         ///< the file does not exist or cannot be opened
  truncated,       ///< the file ends before the data its header announces
  corrupt,         ///< the compressed stream is damaged
  bad_magic,       ///< the header is not an IDX header (or not the expected element type)
  bad_dimensions,  ///< the header announces impossible or unexpected dimensions
  count_mismatch,  ///< images and labels files hold different numbers of samples
  bad_label,       ///< a label is outside the expected class range
  shape_mismatch,  ///< the samples do not fit the model's input shape
};

/// Text naming a data_problem ("truncated", ...).
[[nodiscard]] constexpr const char* to_string(data_problem p) noexcept {
  switch (p) {
    case data_problem::missing: return "missing";
    case data_problem::truncated: return "truncated";
    case data_problem::corrupt: return "corrupt";
    case data_problem::bad_magic: return "bad magic";
    case data_problem::bad_dimensions: return "bad dimensions";
    case data_problem::count_mismatch: return "count mismatch";
    case data_problem::bad_label: return "bad label";
    case data_problem::shape_mismatch: return "shape mismatch";
  }
  return "unknown";
}

/// A data file that cannot be used; names the file and the problem.
class data_error : public error {
 public:
  data_error(std::string path, data_problem problem, const std::string& detail)
      : error(path + ": " + to_string(problem) + ": " + detail), path_(std::move(path)), problem_(problem) {}

  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  [[nodiscard]] data_problem problem() const noexcept { return problem_; }

 private:
  std::string path_;
  data_problem problem_;
};

/// What is wrong with stored model data (a safetensors file, a checkpoint, an archive).
enum class storage_problem {
  missing,         ///< the file, object or checkpoint does not exist or cannot be opened
  io,              ///< the system refused a read, write, sync or rename
  truncated,       ///< the data ends before what its header or manifest announces
  corrupt,         ///< a checksum does not match, or the header is not well formed
  bad_format,      ///< not this format, or a version this build does not read
  model_mismatch,  ///< the stored model (layers, extents, scalar type, optimizer) is not the one loading it
  incomplete,      ///< the stored chunks do not cover a tensor, or overlap
};

/// Text naming a storage_problem ("corrupt", ...).
[[nodiscard]] constexpr const char* to_string(storage_problem p) noexcept {
  switch (p) {
    case storage_problem::missing: return "missing";
    case storage_problem::io: return "i/o error";
    case storage_problem::truncated: return "truncated";
    case storage_problem::corrupt: return "corrupt";
    case storage_problem::bad_format: return "bad format";
    case storage_problem::model_mismatch: return "model mismatch";
    case storage_problem::incomplete: return "incomplete";
  }
  return "unknown";
}

/// Stored model data that cannot be written or used; names where it is and the problem. Nothing
/// of what was being loaded has been changed when it is thrown.
class storage_error : public error {
 public:
  storage_error(std::string where, storage_problem problem, const std::string& detail)
      : error(where + ": " + to_string(problem) + ": " + detail), where_(std::move(where)), problem_(problem) {}

  [[nodiscard]] const std::string& where() const noexcept { return where_; }
  [[nodiscard]] storage_problem problem() const noexcept { return problem_; }

 private:
  std::string where_;
  storage_problem problem_;
};

/// Where a communication failed: this unit, the peer, the message and the step it was about.
struct comm_context {
  unit_id unit = 0;              ///< the unit that reports the error
  unit_id peer = 0;              ///< the unit it was talking to
  std::uint32_t message_id = 0;  ///< the message it sent or waited for
  std::uint64_t step = 0;        ///< the training step (or tag) of that message

  [[nodiscard]] std::string describe() const {
    return "unit " + std::to_string(unit) + ", peer " + std::to_string(peer) + ", message " +
           std::to_string(message_id) + ", step " + std::to_string(step);
  }
};

/// Base of every failure to exchange messages between units.
class comm_error : public error {
 public:
  comm_error(const comm_context& where, const std::string& what)
      : error("f2d2n: " + where.describe() + ": " + what), where_(where) {}
  [[nodiscard]] const comm_context& where() const noexcept { return where_; }

 protected:
  /// `e` with `more` after its text.
  comm_error(const comm_error& e, const std::string& more) : error(e.what() + more), where_(e.where_) {}

 private:
  comm_context where_;
};

/// The deadline passed before the expected message arrived (a silent or slow peer).
class timeout_error : public comm_error {
 public:
  using comm_error::comm_error;
  /// The same timeout, with `more` after its text (what a unit's flight recorder adds: the message
  /// in words and the unit's last operations).
  timeout_error(const timeout_error& e, const std::string& more) : comm_error(e, more) {}
};

/// Why a unit shut its transport down after a failure, as its goodbye tells its peers: the unit
/// that failed first (as far as this unit knows) and that unit's error, in words. A unit that fails
/// because of another unit's goodbye passes that goodbye's origin on, not itself.
struct shutdown_reason {
  unit_id origin = 0;  ///< the unit that failed first
  std::string error;   ///< its error's message

  friend bool operator==(const shutdown_reason&, const shutdown_reason&) = default;
};

/// The peer is gone: it closed its connection, died, or could not be reached. When the peer shut
/// down because of a failure and said why in its goodbye, reason() holds the unit that failed first
/// and its error, and the message says so ("the peer has shut down because unit 2 failed first: ...").
class peer_error : public comm_error {
 public:
  peer_error(const comm_context& where, const std::string& what) : comm_error(where, what) {}
  peer_error(const comm_context& where, const std::string& what, shutdown_reason reason)
      : comm_error(where, what), reason_(std::move(reason)) {}

  /// Why the peer shut down, when its goodbye said so.
  [[nodiscard]] const std::optional<shutdown_reason>& reason() const noexcept { return reason_; }
  /// The unit that failed first, when the peer's goodbye named it.
  [[nodiscard]] std::optional<unit_id> origin() const {
    return reason_ ? std::optional<unit_id>(reason_->origin) : std::nullopt;
  }

 private:
  std::optional<shutdown_reason> reason_;
};

/// What is wrong with a received frame.
enum class frame_problem {
  bad_magic,          ///< not an f2d2n frame
  bad_version,        ///< another wire version
  bad_kind,           ///< a frame kind that is not expected here
  wrong_fingerprint,  ///< the sender runs another plan
  wrong_sender,       ///< the frame names another sender than the connection's peer
  wrong_message,      ///< another message than the one expected
  wrong_step,         ///< the expected message, but of another step
  wrong_length,       ///< the payload's length differs from the expected message's size
  too_large,          ///< longer than the transport's maximum frame size
  bad_checksum,       ///< header or payload corrupted
  truncated,          ///< the stream ended inside the frame
};

[[nodiscard]] constexpr const char* to_string(frame_problem p) noexcept {
  switch (p) {
    case frame_problem::bad_magic: return "bad magic";
    case frame_problem::bad_version: return "bad wire version";
    case frame_problem::bad_kind: return "unexpected frame kind";
    case frame_problem::wrong_fingerprint: return "wrong plan fingerprint";
    case frame_problem::wrong_sender: return "wrong sender";
    case frame_problem::wrong_message: return "wrong message";
    case frame_problem::wrong_step: return "wrong step";
    case frame_problem::wrong_length: return "wrong payload length";
    case frame_problem::too_large: return "frame too large";
    case frame_problem::bad_checksum: return "bad checksum";
    case frame_problem::truncated: return "truncated frame";
  }
  return "unknown";
}

/// A frame that breaks the wire protocol; it is rejected before its payload is stored.
class protocol_error : public comm_error {
 public:
  protocol_error(const comm_context& where, frame_problem problem, const std::string& detail)
      : comm_error(where, std::string(to_string(problem)) + ": " + detail), problem_(problem) {}
  [[nodiscard]] frame_problem problem() const noexcept { return problem_; }

 private:
  frame_problem problem_;
};

/// Two units that must not work together: another plan fingerprint, world size or rank than
/// expected. The message says what differs; both sides are told.
class handshake_error : public comm_error {
 public:
  using comm_error::comm_error;
};

/// The reason unit `self` gives its peers when it shuts down because of `failure` (an exception
/// it caught), so that every unit can name the unit that failed first:
/// - a peer_error whose peer gave a reason: that reason, passed on unchanged;
/// - any other peer_error (the peer vanished without a reason, e.g. it was killed): the peer, with
///   this unit's message (the peer failed first; its own words were lost with it);
/// - anything else (a timeout_error, which names the silent peer in its message, a protocol_error,
///   an error of the unit's own code): this unit, with the message.
[[nodiscard]] inline shutdown_reason shutdown_reason_of(unit_id self, const std::exception_ptr& failure) {
  if (!failure) return {self, "no error"};
  try {
    std::rethrow_exception(failure);
  } catch (const peer_error& e) {
    if (e.reason()) return *e.reason();
    if (e.where().peer != self) return {e.where().peer, e.what()};
    return {self, e.what()};
  } catch (const std::exception& e) {
    return {self, e.what()};
  } catch (...) {
    return {self, "an exception that is not a std::exception"};
  }
}

/// Whether `reason` (what unit `self` tells its peers) blames another unit: `self` is a bystander,
/// it failed only because that unit failed first.
[[nodiscard]] inline bool is_bystander(unit_id self, const shutdown_reason& reason) noexcept {
  return reason.origin != self;
}

}  // namespace f2d2n
