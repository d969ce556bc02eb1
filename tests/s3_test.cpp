// The S3 client and the object-store backend against a real S3 server: s3rver (tests/s3rver.hpp),
// started per test case on a loopback port, killed, frozen and restarted by the tests. s3rver does
// not check signatures (tests/s3_sigv4_test.cpp checks them against botocore and AWS's examples).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "plan_suite.hpp"
#include "s3rver.hpp"
#include "temp_dir.hpp"

#include <f2d2n/data/dataset.hpp>
#include <f2d2n/store/s3_backend.hpp>
#include <f2d2n/store/safetensors.hpp>
#include <f2d2n/train/checkpoint.hpp>
#include <f2d2n/transport/local.hpp>

#include <doctest/doctest.h>
#include <zlib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

namespace nn = f2d2n;
using namespace f2d2n::testing;

namespace {

std::vector<std::byte> random_bytes(std::size_t n, std::uint64_t seed) {
  std::vector<std::byte> v(n);
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<std::byte>(x >> 24);
  }
  return v;
}

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span<const char>(s)); }

/// Runs f and returns the s3_error it throws (FAIL when it throws none or another kind).
template <class F>
nn::s3::s3_error s3_failure(F&& f) {
  try {
    f();
  } catch (const nn::s3::s3_error& e) {
    return e;
  } catch (const std::exception& e) {
    FAIL("expected an s3_error, got: " << e.what());
  }
  FAIL("expected an s3_error, nothing was thrown");
  return nn::s3::s3_error("", "", 0, "", nn::storage_problem::io, "");
}

/// A store that answers from a script: for each request (read up to its headers' end and its
/// Content-Length body), the next scripted answer, raw bytes; then it closes the connection. It
/// counts the requests. One thread, loopback, bounded by the test's own deadlines.
class scripted_store {
 public:
  explicit scripted_store(std::vector<std::string> answers) : answers_(std::move(answers)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t n = sizeof a;
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &n) == 0);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~scripted_store() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  scripted_store(const scripted_store&) = delete;
  scripted_store& operator=(const scripted_store&) = delete;

  [[nodiscard]] nn::s3::options options() const {
    nn::s3::options o;
    o.endpoint_url = "http://127.0.0.1:" + std::to_string(port_);
    o.creds.access_key_id = "AKIDEXAMPLE";
    o.creds.secret_access_key = nn::s3::secret("not-a-real-secret");
    o.style = nn::s3::addressing::path;
    o.call_timeout = std::chrono::seconds(10);
    o.idle_timeout = std::chrono::milliseconds(700);
    o.backoff_base = std::chrono::milliseconds(10);
    o.backoff_cap = std::chrono::milliseconds(50);
    o.max_attempts = 4;
    return o;
  }
  [[nodiscard]] int requests() const { return requests_; }

 private:
  void serve() {
    for (;;) {
      const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) return;
      std::string got;
      char buf[65536];
      std::size_t need = std::string::npos;
      while (need == std::string::npos || got.size() < need) {
        timeval tv{2, 0};
        ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        const ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        got.append(buf, static_cast<std::size_t>(n));
        if (const auto end = got.find("\r\n\r\n"); end != std::string::npos && need == std::string::npos) {
          std::size_t length = 0;
          if (const auto at = got.find("Content-Length: "); at != std::string::npos && at < end)
            length = std::stoul(got.substr(at + 16));
          need = end + 4 + length;
        }
      }
      const std::size_t k = static_cast<std::size_t>(requests_++);
      const std::string& answer = answers_[std::min(k, answers_.size() - 1)];
      ::send(c, answer.data(), answer.size(), MSG_NOSIGNAL);
      ::close(c);
    }
  }

  std::vector<std::string> answers_;
  int fd_ = -1;
  unsigned port_ = 0;
  std::atomic<int> requests_{0};
  std::thread thread_;
};

std::string answer(int status, const std::string& reason, const std::string& body = "",
                   const std::string& extra = "") {
  return "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n" + extra + "\r\n" + body;
}

}  // namespace

TEST_CASE("S3: a store's 5xx and throttling answers are retried; refusals are not; broken answers are typed errors") {
  const std::string ok = answer(200, "OK", "", "ETag: \"x\"\r\n");
  {  // 503 SlowDown, 500 InternalError, then the PUT goes through.
    scripted_store store({answer(503, "Slow Down", "<Error><Code>SlowDown</Code></Error>"),
                          answer(500, "Internal Error", "<Error><Code>InternalError</Code></Error>"), ok});
    nn::s3::client c(store.options());
    c.put("b", "k", bytes_of("payload"));
    CHECK(store.requests() == 3);
  }
  {  // 403: refused at once, with S3's code and message; the secret in no text.
    scripted_store store({answer(403, "Forbidden",
                                 "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>")});
    nn::s3::client c(store.options());
    const auto e = s3_failure([&] { c.put("b", "k", bytes_of("payload")); });
    CHECK(e.http_status() == 403);
    CHECK(e.code() == "AccessDenied");
    CHECK(std::string(e.what()).find("Access Denied") != std::string::npos);
    CHECK(std::string(e.what()).find("not-a-real-secret") == std::string::npos);
    CHECK(store.requests() == 1);
  }
  {  // Not HTTP at all; a body cut short; silence: retried, then a typed error naming the last failure.
    for (const std::string& broken : {std::string("SSH-2.0-OpenSSH_9.2\r\n\r\n"),
                                      std::string("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"),
                                      std::string("")}) {
      scripted_store store({broken});
      nn::s3::client c(store.options());
      std::vector<std::byte> out(100);
      const auto started = std::chrono::steady_clock::now();
      const auto e = s3_failure([&] { c.get("b", "k", 0, out); });
      CHECK(e.problem() == nn::storage_problem::io);
      CHECK(std::string(e.what()).find("after 4 attempt") != std::string::npos);
      CHECK(store.requests() == 4);
      CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(8));
    }
  }
  {  // A range answered with more bytes than asked.
    scripted_store store({answer(206, "Partial Content", std::string(10, 'x'))});
    nn::s3::client c(store.options());
    std::vector<std::byte> out(4);
    const auto e = s3_failure([&] { c.get("b", "k", 0, out); });
    CHECK(e.problem() == nn::storage_problem::bad_format);
  }
}

TEST_CASE("S3: objects go up and come back whole, by ranges, listed, removed") {
  s3rver_process server;
  nn::s3::client c(server.options());
  const auto data = random_bytes(3 << 20, 1);
  const std::span<const std::byte> halves[] = {std::span(data).first(1000), std::span(data).subspan(1000)};
  // Keys as users name them: spaces, '+', '=', unicode, several levels.
  const std::vector<std::string> keys = {"a/b/plain.bin", "a/b/with space+plus=eq.bin", "a/b/caf\xc3\xa9/\xe2\x82\xac.bin",
                                         "a/c.bin"};
  for (const auto& k : keys) c.put(server.bucket, k, nn::byte_pieces(halves));
  for (const auto& k : keys) {
    CAPTURE(k);
    REQUIRE(c.head(server.bucket, k) == data.size());
    std::vector<std::byte> back(data.size());
    c.get(server.bucket, k, 0, back);
    CHECK(back == data);
    std::vector<std::byte> middle(12345);
    c.get(server.bucket, k, 777777, middle);
    CHECK(std::equal(middle.begin(), middle.end(), data.begin() + 777777));
    std::vector<std::byte> last(10);
    c.get(server.bucket, k, data.size() - 10, last);
    CHECK(std::equal(last.begin(), last.end(), data.end() - 10));
  }
  const auto listed = c.list(server.bucket, "a/b/");
  REQUIRE(listed.size() == 3);
  std::vector<std::string> names;
  for (const auto& o : listed) {
    names.push_back(o.key);
    CHECK(o.size == data.size());
  }
  CHECK(names == std::vector<std::string>{keys[2], keys[0], keys[1]});  // sorted by their bytes
  CHECK(c.list(server.bucket, "nothing-here/").empty());

  // Replaced whole; an empty object; removed (twice: the second does nothing).
  c.put(server.bucket, keys[0], bytes_of("short"));
  CHECK(c.head(server.bucket, keys[0]) == 5);
  c.put(server.bucket, "empty", std::span<const std::byte>{});
  CHECK(c.head(server.bucket, "empty") == 0);
  c.remove(server.bucket, keys[0]);
  c.remove(server.bucket, keys[0]);
  CHECK_FALSE(c.head(server.bucket, keys[0]).has_value());
}

TEST_CASE("S3: missing keys, missing buckets and reads past the end are typed errors") {
  s3rver_process server;
  nn::s3::client c(server.options());
  c.put(server.bucket, "ten", bytes_of("0123456789"));
  std::vector<std::byte> out(4);

  auto e = s3_failure([&] { c.get(server.bucket, "no/such/key", 0, out); });
  CHECK(e.problem() == nn::storage_problem::missing);
  CHECK(e.http_status() == 404);
  CHECK(e.code() == "NoSuchKey");
  CHECK(e.bucket() == server.bucket);
  CHECK(e.key() == "no/such/key");
  CHECK(std::string(e.what()).find("s3://f2d2n/no/such/key") != std::string::npos);

  e = s3_failure([&] { c.get("no-such-bucket", "k", 0, out); });
  CHECK(e.problem() == nn::storage_problem::missing);
  CHECK(e.code() == "NoSuchBucket");

  // A range that starts past the end (416) and one that ends past it (a shorter answer).
  e = s3_failure([&] { c.get(server.bucket, "ten", 20, out); });
  CHECK(e.problem() == nn::storage_problem::truncated);
  e = s3_failure([&] { c.get(server.bucket, "ten", 8, out); });
  CHECK(e.problem() == nn::storage_problem::truncated);
  // The connection that read the short answer is not reused in a bad state.
  c.get(server.bucket, "ten", 6, out);
  CHECK(out == std::vector<std::byte>{std::byte{'6'}, std::byte{'7'}, std::byte{'8'}, std::byte{'9'}});
  CHECK_FALSE(c.head(server.bucket, "nope").has_value());
  // The secret appears in no error text.
  CHECK(std::string(e.what()).find("S3RVER") == std::string::npos);
}

TEST_CASE("S3: a multipart upload sends parallel parts and reads back equal") {
  s3rver_process server;
  nn::s3::client c(server.options());
  const auto data = random_bytes((23 << 20) + 12345, 2);  // 5 parts of 5 MiB, the last shorter
  std::atomic<int> parts{0};
  std::size_t announced = 0;
  c.on_part = [&](std::size_t, std::size_t total) {
    ++parts;
    announced = total;
  };
  // Three pieces whose borders fall inside parts.
  const std::span<const std::byte> pieces[] = {std::span(data).first(7 << 20), std::span(data).subspan(7 << 20, 100),
                                               std::span(data).subspan((7 << 20) + 100)};
  c.put(server.bucket, "big/object.bin", nn::byte_pieces(pieces));
  CHECK(parts == 5);
  CHECK(announced == 5);
  REQUIRE(c.head(server.bucket, "big/object.bin") == data.size());
  std::vector<std::byte> back(data.size());
  c.get(server.bucket, "big/object.bin", 0, back);
  CHECK(back == data);
  // Across a part's border.
  std::vector<std::byte> border(64);
  c.get(server.bucket, "big/object.bin", (5 << 20) - 32, border);
  CHECK(std::equal(border.begin(), border.end(), data.begin() + (5 << 20) - 32));
}

TEST_CASE("S3: listings page through continuation tokens") {
  s3rver_process server;
  nn::s3::client c(server.options());
  c.list_page_size_ = 2;
  std::vector<std::string> keys;
  for (int i = 0; i < 7; ++i) keys.push_back("p/key-" + std::to_string(i) + (i % 2 ? " odd" : ""));
  for (const auto& k : keys) c.put(server.bucket, k, bytes_of(k));
  c.put(server.bucket, "q/other", bytes_of("x"));
  const auto listed = c.list(server.bucket, "p/");
  std::vector<std::string> names;
  for (const auto& o : listed) names.push_back(o.key);
  std::sort(keys.begin(), keys.end());
  CHECK(names == keys);
}

TEST_CASE("S3: a server killed during a multipart upload leaves a typed error and no object") {
  s3rver_process server;
  auto o = server.options();
  o.max_attempts = 2;
  o.call_timeout = std::chrono::seconds(5);
  nn::s3::client c(o);
  const auto data = random_bytes(20 << 20, 3);
  c.on_part = [&](std::size_t part, std::size_t) {
    if (part == 1) server.kill_now();
  };
  const auto started = std::chrono::steady_clock::now();
  const auto e = s3_failure([&] { c.put(server.bucket, "cut/object.bin", data); });
  CHECK(e.problem() == nn::storage_problem::io);
  CHECK(e.key() == "cut/object.bin");
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(15));
  server.start();
  c.on_part = nullptr;
  CHECK_FALSE(c.head(server.bucket, "cut/object.bin").has_value());
  CHECK(c.list(server.bucket, "cut/").empty());
}

TEST_CASE("S3: a restarted server: the retries succeed; a frozen one: the deadline ends the call") {
  s3rver_process server;
  nn::s3::client c(server.options());
  c.put(server.bucket, "before", bytes_of("kept"));
  server.kill_now();
  // Sent while the server is down: connection refused, backoff, refused... then it is back (the
  // deadline, 20 s, bounds the attempts). The server restarts from this thread: it dies with it.
  auto o = server.options();
  o.max_attempts = 1000;
  nn::s3::client patient(o);
  std::exception_ptr failed;
  std::thread putter([&] {
    try {
      patient.put(server.bucket, "after", bytes_of("arrived"));
    } catch (...) {
      failed = std::current_exception();
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  server.start();
  putter.join();
  CHECK_FALSE(failed);
  CHECK(c.head(server.bucket, "after") == 7);
  CHECK(c.head(server.bucket, "before") == 4);

  o = server.options();
  o.call_timeout = std::chrono::milliseconds(1500);
  o.idle_timeout = std::chrono::milliseconds(500);
  nn::s3::client frozen(o);
  server.stop();
  const auto started = std::chrono::steady_clock::now();
  const auto e = s3_failure([&] { (void)frozen.head(server.bucket, "before"); });
  const auto took = std::chrono::steady_clock::now() - started;
  server.resume();
  CHECK(e.problem() == nn::storage_problem::io);
  CHECK(took >= std::chrono::milliseconds(1400));
  CHECK(took < std::chrono::seconds(5));
  CHECK(frozen.head(server.bucket, "before") == 4);  // thawed: answers again
}

TEST_CASE("S3: s3_backend is a storage backend: checkpoints of a DP2 plan go up, load serially, and a "
          "checkpoint cut before its manifest is never loaded") {
  s3rver_process server;
  auto shared = std::make_shared<nn::s3::client>(server.options());
  nn::s3_backend store("s3://f2d2n/runs/one", shared);
  CHECK(store.location() == "s3://f2d2n/runs/one");
  const auto data = plan_data<float>();
  nn::fit_options fit;
  fit.epochs = 2;
  fit.max_steps_per_epoch = 5;
  fit.batch_size = 12;
  fit.seed = 3;
  using plan = nn::distribute<plan_mlp, nn::data_parallel<2>>;
  nn::local_cluster cluster(2, plan::fingerprint);
  std::vector<std::string> errors(2);
  cluster.run([&](nn::local_transport& t) {
    try {
      nn::distributed_network<plan, nn::local_transport> net(t, 11);
      nn::trainer tr(net, nn::sgd{.learning_rate = 0.05, .momentum = 0.9});
      nn::checkpointer ck(tr, store, {.keep = 0});
      tr.add(ck);
      tr.fit(data, fit);
    } catch (const std::exception& e) {
      errors[t.rank()] = e.what();
    }
  });
  for (const auto& e : errors) CHECK_MESSAGE(e.empty(), e);
  const auto names = nn::list_checkpoints(store);
  REQUIRE(names.size() == 2);
  nn::network<plan_mlp> serial(11);
  nn::trainer st(serial, nn::sgd{.learning_rate = 0.05, .momentum = 0.9});
  st.fit(data, fit);
  nn::network<plan_mlp> loaded(99);
  nn::load_parameters(loaded, store, names.back());
  double diff = 0;
  for (std::size_t k = 0; k < loaded.parameters().size(); ++k)
    diff = std::max(diff, static_cast<double>(std::abs(loaded.parameters()[k] - serial.parameters()[k])));
  CHECK(diff < 1e-5);
  {  // Resumed from the store (the newest checkpoint) for a third epoch: serial training's weights.
    nn::network<plan_mlp> resumed(99);
    nn::trainer rt(resumed, nn::sgd{.learning_rate = 0.05, .momentum = 0.9});
    nn::checkpointer ck(rt, store, {.every_epoch = false, .keep = 0});
    rt.add(ck);
    REQUIRE(ck.resume());
    auto three = fit;
    three.epochs = 3;
    rt.fit(data, three);
    nn::network<plan_mlp> reference(11);
    nn::trainer rf(reference, nn::sgd{.learning_rate = 0.05, .momentum = 0.9});
    rf.fit(data, three);
    double d3 = 0;
    for (std::size_t k = 0; k < resumed.parameters().size(); ++k)
      d3 = std::max(d3, static_cast<double>(std::abs(resumed.parameters()[k] - reference.parameters()[k])));
    CHECK(d3 < 1e-5);
  }
  // The model exported into the store as safetensors, read back whole.
  nn::save_safetensors(loaded, store, "model.safetensors");
  nn::network<plan_mlp> imported(1);
  nn::load_safetensors(imported, store.get("model.safetensors"), "s3://f2d2n/runs/one/model.safetensors");
  CHECK(std::equal(imported.parameters().begin(), imported.parameters().end(), loaded.parameters().begin()));

  // The server dies after the units wrote their data, before unit 0 commits the manifest.
  nn::s3_backend cut("s3://f2d2n/runs/cut", shared);
  nn::network<plan_mlp> net(5);
  nn::trainer tr(net, nn::sgd{.learning_rate = 0.05});
  auto o = server.options();
  o.max_attempts = 2;
  o.call_timeout = std::chrono::seconds(3);
  nn::s3_backend impatient("s3://f2d2n/runs/cut", o);
  CHECK_THROWS_AS(nn::save_checkpoint(tr, impatient, "step-000000000001", 0,
                                      [&](std::string_view phase) {
                                        if (phase == "parts agreed") server.kill_now();
                                      }),
                  nn::storage_error);
  server.start();
  CHECK(nn::list_checkpoints(cut).empty());
  CHECK_FALSE(nn::latest_checkpoint(cut).has_value());
}

TEST_CASE("S3: load_mnist reads IDX files from the store: plain ones by ranges, gzipped ones whole") {
  s3rver_process server;
  nn::s3::client c(server.options());
  // A small MNIST-format folder: 50 images of 4 x 3, their labels; plain for train, gzip for t10k.
  auto idx = [](std::vector<std::uint32_t> dims, std::uint64_t seed) {
    std::string f{'\0', '\0', '\x08', static_cast<char>(dims.size())};
    std::size_t n = 1;
    for (auto d : dims) {
      for (int s = 24; s >= 0; s -= 8) f += static_cast<char>((d >> s) & 0xff);
      n *= d;
    }
    for (std::size_t i = 0; i < n; ++i) f += static_cast<char>(dims.size() == 1 ? (i * 7 + seed) % 10 : (i * 31 + seed) % 256);
    return f;
  };
  auto gzip = [](const std::string& plain) {
    temp_dir d;
    const auto path = d.file("x.gz");
    gzFile g = gzopen(path.c_str(), "wb");
    gzwrite(g, plain.data(), static_cast<unsigned>(plain.size()));
    gzclose(g);
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const auto images = idx({50, 4, 3}, 1), labels = idx({50}, 2);
  c.put(server.bucket, "data/fm/train-images-idx3-ubyte", bytes_of(images));
  c.put(server.bucket, "data/fm/train-labels-idx1-ubyte", bytes_of(labels));
  c.put(server.bucket, "data/fm/t10k-images-idx3-ubyte.gz", bytes_of(gzip(images)));
  c.put(server.bucket, "data/fm/t10k-labels-idx1-ubyte.gz", bytes_of(gzip(labels)));
  // The same files on disk: the reference.
  temp_dir local;
  for (const auto& [name, body] : std::vector<std::pair<std::string, std::string>>{
           {"train-images-idx3-ubyte", images}, {"train-labels-idx1-ubyte", labels}}) {
    std::ofstream(local.file(name), std::ios::binary) << body;
  }
  const auto whole = nn::load_mnist<float>(local.str(), nn::split::train);

  nn::s3_backend store("s3://f2d2n/data", std::make_shared<nn::s3::client>(server.options()));
  const auto train = nn::load_mnist<float>(store, "fm", nn::split::train);
  CHECK(train.size() == 50);
  CHECK(train.samples == whole.samples);
  CHECK(train.labels == whole.labels);
  CHECK(train.sample_shape == whole.sample_shape);
  const auto test = nn::load_mnist<float>(store, "fm/", nn::split::test);
  CHECK(test.samples == whole.samples);
  CHECK(test.labels == whole.labels);
  // A range: only those samples (from a plain file, only their bytes are read).
  const auto part = nn::load_mnist<float>(store, "fm", nn::split::train, {}, {10, 15});
  REQUIRE(part.size() == 15);
  CHECK(part.samples == whole.samples.middleRows(10, 15));
  CHECK(std::equal(part.labels.begin(), part.labels.end(), whole.labels.begin() + 10));
  const auto gz_part = nn::load_mnist<float>(store, "fm", nn::split::test, {}, {45, 100});
  CHECK(gz_part.size() == 5);

  // Through "s3://" and the environment, as the examples call it.
  ::setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
  ::setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
  ::setenv("AWS_ENDPOINT_URL", server.endpoint().c_str(), 1);
  const auto via_url = nn::load_mnist<float>("s3://f2d2n/data/fm", nn::split::train, {}, {0, 20});
  CHECK(via_url.samples == whole.samples.topRows(20));
  ::unsetenv("AWS_ACCESS_KEY_ID");
  CHECK_THROWS_AS((void)nn::load_mnist<float>("s3://f2d2n/data/fm", nn::split::train), nn::configuration_error);
  ::unsetenv("AWS_SECRET_ACCESS_KEY");
  ::unsetenv("AWS_ENDPOINT_URL");

  // Missing, truncated and forged files: typed errors naming the object.
  CHECK_THROWS_AS((void)nn::load_mnist<float>(store, "nothing", nn::split::train), nn::data_error);
  c.put(server.bucket, "data/cut/train-images-idx3-ubyte", bytes_of(images.substr(0, images.size() - 5)));
  c.put(server.bucket, "data/cut/train-labels-idx1-ubyte", bytes_of(labels));
  try {
    (void)nn::load_mnist<float>(store, "cut", nn::split::train);
    FAIL("a truncated file loaded");
  } catch (const nn::data_error& e) {
    CHECK(e.problem() == nn::data_problem::truncated);
    CHECK(std::string(e.what()).find("s3://f2d2n/data/cut/train-images-idx3-ubyte") != std::string::npos);
  }
  std::string forged = images;
  forged[6] = '\x7f';  // the count's second byte: 50 + 2^23... images
  c.put(server.bucket, "data/forged/train-images-idx3-ubyte", bytes_of(forged));
  c.put(server.bucket, "data/forged/train-labels-idx1-ubyte", bytes_of(labels));
  CHECK_THROWS_AS((void)nn::load_mnist<float>(store, "forged", nn::split::train), nn::data_error);
}

TEST_CASE("S3: over https the certificate is verified for the host; a stranger's is refused at once") {
  temp_dir certs;
  // A self-signed certificate for "localhost" (its own CA), and one for another name.
  const std::string make = "cd " + certs.str() +
                           " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 "
                           "-subj /CN=localhost -addext subjectAltName=DNS:localhost -keyout server.key -out "
                           "server.pem >log 2>&1 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
                           "-nodes -days 2 -subj /CN=elsewhere -addext subjectAltName=DNS:elsewhere -keyout other.key "
                           "-out other.pem >>log 2>&1";
  REQUIRE_MESSAGE(std::system(make.c_str()) == 0, "openssl could not make the test certificates");
  s3rver_process server(certs.file("server.key"), certs.file("server.pem"));
  auto o = server.options();
  o.ca_file = certs.file("server.pem");
  nn::s3::client c(o);
  const auto data = random_bytes(1 << 20, 5);
  c.put(server.bucket, "secure/object", data);
  std::vector<std::byte> back(data.size());
  c.get(server.bucket, "secure/object", 0, back);
  CHECK(back == data);

  // Trusting only another certificate: refused without retries (a retry cannot mend it).
  o.ca_file = certs.file("other.pem");
  o.max_attempts = 5;
  o.backoff_base = std::chrono::milliseconds(1000);
  nn::s3::client stranger(o);
  const auto started = std::chrono::steady_clock::now();
  auto e = s3_failure([&] { (void)stranger.head(server.bucket, "secure/object"); });
  CHECK(std::string(e.what()).find("certificate") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::milliseconds(900));
  // The right certificate under another name: the host name does not match.
  o = server.options();
  o.ca_file = certs.file("server.pem");
  o.endpoint_url = "https://127.0.0.1:" + std::to_string(server.port());
  nn::s3::client wrong_name(o);
  e = s3_failure([&] { (void)wrong_name.head(server.bucket, "secure/object"); });
  CHECK(std::string(e.what()).find("certificate") != std::string::npos);
}

TEST_CASE("S3: locations and endpoints parse, or say what is wrong") {
  CHECK(nn::s3_location::parse("s3://bucket").prefix.empty());
  CHECK(nn::s3_location::parse("s3://bucket/a/b").prefix == "a/b/");
  CHECK(nn::s3_location::parse("s3://bucket/a/b/").url() == "s3://bucket/a/b");
  CHECK_THROWS_AS((void)nn::s3_location::parse("s3:///x"), nn::configuration_error);
  CHECK_THROWS_AS((void)nn::s3_location::parse("s3://Bad_Bucket!/x"), nn::configuration_error);
  CHECK_THROWS_AS((void)nn::s3_location::parse("/tmp/x"), nn::configuration_error);
  const auto e = nn::s3::endpoint::parse("http://127.0.0.1:4569/");
  CHECK_FALSE(e.tls);
  CHECK(e.host == "127.0.0.1");
  CHECK(e.port == "4569");
  CHECK(e.host_header("127.0.0.1") == "127.0.0.1:4569");
  const auto aws = nn::s3::endpoint::parse("https://s3.eu-west-3.amazonaws.com");
  CHECK(aws.port == "443");
  CHECK(aws.host_header("b.s3.eu-west-3.amazonaws.com") == "b.s3.eu-west-3.amazonaws.com");
  const auto v6 = nn::s3::endpoint::parse("http://[::1]:9000");
  CHECK(v6.host == "::1");
  CHECK(v6.port == "9000");
  for (const char* bad : {"ftp://x", "http://", "http://host/path", "http://host:99999", "http://host:x", "http://u@h"})
    CHECK_THROWS_AS((void)nn::s3::endpoint::parse(bad), nn::configuration_error);
  // A hostile store's answers: nested a million deep (the parser recurses), malformed, out of the
  // prefix, truncated without a token: typed errors.
  std::string deep;
  for (int i = 0; i < 1000000; ++i) deep += "<a>";
  for (const std::string& bad :
       {deep, std::string("<ListBucketResult><Contents><Key>p/x</Key>"), std::string("not xml at all"),
        std::string("<ListBucketResult><Contents><Key>q/outside</Key><Size>1</Size></Contents></ListBucketResult>"),
        std::string("<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>"),
        std::string("<ListBucketResult><Contents><Key>p/x</Key></Contents></ListBucketResult>")}) {
    try {
      (void)nn::s3::detail::parse_list_page(bad, "b", "p/");
      FAIL("a bad listing was accepted: " << bad.substr(0, 80));
    } catch (const nn::s3::s3_error& refused) {
      CHECK(refused.problem() == nn::storage_problem::bad_format);
    }
  }
  const auto page = nn::s3::detail::parse_list_page(
      "<ListBucketResult><Contents><Key>p/a &amp; b</Key><Size>7</Size></Contents></ListBucketResult>", "b", "p/");
  REQUIRE(page.objects.size() == 1);
  CHECK(page.objects[0].key == "p/a & b");
  CHECK(page.objects[0].size == 7);
  CHECK(nn::s3::host_label("my-bucket"));
  CHECK_FALSE(nn::s3::host_label("my.bucket"));
  CHECK_FALSE(nn::s3::host_label("ab"));
}
