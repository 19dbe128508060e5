#include "cove/attest/ima.hpp"

#include <openssl/sha.h>

#include <algorithm>
#include <cstring>
#include <string_view>

#include "cove/attest/snp_report.hpp"
#include "le_reader.hpp"

namespace cove::attest {

namespace {

constexpr std::size_t max_list = 64u << 20;
constexpr std::size_t max_template_data = 1u << 20;
constexpr std::size_t max_template_name = 255;  // IMA_TEMPLATE_NAME_LEN_MAX
constexpr std::size_t max_ima_name = 255;       // IMA_EVENT_NAME_LEN_MAX ("ima" template)
constexpr std::size_t max_path = 4096 + 1;      // PATH_MAX + NUL (n-ng)

struct ima_algo {
  std::string_view name;
  std::size_t size;
};
constexpr ima_algo known_algos[] = {{"md5", 16},         {"sha1", 20},       {"sha224", 28},  {"sha256", 32},
                                    {"sha384", 48},      {"sha512", 64},     {"sm3-256", 32}, {"wp512", 64},
                                    {"streebog256", 32}, {"streebog512", 64}};

using detail::le_reader;

std::string at(std::size_t index, std::size_t offset) {
  return "entry " + std::to_string(index) + " (offset " + std::to_string(offset) + ")";
}

error bad(std::size_t index, std::size_t offset, const std::string& msg) {
  return make_error(errc::invalid_request, "ima list: " + at(index, offset) + ": " + msg);
}

// d-ng: "<algo>:\0" then the digest.
expected<void> parse_d_ng(std::span<const uint8_t> f, ima_entry& e, std::size_t n, std::size_t off) {
  auto nul = std::find(f.begin(), f.end(), uint8_t{0});
  if (nul == f.end()) return bad(n, off, "d-ng field has no \"<algo>:\\0\" prefix");
  std::string prefix(f.begin(), nul);
  if (prefix.size() < 2 || prefix.back() != ':') return bad(n, off, "d-ng prefix is not \"<algo>:\"");
  prefix.pop_back();
  auto algo = std::find_if(std::begin(known_algos), std::end(known_algos),
                           [&](const ima_algo& a) { return a.name == prefix; });
  if (algo == std::end(known_algos)) return bad(n, off, "d-ng has unknown algorithm \"" + prefix + "\"");
  std::size_t dsize = static_cast<std::size_t>(f.end() - nul) - 1;
  if (dsize != algo->size) {
    return bad(n, off,
               "d-ng " + prefix + " digest of " + std::to_string(dsize) + " bytes, expected " +
                   std::to_string(algo->size));
  }
  e.file_algo = prefix;
  e.file_digest.assign(nul + 1, f.end());
  return ok();
}

expected<void> parse_n_ng(std::span<const uint8_t> f, ima_entry& e, std::size_t n, std::size_t off) {
  if (f.empty() || f.back() != 0) return bad(n, off, "n-ng path is not NUL-terminated");
  if (f.size() > max_path) return bad(n, off, "n-ng path of " + std::to_string(f.size()) + " bytes");
  if (std::find(f.begin(), f.end() - 1, uint8_t{0}) != f.end() - 1)
    return bad(n, off, "n-ng path has an embedded NUL");
  e.path.assign(f.begin(), f.end() - 1);
  return ok();
}

}  // namespace

expected<ima_list> parse_ima_list(std::span<const uint8_t> in) {
  if (in.size() > max_list) return make_error(errc::invalid_request, "ima list: larger than 64 MiB");
  le_reader r(in);
  ima_list list;
  for (std::size_t n = 0; !r.empty(); ++n) {
    ima_entry e;
    e.offset = r.pos();
    const auto off = e.offset;
    std::span<const uint8_t> digest;
    std::span<const uint8_t> name;
    uint32_t name_len = 0;
    if (!r.u32(e.pcr) || !r.take(20, digest) || !r.u32(name_len))
      return bad(n, off, "truncated entry header");
    if (e.pcr >= tpm_pcr_count) return bad(n, off, "PCR index " + std::to_string(e.pcr));
    std::copy(digest.begin(), digest.end(), e.template_sha1.begin());
    e.violation = std::all_of(digest.begin(), digest.end(), [](uint8_t b) { return b == 0; });
    if (name_len == 0 || name_len > max_template_name)
      return bad(n, off, "template name length " + std::to_string(name_len));
    if (!r.take(name_len, name)) return bad(n, off, "truncated template name");
    e.template_name.assign(name.begin(), name.end());

    if (e.template_name == "ima") {
      // Binary form: 20-byte SHA-1 file digest, u32 name length, name without NUL. The
      // kernel hashes the digest and the name zero-padded to IMA_EVENT_NAME_LEN_MAX + 1.
      std::span<const uint8_t> fd;
      uint32_t len = 0;
      std::span<const uint8_t> path;
      if (!r.take(20, fd) || !r.u32(len)) return bad(n, off, "truncated \"ima\" template data");
      if (len > max_ima_name) return bad(n, off, "\"ima\" name length " + std::to_string(len));
      if (!r.take(len, path)) return bad(n, off, "truncated \"ima\" name");
      if (std::find(path.begin(), path.end(), uint8_t{0}) != path.end())
        return bad(n, off, "\"ima\" name has an embedded NUL");
      e.file_algo = "sha1";
      e.file_digest.assign(fd.begin(), fd.end());
      e.path.assign(path.begin(), path.end());
      e.hashed.assign(fd.begin(), fd.end());
      e.hashed.insert(e.hashed.end(), path.begin(), path.end());
      e.hashed.resize(20 + max_ima_name + 1, 0);
    } else if (e.template_name == "ima-ng" || e.template_name == "ima-sig") {
      uint32_t data_len = 0;
      std::span<const uint8_t> data;
      if (!r.u32(data_len)) return bad(n, off, "truncated template data length");
      if (data_len > max_template_data)
        return bad(n, off, "template data length " + std::to_string(data_len) + " exceeds 1 MiB");
      if (!r.take(data_len, data))
        return bad(n, off, "truncated template data (" + std::to_string(data_len) + " bytes declared)");
      const std::size_t nfields = e.template_name == "ima-ng" ? 2 : 3;
      le_reader fr(data);
      for (std::size_t i = 0; i < nfields; ++i) {
        uint32_t flen = 0;
        std::span<const uint8_t> f;
        if (!fr.u32(flen) || !fr.take(flen, f))
          return bad(n, off, "truncated field " + std::to_string(i) + " of " + e.template_name);
        expected<void> res = ok();
        if (i == 0) res = parse_d_ng(f, e, n, off);
        if (i == 1) res = parse_n_ng(f, e, n, off);
        if (i == 2) e.signature.assign(f.begin(), f.end());
        if (!res) return res.error();
      }
      if (!fr.empty()) return bad(n, off, "trailing bytes after the " + e.template_name + " fields");
      e.hashed.assign(data.begin(), data.end());
    } else {
      return bad(n, off, "unknown template \"" + e.template_name + "\"");
    }

    if (!e.violation) {
      std::array<uint8_t, SHA_DIGEST_LENGTH> sha1{};
      SHA1(e.hashed.data(), e.hashed.size(), sha1.data());
      if (sha1 != e.template_sha1) {
        return bad(n, off,
                   "template digest " + to_hex(e.template_sha1) + " is not the SHA-1 of its data (" +
                       to_hex(sha1) + ")");
      }
    }
    list.entries.push_back(std::move(e));
  }
  return list;
}

namespace {

/// One sha256-bank extend as the kernel does it for `e`: SHA-256 of its template data, or
/// 32 bytes of 0xff for a violation.
void extend_sha256(std::vector<uint8_t>& value, const ima_entry& e) {
  uint8_t buf[2 * SHA256_DIGEST_LENGTH];
  std::memcpy(buf, value.data(), SHA256_DIGEST_LENGTH);
  if (e.violation) {
    std::memset(buf + SHA256_DIGEST_LENGTH, 0xff, SHA256_DIGEST_LENGTH);
  } else {
    SHA256(e.hashed.data(), e.hashed.size(), buf + SHA256_DIGEST_LENGTH);
  }
  SHA256(buf, sizeof buf, value.data());
}

}  // namespace

std::vector<uint8_t> replay_ima_pcr(const ima_list& list, uint32_t pcr) {
  std::vector<uint8_t> value(SHA256_DIGEST_LENGTH, 0);
  for (const auto& e : list.entries)
    if (e.pcr == pcr) extend_sha256(value, e);
  return value;
}

std::optional<std::size_t> ima_replaying_prefix(std::span<const uint8_t> bytes, const ima_list& list,
                                                std::span<const uint8_t> value, uint32_t pcr) {
  std::vector<uint8_t> v(SHA256_DIGEST_LENGTH, 0);
  auto matches = [&] { return std::ranges::equal(v, value); };
  std::optional<std::size_t> best;
  if (matches()) best = 0;
  for (std::size_t n = 0; n < list.entries.size(); ++n) {
    const auto& e = list.entries[n];
    if (e.pcr == pcr) extend_sha256(v, e);
    if (matches()) best = n + 1 < list.entries.size() ? list.entries[n + 1].offset : bytes.size();
  }
  return best;
}

ima_ng_entry make_ima_ng_entry(std::string_view path, std::span<const uint8_t> sha256_digest, uint32_t pcr) {
  auto u32 = [](std::vector<uint8_t>& b, uint32_t v) {
    for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  auto append = [](std::vector<uint8_t>& b, auto&& v) { b.insert(b.end(), v.begin(), v.end()); };
  ima_ng_entry out;
  // d-ng: "sha256:" NUL digest; n-ng: path NUL; each a u32 length and its bytes.
  u32(out.template_data, static_cast<uint32_t>(8 + sha256_digest.size()));
  append(out.template_data, std::string_view("sha256:\0", 8));
  append(out.template_data, sha256_digest);
  u32(out.template_data, static_cast<uint32_t>(path.size() + 1));
  append(out.template_data, path);
  out.template_data.push_back(0);
  u32(out.entry, pcr);
  uint8_t sha1[SHA_DIGEST_LENGTH];
  SHA1(out.template_data.data(), out.template_data.size(), sha1);
  append(out.entry, std::span<const uint8_t>(sha1, sizeof sha1));
  u32(out.entry, 6);
  append(out.entry, std::string_view("ima-ng"));
  u32(out.entry, static_cast<uint32_t>(out.template_data.size()));
  append(out.entry, out.template_data);
  return out;
}

expected<void> check_ima_pcr(const ima_list& list, const tpm_pcr_values& quoted, uint32_t pcr) {
  auto name = "pcr[" + std::to_string(pcr) + "]";
  if (pcr >= tpm_pcr_count) return make_error(errc::invalid_request, "ima list: no " + name + " (0..23)");
  auto it = quoted.find(pcr);
  if (it == quoted.end())
    return make_error(errc::attestation_failed, "ima list check: " + name + " is not quoted");
  auto replayed = replay_ima_pcr(list, pcr);
  if (it->second != replayed) {
    return make_error(errc::attestation_failed, "ima list does not replay " + name + ": list gives " +
                                                    to_hex(replayed) + ", quote has " + to_hex(it->second));
  }
  return ok();
}

expected<void> check_ima_allowlist(const ima_list& list, const ima_allowlist& allow) {
  for (std::size_t n = 0; n < list.entries.size(); ++n) {
    const auto& e = list.entries[n];
    auto fail = [&](const std::string& why) {
      return make_error(errc::attestation_failed, "ima " + at(n, e.offset) + ": " + e.path + " " +
                                                      e.file_algo + ":" + to_hex(e.file_digest) + " " + why);
    };
    if (e.violation) {
      if (allow.allow_violations) continue;
      return fail("is a measurement violation (the PCR was extended with 0xff..ff)");
    }
    if (n == 0 && e.path == "boot_aggregate") continue;
    if (e.file_algo != "sha256")
      return fail("is not a sha256 measurement (the allowlist holds sha256 digests)");
    auto in = [&](const std::vector<std::vector<uint8_t>>& v) {
      return std::find(v.begin(), v.end(), e.file_digest) != v.end();
    };
    if (auto p = allow.paths.find(e.path); p != allow.paths.end()) {
      if (!in(p->second)) return fail("is not an allowed digest for this path");
      continue;
    }
    if (!in(allow.digests)) return fail("is not allowed");
  }
  return ok();
}

}  // namespace cove::attest
