// f2d2n/transport/detail/tcp/tls.hpp: mutual TLS on a link's socket (OpenSSL): the context built
// from a unit's files, and one connection's session, which reads and writes like the socket's
// non-blocking read_some / write_some, so that the rest of the transport does not change.
//
// The session talks to the socket's descriptor itself (a small BIO of its own that uses send()
// with MSG_NOSIGNAL, so that a peer that is gone is an error, not SIGPIPE) rather than through
// Asio's ssl::stream, whose asynchronous operations would not fit the caller's-thread path (poll()
// on the descriptor). It is not thread-safe: a link uses it with its mutex held, as it uses the
// socket. See docs/decisions.md.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/transport/detail/tcp/asio.hpp>
#include <f2d2n/transport/tls_options.hpp>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

namespace f2d2n::detail::tcp_impl {

/// OpenSSL's words for a library error code (the reason, e.g. "bad record mac").
[[nodiscard]] inline std::string tls_reason(unsigned long e) {
  if (e == 0) return "no reason given";
  const char* r = ERR_reason_error_string(e);
  return r ? std::string(r) : "OpenSSL error " + std::to_string(e);
}

/// The error category of TLS failures on a link: the value is OpenSSL's packed error code.
class tls_category_impl final : public boost::system::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "f2d2n.tls"; }
  [[nodiscard]] std::string message(int ev) const override {
    return "TLS: " + tls_reason(static_cast<unsigned long>(static_cast<unsigned int>(ev)));
  }
};
[[nodiscard]] inline const boost::system::error_category& tls_category() {
  static const tls_category_impl c;
  return c;
}

/// The BIO between a session and its socket: non-blocking send() and recv() on the descriptor.
class socket_bio {
 public:
  static BIO* make(int fd) {
    BIO* b = BIO_new(method());
    if (!b) return nullptr;
    BIO_set_data(b, reinterpret_cast<void*>(static_cast<std::intptr_t>(fd)));
    BIO_set_init(b, 1);
    return b;
  }

 private:
  static int fd_of(BIO* b) { return static_cast<int>(reinterpret_cast<std::intptr_t>(BIO_get_data(b))); }
  static int write(BIO* b, const char* data, int n) {
    BIO_clear_retry_flags(b);
    const auto r = ::send(fd_of(b), data, static_cast<std::size_t>(n), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) BIO_set_retry_write(b);
    return static_cast<int>(r);
  }
  static int read(BIO* b, char* data, int n) {
    BIO_clear_retry_flags(b);
    const auto r = ::recv(fd_of(b), data, static_cast<std::size_t>(n), MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) BIO_set_retry_read(b);
    return static_cast<int>(r);
  }
  static long control(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }
  static const BIO_METHOD* method() {
    static BIO_METHOD* const m = [] {
      BIO_METHOD* x = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "f2d2n socket");
      BIO_meth_set_write(x, &socket_bio::write);
      BIO_meth_set_read(x, &socket_bio::read);
      BIO_meth_set_ctrl(x, &socket_bio::control);
      return x;
    }();
    return m;
  }
};

/// A unit's TLS context: TLS 1.3 only, its certificate and key, peers verified against the CA
/// (a peer without a certificate is refused), no session tickets (nothing is resumed).
class tls_context {
 public:
  explicit tls_context(const tls_options& o) : ctx_(SSL_CTX_new(TLS_method())) {
    if (!ctx_) fail("cannot create a TLS context", "");
    SSL_CTX* c = ctx_.get();
    ERR_clear_error();
    if (SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) != 1) fail("cannot require TLS 1.3", "");
    if (SSL_CTX_load_verify_locations(c, o.ca_file.c_str(), nullptr) != 1)
      fail("cannot read the cluster CA's certificate from", o.ca_file);
    if (SSL_CTX_use_certificate_chain_file(c, o.certificate_file.c_str()) != 1)
      fail("cannot read this unit's certificate from", o.certificate_file);
    if (SSL_CTX_use_PrivateKey_file(c, o.private_key_file.c_str(), SSL_FILETYPE_PEM) != 1)
      fail("cannot read this unit's private key from", o.private_key_file);
    if (SSL_CTX_check_private_key(c) != 1)
      fail("has a private key that does not match its certificate:", o.private_key_file);
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    // A write may end after a part of its bytes (the transport resumes where the kernel stopped),
    // and be retried from a copy of the frame (a blocking send() that was copied meanwhile).
    SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    // A peer that closes without close_notify is an end of stream: the frames' goodbye, not TLS,
    // says whether the peer meant it (a close in the middle of a frame is still reported as such).
    SSL_CTX_set_options(c, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
    // Reads take what the socket holds (several records per recv()) instead of a record header,
    // then its body: half the system calls. A read still stops only when no whole record is left.
    SSL_CTX_set_read_ahead(c, 1);
    SSL_CTX_set_default_read_buffer_len(c, std::size_t{256} << 10);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(c, 0);
  }
  [[nodiscard]] SSL_CTX* get() const noexcept { return ctx_.get(); }

 private:
  [[noreturn]] static void fail(const std::string& what, const std::string& file) {
    const std::string reason = tls_reason(ERR_peek_last_error());
    ERR_clear_error();
    throw configuration_error("f2d2n: TLS: this unit " + what + (file.empty() ? "" : " " + file) + " (" + reason + ")");
  }
  struct free_ctx {
    void operator()(SSL_CTX* c) const noexcept { SSL_CTX_free(c); }
  };
  std::unique_ptr<SSL_CTX, free_ctx> ctx_;
};

/// One connection's TLS, on the socket whose descriptor it was made with. Reads and writes answer
/// like a non-blocking socket's (asio::error::would_block when they cannot go on, eof at the
/// end of the stream) and record which readiness of the socket they wait for: TLS may need to
/// read in order to write, or the reverse.
class tls_session {
 public:
  using wait_type = socket_type::wait_type;

  tls_session(const tls_context& ctx, int fd, bool accepting) : ssl_(SSL_new(ctx.get())) {
    BIO* b = ssl_ ? socket_bio::make(fd) : nullptr;
    if (!b) throw std::bad_alloc();
    SSL_set_bio(ssl_.get(), b, b);
    if (accepting) SSL_set_accept_state(ssl_.get());
    else SSL_set_connect_state(ssl_.get());
  }

  /// One step of the TLS handshake: true when it is done, false when it waits for `waits`; throws
  /// nothing: a failure is put in `problem` (and true is returned).
  bool handshake(std::string& problem, wait_type& waits) {
    ERR_clear_error();
    const int r = SSL_do_handshake(ssl_.get());
    if (r == 1) return true;
    const int e = SSL_get_error(ssl_.get(), r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      waits = e == SSL_ERROR_WANT_READ ? socket_type::wait_read : socket_type::wait_write;
      return false;
    }
    const long verified = SSL_get_verify_result(ssl_.get());
    if (verified != X509_V_OK) problem = "the peer's certificate is refused: ";
    problem += verified != X509_V_OK                  ? X509_verify_cert_error_string(verified)
               : e == SSL_ERROR_SSL                   ? tls_reason(ERR_peek_last_error())
               : e == SSL_ERROR_SYSCALL && errno != 0 ? std::string(std::strerror(errno))
                                                      : std::string("the connection was closed");
    ERR_clear_error();
    return true;
  }

  /// Like socket.read_some: what TLS has decrypted for `b`, at least one byte, or an error.
  std::size_t read(const socket_type& s, asio::mutable_buffer b, error_code& ec) {
    if (!s.is_open()) return ec = asio::error::bad_descriptor, 0;
    ERR_clear_error();
    std::size_t n = 0;
    const int r = SSL_read_ex(ssl_.get(), b.data(), b.size(), &n);
    if (r == 1) return ec = {}, n;
    read_waits_ = answer(r, ec);
    return 0;
  }

  /// Like socket.peek: what TLS has decrypted, left for the next read.
  std::size_t peek(const socket_type& s, asio::mutable_buffer b, error_code& ec) {
    if (!s.is_open()) return ec = asio::error::bad_descriptor, 0;
    ERR_clear_error();
    std::size_t n = 0;
    const int r = SSL_peek_ex(ssl_.get(), b.data(), b.size(), &n);
    if (r == 1) return ec = {}, n;
    (void)answer(r, ec);
    return 0;
  }

  /// Like socket.write_some with two buffers: what TLS took of them (whole records), or an error.
  /// A short first buffer (a frame's header) goes out in one record with the start of the second.
  /// After would_block the next call must offer the same bytes again (it may offer more).
  std::size_t write(const socket_type& s, const std::array<asio::const_buffer, 2>& b, error_code& ec) {
    if (!s.is_open()) return ec = asio::error::bad_descriptor, 0;
    const void* data = b[0].data();
    std::size_t size = b[0].size();
    if (b[1].size() != 0 && size < staging_.size()) {
      const std::size_t more = std::min(b[1].size(), staging_.size() - size);
      std::memcpy(staging_.data(), b[0].data(), size);
      std::memcpy(staging_.data() + size, b[1].data(), more);
      data = staging_.data();
      size += more;
    } else if (size == 0) {
      data = b[1].data();
      size = b[1].size();
    }
    if (size == 0) return ec = {}, 0;
    ERR_clear_error();
    std::size_t n = 0;
    const int r = SSL_write_ex(ssl_.get(), data, size, &n);
    if (r == 1) {
      write_committed_ = false;
      return ec = {}, n;
    }
    write_waits_ = answer(r, ec);
    // Bytes of this write may be in a record that waits inside TLS: they belong to the stream now.
    if (would_block(ec)) write_committed_ = true;
    return 0;
  }

  /// The TLS handshake is done.
  [[nodiscard]] bool established() const noexcept { return SSL_is_init_finished(ssl_.get()) == 1; }

  /// The socket's readiness that reads or writes wait for after would_block.
  [[nodiscard]] wait_type read_waits() const noexcept { return read_waits_; }
  [[nodiscard]] wait_type write_waits() const noexcept { return write_waits_; }
  /// A write ended in would_block: the bytes it was offered are partly committed to the stream,
  /// so a send that gives up now leaves the stream out of sync even if it "sent" nothing.
  [[nodiscard]] bool write_committed() const noexcept { return write_committed_; }

 private:
  static bool would_block(const error_code& ec) { return ec == asio::error::would_block; }

  /// The error_code of a failed SSL call; the readiness it waits for when it is would_block.
  wait_type answer(int r, error_code& ec) {
    const int e = SSL_get_error(ssl_.get(), r);
    wait_type w = socket_type::wait_read;
    if (e == SSL_ERROR_WANT_READ) ec = asio::error::would_block;
    else if (e == SSL_ERROR_WANT_WRITE) ec = asio::error::would_block, w = socket_type::wait_write;
    else if (e == SSL_ERROR_ZERO_RETURN) ec = asio::error::eof;
    else if (e == SSL_ERROR_SYSCALL && errno != 0) ec = error_code(errno, boost::system::system_category());
    else if (e == SSL_ERROR_SYSCALL) ec = asio::error::eof;
    else ec = error_code(static_cast<int>(ERR_peek_last_error() & 0x7fffffffUL), tls_category());
    ERR_clear_error();
    return w;
  }

  struct free_ssl {
    void operator()(SSL* s) const noexcept { SSL_free(s); }
  };
  std::unique_ptr<SSL, free_ssl> ssl_;
  wait_type read_waits_ = socket_type::wait_read;
  wait_type write_waits_ = socket_type::wait_write;
  bool write_committed_ = false;
  std::array<std::byte, 16384> staging_{};  // one record's worth: a header and the start of its payload
};

}  // namespace f2d2n::detail::tcp_impl
