// f2d2n_s3: f2d2n's S3 client on the command line (credentials, endpoint and region from the
// environment, as the AWS tools read them; docs/storage.md). Files go up and down through memory
// maps: an object of any size costs its parts in flight, not its size, in memory.
//
//   f2d2n_s3 mb s3://bucket                      create the bucket (nothing when it exists)
//   f2d2n_s3 put FILE s3://bucket/key            upload (multipart above --multipart-mib)
//   f2d2n_s3 put-dir DIR s3://bucket/prefix      upload every file under DIR (keys: prefix/relative path)
//   f2d2n_s3 get s3://bucket/key FILE            download (ranged GETs of --part-mib, --parallel at once)
//   f2d2n_s3 ls s3://bucket/prefix               list keys and sizes
//   f2d2n_s3 rm s3://bucket/key                  remove
#include <f2d2n/store/s3_backend.hpp>

#include <boost/program_options.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <exception>
#include <mutex>
#include <thread>
#include <filesystem>
#include <iostream>
#include <span>
#include <string>
#include <vector>

namespace nn = f2d2n;
namespace po = boost::program_options;

namespace {

/// A file mapped into memory (read-only, or read-write for a download of `size` bytes).
class mapped_file {
 public:
  mapped_file(const std::string& path, bool write, std::uint64_t size = 0) : path_(path) {
    fd_ = ::open(path.c_str(), write ? O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC : O_RDONLY | O_CLOEXEC, 0644);
    if (fd_ < 0) throw nn::storage_error(path, nn::storage_problem::io, "cannot open the file");
    struct stat st {};
    if (write) {
      if (::ftruncate(fd_, static_cast<off_t>(size)) != 0)
        throw nn::storage_error(path, nn::storage_problem::io, "cannot size the file");
    } else if (::fstat(fd_, &st) != 0) {
      throw nn::storage_error(path, nn::storage_problem::io, "cannot stat the file");
    } else {
      size = static_cast<std::uint64_t>(st.st_size);
    }
    size_ = static_cast<std::size_t>(size);
    if (size_ > 0) {
      // Populated at once: a page faulted in later costs ~20 us on a virtual machine.
      data_ = ::mmap(nullptr, size_, write ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED | MAP_POPULATE, fd_, 0);
      if (data_ == MAP_FAILED) throw nn::storage_error(path, nn::storage_problem::io, "cannot map the file");
      ::madvise(data_, size_, MADV_SEQUENTIAL);
    }
  }
  ~mapped_file() {
    if (data_ && data_ != MAP_FAILED) ::munmap(data_, size_);
    if (fd_ >= 0) ::close(fd_);
  }
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;

  [[nodiscard]] std::span<std::byte> bytes() noexcept {
    return size_ == 0 ? std::span<std::byte>{} : std::span<std::byte>(static_cast<std::byte*>(data_), size_);
  }
  void sync() {
    if (size_ > 0 && ::msync(data_, size_, MS_SYNC) != 0)
      throw nn::storage_error(path_, nn::storage_problem::io, "cannot write the file");
  }

 private:
  std::string path_;
  int fd_ = -1;
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

/// Downloads an object of `size` bytes into `path`: ranged GETs of `chunk` bytes, `parallel` at
/// once, each into a buffer of its thread's and written with pwrite (memory: parallel x chunk).
void download(nn::s3::client& c, const std::string& bucket, const std::string& key, std::uint64_t size,
              const std::string& path, std::uint64_t chunk, unsigned parallel) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw nn::storage_error(path, nn::storage_problem::io, "cannot create the file");
  const std::uint64_t chunks = std::max<std::uint64_t>(1, (size + chunk - 1) / chunk);
  std::atomic<std::uint64_t> next{0};
  std::mutex m;
  std::exception_ptr failed;
  auto work = [&] {
    try {
      std::vector<std::byte> buffer(static_cast<std::size_t>(std::min(chunk, size)));
      for (std::uint64_t i = next++; i < chunks && !failed; i = next++) {
        const std::uint64_t at = i * chunk, n = std::min(chunk, size - at);
        const std::span<std::byte> part(buffer.data(), static_cast<std::size_t>(n));
        c.get(bucket, key, at, part);
        for (std::size_t done = 0; done < part.size();) {
          const ssize_t w = ::pwrite(fd, part.data() + done, part.size() - done, static_cast<off_t>(at + done));
          if (w < 0 && errno == EINTR) continue;
          if (w <= 0) throw nn::storage_error(path, nn::storage_problem::io, "cannot write the file");
          done += static_cast<std::size_t>(w);
        }
      }
    } catch (...) {
      const std::lock_guard lock(m);
      if (!failed) failed = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  for (unsigned t = 1; t < std::min<std::uint64_t>(parallel, chunks); ++t) threads.emplace_back(work);
  work();
  for (auto& t : threads) t.join();
  const bool closed = ::close(fd) == 0;
  if (failed) std::rethrow_exception(failed);
  if (!closed) throw nn::storage_error(path, nn::storage_problem::io, "cannot write the file");
}

std::pair<nn::s3_location, std::string> object_of(const std::string& url) {
  auto l = nn::s3_location::parse(url);
  if (l.prefix.empty()) throw nn::configuration_error("f2d2n_s3: '" + url + "' names a bucket, not an object");
  std::string key = l.prefix.substr(0, l.prefix.size() - 1);
  if (url.ends_with('/')) throw nn::configuration_error("f2d2n_s3: '" + url + "' names a folder, not an object");
  return {l, key};
}

double mb_per_s(std::uint64_t bytes, std::chrono::steady_clock::duration d) {
  return static_cast<double>(bytes) / 1e6 / std::chrono::duration<double>(d).count();
}

constexpr const char* usage =
    "usage: f2d2n_s3 [options] COMMAND ARGS\n"
    "  mb s3://bucket                   create the bucket (nothing happens when it exists)\n"
    "  put FILE s3://bucket/key         upload a file (multipart above --multipart-mib)\n"
    "  put-dir DIR s3://bucket/prefix   upload every file under DIR, keyed by its path below DIR\n"
    "  get s3://bucket/key FILE         download an object\n"
    "  ls s3://bucket[/prefix]          list keys and sizes\n"
    "  rm s3://bucket/key               remove an object\n"
    "Credentials, endpoint and region come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,\n"
    "AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL (see docs/storage.md).\n";

}  // namespace

int main(int argc, char** argv) try {
  std::vector<std::string> args;
  std::uint64_t part_mib = 16, multipart_mib = 64;
  unsigned parallel = 4;
  bool quiet = false, unsigned_payload = false;
  po::options_description opts("options");
  opts.add_options()("help,h", "show this help")("part-mib", po::value(&part_mib)->default_value(16),
                                                  "multipart: MiB per part (S3 wants at least 5)")(
      "multipart-mib", po::value(&multipart_mib)->default_value(64), "objects above this many MiB go up in parts")(
      "parallel", po::value(&parallel)->default_value(4), "parts in flight at once")(
      "quiet,q", po::bool_switch(&quiet), "print nothing but listings and errors")(
      "unsigned-payload", po::bool_switch(&unsigned_payload),
      "do not sign the body's SHA-256 (x-amz-content-sha256: UNSIGNED-PAYLOAD); by default it is signed over "
      "http, not over https")(
      "args", po::value(&args), "command and its arguments");
  po::positional_options_description pos;
  pos.add("args", -1);
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(opts).positional(pos).run(), vm);
  po::notify(vm);
  if (vm.count("help") || args.empty()) {
    std::cout << usage << opts << "\n";
    return args.empty() && !vm.count("help") ? 2 : 0;
  }
  auto o = nn::s3::options::from_environment();
  o.part_size = part_mib << 20;
  o.multipart_threshold = multipart_mib << 20;
  o.parallel_parts = parallel;
  if (unsigned_payload) o.sign_payload = false;
  nn::s3::client c(o);
  const std::string& cmd = args[0];
  auto need = [&](std::size_t n) {
    if (args.size() != n + 1)
      throw nn::configuration_error("f2d2n_s3: " + cmd + " takes " + std::to_string(n) + " argument(s)\n" + usage);
  };
  const auto start = std::chrono::steady_clock::now();
  if (cmd == "mb") {
    need(1);
    c.create_bucket(nn::s3_location::parse(args[1]).bucket);
  } else if (cmd == "put") {
    need(2);
    const auto [where, key] = object_of(args[2]);
    mapped_file f(args[1], false);
    c.put(where.bucket, key, std::span<const std::byte>(f.bytes()));
    if (!quiet)
      std::printf("put %s (%zu bytes, %.0f MB/s)\n", args[2].c_str(), f.bytes().size(),
                  mb_per_s(f.bytes().size(), std::chrono::steady_clock::now() - start));
  } else if (cmd == "put-dir") {
    need(2);
    const auto where = nn::s3_location::parse(args[2]);
    std::uint64_t total = 0;
    std::size_t files = 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(args[1])) {
      if (!e.is_regular_file()) continue;
      const auto rel = std::filesystem::relative(e.path(), args[1]).generic_string();
      mapped_file f(e.path().string(), false);
      c.put(where.bucket, where.prefix + rel, std::span<const std::byte>(f.bytes()));
      total += f.bytes().size();
      ++files;
      if (!quiet) std::printf("put s3://%s/%s%s\n", where.bucket.c_str(), where.prefix.c_str(), rel.c_str());
    }
    if (!quiet) std::printf("%zu files, %llu bytes\n", files, static_cast<unsigned long long>(total));
  } else if (cmd == "get") {
    need(2);
    const auto [where, key] = object_of(args[1]);
    const auto size = c.head(where.bucket, key);
    if (!size) throw nn::s3::s3_error(where.bucket, key, 404, "NoSuchKey", nn::storage_problem::missing, "no such object");
    download(c, where.bucket, key, *size, args[2], o.part_size, parallel);
    if (!quiet)
      std::printf("got %s (%llu bytes, %.0f MB/s)\n", args[1].c_str(), static_cast<unsigned long long>(*size),
                  mb_per_s(*size, std::chrono::steady_clock::now() - start));
  } else if (cmd == "ls") {
    need(1);
    const auto where = nn::s3_location::parse(args[1]);
    for (const auto& obj : c.list(where.bucket, where.prefix))
      std::printf("%12llu  s3://%s/%s\n", static_cast<unsigned long long>(obj.size), where.bucket.c_str(),
                  obj.key.c_str());
  } else if (cmd == "rm") {
    need(1);
    const auto [where, key] = object_of(args[1]);
    c.remove(where.bucket, key);
  } else {
    std::cerr << "f2d2n_s3: unknown command '" << cmd << "'\n" << usage;
    return 2;
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << e.what() << "\n";
  return 1;
}
