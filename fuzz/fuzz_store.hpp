// fuzz/fuzz_store.hpp: what the storage targets (safetensors, checkpoint) and the seed generator
// share: the small model whose files they read, and an in-memory storage backend.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/model/layers.hpp>
#include <f2d2n/model/sequential.hpp>
#include <f2d2n/store/backend.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace f2d2n::fuzz {

/// The model of the safetensors and checkpoint targets (as tests/store_test.cpp's `small`): four
/// tensors, two of rank 2 and two of rank 1, 26 values. Small, so that a valid file fits in a few
/// hundred bytes and an input can be any of its variations.
using small_model = sequential<input<3>, dense<4>, relu, dense<2>, softmax_cross_entropy>;

/// The checkpoint the checkpoint target reads (its folder in the backend).
inline constexpr std::string_view checkpoint_name = "step-000000000001";

/// Objects in memory: `manifest` under "<checkpoint_name>/manifest.json", and `data` under every
/// other key of the checkpoint's folder (whatever data file a manifest names reads the same
/// bytes). Reading only; writes are refused.
class memory_backend final : public storage_backend {
 public:
  memory_backend(std::span<const std::byte> manifest, std::span<const std::byte> data)
      : manifest_(manifest), data_(data) {}

  using storage_backend::get;
  using storage_backend::put;

  void put(std::string_view key, byte_pieces) override { refuse(key); }
  void commit(std::string_view key, std::span<const std::byte>) override { refuse(key); }
  void remove(std::string_view key) override { refuse(key); }
  [[nodiscard]] std::string location() const override { return "memory"; }

  void get(std::string_view key, std::uint64_t offset, std::span<std::byte> out) const override {
    const auto object = find(key);
    if (!object) throw storage_error("memory/" + std::string(key), storage_problem::missing, "no such object");
    if (offset > object->size() || out.size() > object->size() - offset)
      throw storage_error("memory/" + std::string(key), storage_problem::truncated,
                          "ends before byte " + std::to_string(offset + out.size()));
    std::copy_n(object->data() + offset, out.size(), out.data());
  }

  [[nodiscard]] std::optional<std::uint64_t> size(std::string_view key) const override {
    const auto object = find(key);
    if (!object) return std::nullopt;
    return object->size();
  }

  [[nodiscard]] std::vector<std::string> list(std::string_view prefix) const override {
    const std::string manifest = std::string(checkpoint_name) + "/manifest.json";
    if (manifest.starts_with(prefix)) return {manifest};
    return {};
  }

 private:
  [[nodiscard]] std::optional<std::span<const std::byte>> find(std::string_view key) const {
    const std::string folder = std::string(checkpoint_name) + "/";
    if (!key.starts_with(folder) || key.size() == folder.size()) return std::nullopt;
    if (key.substr(folder.size()) == "manifest.json") return manifest_;
    return data_;
  }

  [[noreturn]] static void refuse(std::string_view key) {
    throw storage_error("memory/" + std::string(key), storage_problem::io, "the fuzz backend is read-only");
  }

  std::span<const std::byte> manifest_;
  std::span<const std::byte> data_;
};

}  // namespace f2d2n::fuzz
