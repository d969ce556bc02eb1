// Store area: safetensors files (layout byte by byte, round trips, every truncation and every
// flipped byte of a small model's file, foreign files, other models and scalar types) and
// Boost.Serialization of networks and optimizers through text, XML and binary archives (training
// continued after a round trip equals training continued without it, bit for bit).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <f2d2n/model.hpp>
#include <f2d2n/store.hpp>
#include <f2d2n/train/optimizers.hpp>

#include "temp_dir.hpp"

#include <boost/archive/binary_iarchive.hpp>
#include <boost/archive/binary_oarchive.hpp>
#include <boost/archive/text_iarchive.hpp>
#include <boost/archive/text_oarchive.hpp>
#include <boost/archive/xml_iarchive.hpp>
#include <boost/archive/xml_oarchive.hpp>

#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace nn = f2d2n;
using nn::storage_error;
using nn::storage_problem;
using bytes = std::vector<std::byte>;
using json = nlohmann::json;

namespace {

// A small model (26 parameters: every truncation and byte flip of its file is tried), and models
// that differ from it in one way each.
using small = nn::sequential<nn::input<3>, nn::dense<4>, nn::relu, nn::dense<2>, nn::softmax_cross_entropy>;
using wider = nn::sequential<nn::input<3>, nn::dense<5>, nn::relu, nn::dense<2>, nn::softmax_cross_entropy>;
using other_activation = nn::sequential<nn::input<3>, nn::dense<4>, nn::tanh, nn::dense<2>, nn::softmax_cross_entropy>;
using deeper = nn::sequential<nn::input<3>, nn::dense<4>, nn::relu, nn::dense<4>, nn::relu, nn::dense<2>,
                              nn::softmax_cross_entropy>;
using longer = nn::sequential<nn::input<3>, nn::dense<4>, nn::relu, nn::dense<2>, nn::relu, nn::dense<2>,
                              nn::softmax_cross_entropy>;
using mlp = nn::sequential<nn::input<28, 28>, nn::dense<256>, nn::relu, nn::dense<128>, nn::relu, nn::dense<10>,
                           nn::softmax_cross_entropy>;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

/// Runs `f`, which must throw storage_error(problem); returns its message. Any other exception
/// escapes and fails the test case. (A std::function, not a template: one instantiation for the
/// many cases keeps this file's compile time low.)
std::string expect_storage_error(const std::function<void()>& f, storage_problem problem) {
  try {
    f();
  } catch (const storage_error& e) {
    CHECK_MESSAGE(e.problem() == problem, "expected " << nn::to_string(problem) << ", got: " << e.what());
    return e.what();
  }
  FAIL_CHECK("expected storage_error(" << nn::to_string(problem) << "), nothing was thrown");
  return {};
}

template <class Net, class S>
std::vector<S> parameters_of(const nn::network<Net, S>& net) {
  return {net.parameters().begin(), net.parameters().end()};
}

/// Bitwise equality of two parameter buffers (NaN-safe, -0 != +0).
template <class S>
bool same_bits(std::span<const S> a, std::span<const S> b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size_bytes()) == 0);
}

/// A network with non-zero biases (initialisation leaves them zero) and values that use every bit.
template <class Net, class S = float>
nn::network<Net, S> filled(std::uint64_t seed) {
  nn::network<Net, S> net(seed);
  auto p = net.parameters();
  for (std::size_t i = 0; i < p.size(); ++i)
    p[i] += static_cast<S>(1e-3) * static_cast<S>(nn::random_symmetric(seed, 99, i));
  return net;
}

std::uint64_t read_u64(const bytes& f, std::size_t at = 0) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<std::uint64_t>(f[at + static_cast<std::size_t>(i)]);
  return v;
}

json header_of(const bytes& f) {
  const auto n = read_u64(f);
  const char* p = reinterpret_cast<const char*>(f.data() + 8);
  return json::parse(p, p + n);
}

/// A safetensors file from a header's text and a data section, as another writer would make it.
bytes make_raw_file(std::string h, std::span<const std::byte> data, std::size_t pad_to = 8) {
  h.resize((h.size() + pad_to - 1) / pad_to * pad_to, ' ');
  bytes f(8 + h.size() + data.size());
  std::uint64_t n = h.size();
  for (int i = 0; i < 8; ++i, n >>= 8) f[static_cast<std::size_t>(i)] = static_cast<std::byte>(n & 0xff);
  std::memcpy(f.data() + 8, h.data(), h.size());
  if (!data.empty()) std::memcpy(f.data() + 8 + h.size(), data.data(), data.size());
  return f;
}

/// A safetensors file from a header and a data section, as another writer would make it.
bytes make_file(const json& header, std::span<const std::byte> data, std::size_t pad_to = 8) {
  return make_raw_file(header.dump(), data, pad_to);
}

/// The data section of a file.
bytes data_of(const bytes& f) { return bytes(f.begin() + 8 + static_cast<std::ptrdiff_t>(read_u64(f)), f.end()); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// safetensors

TEST_CASE("safetensors: the file's layout, byte by byte") {
  auto net = filled<small>(3);
  const bytes f = nn::to_safetensors<float>(nn::summary_of<small>(), net.parameters());
  const auto n = read_u64(f);
  CHECK(n % 8 == 0);
  REQUIRE(8 + n <= f.size());
  const std::string header(reinterpret_cast<const char*>(f.data() + 8), n);
  CHECK(header.front() == '{');
  CHECK(header.find_last_not_of(' ') == header.rfind('}'));  // padded with spaces only
  // The data section: the flat buffer, little-endian (this machine's order: x86 and ARM are).
  CHECK(f.size() - 8 - n == small::parameter_count * 4);
  CHECK(std::memcmp(f.data() + 8 + n, net.parameters().data(), small::parameter_count * 4) == 0);

  const json h = json::parse(header);
  REQUIRE(h.is_object());
  CHECK(h.size() == 5);  // metadata and four tensors
  // The metadata first, then the tensors in the buffer's order.
  CHECK(header.starts_with("{\"__metadata__\":{"));
  CHECK(header.find("\"1.weight\"") < header.find("\"1.bias\""));
  CHECK(header.find("\"1.bias\"") < header.find("\"3.weight\""));
  CHECK(header.find("\"3.weight\"") < header.find("\"3.bias\""));

  const auto& s = nn::summary_of<small>();
  const std::vector<std::pair<std::string, std::vector<std::size_t>>> expected{{"1.weight", {4, 3}},
                                                                               {"1.bias", {4}},
                                                                               {"3.weight", {2, 4}},
                                                                               {"3.bias", {2}}};
  std::size_t offset = 0;
  for (const auto& [name, shape] : expected) {
    INFO(name);
    const auto& e = h.at(name);
    CHECK(e.at("dtype") == "F32");
    CHECK(e.at("shape").get<std::vector<std::size_t>>() == shape);
    const std::size_t size = shape.size() == 2 ? shape[0] * shape[1] : shape[0];
    CHECK(e.at("data_offsets").get<std::vector<std::size_t>>() == std::vector<std::size_t>{offset, offset + 4 * size});
    const auto* t = s.find(name);
    REQUIRE(t);
    CHECK(t->offset * 4 == offset);
    const auto sum = nn::checksum(std::span<const std::byte>(f.data() + 8 + n + offset, 4 * size));
    CHECK(h.at("__metadata__").at("f2d2n.checksum." + name) == nn::to_hex(sum));
    offset += 4 * size;
  }
  const auto& m = h.at("__metadata__");
  CHECK(m.size() == 4 + 4);
  CHECK(m.at("format") == "pt");
  CHECK(m.at("f2d2n.version") == nn::version_string());
  CHECK(m.at("f2d2n.model") == s.description);
  CHECK(m.at("f2d2n.model") ==
        "input[]->[3]:0 dense[3]->[4]:16 relu[4]->[4]:0 dense[4]->[2]:10 softmax_cross_entropy[2]->[2]:0");
  CHECK(m.at("f2d2n.fingerprint") == nn::to_hex(s.fingerprint));
  // The same network gives the same bytes.
  CHECK(nn::to_safetensors<float>(s, net.parameters()) == f);
}

// (No network<..., double> in this file: the network's kernels cost about 6 s of compile time
// per scalar type. A double network's load_safetensors is from_safetensors<double> and a copy; the
// double cases use that layer directly.)
TEST_CASE("safetensors: round trips are bit-exact, float and double, through files and backends") {
  nn::testing::temp_dir dir("f2d2n-store");
  SUBCASE("float, through a file and a backend") {
    auto net = filled<mlp, float>(7);
    nn::save_safetensors(net, dir.path() / "mlp.safetensors");
    nn::network<mlp, float> back(99);
    nn::load_safetensors(back, dir.path() / "mlp.safetensors");
    CHECK(same_bits<float>(back.parameters(), net.parameters()));
    CHECK(std::filesystem::file_size(dir.path() / "mlp.safetensors") % 8 == 0);
    nn::directory_backend backend(dir.path() / "objects");
    nn::save_safetensors(net, backend, "models/mlp.safetensors");
    nn::network<mlp, float> back2(98);
    nn::load_safetensors(back2, backend, "models/mlp.safetensors");
    CHECK(same_bits<float>(back2.parameters(), net.parameters()));
  }
  SUBCASE("double") {
    const auto& s = nn::summary_of<mlp>();
    std::vector<double> p(mlp::parameter_count);
    for (std::size_t i = 0; i < p.size(); ++i) p[i] = nn::random_symmetric(8, 1, i) * 1e3;  // all 52 mantissa bits
    nn::directory_backend backend(dir.path() / "objects");
    backend.commit("models/mlp64.safetensors", nn::to_safetensors<double>(s, p));
    const bytes f = static_cast<const nn::storage_backend&>(backend).get("models/mlp64.safetensors");
    CHECK(same_bits<double>(nn::from_safetensors<double>(s, f, "mlp64"), p));
    const auto h = header_of(f);
    CHECK(h.at("1.weight").at("dtype") == "F64");
    CHECK(h.at("5.bias").at("data_offsets").get<std::vector<std::size_t>>() ==
          std::vector<std::size_t>{(mlp::parameter_count - 10) * 8, mlp::parameter_count * 8});
    CHECK(f.size() - 8 - read_u64(f) == mlp::parameter_count * 8);
  }
  SUBCASE("special values: NaN, infinities, signed zero, subnormals") {
    auto net = filled<small, float>(1);
    auto p = net.parameters();
    p[0] = std::numeric_limits<float>::quiet_NaN();
    p[1] = std::numeric_limits<float>::infinity();
    p[2] = -std::numeric_limits<float>::infinity();
    p[3] = -0.0f;
    p[4] = std::numeric_limits<float>::denorm_min();
    const bytes f = nn::to_safetensors<float>(nn::summary_of<small>(), net.parameters());
    nn::network<small, float> back;
    nn::load_safetensors(back, f, "memory");
    CHECK(same_bits<float>(back.parameters(), net.parameters()));
  }
  SUBCASE("a save replaces the file") {
    auto a = filled<small>(1), b = filled<small>(2);
    nn::save_safetensors(a, dir.path() / "m.safetensors");
    nn::save_safetensors(b, dir.path() / "m.safetensors");
    nn::network<small> back;
    nn::load_safetensors(back, dir.path() / "m.safetensors");
    CHECK(same_bits<float>(back.parameters(), b.parameters()));
    for (const auto& e : std::filesystem::directory_iterator(dir.path()))
      CHECK(e.path().filename() == "m.safetensors");  // no temporary left behind
  }
}

TEST_CASE("safetensors: a CNN's convolutions are (out, kernel height, kernel width, in) weights and biases") {
  using cnn = nn::sequential<nn::input<9, 7, 2>, nn::conv2d<4, nn::window{3, 2}, 1, 1>, nn::relu, nn::max_pool<2>,
                             nn::flatten, nn::dense<5>, nn::softmax_cross_entropy>;
  const auto& s = nn::summary_of<cnn>();
  REQUIRE(s.tensors.size() == 4);
  CHECK(s.tensors[0].name == "1.weight");
  CHECK(s.tensors[0].shape == std::vector<std::size_t>{4, 3, 2, 2});
  CHECK(s.tensors[0].rows() * s.tensors[0].columns() == s.tensors[0].size());
  CHECK(s.tensors[1].name == "1.bias");
  CHECK(s.tensors[1].shape == std::vector<std::size_t>{4});
  CHECK(s.tensors[2].name == "5.weight");
  CHECK(s.tensors[1].offset + 4 == s.tensors[2].offset);
  nn::testing::temp_dir dir("f2d2n-store");
  auto net = filled<cnn, float>(3);
  nn::save_safetensors(net, dir.path() / "cnn.safetensors");
  nn::network<cnn, float> back(5);
  nn::load_safetensors(back, dir.path() / "cnn.safetensors");
  CHECK(same_bits<float>(back.parameters(), net.parameters()));
  const auto h = header_of(nn::to_safetensors<float>(s, net.parameters()));
  CHECK(h.at("1.weight").at("shape").get<std::vector<std::size_t>>() == std::vector<std::size_t>{4, 3, 2, 2});
}

TEST_CASE("safetensors: every truncation of a small model's file is a storage_error, the network unchanged") {
  const auto saved = filled<small>(5);
  const bytes f = nn::to_safetensors<float>(nn::summary_of<small>(), saved.parameters());
  auto net = filled<small>(6);
  const auto before = parameters_of(net);
  std::size_t truncated = 0;
  for (std::size_t len = 0; len < f.size(); ++len) {
    try {
      nn::load_safetensors(net, std::span<const std::byte>(f.data(), len), "cut");
      FAIL_CHECK("a file cut to " << len << " of " << f.size() << " bytes loaded");
    } catch (const storage_error& e) {
      truncated += e.problem() == storage_problem::truncated;
      REQUIRE(e.where() == "cut");
    }
    REQUIRE(same_bits<float>(net.parameters(), before));
  }
  // Cut inside the header: some are JSON errors (corrupt); cut in the data: truncated.
  CHECK(truncated > f.size() / 2);
}

TEST_CASE("safetensors: every flipped byte of a small model's file is refused, or loads the saved parameters") {
  const auto saved = filled<small>(5);
  const bytes f = nn::to_safetensors<float>(nn::summary_of<small>(), saved.parameters());
  auto net = filled<small>(6);
  const auto before = parameters_of(net);
  std::size_t refused = 0;
  for (std::size_t i = 0; i < f.size(); ++i) {
    bytes g = f;
    g[i] ^= std::byte{0xff};
    try {
      nn::load_safetensors(net, g, "flipped");
      // Loaded: exactly what was saved (a flip that changes nothing the load uses).
      REQUIRE_MESSAGE(same_bits<float>(net.parameters(), saved.parameters()), "byte " << i);
      std::copy(before.begin(), before.end(), net.parameters().begin());
    } catch (const storage_error& e) {
      ++refused;
      REQUIRE_MESSAGE(same_bits<float>(net.parameters(), before), "byte " << i << ": " << e.what());
    }
  }
  // f2d2n's own files: every byte counts (the header's JSON, the padding, the checksummed data).
  CHECK(refused == f.size());
}

TEST_CASE("safetensors: a damaged data byte is corrupt, naming the tensor") {
  const auto saved = filled<small>(5);
  bytes f = nn::to_safetensors<float>(nn::summary_of<small>(), saved.parameters());
  f[f.size() - 1] ^= std::byte{1};  // the last byte of 3.bias
  nn::network<small> net;
  const auto what =
      expect_storage_error([&] { nn::load_safetensors(net, f, "model.safetensors"); }, storage_problem::corrupt);
  CHECK(contains(what, "model.safetensors"));
  CHECK(contains(what, "'3.bias'"));
  CHECK(contains(what, "checksum"));
}

TEST_CASE("safetensors: the header length") {
  const auto saved = filled<small>(5);
  const bytes f = nn::to_safetensors<float>(nn::summary_of<small>(), saved.parameters());
  nn::network<small> net;
  auto with_length = [&](std::uint64_t n) {
    bytes g = f;
    for (int i = 0; i < 8; ++i, n >>= 8) g[static_cast<std::size_t>(i)] = static_cast<std::byte>(n & 0xff);
    return g;
  };
  for (std::uint64_t absurd : {~std::uint64_t{0}, std::uint64_t{1} << 63, (std::uint64_t{100} << 20) + 1}) {
    const auto what =
        expect_storage_error([&] { nn::load_safetensors(net, with_length(absurd), "x"); }, storage_problem::bad_format);
    CHECK(contains(what, std::to_string(absurd)));
  }
  expect_storage_error([&] { nn::load_safetensors(net, with_length(f.size() - 7), "x"); }, storage_problem::truncated);
  expect_storage_error([&] { nn::load_safetensors(net, with_length(0), "x"); }, storage_problem::corrupt);
  expect_storage_error([&] { nn::load_safetensors(net, bytes(7), "x"); }, storage_problem::truncated);
}

TEST_CASE("safetensors: malformed headers and data sections") {
  const auto saved = filled<small>(5);
  const bytes f = nn::to_safetensors<float>(nn::summary_of<small>(), saved.parameters());
  const json h = header_of(f);
  const bytes data = data_of(f);
  nn::network<small> net;
  const auto before = parameters_of(net);
  auto load = [&](const bytes& g) { nn::load_safetensors(net, g, "bad.safetensors"); };
  auto edited = [&](const std::function<void(json&)>& edit) {
    json g = h;
    edit(g);
    return make_file(g, data);
  };

  SUBCASE("not JSON, not an object") {
    bytes g = f;
    g[8] = std::byte{'['};
    expect_storage_error([&] { load(g); }, storage_problem::corrupt);
    expect_storage_error([&] { load(make_file(json::array({1, 2}), data)); }, storage_problem::corrupt);
    expect_storage_error([&] { load(make_file(json("text"), data)); }, storage_problem::corrupt);
    // Deeply nested: refused as it is parsed.
    const std::string nested = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
    const auto what = expect_storage_error([&] { load(make_raw_file(nested, data)); }, storage_problem::corrupt);
    CHECK(contains(what, "nests"));
  }
  SUBCASE("fields of the wrong type") {
    expect_storage_error([&] { load(edited([](json& g) { g["1.bias"]["dtype"] = 32; })); }, storage_problem::corrupt);
    expect_storage_error([&] { load(edited([](json& g) { g["1.bias"].erase("dtype"); })); }, storage_problem::corrupt);
    expect_storage_error([&] { load(edited([](json& g) { g["1.bias"]["shape"] = "4"; })); }, storage_problem::corrupt);
    expect_storage_error([&] { load(edited([](json& g) { g["1.bias"]["shape"] = {-4}; })); }, storage_problem::corrupt);
    expect_storage_error([&] { load(edited([](json& g) { g["1.bias"]["shape"] = {4.0}; })); },
                         storage_problem::corrupt);
    expect_storage_error([&] { load(edited([](json& g) { g["1.bias"]["data_offsets"] = {48}; })); },
                         storage_problem::corrupt);
    expect_storage_error([&] { load(edited([](json& g) {
                                 g["1.bias"]["data_offsets"] = {48, "64"};
                               })); },
                         storage_problem::corrupt);
    expect_storage_error([&] { load(edited([](json& g) { g["1.bias"] = json::array(); })); }, storage_problem::corrupt);
    expect_storage_error([&] { load(edited([](json& g) { g["__metadata__"] = json::array(); })); },
                         storage_problem::corrupt);
    expect_storage_error([&] { load(edited([](json& g) { g["__metadata__"]["format"] = 1; })); },
                         storage_problem::corrupt);
    expect_storage_error([&] { load(edited([](json& g) { g["1.bias"]["dtype"] = "F31"; })); },
                         storage_problem::corrupt);
    // A shape whose size overflows 64 bits.
    expect_storage_error([&] { load(edited([](json& g) {
                                 g["1.bias"]["shape"] = {1ull << 40, 1ull << 40};
                               })); },
                         storage_problem::corrupt);
  }
  SUBCASE("offsets: reversed, not the shape's size, overlapping, with a gap") {
    expect_storage_error([&] { load(edited([](json& g) {
                                 g["1.bias"]["data_offsets"] = {64, 48};
                               })); },
                         storage_problem::corrupt);
    expect_storage_error([&] { load(edited([](json& g) {
                                 g["1.bias"]["data_offsets"] = {48, 60};
                               })); },
                         storage_problem::corrupt);
    const auto overlap =
        expect_storage_error([&] { load(edited([](json& g) {
                                     g["1.bias"]["data_offsets"] = {44, 60};
                                   })); },
                             storage_problem::corrupt);
    CHECK(contains(overlap, "overlaps"));
    // 3.weight moved 4 bytes on, 3.bias after it: a gap and a tensor past the data.
    const auto gap = expect_storage_error(
        [&] {
          load(edited([](json& g) {
            g["3.weight"]["data_offsets"] = {68, 100};
            g["3.bias"]["data_offsets"] = {100, 108};
          }));
        },
        storage_problem::corrupt);
    CHECK(contains(gap, "gap of 4 bytes"));
  }
  SUBCASE("the data section longer or shorter than the tensors") {
    bytes longer_data = data;
    longer_data.resize(data.size() + 8);
    const auto what = expect_storage_error([&] { load(make_file(h, longer_data)); }, storage_problem::corrupt);
    CHECK(contains(what, "8 bytes follow the last tensor"));
    bytes shorter_data(data.begin(), data.end() - 4);
    expect_storage_error([&] { load(make_file(h, shorter_data)); }, storage_problem::truncated);
  }
  SUBCASE("a name given twice") {
    // Rewrite "3.bias" as a second "1.bias" entry by hand (a JSON object cannot hold it twice).
    std::string text = h.dump();
    const auto at = text.find("\"3.bias\"");
    REQUIRE(at != std::string::npos);
    text.replace(at, 8, "\"1.bias\"");
    const bytes g = make_raw_file(text, data);
    const auto what = expect_storage_error([&] { load(g); }, storage_problem::corrupt);
    CHECK(contains(what, "'1.bias' twice"));
  }
  SUBCASE("metadata: a bad checksum or fingerprint, a checksum of no tensor") {
    expect_storage_error([&] { load(edited([](json& g) { g["__metadata__"]["f2d2n.checksum.1.bias"] = "xyz"; })); },
                         storage_problem::corrupt);
    expect_storage_error(
        [&] { load(edited([](json& g) { g["__metadata__"]["f2d2n.checksum.1.bias"] = "0000000000000000"; })); },
        storage_problem::corrupt);
    expect_storage_error(
        [&] { load(edited([](json& g) { g["__metadata__"]["f2d2n.checksum.9.bias"] = "0000000000000000"; })); },
        storage_problem::corrupt);
    expect_storage_error([&] { load(edited([](json& g) { g["__metadata__"]["f2d2n.fingerprint"] = "00"; })); },
                         storage_problem::corrupt);
    // The right description with another fingerprint: damaged metadata.
    expect_storage_error(
        [&] { load(edited([](json& g) { g["__metadata__"]["f2d2n.fingerprint"] = "0123456789abcdef"; })); },
        storage_problem::corrupt);
    // The description with one more space at its end, the fingerprint right: another description
    // (describe_difference split it into the same words and found no difference: the file loaded).
    const auto what = expect_storage_error(
        [&] {
          load(edited([](json& g) {
            g["__metadata__"]["f2d2n.model"] = g["__metadata__"]["f2d2n.model"].get<std::string>() + " ";
          }));
        },
        storage_problem::model_mismatch);
    CHECK(
        contains(what, "the file holds another model: the stored description differs from the model's in its spaces"));
    // Another fingerprint and no description: another model.
    expect_storage_error(
        [&] {
          load(edited([](json& g) {
            g["__metadata__"].erase("f2d2n.model");
            g["__metadata__"]["f2d2n.fingerprint"] = "0123456789abcdef";
          }));
        },
        storage_problem::model_mismatch);
  }
  CHECK(same_bits<float>(net.parameters(), before));
}

TEST_CASE("safetensors: another model is a model_mismatch naming the first difference, expected and found") {
  nn::testing::temp_dir dir("f2d2n-store");
  nn::network<small> net(1);
  const auto before = parameters_of(net);
  auto load = [&](const std::filesystem::path& p) { nn::load_safetensors(net, p); };

  SUBCASE("another width") {
    nn::save_safetensors(nn::network<wider>(2), dir.path() / "wider.safetensors");
    const auto what =
        expect_storage_error([&] { load(dir.path() / "wider.safetensors"); }, storage_problem::model_mismatch);
    CHECK(contains(what, (dir.path() / "wider.safetensors").string()));
    CHECK(contains(what, "tensor '1.weight' is [4,3] in the model, [5,3] in the file"));
    CHECK(contains(what, "layer 1 is dense[3]->[4]:16 in the model, dense[3]->[5]:20 in the stored one"));
  }
  SUBCASE("another activation (the same tensors)") {
    nn::save_safetensors(nn::network<other_activation>(2), dir.path() / "tanh.safetensors");
    const auto what =
        expect_storage_error([&] { load(dir.path() / "tanh.safetensors"); }, storage_problem::model_mismatch);
    CHECK(contains(what, "layer 2 is relu[4]->[4]:0 in the model, tanh[4]->[4]:0 in the stored one"));
  }
  SUBCASE("more layers, another shape first") {
    nn::save_safetensors(nn::network<deeper>(2), dir.path() / "deeper.safetensors");
    const auto what =
        expect_storage_error([&] { load(dir.path() / "deeper.safetensors"); }, storage_problem::model_mismatch);
    CHECK(contains(what, "tensor '3.weight' is [2,4] in the model, [4,4] in the file"));
  }
  SUBCASE("more layers, the same shapes first") {
    nn::save_safetensors(nn::network<longer>(2), dir.path() / "longer.safetensors");
    const auto what =
        expect_storage_error([&] { load(dir.path() / "longer.safetensors"); }, storage_problem::model_mismatch);
    CHECK(contains(what, "the file has tensor '5.weight' ([2,2]), which the model does not have"));
    CHECK(contains(what, "layer 4 is softmax_cross_entropy[2]->[2]:0 in the model, relu[2]->[2]:0 in the stored one"));
  }
  SUBCASE("fewer layers") {
    nn::network<longer> big(1);
    nn::save_safetensors(net, dir.path() / "small.safetensors");
    const auto what = expect_storage_error([&] { nn::load_safetensors(big, dir.path() / "small.safetensors"); },
                                           storage_problem::model_mismatch);
    CHECK(contains(what, "the file has no tensor '5.weight' ([2,2] in the model)"));
  }
  SUBCASE("a float file read as doubles, a double file into a float network") {
    const bytes f32 = nn::to_safetensors<float>(nn::summary_of<small>(), net.parameters());
    const auto what = expect_storage_error(
        [&] { (void)nn::from_safetensors<double>(nn::summary_of<small>(), f32, "float.safetensors"); },
        storage_problem::model_mismatch);
    CHECK(contains(what, "tensor '1.weight' is F32 in the file, F64 in this network"));
    const std::vector<double> p(net.parameters().begin(), net.parameters().end());
    nn::directory_backend(dir.path())
        .commit("double.safetensors", nn::to_safetensors<double>(nn::summary_of<small>(), p));
    const auto why =
        expect_storage_error([&] { load(dir.path() / "double.safetensors"); }, storage_problem::model_mismatch);
    CHECK(contains(why, "tensor '1.weight' is F64 in the file, F32 in this network"));
  }
  SUBCASE("no such file, or a directory") {
    expect_storage_error([&] { load(dir.path() / "none.safetensors"); }, storage_problem::missing);
    expect_storage_error([&] { load(dir.path()); }, storage_problem::io);
    nn::directory_backend backend(dir.path());
    expect_storage_error([&] { nn::load_safetensors(net, backend, "none.safetensors"); }, storage_problem::missing);
  }
  SUBCASE("a file far larger than the model's") {
    std::ofstream(dir.path() / "huge.safetensors") << "x";
    std::filesystem::resize_file(dir.path() / "huge.safetensors", std::uint64_t{200} << 20);
    expect_storage_error([&] { load(dir.path() / "huge.safetensors"); }, storage_problem::corrupt);
  }
  CHECK(same_bits<float>(net.parameters(), before));
}

TEST_CASE("safetensors: a file without f2d2n's metadata (PyTorch's or numpy's) loads, tensors in any order") {
  const auto saved = filled<small>(4);
  const auto& s = nn::summary_of<small>();
  // PyTorch's writer orders the data by name: 1.bias, 1.weight, 3.bias, 3.weight.
  json h = json::object();
  bytes data;
  for (const char* name : {"1.bias", "1.weight", "3.bias", "3.weight"}) {
    const auto* t = s.find(name);
    REQUIRE(t);
    const auto begin = data.size();
    const auto* p = reinterpret_cast<const std::byte*>(saved.parameters().data() + t->offset);
    data.insert(data.end(), p, p + t->size() * 4);
    h[name] = {{"dtype", "F32"}, {"shape", t->shape}, {"data_offsets", {begin, data.size()}}};
  }
  nn::network<small> net;
  SUBCASE("no metadata at all") {
    nn::load_safetensors(net, make_file(h, data), "torch.safetensors");
    CHECK(same_bits<float>(net.parameters(), saved.parameters()));
  }
  SUBCASE("PyTorch's metadata, header padded to 8") {
    h["__metadata__"] = {{"format", "pt"}};
    nn::load_safetensors(net, make_file(h, data), "torch.safetensors");
    CHECK(same_bits<float>(net.parameters(), saved.parameters()));
  }
  SUBCASE("an unpadded header, an empty metadata object") {
    h["__metadata__"] = json::object();
    nn::load_safetensors(net, make_file(h, data, 1), "numpy.safetensors");
    CHECK(same_bits<float>(net.parameters(), saved.parameters()));
  }
  SUBCASE("checksums present are verified") {
    h["__metadata__"] = {
        {"f2d2n.checksum.3.bias", nn::to_hex(nn::checksum(std::span<const std::byte>(data).subspan(0, 0)))}};
    expect_storage_error([&] { nn::load_safetensors(net, make_file(h, data), "x"); }, storage_problem::corrupt);
  }
}

TEST_CASE("safetensors: to_safetensors refuses a buffer of another size") {
  std::vector<float> p(small::parameter_count - 1);
  CHECK_THROWS_AS((void)nn::to_safetensors<float>(nn::summary_of<small>(), p), nn::configuration_error);
}

// ---------------------------------------------------------------------------------------------
// Boost.Serialization

namespace {

/// The archive types under test, chosen at run time: each test body is compiled once (compile
/// time), the archives' code once per stored type.
enum class archive_kind { text, xml, binary };
constexpr archive_kind archive_kinds[] = {archive_kind::text, archive_kind::xml, archive_kind::binary};

const char* name_of(archive_kind k) {
  return k == archive_kind::text ? "text" : k == archive_kind::xml ? "xml" : "binary";
}

template <class Out, class... T>
std::string save_with(const T&... objects) {
  std::ostringstream os(std::ios::binary);
  {
    Out ar(os);
    ((ar << boost::serialization::make_nvp("object", objects)), ...);
  }  // an XML archive closes its root element here
  return os.str();
}

template <class In, class... T>
void load_with(const std::string& stored, T&... objects) {
  std::istringstream is(stored, std::ios::binary);
  In ar(is);
  ((ar >> boost::serialization::make_nvp("object", objects)), ...);
}

template <class... T>
std::string save_archive(archive_kind k, const T&... objects) {
  switch (k) {
    case archive_kind::text: return save_with<boost::archive::text_oarchive>(objects...);
    case archive_kind::xml: return save_with<boost::archive::xml_oarchive>(objects...);
    case archive_kind::binary: break;
  }
  return save_with<boost::archive::binary_oarchive>(objects...);
}

template <class... T>
void load_archive(archive_kind k, const std::string& stored, T&... objects) {
  switch (k) {
    case archive_kind::text: return load_with<boost::archive::text_iarchive>(stored, objects...);
    case archive_kind::xml: return load_with<boost::archive::xml_iarchive>(stored, objects...);
    case archive_kind::binary: break;
  }
  load_with<boost::archive::binary_iarchive>(stored, objects...);
}

/// A network archive of `small` whose scalar_size field says 8 (double), the rest unchanged.
std::string as_double_archive(archive_kind k, std::string stored) {
  const std::string& model = nn::summary_of<small>().description;
  std::size_t at = std::string::npos;
  if (k == archive_kind::text) {  // "... 4 <length> <description> ..."
    at = stored.find(" 4 " + std::to_string(model.size()) + " input[]");
    if (at != std::string::npos) at += 1;
  } else if (k == archive_kind::xml) {
    at = stored.find("<scalar_size>4<");
    if (at != std::string::npos) at += 13;
  } else {  // a 4-byte scalar_size, the description's 8-byte length, the description
    at = stored.find(model);
    if (at != std::string::npos && at >= 12 && stored[at - 12] == 4) at -= 12;
    else at = std::string::npos;
  }
  REQUIRE(at != std::string::npos);
  stored[at] = k == archive_kind::binary ? char{8} : '8';
  return stored;
}

/// A fixed batch of 8 samples of the small model.
struct toy_data {
  nn::matrix<float> x = nn::matrix<float>(8, 3);
  std::vector<std::int32_t> labels{0, 1, 1, 0, 1, 0, 0, 1};
  toy_data() {
    for (Eigen::Index r = 0; r < x.rows(); ++r)
      for (Eigen::Index c = 0; c < x.cols(); ++c)
        x(r, c) =
            static_cast<float>(nn::random_symmetric(11, static_cast<std::uint64_t>(r), static_cast<std::uint64_t>(c)));
  }
};

template <class Net, class Options>
void train(nn::network<Net>& net, nn::optimizer<float, Options>& opt, const toy_data& d, int steps) {
  for (int i = 0; i < steps; ++i) {
    net.compute_gradients(d.x, d.labels);
    opt.step(net.parameters(), net.gradients());
  }
}

}  // namespace

TEST_CASE("Boost.Serialization: a network round trip is bit-exact") {
  const auto net = filled<mlp, float>(3);
  for (const auto kind : archive_kinds) {
    INFO(name_of(kind));
    nn::network<mlp, float> back(4);
    load_archive(kind, save_archive(kind, net), back);
    CHECK(same_bits<float>(back.parameters(), net.parameters()));
  }
}

TEST_CASE("Boost.Serialization: training continued after a round trip equals training without it") {
  const toy_data d;
  auto check = [&](archive_kind kind, auto options) {
    INFO(name_of(kind));
    using options_type = decltype(options);
    nn::network<small> net(1);
    nn::optimizer<float, options_type> opt(options);
    train(net, opt, d, 5);
    const std::string stored = save_archive(kind, net, opt);

    options_type other{};
    other.learning_rate = 0.5;
    nn::network<small> net2(2);
    nn::optimizer<float, options_type> opt2(other);
    load_archive(kind, stored, net2, opt2);
    CHECK(same_bits<float>(net2.parameters(), net.parameters()));
    CHECK(opt2.steps() == 5);
    CHECK(opt2.options().learning_rate == options.learning_rate);
    for (std::size_t k = 0; k < opt.state_names.size(); ++k) CHECK(same_bits<float>(opt2.state(k), opt.state(k)));

    train(net, opt, d, 7);
    train(net2, opt2, d, 7);
    CHECK(same_bits<float>(net2.parameters(), net.parameters()));
  };
  for (const auto kind : archive_kinds) {
    check(kind, nn::sgd{.learning_rate = 0.1, .momentum = 0.9, .weight_decay = 1e-4});
    check(kind, nn::sgd{.learning_rate = 0.1});
    check(kind, nn::adam{.learning_rate = 0.01, .beta1 = 0.8, .weight_decay = 1e-3});
    // Adam before its first step: no state.
    nn::optimizer<float, nn::adam> opt(nn::adam{.learning_rate = 0.02});
    nn::optimizer<float, nn::adam> back(nn::adam{});
    load_archive(kind, save_archive(kind, opt), back);
    CHECK(!back.has_state());
    CHECK(back.steps() == 0);
    CHECK(back.options().learning_rate == 0.02);
  }
}

TEST_CASE("Boost.Serialization: another model, scalar or optimizer is refused, nothing changed") {
  const auto net = filled<small, float>(3);
  const toy_data d;
  nn::network<small> n(1);
  nn::optimizer<float, nn::sgd> sgd_opt(nn::sgd{.momentum = 0.5});
  train(n, sgd_opt, d, 2);
  for (const auto kind : archive_kinds) {
    INFO(name_of(kind));
    const std::string stored = save_archive(kind, net);

    nn::network<wider> w(5);
    const auto w_before = parameters_of(w);
    const auto what = expect_storage_error([&] { load_archive(kind, stored, w); }, storage_problem::model_mismatch);
    CHECK(contains(what, "layer 1 is dense[3]->[5]:20 in the model, dense[3]->[4]:16 in the stored one"));
    CHECK(same_bits<float>(w.parameters(), w_before));

    nn::network<other_activation> a(5);
    const auto a_before = parameters_of(a);
    expect_storage_error([&] { load_archive(kind, stored, a); }, storage_problem::model_mismatch);
    CHECK(same_bits<float>(a.parameters(), a_before));

    // Another scalar type: the archive's scalar_size made 8 (as a double network writes it).
    nn::network<small> same(5);
    const auto same_before = parameters_of(same);
    const auto scalar = expect_storage_error([&] { load_archive(kind, as_double_archive(kind, stored), same); },
                                             storage_problem::model_mismatch);
    CHECK(contains(scalar, "8-byte scalars, this network's 4-byte"));
    CHECK(same_bits<float>(same.parameters(), same_before));

    // A cut archive: the archive's own error, the network unchanged.
    nn::network<small> cut(5);
    const auto cut_before = parameters_of(cut);
    CHECK_THROWS(load_archive(kind, stored.substr(0, stored.size() / 2), cut));
    CHECK(same_bits<float>(cut.parameters(), cut_before));

    // An SGD archive read by Adam: refused before anything changes.
    nn::optimizer<float, nn::adam> adam_opt(nn::adam{});
    nn::network<small> m(1);
    train(m, adam_opt, d, 1);
    const std::vector<float> m_before(adam_opt.state(0).begin(), adam_opt.state(0).end());
    const auto why = expect_storage_error([&] { load_archive(kind, save_archive(kind, sgd_opt), adam_opt); },
                                          storage_problem::model_mismatch);
    CHECK(contains(why, "'sgd'"));
    CHECK(adam_opt.steps() == 1);
    CHECK(same_bits<float>(adam_opt.state(0), m_before));
  }
}
