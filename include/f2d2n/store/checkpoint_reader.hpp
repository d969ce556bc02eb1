// f2d2n/store/checkpoint_reader.hpp: reading a checkpoint (store/checkpoint.hpp) into a unit of
// any plan of the same model: the manifest checked, every needed chunk verified, then the unit's
// blocks read straight into its buffers.
#pragma once

#include <f2d2n/store/checkpoint.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace f2d2n {

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
      throw storage_error(store.location() + "/" + name, storage_problem::missing,
                          "no committed checkpoint of that name");
    if (*manifest_size > max_manifest_bytes)
      throw storage_error(where, storage_problem::corrupt,
                          "the manifest has " + std::to_string(*manifest_size) + " bytes, more than the " +
                              std::to_string(max_manifest_bytes) + " a reader accepts");
    const auto m = detail::unwrap_manifest(store.get(name + "/manifest.json"), where);
    if (detail::field<std::string>(m, "format", where) != "f2d2n.checkpoint")
      throw storage_error(where, storage_problem::bad_format, "not an f2d2n checkpoint manifest");
    if (detail::field<std::uint64_t>(m, "version", where) != 1)
      throw storage_error(where, storage_problem::bad_format,
                          "manifest version " + m["version"].dump() + " (this build reads 1)");
    const auto dtype = detail::field<std::string>(m, "dtype", where);
    if (dtype != safetensors_dtype<S>())
      throw storage_error(where, storage_problem::model_mismatch,
                          "the checkpoint holds " + dtype + " values, this network " +
                              std::string(safetensors_dtype<S>()));
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
    // Written since drop_last exists; a manifest without it was written by a run that kept its short batches.
    info.position.drop_last = pos.contains("drop_last") ? detail::field<bool>(pos, "drop_last", where) : false;
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
                          "the checkpoint holds " + info.optimizer + " state, the trainer uses " +
                              std::string(optimizer));

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
    if (parameters.size() != layout_.size)
      throw configuration_error("f2d2n: read_into: the buffer is not the layout's size");
    fill(parameters, stored_, "");
    for (std::size_t k = 0; k < state_names_.size(); ++k) {
      if (!has_group_[k] || k >= state.size()) continue;
      if (state[k].size() != layout_.size)
        throw configuration_error("f2d2n: read_into: a state buffer is not the layout's size");
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

  [[nodiscard]] std::string file_where(const std::string& file) const {
    return store_.location() + "/" + name_ + "/" + file;
  }

  /// Checks a chunk's place in its file (and the file's size, once per file).
  void check_place(const detail::stored_chunk& c, const std::string& what) {
    const std::uint64_t bytes = static_cast<std::uint64_t>(c.rows) * c.columns * sizeof(S);
    const std::uint64_t expected = file_bytes_.at(c.file);
    if (checked_files_.insert(c.file).second) {  // the file is as long as the manifest says
      const auto size = store_.size(name_ + "/" + c.file);
      if (!size)
        throw storage_error(file_where(c.file), storage_problem::missing, "a data file of the checkpoint is missing");
      if (*size != expected)
        throw storage_error(file_where(c.file),
                            *size < expected ? storage_problem::truncated : storage_problem::corrupt,
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
        if (c.row_begin == b.row_begin && c.rows == b.rows && c.column_begin == b.column_begin &&
            c.columns == b.columns) {
          check_place(c, what);
          const auto dest = out.subspan(b.offset, b.size());
          store_.get(name_ + "/" + c.file, c.offset, std::as_writable_bytes(dest));
          if (checksum(std::as_bytes(std::span<const S>(dest))) != c.sum) mismatch(c, what);
          continue;
        }
        read_chunk(c, what, buffer);
        const std::size_t r0 = std::max(b.row_begin, c.row_begin),
                          r1 = std::min(b.row_begin + b.rows, c.row_begin + c.rows);
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
  std::vector<S> parameters;          ///< in the layout's flat buffer
  std::vector<std::vector<S>> state;  ///< per optimizer state name asked for; empty when not stored
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
