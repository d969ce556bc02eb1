// f2d2n/store/safetensors.hpp: a model's parameters as a safetensors file (the format PyTorch,
// JAX and numpy users exchange weights in), and back.
//
// The file: an 8-byte little-endian length N; N bytes of JSON header, padded with spaces to a
// multiple of 8; then the tensors' raw little-endian data, one after the other. The header maps
// each tensor's name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets into the data
// section) and "__metadata__" to string-to-string pairs. f2d2n names tensors as PyTorch's
// state_dict does ("1.weight" is [out, in], "1.bias" [out]: model_summary::tensors), writes them in
// the order of the flat parameter buffer, and adds metadata: the model's description and
// fingerprint, the library version and an XXH3-64 checksum per tensor. docs/storage.md describes
// the layout byte by byte and every check a load makes.
//
// Loading verifies everything before it changes anything: a load either fills the whole network or
// throws storage_error, naming the file and the problem, and leaves the network as it was.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/core/version.hpp>
#include <f2d2n/model/network.hpp>
#include <f2d2n/model/summary.hpp>
#include <f2d2n/store/backend.hpp>
#include <f2d2n/store/checksum.hpp>
#include <f2d2n/store/dtype.hpp>

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace f2d2n {

/// The largest JSON header a load accepts (the reference implementation's limit is 100 MB): a
/// damaged or foreign length is refused before anything is allocated for it.
inline constexpr std::uint64_t safetensors_max_header = std::uint64_t{100} << 20;

namespace detail::safetensors {

/// The metadata keys f2d2n writes (docs/storage.md).
inline constexpr std::string_view key_version = "f2d2n.version";
inline constexpr std::string_view key_model = "f2d2n.model";
inline constexpr std::string_view key_fingerprint = "f2d2n.fingerprint";
inline constexpr std::string_view key_checksum = "f2d2n.checksum.";  // followed by the tensor's name

/// Bytes per element of each dtype the format defines (0: not a safetensors dtype).
inline std::size_t element_size(std::string_view dtype) noexcept {
  struct known {
    std::string_view name;
    std::size_t size;
  };
  static constexpr known table[] = {{"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
                                    {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
                                    {"U32", 4},  {"F32", 4}, {"I64", 8}, {"U64", 8},     {"F64", 8}};
  for (const auto& k : table)
    if (k.name == dtype) return k.size;
  return 0;
}

/// "[128,256]".
template <class Int>
std::string shape_string(const std::vector<Int>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  s += ']';
  return s;
}

inline std::uint64_t read_u64_le(const std::byte* p) noexcept {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<std::uint64_t>(p[i]);
  return v;
}

inline void write_u64_le(std::uint64_t v, std::byte* p) noexcept {
  for (int i = 0; i < 8; ++i, v >>= 8) p[i] = static_cast<std::byte>(v & 0xff);
}

/// The unsigned integer type of a scalar's size (its bits, for byte order conversion).
template <class S>
using bits_of = std::conditional_t<sizeof(S) == 4, std::uint32_t, std::uint64_t>;

/// Writes values as little-endian bytes (a plain copy on little-endian machines).
template <class S>
void store_le(std::span<const S> values, std::byte* out) noexcept {
  if constexpr (std::endian::native == std::endian::little) {
    if (!values.empty()) std::memcpy(out, values.data(), values.size_bytes());
  } else {
    for (const S v : values) {
      auto u = std::bit_cast<bits_of<S>>(v);
      for (std::size_t b = 0; b < sizeof(S); ++b, u >>= 8) *out++ = static_cast<std::byte>(u & 0xff);
    }
  }
}

/// Reads little-endian bytes (any alignment) into values.
template <class S>
void load_le(const std::byte* in, std::span<S> values) noexcept {
  if constexpr (std::endian::native == std::endian::little) {
    if (!values.empty()) std::memcpy(values.data(), in, values.size_bytes());
  } else {
    for (S& v : values) {
      bits_of<S> u = 0;
      for (std::size_t b = sizeof(S); b-- > 0;) u = (u << 8) | static_cast<bits_of<S>>(in[b]);
      v = std::bit_cast<S>(u);
      in += sizeof(S);
    }
  }
}

/// XXH3-64 of values as the file stores them (little-endian).
template <class S>
std::uint64_t checksum_le(std::span<const S> values) {
  if constexpr (std::endian::native == std::endian::little) {
    return checksum(std::as_bytes(values));
  } else {
    std::vector<std::byte> bytes(values.size_bytes());
    store_le(values, bytes.data());
    return checksum(bytes);
  }
}

/// One tensor entry of a header, checked for form (types, offsets against its own shape).
struct entry {
  std::string name;
  std::string dtype;
  std::vector<std::uint64_t> shape;
  std::uint64_t begin = 0, end = 0;
};

/// a * b, or nothing when it overflows 64 bits.
inline std::optional<std::uint64_t> multiply(std::uint64_t a, std::uint64_t b) noexcept {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return std::nullopt;
  return a * b;
}

/// Reads a whole file no longer than `limit` bytes (a longer one cannot be a file of this model,
/// and is refused before anything is allocated for it).
inline std::vector<std::byte> read_file(const std::filesystem::path& path, std::uint64_t limit) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    throw storage_error(path.string(), e == ENOENT ? storage_problem::missing : storage_problem::io,
                        std::string("cannot open: ") + std::strerror(e));
  }
  auto fail = [&](storage_problem p, const std::string& what) {
    ::close(fd);
    return storage_error(path.string(), p, what);
  };
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw fail(storage_problem::io, std::string("cannot stat: ") + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw fail(storage_problem::io, "not a regular file");
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size > limit)
    throw fail(storage_problem::corrupt, "is " + std::to_string(size) +
                                             " bytes long; a safetensors file of this model "
                                             "takes at most " +
                                             std::to_string(limit));
  std::vector<std::byte> bytes(static_cast<std::size_t>(size));
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw fail(storage_problem::io, std::string("read failed: ") + std::strerror(errno));
    if (n == 0) throw fail(storage_problem::truncated, "shrank while it was read");
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return bytes;
}

/// The largest file that can hold a model of `parameters` values: the largest header, and 8
/// bytes a value (the widest dtype, so that a file of another scalar type is named as such).
inline std::uint64_t largest_file(std::size_t parameters) noexcept {
  return 8 + safetensors_max_header + 8 * static_cast<std::uint64_t>(parameters);
}

/// The padded JSON header of a file of `model` in `dtype` (`element` bytes a value), with the
/// tensors' checksums (in model.tensors' order). A template only so that it is compiled where it
/// is used, and once for every scalar type.
template <class Json = nlohmann::json>
std::string make_header(const model_summary& model, std::string_view dtype, std::size_t element,
                        const std::vector<std::uint64_t>& checksums) {
  Json metadata = Json::object();
  metadata["format"] = "pt";  // what PyTorch's own writer puts there
  metadata[std::string(key_version)] = version_string();
  metadata[std::string(key_model)] = model.description;
  metadata[std::string(key_fingerprint)] = to_hex(model.fingerprint);
  for (std::size_t i = 0; i < model.tensors.size(); ++i)
    metadata[std::string(key_checksum) + model.tensors[i].name] = to_hex(checksums[i]);

  // The top level is written entry by entry (each one by nlohmann::json) to keep the metadata
  // first and the tensors in the order of the buffer: a json object would sort the keys.
  std::string header = "{\"__metadata__\":" + metadata.dump();
  for (const auto& t : model.tensors) {
    const std::uint64_t begin = t.offset * element, end = (t.offset + t.size()) * element;
    Json fields = Json::object();
    fields["dtype"] = dtype;
    fields["shape"] = t.shape;
    fields["data_offsets"] = {begin, end};
    header += "," + Json(t.name).dump() + ":" + fields.dump();
  }
  header += "}";
  header.resize((header.size() + 7) / 8 * 8, ' ');  // the data starts 8-byte aligned
  return header;
}

/// Checks a whole file against `model`, whose values are `dtype`: its form, that it holds exactly
/// the model's tensors with the model's shapes in that dtype, f2d2n's metadata where present (the
/// model's description and fingerprint) and the tensors' checksums where present. Returns where
/// each of model.tensors' data starts in `file`. Throws storage_error naming `where`. A template
/// only so that it is compiled where it is used, and once for every scalar type.
template <class Json = nlohmann::json>
std::vector<std::uint64_t> verify(const model_summary& model, std::span<const std::byte> file, const std::string& where,
                                  std::string_view dtype) {
  using json = Json;
  auto error = [&](storage_problem p, const std::string& what) { return storage_error(where, p, what); };
  auto corrupt = [&](const std::string& what) { return error(storage_problem::corrupt, what); };

  // 1. The header's length and the header as JSON.
  if (file.size() < 8)
    throw error(storage_problem::truncated, "is " + std::to_string(file.size()) +
                                                " bytes long; a safetensors file starts with an 8-byte header length");
  const std::uint64_t header_size = read_u64_le(file.data());
  if (header_size > safetensors_max_header)
    throw error(storage_problem::bad_format, "header length " + std::to_string(header_size) + " is over the limit of " +
                                                 std::to_string(safetensors_max_header) +
                                                 " bytes: not a safetensors file, or a damaged one");
  if (header_size > file.size() - 8)
    throw error(storage_problem::truncated, "the header is " + std::to_string(header_size) +
                                                " bytes long, the file has " + std::to_string(file.size() - 8) +
                                                " after the header length");
  const char* text = reinterpret_cast<const char*>(file.data() + 8);
  json header;
  std::string duplicate;
  try {
    // The callback sees every value as it is parsed. A name given twice would let one entry hide
    // another; a header nested deeper than a safetensors header (an object of objects of arrays)
    // is not one, and is refused before it costs more memory.
    std::set<std::string> names;
    header = json::parse(text, text + header_size, [&](int depth, typename json::parse_event_t event, json& parsed) {
      if (depth > 4) throw corrupt("the header nests values deeper than a safetensors header does");
      if (event == json::parse_event_t::key && depth == 1 && parsed.is_string() &&
          !names.insert(parsed.template get<std::string>()).second && duplicate.empty())
        duplicate = parsed.template get<std::string>();
      return true;
    });
  } catch (const typename json::exception& failure) {
    throw corrupt(std::string("the header is not JSON: ") + failure.what());
  }
  if (!header.is_object()) throw corrupt("the header is not a JSON object");
  if (!duplicate.empty()) throw corrupt("the header names '" + duplicate + "' twice");

  // 2. Every entry's form.
  std::vector<entry> entries;
  const json* metadata = nullptr;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) throw corrupt("__metadata__ is not a JSON object");
      for (const auto& [k, v] : value.items())
        if (!v.is_string()) throw corrupt("metadata '" + k + "' is not a string");
      metadata = &value;
      continue;
    }
    // A named reference for the lambda: Clang before 16 cannot capture a structured binding.
    const std::string& name = key;
    auto bad = [&](const std::string& what) { return corrupt("tensor '" + name + "': " + what); };
    if (!value.is_object()) throw bad("its entry is not a JSON object");
    entry e;
    e.name = key;
    const auto type = value.find("dtype");
    if (type == value.end() || !type->is_string()) throw bad("no \"dtype\" string");
    e.dtype = type->template get<std::string>();
    const std::size_t element = element_size(e.dtype);
    if (element == 0) throw bad("unknown dtype '" + e.dtype + "'");
    const auto shape = value.find("shape");
    if (shape == value.end() || !shape->is_array()) throw bad("no \"shape\" array");
    std::uint64_t bytes = element;
    for (const auto& d : *shape) {
      if (!d.is_number_unsigned()) throw bad("\"shape\" holds something else than non-negative integers");
      e.shape.push_back(d.template get<std::uint64_t>());
      const auto b = multiply(bytes, e.shape.back());
      if (!b) throw bad("shape " + shape_string(e.shape) + "... is too large");
      bytes = *b;
    }
    const auto offsets = value.find("data_offsets");
    if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
        !(*offsets)[1].is_number_unsigned())
      throw bad("\"data_offsets\" is not two non-negative integers");
    e.begin = (*offsets)[0].template get<std::uint64_t>();
    e.end = (*offsets)[1].template get<std::uint64_t>();
    if (e.end < e.begin || e.end - e.begin != bytes)
      throw bad("data_offsets [" + std::to_string(e.begin) + "," + std::to_string(e.end) + "] do not hold its " +
                std::to_string(bytes) + " bytes (" + e.dtype + " " + shape_string(e.shape) + ")");
    entries.push_back(std::move(e));
  }

  // 3. The data section: the tensors one after the other from its start, no gap, no overlap, and
  // nothing after the last one. The entries stay in the data's order from here on (extra tensors
  // are named in that order).
  const std::uint64_t data_size = file.size() - 8 - header_size;
  std::sort(entries.begin(), entries.end(),
            [](const entry& a, const entry& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  {
    std::uint64_t next = 0;
    for (const auto& e : entries) {
      if (e.begin < next) throw corrupt("tensor '" + e.name + "' overlaps the tensor before it");
      if (e.begin > next)
        throw corrupt("the data section has a gap of " + std::to_string(e.begin - next) + " bytes before tensor '" +
                      e.name + "'");
      next = e.end;
    }
    if (next > data_size)
      throw error(storage_problem::truncated, "the tensors take " + std::to_string(next) + " bytes, the file holds " +
                                                  std::to_string(data_size) + " after its header");
    if (next < data_size)
      throw corrupt(std::to_string(data_size - next) + " bytes follow the last tensor (the tensors take " +
                    std::to_string(next) + ")");
  }

  // 4. The tensors against the model, in the model's order: the first difference is named.
  auto meta = [&](std::string_view key) -> const std::string* {
    if (!metadata) return nullptr;
    const auto it = metadata->find(std::string(key));
    return it == metadata->end() ? nullptr : &it->template get_ref<const std::string&>();
  };
  const std::string* stored_model = meta(key_model);
  const std::string difference = stored_model ? describe_difference(model.description, *stored_model) : std::string();
  auto mismatch = [&](const std::string& what) {
    return error(storage_problem::model_mismatch, what + (difference.empty() ? "" : " (" + difference + ")"));
  };
  std::map<std::string_view, const entry*> by_name;
  for (const auto& e : entries) by_name.emplace(e.name, &e);
  for (const auto& t : model.tensors) {
    const auto it = by_name.find(t.name);
    if (it == by_name.end())
      throw mismatch("the file has no tensor '" + t.name + "' (" + shape_string(t.shape) + " in the model)");
    const auto& e = *it->second;
    const std::vector<std::uint64_t> expected(t.shape.begin(), t.shape.end());
    if (e.shape != expected)
      throw mismatch("tensor '" + t.name + "' is " + shape_string(expected) + " in the model, " +
                     shape_string(e.shape) + " in the file");
    if (e.dtype != dtype)
      throw mismatch("tensor '" + t.name + "' is " + e.dtype + " in the file, " + std::string(dtype) +
                     " in this network");
  }
  if (entries.size() != model.tensors.size())
    for (const auto& e : entries)
      if (!model.find(e.name))
        throw mismatch("the file has tensor '" + e.name + "' (" + shape_string(e.shape) +
                       "), which the model does not have");

  // 5. f2d2n's metadata, where present: the model's description and fingerprint.
  if (!difference.empty()) throw error(storage_problem::model_mismatch, "the file holds another model: " + difference);
  if (const std::string* fp = meta(key_fingerprint)) {
    const auto value = from_hex(*fp);
    if (!value) throw corrupt("metadata '" + std::string(key_fingerprint) + "' is not 16 hexadecimal digits");
    if (*value != model.fingerprint) {
      if (stored_model)  // the same description with another fingerprint: the metadata is damaged
        throw corrupt("the model fingerprint " + *fp + " does not match the stored description");
      throw error(storage_problem::model_mismatch,
                  "the file's model fingerprint is " + *fp + ", this model's " + to_hex(model.fingerprint));
    }
  }

  // 6. Checksums, where present.
  const std::byte* data = file.data() + 8 + header_size;
  if (metadata)
    for (const auto& [key, value] : metadata->items()) {
      if (!key.starts_with(key_checksum)) continue;
      const std::string name = key.substr(key_checksum.size());
      const auto it = by_name.find(name);
      if (it == by_name.end()) throw corrupt("metadata '" + key + "' names a tensor the file does not have");
      const auto stored = from_hex(value.template get_ref<const std::string&>());
      if (!stored) throw corrupt("metadata '" + key + "' is not 16 hexadecimal digits");
      const auto& e = *it->second;
      const auto actual = checksum(std::span<const std::byte>(data + e.begin, e.end - e.begin));
      if (actual != *stored)
        throw corrupt("tensor '" + name + "' does not match its checksum (stored " + to_hex(*stored) + ", computed " +
                      to_hex(actual) + "): the data is damaged");
    }

  std::vector<std::uint64_t> starts;
  for (const auto& t : model.tensors) starts.push_back(8 + header_size + by_name.at(t.name)->begin);
  return starts;
}

}  // namespace detail::safetensors

/// The safetensors file of a model's flat parameter buffer (which must be model.parameter_count
/// values long): tensors named, shaped and ordered as model.tensors, with f2d2n's metadata.
template <class S>
std::vector<std::byte> to_safetensors(const model_summary& model, std::span<const S> parameters) {
  namespace st = detail::safetensors;
  if (parameters.size() != model.parameter_count)
    throw configuration_error("f2d2n: to_safetensors: " + std::to_string(parameters.size()) +
                              " parameters given, the model has " + std::to_string(model.parameter_count));
  std::size_t covered = 0;
  std::vector<std::uint64_t> checksums;
  for (const auto& t : model.tensors) {
    if (t.offset != covered || t.offset + t.size() > parameters.size())
      throw configuration_error(
          "f2d2n: to_safetensors: the model's tensors do not cover its parameter buffer in order");
    checksums.push_back(st::checksum_le(parameters.subspan(t.offset, t.size())));
    covered += t.size();
  }
  if (covered != parameters.size())
    throw configuration_error("f2d2n: to_safetensors: the model's tensors do not cover its parameter buffer");

  const std::string header = st::make_header(model, safetensors_dtype<S>(), sizeof(S), checksums);
  std::vector<std::byte> file(8 + header.size() + parameters.size_bytes());
  st::write_u64_le(header.size(), file.data());
  std::memcpy(file.data() + 8, header.data(), header.size());
  st::store_le(parameters, file.data() + 8 + header.size());
  return file;
}

/// The flat parameter buffer of `model` stored in a safetensors file, after checking the whole
/// file: its form, that it holds exactly the model's tensors with the model's shapes in this
/// scalar type, the f2d2n metadata where present (the model's description and fingerprint) and
/// the tensors' checksums where present. A file without f2d2n's metadata (written by PyTorch or
/// numpy) is accepted. Throws storage_error naming `where`.
template <class S>
std::vector<S> from_safetensors(const model_summary& model, std::span<const std::byte> file, const std::string& where) {
  namespace st = detail::safetensors;
  const auto starts = st::verify(model, file, where, safetensors_dtype<S>());
  // Everything holds: the flat buffer, tensor by tensor.
  std::vector<S> parameters(model.parameter_count);
  for (std::size_t i = 0; i < model.tensors.size(); ++i) {
    const auto& t = model.tensors[i];
    st::load_le(file.data() + starts[i], std::span<S>(parameters).subspan(t.offset, t.size()));
  }
  return parameters;
}

/// Writes the network's parameters as a safetensors file, atomically: a reader sees the old file
/// or the whole new one, even after a crash (directory_backend::commit: temporary file, fsync,
/// rename). The file's directory is created when missing.
template <network_type Net, class S>
void save_safetensors(const network<Net, S>& net, const std::filesystem::path& path) {
  const auto file = to_safetensors<S>(summary_of<Net>(), net.parameters());
  const auto dir = path.parent_path();
  directory_backend(dir.empty() ? std::filesystem::path(".") : dir).commit(path.filename().string(), file);
}

/// Stores the network's parameters as a safetensors object under `key` (backend.commit: all or nothing).
template <network_type Net, class S>
void save_safetensors(const network<Net, S>& net, storage_backend& backend, std::string_view key) {
  backend.commit(key, to_safetensors<S>(summary_of<Net>(), net.parameters()));
}

/// Loads the network's parameters from safetensors bytes (`where` names them in errors). On any
/// error the network is unchanged.
template <network_type Net, class S>
void load_safetensors(network<Net, S>& net, std::span<const std::byte> file, const std::string& where) {
  const auto parameters = from_safetensors<S>(summary_of<Net>(), file, where);
  std::copy(parameters.begin(), parameters.end(), net.parameters().begin());
}

/// Loads the network's parameters from a safetensors file. On any error the network is unchanged.
template <network_type Net, class S>
void load_safetensors(network<Net, S>& net, const std::filesystem::path& path) {
  const auto file = detail::safetensors::read_file(path, detail::safetensors::largest_file(Net::parameter_count));
  load_safetensors(net, std::span<const std::byte>(file), path.string());
}

/// Loads the network's parameters from the safetensors object `key` of a backend. On any error
/// the network is unchanged.
template <network_type Net, class S>
void load_safetensors(network<Net, S>& net, const storage_backend& backend, std::string_view key) {
  const std::string where = backend.location() + "/" + std::string(key);
  const auto size = backend.size(key);
  if (!size) throw storage_error(where, storage_problem::missing, "no such object");
  const auto limit = detail::safetensors::largest_file(Net::parameter_count);
  if (*size > limit)
    throw storage_error(where, storage_problem::corrupt,
                        "is " + std::to_string(*size) +
                            " bytes long; a safetensors "
                            "file of this model takes at most " +
                            std::to_string(limit));
  std::vector<std::byte> file(static_cast<std::size_t>(*size));
  backend.get(key, 0, file);
  load_safetensors(net, std::span<const std::byte>(file), where);
}

}  // namespace f2d2n
