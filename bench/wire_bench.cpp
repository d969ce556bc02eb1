// bench/wire_bench.cpp: the cost of framing a tensor, next to a memcpy of the same bytes.
//
//   BM_memcpy/N              copy N bytes (the reference)
//   BM_frame_encode_decode/N sender: header with its XXH3 checksum (the payload itself is written
//                            from the tensor's memory, scatter-gather: no copy); receiver: decode
//                            the header, check it against the expected message, verify the checksum
//   BM_frame_local_receive/N the same plus the copy of the payload into the receiver's tensor, as
//                            the local transport does (TCP reads straight into the tensor instead)
//   BM_flight_record         what a unit's flight recorder adds to each frame it sends or
//                            receives (train/flight_recorder.hpp): begin and finish of one record
// Target (issue "Message passing as linear algebra"): encode + decode of 1 MiB within 1.1x of a
// memcpy of the same bytes.
//   build/bench/wire_bench --benchmark_min_time=0.5
#include <f2d2n/train/flight_recorder.hpp>
#include <f2d2n/wire/frame.hpp>

#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

namespace {

std::vector<float> tensor(std::size_t bytes) {
  std::vector<float> v(bytes / sizeof(float));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i % 1000) * 0.001f;
  return v;
}

void BM_memcpy(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto src = tensor(n);
  std::vector<float> dst(src.size());
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), n);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

void BM_frame_encode_decode(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto src = tensor(n);
  const auto payload = std::as_bytes(std::span<const float>(src));
  const f2d2n::wire::expectation expected{f2d2n::wire::frame_kind::data, 42, 7, 1, 3, n};
  for (auto _ : state) {
    const auto h = f2d2n::wire::make_header(f2d2n::wire::frame_kind::data, 42, 7, 1, 3, payload);
    const auto bytes = f2d2n::wire::encode(h);
    benchmark::DoNotOptimize(bytes.data());
    const auto back = f2d2n::wire::decode(bytes, {});
    f2d2n::wire::check(back, expected, f2d2n::wire::default_max_frame, {});
    f2d2n::wire::verify(back, payload, {});
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

void BM_frame_local_receive(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto src = tensor(n);
  std::vector<float> dst(src.size());
  const auto payload = std::as_bytes(std::span<const float>(src));
  const f2d2n::wire::expectation expected{f2d2n::wire::frame_kind::data, 42, 7, 1, 3, n};
  for (auto _ : state) {
    const auto h = f2d2n::wire::make_header(f2d2n::wire::frame_kind::data, 42, 7, 1, 3, payload);
    const auto bytes = f2d2n::wire::encode(h);
    const auto back = f2d2n::wire::decode(bytes, {});
    f2d2n::wire::check(back, expected, f2d2n::wire::default_max_frame, {});
    f2d2n::wire::verify(back, payload, {});
    std::memcpy(dst.data(), payload.data(), n);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

void BM_flight_record(benchmark::State& state) {
  f2d2n::flight_recorder r(0, "unit 0");
  const auto id = f2d2n::message_id(f2d2n::message_kind::gradients, true, 1, 0);
  std::uint64_t step = 0;
  for (auto _ : state)
    r.finish(r.begin(f2d2n::operation_kind::exchange, id, step++, 1, 1, 4096, 4096), f2d2n::operation_state::done);
}

BENCHMARK(BM_memcpy)->Arg(1 << 20)->Arg(16 << 20);
BENCHMARK(BM_frame_encode_decode)->Arg(1 << 20)->Arg(16 << 20);
BENCHMARK(BM_frame_local_receive)->Arg(1 << 20)->Arg(16 << 20);
BENCHMARK(BM_flight_record);

}  // namespace

BENCHMARK_MAIN();
