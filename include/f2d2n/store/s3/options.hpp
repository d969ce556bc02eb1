// f2d2n/store/s3/options.hpp: where an S3-compatible object store is and how the client talks to
// it (endpoint, region, credentials, addressing, deadlines, retries, multipart), read from the
// standard environment variables; and the error the client throws (docs/storage.md).
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/store/s3/sigv4.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

namespace f2d2n::s3 {

/// A request the object store refused or that could not be completed: names the bucket and key
/// (never a credential), the HTTP status (0 when no response came) and S3's error code
/// ("NoSuchKey", "SlowDown"; empty when none).
class s3_error : public storage_error {
 public:
  s3_error(std::string bucket, std::string key, unsigned status, std::string code, storage_problem problem,
           const std::string& detail)
      : storage_error("s3://" + bucket + "/" + key, problem,
                      detail + (status != 0 ? " (HTTP " + std::to_string(status) + (code.empty() ? "" : " " + code) + ")"
                                            : std::string())),
        bucket_(std::move(bucket)), key_(std::move(key)), code_(std::move(code)), status_(status) {}

  [[nodiscard]] const std::string& bucket() const noexcept { return bucket_; }
  [[nodiscard]] const std::string& key() const noexcept { return key_; }
  [[nodiscard]] unsigned http_status() const noexcept { return status_; }
  [[nodiscard]] const std::string& code() const noexcept { return code_; }

 private:
  std::string bucket_, key_, code_;
  unsigned status_ = 0;
};

/// The scheme, host and port of an endpoint URL ("http://127.0.0.1:4569", "https://s3.amazonaws.com").
struct endpoint {
  bool tls = true;
  std::string host;
  std::string port;  ///< "443" / "80" when the URL names none

  /// The Host header for `host` (the port only when it is not the scheme's default).
  [[nodiscard]] std::string host_header(std::string_view name) const {
    const bool default_port = port == (tls ? "443" : "80");
    return std::string(name) + (default_port ? "" : ":" + port);
  }

  /// Parses "http[s]://host[:port][/]"; configuration_error for anything else (a path, user info,
  /// a query: S3 endpoints have none).
  static endpoint parse(std::string_view url) {
    endpoint e;
    auto bad = [&](const char* why) {
      return configuration_error("f2d2n: the S3 endpoint URL '" + std::string(url) + "' " + why);
    };
    if (url.starts_with("https://")) {
      url.remove_prefix(8);
    } else if (url.starts_with("http://")) {
      e.tls = false;
      url.remove_prefix(7);
    } else {
      throw bad("must start with http:// or https://");
    }
    if (url.ends_with('/')) url.remove_suffix(1);
    if (url.empty()) throw bad("names no host");
    if (url.find_first_of("/?#@ ") != std::string_view::npos)
      throw bad("must be scheme://host[:port] only (no path, query or user)");
    std::string_view host = url, port;
    if (url.front() == '[') {  // [IPv6]:port
      const auto close = url.find(']');
      if (close == std::string_view::npos) throw bad("has an unclosed '['");
      host = url.substr(1, close - 1);
      if (close + 1 < url.size()) {
        if (url[close + 1] != ':') throw bad("has text after ']'");
        port = url.substr(close + 2);
      }
    } else if (const auto colon = url.rfind(':'); colon != std::string_view::npos) {
      host = url.substr(0, colon);
      port = url.substr(colon + 1);
    }
    if (host.empty()) throw bad("names no host");
    if (!port.empty()) {
      unsigned value = 0;
      for (char c : port) {
        if (c < '0' || c > '9') throw bad("has a port that is not a number");
        value = value * 10 + static_cast<unsigned>(c - '0');
        if (value > 65535) throw bad("has a port above 65535");
      }
      if (value == 0) throw bad("has port 0");
    }
    e.host = std::string(host);
    e.port = port.empty() ? (e.tls ? "443" : "80") : std::string(port);
    return e;
  }
};

/// Path-style (http://host/bucket/key) or virtual-hosted (http://bucket.host/key) requests.
/// automatic: virtual-hosted on AWS's own endpoints for names that are valid host labels, path
/// style on any endpoint given by AWS_ENDPOINT_URL (MinIO, Ceph RGW, s3rver expect it).
enum class addressing { automatic, path, virtual_hosted };

/// How a client reaches its store. from_environment() fills it as the AWS tools do.
struct options {
  std::string endpoint_url;  ///< empty: AWS, https://s3.<region>.amazonaws.com
  std::string region = "us-east-1";
  credentials creds;
  addressing style = addressing::automatic;
  std::string ca_file;  ///< https: extra trusted certificates (PEM); the system's are trusted too

  /// Every call ends by this deadline, retries included (s3_error otherwise).
  std::chrono::milliseconds call_timeout{std::chrono::minutes(10)};
  /// A connection that moves no byte for this long is given up (and the attempt retried).
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(30)};
  /// Attempts per request: retried on connection loss, timeouts, HTTP 5xx, 429 and S3's throttling
  /// codes, after exponential backoff with full jitter (a uniform wait in [0, min(cap, base 2^n))).
  unsigned max_attempts = 6;
  std::chrono::milliseconds backoff_base{100}, backoff_cap{std::chrono::seconds(5)};

  /// Objects larger than this are uploaded in parts (S3's multipart upload), part_size bytes each
  /// (S3 wants at least 5 MiB but for the last), parallel_parts of them in flight at once.
  std::uint64_t multipart_threshold = std::uint64_t{64} << 20;
  std::uint64_t part_size = std::uint64_t{16} << 20;
  unsigned parallel_parts = 4;
  /// Sign the body's SHA-256 (x-amz-content-sha256): the store rejects a body changed on the
  /// way. Off: UNSIGNED-PAYLOAD (saves hashing a body, about a fifth of a PUT's time here). Unset:
  /// signed over http, unsigned over https (TLS already protects the body), as botocore does.
  std::optional<bool> sign_payload;

  /// The endpoint as parsed (AWS's regional endpoint when none is set).
  [[nodiscard]] endpoint resolved_endpoint() const {
    return endpoint::parse(endpoint_url.empty() ? "https://s3." + region + ".amazonaws.com" : endpoint_url);
  }

  /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN; AWS_REGION (else
  /// AWS_DEFAULT_REGION, else us-east-1); AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL; AWS_CA_BUNDLE;
  /// and f2d2n's own F2D2N_S3_ADDRESSING (path | virtual | auto) and F2D2N_S3_TIMEOUT (seconds per
  /// call). configuration_error names a variable that is missing or wrong, never its value.
  static options from_environment() {
    auto get = [](const char* name) -> std::optional<std::string> {
      const char* v = std::getenv(name);
      if (!v || !*v) return std::nullopt;
      return std::string(v);
    };
    options o;
    const auto id = get("AWS_ACCESS_KEY_ID");
    const auto key = get("AWS_SECRET_ACCESS_KEY");
    if (!id || !key)
      throw configuration_error(
          "f2d2n: an s3:// location needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
    o.creds.access_key_id = *id;
    o.creds.secret_access_key = secret(*key);
    if (auto t = get("AWS_SESSION_TOKEN")) o.creds.session_token = secret(*t);
    if (auto r = get("AWS_REGION")) o.region = *r;
    else if (auto d = get("AWS_DEFAULT_REGION")) o.region = *d;
    if (auto e = get("AWS_ENDPOINT_URL_S3")) o.endpoint_url = *e;
    else if (auto u = get("AWS_ENDPOINT_URL")) o.endpoint_url = *u;
    if (auto ca = get("AWS_CA_BUNDLE")) o.ca_file = *ca;
    if (auto a = get("F2D2N_S3_ADDRESSING")) {
      if (*a == "path") o.style = addressing::path;
      else if (*a == "virtual") o.style = addressing::virtual_hosted;
      else if (*a == "auto") o.style = addressing::automatic;
      else throw configuration_error("f2d2n: F2D2N_S3_ADDRESSING must be path, virtual or auto");
    }
    if (auto t = get("F2D2N_S3_TIMEOUT")) {
      char* end = nullptr;
      const double s = std::strtod(t->c_str(), &end);
      if (end == t->c_str() || *end != '\0' || !(s > 0) || s > 1e6)
        throw configuration_error("f2d2n: F2D2N_S3_TIMEOUT must be a number of seconds above 0");
      o.call_timeout = std::chrono::milliseconds(static_cast<std::int64_t>(s * 1000));
    }
    (void)o.resolved_endpoint();  // a bad URL fails here, with the variable's value (not a secret)
    return o;
  }
};

/// A bucket name that can be a host label (virtual-hosted addressing): 3 to 63 lowercase letters,
/// digits and '-', starting and ending with a letter or digit (no dots: a certificate for
/// *.s3.amazonaws.com covers one label).
[[nodiscard]] inline bool host_label(std::string_view bucket) noexcept {
  if (bucket.size() < 3 || bucket.size() > 63 || bucket.front() == '-' || bucket.back() == '-') return false;
  for (char c : bucket)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  return true;
}

}  // namespace f2d2n::s3
