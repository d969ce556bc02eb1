// f2d2n/store/s3/client.hpp: a small S3 client (docs/storage.md, "Object stores"): PUT (single or
// multipart with parallel parts), ranged GET, HEAD, DELETE, ListObjectsV2 and bucket creation,
// signed with AWS Signature Version 4, over HTTP/1.1 or HTTPS (Boost.Beast, OpenSSL). Every call
// has a deadline; failures that a retry can mend (connection loss, timeouts, HTTP 5xx, 429, S3's
// throttling) are retried with exponential backoff and full jitter; the rest throw s3_error
// naming bucket, key, HTTP status and S3's error code, never a credential.
//
// Calls may come from several threads at once: each takes a kept-alive connection from a pool (or
// opens one) and gives it back. A multipart upload sends its parts from parallel_parts threads, each
// on a connection of its own, each blocked in poll() while it waits (none spins).
#pragma once

#include <f2d2n/store/backend.hpp>
#include <f2d2n/store/s3/detail/connection.hpp>
#include <f2d2n/store/s3/detail/xml.hpp>
#include <f2d2n/store/s3/options.hpp>
#include <f2d2n/store/s3/sigv4.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace f2d2n::s3 {

class client {
 public:
  explicit client(options o) : o_(std::move(o)), endpoint_(o_.resolved_endpoint()) {
    // Parts under 5 MiB are allowed (servers for tests accept them); S3 itself rejects them.
    if (o_.part_size == 0 || o_.parallel_parts == 0 || o_.max_attempts == 0)
      throw configuration_error("f2d2n: S3 options need part_size, parallel_parts and max_attempts above 0");
    if (endpoint_.tls) tls_ = std::make_unique<detail::tls_context>(o_.ca_file);
  }
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  [[nodiscard]] const options& settings() const noexcept { return o_; }

  /// Stores the object (the concatenation of `data`): one PUT, or a multipart upload above
  /// options::multipart_threshold. The object appears whole or not at all.
  void put(std::string_view bucket, std::string_view key, byte_pieces data) {
    std::uint64_t total = 0;
    for (auto p : data) total += p.size();
    const auto deadline = detail::clock::now() + o_.call_timeout;
    if (total > o_.multipart_threshold) {
      multipart_put(bucket, key, data, total, deadline);
      return;
    }
    call c{"PUT", std::string(bucket), std::string(key)};
    c.body.assign(data.begin(), data.end());
    c.body_size = total;
    c.payload_hash = payload_hash(c.body);
    perform(c, deadline);
  }

  /// Stores one contiguous object.
  void put(std::string_view bucket, std::string_view key, std::span<const std::byte> data) {
    const std::span<const std::byte> one[] = {data};
    put(bucket, key, byte_pieces(one));
  }

  /// Reads out.size() bytes of the object from `offset` (a ranged GET). s3_error: missing (no such
  /// object or bucket), truncated (the object ends first).
  void get(std::string_view bucket, std::string_view key, std::uint64_t offset, std::span<std::byte> out) {
    if (out.empty()) {
      const auto n = head(bucket, key);
      if (!n) throw s3_error(std::string(bucket), std::string(key), 404, "NoSuchKey", storage_problem::missing,
                             "no such object");
      if (*n < offset)
        throw s3_error(std::string(bucket), std::string(key), 0, "", storage_problem::truncated,
                       "ends before byte " + std::to_string(offset));
      return;
    }
    call c{"GET", std::string(bucket), std::string(key)};
    c.headers.emplace_back("range", "bytes=" + std::to_string(offset) + "-" + std::to_string(offset + out.size() - 1));
    c.sink.into_out = true;
    c.sink.out = out;
    const auto r = perform(c, detail::clock::now() + o_.call_timeout);
    if (r.status != 206 && offset != 0)
      throw s3_error(std::string(bucket), std::string(key), r.status, "", storage_problem::bad_format,
                     "the store ignored the Range of a read from offset " + std::to_string(offset));
    if (r.body_bytes > out.size())
      throw s3_error(std::string(bucket), std::string(key), r.status, "", storage_problem::bad_format,
                     "the store answered a read of " + std::to_string(out.size()) + " bytes with " +
                         std::to_string(r.body_bytes));
    if (r.body_bytes != out.size())
      throw s3_error(std::string(bucket), std::string(key), r.status, "", storage_problem::truncated,
                     "ends before byte " + std::to_string(offset + out.size()) + " (read " +
                         std::to_string(r.body_bytes) + " of " + std::to_string(out.size()) +
                         " bytes from offset " + std::to_string(offset) + ")");
  }

  /// The object's size, or nothing when there is none.
  [[nodiscard]] std::optional<std::uint64_t> head(std::string_view bucket, std::string_view key) {
    call c{"HEAD", std::string(bucket), std::string(key)};
    c.missing_is_ok = true;
    const auto r = perform(c, detail::clock::now() + o_.call_timeout);
    if (r.status == 404) return std::nullopt;
    if (!r.content_length)
      throw s3_error(std::string(bucket), std::string(key), r.status, "", storage_problem::bad_format,
                     "the store's answer to HEAD has no Content-Length");
    return *r.content_length;
  }

  /// Every object whose key starts with `prefix`, sorted by key (ListObjectsV2, page after page).
  [[nodiscard]] std::vector<object_info> list(std::string_view bucket, std::string_view prefix) {
    std::vector<object_info> out;
    std::string token;
    const auto deadline = detail::clock::now() + o_.call_timeout;
    for (;;) {
      call c{"GET", std::string(bucket), ""};
      c.query = {{"list-type", "2"}, {"prefix", std::string(prefix)}};
      if (list_page_size_ > 0) c.query.emplace_back("max-keys", std::to_string(list_page_size_));
      if (!token.empty()) c.query.emplace_back("continuation-token", token);
      const auto r = perform(c, deadline);
      auto page = detail::parse_list_page(r.body, bucket, prefix);
      for (auto& o : page.objects) out.push_back(std::move(o));
      if (!page.truncated) break;
      if (page.next_token == token)
        throw s3_error(std::string(bucket), std::string(prefix), r.status, "", storage_problem::bad_format,
                       "the store answered a listing's page with the same continuation token again");
      token = std::move(page.next_token);
    }
    std::sort(out.begin(), out.end(), [](const object_info& a, const object_info& b) { return a.key < b.key; });
    return out;
  }

  /// Removes the object; nothing happens when there is none.
  void remove(std::string_view bucket, std::string_view key) {
    call c{"DELETE", std::string(bucket), std::string(key)};
    c.missing_is_ok = true;
    perform(c, detail::clock::now() + o_.call_timeout);
  }

  /// Whether the bucket exists (and this account may see it).
  [[nodiscard]] bool bucket_exists(std::string_view bucket) {
    call c{"HEAD", std::string(bucket), ""};
    c.missing_is_ok = true;
    const auto r = perform(c, detail::clock::now() + o_.call_timeout);
    return r.status / 100 == 2;
  }

  /// Creates the bucket (nothing happens when it exists already and this account owns it).
  void create_bucket(std::string_view bucket) {
    if (bucket_exists(bucket)) return;
    call c{"PUT", std::string(bucket), ""};
    std::string body;
    if (o_.region != "us-east-1")
      body = "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>" +
             o_.region + "</LocationConstraint></CreateBucketConfiguration>";
    const auto bytes = std::as_bytes(std::span<const char>(body));
    if (!body.empty()) c.body.push_back(bytes);
    c.body_size = bytes.size();
    c.payload_hash = payload_hash(c.body);
    c.exists_is_ok = true;
    perform(c, detail::clock::now() + o_.call_timeout);
  }

  /// Tests: called after each part of a multipart upload (its number from 1, and the parts' count),
  /// on the thread that sent it, one call at a time.
  std::function<void(std::size_t, std::size_t)> on_part;
  /// Tests: ListObjectsV2 pages of this many keys (0: the store's default, 1000 on S3).
  std::size_t list_page_size_ = 0;

 private:
  /// One request as the client describes it, before signing.
  struct call {
    call(std::string m, std::string b, std::string k) : method(std::move(m)), bucket(std::move(b)), key(std::move(k)) {}
    std::string method, bucket, key;
    std::vector<std::pair<std::string, std::string>> query, headers;
    std::vector<std::span<const std::byte>> body;
    std::uint64_t body_size = 0;
    std::string payload_hash;
    detail::body_sink sink;
    bool missing_is_ok = false;  ///< a 404 is an answer (HEAD, DELETE)
    bool exists_is_ok = false;   ///< BucketAlreadyOwnedByYou is an answer (bucket creation)
  };



  [[nodiscard]] std::string payload_hash(std::span<const std::span<const std::byte>> body) const {
    if (!o_.sign_payload.value_or(!endpoint_.tls)) return std::string(unsigned_payload);
    sha256 h;
    for (auto p : body) h.update(p);
    const auto d = h.finish();
    return hex(d);
  }

  /// A kept-alive connection from the pool, or a new one (opened on first use).
  std::unique_ptr<detail::connection> take() {
    {
      const std::lock_guard lock(pool_mutex_);
      if (!pool_.empty()) {
        auto c = std::move(pool_.back());
        pool_.pop_back();
        return c;
      }
    }
    return std::make_unique<detail::connection>(tls_.get());
  }
  /// Back into the pool when still open (at most 16 kept).
  void give_back(std::unique_ptr<detail::connection> c) {
    if (!c->is_open()) return;
    const std::lock_guard lock(pool_mutex_);
    if (pool_.size() < 16) pool_.push_back(std::move(c));
  }

  /// The host to connect to, its Host header and the request's path for `bucket` / `key`.
  struct address {
    std::string connect_host, host_header, path;
  };
  [[nodiscard]] address address_of(const std::string& bucket, const std::string& key) const {
    const bool virtual_hosted = o_.style == addressing::virtual_hosted ||
                                (o_.style == addressing::automatic && o_.endpoint_url.empty() && host_label(bucket));
    address a;
    if (virtual_hosted) {
      a.connect_host = bucket + "." + endpoint_.host;
      a.path = "/" + key;
    } else {
      a.connect_host = endpoint_.host;
      a.path = "/" + bucket + (key.empty() ? "" : "/" + key);
    }
    a.host_header = endpoint_.host_header(a.connect_host.find(':') != std::string::npos ? "[" + a.connect_host + "]"
                                                                                        : a.connect_host);
    return a;
  }

  [[nodiscard]] static std::string s3_code_of(const std::string& body) {
    const auto at = body.find("<Code>");
    if (at == std::string::npos) return "";
    const auto end = body.find("</Code>", at);
    if (end == std::string::npos || end - at > 70) return "";
    return body.substr(at + 6, end - at - 6);
  }

  [[nodiscard]] static bool retryable(unsigned status, const std::string& code) {
    return status >= 500 || status == 429 || code == "SlowDown" || code == "RequestTimeout" ||
           code == "Throttling" || code == "ThrottlingException" || code == "RequestLimitExceeded" ||
           code == "InternalError";
  }

  /// Sends the call, retrying what a retry can mend, until a final answer or the deadline.
  detail::response perform(const call& c, detail::clock::time_point deadline) {
    auto conn = take();
    auto r = perform_on(*conn, c, deadline);
    give_back(std::move(conn));
    return r;
  }

  detail::response perform_on(detail::connection& conn, const call& c, detail::clock::time_point deadline) {
    const auto a = address_of(c.bucket, c.key);
    const std::string hash = c.payload_hash.empty() ? payload_hash(c.body) : c.payload_hash;
    detail::body_sink sink = c.sink;
    std::string last;
    thread_local std::minstd_rand jitter{std::random_device{}()};
    bool fresh_retry = false;  // a kept-alive connection the store closed meanwhile: once, at once, not an attempt
    for (unsigned attempt = 1;; ++attempt) {
      const bool reused = conn.is_open();
      request r;
      r.method = c.method;
      r.host = a.host_header;
      r.path = a.path;
      r.query = c.query;
      r.headers = c.headers;
      r.payload_hash = hash;
      const auto sig = sign_v4(r, o_.creds, o_.region, "s3", std::chrono::system_clock::now());
      detail::wire_request w;
      w.method = boost::beast::http::string_to_verb(c.method);
      w.target = sig.encoded_path + (sig.encoded_query.empty() ? "" : "?" + sig.encoded_query);
      w.headers = c.headers;
      for (const auto& h : sig.headers) w.headers.push_back(h);
      w.body = c.body;
      w.body_size = c.body_size;
      try {
        if (!conn.is_open()) conn.open(a.connect_host, endpoint_.port, deadline, o_.idle_timeout);
        auto resp = conn.exchange(w, sink, deadline, o_.idle_timeout);
        if (resp.status / 100 == 2) return resp;
        const std::string code = s3_code_of(resp.body);
        if ((resp.status == 404 || code == "NoSuchKey") && c.missing_is_ok) return resp;
        if (code == "BucketAlreadyOwnedByYou" && c.exists_is_ok) return resp;
        if (!retryable(resp.status, code)) throw failure_of(c, resp.status, code, resp.body);
        last = "HTTP " + std::to_string(resp.status) + (code.empty() ? "" : " " + code);
      } catch (const detail::connection::stale_connection& e) {
        if (reused && !fresh_retry) {
          fresh_retry = true;
          --attempt;
          continue;
        }
        last = e.what();
      } catch (const detail::transient_failure& e) {
        last = e.what();
      } catch (const detail::permanent_failure& e) {
        conn.close();
        throw s3_error(c.bucket, c.key, 0, "", storage_problem::io, e.what());
      }
      if (attempt >= o_.max_attempts || detail::clock::now() >= deadline)
        throw s3_error(c.bucket, c.key, 0, "", storage_problem::io,
                       c.method + " failed after " + std::to_string(attempt) + " attempt(s): " + last);
      // Full jitter: a uniform wait below min(cap, base 2^(attempt - 1)), not past the deadline.
      const auto ceiling = std::min<std::int64_t>(o_.backoff_cap.count(),
                                                  o_.backoff_base.count() << std::min(attempt - 1, 20U));
      std::uniform_int_distribution<std::int64_t> pick(0, std::max<std::int64_t>(ceiling, 1));
      const auto wait = std::chrono::milliseconds(pick(jitter));
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - detail::clock::now());
      std::this_thread::sleep_for(std::min(wait, std::max(left, std::chrono::milliseconds(0))));
    }
  }

  [[nodiscard]] static s3_error failure_of(const call& c, unsigned status, const std::string& code,
                                           const std::string& body) {
    std::string message;
    if (const auto at = body.find("<Message>"); at != std::string::npos) {
      const auto end = body.find("</Message>", at);
      if (end != std::string::npos) message = body.substr(at + 9, std::min<std::size_t>(end - at - 9, 300));
    }
    const storage_problem p = status == 404 || code == "NoSuchKey" || code == "NoSuchBucket" ? storage_problem::missing
                              : status == 416 || code == "InvalidRange"                    ? storage_problem::truncated
                                                                                           : storage_problem::io;
    return s3_error(c.bucket, c.key, status, code, p,
                    c.method + " refused" + (message.empty() ? std::string() : ": " + message));
  }

  /// A multipart upload: parts of options::part_size sent by parallel_parts connections at once
  /// (views of `data`, nothing copied), then completed; aborted when any part fails for good.
  void multipart_put(std::string_view bucket_view, std::string_view key_view, byte_pieces data, std::uint64_t total,
                     detail::clock::time_point deadline) {
    const std::string bucket(bucket_view), key(key_view);
    call start{"POST", bucket, key};
    start.query = {{"uploads", ""}};
    start.payload_hash = payload_hash({});
    const auto started = perform(start, deadline);
    const std::string upload = detail::parse_xml(started.body, bucket, key)
                                   .get<std::string>("InitiateMultipartUploadResult.UploadId", "");
    if (upload.empty())
      throw s3_error(bucket, key, started.status, "", storage_problem::bad_format,
                     "the store started a multipart upload without an UploadId");
    upload_state st{bucket, key, upload, data, total, deadline};
    st.parts = static_cast<std::size_t>((total + o_.part_size - 1) / o_.part_size);
    st.etags.resize(st.parts);
    const std::size_t parts = st.parts;
    const auto& etags = st.etags;
    try {
      upload_parts(st);
      std::string xml = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">";
      for (std::size_t p = 0; p < parts; ++p)
        xml += "<Part><PartNumber>" + std::to_string(p + 1) + "</PartNumber><ETag>" + xml_escape(etags[p]) +
               "</ETag></Part>";
      xml += "</CompleteMultipartUpload>";
      call finish{"POST", bucket, key};
      finish.query = {{"uploadId", upload}};
      const auto bytes = std::as_bytes(std::span<const char>(xml));
      finish.body = {bytes};
      finish.body_size = bytes.size();
      const auto r = perform(finish, deadline);
      // S3 may answer 200 and still fail the completion (an <Error> document in the body).
      if (r.body.find("<Error>") != std::string::npos)
        throw failure_of(finish, r.status, s3_code_of(r.body), r.body);
    } catch (...) {
      try {  // best effort: the parts are not visible as an object either way
        call abort{"DELETE", bucket, key};
        abort.query = {{"uploadId", upload}};
        abort.missing_is_ok = true;
        perform(abort, detail::clock::now() + std::min(o_.call_timeout, std::chrono::milliseconds(10000)));
      } catch (...) {
      }
      throw;
    }
  }

  /// A multipart upload's parts in flight: each sender takes the next part until none is left or
  /// one has failed for good.
  struct upload_state {
    upload_state(const std::string& b, const std::string& k, const std::string& u, byte_pieces d, std::uint64_t t,
                 detail::clock::time_point until)
        : bucket(b), key(k), upload(u), data(d), total(t), deadline(until) {}
    const std::string& bucket;
    const std::string& key;
    const std::string& upload;
    byte_pieces data;
    std::uint64_t total = 0;
    detail::clock::time_point deadline;
    std::size_t parts = 0;
    std::vector<std::string> etags;
    std::mutex m;  // guards next, failed, done (and on_part's calls)
    std::size_t next = 0, done = 0;
    std::exception_ptr failed;
  };

  /// Sends every part: parallel_parts senders, the calling thread one of them.
  void upload_parts(upload_state& st) {
    const std::size_t senders = std::min<std::size_t>(o_.parallel_parts, st.parts);
    std::vector<std::thread> threads;
    for (std::size_t w = 1; w < senders; ++w) threads.emplace_back([&] { send_parts(st); });
    send_parts(st);
    for (auto& t : threads) t.join();
    if (st.failed) std::rethrow_exception(st.failed);
  }

  void send_parts(upload_state& st) noexcept {
    try {
      auto conn = take();
      for (;;) {
        std::size_t part = 0;
        {
          const std::lock_guard lock(st.m);
          if (st.failed || st.next == st.parts) break;
          part = st.next++;
        }
        const std::uint64_t size = std::min<std::uint64_t>(o_.part_size, st.total - part * o_.part_size);
        call c{"PUT", st.bucket, st.key};
        c.query = {{"partNumber", std::to_string(part + 1)}, {"uploadId", st.upload}};
        c.body = slice(st.data, part * o_.part_size, size);
        c.body_size = size;
        const auto r = perform_on(*conn, c, st.deadline);
        if (r.etag.empty())
          throw s3_error(st.bucket, st.key, r.status, "", storage_problem::bad_format,
                         "the store accepted part " + std::to_string(part + 1) + " without an ETag");
        const std::lock_guard lock(st.m);
        st.etags[part] = r.etag;
        ++st.done;
        if (on_part) on_part(part + 1, st.parts);
      }
      give_back(std::move(conn));
    } catch (...) {
      const std::lock_guard lock(st.m);
      if (!st.failed) st.failed = std::current_exception();
    }
  }

  /// Bytes [from, from + n) of the pieces' concatenation, as views.
  [[nodiscard]] static std::vector<std::span<const std::byte>> slice(byte_pieces data, std::uint64_t from,
                                                                      std::uint64_t n) {
    std::vector<std::span<const std::byte>> out;
    for (auto p : data) {
      if (n == 0) break;
      if (from >= p.size()) {
        from -= p.size();
        continue;
      }
      const auto take = std::min<std::uint64_t>(p.size() - from, n);
      out.push_back(p.subspan(static_cast<std::size_t>(from), static_cast<std::size_t>(take)));
      n -= take;
      from = 0;
    }
    return out;
  }

  [[nodiscard]] static std::string xml_escape(std::string_view s) {
    std::string out;
    for (char ch : s) {
      switch (ch) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        default: out += ch;
      }
    }
    return out;
  }

  options o_;
  endpoint endpoint_;
  std::unique_ptr<detail::tls_context> tls_;
  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<detail::connection>> pool_;  // kept-alive connections, idle
};

}  // namespace f2d2n::s3
