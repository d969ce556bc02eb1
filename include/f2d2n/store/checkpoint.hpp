// f2d2n/store/checkpoint.hpp: sharded checkpoints (docs/storage.md is the reference).
//
// A checkpoint is a folder of a storage backend, "step-<global step, 12 digits>/":
//   unit-<rank>-<token>.bin   one data file per writing unit: the raw little-endian chunks it owns
//                             (parameters, then optimizer state), one after the other
//   part-<rank>.json          what unit <rank> wrote (its chunks), read once by unit 0 to compose:
//   manifest.json             every tensor's global shape and every chunk's extents, file, offset and
//                             checksum; the position in training; the model and plan. Written last,
//                             by unit 0, all or nothing (backend commit). No manifest, no checkpoint.
// Each unit writes only the blocks it holds and owns (replica 0; for a block that several shards
// hold whole, the lowest shard). Loading works from any plan of the same model: each unit reads the
// chunks that overlap its own blocks, checks their checksums, and copies the overlaps; nothing is
// changed until everything has been read and checked.
//
// This header works on run-time descriptions (checkpoint_layout: which blocks of which tensors a
// unit holds where); train/checkpoint.hpp connects it to networks, distributed units and trainers.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/core/unit.hpp>
#include <f2d2n/core/version.hpp>
#include <f2d2n/model/summary.hpp>
#include <f2d2n/store/backend.hpp>
#include <f2d2n/store/checksum.hpp>
#include <f2d2n/train/callbacks.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace f2d2n {

static_assert(std::endian::native == std::endian::little,
              "f2d2n: checkpoints store little-endian values as they are in memory; this machine is not little-endian");

/// A rectangular block of a tensor that a unit holds: rows [row_begin, row_begin + rows) and
/// columns [column_begin, column_begin + columns) (a one-dimensional tensor has one column),
/// stored row-major and contiguous at `offset` in the unit's flat buffer.
struct tensor_block {
  std::size_t tensor = 0;  ///< index into model_summary::tensors
  std::size_t row_begin = 0, rows = 0, column_begin = 0, columns = 0;
  std::size_t offset = 0;
  bool owner = true;  ///< this unit writes the block into checkpoints (one holder of each block does)
  [[nodiscard]] std::size_t size() const noexcept { return rows * columns; }
};

/// What one unit holds of a model, and where.
struct checkpoint_layout {
  const model_summary* model = nullptr;
  std::vector<tensor_block> blocks;
  std::size_t size = 0;  ///< values in the unit's flat buffer
  unit_id rank = 0;
  std::size_t world_size = 1;
  std::string plan;            ///< the plan's description ("serial" for one network)
  std::uint64_t plan_fingerprint = 0;
};

/// The layout of a whole network in one process: every tensor whole, at its place.
inline checkpoint_layout serial_layout(const model_summary& m) {
  checkpoint_layout l;
  l.model = &m;
  for (std::size_t t = 0; t < m.tensors.size(); ++t)
    l.blocks.push_back({t, 0, m.tensors[t].rows(), 0, m.tensors[t].columns(), m.tensors[t].offset, true});
  l.size = m.parameter_count;
  l.plan = "serial";
  return l;
}

/// A unit's state, as a checkpoint reads and writes it: views of its buffers.
template <class S>
struct unit_state {
  std::span<const S> parameters;
  std::string_view optimizer;                  ///< "sgd", "adam"
  std::vector<std::string_view> state_names;   ///< the optimizer's per-parameter buffers
  std::vector<std::span<const S>> state;       ///< each empty when not allocated (before the first step)
  std::uint64_t optimizer_steps = 0;
  double learning_rate = 0;
  nlohmann::json optimizer_options;            ///< stored for the record
  training_position position;
};

/// How a unit agrees with the others: sums the values over every unit of the cluster (nothing to
/// do for one process). Every unit calls it the same number of times.
using agree_function = std::function<void(std::span<double>)>;

namespace detail {
template <class S>
constexpr const char* dtype_of() {
  static_assert(std::is_same_v<S, float> || std::is_same_v<S, double>, "f2d2n: checkpoints store float or double");
  return std::is_same_v<S, float> ? "F32" : "F64";
}
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
  return std::string(manifest_prefix) + to_hex(sum) + std::string(manifest_middle) + text + std::string(manifest_suffix);
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
  if (it == j.end()) throw storage_error(where, storage_problem::corrupt, std::string("the manifest has no '") + name + "'");
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
    throw storage_error(where, storage_problem::corrupt, std::string("the manifest's '") + name + "' is wrong: " + e.what());
  }
}

inline const nlohmann::json& object_field(const nlohmann::json& j, const char* name, const std::string& where) {
  const auto it = j.find(name);
  if (it == j.end() || !it->is_object())
    throw storage_error(where, storage_problem::corrupt, std::string("the manifest has no object '") + name + "'");
  return *it;
}

/// A tensor's chunks from a manifest, checked: inside the tensor, no overlap, covering it whole.
inline std::vector<stored_chunk> chunks_of(const nlohmann::json& entry, const tensor_summary& t, const std::string& what,
                                           const std::string& where, const std::set<std::string>& files) {
  const auto shape = entry.find("shape");
  const std::vector<std::size_t> expected = t.shape;
  if (shape == entry.end() || !shape->is_array() || shape->size() != expected.size())
    throw storage_error(where, storage_problem::corrupt, what + ": no shape of rank " + std::to_string(expected.size()));
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
      const std::size_t rank = expected.size();
      if (p == c.end() || !p->is_array() || p->size() != rank || !(*p)[0].is_number_unsigned() ||
          (rank == 2 && !(*p)[1].is_number_unsigned()))
        throw storage_error(where, storage_problem::corrupt, what + ": a chunk's '" + name + "' is wrong");
      return std::pair<std::uint64_t, std::uint64_t>{(*p)[0].get<std::uint64_t>(), rank == 2 ? (*p)[1].get<std::uint64_t>() : 0};
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

/// The largest manifest a reader accepts (about a million chunks), so that a damaged or hostile
/// store cannot make it read an unbounded file into memory.
inline constexpr std::uint64_t max_manifest_bytes = std::uint64_t{256} << 20;

/// What a checkpoint holds besides the tensors (what load_checkpoint returns).
struct checkpoint_info {
  std::string name;  ///< the folder: "step-000000000120"
  training_position position;
  std::string optimizer;
  std::uint64_t optimizer_steps = 0;
  double learning_rate = 0;
  std::string plan;
  std::uint64_t plan_fingerprint = 0;
  std::size_t world_size = 0;
  /// Newer checkpoints passed over by a resume, each with the reason (checkpointer::resume).
  std::vector<std::string> skipped;
};

/// Called at each phase of writing a checkpoint ("data written", "parts agreed", "manifest
/// committed", "pruned"): progress reports, and fault-injection tests.
using checkpoint_hook = std::function<void(std::string_view phase)>;

/// Writes this unit's part of checkpoint `name` (every unit of the cluster calls it together,
/// with the same name) and, on unit 0, commits the manifest and removes all but the newest `keep`
/// committed checkpoints (0: keep all) and any uncommitted folder. Returns when the checkpoint is
/// committed on every unit; throws storage_error on every unit when any unit failed.
template <class S>
void write_checkpoint(storage_backend& store, const std::string& name, const checkpoint_layout& layout,
                      const unit_state<S>& state, const agree_function& agree, std::size_t keep = 0,
                      const checkpoint_hook& hook = {}) {
  const auto& model = *layout.model;
  const std::string where = store.location() + "/" + name;
  std::string failure, own_part;
  nlohmann::json manifest;
  // 1. This unit's data file and its part of the manifest.
  try {
    if (state.parameters.size() != layout.size)
      throw configuration_error("f2d2n: a checkpoint of " + std::to_string(state.parameters.size()) +
                                " parameters for a layout of " + std::to_string(layout.size));
    const std::string file = "unit-" + std::to_string(layout.rank) + "-" + detail::file_token() + ".bin";
    std::vector<std::span<const std::byte>> pieces;
    nlohmann::json chunks = nlohmann::json::array();
    std::uint64_t offset = 0;
    auto add = [&](std::span<const S> buffer, const std::string& group) {
      for (const auto& b : layout.blocks) {
        if (!b.owner) continue;
        const auto bytes = std::as_bytes(buffer.subspan(b.offset, b.size()));
        const auto& t = model.tensors[b.tensor];
        nlohmann::json c = {{"tensor", t.name}, {"group", group}, {"file", file}, {"offset", offset},
                            {"xxh3", to_hex(checksum(bytes))}};
        if (t.shape.size() == 2) c["start"] = {b.row_begin, b.column_begin}, c["size"] = {b.rows, b.columns};
        else c["start"] = {b.row_begin}, c["size"] = {b.rows};
        chunks.push_back(std::move(c));
        pieces.push_back(bytes);
        offset += bytes.size();
      }
    };
    add(state.parameters, "");
    for (std::size_t k = 0; k < state.state.size(); ++k)
      if (!state.state[k].empty()) add(state.state[k], std::string(state.state_names[k]));
    nlohmann::json part = {{"rank", layout.rank}, {"chunks", std::move(chunks)}};
    if (offset > 0) {
      store.put(name + "/" + file, byte_pieces(pieces));
      part["file"] = file;
      part["bytes"] = offset;
    }
    own_part = part.dump();
    store.stage(name + "/part-" + std::to_string(layout.rank) + ".json", std::as_bytes(std::span<const char>(own_part)));
    if (hook) hook("data written");
  } catch (const std::exception& e) {
    failure = e.what();
  }
  double failed[1] = {failure.empty() ? 0.0 : 1.0};
  if (agree) agree(failed);
  if (!failure.empty()) throw storage_error(where, storage_problem::io, "this unit could not write its part: " + failure);
  if (failed[0] != 0)
    throw storage_error(where, storage_problem::io, "another unit could not write its part; the checkpoint is not committed");
  if (hook) hook("parts agreed");

  // 2. Unit 0 composes the manifest from the parts and commits it.
  if (layout.rank == 0) {
    try {
      nlohmann::json tensors = nlohmann::json::object(), groups = nlohmann::json::object(), files = nlohmann::json::object();
      for (std::size_t r = 0; r < layout.world_size; ++r) {
        const auto key = name + "/part-" + std::to_string(r) + ".json";
        const auto bytes = r == layout.rank ? std::vector<std::byte>{} : store.get(key);
        const auto part = nlohmann::json::parse(
            r == layout.rank ? std::string_view(own_part)
                             : std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
        if (part.contains("file")) files[part["file"].get<std::string>()] = {{"rank", r}, {"bytes", part["bytes"]}};
        for (auto c : part["chunks"]) {
          const auto tensor = c["tensor"].get<std::string>();
          const auto group = c["group"].get<std::string>();
          c.erase("tensor");
          c.erase("group");
          auto& entry = group.empty() ? tensors[tensor] : groups[group][tensor];
          if (!entry.contains("shape")) entry["shape"] = model.find(tensor)->shape;
          entry["chunks"].push_back(std::move(c));
        }
      }
      nlohmann::json m = {
          {"format", "f2d2n.checkpoint"},
          {"version", 1},
          {"library", version_string()},
          {"dtype", detail::dtype_of<S>()},
          {"model", {{"description", model.description}, {"fingerprint", to_hex(model.fingerprint)}}},
          {"plan", {{"description", layout.plan}, {"fingerprint", to_hex(layout.plan_fingerprint)}, {"world_size", layout.world_size}}},
          {"position",
           {{"epoch", state.position.epoch},
            {"step", state.position.step},
            {"global_step", state.position.global_step},
            {"batch_size", state.position.batch_size},
            {"seed", state.position.seed},
            {"shuffle", state.position.shuffle},
            {"max_steps_per_epoch", state.position.max_steps_per_epoch}}},
          {"optimizer",
           {{"kind", state.optimizer},
            {"steps", state.optimizer_steps},
            {"learning_rate", state.learning_rate},
            {"options", state.optimizer_options},
            {"state", groups}}},
          {"files", files},
          {"tensors", tensors}};
      // Every tensor must be there, whole (a checkpoint that another plan cannot load is refused now).
      std::set<std::string> file_names;
      for (auto& [f, _] : files.items()) file_names.insert(f);
      for (const auto& t : model.tensors) {
        if (!tensors.contains(t.name))
          throw storage_error(where, storage_problem::incomplete, "no unit wrote tensor " + t.name);
        detail::chunks_of(tensors[t.name], t, t.name, where, file_names);
      }
      store.commit(name + "/manifest.json", std::as_bytes(std::span<const char>(detail::wrap_manifest(m))));
      manifest = std::move(m);
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  failed[0] = failure.empty() ? 0.0 : 1.0;
  if (agree) agree(failed);
  if (!failure.empty()) throw storage_error(where, storage_problem::io, "could not commit the manifest: " + failure);
  if (failed[0] != 0) throw storage_error(where, storage_problem::io, "unit 0 could not commit the manifest");
  if (hook) hook("manifest committed");

  // 3. Unit 0 tidies up: files of this checkpoint its manifest does not name, torn folders, and
  // committed checkpoints past the newest `keep`. (Every unit is past its writes: nothing is
  // being written now.) A failure here leaves junk, never a wrong checkpoint: not an error.
  if (layout.rank == 0) {
    try {
      std::map<std::string, std::vector<std::string>> folders;
      for (auto& key : store.list("step-")) {
        const auto slash = key.find('/');
        if (slash == std::string::npos) continue;
        folders[key.substr(0, slash)].push_back(key.substr(slash + 1));
      }
      std::vector<std::string> committed;
      for (const auto& [folder, keys] : folders)
        if (std::find(keys.begin(), keys.end(), "manifest.json") != keys.end() && detail::step_of_name(folder))
          committed.push_back(folder);
      std::sort(committed.begin(), committed.end());  // zero-padded: by step
      const std::size_t drop = keep > 0 && committed.size() > keep ? committed.size() - keep : 0;
      for (const auto& [folder, keys] : folders) {
        const bool is_committed = std::binary_search(committed.begin(), committed.end(), folder);
        const bool dropped = is_committed && std::lower_bound(committed.begin(), committed.end(), folder) <
                                                 committed.begin() + static_cast<std::ptrdiff_t>(drop);
        if (folder == name) {
          const auto files_named = [&] {
            std::set<std::string> s{"manifest.json"};
            for (std::size_t r = 0; r < layout.world_size; ++r) s.insert("part-" + std::to_string(r) + ".json");
            return s;
          }();
          std::set<std::string> keepers = files_named;
          for (auto& [f, _] : manifest["files"].items()) keepers.insert(f);
          for (const auto& k : keys)
            if (!keepers.count(k)) store.remove(folder + "/" + k);
        } else if (!is_committed || dropped) {
          for (const auto& k : keys)
            if (k != "manifest.json") store.remove(folder + "/" + k);
          if (is_committed) store.remove(folder + "/manifest.json");  // last: it stays a checkpoint until the end
        }
      }
    } catch (const std::exception&) {
    }
    if (hook) hook("pruned");
  }
}

/// The committed checkpoints in the store, oldest first ("step-..." folder names).
inline std::vector<std::string> list_checkpoints(const storage_backend& store) {
  std::vector<std::string> out;
  for (const auto& key : store.list("step-")) {
    const auto slash = key.find('/');
    if (slash != std::string::npos && key.substr(slash + 1) == "manifest.json" &&
        detail::step_of_name(std::string_view(key).substr(0, slash)))
      out.push_back(key.substr(0, slash));
  }
  std::sort(out.begin(), out.end());
  return out;
}

/// The newest committed checkpoint, or nothing.
inline std::optional<std::string> latest_checkpoint(const storage_backend& store) {
  auto all = list_checkpoints(store);
  if (all.empty()) return std::nullopt;
  return all.back();
}

/// Reads checkpoint `name` for a unit of layout `layout`, in three calls: the constructor reads and
/// checks the manifest (format, version, dtype, model, optimizer, every tensor's chunks); verify()
/// reads every stored chunk that overlaps the unit's blocks, through one reusable buffer, and checks
/// the data files' sizes and the chunks' checksums; read_into() then reads the unit's blocks
/// straight into its buffers (checking each chunk's checksum again on what it read). Nothing is
/// changed before read_into, and read_into fails only when a file changed after verify().
template <class S>
class checkpoint_reader {
 public:
  /// `optimizer` (not empty): the optimizer the unit trains with, whose state buffers `state_names`
  /// are read when the checkpoint holds them (it must hold the same optimizer).
  checkpoint_reader(const storage_backend& store, const std::string& name, const checkpoint_layout& layout,
                    std::string_view optimizer = {}, std::span<const std::string_view> state_names = {})
      : store_(store), name_(name), layout_(layout), where_(store.location() + "/" + name_ + "/manifest.json"),
        stored_state_(state_names.size()), has_group_(state_names.size(), false),
        state_names_(state_names.begin(), state_names.end()) {
    const auto& model = *layout.model;
    const std::string& where = where_;
    const auto manifest_size = store.size(name + "/manifest.json");
    if (!manifest_size)
      throw storage_error(store.location() + "/" + name, storage_problem::missing, "no committed checkpoint of that name");
    if (*manifest_size > max_manifest_bytes)
      throw storage_error(where, storage_problem::corrupt,
                          "the manifest has " + std::to_string(*manifest_size) + " bytes, more than the " +
                              std::to_string(max_manifest_bytes) + " a reader accepts");
    const auto m = detail::unwrap_manifest(store.get(name + "/manifest.json"), where);
    if (detail::field<std::string>(m, "format", where) != "f2d2n.checkpoint")
      throw storage_error(where, storage_problem::bad_format, "not an f2d2n checkpoint manifest");
    if (detail::field<std::uint64_t>(m, "version", where) != 1)
      throw storage_error(where, storage_problem::bad_format, "manifest version " + m["version"].dump() + " (this build reads 1)");
    const auto dtype = detail::field<std::string>(m, "dtype", where);
    if (dtype != detail::dtype_of<S>())
      throw storage_error(where, storage_problem::model_mismatch,
                          std::string("the checkpoint holds ") + dtype + " values, this network " + detail::dtype_of<S>());
    const auto& mm = detail::object_field(m, "model", where);
    const auto description = detail::field<std::string>(mm, "description", where);
    if (description != model.description)
      throw storage_error(where, storage_problem::model_mismatch,
                          "another model: " + describe_difference(model.description, description));
    checkpoint_info info;
    info.name = name;
    const auto& pos = detail::object_field(m, "position", where);
    info.position.epoch = detail::field<std::uint64_t>(pos, "epoch", where);
    info.position.step = detail::field<std::uint64_t>(pos, "step", where);
    info.position.global_step = detail::field<std::uint64_t>(pos, "global_step", where);
    info.position.batch_size = detail::field<std::uint64_t>(pos, "batch_size", where);
    info.position.seed = detail::field<std::uint64_t>(pos, "seed", where);
    info.position.shuffle = detail::field<bool>(pos, "shuffle", where);
    info.position.max_steps_per_epoch = detail::field<std::uint64_t>(pos, "max_steps_per_epoch", where);
    const auto& opt = detail::object_field(m, "optimizer", where);
    info.optimizer = detail::field<std::string>(opt, "kind", where);
    info.optimizer_steps = detail::field<std::uint64_t>(opt, "steps", where);
    info.learning_rate = detail::field<double>(opt, "learning_rate", where);
    const auto& plan = detail::object_field(m, "plan", where);
    info.plan = detail::field<std::string>(plan, "description", where);
    info.world_size = detail::field<std::uint64_t>(plan, "world_size", where);
    const auto plan_fp = from_hex(detail::field<std::string>(plan, "fingerprint", where));
    if (!plan_fp) throw storage_error(where, storage_problem::corrupt, "the plan's fingerprint is not 16 hex digits");
    info.plan_fingerprint = *plan_fp;
    if (!optimizer.empty() && info.optimizer != optimizer)
      throw storage_error(where, storage_problem::model_mismatch,
                          "the checkpoint holds " + info.optimizer + " state, the trainer uses " + std::string(optimizer));

    const auto& files_json = detail::object_field(m, "files", where);
    std::set<std::string> files;
      for (auto& [f, v] : files_json.items()) {
      if (f.empty() || f.find('/') != std::string::npos || f.find("..") != std::string::npos || !v.is_object())
        throw storage_error(where, storage_problem::corrupt, "the manifest lists a bad file name");
      files.insert(f);
      file_bytes_[f] = detail::field<std::uint64_t>(v, "bytes", where);
    }
    const auto& tensors = detail::object_field(m, "tensors", where);
    for (const auto& t : model.tensors) {
      const auto it = tensors.find(t.name);
      if (it == tensors.end() || !it->is_object())
        throw storage_error(where, storage_problem::model_mismatch, "the checkpoint has no tensor " + t.name);
      stored_[t.name] = detail::chunks_of(*it, t, t.name, where, files);
    }
    if (tensors.size() != model.tensors.size())
      throw storage_error(where, storage_problem::model_mismatch, "the checkpoint has tensors the model does not have");
    const auto& groups = detail::object_field(opt, "state", where);
    if (!optimizer.empty()) {
      for (std::size_t k = 0; k < state_names.size(); ++k) {
        const auto g = groups.find(std::string(state_names[k]));
        if (g == groups.end()) continue;
        if (!g->is_object()) throw storage_error(where, storage_problem::corrupt, "bad optimizer state group");
        has_group_[k] = true;
        for (const auto& t : model.tensors) {
          const auto it = g->find(t.name);
          const std::string what = std::string(state_names[k]) + " of " + t.name;
          if (it == g->end()) throw storage_error(where, storage_problem::incomplete, "the checkpoint has no " + what);
          stored_state_[k][t.name] = detail::chunks_of(*it, t, what, where, files);
        }
      }
    }

    info_ = std::move(info);
  }

  [[nodiscard]] const checkpoint_info& info() const noexcept { return info_; }
  /// Whether the checkpoint holds state buffer k (of the names given).
  [[nodiscard]] bool has_state(std::size_t k) const noexcept { return has_group_[k]; }

  /// Reads every chunk the unit needs and checks it; storage_error on the first problem.
  void verify() {
    // Through one buffer of at most 4 MiB (new memory is slow to touch on some machines), the
    // checksum computed piece by piece.
    std::vector<std::byte> buffer;
    XXH3_state_t state;
    for_each_needed([&](const detail::stored_chunk& c, const std::string& what) {
      check_place(c, what);
      const std::uint64_t bytes = static_cast<std::uint64_t>(c.rows) * c.columns * sizeof(S);
      buffer.resize(static_cast<std::size_t>(std::min<std::uint64_t>(bytes, std::uint64_t{4} << 20)));
      XXH3_64bits_reset(&state);
      for (std::uint64_t at = 0; at < bytes; at += buffer.size()) {
        const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), bytes - at));
        store_.get(name_ + "/" + c.file, c.offset + at, std::span<std::byte>(buffer.data(), n));
        XXH3_64bits_update(&state, buffer.data(), n);
      }
      if (XXH3_64bits_digest(&state) != c.sum) mismatch(c, what);
    });
  }

  /// Reads the unit's blocks into `parameters` (layout.size values) and, for each state buffer the
  /// checkpoint holds, into `state[k]` (layout.size values; the others are not touched).
  void read_into(std::span<S> parameters, std::span<const std::span<S>> state) {
    if (parameters.size() != layout_.size) throw configuration_error("f2d2n: read_into: the buffer is not the layout's size");
    fill(parameters, stored_, "");
    for (std::size_t k = 0; k < state_names_.size(); ++k) {
      if (!has_group_[k] || k >= state.size()) continue;
      if (state[k].size() != layout_.size) throw configuration_error("f2d2n: read_into: a state buffer is not the layout's size");
      fill(state[k], stored_state_[k], std::string(state_names_[k]) + " of ");
    }
  }

 private:
  using chunk_map = std::map<std::string, std::vector<detail::stored_chunk>>;

  /// Calls f(chunk, what) once for every stored chunk that overlaps a block of the layout.
  template <class F>
  void for_each_needed(F f) const {
    auto walk = [&](const chunk_map& from, const std::string& prefix) {
      std::set<std::pair<std::string, std::uint64_t>> seen;
      for (const auto& b : layout_.blocks) {
        const auto& t = layout_.model->tensors[b.tensor];
        for (const auto& c : from.at(t.name))
          if (overlaps(b, c) && seen.insert({c.file, c.offset}).second) f(c, prefix + t.name);
      }
    };
    walk(stored_, "");
    for (std::size_t k = 0; k < state_names_.size(); ++k)
      if (has_group_[k]) walk(stored_state_[k], std::string(state_names_[k]) + " of ");
  }

  static bool overlaps(const tensor_block& b, const detail::stored_chunk& c) noexcept {
    return b.row_begin < c.row_begin + c.rows && c.row_begin < b.row_begin + b.rows &&
           b.column_begin < c.column_begin + c.columns && c.column_begin < b.column_begin + b.columns;
  }

  [[nodiscard]] std::string file_where(const std::string& file) const { return store_.location() + "/" + name_ + "/" + file; }

  /// Checks a chunk's place in its file (and the file's size, once per file).
  void check_place(const detail::stored_chunk& c, const std::string& what) {
    const std::uint64_t bytes = static_cast<std::uint64_t>(c.rows) * c.columns * sizeof(S);
    const std::uint64_t expected = file_bytes_.at(c.file);
    if (checked_files_.insert(c.file).second) {  // the file is as long as the manifest says
      const auto size = store_.size(name_ + "/" + c.file);
      if (!size) throw storage_error(file_where(c.file), storage_problem::missing, "a data file of the checkpoint is missing");
      if (*size != expected)
        throw storage_error(file_where(c.file), *size < expected ? storage_problem::truncated : storage_problem::corrupt,
                            "holds " + std::to_string(*size) + " bytes, the manifest says " + std::to_string(expected));
    }
    if (c.offset > expected || bytes > expected - c.offset)
      throw storage_error(where_, storage_problem::corrupt, what + ": a chunk lies past the end of " + c.file);
  }

  void mismatch(const detail::stored_chunk& c, const std::string& what) const {
    const std::uint64_t bytes = static_cast<std::uint64_t>(c.rows) * c.columns * sizeof(S);
    throw storage_error(file_where(c.file), storage_problem::corrupt,
                        what + ": a chunk's checksum does not match (bytes " + std::to_string(c.offset) + ".." +
                            std::to_string(c.offset + bytes) + ")");
  }

  /// Reads a whole chunk into `buffer` (grown as needed) and checks its checksum.
  void read_chunk(const detail::stored_chunk& c, const std::string& what, std::vector<S>& buffer) {
    check_place(c, what);
    const std::size_t n = c.rows * c.columns;
    if (buffer.size() < n) buffer.resize(n);
    const std::span<S> values(buffer.data(), n);
    store_.get(name_ + "/" + c.file, c.offset, std::as_writable_bytes(values));
    if (checksum(std::as_bytes(std::span<const S>(values))) != c.sum) mismatch(c, what);
  }

  /// Fills the layout's blocks of `out` from the chunks of `from`: a chunk that is exactly a block
  /// is read in place; others through a buffer, the overlaps copied.
  void fill(std::span<S> out, const chunk_map& from, const std::string& prefix) {
    std::vector<S> buffer;
    for (const auto& b : layout_.blocks) {
      const auto& t = layout_.model->tensors[b.tensor];
      for (const auto& c : from.at(t.name)) {
        if (!overlaps(b, c)) continue;
        const std::string what = prefix + t.name;
        if (c.row_begin == b.row_begin && c.rows == b.rows && c.column_begin == b.column_begin && c.columns == b.columns) {
          check_place(c, what);
          const auto dest = out.subspan(b.offset, b.size());
          store_.get(name_ + "/" + c.file, c.offset, std::as_writable_bytes(dest));
          if (checksum(std::as_bytes(std::span<const S>(dest))) != c.sum) mismatch(c, what);
          continue;
        }
        read_chunk(c, what, buffer);
        const std::size_t r0 = std::max(b.row_begin, c.row_begin), r1 = std::min(b.row_begin + b.rows, c.row_begin + c.rows);
        const std::size_t c0 = std::max(b.column_begin, c.column_begin),
                          c1 = std::min(b.column_begin + b.columns, c.column_begin + c.columns);
        for (std::size_t r = r0; r < r1; ++r)
          std::copy_n(buffer.data() + (r - c.row_begin) * c.columns + (c0 - c.column_begin), c1 - c0,
                      out.data() + b.offset + (r - b.row_begin) * b.columns + (c0 - b.column_begin));
      }
    }
  }

  const storage_backend& store_;
  std::string name_;
  const checkpoint_layout& layout_;
  std::string where_;
  checkpoint_info info_;
  std::map<std::string, std::uint64_t> file_bytes_;
  chunk_map stored_;
  std::vector<chunk_map> stored_state_;
  std::vector<bool> has_group_;
  std::vector<std::string_view> state_names_;
  std::set<std::string> checked_files_;
};

/// What read_checkpoint found: every value this unit holds, read and checked, not yet applied.
template <class S>
struct loaded_checkpoint {
  checkpoint_info info;
  std::vector<S> parameters;         ///< in the layout's flat buffer
  std::vector<std::vector<S>> state; ///< per optimizer state name asked for; empty when not stored
};

/// checkpoint_reader in one call, into new buffers: nothing of the unit is changed.
template <class S>
loaded_checkpoint<S> read_checkpoint(const storage_backend& store, const std::string& name,
                                     const checkpoint_layout& layout, std::string_view optimizer = {},
                                     std::span<const std::string_view> state_names = {}) {
  checkpoint_reader<S> reader(store, name, layout, optimizer, state_names);
  loaded_checkpoint<S> out;
  out.parameters.resize(layout.size);
  out.state.resize(state_names.size());
  std::vector<std::span<S>> spans(state_names.size());
  for (std::size_t k = 0; k < state_names.size(); ++k) {
    if (!reader.has_state(k)) continue;
    out.state[k].resize(layout.size);
    spans[k] = out.state[k];
  }
  reader.read_into(out.parameters, spans);
  out.info = reader.info();
  return out;
}

}  // namespace f2d2n
