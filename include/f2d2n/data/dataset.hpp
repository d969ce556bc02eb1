// f2d2n/data/dataset.hpp: labelled samples in memory, loading MNIST-format data, batching.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/core/random.hpp>
#include <f2d2n/core/shape.hpp>
#include <f2d2n/data/idx.hpp>
#include <f2d2n/model/tensor.hpp>
#include <f2d2n/store/backend.hpp>

#include <cstdint>
#include <filesystem>
#include <numeric>
#include <span>
#include <string>
#include <vector>

namespace f2d2n {

/// How raw bytes become features: x = (byte * scale - mean) / stddev.
struct normalization {
  double scale = 1.0 / 255.0;
  double mean = 0.0;
  double stddev = 1.0;
};

/// Samples (one row each, flattened) and their integer labels.
template <class Scalar = float>
struct dataset {
  matrix<Scalar> samples;
  std::vector<std::int32_t> labels;
  extents sample_shape{};   ///< e.g. {28, 28}
  std::size_t classes = 0;  ///< labels are in [0, classes)
  std::string source;       ///< the file the samples came from (for error messages)

  [[nodiscard]] std::size_t size() const noexcept { return labels.size(); }
  [[nodiscard]] std::size_t features() const noexcept { return static_cast<std::size_t>(samples.cols()); }

  /// Samples [begin, begin + count) as a new dataset (count is clipped to the end).
  [[nodiscard]] dataset slice(std::size_t begin, std::size_t count) const {
    if (begin > size()) begin = size();
    count = std::min(count, size() - begin);
    dataset d;
    d.samples = samples.middleRows(static_cast<Eigen::Index>(begin), static_cast<Eigen::Index>(count));
    d.labels.assign(labels.begin() + static_cast<std::ptrdiff_t>(begin),
                    labels.begin() + static_cast<std::ptrdiff_t>(begin + count));
    d.sample_shape = sample_shape;
    d.classes = classes;
    d.source = source;
    return d;
  }
};

/// Throws data_error(shape_mismatch) unless the samples have exactly `features` features and the
/// labels fit `outputs` classes. Names the data file.
template <class Scalar>
void check_fits(const dataset<Scalar>& d, std::size_t features, std::size_t outputs) {
  if (d.features() != features)
    throw data_error(d.source, data_problem::shape_mismatch,
                     "samples have " + std::to_string(d.features()) + " features, the model's input takes " +
                         std::to_string(features));
  if (d.classes > outputs)
    throw data_error(d.source, data_problem::shape_mismatch,
                     "labels have " + std::to_string(d.classes) + " classes, the model has " + std::to_string(outputs) +
                         " outputs");
}

template <class Scalar>
dataset<Scalar> to_dataset(const idx_array& images, const idx_array& labels, const std::string& images_path,
                           const std::string& labels_path, normalization norm, std::size_t classes);

/// Loads an images file (rank >= 2: count x sample extents) and a labels file (rank 1) of the
/// same count. Labels must be below `classes`.
template <class Scalar = float>
dataset<Scalar> load_idx(const std::string& images_path, const std::string& labels_path, normalization norm = {},
                         std::size_t classes = 10) {
  return to_dataset<Scalar>(read_idx(images_path), read_idx(labels_path), images_path, labels_path, norm, classes);
}

/// A dataset from the contents of an images and a labels IDX file (checked as load_idx says).
template <class Scalar>
dataset<Scalar> to_dataset(const idx_array& images, const idx_array& labels, const std::string& images_path,
                           const std::string& labels_path, normalization norm, std::size_t classes) {
  if (images.dims.size() < 2)
    throw data_error(images_path, data_problem::bad_dimensions,
                     "an images file has rank 2 or more (count, then the extents of one sample); this one has rank " +
                         std::to_string(images.dims.size()));
  if (images.dims.size() - 1 > max_rank)
    throw data_error(images_path, data_problem::bad_dimensions, "a sample has more than 4 extents");
  if (labels.dims.size() != 1)
    throw data_error(labels_path, data_problem::bad_dimensions,
                     "a labels file has rank 1; this one has rank " + std::to_string(labels.dims.size()));
  if (images.dims[0] != labels.dims[0])
    throw data_error(labels_path, data_problem::count_mismatch,
                     "holds " + std::to_string(labels.dims[0]) + " labels but " + images_path + " holds " +
                         std::to_string(images.dims[0]) + " images");
  if (norm.stddev <= 0 || norm.scale <= 0)
    throw configuration_error("f2d2n: normalization needs scale > 0 and stddev > 0");

  dataset<Scalar> d;
  d.source = images_path;
  d.classes = classes;
  d.sample_shape.rank = images.dims.size() - 1;
  for (std::size_t i = 1; i < images.dims.size(); ++i) d.sample_shape.dims[i - 1] = images.dims[i];
  const std::size_t count = images.dims[0];
  const std::size_t features = d.sample_shape.size();

  d.labels.resize(count);
  for (std::size_t i = 0; i < count; ++i) {
    if (labels.data[i] >= classes)
      throw data_error(labels_path, data_problem::bad_label,
                       "label " + std::to_string(labels.data[i]) + " of sample " + std::to_string(i) +
                           " is not below " + std::to_string(classes));
    d.labels[i] = labels.data[i];
  }
  // One lookup table of the 256 possible values: the same float for the same byte everywhere.
  Scalar table[256];
  for (int b = 0; b < 256; ++b) table[b] = static_cast<Scalar>((b * norm.scale - norm.mean) / norm.stddev);
  d.samples.resize(static_cast<Eigen::Index>(count), static_cast<Eigen::Index>(features));
  Scalar* out = d.samples.data();
  for (std::size_t i = 0; i < count * features; ++i) out[i] = table[images.data[i]];
  return d;
}

/// Which half of an MNIST-format directory.
enum class split { train, test };

/// Finds `<dir>/<stem>` or `<dir>/<stem>.gz`; throws data_error(missing) naming both when neither exists.
inline std::string find_idx_file(const std::string& dir, const std::string& stem) {
  namespace fs = std::filesystem;
  const fs::path plain = fs::path(dir) / stem;
  const fs::path gz = fs::path(dir) / (stem + ".gz");
  std::error_code ec;
  if (fs::is_regular_file(gz, ec)) return gz.string();
  if (fs::is_regular_file(plain, ec)) return plain.string();
  throw data_error(plain.string(), data_problem::missing,
                   "neither it nor " + gz.filename().string() +
                       " exists. Fashion-MNIST comes with Debian's package dataset-fashion-mnist "
                       "(apt-get install dataset-fashion-mnist puts it in /usr/share/datasets/fashion-mnist); "
                       "any MNIST-format directory works");
}

/// The standard directory of Debian's dataset-fashion-mnist package.
inline constexpr const char* fashion_mnist_dir = "/usr/share/datasets/fashion-mnist";

/// Finds `<folder><stem>.gz` or `<folder><stem>` in a store (folder: "" or ending in '/'); throws
/// data_error(missing) naming both when neither exists.
inline std::string find_idx_object(const storage_backend& store, const std::string& folder, const std::string& stem) {
  const std::string plain = folder + stem, gz = plain + ".gz";
  if (store.size(gz)) return gz;
  if (store.size(plain)) return plain;
  throw data_error(store.location() + "/" + plain, data_problem::missing,
                   "neither it nor " + stem + ".gz exists in the store");
}

/// Loads samples `range` of the train or test half of an MNIST-format folder of a store: plain
/// IDX objects are read with ranged reads (only the range's bytes), gzipped ones whole.
template <class Scalar = float>
dataset<Scalar> load_mnist(const storage_backend& store, const std::string& folder, split which,
                           normalization norm = {}, sample_range range = {}) {
  const std::string prefix = which == split::train ? "train" : "t10k";
  std::string dir = folder;
  if (!dir.empty() && dir.back() != '/') dir += '/';
  const std::string images = find_idx_object(store, dir, prefix + "-images-idx3-ubyte");
  const std::string labels = find_idx_object(store, dir, prefix + "-labels-idx1-ubyte");
  return to_dataset<Scalar>(read_idx(store, images, {}, range), read_idx(store, labels, {}, range),
                            store.location() + "/" + images, store.location() + "/" + labels, norm, 10);
}

/// Loads the train or test half of an MNIST-format directory (train-images-idx3-ubyte[.gz], ...),
/// or of an object store's folder: "s3://bucket/prefix" (credentials and endpoint from the
/// environment; the program includes <f2d2n/store/s3_backend.hpp> somewhere, see open_storage).
/// `range`: only those samples (from a store, only their bytes are read when the files are not
/// compressed).
template <class Scalar = float>
dataset<Scalar> load_mnist(const std::string& where, split which, normalization norm = {}, sample_range range = {}) {
  if (is_s3_location(where)) return load_mnist<Scalar>(*open_storage(where), "", which, norm, range);
  const std::string prefix = which == split::train ? "train" : "t10k";
  // Look the images up first, so that a directory missing both names the images file everywhere.
  const std::string images = find_idx_file(where, prefix + "-images-idx3-ubyte");
  const std::string labels = find_idx_file(where, prefix + "-labels-idx1-ubyte");
  auto d = load_idx<Scalar>(images, labels, norm, 10);
  if (range.first == 0 && range.count >= d.size()) return d;
  if (range.first >= d.size())
    throw configuration_error("f2d2n: samples from " + std::to_string(range.first) + " asked of " + images +
                              ", which holds " + std::to_string(d.size()));
  return d.slice(range.first, range.count);
}

/// A view of one batch: rows of samples and their labels.
template <class Scalar>
struct batch {
  const_matrix_ref<Scalar> samples;
  std::span<const std::int32_t> labels;
};

/// The part of a batch one processing unit needs: rows [first, first + count) of a batch of
/// `batch` samples, and whether it needs their samples and their labels (a middle pipeline stage
/// needs neither; the first needs the samples, the last the labels).
struct batch_part {
  std::size_t batch = 0;
  std::size_t first = 0, count = 0;
  bool samples = true, labels = true;
  friend constexpr bool operator==(const batch_part&, const batch_part&) = default;
};

/// Walks a dataset in batches of `batch_size`, the last one partial, in a seeded random order that
/// is the same on every platform (shuffle(mix64(seed) + epoch)), or in file order without shuffling.
template <class Scalar>
class batcher {
 public:
  batcher(const dataset<Scalar>& data, std::size_t batch_size, bool shuffle_samples = true, std::uint64_t seed = 0)
      : data_(&data), batch_size_(batch_size), shuffle_(shuffle_samples), seed_(seed), order_(data.size()) {
    if (batch_size == 0) throw configuration_error("f2d2n: batch size must be at least 1");
    if (data.size() == 0)
      throw configuration_error("f2d2n: cannot make batches of an empty dataset (" + data.source + ")");
    buffer_.resize(static_cast<Eigen::Index>(std::min(batch_size, data.size())),
                   static_cast<Eigen::Index>(data.features()));
    labels_.resize(static_cast<std::size_t>(buffer_.rows()));
    start_epoch(0);
  }

  /// A batcher keeps a reference to its dataset: a temporary would dangle.
  batcher(const dataset<Scalar>&&, std::size_t, bool = true, std::uint64_t = 0) = delete;

  /// Restarts at the first batch of `epoch`, with that epoch's order.
  void start_epoch(std::size_t epoch) {
    std::iota(order_.begin(), order_.end(), std::size_t{0});
    if (shuffle_) shuffle(std::span<std::size_t>(order_), mix64(seed_) + epoch);
    position_ = 0;
  }

  [[nodiscard]] std::size_t batches() const noexcept { return (data_->size() + batch_size_ - 1) / batch_size_; }
  [[nodiscard]] bool done() const noexcept { return position_ >= data_->size(); }
  /// The sample indices of the current epoch, in order.
  [[nodiscard]] std::span<const std::size_t> order() const noexcept { return order_; }

  /// The number of samples in the next batch (the last one of an epoch may be partial).
  [[nodiscard]] std::size_t next_size() const noexcept { return std::min(batch_size_, data_->size() - position_); }

  /// Moves past the next `count` batches without copying them (a resumed run continues here).
  void skip(std::size_t count) noexcept {
    for (std::size_t k = 0; k < count && !done(); ++k) position_ += next_size();
  }

  /// The next batch (valid until the next call). Precondition: !done().
  batch<Scalar> next() { return next({next_size(), 0, next_size(), true, true}); }

  /// Only `part` of the next batch (part.batch must be next_size()): the rows it names, with their
  /// samples and labels as it asks (empty otherwise); the batcher moves past the whole batch.
  batch<Scalar> next(const batch_part& part) {
    const std::size_t n = next_size();
    if (part.batch != n || part.first > n || part.count > n - part.first)
      throw configuration_error("f2d2n: rows " + std::to_string(part.first) + " + " + std::to_string(part.count) +
                                " of a batch of " + std::to_string(part.batch) + " asked of a batch of " +
                                std::to_string(n));
    // Shuffled rows come from anywhere in a data set far larger than the caches: each row's
    // cache lines are requested a few rows ahead of its copy, so that its misses overlap the
    // copies before it (measured on Fashion-MNIST: the copy of a 64-row batch took about as long
    // as the step's forward pass without it).
    constexpr std::size_t ahead = 4;
    const auto row_bytes = static_cast<std::size_t>(data_->samples.cols()) * sizeof(Scalar);
    const auto prefetch = [&](std::size_t r) {
      if (!part.samples || r >= part.count) return;
      const auto* p = reinterpret_cast<const char*>(
          data_->samples.row(static_cast<Eigen::Index>(order_[position_ + part.first + r])).data());
      for (std::size_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(p + b);
    };
    for (std::size_t r = 0; r < ahead; ++r) prefetch(r);
    for (std::size_t r = 0; r < part.count; ++r) {
      prefetch(r + ahead);
      const std::size_t i = order_[position_ + part.first + r];
      if (part.samples) buffer_.row(static_cast<Eigen::Index>(r)) = data_->samples.row(static_cast<Eigen::Index>(i));
      if (part.labels) labels_[r] = data_->labels[i];
    }
    position_ += n;
    return {buffer_.topRows(static_cast<Eigen::Index>(part.samples ? part.count : 0)),
            std::span<const std::int32_t>(labels_.data(), part.labels ? part.count : 0)};
  }

 private:
  const dataset<Scalar>* data_;
  std::size_t batch_size_;
  bool shuffle_;
  std::uint64_t seed_;
  std::vector<std::size_t> order_;
  std::size_t position_ = 0;
  matrix<Scalar> buffer_;
  std::vector<std::int32_t> labels_;
};

}  // namespace f2d2n
