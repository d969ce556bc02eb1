// f2d2n/store/s3/detail/xml.hpp: the store's XML answers (listings, multipart uploads), parsed with
// Boost.PropertyTree. The store is not trusted: an answer too deeply nested for the recursive
// parser is refused before it is parsed, and every malformed answer is an s3_error (bad_format).
#pragma once

#include <f2d2n/store/s3/options.hpp>

#include <boost/property_tree/ptree.hpp>
#include <boost/property_tree/xml_parser.hpp>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace f2d2n::s3 {

/// An object in a listing.
struct object_info {
  std::string key;
  std::uint64_t size = 0;
};

namespace detail {

/// Elements nested deeper than this are refused (S3's answers nest 3 deep).
inline constexpr std::size_t max_xml_depth = 32;

/// The element nesting of an XML text, roughly (tags, not comments or CDATA): enough to keep a
/// hostile answer of millions of nested elements from the parser's recursion.
[[nodiscard]] inline std::size_t xml_depth(std::string_view text) noexcept {
  std::size_t depth = 0, deepest = 0;
  for (std::size_t i = 0; i + 1 < text.size(); ++i) {
    if (text[i] != '<') continue;
    const char next = text[i + 1];
    if (next == '/') {
      if (depth > 0) --depth;
    } else if (next != '?' && next != '!') {
      const auto close = text.find('>', i);
      if (close == std::string_view::npos) break;
      if (text[close - 1] != '/') deepest = std::max(deepest, ++depth);
      i = close;
    }
  }
  return deepest;
}

/// Parses an XML answer of the store about `bucket` / `key`.
[[nodiscard]] inline boost::property_tree::ptree parse_xml(const std::string& body, std::string_view bucket,
                                                          std::string_view key) {
  if (xml_depth(body) > max_xml_depth)
    throw s3_error(std::string(bucket), std::string(key), 200, "", storage_problem::bad_format,
                   "the store's XML answer nests deeper than " + std::to_string(max_xml_depth) + " elements");
  boost::property_tree::ptree t;
  try {
    std::istringstream in(body);
    boost::property_tree::read_xml(in, t);
  } catch (const std::exception& e) {
    throw s3_error(std::string(bucket), std::string(key), 200, "", storage_problem::bad_format,
                   std::string("the store's XML answer does not parse: ") + e.what());
  }
  return t;
}

/// One page of a ListObjectsV2 answer.
struct list_page {
  std::vector<object_info> objects;
  bool truncated = false;
  std::string next_token;
};

/// Reads a ListObjectsV2 page for `prefix`: every key must start with it; a truncated page must
/// carry a continuation token.
[[nodiscard]] inline list_page parse_list_page(const std::string& body, std::string_view bucket,
                                               std::string_view prefix) {
  const auto doc = parse_xml(body, bucket, prefix);
  auto bad = [&](const char* why) {
    return s3_error(std::string(bucket), std::string(prefix), 200, "", storage_problem::bad_format, why);
  };
  const auto result = doc.get_child_optional("ListBucketResult");
  if (!result) throw bad("the store's answer to a listing is not a ListBucketResult");
  list_page page;
  for (const auto& [name, node] : *result) {
    if (name != "Contents") continue;
    object_info info;
    info.key = node.get<std::string>("Key", "");
    const auto size = node.get_optional<std::uint64_t>("Size");
    if (!size) throw bad("the listing holds an object without a size");
    info.size = *size;
    if (!info.key.starts_with(prefix)) throw bad("the listing holds a key outside the prefix");
    page.objects.push_back(std::move(info));
  }
  page.truncated = result->get<std::string>("IsTruncated", "false") == "true";
  if (page.truncated) {
    page.next_token = result->get<std::string>("NextContinuationToken", "");
    if (page.next_token.empty()) throw bad("a truncated listing without a continuation token");
  }
  return page;
}

}  // namespace detail
}  // namespace f2d2n::s3
