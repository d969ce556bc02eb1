// f2d2n/store/detail/checkpoint_format.hpp: the pieces of the checkpoint format (docs/storage.md):
// folder names, the manifest's frame, typed reading of its fields, a tensor's chunk list.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/model/summary.hpp>
#include <f2d2n/store/checksum.hpp>
#include <f2d2n/store/dtype.hpp>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace f2d2n {

namespace detail {
constexpr std::string_view manifest_prefix = "{\"xxh3\":\"";
constexpr std::string_view manifest_middle = "\",\"manifest\":";
constexpr std::string_view manifest_suffix = "}\n";

inline std::string checkpoint_name(std::uint64_t global_step) {
  std::string digits = std::to_string(global_step);
  return "step-" + std::string(digits.size() < 12 ? 12 - digits.size() : 0, '0') + digits;
}
/// The global step of a checkpoint folder's name, or nothing.
inline std::optional<std::uint64_t> step_of_name(std::string_view name) {
  if (!name.starts_with("step-") || name.size() < 6 || name.size() > 25) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : name.substr(5)) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return v;
}

/// The manifest file: its body's checksum, then the body, so that every byte of it is checked
///   {"xxh3":"<16 hex digits of XXH3-64 of BODY>","manifest":BODY}\n
inline std::string wrap_manifest(const nlohmann::json& body) {
  const std::string text = body.dump();
  const auto sum = checksum(std::as_bytes(std::span<const char>(text)));
  return std::string(manifest_prefix) + to_hex(sum) + std::string(manifest_middle) + text +
         std::string(manifest_suffix);
}

/// The body of a manifest file, checked; storage_error naming `where` otherwise.
inline nlohmann::json unwrap_manifest(std::span<const std::byte> file, const std::string& where) {
  const std::string_view s(reinterpret_cast<const char*>(file.data()), file.size());
  const std::size_t head = manifest_prefix.size() + 16 + manifest_middle.size();
  if (s.size() < head + manifest_suffix.size() + 2 || !s.starts_with(manifest_prefix) ||
      s.substr(manifest_prefix.size() + 16, manifest_middle.size()) != manifest_middle || !s.ends_with(manifest_suffix))
    throw storage_error(where, storage_problem::corrupt, "not a checkpoint manifest (its frame is damaged or cut)");
  const auto expected = from_hex(s.substr(manifest_prefix.size(), 16));
  const auto body = s.substr(head, s.size() - head - manifest_suffix.size());
  if (!expected || *expected != checksum(std::as_bytes(std::span<const char>(body.data(), body.size()))))
    throw storage_error(where, storage_problem::corrupt, "the manifest's checksum does not match its contents");
  try {
    auto j = nlohmann::json::parse(body);
    if (!j.is_object()) throw storage_error(where, storage_problem::corrupt, "the manifest is not a JSON object");
    return j;
  } catch (const nlohmann::json::exception& e) {
    throw storage_error(where, storage_problem::corrupt, std::string("the manifest is not JSON: ") + e.what());
  }
}

/// A chunk of a stored tensor, as a manifest lists it.
struct stored_chunk {
  std::string file;
  std::uint64_t offset = 0;  ///< in the file, bytes
  std::size_t row_begin = 0, rows = 0, column_begin = 0, columns = 0;
  std::uint64_t sum = 0;
};

/// Reads a field of a manifest, typed; storage_error (corrupt) naming it otherwise.
template <class T>
T field(const nlohmann::json& j, const char* name, const std::string& where) {
  const auto it = j.find(name);
  if (it == j.end())
    throw storage_error(where, storage_problem::corrupt, std::string("the manifest has no '") + name + "'");
  try {
    if constexpr (std::is_same_v<T, std::uint64_t> || std::is_same_v<T, std::size_t>) {
      if (!it->is_number_unsigned()) throw std::invalid_argument("not a whole number");
    } else if constexpr (std::is_same_v<T, double>) {
      if (!it->is_number()) throw std::invalid_argument("not a number");
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (!it->is_string()) throw std::invalid_argument("not a string");
    } else if constexpr (std::is_same_v<T, bool>) {
      if (!it->is_boolean()) throw std::invalid_argument("not true or false");
    }
    return it->template get<T>();
  } catch (const std::exception& e) {
    throw storage_error(where, storage_problem::corrupt,
                        std::string("the manifest's '") + name + "' is wrong: " + e.what());
  }
}

inline const nlohmann::json& object_field(const nlohmann::json& j, const char* name, const std::string& where) {
  const auto it = j.find(name);
  if (it == j.end() || !it->is_object())
    throw storage_error(where, storage_problem::corrupt, std::string("the manifest has no object '") + name + "'");
  return *it;
}

/// A tensor's chunks from a manifest, checked: inside the tensor, no overlap, covering it whole.
inline std::vector<stored_chunk> chunks_of(const nlohmann::json& entry, const tensor_summary& t,
                                           const std::string& what, const std::string& where,
                                           const std::set<std::string>& files) {
  const auto shape = entry.find("shape");
  const std::vector<std::size_t> expected = t.shape;
  if (shape == entry.end() || !shape->is_array() || shape->size() != expected.size())
    throw storage_error(where, storage_problem::corrupt,
                        what + ": no shape of rank " + std::to_string(expected.size()));
  for (std::size_t k = 0; k < expected.size(); ++k)
    if (!(*shape)[k].is_number_unsigned() || (*shape)[k].get<std::uint64_t>() != expected[k])
      throw storage_error(where, storage_problem::model_mismatch,
                          what + " has shape " + shape->dump() + " in the checkpoint, the model's is " +
                              nlohmann::json(expected).dump());
  const auto list = entry.find("chunks");
  if (list == entry.end() || !list->is_array() || list->empty() || list->size() > t.size())
    throw storage_error(where, storage_problem::corrupt, what + ": no list of chunks");
  std::vector<stored_chunk> out;
  std::uint64_t covered = 0;
  for (const auto& c : *list) {
    if (!c.is_object()) throw storage_error(where, storage_problem::corrupt, what + ": a chunk is not an object");
    stored_chunk k;
    k.file = field<std::string>(c, "file", where);
    if (!files.count(k.file))
      throw storage_error(where, storage_problem::corrupt, what + ": a chunk names a file the manifest does not list");
    k.offset = field<std::uint64_t>(c, "offset", where);
    const auto at = c.find("start"), size = c.find("size");
    auto pair = [&](nlohmann::json::const_iterator p, const char* name) {
      const std::size_t rank = expected.size() >= 2 ? 2 : 1;  // rows by columns (the other dimensions)
      if (p == c.end() || !p->is_array() || p->size() != rank || !(*p)[0].is_number_unsigned() ||
          (rank == 2 && !(*p)[1].is_number_unsigned()))
        throw storage_error(where, storage_problem::corrupt, what + ": a chunk's '" + name + "' is wrong");
      return std::pair<std::uint64_t, std::uint64_t>{(*p)[0].get<std::uint64_t>(),
                                                     rank == 2 ? (*p)[1].get<std::uint64_t>() : 0};
    };
    const auto [r0, c0] = pair(at, "start");
    auto [rn, cn] = pair(size, "size");
    if (expected.size() == 1) cn = 1;
    if (rn == 0 || cn == 0 || r0 > t.rows() || rn > t.rows() - r0 || c0 > t.columns() || cn > t.columns() - c0)
      throw storage_error(where, storage_problem::corrupt, what + ": a chunk lies outside the tensor");
    k.row_begin = r0, k.rows = rn, k.column_begin = c0, k.columns = cn;
    const auto sum = from_hex(field<std::string>(c, "xxh3", where));
    if (!sum) throw storage_error(where, storage_problem::corrupt, what + ": a chunk's checksum is not 16 hex digits");
    k.sum = *sum;
    for (const auto& o : out)
      if (k.row_begin < o.row_begin + o.rows && o.row_begin < k.row_begin + k.rows &&
          k.column_begin < o.column_begin + o.columns && o.column_begin < k.column_begin + k.columns)
        throw storage_error(where, storage_problem::incomplete, what + ": two chunks overlap");
    covered += rn * cn;
    out.push_back(std::move(k));
  }
  if (covered != t.size())
    throw storage_error(where, storage_problem::incomplete,
                        what + ": the chunks cover " + std::to_string(covered) + " of its " + std::to_string(t.size()) +
                            " values");
  return out;
}

/// A random token for a unit's data file name (files of an earlier attempt at the same step are
/// never overwritten while a committed manifest may still name them).
inline std::string file_token() {
  std::random_device rd;
  const std::uint64_t v = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  return to_hex(v).substr(0, 12);
}
}  // namespace detail

}  // namespace f2d2n
