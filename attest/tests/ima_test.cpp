// IMA binary measurement lists built here: parsing, PCR-10 replay, allowlist, bad input.
#include <doctest/doctest.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "cove/attest/ima.hpp"
#include "cove/attest/snp_report.hpp"
#include "cove/errors.hpp"

using namespace cove::attest;
using bytes = std::vector<uint8_t>;

namespace {

void u32(bytes& b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void raw(bytes& b, const bytes& v) {
  b.insert(b.end(), v.begin(), v.end());
}
bytes str(const std::string& s) {
  return bytes(s.begin(), s.end());
}

bytes sha256(const bytes& in) {
  bytes out(32);
  SHA256(in.data(), in.size(), out.data());
  return out;
}
bytes sha1(const bytes& in) {
  bytes out(20);
  SHA1(in.data(), in.size(), out.data());
  return out;
}
bytes extend(const bytes& pcr, const bytes& d) {
  bytes b = pcr;
  raw(b, d);
  return sha256(b);
}

// ima-ng / ima-sig template data: d-ng "<algo>:\0digest", n-ng "path\0"[, sig].
bytes ng_data(const std::string& algo, const bytes& digest, const std::string& path,
              const bytes* sig = nullptr) {
  bytes d = str(algo + ":");
  d.push_back(0);
  raw(d, digest);
  bytes p = str(path);
  p.push_back(0);
  bytes out;
  u32(out, static_cast<uint32_t>(d.size()));
  raw(out, d);
  u32(out, static_cast<uint32_t>(p.size()));
  raw(out, p);
  if (sig) {
    u32(out, static_cast<uint32_t>(sig->size()));
    raw(out, *sig);
  }
  return out;
}

struct list_builder {
  bytes b;
  bytes pcr10 = bytes(32, 0);  // the expected sha256-bank value

  list_builder& entry(const std::string& tmpl, const bytes& data, bool violation = false, uint32_t pcr = 10) {
    u32(b, pcr);
    raw(b, violation ? bytes(20, 0) : sha1(data));
    u32(b, static_cast<uint32_t>(tmpl.size()));
    raw(b, str(tmpl));
    u32(b, static_cast<uint32_t>(data.size()));
    raw(b, data);
    if (pcr == 10) pcr10 = extend(pcr10, violation ? bytes(32, 0xff) : sha256(data));
    return *this;
  }
  list_builder& ng(const std::string& path, const bytes& digest, const std::string& algo = "sha256") {
    return entry("ima-ng", ng_data(algo, digest, path));
  }
  // Legacy "ima": SHA-1 digest, u32 len, name; hashed as digest || name padded to 256.
  list_builder& legacy(const std::string& path, const bytes& digest) {
    bytes hashed = digest;
    raw(hashed, str(path));
    hashed.resize(20 + 256, 0);
    u32(b, 10);
    raw(b, sha1(hashed));
    u32(b, 3);
    raw(b, str("ima"));
    raw(b, digest);
    u32(b, static_cast<uint32_t>(path.size()));
    raw(b, str(path));
    pcr10 = extend(pcr10, sha256(hashed));
    return *this;
  }
};

bytes digest_of(const std::string& s) {
  return sha256(str(s));
}

list_builder good_list() {
  list_builder l;
  l.ng("boot_aggregate", digest_of("aggregate"));
  l.ng("/usr/bin/bash", digest_of("bash"));
  bytes sig = {0x03, 0x02, 0x04, 0xaa};
  l.entry("ima-sig", ng_data("sha256", digest_of("agent"), "/usr/bin/cove-agent", &sig));
  l.ng("/etc/cove.conf", digest_of("conf"));
  return l;
}

std::string message(const cove::error& e) {
  return e.message;
}

}  // namespace

TEST_CASE("ima: a good list parses and replays to the expected PCR 10") {
  auto l = good_list();
  auto list = parse_ima_list(l.b);
  REQUIRE(list);
  REQUIRE(list->entries.size() == 4);
  CHECK(list->entries[1].path == "/usr/bin/bash");
  CHECK(list->entries[1].file_algo == "sha256");
  CHECK(list->entries[1].file_digest == digest_of("bash"));
  CHECK(list->entries[2].template_name == "ima-sig");
  CHECK(list->entries[2].signature == bytes{0x03, 0x02, 0x04, 0xaa});
  CHECK(replay_ima_pcr(*list) == l.pcr10);
  tpm_pcr_values quoted{{10, l.pcr10}};
  CHECK(check_ima_pcr(*list, quoted));

  tpm_pcr_values wrong{{10, bytes(32, 0x11)}};
  auto bad = check_ima_pcr(*list, wrong);
  REQUIRE(!bad);
  CHECK(bad.error().code == cove::errc::attestation_failed);
  CHECK(message(bad.error()).find("does not replay pcr[10]") != std::string::npos);
  auto unquoted = check_ima_pcr(*list, tpm_pcr_values{{7, l.pcr10}});
  REQUIRE(!unquoted);
  CHECK(message(unquoted.error()).find("not quoted") != std::string::npos);
}

TEST_CASE("ima: the empty list replays to zero; other PCRs are not folded into PCR 10") {
  auto empty = parse_ima_list({});
  REQUIRE(empty);
  CHECK(replay_ima_pcr(*empty) == bytes(32, 0));
  auto l = good_list();
  auto before = l.pcr10;
  l.entry("ima-ng", ng_data("sha256", digest_of("x"), "/x"), false, 11);
  auto list = parse_ima_list(l.b);
  REQUIRE(list);
  CHECK(replay_ima_pcr(*list) == before);
  CHECK(replay_ima_pcr(*list, 11) == extend(bytes(32, 0), sha256(ng_data("sha256", digest_of("x"), "/x"))));
}

TEST_CASE("ima: violations extend 0xff and are refused by the allowlist unless allowed") {
  auto l = good_list();
  l.entry("ima-ng", ng_data("sha256", bytes(32, 0), "/var/log/x"), true);
  auto list = parse_ima_list(l.b);
  REQUIRE(list);
  CHECK(list->entries.back().violation);
  CHECK(replay_ima_pcr(*list) == l.pcr10);
  ima_allowlist allow;
  allow.digests = {digest_of("bash"), digest_of("agent"), digest_of("conf")};
  auto r = check_ima_allowlist(*list, allow);
  REQUIRE(!r);
  CHECK(message(r.error()).find("entry 4") != std::string::npos);
  CHECK(message(r.error()).find("violation") != std::string::npos);
  allow.allow_violations = true;
  CHECK(check_ima_allowlist(*list, allow));
}

TEST_CASE("ima: the legacy \"ima\" template parses and replays") {
  list_builder l;
  l.legacy("boot_aggregate", sha1(str("agg")));
  l.legacy("/sbin/init", sha1(str("init")));
  auto list = parse_ima_list(l.b);
  REQUIRE(list);
  REQUIRE(list->entries.size() == 2);
  CHECK(list->entries[1].path == "/sbin/init");
  CHECK(list->entries[1].file_algo == "sha1");
  CHECK(replay_ima_pcr(*list) == l.pcr10);
  ima_allowlist allow;
  allow.digests = {sha1(str("init"))};
  auto r = check_ima_allowlist(*list, allow);
  REQUIRE(!r);
  CHECK(message(r.error()).find("not a sha256 measurement") != std::string::npos);
}

TEST_CASE("ima: allowlist by path and by digest; the first offending file is named") {
  auto list = parse_ima_list(good_list().b);
  REQUIRE(list);
  ima_allowlist allow;
  allow.paths["/usr/bin/bash"] = {digest_of("bash")};
  allow.paths["/usr/bin/cove-agent"] = {digest_of("old-agent"), digest_of("agent")};
  allow.digests = {digest_of("conf")};
  CHECK(check_ima_allowlist(*list, allow));

  // A listed path only accepts its own digests, even if the digest is allowed globally.
  allow.paths["/etc/cove.conf"] = {digest_of("other")};
  auto r = check_ima_allowlist(*list, allow);
  REQUIRE(!r);
  CHECK(r.error().code == cove::errc::attestation_failed);
  CHECK(message(r.error()).find("entry 3") != std::string::npos);
  CHECK(message(r.error()).find("/etc/cove.conf sha256:" + to_hex(digest_of("conf"))) != std::string::npos);

  ima_allowlist none;
  auto r2 = check_ima_allowlist(*list, none);
  REQUIRE(!r2);
  CHECK(message(r2.error()).find("entry 1 (offset ") != std::string::npos);
  CHECK(message(r2.error()).find("/usr/bin/bash") != std::string::npos);
}

TEST_CASE("ima: a tampered file digest breaks the template digest") {
  auto l = good_list();
  auto d = digest_of("bash");
  auto it = std::search(l.b.begin(), l.b.end(), d.begin(), d.end());
  REQUIRE(it != l.b.end());
  *it ^= 1;
  auto r = parse_ima_list(l.b);
  REQUIRE(!r);
  CHECK(r.error().code == cove::errc::invalid_request);
  CHECK(message(r.error()).find("entry 1 (offset ") != std::string::npos);
  CHECK(message(r.error()).find("is not the SHA-1 of its data") != std::string::npos);
}

TEST_CASE("ima: a list edited consistently still fails the PCR replay") {
  // Re-hash a replaced entry so parsing succeeds: the quote catches it.
  auto l = good_list();
  list_builder forged;
  forged.ng("boot_aggregate", digest_of("aggregate"));
  forged.ng("/usr/bin/bash", digest_of("evil"));
  auto list = parse_ima_list(forged.b);
  REQUIRE(list);
  CHECK(!check_ima_pcr(*list, tpm_pcr_values{{10, l.pcr10}}));
}

TEST_CASE("ima: truncation anywhere is refused with the entry and offset") {
  auto l = good_list();
  auto first = parse_ima_list(l.b);
  REQUIRE(first);
  auto last_off = first->entries.back().offset;
  for (std::size_t cut = 1; cut < l.b.size(); ++cut) {
    bytes b(l.b.begin(), l.b.begin() + static_cast<std::ptrdiff_t>(cut));
    auto r = parse_ima_list(b);
    if (cut == first->entries[1].offset || cut == first->entries[2].offset || cut == last_off) {
      CHECK(r);  // a cut on an entry boundary is a shorter valid list
      continue;
    }
    REQUIRE(!r);
    CHECK(message(r.error()).find("(offset ") != std::string::npos);
  }
  bytes b(l.b.begin(), l.b.begin() + static_cast<std::ptrdiff_t>(last_off + 10));
  auto r = parse_ima_list(b);
  REQUIRE(!r);
  CHECK(message(r.error()) ==
        "ima list: entry 3 (offset " + std::to_string(last_off) + "): truncated entry header");
}

TEST_CASE("ima: unknown templates, huge lengths and malformed fields are refused") {
  auto expect_error = [](const bytes& b, const std::string& needle) {
    auto r = parse_ima_list(b);
    REQUIRE(!r);
    CHECK(r.error().code == cove::errc::invalid_request);
    INFO(message(r.error()));
    CHECK(message(r.error()).find(needle) != std::string::npos);
  };
  {
    list_builder l;
    l.entry("ima-foo", ng_data("sha256", digest_of("a"), "/a"));
    expect_error(l.b, "entry 0 (offset 0): unknown template \"ima-foo\"");
  }
  {
    bytes b;
    u32(b, 10);
    raw(b, bytes(20, 1));
    u32(b, 6);
    raw(b, str("ima-ng"));
    u32(b, 0xffffffffu);
    expect_error(b, "template data length 4294967295 exceeds 1 MiB");
  }
  {
    bytes b;
    u32(b, 10);
    raw(b, bytes(20, 1));
    u32(b, 0x7fffffffu);
    expect_error(b, "template name length 2147483647");
  }
  {
    bytes b;
    u32(b, 10);
    raw(b, bytes(20, 1));
    u32(b, 6);
    raw(b, str("ima-ng"));
    u32(b, 1000);  // declared, not present
    raw(b, bytes(10, 0));
    expect_error(b, "truncated template data (1000 bytes declared)");
  }
  {
    list_builder l;
    l.entry("ima-ng", ng_data("sha256", digest_of("a"), "/a"), false, 24);
    expect_error(l.b, "PCR index 24");
  }
  {
    list_builder l;
    l.ng("/a", bytes(20, 1), "sha256");
    expect_error(l.b, "d-ng sha256 digest of 20 bytes, expected 32");
  }
  {
    list_builder l;
    l.ng("/a", bytes(32, 1), "rot13");
    expect_error(l.b, "unknown algorithm \"rot13\"");
  }
  {
    list_builder l;
    l.ng(std::string("/a\0b", 4), bytes(32, 1));
    expect_error(l.b, "embedded NUL");
  }
  {
    // A field length running past the template data.
    bytes data = ng_data("sha256", digest_of("a"), "/a");
    data[0] = 0xff;
    data[1] = 0xff;
    list_builder l;
    l.entry("ima-ng", data);
    expect_error(l.b, "truncated field 0 of ima-ng");
  }
  {
    bytes data = ng_data("sha256", digest_of("a"), "/a");
    data.push_back(0);
    list_builder l;
    l.entry("ima-ng", data);
    expect_error(l.b, "trailing bytes after the ima-ng fields");
  }
  {
    bytes data = ng_data("sha256", digest_of("a"), "/a");
    data.pop_back();  // the n-ng field loses its NUL and runs short
    list_builder l;
    l.entry("ima-ng", data);
    expect_error(l.b, "truncated field 1 of ima-ng");
  }
}

TEST_CASE("ima: the fuzz seeds are valid lists") {
  for (const char* name : {"ima-ng.bin", "ima-legacy.bin"}) {
    std::ifstream f(std::string(COVE_SOURCE_DIR) + "/attest/fuzz/corpus/ima_list/" + name, std::ios::binary);
    REQUIRE(f);
    bytes b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    auto list = parse_ima_list(b);
    INFO(name);
    REQUIRE(list);
    CHECK(list->entries.size() >= 2);
  }
}

TEST_CASE("ima: make_ima_ng_entry writes what the parser reads and the kernel extends") {
  auto e = make_ima_ng_entry("/usr/bin/cove-agent", digest_of("agent"));
  CHECK(e.template_data == ng_data("sha256", digest_of("agent"), "/usr/bin/cove-agent"));
  list_builder l;
  l.ng("/usr/bin/cove-agent", digest_of("agent"));
  CHECK(e.entry == l.b);
  auto list = parse_ima_list(e.entry);
  REQUIRE(list);
  CHECK(replay_ima_pcr(*list) == extend(bytes(32, 0), sha256(e.template_data)));
  CHECK(make_ima_ng_entry("/x", digest_of("x"), 11).entry[0] == 11);
}

TEST_CASE("ima: ima_replaying_prefix finds the part of a list a quote covers") {
  auto l = good_list();  // 4 entries, all PCR 10
  auto list = parse_ima_list(l.b);
  REQUIRE(list);
  // The whole list replays the final value; the empty prefix the zero PCR.
  CHECK(ima_replaying_prefix(l.b, *list, l.pcr10) == l.b.size());
  CHECK(ima_replaying_prefix(l.b, *list, bytes(32, 0)) == 0u);
  // The value after two entries: the prefix ends where entry 2 starts.
  auto two = parse_ima_list(std::span<const uint8_t>(l.b).first(list->entries[2].offset));
  REQUIRE(two);
  CHECK(ima_replaying_prefix(l.b, *list, replay_ima_pcr(*two)) == list->entries[2].offset);
  // No prefix: nullopt. Entries of other PCRs after the match stay in the prefix.
  CHECK(!ima_replaying_prefix(l.b, *list, bytes(32, 0x11)));
  auto final_value = l.pcr10;
  l.entry("ima-ng", ng_data("sha256", digest_of("x"), "/x"), false, 11);
  auto longer = parse_ima_list(l.b);
  REQUIRE(longer);
  CHECK(ima_replaying_prefix(l.b, *longer, final_value) == l.b.size());
}
