// f2d2n/store/s3_backend.hpp: the storage interface on an S3-compatible object store
// ("s3://bucket/prefix"). Including it in any source file of a program makes open_storage() (and
// load_mnist, and the examples' --data-dir / --checkpoint-dir) take s3:// locations as well as
// directories (docs/storage.md).
#pragma once

#include <f2d2n/store/backend.hpp>
#include <f2d2n/store/s3/client.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace f2d2n {

/// "s3://bucket/prefix" split into bucket and prefix ("" or ending in '/').
struct s3_location {
  std::string bucket, prefix;

  /// configuration_error for anything but s3://bucket[/prefix[/]].
  static s3_location parse(std::string_view url) {
    auto bad = [&](const char* why) {
      return configuration_error("f2d2n: the location '" + std::string(url) + "' " + why);
    };
    if (!url.starts_with("s3://")) throw bad("does not start with s3://");
    url.remove_prefix(5);
    const auto slash = url.find('/');
    s3_location l;
    l.bucket = std::string(url.substr(0, slash));
    if (l.bucket.empty()) throw bad("names no bucket (s3://bucket/prefix)");
    for (char c : l.bucket)
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'))
        throw bad("has a bucket name with characters S3 does not allow (lowercase letters, digits, '-', '.')");
    if (slash != std::string_view::npos) {
      std::string_view p = url.substr(slash + 1);
      while (p.starts_with('/')) p.remove_prefix(1);
      l.prefix = std::string(p);
      if (!l.prefix.empty() && l.prefix.back() != '/') l.prefix += '/';
    }
    return l;
  }
  [[nodiscard]] std::string url() const {
    return "s3://" + bucket + (prefix.empty() ? "" : "/" + prefix.substr(0, prefix.size() - 1));
  }
};

/// Objects under a prefix of a bucket. put and commit are single PUTs (or multipart uploads): an
/// S3 object appears whole or not at all, so commit needs nothing more; a put interrupted leaves
/// no object (or the old one). get is a ranged GET; list pages through ListObjectsV2.
class s3_backend final : public storage_backend {
 public:
  /// The store at `url` (s3://bucket/prefix), reached with `o` (by default from the environment:
  /// s3::options::from_environment).
  explicit s3_backend(std::string_view url, s3::options o = s3::options::from_environment())
      : where_(s3_location::parse(url)), client_(std::make_shared<s3::client>(std::move(o))) {}
  /// A location in the store of an existing client (its connections shared).
  s3_backend(std::string_view url, std::shared_ptr<s3::client> c) : where_(s3_location::parse(url)), client_(std::move(c)) {}

  using storage_backend::get;
  using storage_backend::put;

  [[nodiscard]] const s3_location& where() const noexcept { return where_; }
  [[nodiscard]] s3::client& client() noexcept { return *client_; }
  [[nodiscard]] std::string location() const override { return where_.url(); }

  void put(std::string_view key, byte_pieces data) override { client_->put(where_.bucket, object(key), data); }
  void commit(std::string_view key, std::span<const std::byte> data) override {
    const std::span<const std::byte> one[] = {data};
    client_->put(where_.bucket, object(key), byte_pieces(one));
  }
  void get(std::string_view key, std::uint64_t offset, std::span<std::byte> out) const override {
    client_->get(where_.bucket, object(key), offset, out);
  }
  [[nodiscard]] std::optional<std::uint64_t> size(std::string_view key) const override {
    return client_->head(where_.bucket, object(key));
  }
  [[nodiscard]] std::vector<std::string> list(std::string_view prefix) const override {
    std::vector<std::string> keys;
    for (auto& o : client_->list(where_.bucket, where_.prefix + std::string(prefix)))
      keys.push_back(o.key.substr(where_.prefix.size()));
    return keys;
  }
  void remove(std::string_view key) override { client_->remove(where_.bucket, object(key)); }

 private:
  /// The object's key: the prefix, then the backend's key (relative, never climbing out of it).
  [[nodiscard]] std::string object(std::string_view key) const {
    if (key.empty() || key.front() == '/' || key.find("..") != std::string_view::npos ||
        key.find('\0') != std::string_view::npos)
      throw storage_error(location(), storage_problem::bad_format, "bad key '" + std::string(key) + "'");
    return where_.prefix + std::string(key);
  }

  s3_location where_;
  std::shared_ptr<s3::client> client_;  // shared: copies of a backend use one pool of connections
};

namespace detail {
inline std::unique_ptr<storage_backend> open_s3(std::string_view where) { return std::make_unique<s3_backend>(where); }
/// Makes open_storage (and load_mnist, and the examples' options) reach s3:// locations in every
/// program that includes this header.
inline const bool s3_opener_set = (s3_opener = &open_s3, true);
}  // namespace detail

}  // namespace f2d2n
