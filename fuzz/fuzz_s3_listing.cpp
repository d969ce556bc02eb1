// The S3 client's reading of a store's XML answers (store/s3/detail/xml.hpp) on arbitrary bytes: a
// hostile or broken store may answer a listing with anything. An s3_error (bad_format) is the
// answer to a bad document; any other exception or a crash is a finding, and so is a page that
// holds a key outside the prefix or is truncated without a continuation token.

#include <f2d2n/store/s3/detail/xml.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  try {
    const auto page = f2d2n::s3::detail::parse_list_page(body, "bucket", "p/");
    for (const auto& o : page.objects)
      if (!o.key.starts_with("p/")) std::abort();
    if (page.truncated && page.next_token.empty()) std::abort();
  } catch (const f2d2n::s3::s3_error& e) {
    if (e.problem() != f2d2n::storage_problem::bad_format) std::abort();
  }
  return 0;
}
