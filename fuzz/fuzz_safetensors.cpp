// The safetensors reader (store/safetensors.hpp) on arbitrary bytes: the input is a file of the
// small model (fuzz_store.hpp), loaded into a network of floats and into one of doubles (each
// accepts only its own dtype: the same checks with the other answer at the end). A storage_error
// is the answer to a bad file; any other exception or a crash is a finding, and so is a failed
// load that changed the network, or an accepted one that does not read back as it loaded.

#include "fuzz_store.hpp"

#include <f2d2n/core/error.hpp>
#include <f2d2n/model.hpp>
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
  static f2d2n::network<f2d2n::fuzz::small_model, S> net(1);
  const std::vector<S> before(net.parameters().begin(), net.parameters().end());
  try {
    f2d2n::load_safetensors(net, file, "fuzz.safetensors");
  } catch (const f2d2n::storage_error&) {
    // The typed answer to a bad file; the network must be as it was (bitwise: memcmp, not ==, so
    // that a NaN loaded earlier compares equal to itself).
    if (std::memcmp(before.data(), net.parameters().data(), before.size() * sizeof(S)) != 0) std::abort();
    return;
  }
  // Accepted: the file written from what was loaded loads again to the same bits.
  const auto again = f2d2n::to_safetensors<S>(f2d2n::summary_of<f2d2n::fuzz::small_model>(), net.parameters());
  const auto reread = f2d2n::from_safetensors<S>(f2d2n::summary_of<f2d2n::fuzz::small_model>(), again, "again");
  if (std::memcmp(reread.data(), net.parameters().data(), reread.size() * sizeof(S)) != 0) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto file = std::as_bytes(std::span<const std::uint8_t>(data, size));
  load<float>(file);
  load<double>(file);
  return 0;
}
