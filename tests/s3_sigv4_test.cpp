// S3 requests signed with AWS Signature Version 4 (store/s3/sigv4.hpp): AWS's published examples,
// byte-level properties (encoding, SHA-256, where secrets go), and botocore's own S3 signer as the
// oracle on 200 generated requests (tests/s3/botocore_sign.py). Part of test_store.
#include <f2d2n/store/s3/sigv4.hpp>

#include "temp_dir.hpp"

#include <doctest/doctest.h>

#include <sys/wait.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace nn = f2d2n;
namespace s3 = f2d2n::s3;
using namespace std::chrono_literals;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

template <class T>
concept printable = requires(std::ostream& o, const T& v) { o << v; };

/// The value of the header `name` that sign_v4 adds; "" when it adds none.
std::string header(const s3::signature& s, const std::string& name) {
  for (const auto& [n, v] : s.headers)
    if (n == name) return v;
  return "";
}

// AWS's examples: the S3 API reference, "Signature Calculations for the Authorization Header:
// Transferring Payload in a Single Chunk (AWS Signature Version 4)", section "Examples: Signature
// Calculations" (https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html).
// Every expected string below (canonical request, string to sign, signature) is the page's.
const std::string example_key_id = "AKIAIOSFODNN7EXAMPLE";
const std::string example_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const std::string example_host = "examplebucket.s3.amazonaws.com";
const std::string empty_sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const auto example_time = std::chrono::sys_days{std::chrono::year{2013} / 5 / 24};  // 20130524T000000Z

s3::signature sign_example(const s3::request& r) {
  return s3::sign_v4(r, {example_key_id, s3::secret(example_secret), {}}, "us-east-1", "s3", example_time);
}

/// The Authorization header for the examples' credentials and scope. The page writes it without a
/// space after each ','; sign_v4 writes ", " as botocore and AWS's general SigV4 pages do. S3 takes
/// both.
std::string example_authorization(const std::string& signed_headers, const std::string& signature) {
  return "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=" +
         signed_headers + ", Signature=" + signature;
}

}  // namespace

TEST_CASE("S3 SigV4: AWS's example GET Object (Range: bytes=0-9)") {
  const auto s = sign_example({"GET", example_host, "/test.txt", {}, {{"Range", "bytes=0-9"}}, empty_sha256});
  CHECK(s.canonical_request ==
        "GET\n"
        "/test.txt\n"
        "\n"
        "host:examplebucket.s3.amazonaws.com\n"
        "range:bytes=0-9\n"
        "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
        "x-amz-date:20130524T000000Z\n"
        "\n"
        "host;range;x-amz-content-sha256;x-amz-date\n"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(s.string_to_sign ==
        "AWS4-HMAC-SHA256\n"
        "20130524T000000Z\n"
        "20130524/us-east-1/s3/aws4_request\n"
        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
  CHECK(s.authorization == example_authorization("host;range;x-amz-content-sha256;x-amz-date",
                                                 "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"));
  CHECK(s.encoded_path == "/test.txt");
  CHECK(s.encoded_query.empty());
  const std::vector<std::pair<std::string, std::string>> added = {
      {"host", example_host},
      {"x-amz-content-sha256", empty_sha256},
      {"x-amz-date", "20130524T000000Z"},
      {"authorization", s.authorization}};
  CHECK(s.headers == added);
}

TEST_CASE("S3 SigV4: AWS's example PUT Object (test$file.text, Date, x-amz-storage-class, a signed body)") {
  const std::string body = "Welcome to Amazon S3.";
  REQUIRE(s3::sha256_hex(body) == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  const auto s = sign_example({"PUT",
                               example_host,
                               "/test$file.text",
                               {},
                               {{"Date", "Fri, 24 May 2013 00:00:00 GMT"}, {"x-amz-storage-class", "REDUCED_REDUNDANCY"}},
                               s3::sha256_hex(body)});
  CHECK(s.canonical_request ==
        "PUT\n"
        "/test%24file.text\n"
        "\n"
        "date:Fri, 24 May 2013 00:00:00 GMT\n"
        "host:examplebucket.s3.amazonaws.com\n"
        "x-amz-content-sha256:44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n"
        "x-amz-date:20130524T000000Z\n"
        "x-amz-storage-class:REDUCED_REDUNDANCY\n"
        "\n"
        "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n"
        "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  CHECK(s.string_to_sign ==
        "AWS4-HMAC-SHA256\n"
        "20130524T000000Z\n"
        "20130524/us-east-1/s3/aws4_request\n"
        "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d");
  CHECK(s.authorization == example_authorization("date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
                                                 "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"));
  CHECK(s.encoded_path == "/test%24file.text");
}

TEST_CASE("S3 SigV4: AWS's example GET Bucket Lifecycle (?lifecycle, a name without value)") {
  const auto s = sign_example({"GET", example_host, "/", {{"lifecycle", ""}}, {}, empty_sha256});
  CHECK(s.canonical_request ==
        "GET\n"
        "/\n"
        "lifecycle=\n"
        "host:examplebucket.s3.amazonaws.com\n"
        "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
        "x-amz-date:20130524T000000Z\n"
        "\n"
        "host;x-amz-content-sha256;x-amz-date\n"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(s.string_to_sign ==
        "AWS4-HMAC-SHA256\n"
        "20130524T000000Z\n"
        "20130524/us-east-1/s3/aws4_request\n"
        "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca");
  CHECK(s.authorization == example_authorization("host;x-amz-content-sha256;x-amz-date",
                                                 "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"));
  CHECK(s.encoded_query == "lifecycle=");
}

TEST_CASE("S3 SigV4: AWS's example Get Bucket (List Objects) (?max-keys=2&prefix=J, given unsorted)") {
  const auto s = sign_example({"GET", example_host, "/", {{"prefix", "J"}, {"max-keys", "2"}}, {}, empty_sha256});
  CHECK(s.canonical_request ==
        "GET\n"
        "/\n"
        "max-keys=2&prefix=J\n"
        "host:examplebucket.s3.amazonaws.com\n"
        "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
        "x-amz-date:20130524T000000Z\n"
        "\n"
        "host;x-amz-content-sha256;x-amz-date\n"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(s.string_to_sign ==
        "AWS4-HMAC-SHA256\n"
        "20130524T000000Z\n"
        "20130524/us-east-1/s3/aws4_request\n"
        "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7");
  CHECK(s.authorization == example_authorization("host;x-amz-content-sha256;x-amz-date",
                                                 "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"));
  CHECK(s.encoded_query == "max-keys=2&prefix=J");
}

TEST_CASE("S3 SigV4: uri_encode of every byte 0..255, with and without '/'") {
  std::string all;
  std::string expected_keep_slash, expected_encode_slash;
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    all += c;
    const bool unreserved = (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') || (b >= '0' && b <= '9') || b == '-' ||
                            b == '_' || b == '.' || b == '~';
    char escaped[4];
    std::snprintf(escaped, sizeof escaped, "%%%02X", static_cast<unsigned>(b));
    const std::string one(1, c);
    CAPTURE(b);
    CHECK(s3::uri_encode(one, true) == (unreserved ? one : std::string(escaped)));
    CHECK(s3::uri_encode(one, false) == (unreserved || b == '/' ? one : std::string(escaped)));
    expected_encode_slash += unreserved ? one : std::string(escaped);
    expected_keep_slash += unreserved || b == '/' ? one : std::string(escaped);
  }
  CHECK(s3::uri_encode(all, true) == expected_encode_slash);
  CHECK(s3::uri_encode(all, false) == expected_keep_slash);
  CHECK(s3::uri_encode("/a b/é+%2F//~", false) == "/a%20b/%C3%A9%2B%252F//~");
  CHECK(s3::uri_encode("", true).empty());
}

TEST_CASE("S3 SigV4: SHA-256 gives FIPS 180-2's digests; in random pieces over 1 MiB as in one") {
  CHECK(s3::sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(s3::sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(s3::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");

  std::uint64_t state = 0x5eed5eedULL;
  const auto next = [&state] {  // xorshift64*: the same pieces everywhere
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545F4914F6CDD1DULL;
  };
  // FIPS 180-2's third example, a million 'a', in pieces of 0 to 4099 bytes.
  const std::string million(1'000'000, 'a');
  s3::sha256 h;
  for (std::size_t at = 0; at < million.size();) {
    const std::size_t n = std::min<std::size_t>(next() % 4100, million.size() - at);
    h.update(std::string_view(million).substr(at, n));
    at += n;
  }
  CHECK(s3::hex(h.finish()) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // finish() started afresh.
  h.update("abc");
  CHECK(s3::hex(h.finish()) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

  for (int round = 0; round < 4; ++round) {
    std::vector<std::byte> data((1u << 20) + next() % 100'000);
    for (auto& b : data) b = static_cast<std::byte>(next() >> 56);
    s3::sha256 pieces;
    const std::size_t largest = round == 0 ? 1 : std::size_t{1} << (4 * round + 2);  // 1, 64, 1024, 16384
    std::size_t count = 0;
    for (std::size_t at = 0; at < data.size(); ++count) {
      const std::size_t n = std::min<std::size_t>(next() % (largest + 1), data.size() - at);
      pieces.update(std::span<const std::byte>(data).subspan(at, n));
      at += n;
      if (round == 0 && count > 1000) {  // byte by byte only for the start; then the rest at once
        pieces.update(std::span<const std::byte>(data).subspan(at));
        at = data.size();
      }
    }
    s3::sha256 moved = std::move(pieces);  // the digest's state moves with it
    CAPTURE(round);
    CHECK(s3::hex(moved.finish()) == s3::sha256_hex(data));
  }
  // A different byte anywhere is a different digest.
  std::vector<std::byte> data(3000, std::byte{7});
  const auto before = s3::sha256_hex(data);
  data[2999] = std::byte{8};
  CHECK(s3::sha256_hex(data) != before);
}

TEST_CASE("S3 SigV4: the secret access key is in no signature string and no error message") {
  static_assert(!printable<s3::secret>, "a secret must not print");
  static_assert(!std::is_convertible_v<s3::secret, std::string>);
  static_assert(!std::is_convertible_v<s3::secret, std::string_view>);
  static_assert(!std::is_convertible_v<std::string, s3::secret>);

  const std::string key = "SeCrEt/Key+With=Marks0123456789abcdefXYZ";
  const std::string token = "ToKeN/Session+Token=0123456789";
  const s3::credentials c{"AKIDEXAMPLE", s3::secret(key), s3::secret(token)};
  const auto when = example_time + 1h;
  // Requests that carry the key's text everywhere a caller could put it by mistake: nothing may
  // echo it, but where the caller put it is signed as given.
  const s3::request r{"PUT",          "bucket.example:9000", "/k/" + key, {{"q", key}, {key, ""}},
                      {{"x-amz-meta-k", key}}, s3::sha256_hex(key)};
  const auto s = s3::sign_v4(r, c, "eu-west-3", "s3", when);
  const auto plain = s3::sign_v4({"GET", "h", "/a", {}, {}, std::string(s3::unsigned_payload)}, c, "eu-west-3", "s3", when);
  CHECK_FALSE(contains(plain.canonical_request, key));
  CHECK_FALSE(contains(plain.string_to_sign, key));
  CHECK_FALSE(contains(plain.authorization, key));
  for (const auto& [name, value] : plain.headers) CHECK_FALSE(contains(value, key));
  CHECK_FALSE(contains(s.string_to_sign, key));
  CHECK_FALSE(contains(s.authorization, key));
  // The session token is sent (a signed header), in the clear, never in what the signature is.
  CHECK(header(s, "x-amz-security-token") == token);
  CHECK(contains(s.canonical_request, "\nx-amz-security-token:" + token + "\n"));
  CHECK_FALSE(contains(s.string_to_sign, token));
  CHECK_FALSE(contains(s.authorization, token));

  // Every refusal, each with the key and the token where the caller could have put them.
  const auto refused = [&](const s3::request& bad, const s3::credentials& creds, std::string_view region,
                           std::string_view service, std::chrono::system_clock::time_point t, const std::string& says) {
    try {
      (void)s3::sign_v4(bad, creds, region, service, t);
      FAIL_CHECK("signed, but should have refused: " << says);
    } catch (const nn::configuration_error& e) {
      const std::string what = e.what();
      CAPTURE(what);
      CHECK(contains(what, says));
      CHECK_FALSE(contains(what, key));
      CHECK_FALSE(contains(what, token));
    }
  };
  auto bad = r;
  const auto good_hash = r.payload_hash;
  bad.method = "PUT " + key;
  refused(bad, c, "eu-west-3", "s3", when, "the method is not an HTTP token");
  bad = r;
  bad.host = key + " x";
  refused(bad, c, "eu-west-3", "s3", when, "the host is empty");
  bad = r;
  bad.path = key;
  refused(bad, c, "eu-west-3", "s3", when, "the path does not begin with '/'");
  bad = r;
  bad.payload_hash = key;
  refused(bad, c, "eu-west-3", "s3", when, "the payload hash is neither");
  bad.payload_hash = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";  // uppercase
  refused(bad, c, "eu-west-3", "s3", when, "the payload hash is neither");
  bad = r;
  bad.headers.emplace_back(key + ":", "v");
  refused(bad, c, "eu-west-3", "s3", when, "header 1's name is not an HTTP token");
  bad = r;
  bad.headers.emplace_back("x-amz-meta-v", key + "\r\nx-injected: 1");
  refused(bad, c, "eu-west-3", "s3", when, "the value of the header x-amz-meta-v holds a control character");
  for (const char* own : {"Host", "X-Amz-Date", "x-amz-content-sha256", "X-Amz-Security-Token", "Authorization"}) {
    bad = r;
    bad.headers.emplace_back(own, key);
    refused(bad, c, "eu-west-3", "s3", when, "is set by sign_v4");
  }
  refused(r, {"", s3::secret(key), s3::secret(token)}, "eu-west-3", "s3", when, "the access key id is empty");
  refused(r, {key, s3::secret(key), s3::secret(token)}, "eu-west-3", "s3", when, "the access key id is empty or holds");
  refused(r, {"AKID", s3::secret(), s3::secret(token)}, "eu-west-3", "s3", when, "the secret access key is empty");
  refused(r, {"AKID", s3::secret(key), s3::secret(token + "\n")}, "eu-west-3", "s3", when, "the session token holds");
  refused(r, c, key, "s3", when, "the region is empty or holds");
  refused(r, c, "", "s3", when, "the region is empty or holds");
  refused(r, c, "eu-west-3", "s 3", when, "the service is empty or holds");
  CHECK(good_hash == r.payload_hash);
}

TEST_CASE("S3 SigV4: sign_v4's canonical form: query order, repeated and padded headers, the UTC date") {
  const s3::credentials c{"AKID", s3::secret("k"), {}};
  const std::string unsigned_hash(s3::unsigned_payload);
  // Sorted by encoded name: "a/" ("a%2F") and "aé" ("a%C3%A9") before "a." and "a~" ('%' is
  // before '.' and '~'), though raw '.' < '/' and '~' < 0xC3; a name given twice, by encoded value.
  const auto q = s3::sign_v4({"GET", "h", "/", {{"a.", "1"}, {"a/", "2"}, {"a~", "3"}, {"aé", "4"}, {"b", "z z"}, {"b", "+/="}, {"A", ""}}, {}, unsigned_hash},
                             c, "us-east-1", "s3", example_time);
  CHECK(q.encoded_query == "A=&a%2F=2&a%C3%A9=4&a.=1&a~=3&b=%2B%2F%3D&b=z%20z");
  // Names in any case, one header however often given (values joined by ',' in order), values
  // trimmed of spaces and tabs and inner runs of them one space; the path encoded once, not normalised.
  const auto h = s3::sign_v4({"PUT", "h:8443", "/b//./../a b%41", {},
                              {{"X-Amz-Meta-B", " \t 2  \t x  "}, {"x-amz-meta-a", "1"}, {"x-amz-meta-b", "1"}, {"X-AMZ-META-B", ""}},
                              unsigned_hash},
                             c, "us-east-1", "s3", example_time + 23h + 59min + 59s + 999ms);
  CHECK(h.canonical_request ==
        "PUT\n"
        "/b//./../a%20b%2541\n"
        "\n"
        "host:h:8443\n"
        "x-amz-content-sha256:UNSIGNED-PAYLOAD\n"
        "x-amz-date:20130524T235959Z\n"
        "x-amz-meta-a:1\n"
        "x-amz-meta-b:2 x,1,\n"
        "\n"
        "host;x-amz-content-sha256;x-amz-date;x-amz-meta-a;x-amz-meta-b\n"
        "UNSIGNED-PAYLOAD");
  // An empty path is "/".
  CHECK(s3::sign_v4({"GET", "h", "", {}, {}, unsigned_hash}, c, "us-east-1", "s3", example_time).encoded_path == "/");
  // The date is UTC whatever the process's time zone: here UTC+13:45.
  const char* old_tz = std::getenv("TZ");
  const std::string saved = old_tz != nullptr ? old_tz : "";
  ::setenv("TZ", "XXX-13:45", 1);
  ::tzset();
  const auto d = s3::sign_v4({"GET", "h", "/", {}, {}, unsigned_hash}, c, "us-east-1", "s3", example_time - 1s);
  if (old_tz != nullptr) ::setenv("TZ", saved.c_str(), 1);
  else ::unsetenv("TZ");
  ::tzset();
  CHECK(header(d, "x-amz-date") == "20130523T235959Z");
  CHECK(contains(d.authorization, "Credential=AKID/20130523/us-east-1/s3/aws4_request, "));
}

// botocore as the oracle ---------------------------------------------------------------------------

namespace {

/// splitmix64: the same cases on every run (the standard distributions differ between libraries).
class case_random {
 public:
  explicit case_random(std::uint64_t seed) : s_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (s_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }
  bool percent(unsigned p) { return below(100) < p; }
  std::string pick(std::span<const std::string_view> choices) { return std::string(choices[below(choices.size())]); }
  std::string chars(std::string_view alphabet, std::size_t n) {
    std::string s;
    for (std::size_t i = 0; i < n; ++i) s += alphabet[below(alphabet.size())];
    return s;
  }
  std::string number(std::size_t below_n) { return std::to_string(below(below_n)); }

 private:
  std::uint64_t s_;
};

constexpr std::string_view base64_chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Pieces of keys and query values: blanks, '+', '=', '&', '~', '%', reserved marks, UTF-8 (two,
/// three and four bytes), '.' and '..'.
constexpr std::string_view key_pieces[] = {
    "a", "key", "Data", "ckpt-00000120", "unit-0.bin", "x y", "  two  spaces ", "a+b", "k=v", "a&b=c", "tilde~",
    "100%", "%41", "%2F", "é", "日本語", "😀", "naïve", "Ω≈ç", "$", "!", "*", "'", "(x)", ",", ";", ":", "@", "[]",
    "#", "?", "\"", "<>", "\\", "^", "`", "{}", "|", ".", "..", "-_.", "+", "=", "&", "~", "%"};
constexpr std::string_view methods[] = {"GET", "PUT", "HEAD", "DELETE", "POST"};
constexpr std::string_view buckets[] = {"bucket", "my-bucket.example", "f2d2n-ckpt-01"};
constexpr std::string_view valueless[] = {"lifecycle", "acl", "tagging", "versioning", "uploads"};
/// Names whose encoded order differs from their raw order, and other odd ones.
constexpr std::string_view odd_names[] = {"a.", "a/", "a~", "aé", "A", "a b", "a+b", "_", "~", ""};
constexpr std::string_view content_types[] = {"text/plain; charset=utf-8", "application/octet-stream",
                                              "  application/json  "};
constexpr std::string_view storage_classes[] = {"STANDARD", "STANDARD_IA", "REDUCED_REDUNDANCY"};

/// One generated request, as the C++ side signs it and as botocore_sign.py reads it.
struct oracle_case {
  s3::request request;
  s3::credentials creds;
  std::string region, scheme, time_text;
  std::chrono::system_clock::time_point when;
  std::string body;  // signed payloads: the body whose hash is signed
  bool unsigned_body = false;
};

/// x-amz-date's text computed with <chrono>'s calendar (independent of sign_v4's gmtime_r).
std::string expected_amz_date(std::chrono::system_clock::time_point when) {
  const auto day = std::chrono::floor<std::chrono::days>(when);
  const std::chrono::year_month_day ymd(day);
  const std::chrono::hh_mm_ss hms(std::chrono::floor<std::chrono::seconds>(when - day));
  char text[32];
  std::snprintf(text, sizeof text, "%04d%02u%02uT%02ld%02ld%02ldZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<long>(hms.hours().count()), static_cast<long>(hms.minutes().count()),
                static_cast<long>(hms.seconds().count()));
  return text;
}

std::string random_key(case_random& g) {
  std::string key;
  const std::size_t segments = 1 + g.below(5);
  for (std::size_t i = 0; i < segments; ++i) {
    if (i > 0) key += g.percent(15) ? "//" : (g.percent(5) ? "///" : "/");
    if (g.percent(8)) continue;  // an empty segment
    for (std::size_t j = 1 + g.below(3); j > 0; --j) key += g.pick(key_pieces);
  }
  if (g.percent(10)) key.insert(0, "/");  // a key that begins with '/'
  if (g.percent(10)) key += '/';
  return key;
}

/// A printable ASCII header value, often padded and with inner runs of spaces and tabs.
std::string random_value(case_random& g) {
  if (g.percent(3)) return g.chars("  \t", g.below(3));  // blank or empty
  std::string v;
  if (g.percent(40)) v += g.chars(" \t", 1 + g.below(3));
  for (std::size_t i = 0, words = 1 + g.below(4); i < words; ++i) {
    if (i > 0) v += g.percent(50) ? std::string(" ") : g.chars("  \t", 1 + g.below(4));
    for (std::size_t j = 1 + g.below(8); j > 0; --j) v += static_cast<char>(0x21 + g.below(0x7f - 0x21));
  }
  if (g.percent(40)) v += g.chars(" \t", 1 + g.below(3));
  return v;
}

void add_random_query(case_random& g, s3::request& r) {
  for (std::size_t i = 0, n = g.percent(35) ? 0 : 1 + g.below(5); i < n; ++i) {
    switch (g.below(15)) {
      case 0: r.query.emplace_back("list-type", "2"); break;
      case 1: r.query.emplace_back("prefix", random_key(g)); break;
      case 2: r.query.emplace_back("delimiter", "/"); break;
      case 3: r.query.emplace_back("max-keys", g.number(1001)); break;
      case 4: r.query.emplace_back("continuation-token", g.chars(base64_chars, 20 + g.below(60)) + std::string(g.below(3), '=')); break;
      case 5: r.query.emplace_back("start-after", random_key(g)); break;
      case 6: r.query.emplace_back("uploadId", g.chars("ABCDEFabcdef0123456789._-/+=", 30 + g.below(40))); break;
      case 7: r.query.emplace_back("partNumber", std::to_string(1 + g.below(10000))); break;
      case 8: r.query.emplace_back("versionId", g.chars(base64_chars, 32)); break;
      case 9: r.query.emplace_back(g.pick(valueless), ""); break;
      case 10: r.query.emplace_back("encoding-type", "url"); break;
      case 11: r.query.emplace_back("x-id", g.percent(50) ? "GetObject" : "PutObject"); break;
      case 12: r.query.emplace_back(g.pick(odd_names), g.percent(30) ? std::string() : random_key(g)); break;
      case 13:  // one name twice, values out of order
        r.query.emplace_back("dup", "z" + g.pick(key_pieces));
        r.query.emplace_back("dup", "a" + g.pick(key_pieces));
        break;
      default: r.query.emplace_back(g.pick(key_pieces), g.pick(key_pieces)); break;
    }
  }
}

void add_random_headers(case_random& g, s3::request& r) {
  for (std::size_t i = 0, n = g.below(6); i < n; ++i) {
    switch (g.below(10)) {
      case 0: r.headers.emplace_back(g.percent(50) ? "Range" : "range", "bytes=" + g.number(1000) + "-" + g.number(1000) + "0"); break;
      case 1: r.headers.emplace_back("Content-Type", g.pick(content_types)); break;
      case 2: r.headers.emplace_back("Content-MD5", g.chars(base64_chars, 22) + "=="); break;
      case 3: r.headers.emplace_back("x-amz-meta-" + g.chars("abcdefghijklmnopqrstuvwxyz-_0123456789", 1 + g.below(10)), random_value(g)); break;
      case 4: r.headers.emplace_back("X-Amz-Meta-" + g.chars("ABCabcXYZxyz", 1 + g.below(6)), random_value(g)); break;
      case 5: r.headers.emplace_back(g.percent(50) ? "If-None-Match" : "if-match", g.percent(50) ? "*" : "\"" + g.chars("0123456789abcdef", 32) + "\""); break;
      case 6: r.headers.emplace_back("x-amz-storage-class", g.pick(storage_classes)); break;
      case 7: r.headers.emplace_back("Cache-Control", "no-cache,   no-store\t, max-age=0"); break;
      case 8:  // one header given twice, in two cases
        r.headers.emplace_back("X-Amz-Meta-Dup", random_value(g));
        r.headers.emplace_back("x-amz-meta-dup", random_value(g));
        break;
      default: r.headers.emplace_back("x-amz-checksum-sha256", g.chars(base64_chars, 43) + "="); break;
    }
  }
}

oracle_case random_case(case_random& g, std::size_t index) {
  oracle_case k;
  auto& r = k.request;
  r.method = g.pick(methods);
  k.region = g.percent(50) ? "us-east-1" : "eu-west-3";
  // Hosts lowercase, a port only where it is not the scheme's default (see the exclusions below).
  const std::string bucket = g.pick(buckets);
  if (g.percent(50)) {  // path-style
    constexpr std::string_view endpoints[][2] = {
        {"", "https"}, {"minio.local:9000", "http"}, {"127.0.0.1:9000", "http"}, {"localhost:8443", "https"}, {"[::1]:9000", "http"}};
    const auto& e = endpoints[g.below(std::size(endpoints))];
    r.host = e[0].empty() ? "s3." + k.region + ".amazonaws.com" : std::string(e[0]);
    k.scheme = e[1];
    r.path = "/" + bucket + (g.percent(85) ? "/" + random_key(g) : std::string(g.percent(50) ? "/" : ""));
  } else {  // virtual-hosted
    r.host = bucket + ".s3." + k.region + ".amazonaws.com" + (g.percent(20) ? ":8080" : "");
    k.scheme = g.percent(80) ? "https" : "http";
    r.path = g.percent(85) ? "/" + random_key(g) : "/";
  }
  add_random_query(g, r);
  add_random_headers(g, r);

  k.unsigned_body = g.percent(30);
  if (k.unsigned_body) {
    r.payload_hash = std::string(s3::unsigned_payload);
  } else {
    const bool has_body = (r.method == "PUT" || r.method == "POST") ? g.percent(90) : g.percent(10);
    for (std::size_t n = has_body ? g.below(3000) : 0; n > 0; --n) k.body += static_cast<char>(g.next() >> 56);
    r.payload_hash = s3::sha256_hex(k.body);
  }

  k.creds.access_key_id = (g.percent(70) ? "AKIA" : "ASIA") + g.chars("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16);
  k.creds.secret_access_key = s3::secret(g.chars(base64_chars, 40));
  if (g.percent(30)) k.creds.session_token = s3::secret(g.chars(base64_chars, 40 + g.below(300)) + std::string(g.below(3), '='));

  // Times from 2000 to 2099 with a fraction of a second, and a few edges first.
  using std::chrono::sys_days, std::chrono::year;
  const sys_days start = year{2000} / 1 / 1;
  const std::chrono::system_clock::time_point edges[] = {start, sys_days{year{2024} / 2 / 29} + 23h + 59min + 59s + 999ms,
                                                         sys_days{year{2038} / 1 / 19} + 3h + 14min + 8s,
                                                         sys_days{year{2099} / 12 / 31} + 23h + 59min + 59s};
  if (index < std::size(edges)) {
    k.when = edges[index];
  } else {
    const auto span_ms = std::chrono::duration_cast<std::chrono::milliseconds>(sys_days{year{2100} / 1 / 1} - start);
    k.when = start + std::chrono::milliseconds(g.next() % static_cast<std::uint64_t>(span_ms.count()));
  }
  k.time_text = expected_amz_date(k.when);
  return k;
}

/// A JSON string: '"', '\\' and control characters escaped; other bytes (UTF-8) as they are.
std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned>(c));
      out += escaped;
    } else {
      out += c;
    }
  }
  return out + '"';
}

std::string json_pairs(const std::vector<std::pair<std::string, std::string>>& pairs) {
  std::string out = "[";
  for (const auto& [n, v] : pairs) out += (out.size() > 1 ? ", [" : "[") + json_string(n) + ", " + json_string(v) + "]";
  return out + "]";
}

// Left out of the comparison, because there botocore signs otherwise than S3 wants, or than
// sign_v4's contract says (each checked with botocore 1.29.27, Debian 12's, and 1.43):
// - A Date header: botocore replaces it with its own clock's time ("Fri, 24 May 2013 00:00:00
//   -0000") and then drops x-amz-date. AWS's PUT Object example signs Date as given and
//   x-amz-date both, as sign_v4 does (the test case of that example).
// - User-Agent, Expect, X-Amzn-Trace-Id: botocore never signs them (proxies change them); sign_v4
//   signs whatever headers it is given, so a caller leaves them out of request::headers.
// - Header values other than printable ASCII, spaces and tabs: botocore trims with Python's
//   str.split(), which also takes U+00A0, U+2003 and other Unicode spaces for blanks; SigV4 trims
//   spaces (S3 wants ASCII header values anyway; other text goes RFC 2047-encoded).
// - Hosts with capitals or the scheme's default port: botocore takes the host from the URL,
//   lowercased and without a default port; sign_v4 signs the Host header as the caller sends it.
// - An empty path: botocore signs an empty line; sign_v4 signs "/", what the request line carries.
// Paths with '//', '.' and '..' segments are compared: botocore's S3SigV4Auth signs the path as it
// is (its generic SigV4Auth, for other services, removes dot segments and collapses '//', which
// S3 does not do; a key "a/../b" is its own key).
std::string to_json(const oracle_case& k) {
  const auto& r = k.request;
  return "{\"method\": " + json_string(r.method) + ", \"scheme\": " + json_string(k.scheme) +
         ", \"host\": " + json_string(r.host) + ", \"path\": " + json_string(r.path) +
         ", \"query\": " + json_pairs(r.query) + ", \"headers\": " + json_pairs(r.headers) +
         ", \"unsigned_payload\": " + (k.unsigned_body ? "true" : "false") +
         ", \"body_hex\": " + json_string(s3::hex(std::span(reinterpret_cast<const unsigned char*>(k.body.data()), k.body.size()))) +
         ", \"access_key\": " + json_string(k.creds.access_key_id) +
         ", \"secret\": " + json_string(k.creds.secret_access_key.reveal()) +
         ", \"token\": " + json_string(k.creds.session_token.reveal()) + ", \"region\": " + json_string(k.region) +
         ", \"time\": " + json_string(k.time_text) + "}";
}

/// The fields of one line botocore_sign.py writes: a flat JSON object of strings (Python's
/// json.dumps: non-ASCII as \uXXXX, surrogate pairs included). Empty when the line is not one.
std::vector<std::pair<std::string, std::string>> parse_json_line(std::string_view line) {
  std::size_t at = 0;
  const auto skip = [&] {
    while (at < line.size() && (line[at] == ' ' || line[at] == '\t')) ++at;
  };
  const auto hex4 = [&](unsigned& v) {
    if (at + 4 > line.size()) return false;
    v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = line[at++];
      const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) return false;
      v = v * 16 + static_cast<unsigned>(d);
    }
    return true;
  };
  const auto string = [&](std::string& out) {
    if (at >= line.size() || line[at++] != '"') return false;
    while (at < line.size() && line[at] != '"') {
      if (line[at] != '\\') {
        out += line[at++];
        continue;
      }
      if (++at >= line.size()) return false;
      const char e = line[at++];
      unsigned cp = 0;
      switch (e) {
        case 'n': out += '\n'; continue;
        case 't': out += '\t'; continue;
        case 'r': out += '\r'; continue;
        case 'b': out += '\b'; continue;
        case 'f': out += '\f'; continue;
        case '"': case '\\': case '/': out += e; continue;
        case 'u': break;
        default: return false;
      }
      if (!hex4(cp)) return false;
      if (cp >= 0xD800 && cp < 0xDC00) {  // a surrogate pair
        unsigned low = 0;
        if (at + 2 > line.size() || line[at] != '\\' || line[at + 1] != 'u') return false;
        at += 2;
        if (!hex4(low) || low < 0xDC00 || low >= 0xE000) return false;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
      }
      if (cp < 0x80) {
        out += static_cast<char>(cp);
      } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      }
    }
    return at++ < line.size();
  };
  std::vector<std::pair<std::string, std::string>> fields;
  skip();
  if (at >= line.size() || line[at++] != '{') return {};
  for (;;) {
    skip();
    std::string name, value;
    if (!string(name)) return {};
    skip();
    if (at >= line.size() || line[at++] != ':') return {};
    skip();
    if (!string(value)) return {};
    fields.emplace_back(std::move(name), std::move(value));
    skip();
    if (at < line.size() && line[at] == ',') {
      ++at;
      continue;
    }
    if (at < line.size() && line[at] == '}') return fields;
    return {};
  }
}

std::string field(const std::vector<std::pair<std::string, std::string>>& fields, std::string_view name) {
  for (const auto& [n, v] : fields)
    if (n == name) return v;
  return "<missing>";
}

std::string shell_quoted(const std::string& s) {
  std::string q = "'";
  for (const char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace

TEST_CASE("S3 SigV4: parse_json_line reads what Python's json.dumps writes") {
  const auto f = parse_json_line(R"({"a": "x\ny\t\"q\" \\ \/ \u00e9\u65e5\ud83d\ude00", "b": ""})");
  REQUIRE(f.size() == 2);
  CHECK(f[0].second == "x\ny\t\"q\" \\ / é日😀");
  CHECK(f[1].second.empty());
  CHECK(parse_json_line(R"({"a": "x")").empty());
  CHECK(parse_json_line(R"({"a": 1})").empty());
  CHECK(parse_json_line("not json").empty());
}

TEST_CASE("S3 SigV4: botocore's S3 signer signs 200 generated requests as sign_v4 does") {
  constexpr std::size_t count = 200;
  case_random g(20130524);
  std::vector<oracle_case> cases;
  std::vector<std::string> inputs;
  for (std::size_t i = 0; i < count; ++i) {
    cases.push_back(random_case(g, i));
    inputs.push_back(to_json(cases.back()));
  }
  f2d2n::testing::temp_dir dir("f2d2n-sigv4");
  const std::string file = dir.file("cases.json");
  {
    std::ofstream out(file, std::ios::binary);
    for (std::size_t i = 0; i < count; ++i) out << (i == 0 ? "[\n" : ",\n") << inputs[i];
    out << "\n]\n";
    REQUIRE(out.good());
  }

  // The system's Python first, as tests/CMakeLists.txt chooses it: Debian's python3-botocore
  // installs into it, and a python3 found first on PATH (pyenv, a virtual environment) may lack it.
  const std::string python = std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  const std::string script = std::string(F2D2N_SOURCE_DIR) + "/tests/s3/botocore_sign.py";
  const std::string command = shell_quoted(python) + " " + shell_quoted(script) + " " + shell_quoted(file) + " 2>&1";
  std::string output;
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE_MESSAGE(pipe != nullptr, "cannot run " << command);
  std::array<char, 65536> chunk{};
  for (std::size_t n; (n = std::fread(chunk.data(), 1, chunk.size(), pipe)) > 0;) output.append(chunk.data(), n);
  const int status = ::pclose(pipe);
  const int exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (exit_code != 0)
    FAIL("botocore, this test's oracle, did not run (" << command << " exited with " << exit_code
                                                        << std::string(exit_code == 127 ? ": no python3" : "")
                                                        << std::string(exit_code == 3 ? ": no botocore" : "") << "):\n"
                                                        << output
                                                        << "\nInstall what the tests need with scripts/deps.sh "
                                                           "(Debian's python3 and python3-botocore).");

  std::vector<std::vector<std::pair<std::string, std::string>>> answers;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    auto fields = parse_json_line(line);
    REQUIRE_MESSAGE(!fields.empty(), "botocore_sign.py wrote a line that is not what it should: " << line);
    if (fields.front().first == "botocore") MESSAGE("botocore " << fields.front().second << " (" << python << ")");
    else answers.push_back(std::move(fields));
  }
  REQUIRE(answers.size() == count);

  std::size_t agreed = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const auto& k = cases[i];
    const auto s = s3::sign_v4(k.request, k.creds, k.region, "s3", k.when);
    const auto& b = answers[i];
    if (s.canonical_request != field(b, "canonical_request") || s.string_to_sign != field(b, "string_to_sign") ||
        s.authorization != field(b, "authorization") || header(s, "x-amz-date") != k.time_text) {
      FAIL_CHECK("case " << i << " of " << count << " differs (the first that does):\n"
                         << inputs[i] << "\n--- sign_v4's canonical request:\n"
                         << s.canonical_request << "\n--- botocore's:\n"
                         << field(b, "canonical_request") << "\n--- sign_v4's string to sign:\n"
                         << s.string_to_sign << "\n--- botocore's:\n"
                         << field(b, "string_to_sign") << "\n--- sign_v4's Authorization:\n"
                         << s.authorization << "\n--- botocore's:\n"
                         << field(b, "authorization") << "\n--- x-amz-date: sign_v4's " << header(s, "x-amz-date")
                         << ", expected " << k.time_text);
      break;
    }
    ++agreed;
  }
  CHECK(agreed == count);
}
