// The frame decoder (wire/frame.hpp) on arbitrary bytes: the first 48 bytes as a header
// (wire::decode), checked against the frame the receiver expects (wire::check, with the payload
// length the rest of the input has) and the rest as its payload (wire::verify). A protocol_error is
// the answer to a bad frame; any other exception, a crash, or a broken round trip is a finding.
//
// There is no payload decoder to fuzz beyond this: a transport reads a checked frame's payload
// straight into the receiver's span (the plan fixes its type and length), and wire::verify is all
// that looks at its bytes.

#include "fuzz_common.hpp"

#include <f2d2n/core/error.hpp>
#include <f2d2n/wire/frame.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

namespace wire = f2d2n::wire;
namespace fz = f2d2n::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < wire::header_size) return 0;
  const auto bytes = std::as_bytes(std::span<const std::uint8_t>(data, size));
  const auto header = bytes.first<wire::header_size>();
  const auto payload = bytes.subspan(wire::header_size);
  const f2d2n::comm_context where{0, fz::frame_sender, fz::frame_message, fz::frame_step};
  try {
    const wire::frame_header h = wire::decode(header, where);
    // A decoded header encodes back to the same bytes: decode reads every field and drops nothing.
    const wire::header_bytes again = wire::encode(h);
    if (!std::equal(again.begin(), again.end(), header.begin())) std::abort();
    const wire::expectation expected{wire::frame_kind::data, fz::frame_fingerprint, fz::frame_message,
                                     fz::frame_sender,       fz::frame_step,        payload.size()};
    wire::check(h, expected, fz::frame_max, where);
    wire::verify(h, payload, where);
    // Accepted: exactly the frame a sender makes of this payload.
    const wire::frame_header made = wire::make_header(wire::frame_kind::data, fz::frame_fingerprint, fz::frame_message,
                                                      fz::frame_sender, fz::frame_step, payload);
    if (!(made == h)) std::abort();
  } catch (const f2d2n::protocol_error&) {
    // The typed answer to a bad frame.
  }
  return 0;
}
