// f2d2n/store/s3/detail/connection.hpp: one HTTP/1.1 connection to an object store, plain TCP or
// TLS (OpenSSL), and one request-response exchange on it. Boost.Beast serialises the request and
// parses the response over a small synchronous stream of f2d2n's own: a non-blocking socket and
// poll(), so that every wait is cut to the idle timeout and the call's deadline. (Beast's
// asynchronous operations with Asio's coroutines did the same at 40-70 s of compile time per
// translation unit; these synchronous ones take a few.)
#pragma once

#include <f2d2n/store/s3/options.hpp>

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace f2d2n::s3::detail {

namespace beast = boost::beast;
namespace http = boost::beast::http;
using clock = std::chrono::steady_clock;
using error_code = boost::system::error_code;

/// An attempt that ended without a usable response (refused, reset, timed out, cut short): the
/// caller retries it. `what` says what happened, for the error after the last attempt.
class transient_failure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
/// A failure that retrying cannot mend (a certificate that does not verify).
class permanent_failure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Where an exchange's response body goes: into `out` (exactly its size is expected: a GET of a
/// range), or into a string of at most `limit` bytes (XML answers, error documents).
struct body_sink {
  std::span<std::byte> out;
  bool into_out = false;
  std::size_t limit = std::size_t{16} << 20;
};

/// What came back.
struct response {
  unsigned status = 0;
  std::string body;              ///< the body, when it went into a string
  std::uint64_t body_bytes = 0;  ///< bytes of the body received
  std::optional<std::uint64_t> content_length;
  std::string etag;
  bool keep_alive = false;
};

/// A request ready for the wire: the target (encoded path and query), every header (the
/// signature's included) and the body as views of the caller's memory.
struct wire_request {
  http::verb method = http::verb::get;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;
  std::vector<std::span<const std::byte>> body;
  std::uint64_t body_size = 0;
};

/// OpenSSL's words for the last error on this thread's queue.
[[nodiscard]] inline std::string openssl_reason() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "no reason given";
  const char* r = ERR_reason_error_string(e);
  return r ? std::string(r) : "OpenSSL error " + std::to_string(e);
}

/// The client side of TLS: the system's trusted certificates (and `ca_file`), peers verified.
class tls_context {
 public:
  explicit tls_context(const std::string& ca_file) : ctx_(SSL_CTX_new(TLS_client_method())) {
    if (!ctx_) throw configuration_error("f2d2n: cannot create a TLS context: " + openssl_reason());
    SSL_CTX_set_min_proto_version(ctx_.get(), TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER, nullptr);
    if (SSL_CTX_set_default_verify_paths(ctx_.get()) != 1)
      throw configuration_error("f2d2n: cannot load the system's trusted certificates: " + openssl_reason());
    if (!ca_file.empty() && SSL_CTX_load_verify_locations(ctx_.get(), ca_file.c_str(), nullptr) != 1)
      throw configuration_error("f2d2n: cannot load the certificates of AWS_CA_BUNDLE (" + ca_file +
                                "): " + openssl_reason());
  }
  [[nodiscard]] SSL_CTX* get() const noexcept { return ctx_.get(); }

 private:
  struct free_ctx {
    void operator()(SSL_CTX* c) const noexcept { SSL_CTX_free(c); }
  };
  std::unique_ptr<SSL_CTX, free_ctx> ctx_;
};

/// A socket (and its TLS session) as a synchronous stream for Beast: read_some / write_some that
/// wait with poll() until the current limit (the idle timeout, cut to the call's deadline) and
/// then fail with beast::error::timeout.
class socket_stream {
 public:
  socket_stream() = default;
  socket_stream(const socket_stream&) = delete;
  socket_stream& operator=(const socket_stream&) = delete;
  ~socket_stream() { close(); }

  [[nodiscard]] bool is_open() const noexcept { return fd_ >= 0; }
  void close() noexcept {
    if (ssl_) SSL_free(ssl_);
    ssl_ = nullptr;
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  /// Every wait from now on ends at `until` at the latest.
  void limit(clock::time_point until) noexcept { until_ = until; }

  /// Connects to host:port (every address it resolves to, in turn) and, with `tls`, shakes hands,
  /// verifying the certificate for `host`.
  void open(const std::string& host, const std::string& port, const tls_context* tls) {
    close();
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    // Name resolution waits as long as the system's resolver allows (resolv.conf: timeout and
    // attempts); numeric addresses and /etc/hosts names answer at once.
    if (const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0)
      throw transient_failure("cannot resolve " + host + ": " + ::gai_strerror(rc));
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> list(found, &::freeaddrinfo);
    std::string last = "no address";
    for (const addrinfo* a = found; a; a = a->ai_next) {
      const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) {
        last = std::strerror(errno);
        continue;
      }
      if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
        last = std::strerror(errno);
        ::close(fd);
        continue;
      }
      fd_ = fd;
      if (!wait(POLLOUT)) {
        close();
        throw transient_failure("connecting to " + host + ":" + port + " timed out");
      }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        last = std::strerror(err);
        close();
        continue;
      }
      const int one = 1;
      ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      break;
    }
    if (fd_ < 0) throw transient_failure("cannot connect to " + host + ":" + port + ": " + last);
    if (tls) handshake(host, *tls);
  }

  // Beast's SyncReadStream and SyncWriteStream.
  template <class Buffers>
  std::size_t read_some(const Buffers& buffers, error_code& ec) {
    const auto b = first_of<boost::asio::mutable_buffer>(buffers);
    return transfer(const_cast<void*>(static_cast<const void*>(b.data())), b.size(), ec, true);
  }
  template <class Buffers>
  std::size_t write_some(const Buffers& buffers, error_code& ec) {
    const auto b = first_of<boost::asio::const_buffer>(buffers);
    return transfer(const_cast<void*>(b.data()), b.size(), ec, false);
  }
  template <class Buffers>
  std::size_t read_some(const Buffers& buffers) {
    error_code ec;
    const auto n = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }
  template <class Buffers>
  std::size_t write_some(const Buffers& buffers) {
    error_code ec;
    const auto n = write_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }

  /// Writes all of `bytes` (or fails with ec).
  void write_all(std::span<const std::byte> bytes, error_code& ec) {
    while (!bytes.empty() && !ec) {
      const auto n = write_some(boost::asio::const_buffer(bytes.data(), bytes.size()), ec);
      bytes = bytes.subspan(n);
    }
  }

  /// What the last TLS failure was (for messages).
  [[nodiscard]] const std::string& tls_problem() const noexcept { return tls_problem_; }

 private:
  template <class Buffer, class Buffers>
  static Buffer first_of(const Buffers& buffers) {
    for (auto it = boost::asio::buffer_sequence_begin(buffers); it != boost::asio::buffer_sequence_end(buffers); ++it)
      if (Buffer b(*it); b.size() > 0) return b;
    return Buffer();
  }

  /// Waits until the socket is ready for `events` or the limit passes (false).
  bool wait(short events) {
    for (;;) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(until_ - clock::now()).count();
      if (left <= 0) return false;
      pollfd p{fd_, events, 0};
      const int rc = ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left, 1 << 30)));
      if (rc > 0) return true;
      if (rc < 0 && errno != EINTR) return true;  // the next call reports the socket's error
    }
  }

  std::size_t transfer(void* data, std::size_t size, error_code& ec, bool reading) {
    ec = {};
    if (size == 0) return 0;
    if (fd_ < 0) {
      ec = boost::asio::error::not_connected;
      return 0;
    }
    for (;;) {
      short want = reading ? POLLIN : POLLOUT;
      if (ssl_) {
        std::size_t n = 0;
        ERR_clear_error();
        const int rc = reading ? SSL_read_ex(ssl_, data, size, &n) : SSL_write_ex(ssl_, data, size, &n);
        if (rc == 1) return n;
        const int e = SSL_get_error(ssl_, rc);
        if (e == SSL_ERROR_WANT_READ) want = POLLIN;
        else if (e == SSL_ERROR_WANT_WRITE) want = POLLOUT;
        else if (e == SSL_ERROR_ZERO_RETURN) {
          ec = boost::asio::error::eof;
          return 0;
        } else {
          tls_problem_ = e == SSL_ERROR_SYSCALL ? "the connection broke" : openssl_reason();
          ec = e == SSL_ERROR_SYSCALL ? error_code(boost::asio::error::connection_reset)
                                      : error_code(boost::asio::error::fault);
          return 0;
        }
      } else {
        const ssize_t n = reading ? ::recv(fd_, data, size, MSG_DONTWAIT)
                                  : ::send(fd_, data, size, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) return static_cast<std::size_t>(n);
        if (n == 0 && reading) {
          ec = boost::asio::error::eof;
          return 0;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          ec = error_code(errno, boost::system::system_category());
          return 0;
        }
      }
      if (!wait(want)) {
        ec = beast::error::timeout;
        return 0;
      }
    }
  }

  void handshake(const std::string& host, const tls_context& tls) {
    ssl_ = SSL_new(tls.get());
    if (!ssl_ || SSL_set_fd(ssl_, fd_) != 1) throw permanent_failure("TLS: cannot start a session: " + openssl_reason());
    SSL_set_tlsext_host_name(ssl_, host.c_str());  // SNI
    if (SSL_set1_host(ssl_, host.c_str()) != 1) throw permanent_failure("TLS: cannot verify for " + host);
    for (;;) {
      ERR_clear_error();
      const int rc = SSL_connect(ssl_);
      if (rc == 1) return;
      const int e = SSL_get_error(ssl_, rc);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        if (!wait(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT)) {
          close();
          throw transient_failure("the TLS handshake with " + host + " timed out");
        }
        continue;
      }
      const long verify = SSL_get_verify_result(ssl_);
      const std::string why = verify != X509_V_OK ? std::string("the certificate does not verify: ") +
                                                        X509_verify_cert_error_string(verify)
                                                  : openssl_reason();
      close();
      if (verify != X509_V_OK) throw permanent_failure("TLS handshake with " + host + " failed: " + why);
      throw transient_failure("TLS handshake with " + host + " failed: " + why);
    }
  }

  int fd_ = -1;
  SSL* ssl_ = nullptr;
  clock::time_point until_ = clock::time_point::max();
  std::string tls_problem_;
};

/// One connection, opened on first use and kept open while the store keeps it alive.
class connection {
 public:
  explicit connection(const tls_context* tls) : tls_(tls) {}

  [[nodiscard]] bool is_open() const noexcept { return open_ && stream_.is_open(); }
  void close() noexcept {
    open_ = false;
    stream_.close();
    buffer_.clear();
  }

  /// Opens the connection to host:port.
  void open(const std::string& host, const std::string& port, clock::time_point deadline,
            std::chrono::milliseconds idle) {
    close();
    arm(deadline, idle);
    stream_.open(host, port, tls_);
    // Reads of up to 256 KiB: Beast reads as much as its buffer has room for, and a fresh
    // flat_buffer has 512 bytes (a 128 MiB body took 262,144 reads and 1.8 s of CPU).
    buffer_.reserve(std::size_t{1} << 18);
    open_ = true;
  }

  /// Sends `req` and reads the response (its body into `sink`). transient_failure when the
  /// exchange breaks off (the connection is then closed).
  response exchange(const wire_request& req, body_sink& sink, clock::time_point deadline,
                    std::chrono::milliseconds idle) {
    http::request<http::empty_body> head{req.method, req.target, 11};
    for (const auto& [name, value] : req.headers) head.set(name, value);
    if (req.body_size > 0 || req.method == http::verb::put || req.method == http::verb::post)
      head.content_length(req.body_size);
    head.keep_alive(true);
    http::request_serializer<http::empty_body> serializer{head};
    error_code ec;
    arm(deadline, idle);
    http::write_header(stream_, serializer, ec);
    // The body in slices of at most 1 MiB: each slice restarts the idle timeout.
    constexpr std::size_t slice = std::size_t{1} << 20;
    for (const auto piece : req.body)
      for (std::size_t at = 0; at < piece.size() && !ec; at += slice) {
        arm(deadline, idle);
        stream_.write_all(piece.subspan(at, std::min(slice, piece.size() - at)), ec);
      }
    if (ec) fail("sending the request", ec);

    http::response_parser<http::buffer_body> parser;
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    if (req.method == http::verb::head) parser.skip(true);  // a HEAD's Content-Length announces no body
    arm(deadline, idle);
    http::read_header(stream_, buffer_, parser, ec);
    if (ec) fail("reading the response", ec);
    response r;
    r.status = parser.get().result_int();
    if (const auto n = parser.content_length()) r.content_length = *n;
    if (const auto e = parser.get().find(http::field::etag); e != parser.get().end()) r.etag = std::string(e->value());
    const bool into_out = sink.into_out && r.status / 100 == 2;
    if (into_out && r.content_length && *r.content_length != sink.out.size()) {
      // A shorter range than asked (the object ends first): the caller reports it; the body is
      // left unread, so the connection closes.
      close();
      r.body_bytes = *r.content_length;
      return r;
    }
    const std::size_t limit = into_out ? sink.out.size() : sink.limit;
    std::size_t got = 0;
    char scratch[65536];
    while (!parser.is_done()) {
      auto& body = parser.get().body();
      if (into_out) {
        if (got >= limit) fail("reading the response", boost::asio::error::message_size);
        body.data = sink.out.data() + got;
        body.size = limit - got;
      } else {
        body.data = scratch;
        body.size = sizeof scratch;
      }
      const std::size_t offered = body.size;
      arm(deadline, idle);
      http::read(stream_, buffer_, parser, ec);
      if (ec == http::error::need_buffer) ec = {};
      if (ec) fail("reading the response", ec);
      const std::size_t n = offered - parser.get().body().size;
      if (!into_out) {
        if (r.body.size() + n > limit) fail("reading the response", boost::asio::error::message_size);
        r.body.append(scratch, n);
      }
      got += n;
    }
    r.body_bytes = got;
    r.keep_alive = parser.get().keep_alive();
    if (!r.keep_alive) close();
    return r;
  }

 private:
  /// The next wait's limit: the idle timeout, cut to the deadline; none left: the call is over.
  void arm(clock::time_point deadline, std::chrono::milliseconds idle) {
    const auto now = clock::now();
    if (now >= deadline) {
      close();
      throw transient_failure("the call's deadline passed");
    }
    stream_.limit(std::min(deadline, now + idle));
  }

  [[noreturn]] void fail(const char* doing, const error_code& ec) {
    std::string why = ec == beast::error::timeout ? "no byte moved before the idle timeout or the deadline"
                      : ec == boost::asio::error::fault ? "TLS: " + stream_.tls_problem()
                                                        : ec.message();
    const bool stale = ec == boost::asio::error::eof || ec == http::error::end_of_stream ||
                       ec == boost::asio::error::connection_reset || ec == boost::asio::error::broken_pipe;
    close();
    if (stale) throw stale_connection(std::string(doing) + ": " + why);
    throw transient_failure(std::string(doing) + ": " + why);
  }

 public:
  /// The store closed the connection (or reset it): on a kept-alive connection, most often one the
  /// store dropped while it was idle.
  class stale_connection : public transient_failure {
   public:
    using transient_failure::transient_failure;
  };

 private:
  const tls_context* tls_ = nullptr;
  socket_stream stream_;
  beast::flat_buffer buffer_;
  bool open_ = false;
};

}  // namespace f2d2n::s3::detail
