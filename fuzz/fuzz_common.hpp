// fuzz/fuzz_common.hpp: what the fuzz targets and the seed generator (make_corpus.cpp) share: the
// frame the frame seeds are, and a temporary file for readers that take a path. The storage
// targets' model and backend are in fuzz_store.hpp (they need Eigen; these targets do not).
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/wire/frame.hpp>

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <span>
#include <string>

namespace f2d2n::fuzz {

/// The frame the frame target expects (the seeds are frames of it, checksums included).
inline constexpr std::uint64_t frame_fingerprint = 0x0123456789abcdefu;
inline constexpr std::uint32_t frame_message = 7;
inline constexpr unit_id frame_sender = 1;
inline constexpr std::uint64_t frame_step = 3;
/// A small maximum frame, so that the too_large check is reachable from small inputs.
inline constexpr std::uint64_t frame_max = 1024;

/// A file of this process in the temporary directory, rewritten for every input and removed when
/// the process exits: for readers that take a path (zlib's gzopen reads files only).
class scratch_file {
 public:
  explicit scratch_file(const std::string& stem)
      : path_((std::filesystem::temp_directory_path() / (stem + "-" + std::to_string(::getpid()))).string()) {}
  ~scratch_file() { std::remove(path_.c_str()); }
  scratch_file(const scratch_file&) = delete;
  scratch_file& operator=(const scratch_file&) = delete;

  /// Replaces the file's contents with `bytes`; ends the process when the system refuses (the
  /// fuzzer's environment is broken, not the library).
  const std::string& write(std::span<const std::uint8_t> bytes) const {
    std::FILE* f = std::fopen(path_.c_str(), "wb");
    if (!f || (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) || std::fclose(f)) {
      std::perror(path_.c_str());
      std::abort();
    }
    return path_;
  }

 private:
  std::string path_;
};

}  // namespace f2d2n::fuzz
