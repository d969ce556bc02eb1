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
// Layout of the code: the types and calls here, write_checkpoint's definition in
// impl/checkpoint.hpp, the manifest's format in detail/checkpoint_format.hpp, and reading in
// checkpoint_reader.hpp.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/core/unit.hpp>
#include <f2d2n/core/version.hpp>
#include <f2d2n/model/summary.hpp>
#include <f2d2n/store/backend.hpp>
#include <f2d2n/store/checksum.hpp>
#include <f2d2n/store/detail/checkpoint_format.hpp>
#include <f2d2n/train/callbacks.hpp>

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
  std::string plan;  ///< the plan's description ("serial" for one network)
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
  std::string_view optimizer;                 ///< "sgd", "adam"
  std::vector<std::string_view> state_names;  ///< the optimizer's per-parameter buffers
  std::vector<std::span<const S>> state;      ///< each empty when not allocated (before the first step)
  std::uint64_t optimizer_steps = 0;
  double learning_rate = 0;
  nlohmann::json optimizer_options;  ///< stored for the record
  training_position position;
};

/// How a unit agrees with the others: sums the values over every unit of the cluster (nothing to
/// do for one process). Every unit calls it the same number of times.
using agree_function = std::function<void(std::span<double>)>;

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
                      const checkpoint_hook& hook = {});

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

}  // namespace f2d2n

#include <f2d2n/store/impl/checkpoint.hpp>
