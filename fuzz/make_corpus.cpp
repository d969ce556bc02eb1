// Writes the fuzz targets' seed corpora: a few small valid inputs for each target, made with the
// library's own writers. Run it to regenerate fuzz/corpus/ after a format changes:
//   cmake --build --preset fuzz --target make_corpus && build-fuzz/fuzz/make_corpus fuzz/corpus
// (docs/fuzzing.md). Each file is named for what it is; existing files of the same names are
// replaced, others are left alone.

#include "fuzz_common.hpp"
#include "fuzz_store.hpp"

#include <f2d2n/model.hpp>
#include <f2d2n/store.hpp>
#include <f2d2n/transport/detail/tcp/authentication.hpp>
#include <f2d2n/transport/detail/tcp/handshake.hpp>
#include <f2d2n/wire/frame.hpp>

#include <zlib.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fs = std::filesystem;
namespace nn = f2d2n;
namespace fz = f2d2n::fuzz;

namespace {

using bytes = std::vector<std::byte>;

bytes as_bytes(std::string_view s) {
  const auto b = std::as_bytes(std::span<const char>(s.data(), s.size()));
  return {b.begin(), b.end()};
}

bytes concat(std::initializer_list<std::span<const std::byte>> parts) {
  bytes out;
  for (const auto p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

void write(const fs::path& path, std::span<const std::byte> content) {
  fs::create_directories(path.parent_path());
  std::ofstream os(path, std::ios::binary | std::ios::trunc);
  os.write(reinterpret_cast<const char*>(content.data()), static_cast<std::streamsize>(content.size()));
  if (!os) throw std::runtime_error("cannot write " + path.string());
  std::cout << path.string() << " (" << content.size() << " bytes)\n";
}

/// A frame the frame target accepts: the header for `payload`, then the payload.
bytes frame(std::span<const std::byte> payload) {
  const auto h = nn::wire::make_header(nn::wire::frame_kind::data, fz::frame_fingerprint, fz::frame_message,
                                       fz::frame_sender, fz::frame_step, payload);
  const auto head = nn::wire::encode(h);
  return concat({head, payload});
}

/// An IDX file of unsigned bytes: 0, 0, 0x08, rank, big-endian extents, then the elements.
bytes idx(const std::vector<std::uint32_t>& dims, std::size_t seed) {
  bytes out{std::byte{0}, std::byte{0}, std::byte{0x08}, static_cast<std::byte>(dims.size())};
  std::size_t n = 1;
  for (const std::uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::byte>((d >> shift) & 0xff));
    n *= d;
  }
  for (std::size_t i = 0; i < n; ++i) out.push_back(static_cast<std::byte>((i * 37 + seed) % 10));
  return out;
}

/// `content` gzip-compressed (zlib's gz* functions, as a gzip tool writes it: no name, no time).
bytes gzip(std::span<const std::byte> content) {
  const fs::path temp = fs::temp_directory_path() / ("f2d2n-make-corpus-" + std::to_string(::getpid()) + ".gz");
  gzFile f = gzopen(temp.c_str(), "wb9");
  if (!f || gzwrite(f, content.data(), static_cast<unsigned>(content.size())) != static_cast<int>(content.size()) ||
      gzclose(f) != Z_OK)
    throw std::runtime_error("cannot write " + temp.string());
  std::ifstream is(temp, std::ios::binary);
  const std::string s((std::istreambuf_iterator<char>(is)), std::istreambuf_iterator<char>());
  fs::remove(temp);
  return as_bytes(s);
}

/// The small model's tensors as numpy's and PyTorch's writers store them: no f2d2n metadata.
bytes plain_safetensors(std::span<const float> parameters) {
  const auto& model = nn::summary_of<fz::small_model>();
  nlohmann::json header = {{"__metadata__", {{"format", "pt"}}}};
  for (const auto& t : model.tensors)
    header[t.name] = {{"dtype", "F32"},
                      {"shape", t.shape},
                      {"data_offsets", {4 * t.offset, 4 * (t.offset + t.size())}}};
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  bytes out(8);
  nn::detail::safetensors::write_u64_le(text.size(), out.data());
  const auto head = as_bytes(text);
  return concat({out, head, std::as_bytes(parameters)});
}

/// The checkpoint inputs: the manifest file, a zero byte, the data file (fuzz_checkpoint.cpp).
void checkpoints(const fs::path& dir) {
  const auto& model = nn::summary_of<fz::small_model>();
  nn::network<fz::small_model, float> net(2);
  std::vector<float> exp_avg(model.parameter_count), exp_avg_sq(model.parameter_count);
  for (std::size_t i = 0; i < exp_avg.size(); ++i) exp_avg[i] = 0.01f * static_cast<float>(i), exp_avg_sq[i] = 1e-4f;

  const fs::path temp = fs::temp_directory_path() / ("f2d2n-make-corpus-" + std::to_string(::getpid()));
  nn::directory_backend store(temp);
  const auto layout = nn::serial_layout(model);
  nn::unit_state<float> state;
  state.parameters = net.parameters();
  state.optimizer = "adam";
  state.state_names = {"exp_avg", "exp_avg_sq"};
  state.state = {exp_avg, exp_avg_sq};
  state.optimizer_steps = 1;
  state.learning_rate = 0.001;
  state.optimizer_options = {{"learning_rate", 0.001}};
  state.position.epoch = 0, state.position.step = 1, state.position.global_step = 1, state.position.batch_size = 2;
  const std::string name(fz::checkpoint_name);
  nn::write_checkpoint<float>(store, name, layout, state, {});

  const auto manifest = store.get(name + "/manifest.json");
  bytes data;
  for (const auto& key : store.list(name + "/unit-")) data = store.get(key);
  fs::remove_all(temp);
  const bytes zero{std::byte{0}};
  write(dir / "whole", concat({manifest, zero, data}));

  // The body alone (the target frames it with its checksum).
  const std::string_view text(reinterpret_cast<const char*>(manifest.data()), manifest.size());
  const std::size_t head = nn::detail::manifest_prefix.size() + 16 + nn::detail::manifest_middle.size();
  const std::string body(text.substr(head, text.size() - head - nn::detail::manifest_suffix.size()));
  write(dir / "body", concat({as_bytes(body), zero, data}));

  // The body with every parameter tensor of two rows or more stored as two chunks of rows, as
  // two units sharded by outputs store it.
  auto split = nlohmann::json::parse(body);
  for (auto& [tensor, entry] : split["tensors"].items()) {
    auto& chunks = entry["chunks"];
    const auto whole = chunks.at(0);
    const std::uint64_t rows = whole["size"][0],
                        columns = whole["size"].size() == 2 ? whole["size"][1].get<std::uint64_t>() : 1;
    if (chunks.size() != 1 || rows < 2) continue;
    const std::uint64_t offset = whole["offset"], top = rows / 2;
    chunks = nlohmann::json::array();
    for (const auto [r0, rn] : {std::array<std::uint64_t, 2>{0, top}, std::array<std::uint64_t, 2>{top, rows - top}}) {
      auto c = whole;
      const std::uint64_t at = offset + r0 * columns * sizeof(float), n = rn * columns * sizeof(float);
      c["offset"] = at;
      c["start"][0] = r0;
      c["size"][0] = rn;
      c["xxh3"] = nn::to_hex(nn::checksum(std::span<const std::byte>(data).subspan(at, n)));
      chunks.push_back(std::move(c));
    }
  }
  write(dir / "split_chunks", concat({as_bytes(split.dump()), zero, data}));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_corpus DIR   (writes DIR/<target>/<seed>; the repository's is fuzz/corpus)\n";
    return 2;
  }
  const fs::path root = argv[1];
  try {
    // fuzz_frame: a frame with a payload of four floats, and one without payload.
    const std::array<float, 4> values{1.0f, -2.5f, 0.0f, 3.25f};
    write(root / "frame" / "four_floats", frame(std::as_bytes(std::span<const float>(values))));
    write(root / "frame" / "empty", frame({}));

    // fuzz_handshake: hellos.
    namespace tcp = nn::detail::tcp_impl;
    write(root / "handshake" / "hello_rank1",
          tcp::encode_hello({1, 4, 0x0123456789abcdefu, nn::wire::wire_version, {}}));
    write(root / "handshake" / "hello_rank0",
          tcp::encode_hello({0, 2, 0x0123456789abcdefu, nn::wire::wire_version, "dense[4]->[3]:15\nplan"}));
    // ... and an authentication stream whose proof holds for fuzz_handshake's key and nonce.
    {
      const std::string_view key = "fuzz-cluster-key-0123456789abcdef";
      tcp::nonce acceptor{};
      for (std::size_t i = 0; i < acceptor.size(); ++i) acceptor[i] = static_cast<std::byte>(0xa0 + i);
      tcp::nonce dialler{};
      for (std::size_t i = 0; i < dialler.size(); ++i) dialler[i] = static_cast<std::byte>(i);
      const tcp::auth_claim c{2, 0, 3};
      const auto k = std::as_bytes(std::span(key));
      bytes stream;
      auto add = [&stream](const auto& record) { stream.insert(stream.end(), record.begin(), record.end()); };
      add(tcp::encode_challenge(dialler));
      add(tcp::encode_dialler_proof(c, tcp::proof_mac(k, tcp::dialler_label, dialler, acceptor, c)));
      add(tcp::encode_acceptor_proof(0, tcp::proof_mac(k, tcp::acceptor_label, dialler, acceptor, c)));
      write(root / "handshake" / "authentication", stream);
    }

    // fuzz_idx: an images file (2 images of 3x3) and a labels file, plain and gzipped.
    const bytes images = idx({2, 3, 3}, 1), labels = idx({2}, 7);
    write(root / "idx" / "images", images);
    write(root / "idx" / "images.gz", gzip(images));
    write(root / "idx" / "labels", labels);
    write(root / "idx" / "labels.gz", gzip(labels));

    // fuzz_safetensors: the small model's file as f2d2n writes it (floats and doubles), and as
    // numpy or PyTorch write it (no f2d2n metadata).
    const auto& model = nn::summary_of<fz::small_model>();
    const nn::network<fz::small_model, float> f32(3);
    const nn::network<fz::small_model, double> f64(3);
    write(root / "safetensors" / "f32", nn::to_safetensors<float>(model, f32.parameters()));
    write(root / "safetensors" / "f64", nn::to_safetensors<double>(model, f64.parameters()));
    write(root / "safetensors" / "f32_no_metadata", plain_safetensors(f32.parameters()));

    // fuzz_checkpoint.
    checkpoints(root / "checkpoint");
  } catch (const std::exception& e) {
    std::cerr << "make_corpus: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
