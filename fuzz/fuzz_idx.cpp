// The IDX reader (data/idx.hpp) on arbitrary bytes, plain or gzip-compressed: the input is written
// to a file of this process (read_idx reads files only, through zlib's gzopen) and read with small
// limits, so that no input may legitimately allocate more than 64 KiB of data. A data_error is the
// answer to a bad file; any other exception or a crash is a finding, and so is a file read whose
// contents are not what its header and bytes say.

#include "fuzz_common.hpp"

#include <f2d2n/core/error.hpp>
#include <f2d2n/data/idx.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

namespace {

/// At most 64 Ki elements. The reader grows its buffer by up to 16 MiB before the data arrives
/// (bounded, and the default limits are what files use); under AddressSanitizer every new page
/// costs, and a header that announces 1 Mi elements made each such input take milliseconds (500
/// inputs a second). Inputs are a few KiB, and a gzip stream may announce 128 times its size: 64
/// Ki elements still lets an input reach and pass the limits.
constexpr f2d2n::idx_limits limits{.max_rank = 4, .max_elements = std::size_t{1} << 16, .max_expansion = 128};

/// What a plain (not gzipped) file must read as: its header's extents, then the bytes after them.
void check_plain(std::span<const std::uint8_t> in, const f2d2n::idx_array& got) {
  const std::size_t rank = in[3];
  if (got.dims.size() != rank || in.size() != 4 + 4 * rank + got.data.size()) std::abort();
  std::size_t elements = 1;
  for (std::size_t i = 0; i < rank; ++i) {
    const std::uint8_t* b = in.data() + 4 + 4 * i;
    const std::size_t d = (std::size_t{b[0]} << 24) | (std::size_t{b[1]} << 16) | (std::size_t{b[2]} << 8) | b[3];
    if (got.dims[i] != d) std::abort();
    elements *= d;
  }
  if (elements != got.data.size()) std::abort();
  for (std::size_t i = 0; i < elements; ++i)
    if (got.data[i] != in[4 + 4 * rank + i]) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const f2d2n::fuzz::scratch_file file("f2d2n-fuzz-idx");
  const std::span<const std::uint8_t> in(data, size);
  try {
    const f2d2n::idx_array got = f2d2n::read_idx(file.write(in), limits);
    std::size_t elements = 1;
    for (const std::size_t d : got.dims) elements *= d;
    if (got.dims.empty() || got.dims.size() > limits.max_rank || elements != got.data.size()) std::abort();
    const bool gzip = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
    if (!gzip) check_plain(in, got);
  } catch (const f2d2n::data_error&) {
    // The typed answer to a bad file.
  }
  return 0;
}
