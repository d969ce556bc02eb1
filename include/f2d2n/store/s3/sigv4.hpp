// f2d2n/store/s3/sigv4.hpp: AWS Signature Version 4 for S3 requests, in the Authorization header,
// with the payload sent in one piece (its SHA-256 signed, or UNSIGNED-PAYLOAD).
//
//   f2d2n::s3::credentials c{"AKIA...", f2d2n::s3::secret(key), {}};
//   f2d2n::s3::request r{"GET", "bucket.s3.eu-west-3.amazonaws.com", "/ckpt/step 1/unit-0.bin",
//                        {}, {{"Range", "bytes=0-99"}}, f2d2n::s3::sha256_hex("")};
//   const auto s = f2d2n::s3::sign_v4(r, c, "eu-west-3", "s3", std::chrono::system_clock::now());
//   // request line: GET <s.encoded_path>[?<s.encoded_query>] HTTP/1.1
//   // header lines: r.headers as given, then s.headers
//
// S3's form of the signature (the S3 API reference, "Signature Calculations for the Authorization
// Header: Transferring Payload in a Single Chunk"): the path is encoded once, each byte, '/' kept,
// and never normalised ('//' and '.' segments are part of a key); the query is sorted by encoded
// name, then encoded value, each pair with its '='; the signed headers are sorted by lowercase
// name, their values trimmed and inner runs of blanks made one space, and always hold host,
// x-amz-content-sha256, x-amz-date and, with a session token, x-amz-security-token.
//
// The secret access key never leaves this file: it is in no string a signature holds and in no
// error message. The session token is sent, so it is a header the request carries and a line of
// canonical_request (which is therefore no text to log either).
#pragma once

#include <f2d2n/core/error.hpp>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <ctime>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace f2d2n::s3 {

/// A secret that never prints: no operator<<, what() of errors never contains it. Its bytes are
/// overwritten when it is destroyed or assigned over (as far as std::string lets a program know
/// where they are).
class secret {
 public:
  secret() = default;
  explicit secret(std::string v) : v_(std::move(v)) {}
  secret(const secret&) = default;
  secret(secret&& other) noexcept : v_(std::move(other.v_)) {}
  /// The old value goes to `other`, which wipes it.
  secret& operator=(secret other) noexcept {
    v_.swap(other.v_);
    return *this;
  }
  ~secret() { wipe(); }

  /// The secret's text (for the signature's key, or the header that carries a token; never for printing).
  [[nodiscard]] const std::string& reveal() const noexcept { return v_; }
  [[nodiscard]] bool empty() const noexcept { return v_.empty(); }

 private:
  void wipe() noexcept {
    v_.resize(v_.capacity());  // within the capacity: no allocation, and the whole buffer is ours to write
    OPENSSL_cleanse(v_.data(), v_.size());
    v_.clear();
  }

  std::string v_;
};

/// Who signs: an access key (an IAM user's, or temporary ones with their session token).
struct credentials {
  std::string access_key_id;
  secret secret_access_key;
  secret session_token;  ///< empty: none
};

/// Incremental SHA-256 (payload hashes of large objects in pieces). finish() gives the digest of
/// what was added and starts afresh; so does a moved-from object.
class sha256 {
 public:
  sha256() : ctx_(fresh_context()) {}
  sha256(const sha256&) = delete;
  sha256& operator=(const sha256&) = delete;
  sha256(sha256&& other) noexcept : ctx_(std::exchange(other.ctx_, nullptr)) {}
  sha256& operator=(sha256&& other) noexcept {
    if (this != &other) {
      EVP_MD_CTX_free(ctx_);
      ctx_ = std::exchange(other.ctx_, nullptr);
    }
    return *this;
  }
  ~sha256() { EVP_MD_CTX_free(ctx_); }

  void update(std::span<const std::byte> data) { add(data.data(), data.size()); }
  void update(std::string_view text) { add(text.data(), text.size()); }

  [[nodiscard]] std::array<unsigned char, 32> finish() {
    std::array<unsigned char, 32> digest{};
    unsigned int length = 0;
    if (EVP_DigestFinal_ex(context(), digest.data(), &length) != 1 || length != digest.size() ||
        EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1)
      throw configuration_error("f2d2n: OpenSSL's SHA-256 failed");
    return digest;
  }

 private:
  [[nodiscard]] static EVP_MD_CTX* fresh_context() {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    if (ctx == nullptr || EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) {
      EVP_MD_CTX_free(ctx);
      throw configuration_error("f2d2n: OpenSSL's SHA-256 failed to start");
    }
    return ctx;
  }
  EVP_MD_CTX* context() {
    if (ctx_ == nullptr) ctx_ = fresh_context();
    return ctx_;
  }
  void add(const void* data, std::size_t size) {
    if (size != 0 && EVP_DigestUpdate(context(), data, size) != 1)
      throw configuration_error("f2d2n: OpenSSL's SHA-256 failed");
  }

  EVP_MD_CTX* ctx_;
};

/// The bytes in lowercase hexadecimal, two digits each.
[[nodiscard]] inline std::string hex(std::span<const unsigned char> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string text;
  text.reserve(2 * bytes.size());
  for (const unsigned char b : bytes) {
    text += digits[b >> 4];
    text += digits[b & 15];
  }
  return text;
}

/// The SHA-256 of the bytes, in lowercase hexadecimal (64 digits).
[[nodiscard]] inline std::string sha256_hex(std::span<const std::byte> bytes) {
  sha256 h;
  h.update(bytes);
  return hex(h.finish());
}

[[nodiscard]] inline std::string sha256_hex(std::string_view text) {
  sha256 h;
  h.update(text);
  return hex(h.finish());
}

/// What x-amz-content-sha256 holds when the payload is not signed.
inline constexpr std::string_view unsigned_payload = "UNSIGNED-PAYLOAD";

/// RFC 3986 encoding as SigV4 wants it: unreserved A-Z a-z 0-9 - _ . ~ kept, every other byte %XX
/// (uppercase hex); '/' kept when encode_slash is false.
[[nodiscard]] inline std::string uri_encode(std::string_view text, bool encode_slash) {
  static constexpr char digits[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const auto b = static_cast<unsigned char>(ch);
    const bool unreserved = (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') || (b >= '0' && b <= '9') ||
                            b == '-' || b == '_' || b == '.' || b == '~';
    if (unreserved || (b == '/' && !encode_slash)) {
      out += ch;
    } else {
      out += '%';
      out += digits[b >> 4];
      out += digits[b & 15];
    }
  }
  return out;
}

/// A request to sign. path: the raw (unencoded) absolute path, e.g. "/bucket/my key.bin"
/// (path-style) or "/my key.bin" (virtual-hosted); empty is "/". query: raw names and values
/// (unencoded; a name without value has value ""). headers: extra headers to sign besides those
/// sign_v4 adds (any case; values trimmed and inner runs of spaces collapsed as SigV4 says; a name
/// given twice is one header, its values joined by ',' in order); host, x-amz-date,
/// x-amz-content-sha256, x-amz-security-token and authorization are sign_v4's own and refused here.
struct request {
  std::string method;
  std::string host;  ///< as in the Host header, with ":port" when not the scheme's default
  std::string path;
  std::vector<std::pair<std::string, std::string>> query;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string payload_hash;  ///< hex SHA-256 of the body (lowercase), or unsigned_payload
};

/// What sign_v4 made of a request.
struct signature {
  /// To add to the HTTP request: host, x-amz-content-sha256, x-amz-date, x-amz-security-token
  /// (when a session token is set), authorization.
  std::vector<std::pair<std::string, std::string>> headers;
  /// For tests and debugging; none holds the secret access key (canonical_request holds the
  /// session token, a signed header).
  std::string canonical_request, string_to_sign, authorization;
  std::string encoded_path;   ///< the path as it must go on the request line (uri_encode(path, false))
  std::string encoded_query;  ///< the canonical query string (also what goes on the request line after '?')
};

namespace detail {

[[noreturn]] inline void refuse(const std::string& why) {
  throw configuration_error("f2d2n: cannot sign the S3 request: " + why);
}

/// An HTTP token character (RFC 9110 tchar): what methods and header names are made of.
[[nodiscard]] constexpr bool is_token_char(char c) noexcept {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

[[nodiscard]] inline bool is_token(std::string_view s) noexcept {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_token_char);
}

/// A control character other than horizontal tab (never in a header value: CR and LF would end it).
[[nodiscard]] constexpr bool is_control(char c) noexcept {
  const auto b = static_cast<unsigned char>(c);
  return (b < 0x20 && b != '\t') || b == 0x7f;
}

[[nodiscard]] constexpr bool is_blank(char c) noexcept { return c == ' ' || c == '\t'; }

[[nodiscard]] inline std::string lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

/// A header value as SigV4 signs it: blanks (spaces, tabs) before and after removed, every inner
/// run of them one space.
[[nodiscard]] inline std::string trim_all(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  bool pending_space = false;
  for (const char c : v) {
    if (is_blank(c)) {
      pending_space = !out.empty();
    } else {
      if (pending_space) out += ' ';
      pending_space = false;
      out += c;
    }
  }
  return out;
}

/// x-amz-date's form of `when` (UTC, whole seconds): "20130524T000000Z".
[[nodiscard]] inline std::string amz_date(std::chrono::system_clock::time_point when) {
  const auto seconds = std::chrono::floor<std::chrono::seconds>(when.time_since_epoch()).count();
  const auto t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  if (::gmtime_r(&t, &tm) == nullptr || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
    refuse("the time is outside the years 0 to 9999");
  std::string out = "00000000T000000Z";
  const auto put = [&out](std::size_t at, int width, int value) {
    for (int i = width - 1; i >= 0; --i, value /= 10)
      out[at + static_cast<std::size_t>(i)] = static_cast<char>('0' + value % 10);
  };
  put(0, 4, tm.tm_year + 1900);
  put(4, 2, tm.tm_mon + 1);
  put(6, 2, tm.tm_mday);
  put(9, 2, tm.tm_hour);
  put(11, 2, tm.tm_min);
  put(13, 2, tm.tm_sec);
  return out;
}

using mac = std::array<unsigned char, 32>;

[[nodiscard]] inline mac hmac_sha256(std::span<const unsigned char> key, std::string_view message) {
  mac m{};
  unsigned int length = 0;
  static constexpr unsigned char empty = 0;  // HMAC() wants a key pointer even for an empty key
  const unsigned char* key_data = key.empty() ? &empty : key.data();
  if (HMAC(EVP_sha256(), key_data, static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(message.data()),
           message.size(), m.data(), &length) == nullptr ||
      length != m.size())
    throw configuration_error("f2d2n: OpenSSL's HMAC-SHA256 failed");
  return m;
}

/// Names made of letters, digits, '-', '_' and '.' (regions, services).
[[nodiscard]] inline bool is_plain_name(std::string_view s) noexcept {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
  });
}

[[nodiscard]] inline bool is_hex_sha256(std::string_view s) noexcept {
  return s.size() == 64 &&
         std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

/// The signing key's derivation, HMAC after HMAC from "AWS4" + secret; the intermediate keys are wiped.
[[nodiscard]] inline mac signing_key(const secret& key, std::string_view date, std::string_view region,
                                     std::string_view service) {
  std::string text;
  text.reserve(std::max<std::size_t>(32, 4 + key.reveal().size()));  // on the heap: moved, not copied, below
  text += "AWS4";
  text += key.reveal();
  const secret first(std::move(text));
  const auto& k = first.reveal();
  mac m = hmac_sha256(std::span(reinterpret_cast<const unsigned char*>(k.data()), k.size()), date);
  for (const std::string_view part : {region, service, std::string_view("aws4_request")}) {
    mac next = hmac_sha256(m, part);
    m = next;
    OPENSSL_cleanse(next.data(), next.size());
  }
  return m;
}

}  // namespace detail

/// Signs for `region` and `service` ("s3") at time `when` (UTC; x-amz-date is YYYYMMDD'T'HHMMSS'Z',
/// the fraction of a second dropped). configuration_error when the request cannot be signed or
/// sent as it is (a method or header name that is not an HTTP token, a header value with a control
/// character, a header that is sign_v4's own, a path without its leading '/', a payload hash that
/// is neither 64 lowercase hex digits nor unsigned_payload, missing credentials); the message
/// names what is wrong, never a secret or a header's value.
[[nodiscard]] inline signature sign_v4(const request& r, const credentials& c, std::string_view region,
                                       std::string_view service, std::chrono::system_clock::time_point when) {
  using detail::refuse;
  if (!detail::is_token(r.method)) refuse("the method is not an HTTP token");
  if (r.host.empty() || std::any_of(r.host.begin(), r.host.end(), [](char ch) {
        return detail::is_control(ch) || detail::is_blank(ch) || ch == '/' || ch == '?' || ch == '#' || ch == '@';
      }))
    refuse("the host is empty or holds a character a Host header cannot");
  if (!r.path.empty() && r.path.front() != '/') refuse("the path does not begin with '/'");
  if (!detail::is_hex_sha256(r.payload_hash) && r.payload_hash != unsigned_payload)
    refuse("the payload hash is neither 64 lowercase hexadecimal digits nor UNSIGNED-PAYLOAD");
  if (c.access_key_id.empty() || std::any_of(c.access_key_id.begin(), c.access_key_id.end(), [](char ch) {
        return detail::is_control(ch) || detail::is_blank(ch) || ch == '/' || ch == ',';
      }))
    refuse("the access key id is empty or holds a blank, a control character, '/' or ','");
  if (c.secret_access_key.empty()) refuse("the secret access key is empty");
  const auto& token = c.session_token.reveal();
  if (std::any_of(token.begin(), token.end(), [](char ch) { return detail::is_control(ch) || detail::is_blank(ch); }))
    refuse("the session token holds a blank or a control character");
  if (!detail::is_plain_name(region)) refuse("the region is empty or holds other than letters, digits, '-', '_', '.'");
  if (!detail::is_plain_name(service)) refuse("the service is empty or holds other than letters, digits, '-', '_', '.'");

  signature s;
  const std::string date_time = detail::amz_date(when);
  const std::string_view date = std::string_view(date_time).substr(0, 8);

  s.encoded_path = uri_encode(r.path.empty() ? std::string_view("/") : std::string_view(r.path), false);

  std::vector<std::pair<std::string, std::string>> query;
  query.reserve(r.query.size());
  for (const auto& [name, value] : r.query) query.emplace_back(uri_encode(name, true), uri_encode(value, true));
  std::sort(query.begin(), query.end());
  for (const auto& [name, value] : query) {
    if (!s.encoded_query.empty()) s.encoded_query += '&';
    s.encoded_query += name;
    s.encoded_query += '=';
    s.encoded_query += value;
  }

  static constexpr std::string_view own[] = {"host", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token",
                                             "authorization"};
  std::vector<std::pair<std::string, std::string>> headers;  // lowercase name, value as signed
  headers.reserve(r.headers.size() + 4);
  for (std::size_t i = 0; i < r.headers.size(); ++i) {
    const auto& [name, value] = r.headers[i];
    if (!detail::is_token(name)) refuse("header " + std::to_string(i) + "'s name is not an HTTP token");
    std::string lower = detail::lowercase(name);
    if (std::find(std::begin(own), std::end(own), lower) != std::end(own))
      refuse("the header " + lower + " is set by sign_v4, not by the request");
    if (std::any_of(value.begin(), value.end(), detail::is_control))
      refuse("the value of the header " + lower + " holds a control character");
    headers.emplace_back(std::move(lower), detail::trim_all(value));
  }
  headers.emplace_back("host", r.host);
  headers.emplace_back("x-amz-content-sha256", r.payload_hash);
  headers.emplace_back("x-amz-date", date_time);
  if (!token.empty()) headers.emplace_back("x-amz-security-token", token);
  std::stable_sort(headers.begin(), headers.end(), [](const auto& a, const auto& b) { return a.first < b.first; });

  std::string canonical_headers, signed_headers;
  for (std::size_t i = 0; i < headers.size(); ++i) {
    if (i > 0 && headers[i].first == headers[i - 1].first) {
      canonical_headers.back() = ',';  // the same header again: its values joined by ','
    } else {
      if (!signed_headers.empty()) signed_headers += ';';
      signed_headers += headers[i].first;
      canonical_headers += headers[i].first;
      canonical_headers += ':';
    }
    canonical_headers += headers[i].second;
    canonical_headers += '\n';
  }

  s.canonical_request = r.method + '\n' + s.encoded_path + '\n' + s.encoded_query + '\n' + canonical_headers + '\n' +
                        signed_headers + '\n' + r.payload_hash;
  const std::string scope =
      std::string(date) + '/' + std::string(region) + '/' + std::string(service) + "/aws4_request";
  s.string_to_sign = "AWS4-HMAC-SHA256\n" + date_time + '\n' + scope + '\n' + sha256_hex(s.canonical_request);

  detail::mac key = detail::signing_key(c.secret_access_key, date, region, service);
  const detail::mac sig = detail::hmac_sha256(key, s.string_to_sign);
  OPENSSL_cleanse(key.data(), key.size());

  s.authorization = "AWS4-HMAC-SHA256 Credential=" + c.access_key_id + '/' + scope +
                    ", SignedHeaders=" + signed_headers + ", Signature=" + hex(sig);
  s.headers.emplace_back("host", r.host);
  s.headers.emplace_back("x-amz-content-sha256", r.payload_hash);
  s.headers.emplace_back("x-amz-date", date_time);
  if (!token.empty()) s.headers.emplace_back("x-amz-security-token", token);
  s.headers.emplace_back("authorization", s.authorization);
  return s;
}

}  // namespace f2d2n::s3
