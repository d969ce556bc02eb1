// The checkpoint reader (store/checkpoint_reader.hpp, store/detail/checkpoint_format.hpp) on
// arbitrary bytes. The input is a manifest, then optionally a zero byte and the bytes every data
// file of the checkpoint reads as (a JSON manifest holds no zero byte). A manifest that does not
// start as a manifest file does ({"xxh3":"...) is taken as a manifest's body and framed with its
// checksum here, so that the fuzzer reaches the JSON behind the frame's XXH3 check. The
// checkpoint is read, verified and read into buffers, for a unit holding the whole small model
// (fuzz_store.hpp) and for one holding uneven blocks of it, with Adam's state. A storage_error is
// the answer to a bad checkpoint; any other exception or a crash is a finding.

#include "fuzz_store.hpp"

#include <f2d2n/core/error.hpp>
#include <f2d2n/model/summary.hpp>
#include <f2d2n/store/checkpoint_reader.hpp>
#include <f2d2n/store/checksum.hpp>
#include <f2d2n/store/detail/checkpoint_format.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fz = f2d2n::fuzz;

namespace {

/// A unit that holds uneven parts of the model: rows 2-3 of layer 1 (as a shard by outputs),
/// columns 1-3 of layer 3's weights (a shard by inputs), and layer 3's bias whole.
f2d2n::checkpoint_layout partial_layout(const f2d2n::model_summary& m) {
  f2d2n::checkpoint_layout l;
  l.model = &m;
  l.blocks = {{0, 2, 2, 0, 3, 0, true}, {1, 2, 2, 0, 1, 6, true}, {2, 0, 2, 1, 3, 8, true}, {3, 0, 2, 0, 1, 14, true}};
  l.size = 16;
  l.rank = 1;
  l.world_size = 2;
  l.plan = "fuzz";
  return l;
}

void read(const f2d2n::storage_backend& store, const f2d2n::checkpoint_layout& layout) {
  static constexpr std::array<std::string_view, 2> adam{"exp_avg", "exp_avg_sq"};
  try {
    f2d2n::checkpoint_reader<float> reader(store, std::string(fz::checkpoint_name), layout, "adam", adam);
    reader.verify();
    std::vector<float> parameters(layout.size), first(layout.size), second(layout.size);
    const std::span<float> state[] = {first, second};
    reader.read_into(parameters, state);
  } catch (const f2d2n::storage_error&) {
    // The typed answer to a bad checkpoint.
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto in = std::as_bytes(std::span<const std::uint8_t>(data, size));
  const auto zero = std::find(in.begin(), in.end(), std::byte{0});
  const auto manifest = in.first(static_cast<std::size_t>(zero - in.begin()));
  const auto files = zero == in.end() ? std::span<const std::byte>() : in.subspan(manifest.size() + 1);

  const std::string_view text(reinterpret_cast<const char*>(manifest.data()), manifest.size());
  std::string framed;
  if (!text.starts_with(f2d2n::detail::manifest_prefix))
    framed = std::string(f2d2n::detail::manifest_prefix) + f2d2n::to_hex(f2d2n::checksum(manifest)) +
             std::string(f2d2n::detail::manifest_middle) + std::string(text) +
             std::string(f2d2n::detail::manifest_suffix);
  const auto file = framed.empty() ? manifest : std::as_bytes(std::span<const char>(framed));

  const fz::memory_backend store(file, files);
  static const f2d2n::model_summary& model = f2d2n::summary_of<fz::small_model>();
  static const f2d2n::checkpoint_layout whole = f2d2n::serial_layout(model), part = partial_layout(model);
  read(store, whole);
  read(store, part);
  return 0;
}
