// f2d2n/core/error.hpp: the typed errors every part of f2d2n throws.
#pragma once

#include <stdexcept>
#include <string>

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

}  // namespace f2d2n
