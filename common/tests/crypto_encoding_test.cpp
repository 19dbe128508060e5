#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cove/crypto/encoding.hpp"
#include "cove/crypto/hash.hpp"
#include "cove/crypto/statements.hpp"

using namespace cove::crypto;
using cove::errc;

namespace {
std::vector<uint8_t> bytes_of(std::string_view s) {
  return {s.begin(), s.end()};
}
}  // namespace

TEST_CASE("hex encodes lowercase and round-trips; bad hex is rejected") {
  std::vector<uint8_t> b = {0x00, 0x01, 0xab, 0xff, 0x7f};
  CHECK(to_hex(b) == "0001abff7f");
  auto back = from_hex("0001ABff7f");
  REQUIRE(back);
  CHECK(*back == b);
  CHECK(to_hex({}) == "");
  REQUIRE(from_hex(""));
  CHECK(from_hex("")->empty());
  CHECK_FALSE(from_hex("abc"));
  auto bad = from_hex("zz");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == errc::invalid_request);
  CHECK_FALSE(from_hex("0g"));
}

TEST_CASE("base64 uses the standard padded alphabet and rejects garbage") {
  CHECK(base64_encode(bytes_of("")) == "");
  CHECK(base64_encode(bytes_of("f")) == "Zg==");
  CHECK(base64_encode(bytes_of("fo")) == "Zm8=");
  CHECK(base64_encode(bytes_of("foo")) == "Zm9v");
  CHECK(base64_encode(std::vector<uint8_t>{0xfb, 0xff}) == "+/8=");
  for (size_t n = 0; n < 70; ++n) {
    std::vector<uint8_t> b(n);
    random_bytes(b);
    auto enc = base64_encode(b);
    auto dec = base64_decode(enc);
    REQUIRE(dec);
    CHECK(*dec == b);
  }
  CHECK(*base64_decode("+/8=") == std::vector<uint8_t>{0xfb, 0xff});
  CHECK_FALSE(base64_decode("Zg"));         // missing padding
  CHECK_FALSE(base64_decode("Zm9v!"));      // bad character
  CHECK_FALSE(base64_decode("Zm9v Zm9v"));  // whitespace
  CHECK_FALSE(base64_decode("-_8="));       // URL alphabet
  CHECK_FALSE(base64_decode("Zg==Zg=="));   // data after padding
  auto bad = base64_decode("@@@@");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == errc::invalid_request);
}

TEST_CASE("random_bytes fills the buffer and constant_time_equal compares") {
  std::vector<uint8_t> a(32), b(32);
  random_bytes(a);
  random_bytes(b);
  CHECK(a != b);
  CHECK(constant_time_equal(a, a));
  CHECK_FALSE(constant_time_equal(a, b));
  CHECK_FALSE(constant_time_equal(a, std::span<const uint8_t>(a).first(31)));
}

TEST_CASE("SHA3-256 known answers, incremental hashing and reuse after finish") {
  CHECK(to_hex(sha3_256_of(std::string_view("abc"))) ==
        "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532");
  CHECK(to_hex(sha3_256_of(std::string_view(""))) ==
        "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a");
  sha3_256 h;
  h.update(std::string_view("a"));
  h.update(std::span<const uint8_t>());
  h.update(std::string_view("bc"));
  CHECK(h.finish() == sha3_256_of(std::string_view("abc")));
  h.update(std::string_view(""));
  CHECK(to_hex(h.finish()) == "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a");
}

TEST_CASE("SHA-512 known answer") {
  CHECK(to_hex(sha512_of(bytes_of("abc"))) ==
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
}

TEST_CASE("sha3_256_file streams files across the buffer boundary; missing file is not_found") {
  std::vector<uint8_t> rnd(8);
  random_bytes(rnd);
  auto path = std::filesystem::temp_directory_path() / ("cove-crypto-test-" + to_hex(rnd));
  for (size_t size : {size_t{0}, size_t{5}, size_t{1} << 20, (size_t{1} << 20) + 17, size_t{3} << 20}) {
    std::vector<uint8_t> data(size);
    random_bytes(data);
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    }
    auto d = sha3_256_file(path);
    REQUIRE(d);
    CHECK(*d == sha3_256_of(data));
  }
  std::filesystem::remove(path);
  auto missing = sha3_256_file(path);
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == errc::not_found);
}

TEST_CASE("statements: domain tag then u32 big-endian length-prefixed fields") {
  sha3_digest hash{}, manifest{};
  hash.fill(0xaa);
  manifest.fill(0x5c);
  std::vector<uint8_t> kx = {1, 2, 3}, uploader = {4, 5};
  auto s = upload_statement("c1", manifest, "dataset", "a.csv", hash, kx, uploader);
  std::vector<uint8_t> want = bytes_of("cove-upload-v1");
  auto field = [&](std::vector<uint8_t>& out, std::span<const uint8_t> f) {
    out.insert(out.end(), {0, 0, 0, static_cast<uint8_t>(f.size())});
    out.insert(out.end(), f.begin(), f.end());
  };
  field(want, bytes_of("c1"));
  field(want, manifest);
  field(want, bytes_of("dataset"));
  field(want, bytes_of("a.csv"));
  field(want, hash);
  field(want, kx);
  field(want, uploader);
  CHECK(s == want);

  // Moving bytes between fields, or changing any bound value, changes the statement.
  CHECK(upload_statement("c1", manifest, "dataset", "ab", hash, kx, uploader) !=
        upload_statement("c1", manifest, "datasetab", "", hash, kx, uploader));
  CHECK(upload_statement("c1", manifest, "algorithm", "f", hash, kx, uploader) !=
        upload_statement("c1", manifest, "dataset", "f", hash, kx, uploader));
  sha3_digest other_manifest = manifest;
  other_manifest[0] ^= 1;
  CHECK(upload_statement("c1", manifest, "dataset", "f", hash, kx, uploader) !=
        upload_statement("c1", other_manifest, "dataset", "f", hash, kx, uploader));
  CHECK(upload_statement("c1", manifest, "dataset", "f", hash, kx, uploader) !=
        upload_statement("c1", manifest, "dataset", "f", hash, kx, kx));

  auto r = result_statement("comp", manifest, bytes_of("DER"), kx);
  std::vector<uint8_t> want_r = bytes_of("cove-result-v1");
  field(want_r, bytes_of("comp"));
  field(want_r, manifest);
  field(want_r, bytes_of("DER"));
  field(want_r, kx);
  CHECK(r == want_r);
  CHECK(result_statement("a", manifest, bytes_of("bc"), kx) !=
        result_statement("ab", manifest, bytes_of("c"), kx));
  CHECK(result_statement("a", manifest, bytes_of("bc"), kx) !=
        result_statement("a", other_manifest, bytes_of("bc"), kx));
}

TEST_CASE("evidence_report_data is SHA-512 over the tagged, length-prefixed keys and nonce") {
  std::vector<uint8_t> kx(32, 0x11), sig(44, 0x22), nonce(64, 0x33);
  std::vector<uint8_t> msg = bytes_of("cove-evidence-v1");
  for (auto* f : {&kx, &sig, &nonce}) {
    msg.insert(msg.end(), {0, 0, 0, static_cast<uint8_t>(f->size())});
    msg.insert(msg.end(), f->begin(), f->end());
  }
  CHECK(evidence_report_data(kx, sig, nonce) == sha512_of(msg));
  nonce[0] ^= 1;
  CHECK(evidence_report_data(kx, sig, nonce) != sha512_of(msg));
}

TEST_CASE("bridge_report_data binds keys, CVM id and TLS exporter under its own tag") {
  std::vector<uint8_t> kx(32, 0x11), sig(32, 0x22), exporter(32, 0x33);
  std::vector<uint8_t> id = bytes_of("cvm-1");
  std::vector<uint8_t> msg = bytes_of("cove-bridge-v1");
  for (auto* f : {&kx, &sig, &id, &exporter}) {
    msg.insert(msg.end(), {0, 0, 0, static_cast<uint8_t>(f->size())});
    msg.insert(msg.end(), f->begin(), f->end());
  }
  CHECK(bridge_report_data(kx, sig, "cvm-1", exporter) == sha512_of(msg));
  CHECK(bridge_report_data(kx, sig, "cvm-2", exporter) != sha512_of(msg));
  // A verifier that asks the agent for evidence over nonce = exporter never gets a
  // bridge binding: the tags differ.
  CHECK(evidence_report_data(kx, sig, exporter) != bridge_report_data(kx, sig, "cvm-1", exporter));
  exporter[31] ^= 1;
  CHECK(bridge_report_data(kx, sig, "cvm-1", exporter) != sha512_of(msg));
}

TEST_CASE("v2 report_data binds the vTPM AK name last, under its own tags; the quote nonce derives from it") {
  std::vector<uint8_t> kx(32, 0x11), sig(32, 0x22), nonce(32, 0x33), ak(34, 0x44);
  std::vector<uint8_t> id = bytes_of("cvm-1");
  std::vector<uint8_t> ev = bytes_of("cove-evidence-v2");
  for (auto* f : {&kx, &sig, &nonce, &ak}) {
    ev.insert(ev.end(), {0, 0, 0, static_cast<uint8_t>(f->size())});
    ev.insert(ev.end(), f->begin(), f->end());
  }
  CHECK(evidence_report_data(kx, sig, nonce, ak) == sha512_of(ev));
  std::vector<uint8_t> br = bytes_of("cove-bridge-v2");
  for (auto* f : {&kx, &sig, &id, &nonce, &ak}) {
    br.insert(br.end(), {0, 0, 0, static_cast<uint8_t>(f->size())});
    br.insert(br.end(), f->begin(), f->end());
  }
  CHECK(bridge_report_data(kx, sig, "cvm-1", nonce, ak) == sha512_of(br));
  // No AK: exactly the v1 constructions; another AK: another value.
  CHECK(evidence_report_data(kx, sig, nonce, {}) == evidence_report_data(kx, sig, nonce));
  CHECK(evidence_report_data(kx, sig, nonce, ak) != evidence_report_data(kx, sig, nonce));
  CHECK(bridge_report_data(kx, sig, "cvm-1", nonce, ak) != bridge_report_data(kx, sig, "cvm-1", nonce));
  auto other = ak;
  other[2] ^= 1;
  CHECK(evidence_report_data(kx, sig, nonce, other) != evidence_report_data(kx, sig, nonce, ak));

  auto rd = evidence_report_data(kx, sig, nonce, ak);
  constexpr std::string_view tag = "cove-vtpm-quote-v1";
  std::vector<uint8_t> q(tag.size() + rd.size());
  std::copy(tag.begin(), tag.end(), q.begin());
  std::copy(rd.begin(), rd.end(), q.begin() + static_cast<std::ptrdiff_t>(tag.size()));
  CHECK(vtpm_quote_nonce(rd) == sha3_256_of(q));
  rd[0] ^= 1;
  CHECK(vtpm_quote_nonce(rd) != sha3_256_of(q));
}
