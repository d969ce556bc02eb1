// f2d2n/transport/cluster_key.hpp: the secret the units of one cluster share, with which each
// connection proves, before any other byte is read, that both ends belong to the cluster.
//
//   F2D2N_CLUSTER_KEY=<at least 16 characters>        the key itself (f2d2n_launch sets a fresh one
//                                                    per run when neither variable is set)
//   F2D2N_CLUSTER_KEY_FILE=/path/to/key               or a file holding it (mode 0600 or stricter;
//                                                    trailing newlines are not part of the key)
//
//   auto key = f2d2n::cluster_key_from_environment();  // std::optional: empty when neither is set
//   f2d2n::tcp_options o;  o.key = key;
//
// The key's bytes are its text as written; `openssl rand -hex 32` makes a good one. A key is never
// printed: no error message, log line or description holds it. See docs/security.md.
#pragma once

#include <f2d2n/core/error.hpp>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <sys/stat.h>

#include <array>
#include <cstddef>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace f2d2n {

/// The names of the environment variables a key is read from.
inline constexpr const char* cluster_key_variable = "F2D2N_CLUSTER_KEY";
inline constexpr const char* cluster_key_file_variable = "F2D2N_CLUSTER_KEY_FILE";

/// A cluster's shared secret: at least min_size bytes. Copyable; compared in constant time.
class cluster_key {
 public:
  /// Shorter keys are refused: the key is all that keeps other processes out.
  static constexpr std::size_t min_size = 16;
  static constexpr std::size_t max_size = 4096;

  /// The key whose bytes are `text`; configuration_error when it is shorter than min_size or longer
  /// than max_size (`source` names where it came from, for the message; the key is never in it).
  explicit cluster_key(std::string text, std::string_view source = "the cluster key") : bytes_(std::move(text)) {
    if (bytes_.size() < min_size)
      throw configuration_error("f2d2n: " + std::string(source) + " has " + std::to_string(bytes_.size()) +
                                " characters; a cluster key needs at least " + std::to_string(min_size) +
                                " (e.g. the output of `openssl rand -hex 32`)");
    if (bytes_.size() > max_size)
      throw configuration_error("f2d2n: " + std::string(source) + " has " + std::to_string(bytes_.size()) +
                                " characters; a cluster key has at most " + std::to_string(max_size));
  }

  /// A fresh key: 32 random bytes from OpenSSL's generator, as 64 hexadecimal characters.
  [[nodiscard]] static cluster_key generate() {
    std::array<unsigned char, 32> raw{};
    if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1)
      throw configuration_error("f2d2n: OpenSSL's random generator failed to make a cluster key");
    static constexpr char digits[] = "0123456789abcdef";
    std::string text;
    for (const unsigned char b : raw) {
      text += digits[b >> 4];
      text += digits[b & 15];
    }
    OPENSSL_cleanse(raw.data(), raw.size());
    return cluster_key(std::move(text));
  }

  /// The key in the file at `path`, without its trailing newlines; configuration_error when the
  /// file cannot be read, or when its mode lets the group or others read or write it.
  [[nodiscard]] static cluster_key from_file(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
      throw configuration_error("f2d2n: the cluster key file " + path + " cannot be read");
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
      throw configuration_error("f2d2n: the cluster key file " + path +
                                " may be read or written by other users; make it private (chmod 600 " + path + ")");
    std::ifstream in(path, std::ios::binary);
    if (!in) throw configuration_error("f2d2n: the cluster key file " + path + " cannot be read");
    std::string text;
    text.reserve(64);
    for (std::istreambuf_iterator<char> it(in), end; it != end && text.size() <= max_size; ++it) text += *it;
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    return cluster_key(std::move(text), "the cluster key file " + path);
  }

  /// The key's bytes (for the HMAC; never for printing).
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return std::as_bytes(std::span(bytes_)); }
  /// The key's text (what f2d2n_launch hands to its units; never for printing).
  [[nodiscard]] const std::string& text() const noexcept { return bytes_; }

  friend bool operator==(const cluster_key& a, const cluster_key& b) noexcept {
    return a.bytes_.size() == b.bytes_.size() && CRYPTO_memcmp(a.bytes_.data(), b.bytes_.data(), a.bytes_.size()) == 0;
  }

 private:
  std::string bytes_;
};

/// The key that F2D2N_CLUSTER_KEY or F2D2N_CLUSTER_KEY_FILE names; nothing when neither is set
/// (an empty variable counts as not set); configuration_error when both are set or the key is bad.
[[nodiscard]] inline std::optional<cluster_key> cluster_key_from_environment() {
  const char* text = std::getenv(cluster_key_variable);
  const char* file = std::getenv(cluster_key_file_variable);
  const bool has_text = text != nullptr && *text != '\0';
  const bool has_file = file != nullptr && *file != '\0';
  if (has_text && has_file)
    throw configuration_error(std::string("f2d2n: both ") + cluster_key_variable + " and " + cluster_key_file_variable +
                              " are set; set one");
  if (has_text) return cluster_key(text, cluster_key_variable);
  if (has_file) return cluster_key::from_file(file);
  return std::nullopt;
}

}  // namespace f2d2n
