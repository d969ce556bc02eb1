// f2d2n/store/impl/checkpoint.hpp: write_checkpoint (declared in store/checkpoint.hpp).
#pragma once

#include <f2d2n/store/checkpoint.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace f2d2n {

template <class S>
void write_checkpoint(storage_backend& store, const std::string& name, const checkpoint_layout& layout,
                      const unit_state<S>& state, const agree_function& agree, std::size_t keep,
                      const checkpoint_hook& hook) {
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
        nlohmann::json c = {{"tensor", t.name},
                            {"group", group},
                            {"file", file},
                            {"offset", offset},
                            {"xxh3", to_hex(checksum(bytes))}};
        // Tensors of two or more dimensions as rows (the first) by columns (the rest): a
        // convolution's (out, kh, kw, in) weight splits by rows of out channels.
        if (t.shape.size() >= 2) c["start"] = {b.row_begin, b.column_begin}, c["size"] = {b.rows, b.columns};
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
    store.stage(name + "/part-" + std::to_string(layout.rank) + ".json",
                std::as_bytes(std::span<const char>(own_part)));
    if (hook) hook("data written");
  } catch (const std::exception& e) {
    failure = e.what();
  }
  double failed[1] = {failure.empty() ? 0.0 : 1.0};
  if (agree) agree(failed);
  if (!failure.empty())
    throw storage_error(where, storage_problem::io, "this unit could not write its part: " + failure);
  if (failed[0] != 0)
    throw storage_error(where, storage_problem::io,
                        "another unit could not write its part; the checkpoint is not committed");
  if (hook) hook("parts agreed");

  // 2. Unit 0 composes the manifest from the parts and commits it.
  if (layout.rank == 0) {
    try {
      nlohmann::json tensors = nlohmann::json::object(), groups = nlohmann::json::object(),
                     files = nlohmann::json::object();
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
      nlohmann::json m = {{"format", "f2d2n.checkpoint"},
                          {"version", 1},
                          {"library", version_string()},
                          {"dtype", std::string(safetensors_dtype<S>())},
                          {"model", {{"description", model.description}, {"fingerprint", to_hex(model.fingerprint)}}},
                          {"plan",
                           {{"description", layout.plan},
                            {"fingerprint", to_hex(layout.plan_fingerprint)},
                            {"world_size", layout.world_size}}},
                          {"position",
                           {{"epoch", state.position.epoch},
                            {"step", state.position.step},
                            {"global_step", state.position.global_step},
                            {"batch_size", state.position.batch_size},
                            {"seed", state.position.seed},
                            {"shuffle", state.position.shuffle},
                            {"drop_last", state.position.drop_last},
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

}  // namespace f2d2n
