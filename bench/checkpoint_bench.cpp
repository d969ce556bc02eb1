// bench/checkpoint_bench.cpp: the checkpoint targets of the storage issue, each measured in one run
// next to the reference it is judged against (bench/checkpoint_speed.sh runs it with a dd
// cross-check). Not Google Benchmark: each figure is a ratio of two measurements taken in turns
// in the same run, and the program ends with a verdict per target.
//
//   1. Writing a checkpoint at >= 80 % of the disk's sequential write rate. For each model, in
//      turns (the order alternates), `--write-reps` times: save_checkpoint of a trainer (Adam,
//      trained for one step: parameters + its two state buffers, float32) into a fresh folder of a
//      directory_backend, and a raw write of the same bytes: open(O_CREAT | O_TRUNC), writev of
//      the same three buffers, fsync, close (what `dd conv=fsync` does) into a fresh file of the
//      same directory. Rate = bytes of the checkpoint's data file / wall time of the call (for the
//      checkpoint: checksums, data file, its part, the manifest's commit and the tidying, every
//      fsync included). Verdict: the median of the per-turn ratios checkpoint / raw.
//   2. Loading at >= 1 GB/s from the page cache: load_checkpoint (parameters + Adam state into the
//      trainer) and load_parameters (into the network) of a checkpoint just written (its files in
//      the page cache), best of `--load-reps`. Rate = bytes read from the data file / time:
//      the whole file for load_checkpoint, the parameters' third for load_parameters. Next to them,
//      for reference: a plain pread of the whole data file into a buffer allocated beforehand,
//      and the first touch of a new buffer of the checkpoint's size (what a loader that stages the
//      values in new memory pays per staging buffer: on some virtual machines far below 1 GB/s).
//   3. One checkpoint per epoch costing < 5 % of the demo's epoch: one epoch of the
//      examples/fashion_mnist MLP (784-256-128-10 ReLU, Adam lr 0.001, batch 64, seed 1) on the
//      60000 Fashion-MNIST training samples (trainer::fit's own epoch seconds, without validation),
//      then `--epoch-saves` checkpoints of that trainer as checkpointer writes them (keep 3, so
//      the later ones also remove the oldest). Verdict: the median save / the epoch, in percent.
//
// The models: "mlp", the example's MLP (235146 parameters, 2.82 MB with Adam state), and "big", a
// 4096-4096-4096-10 MLP (33603594 parameters, 403 MB with Adam state), where the fsyncs' latency
// does not dominate. MB = 10^6 bytes.
//
// Files go under a fresh folder inside --dir (default: bench/ of the build directory, beside this
// program), removed at the end; the disk rates are those of the file system holding it.
//
//   build/bench/checkpoint_bench [options]
//   bench/checkpoint_speed.sh [--dir DIR]       (builds it, adds dd's rate of the same sizes)
//
// Options:
//   --dir DIR          where the scratch folder goes (default: the program's directory)
//   --data-dir DIR     Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist)
//   --write-reps N     turns of target 1 for the mlp (default 9)
//   --big-write-reps N turns of target 1 for the big model (default 3)
//   --load-reps N      loads per kind and model, the best counts (default 5)
//   --epoch-saves N    checkpoints timed for target 3 (default 5)
//   --no-big           skip the 403 MB model
//   --no-epoch         skip target 3 (no data needed)
//   --dd-mbps M,B      dd's rates (MB/s) for the mlp and big sizes, measured by the caller on the
//                      same file system: added to the table (checkpoint / dd), for information
//                      (the verdict is against the raw write taken in turns; dd's rate for a few
//                      MB also holds the first touch of its new 1 MiB buffer and its start)
//   --sizes            print the two models' checkpoint data bytes ("mlp=N big=N") and stop

// GCC 12 warns falsely (-Wrestrict, GCC bug 105651) inside std::string's operator+ as inlined
// from f2d2n::to_string(const extents&) in model/summary.hpp.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

#include <f2d2n/core/random.hpp>
#include <f2d2n/data/dataset.hpp>
#include <f2d2n/model/network.hpp>
#include <f2d2n/store/backend.hpp>
#include <f2d2n/store/checkpoint.hpp>
#include <f2d2n/store/checksum.hpp>
#include <f2d2n/train/checkpoint.hpp>
#include <f2d2n/train/optimizers.hpp>
#include <f2d2n/train/trainer.hpp>

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace {

namespace nn = f2d2n;
namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

using mlp = nn::sequential<nn::input<28, 28>, nn::dense<256>, nn::relu, nn::dense<128>, nn::relu, nn::dense<10>,
                           nn::softmax_cross_entropy>;
using big = nn::sequential<nn::input<4096>, nn::dense<4096>, nn::relu, nn::dense<4096>, nn::relu, nn::dense<10>,
                           nn::softmax_cross_entropy>;
static_assert(nn::network<mlp>::parameter_count == 235146);

constexpr std::size_t adam_buffers = 3;  // parameters, first and second moments

template <class Net>
constexpr std::uint64_t checkpoint_bytes() {
  return static_cast<std::uint64_t>(nn::network<Net>::parameter_count) * sizeof(float) * adam_buffers;
}

struct settings {
  fs::path dir;
  std::string data_dir = nn::fashion_mnist_dir;
  int write_reps = 9;
  int big_write_reps = 3;
  int load_reps = 5;
  int epoch_saves = 5;
  bool big = true;
  bool epoch = true;
  double dd_mlp = 0, dd_big = 0;
  bool sizes = false;
};

double seconds_since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }
double mbps(std::uint64_t bytes, double seconds) { return static_cast<double>(bytes) / 1e6 / seconds; }

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what + ": " + std::strerror(errno)); }

/// The raw reference: open(O_CREAT | O_TRUNC), writev of the pieces, fsync, close; seconds.
double raw_write(const fs::path& file, std::span<const std::span<const std::byte>> pieces) {
  const auto start = clock_type::now();
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create " + file.string());
  std::vector<iovec> iov;
  for (auto p : pieces) iov.push_back({const_cast<std::byte*>(p.data()), p.size()});
  std::size_t first = 0;
  while (first < iov.size()) {
    const ssize_t n = ::writev(fd, iov.data() + first, static_cast<int>(iov.size() - first));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("cannot write " + file.string());
    }
    for (auto left = static_cast<std::size_t>(n); left > 0;) {
      const std::size_t step = std::min(left, iov[first].iov_len);
      iov[first].iov_base = static_cast<std::byte*>(iov[first].iov_base) + step;
      iov[first].iov_len -= step;
      left -= step;
      if (iov[first].iov_len == 0) ++first;
    }
  }
  if (::fsync(fd) != 0) fail("cannot fsync " + file.string());
  if (::close(fd) != 0) fail("cannot close " + file.string());
  return seconds_since(start);
}

/// Reads the whole file into `out` (its size); seconds.
double raw_read(const fs::path& file, std::vector<std::byte>& out) {
  const auto start = clock_type::now();
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open " + file.string());
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("cannot read " + file.string());
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return seconds_since(start);
}

/// The scratch folder, removed with everything in it when the program ends (even by an exception).
struct scratch {
  fs::path path;
  explicit scratch(const fs::path& parent) {
    path = parent / ("checkpoint_bench." + std::to_string(::getpid()));
    fs::create_directories(path);
  }
  ~scratch() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
};

/// A trainer whose Adam state exists: one step on `samples` synthetic samples.
template <class Net>
struct stepped {
  nn::network<Net> net{1};
  nn::trainer<nn::network<Net>, nn::adam> trainer{net, nn::adam{}};
  explicit stepped(std::size_t samples) {
    nn::dataset<float> d;
    d.samples = nn::matrix<float>(static_cast<Eigen::Index>(samples), static_cast<Eigen::Index>(Net::input_size));
    for (Eigen::Index k = 0; k < d.samples.size(); ++k)
      d.samples.data()[k] =
          static_cast<float>(nn::random_bits(42, 0, static_cast<std::uint64_t>(k)) >> 40) * 0x1.0p-24f;
    for (std::size_t i = 0; i < samples; ++i)
      d.labels.push_back(static_cast<std::int32_t>(nn::random_bits(42, 1, i) % 10));
    d.classes = 10;
    trainer.fit(d, {.epochs = 1, .batch_size = samples, .seed = 1});
  }
  /// The bytes a checkpoint's data file holds, as the pieces save_checkpoint writes.
  std::vector<std::span<const std::byte>> pieces() {
    std::vector<std::span<const std::byte>> p{std::as_bytes(std::span<const float>(net.parameters()))};
    auto& opt = trainer.optimizer_state();
    for (std::size_t k = 0; k < opt.state_names.size(); ++k) p.push_back(std::as_bytes(std::as_const(opt).state(k)));
    return p;
  }
};

/// One checkpoint write, with its phases (from checkpoint_hook), seconds.
struct write_time {
  double total = 0, data = 0, manifest = 0, tidy = 0;
};

template <class Trainer>
write_time timed_save(Trainer& t, nn::storage_backend& store, const std::string& name, std::size_t keep) {
  double data_written = 0, agreed = 0, committed = 0, pruned = 0;
  const auto start = clock_type::now();
  const nn::checkpoint_hook hook = [&](std::string_view phase) {
    const double s = seconds_since(start);
    if (phase == "data written") data_written = s;
    else if (phase == "parts agreed") agreed = s;
    else if (phase == "manifest committed") committed = s;
    else if (phase == "pruned") pruned = s;
  };
  nn::save_checkpoint(t, store, name, keep, hook);
  write_time w;
  w.total = seconds_since(start);
  w.data = data_written;
  w.manifest = committed - agreed;
  w.tidy = pruned - committed;
  return w;
}

/// A row of the final table.
struct verdict {
  int order;  // the target's number: rows print by target
  std::string target, figure, goal;
  std::optional<bool> met;  // nothing: for information
};
std::vector<verdict> table;

char buf[512];
template <class... A>
std::string text_of(const char* f, A... a) {
  std::snprintf(buf, sizeof buf, f, a...);
  return buf;
}

/// Targets 1 and 2 for one model.
template <class Net>
void write_and_load(const char* label, const fs::path& root, int write_reps, int load_reps, std::size_t step_samples,
                    double dd_mbps) {
  const auto build_start = clock_type::now();
  stepped<Net> s(step_samples);
  const auto pieces = s.pieces();
  std::uint64_t bytes = 0;
  for (auto p : pieces) bytes += p.size();
  std::printf("# %s: %zu parameters, %.2f MB per checkpoint (parameters + 2 Adam buffers, float32); set up in %.2f s\n",
              label, nn::network<Net>::parameter_count, static_cast<double>(bytes) / 1e6, seconds_since(build_start));

  const fs::path raw_dir = root / (std::string("raw-") + label);
  fs::create_directories(raw_dir);
  nn::directory_backend store(root / (std::string("store-") + label));
  std::vector<double> ratios, raw_rates, ckpt_rates, fsync_free;
  std::vector<write_time> writes;
  std::string last;
  for (int r = 0; r < write_reps; ++r) {
    const std::string name = nn::detail::checkpoint_name(static_cast<std::uint64_t>(r + 1));
    double raw = 0;
    write_time w;
    if (r % 2 == 0) {
      raw = raw_write(raw_dir / ("raw-" + std::to_string(r) + ".bin"), pieces);
      w = timed_save(s.trainer, store, name, 0);
    } else {
      w = timed_save(s.trainer, store, name, 0);
      raw = raw_write(raw_dir / ("raw-" + std::to_string(r) + ".bin"), pieces);
    }
    last = name;
    writes.push_back(w);
    raw_rates.push_back(mbps(bytes, raw));
    ckpt_rates.push_back(mbps(bytes, w.total));
    ratios.push_back(raw / w.total);
    std::printf(
        "write %-3s turn %d  raw %8.1f MB/s (%7.2f ms)  checkpoint %8.1f MB/s (%7.2f ms: data+part %.2f, "
        "manifest %.2f, tidy %.2f)  ratio %.3f\n",
        label, r, raw_rates.back(), raw * 1e3, ckpt_rates.back(), w.total * 1e3, w.data * 1e3, w.manifest * 1e3,
        w.tidy * 1e3, ratios.back());
  }
  // The checksums alone, over the same bytes (part of the data+part phase).
  double sum_best = 1e9;
  for (int r = 0; r < 3; ++r) {
    const auto start = clock_type::now();
    std::uint64_t x = 0;
    for (auto p : pieces) x ^= nn::checksum(p);
    sum_best = std::min(sum_best, seconds_since(start));
    if (x == 1) std::printf("#\n");  // keep x alive
  }
  const double ratio = median(ratios);
  std::printf(
      "write %-3s median  raw %8.1f MB/s  checkpoint %8.1f MB/s  ratio %.3f (best raw %.1f, best checkpoint "
      "%.1f MB/s); XXH3 of the bytes alone %.2f ms (%.0f MB/s)\n",
      label, median(raw_rates), median(ckpt_rates), ratio, *std::max_element(raw_rates.begin(), raw_rates.end()),
      *std::max_element(ckpt_rates.begin(), ckpt_rates.end()), sum_best * 1e3, mbps(bytes, sum_best));
  table.push_back(
      {1, text_of("1 write %s (%.1f MB) / raw write+fsync", label, static_cast<double>(bytes) / 1e6),
       text_of("%.0f / %.0f MB/s, turns' median %.0f %%", median(ckpt_rates), median(raw_rates), 100 * ratio),
       ">= 80 %", ratio >= 0.8});
  if (dd_mbps > 0)
    table.push_back(
        {1, text_of("  (write %s / dd conv=fsync, cross-check)", label),
         text_of("%.0f / %.0f MB/s = %.0f %%", median(ckpt_rates), dd_mbps, 100 * median(ckpt_rates) / dd_mbps), "",
         std::nullopt});

  // Target 2: loads of the newest checkpoint, its files in the page cache.
  const auto files = store.list(last + "/unit-");
  if (files.size() != 1) throw std::runtime_error("expected one data file in " + last);
  std::vector<std::byte> scratch_buffer(bytes);
  double pread_best = 1e9, ckpt_best = 1e9, params_best = 1e9;
  for (int r = 0; r < load_reps; ++r) {
    pread_best = std::min(pread_best, raw_read(store.root() / files[0], scratch_buffer));
    auto start = clock_type::now();
    nn::load_checkpoint(s.trainer, store, last);
    ckpt_best = std::min(ckpt_best, seconds_since(start));
    start = clock_type::now();
    nn::load_parameters(s.net, store, last);
    params_best = std::min(params_best, seconds_since(start));
  }
  const std::uint64_t param_bytes = bytes / adam_buffers;
  std::printf(
      "load  %-3s best of %d  pread %8.1f MB/s (%7.2f ms)  load_checkpoint %8.1f MB/s (%7.2f ms)  "
      "load_parameters %8.1f MB/s (%7.2f ms for %.2f MB)\n",
      label, load_reps, mbps(bytes, pread_best), pread_best * 1e3, mbps(bytes, ckpt_best), ckpt_best * 1e3,
      mbps(param_bytes, params_best), params_best * 1e3, static_cast<double>(param_bytes) / 1e6);
  table.push_back({2, text_of("2 load_checkpoint %s, warm", label), text_of("%.0f MB/s", mbps(bytes, ckpt_best)),
                   ">= 1000 MB/s", mbps(bytes, ckpt_best) >= 1000});
  table.push_back({2, text_of("2 load_parameters %s, warm", label),
                   text_of("%.0f MB/s", mbps(param_bytes, params_best)), ">= 1000 MB/s",
                   mbps(param_bytes, params_best) >= 1000});
  table.push_back({2, text_of("  (pread of the data file %s, warm)", label),
                   text_of("%.0f MB/s", mbps(bytes, pread_best)), "", std::nullopt});
  // What fresh memory costs here: the first touch of a new buffer of the checkpoint's size (a
  // loader that stages the values in new buffers pays it for each of them).
  double touch_best = 1e9;
  for (int r = 0; r < 2; ++r) {
    const auto start = clock_type::now();
    std::vector<float> fresh(bytes / sizeof(float), 1.0f);
    touch_best = std::min(touch_best, seconds_since(start));
    if (fresh[fresh.size() / 2] != 1.0f) std::printf("#\n");
  }
  std::printf("fresh %-3s best of 2  first touch of a new %.2f MB buffer %8.1f MB/s (%7.2f ms)\n", label,
              static_cast<double>(bytes) / 1e6, mbps(bytes, touch_best), touch_best * 1e3);
  table.push_back({2, text_of("  (first touch of %.0f MB of new memory)", static_cast<double>(bytes) / 1e6),
                   text_of("%.0f MB/s", mbps(bytes, touch_best)), "", std::nullopt});
}

/// Target 3.
void epoch_and_saves(const fs::path& root, const std::string& data_dir, int saves) {
  auto start = clock_type::now();
  const auto train = nn::load_mnist<float>(data_dir, nn::split::train);
  std::printf("# epoch: %zu Fashion-MNIST training samples loaded in %.2f s\n", train.size(), seconds_since(start));
  nn::network<mlp> net(1);
  nn::trainer t(net, nn::adam{.learning_rate = 0.001});
  const auto report = t.fit(train, {.epochs = 1, .batch_size = 64, .seed = 1});
  const double epoch = report.seconds;
  std::printf("epoch mlp  %.3f s (%zu steps of 64, %.0f samples/s, loss %.4f, accuracy %.2f %%)\n", epoch, report.steps,
              report.samples_per_second, report.train.loss, 100 * report.train.accuracy);
  nn::directory_backend store(root / "store-epoch");
  std::vector<double> totals;
  for (int k = 0; k < saves; ++k) {
    // As checkpointer::on_epoch_end names and keeps them (keep 3: from the 4th on, one is removed).
    const auto w =
        timed_save(t, store, nn::detail::checkpoint_name(t.position().global_step + static_cast<std::uint64_t>(k)), 3);
    totals.push_back(w.total);
    std::printf("save  mlp  %d  %7.2f ms (data+part %.2f, manifest %.2f, tidy %.2f) = %.3f %% of the epoch\n", k,
                w.total * 1e3, w.data * 1e3, w.manifest * 1e3, w.tidy * 1e3, 100 * w.total / epoch);
  }
  const double m = median(totals), worst = *std::max_element(totals.begin(), totals.end());
  table.push_back(
      {3, "3 one save (mlp, keep 3) / one epoch",
       text_of("%.1f ms / %.2f s = %.2f %% (worst %.2f %%)", m * 1e3, epoch, 100 * m / epoch, 100 * worst / epoch),
       "< 5 %", m / epoch < 0.05});
}

int positive(const char* v, const char* what) {
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (!end || *end || n <= 0 || n > 1000)
    throw std::invalid_argument(std::string(what) + " takes a whole number in 1..1000");
  return static_cast<int>(n);
}

settings parse(int argc, char** argv) {
  settings s;
  std::error_code ec;
  const auto self = fs::read_symlink("/proc/self/exe", ec);
  s.dir = ec ? fs::current_path() : self.parent_path();
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) throw std::invalid_argument(std::string(a) + " needs a value");
      return argv[++i];
    };
    if (a == "--dir") s.dir = value();
    else if (a == "--data-dir") s.data_dir = value();
    else if (a == "--write-reps") s.write_reps = positive(value(), "--write-reps");
    else if (a == "--big-write-reps") s.big_write_reps = positive(value(), "--big-write-reps");
    else if (a == "--load-reps") s.load_reps = positive(value(), "--load-reps");
    else if (a == "--epoch-saves") s.epoch_saves = positive(value(), "--epoch-saves");
    else if (a == "--no-big") s.big = false;
    else if (a == "--no-epoch") s.epoch = false;
    else if (a == "--sizes") s.sizes = true;
    else if (a == "--dd-mbps") {
      const std::string v = value();
      const auto comma = v.find(',');
      if (comma == std::string::npos) throw std::invalid_argument("--dd-mbps takes MLP,BIG (MB/s)");
      s.dd_mlp = std::stod(v.substr(0, comma));
      s.dd_big = std::stod(v.substr(comma + 1));
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "checkpoint_bench [--dir DIR] [--data-dir DIR] [--write-reps N] [--big-write-reps N]\n"
          "                 [--load-reps N] [--epoch-saves N] [--no-big] [--no-epoch] [--dd-mbps MLP,BIG] [--sizes]\n"
          "(see the top of bench/checkpoint_bench.cpp)\n");
      std::exit(0);
    } else {
      throw std::invalid_argument("unknown option " + std::string(a) + " (see --help)");
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) try {
  const settings s = parse(argc, argv);
  if (s.sizes) {
    std::printf("mlp=%llu big=%llu\n", static_cast<unsigned long long>(checkpoint_bytes<mlp>()),
                static_cast<unsigned long long>(checkpoint_bytes<big>()));
    return 0;
  }
  const auto run_start = clock_type::now();
  const scratch dir(s.dir);
  std::printf("# checkpoint_bench: files under %s (removed at the end); MB = 10^6 bytes\n", dir.path.c_str());
  std::fflush(stdout);
  if (s.epoch) epoch_and_saves(dir.path, s.data_dir, s.epoch_saves);
  std::fflush(stdout);
  write_and_load<mlp>("mlp", dir.path, s.write_reps, s.load_reps, 64, s.dd_mlp);
  std::fflush(stdout);
  if (s.big) write_and_load<big>("big", dir.path, s.big_write_reps, s.load_reps, 16, s.dd_big);

  std::stable_sort(table.begin(), table.end(), [](const verdict& a, const verdict& b) { return a.order < b.order; });
  std::printf("\n%-48s %-46s %-13s %s\n", "target", "figure", "goal", "verdict");
  for (const auto& v : table)
    std::printf("%-48s %-46s %-13s %s\n", v.target.c_str(), v.figure.c_str(), v.goal.c_str(),
                !v.met   ? ""
                : *v.met ? "met"
                         : "NOT MET");
  std::printf("# %.1f s in all\n", seconds_since(run_start));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "checkpoint_bench: %s\n", e.what());
  return 1;
}
