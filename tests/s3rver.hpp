// A test helper: s3rver (the npm registry's fake S3 server, installed by scripts/s3rver.sh into the
// build directory) as a child process on a loopback port, with its data in a temporary directory.
// It can be killed, stopped (SIGSTOP) and restarted on the same port and data, and always goes away
// with the helper.
#pragma once

#include "temp_dir.hpp"

#include <f2d2n/store/s3/options.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

namespace f2d2n::testing {

class s3rver_process {
 public:
  static constexpr const char* bucket = "f2d2n";

  s3rver_process() : port_(free_port()) { start(); }
  /// Serving https with this key and certificate (PEM files).
  s3rver_process(std::string key, std::string cert) : port_(free_port()), key_(std::move(key)), cert_(std::move(cert)) {
    start();
  }
  ~s3rver_process() { kill_now(); }
  s3rver_process(const s3rver_process&) = delete;
  s3rver_process& operator=(const s3rver_process&) = delete;

  [[nodiscard]] unsigned port() const noexcept { return port_; }
  [[nodiscard]] std::string endpoint() const {
    return (key_.empty() ? "http://127.0.0.1:" : "https://localhost:") + std::to_string(port_);
  }
  [[nodiscard]] const std::filesystem::path& data() const { return data_.path(); }

  /// Client options for this server: s3rver's fixed credentials, path-style, short deadlines and
  /// backoff (tests wait for them), parts of 5 MiB above 8 MiB.
  [[nodiscard]] s3::options options() const {
    s3::options o;
    o.endpoint_url = endpoint();
    o.creds.access_key_id = "S3RVER";
    o.creds.secret_access_key = s3::secret("S3RVER");
    o.style = s3::addressing::path;
    o.call_timeout = std::chrono::seconds(20);
    o.idle_timeout = std::chrono::seconds(5);
    o.backoff_base = std::chrono::milliseconds(50);
    o.backoff_cap = std::chrono::milliseconds(400);
    o.max_attempts = 8;
    o.part_size = std::uint64_t{5} << 20;
    o.multipart_threshold = std::uint64_t{8} << 20;
    return o;
  }

  /// Starts the server (its data kept) and waits until it accepts connections (30 s at most).
  void start() {
    const std::string entry = std::string(F2D2N_S3RVER_DIR) + "/node_modules/s3rver/bin/s3rver.js";
    if (!std::filesystem::exists(entry))
      throw std::runtime_error("s3rver is not installed at " + entry + " (scripts/s3rver.sh install " +
                               F2D2N_S3RVER_DIR + ")");
    const std::string port = std::to_string(port_), dir = data_.str();
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      // Dies with the thread that started it (a test that crashes leaves no server behind: start
      // servers from the test's own thread), and prints nothing on stdout.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (const int null = ::open("/dev/null", O_WRONLY); null >= 0) ::dup2(null, 1);
      // --openssl-legacy-provider: s3rver makes ListObjectsV2's continuation tokens with DES.
      if (key_.empty())
        ::execlp("node", "node", "--openssl-legacy-provider", entry.c_str(), "--directory", dir.c_str(), "--address",
                 "127.0.0.1", "--port", port.c_str(), "--silent", "--configure-bucket", bucket,
                 static_cast<char*>(nullptr));
      else
        ::execlp("node", "node", "--openssl-legacy-provider", entry.c_str(), "--directory", dir.c_str(), "--address",
                 "127.0.0.1", "--port", port.c_str(), "--silent", "--configure-bucket", bucket, "--key",
                 key_.c_str(), "--cert", cert_.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!accepts()) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("s3rver exited at start (status " + std::to_string(status) + ")");
      }
      if (std::chrono::steady_clock::now() > until) {
        kill_now();
        throw std::runtime_error("s3rver did not accept connections within 30 s");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  /// Kills the server at once (SIGKILL: no clean shutdown, as a crash).
  void kill_now() noexcept {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  /// Freezes / thaws it: connections are accepted by the kernel, nothing answers.
  void stop() noexcept {
    if (pid_ > 0) ::kill(pid_, SIGSTOP);
  }
  void resume() noexcept {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
  }

 private:
  static unsigned free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t n = sizeof a;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n) != 0) {
      if (fd >= 0) ::close(fd);
      throw std::runtime_error("no free loopback port");
    }
    ::close(fd);
    return ntohs(a.sin_port);
  }

  [[nodiscard]] bool accepts() const {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(port_));
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
  }

  temp_dir data_{"f2d2n-s3rver"};
  unsigned port_ = 0;
  std::string key_, cert_;
  pid_t pid_ = -1;
};

}  // namespace f2d2n::testing
