// f2d2n/data/idx.hpp: reading IDX files (the MNIST and Fashion-MNIST format), gzipped or not.
//
// IDX: two zero bytes, an element-type byte (0x08 = unsigned byte, the only type MNIST-format data
// uses and the only one read here), a rank byte, then rank big-endian 32-bit extents, then the
// elements. zlib's gz* functions read gzip and plain files alike. From a storage backend (a
// directory or an object store), a plain file is read with ranged reads (its header, then only
// the samples asked for), a gzipped one whole, inflated in memory.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/store/backend.hpp>

#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

namespace f2d2n {

/// The contents of an IDX file of unsigned bytes.
struct idx_array {
  std::vector<std::size_t> dims;   ///< extents from the header, outermost first
  std::vector<std::uint8_t> data;  ///< the elements, row-major
};

/// Limits that keep a forged header from making the reader allocate or loop without bound.
struct idx_limits {
  std::size_t max_rank = 4;
  std::size_t max_elements = std::size_t{1} << 32;  ///< 4 Gi elements
  /// A gzipped file may announce at most this many times its own size on disk in data (0: no
  /// limit). Image data of MNIST's kind compresses 2-5x and deflate cannot exceed about 1032x, so
  /// a gzip bomb (a small file of zeros announcing gigabytes) is refused before it costs more than
  /// this multiple of the file.
  std::size_t max_expansion = 128;
};

namespace detail {
struct gz_closer {
  void operator()(gzFile f) const noexcept { gzclose(f); }
};
using gz_handle = std::unique_ptr<std::remove_pointer_t<gzFile>, gz_closer>;

/// Reads up to n bytes; returns how many were read, throws data_error on a damaged stream.
inline std::size_t gz_read_some(gzFile f, const std::string& path, void* out, std::size_t n) {
  std::size_t done = 0;
  auto* p = static_cast<unsigned char*>(out);
  while (done < n) {
    const auto chunk = static_cast<unsigned>(std::min<std::size_t>(n - done, 1u << 30));
    const int got = gzread(f, p + done, chunk);
    if (got < 0) {
      int code = 0;
      const char* msg = gzerror(f, &code);
      throw data_error(path, data_problem::corrupt, std::string("cannot decompress: ") + (msg ? msg : "zlib error"));
    }
    if (got == 0) {
      // zlib reports a gzip stream cut short as Z_BUF_ERROR at the end.
      int code = 0;
      const char* msg = gzerror(f, &code);
      if (code != Z_OK && code != Z_BUF_ERROR)
        throw data_error(path, data_problem::corrupt, std::string("cannot decompress: ") + (msg ? msg : "zlib error"));
      break;
    }
    done += static_cast<std::size_t>(got);
  }
  return done;
}
}  // namespace detail

namespace detail {
/// The header of an IDX file of unsigned bytes, checked as read_idx checks it: `read(offset, out)`
/// fills out from the file's bytes (throwing data_error(truncated) past its end).
template <class Read>
std::vector<std::size_t> idx_header(const std::string& path, const idx_limits& limits, Read&& read) {
  unsigned char magic[4];
  read(0, std::as_writable_bytes(std::span<unsigned char>(magic)));
  if (magic[0] != 0 || magic[1] != 0)
    throw data_error(path, data_problem::bad_magic, "not an IDX file (it must start with two zero bytes)");
  if (magic[2] != 0x08) {
    constexpr char hex[] = "0123456789abcdef";
    const std::string type{'0', 'x', hex[magic[2] >> 4], hex[magic[2] & 0xf]};
    throw data_error(path, data_problem::bad_magic,
                     "element type " + type + " is not supported; MNIST-format files hold unsigned bytes (0x08)");
  }
  const std::size_t rank = magic[3];
  if (rank == 0 || rank > limits.max_rank)
    throw data_error(path, data_problem::bad_dimensions,
                     "rank " + std::to_string(rank) + " is outside 1.." + std::to_string(limits.max_rank));
  std::vector<unsigned char> b(4 * rank);
  read(4, std::as_writable_bytes(std::span<unsigned char>(b)));
  std::vector<std::size_t> dims(rank);
  std::size_t elements = 1;
  for (std::size_t i = 0; i < rank; ++i) {
    const std::size_t d = (std::size_t{b[4 * i]} << 24) | (std::size_t{b[4 * i + 1]} << 16) |
                          (std::size_t{b[4 * i + 2]} << 8) | b[4 * i + 3];
    if (d == 0) throw data_error(path, data_problem::bad_dimensions, "extent " + std::to_string(i) + " is zero");
    if (elements > limits.max_elements / d)
      throw data_error(path, data_problem::bad_dimensions,
                       "the header announces more than " + std::to_string(limits.max_elements) + " elements");
    elements *= d;
    dims[i] = d;
  }
  return dims;
}

}  // namespace detail

/// Reads a whole IDX file of unsigned bytes (plain or gzip-compressed).
/// Throws data_error naming the file for: missing, bad_magic, bad_dimensions, truncated, corrupt.
inline idx_array read_idx(const std::string& path, idx_limits limits = {}) {
  if (std::error_code ec; std::filesystem::is_directory(path, ec))
    throw data_error(path, data_problem::missing, "is a directory, not a file");
  detail::gz_handle file(gzopen(path.c_str(), "rb"));
  if (!file) throw data_error(path, data_problem::missing, "cannot open the file");
  gzbuffer(file.get(), 1u << 17);

  idx_array result;
  // The header, read in order from the stream.
  result.dims = detail::idx_header(path, limits, [&](std::size_t, std::span<std::byte> out) {
    if (detail::gz_read_some(file.get(), path, out.data(), out.size()) < out.size())
      throw data_error(path, data_problem::truncated, "the file ends inside the IDX header");
  });
  std::size_t elements = 1;
  for (auto d : result.dims) elements *= d;

  // A gzip stream may announce at most max_expansion times the file's size (plain files are read
  // as far as they go, growing with what arrives).
  if (limits.max_expansion != 0 && gzdirect(file.get()) == 0) {
    std::error_code ec;
    const std::uintmax_t on_disk = std::filesystem::file_size(path, ec);
    if (!ec && elements / limits.max_expansion > on_disk)
      throw data_error(path, data_problem::bad_dimensions,
                       "the header announces " + std::to_string(elements) + " bytes of data, more than " +
                           std::to_string(limits.max_expansion) + " times the " + std::to_string(on_disk) +
                           " bytes of the compressed file (a gzip bomb or a forged header; idx_limits::max_expansion "
                           "raises the limit)");
  }

  // Grow as the data arrives rather than trusting the header with one big allocation.
  constexpr std::size_t chunk = std::size_t{1} << 24;
  std::size_t have = 0;
  while (have < elements) {
    const std::size_t want = std::min(chunk, elements - have);
    result.data.resize(have + want);
    const std::size_t n = detail::gz_read_some(file.get(), path, result.data.data() + have, want);
    have += n;
    if (n < want)
      throw data_error(path, data_problem::truncated,
                       "the header announces " + std::to_string(elements) + " bytes of data, the file holds " +
                           std::to_string(have));
  }
  unsigned char extra;
  if (detail::gz_read_some(file.get(), path, &extra, 1) != 0)
    throw data_error(path, data_problem::bad_dimensions,
                     "the file holds more data than the " + std::to_string(elements) + " bytes its header announces");
  // All the data arrived, but a gzip stream may still end before its CRC-32 and length trailer.
  int code = Z_OK;
  gzerror(file.get(), &code);
  if (code == Z_BUF_ERROR)
    throw data_error(path, data_problem::truncated, "the gzip stream ends before its trailer (CRC-32 and length)");
  return result;
}

/// Which samples (entries of the outermost extent) of an IDX file to read: [first, first + count),
/// count clipped to the end. The default: all.
struct sample_range {
  std::size_t first = 0;
  std::size_t count = std::numeric_limits<std::size_t>::max();
};

namespace detail {
/// Reads the range of samples of an IDX file of `size` bytes through `read` (see idx_header).
template <class Read>
idx_array read_idx_range(const std::string& path, std::uint64_t size, const idx_limits& limits, sample_range range,
                         Read&& read) {
  idx_array a;
  a.dims = idx_header(path, limits, read);
  const std::size_t header = 4 + 4 * a.dims.size();
  std::size_t elements = 1;
  for (auto d : a.dims) elements *= d;
  if (size < header + elements)
    throw data_error(path, data_problem::truncated,
                     "the header announces " + std::to_string(elements) + " bytes of data, the file holds " +
                         std::to_string(size - header));
  if (size > header + elements)
    throw data_error(path, data_problem::bad_dimensions,
                     "the file holds more data than the " + std::to_string(elements) + " bytes its header announces");
  const std::size_t per_sample = elements / a.dims[0];
  if (range.first >= a.dims[0])
    throw configuration_error("f2d2n: samples from " + std::to_string(range.first) + " asked of " + path +
                              ", which holds " + std::to_string(a.dims[0]));
  const std::size_t count = std::min(range.count, a.dims[0] - range.first);
  a.dims[0] = count;
  a.data.resize(count * per_sample);
  read(header + range.first * per_sample, std::as_writable_bytes(std::span<std::uint8_t>(a.data)));
  return a;
}

/// A gzip stream in memory, inflated (at most `limit` bytes out; more is a forged or damaged file).
inline std::vector<std::byte> gunzip(std::span<const std::byte> in, std::size_t limit, const std::string& path) {
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) throw data_error(path, data_problem::corrupt, "cannot start zlib");
  std::vector<std::byte> out(std::min<std::size_t>(limit, std::max<std::size_t>(in.size() * 4, 1 << 16)));
  z.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in.data()));
  std::size_t fed = 0, done = 0;
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    if (z.avail_in == 0 && fed < in.size()) {
      const auto n = static_cast<uInt>(std::min<std::size_t>(in.size() - fed, 1u << 30));
      z.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in.data() + fed));
      z.avail_in = n;
      fed += n;
    }
    if (done == out.size()) {
      if (out.size() >= limit) {
        inflateEnd(&z);
        throw data_error(path, data_problem::bad_dimensions,
                         "inflates to more than " + std::to_string(limit) +
                             " bytes (a gzip bomb or a forged header; idx_limits raises the limit)");
      }
      out.resize(std::min(limit, out.size() * 2));
    }
    z.next_out = reinterpret_cast<Bytef*>(out.data() + done);
    z.avail_out = static_cast<uInt>(std::min<std::size_t>(out.size() - done, 1u << 30));
    const uInt before = z.avail_out;
    rc = inflate(&z, Z_NO_FLUSH);
    done += before - z.avail_out;
    if (rc == Z_BUF_ERROR && z.avail_in == 0 && fed == in.size()) {
      inflateEnd(&z);
      throw data_error(path, data_problem::truncated, "the gzip stream ends before its trailer (CRC-32 and length)");
    }
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
      const std::string why = z.msg ? z.msg : "zlib error";
      inflateEnd(&z);
      throw data_error(path, data_problem::corrupt, "cannot decompress: " + why);
    }
  }
  inflateEnd(&z);
  out.resize(done);
  return out;
}
}  // namespace detail

/// Reads samples `range` of an IDX file of unsigned bytes from a storage backend (`key`; ending in
/// .gz: gzip-compressed). A plain file is read with ranged reads: its header, then only the
/// samples' bytes. A compressed one is read whole and inflated in memory, within
/// idx_limits::max_expansion times its size. Throws data_error as read_idx does (missing when
/// there is no such object), storage_error when the store fails.
inline idx_array read_idx(const storage_backend& store, const std::string& key, idx_limits limits = {},
                          sample_range range = {}) {
  const std::string path = store.location() + "/" + key;
  const auto size = store.size(key);
  if (!size) throw data_error(path, data_problem::missing, "no such object");
  auto from = [&](std::span<const std::byte> bytes) {
    return [bytes, &path](std::size_t offset, std::span<std::byte> out) {
      if (offset > bytes.size() || out.size() > bytes.size() - offset)
        throw data_error(path, data_problem::truncated, "the file ends inside the IDX header");
      std::copy_n(bytes.data() + offset, out.size(), out.data());
    };
  };
  if (key.ends_with(".gz")) {
    if (*size > limits.max_elements)
      throw data_error(path, data_problem::bad_dimensions, "a compressed file larger than idx_limits::max_elements");
    std::vector<std::byte> packed(static_cast<std::size_t>(*size));
    store.get(key, 0, packed);
    const std::size_t limit = limits.max_expansion == 0 ? limits.max_elements + 64
                                                        : std::min<std::size_t>(limits.max_elements + 64,
                                                                                packed.size() * limits.max_expansion);
    const auto plain = detail::gunzip(packed, limit, path);
    return detail::read_idx_range(path, plain.size(), limits, range, from(plain));
  }
  return detail::read_idx_range(path, *size, limits, range, [&](std::size_t offset, std::span<std::byte> out) {
    if (offset + out.size() > *size)
      throw data_error(path, data_problem::truncated, "the file ends inside the IDX header");
    store.get(key, offset, out);
  });
}

}  // namespace f2d2n
