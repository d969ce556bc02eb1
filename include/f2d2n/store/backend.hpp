// f2d2n/store/backend.hpp: where stored bytes live, behind one small interface.
//
// A backend holds objects named by keys ("step-00000120/unit-0.bin"; '/' separates levels, as in
// an object store). Formats (store/safetensors.hpp, store/checkpoint.hpp) only put, get ranges,
// list, remove and commit; they never know whether the bytes are on a disk or in an object store.
// directory_backend keeps them under a directory of the file system.
#pragma once

#include <f2d2n/core/error.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace f2d2n {

/// Bytes to store: the concatenation of the pieces (written without copying them together).
using byte_pieces = std::span<const std::span<const std::byte>>;

/// The storage interface. Every call either does all it says or throws storage_error.
class storage_backend {
 public:
  virtual ~storage_backend() = default;

  /// Stores an object (replacing one of the same key); its bytes are durable when put returns, and
  /// its name at the latest when a later commit() in the same folder returns. Not atomic: a reader
  /// may see part of it while it is written, or after a crash; formats commit() a manifest last,
  /// so that an object nobody's committed manifest names is never read.
  virtual void put(std::string_view key, byte_pieces data) = 0;
  /// Stores a working object that need not survive a crash (read back before the next commit).
  virtual void stage(std::string_view key, std::span<const std::byte> data) { put(key, data); }
  /// Stores an object all or nothing: a reader sees the old object (or none) or the whole new one,
  /// even after a crash; durable when commit returns.
  virtual void commit(std::string_view key, std::span<const std::byte> data) = 0;
  /// Reads out.size() bytes from `offset`; storage_error (truncated) when the object is shorter,
  /// (missing) when there is none.
  virtual void get(std::string_view key, std::uint64_t offset, std::span<std::byte> out) const = 0;
  /// The object's size, or nothing when there is no such object.
  [[nodiscard]] virtual std::optional<std::uint64_t> size(std::string_view key) const = 0;
  /// The keys that start with `prefix`, sorted.
  [[nodiscard]] virtual std::vector<std::string> list(std::string_view prefix) const = 0;
  /// Removes the object; nothing happens when there is none.
  virtual void remove(std::string_view key) = 0;
  /// Where the objects are, for messages ("directory ckpt", "s3://bucket/prefix").
  [[nodiscard]] virtual std::string location() const = 0;

  void put(std::string_view key, std::span<const std::byte> data) {
    const std::span<const std::byte> one[] = {data};
    put(key, byte_pieces(one));
  }
  /// The whole object.
  [[nodiscard]] std::vector<std::byte> get(std::string_view key) const {
    const auto n = size(key);
    if (!n) throw storage_error(location() + "/" + std::string(key), storage_problem::missing, "no such object");
    std::vector<std::byte> out(*n);
    get(key, 0, out);
    return out;
  }
};

/// Objects as files under a directory; a key's '/' levels are subdirectories (created on demand).
/// put writes and fsyncs the file; commit writes a temporary file beside it, fsyncs it, renames it
/// over the key and fsyncs the directory (POSIX rename is atomic).
class directory_backend final : public storage_backend {
 public:
  /// Objects under `root` (created with its parents when missing).
  explicit directory_backend(std::filesystem::path root) : root_(std::move(root)) {
    std::error_code ec;
    std::filesystem::create_directories(root_, ec);
    if (ec || !std::filesystem::is_directory(root_))
      throw storage_error(root_.string(), storage_problem::io, "cannot create the directory: " + ec.message());
  }

  using storage_backend::get;  // the whole-object and one-piece forms
  using storage_backend::put;

  [[nodiscard]] const std::filesystem::path& root() const noexcept { return root_; }
  [[nodiscard]] std::string location() const override { return root_.string(); }

  void put(std::string_view key, byte_pieces data) override {
    const auto path = path_of(key);
    make_parent(path);
    write_file(path, data, true);
  }

  void stage(std::string_view key, std::span<const std::byte> data) override {
    const auto path = path_of(key);
    make_parent(path);
    const std::span<const std::byte> one[] = {data};
    write_file(path, byte_pieces(one), false);
  }

  void commit(std::string_view key, std::span<const std::byte> data) override {
    const auto path = path_of(key);
    make_parent(path);
    auto temp = path;
    temp += ".tmp" + std::to_string(::getpid());
    const std::span<const std::byte> one[] = {data};
    write_file(temp, byte_pieces(one), true);
    if (::rename(temp.c_str(), path.c_str()) != 0) {
      const int e = errno;
      ::unlink(temp.c_str());
      throw storage_error(path.string(), storage_problem::io, std::string("rename failed: ") + std::strerror(e));
    }
    sync_directory(path.parent_path());
  }

  void get(std::string_view key, std::uint64_t offset, std::span<std::byte> out) const override {
    const auto path = path_of(key);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      const int e = errno;
      throw storage_error(path.string(), e == ENOENT ? storage_problem::missing : storage_problem::io,
                          std::string("cannot open: ") + std::strerror(e));
    }
    std::size_t done = 0;
    while (done < out.size()) {
      const ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int e = errno;
        ::close(fd);
        if (n == 0)
          throw storage_error(path.string(), storage_problem::truncated,
                              "ends before byte " + std::to_string(offset + out.size()) + " (read " +
                                  std::to_string(out.size()) + " bytes from offset " + std::to_string(offset) + ")");
        throw storage_error(path.string(), storage_problem::io, std::string("read failed: ") + std::strerror(e));
      }
      done += static_cast<std::size_t>(n);
    }
    ::close(fd);
  }

  [[nodiscard]] std::optional<std::uint64_t> size(std::string_view key) const override {
    struct stat st {};
    if (::stat(path_of(key).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
    return static_cast<std::uint64_t>(st.st_size);
  }

  [[nodiscard]] std::vector<std::string> list(std::string_view prefix) const override {
    std::vector<std::string> keys;
    std::error_code ec;
    std::filesystem::recursive_directory_iterator it(root_, ec), end;
    if (ec) throw storage_error(root_.string(), storage_problem::io, "cannot list: " + ec.message());
    const std::string root = root_.generic_string();
    for (; it != end; it.increment(ec)) {
      if (ec) throw storage_error(root_.string(), storage_problem::io, "cannot list: " + ec.message());
      if (!it->is_regular_file(ec)) continue;
      // The path below the root, as a key (cut off as text: std::filesystem::relative resolves
      // links, several system calls a key).
      const std::string full = it->path().generic_string();
      if (full.size() <= root.size() + 1 || full.compare(0, root.size(), root) != 0) continue;
      std::string key = full.substr(root.size() + (full[root.size()] == '/' ? 1 : 0));
      if (key.starts_with(prefix)) keys.push_back(std::move(key));
    }
    std::sort(keys.begin(), keys.end());
    return keys;
  }

  void remove(std::string_view key) override {
    const auto path = path_of(key);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
      throw storage_error(path.string(), storage_problem::io, std::string("cannot remove: ") + std::strerror(errno));
    // Empty directories left behind go too (up to the root).
    std::error_code ec;
    for (auto dir = path.parent_path(); dir != root_ && dir.string().size() > root_.string().size();
         dir = dir.parent_path())
      if (!std::filesystem::remove(dir, ec)) break;  // not empty (or gone): stop
  }

 private:
  [[nodiscard]] std::filesystem::path path_of(std::string_view key) const {
    // Keys are relative and never climb out of the root.
    if (key.empty() || key.front() == '/' || key.find("..") != std::string_view::npos ||
        key.find('\0') != std::string_view::npos)
      throw storage_error(root_.string(), storage_problem::bad_format, "bad key '" + std::string(key) + "'");
    return root_ / std::filesystem::path(std::string(key));
  }

  /// Creates the key's folders; a new folder's name is made durable (its parent fsynced).
  void make_parent(const std::filesystem::path& path) const {
    std::error_code ec;
    const auto dir = path.parent_path();
    if (std::filesystem::is_directory(dir, ec)) return;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw storage_error(dir.string(), storage_problem::io, "cannot create: " + ec.message());
    for (auto d = dir; d != root_ && d.string().size() > root_.string().size(); d = d.parent_path())
      sync_directory(d.parent_path());
  }

  static void write_file(const std::filesystem::path& path, byte_pieces data, bool durable) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
      throw storage_error(path.string(), storage_problem::io, std::string("cannot create: ") + std::strerror(errno));
    auto fail = [&](const char* what) {
      const int e = errno;
      ::close(fd);
      ::unlink(path.c_str());
      throw storage_error(path.string(), storage_problem::io, std::string(what) + ": " + std::strerror(e));
    };
    // writev over the pieces, at most IOV_MAX at a time, resumed after short writes.
    std::vector<iovec> iov;
    for (auto p : data)
      if (!p.empty()) iov.push_back({const_cast<std::byte*>(p.data()), p.size()});
    std::size_t first = 0;
    while (first < iov.size()) {
      const int count = static_cast<int>(std::min<std::size_t>(iov.size() - first, 1024));
      const ssize_t n = ::writev(fd, iov.data() + first, count);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail("write failed");
      }
      auto left = static_cast<std::size_t>(n);
      while (left > 0 && first < iov.size()) {
        if (left >= iov[first].iov_len) {
          left -= iov[first].iov_len;
          ++first;
        } else {
          iov[first].iov_base = static_cast<std::byte*>(iov[first].iov_base) + left;
          iov[first].iov_len -= left;
          left = 0;
        }
      }
    }
    if (durable && ::fsync(fd) != 0) fail("fsync failed");
    if (::close(fd) != 0)
      throw storage_error(path.string(), storage_problem::io, std::string("close failed: ") + std::strerror(errno));
  }

  static void sync_directory(const std::filesystem::path& dir) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
      throw storage_error(dir.string(), storage_problem::io, std::string("cannot open: ") + std::strerror(errno));
    const int r = ::fsync(fd);
    const int e = errno;
    ::close(fd);
    if (r != 0)
      throw storage_error(dir.string(), storage_problem::io, std::string("fsync failed: ") + std::strerror(e));
  }

  std::filesystem::path root_;
};

/// True for "s3://..." locations.
[[nodiscard]] inline bool is_s3_location(std::string_view where) noexcept { return where.starts_with("s3://"); }

namespace detail {
/// How open_storage reaches an object store: <f2d2n/store/s3_backend.hpp> sets it when a program
/// includes it (the S3 client is compiled only where it is included: it is not light).
inline std::unique_ptr<storage_backend> (*s3_opener)(std::string_view) = nullptr;
}  // namespace detail

/// The backend for a place to store: a directory (created when missing), or an s3:// location
/// (credentials and endpoint from the environment; the program must include
/// <f2d2n/store/s3_backend.hpp> in one of its source files, else configuration_error says so).
[[nodiscard]] inline std::unique_ptr<storage_backend> open_storage(std::string_view where) {
  if (is_s3_location(where)) {
    if (!detail::s3_opener)
      throw configuration_error("f2d2n: '" + std::string(where) +
                                "' is an object store: the program needs #include <f2d2n/store/s3_backend.hpp> "
                                "(in any one of its source files) to reach it");
    return detail::s3_opener(where);
  }
  return std::make_unique<directory_backend>(std::filesystem::path(std::string(where)));
}

}  // namespace f2d2n
