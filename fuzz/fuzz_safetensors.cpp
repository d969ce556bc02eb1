// The safetensors reader (store/safetensors.hpp) on arbitrary bytes: the input is a file of the
// small model (fuzz_store.hpp), read as floats and as doubles by from_safetensors, the whole of
// what load_safetensors does before it copies the values into the network (each scalar type
// accepts only its own dtype: the same checks with the other answer at the end). Not through a
// network: that would compile every layer's kernels, Eigen's GEMMs for floats and doubles, which
// tripled this target's build time (CI's budget) for one std::copy. A storage_error is the answer
// to a bad file; any other exception or a crash is a finding, and so is an accepted file whose
// values do not write and read back to the same bits.

#include "fuzz_store.hpp"

#include <f2d2n/core/error.hpp>
#include <f2d2n/store/safetensors.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

namespace {

template <class S>
void load(std::span<const std::byte> file) {
  const f2d2n::model_summary& model = f2d2n::summary_of<f2d2n::fuzz::small_model>();
  std::vector<S> values;
  try {
    values = f2d2n::from_safetensors<S>(model, file, "fuzz.safetensors");
  } catch (const f2d2n::storage_error&) {
    return;  // the typed answer to a bad file
  }
  if (values.size() != model.parameter_count) std::abort();
  // Accepted: the file written from what was read reads again to the same bits (memcmp, not ==,
  // so that a NaN compares equal to itself).
  const auto again = f2d2n::to_safetensors<S>(model, std::span<const S>(values));
  const auto reread = f2d2n::from_safetensors<S>(model, again, "again");
  if (reread.size() != values.size() || std::memcmp(reread.data(), values.data(), values.size() * sizeof(S)) != 0)
    std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto file = std::as_bytes(std::span<const std::uint8_t>(data, size));
  load<float>(file);
  load<double>(file);
  return 0;
}
