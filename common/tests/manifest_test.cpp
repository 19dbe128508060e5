#include <doctest/doctest.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <nlohmann/json.hpp>

#include "cove/c_handle.hpp"
#include "cove/manifest.hpp"

namespace {

using json = nlohmann::json;
using pkey = cove::c_handle<EVP_PKEY, EVP_PKEY_free>;

std::vector<uint8_t> spki(EVP_PKEY* k) {
  int n = i2d_PUBKEY(k, nullptr);
  REQUIRE(n > 0);
  std::vector<uint8_t> out(static_cast<size_t>(n));
  unsigned char* p = out.data();
  REQUIRE(i2d_PUBKEY(k, &p) == n);
  return out;
}

std::string b64(const std::vector<uint8_t>& d) {
  std::string out(4 * ((d.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), d.data(), static_cast<int>(d.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string pem(EVP_PKEY* k) {
  cove::c_handle<BIO, BIO_free> bio(BIO_new(BIO_s_mem()));
  REQUIRE(PEM_write_bio_PUBKEY(bio.get(), k) == 1);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return {data, static_cast<size_t>(n)};
}

struct keys {
  pkey ed{EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")};
  pkey ec{EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")};
  pkey rsa{EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048})};
};
const keys& test_keys() {
  static const keys k;
  return k;
}

const std::string hex_a(64, 'a');

json valid_json() {
  const auto& k = test_keys();
  return json{
      {"id", "comp-1"},
      {"name", "sum"},
      {"description", "adds numbers"},
      {"datasets",
       json::array(
           {{{"filename", "a.csv"}, {"hash", hex_a}, {"user_key", b64(spki(k.ed.get()))}},
            {{"filename", "b.csv"}, {"hash", std::string(64, 'B')}, {"user_key", b64(spki(k.ec.get()))}}})},
      {"algorithm",
       {{"hash", std::string(64, '0')},
        {"user_key", b64(spki(k.rsa.get()))},
        {"algo_type", "python"},
        {"algo_args", {"--x", "1"}}}},
      {"result_consumers", json::array({{{"user_key", b64(spki(k.ed.get()))}}})},
      {"timeout_seconds", 30}};
}

std::string parse_error(const json& j) {
  auto r = cove::parse_manifest_json(j.dump());
  REQUIRE_FALSE(r);
  CHECK(r.error().code == cove::errc::invalid_request);
  return r.error().message;
}

}  // namespace

TEST_CASE("a manifest with hex hashes and base64 DER keys parses") {
  auto r = cove::parse_manifest_json(valid_json().dump());
  REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
  const auto& m = *r;
  CHECK(m.id == "comp-1");
  CHECK(m.name == "sum");
  CHECK(m.description == "adds numbers");
  REQUIRE(m.datasets.size() == 2);
  CHECK(m.datasets[0].filename == "a.csv");
  CHECK(m.datasets[0].hash[0] == 0xaa);
  CHECK(m.datasets[1].hash[31] == 0xbb);
  CHECK(m.datasets[0].user_key == spki(test_keys().ed.get()));
  CHECK(m.algorithm.type == cove::algo_type::python);
  CHECK(m.algorithm.algo_args == std::vector<std::string>{"--x", "1"});
  CHECK(m.algorithm.user_key == spki(test_keys().rsa.get()));
  REQUIRE(m.result_consumers.size() == 1);
  CHECK(m.timeout_seconds == 30);
}

TEST_CASE("cocos's shape parses: array hashes, PEM keys, source/kbs/decompress, no algo_type") {
  const auto& k = test_keys();
  json hash = json::array();
  for (int i = 0; i < 32; ++i) hash.push_back(i * 8);
  json j = {
      {"id", "7c9e6679-7425-40de-944b-e07fc1f90ae7"},
      {"datasets",
       json::array({{{"hash", hash},
                     {"user_key", pem(k.ec.get())},
                     {"filename", "d.zip"},
                     {"source", {{"type", ""}, {"url", ""}, {"kbs_resource_path", ""}, {"encrypted", false}}},
                     {"decompress", true},
                     {"kbs", {{"url", ""}, {"enabled", false}}}}})},
      {"algorithm", {{"hash", hash}, {"user_key", pem(k.ed.get())}, {"source", nullptr}}},
      {"result_consumers", json::array({{{"user_key", b64(spki(k.rsa.get()))}}})}};
  auto r = cove::parse_manifest_json(j.dump());
  REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
  CHECK(r->datasets[0].hash[1] == 8);
  CHECK(r->datasets[0].hash[31] == 248);
  CHECK(r->datasets[0].user_key == spki(k.ec.get()));
  CHECK(r->algorithm.user_key == spki(k.ed.get()));
  CHECK(r->algorithm.type == cove::algo_type::bin);
  CHECK(r->timeout_seconds == 0);
}

TEST_CASE("invalid manifests are rejected with the JSON path in the message") {
  const auto& k = test_keys();
  json j = valid_json();

  SUBCASE("missing id") {
    j.erase("id");
    CHECK(parse_error(j) == "id: missing");
  }
  SUBCASE("id with a dot or too long") {
    j["id"] = "a.b";
    CHECK(parse_error(j).starts_with("id: expected 1 to 64 characters"));
    j["id"] = std::string(65, 'a');
    CHECK(parse_error(j).starts_with("id: "));
  }
  SUBCASE("id of the wrong type") {
    j["id"] = 5;
    CHECK(parse_error(j) == "id: expected a string");
  }
  SUBCASE("missing algorithm") {
    j.erase("algorithm");
    CHECK(parse_error(j) == "algorithm: missing");
  }
  SUBCASE("bad hash") {
    j["datasets"][1]["hash"] = std::string(63, 'a');
    CHECK(parse_error(j) == "datasets[1].hash: expected 64 hex characters or an array of 32 integers");
    j["datasets"][1]["hash"] = std::string(63, 'a') + "g";
    CHECK(parse_error(j).starts_with("datasets[1].hash: "));
    json arr = json::array();
    for (int i = 0; i < 32; ++i) arr.push_back(i == 5 ? 256 : 1);
    j["datasets"][1]["hash"] = arr;
    CHECK(parse_error(j).starts_with("datasets[1].hash: "));
    arr.erase(5);
    arr.erase(6);
    j["datasets"][1]["hash"] = arr;
    CHECK(parse_error(j).starts_with("datasets[1].hash: "));
  }
  SUBCASE("duplicate, empty and path-like file names") {
    j["datasets"][1]["filename"] = "a.csv";
    CHECK(parse_error(j) == "datasets[1].filename: duplicate file name 'a.csv'");
    for (const char* bad : {"", "..", ".", "x/y.csv", "../etc"}) {
      j["datasets"][1]["filename"] = bad;
      CHECK(parse_error(j).starts_with("datasets[1].filename: "));
    }
  }
  SUBCASE("no result consumers") {
    j["result_consumers"] = json::array();
    CHECK(parse_error(j).starts_with("result_consumers: "));
    j.erase("result_consumers");
    CHECK(parse_error(j) == "result_consumers: missing");
  }
  SUBCASE("unknown keys are named") {
    j["colour"] = "red";
    CHECK(parse_error(j) == "colour: unknown key");
    j.erase("colour");
    j["algorithm"]["entrypoint"] = "x";
    CHECK(parse_error(j) == "algorithm.entrypoint: unknown key");
  }
  SUBCASE("remote sources are not supported") {
    j["algorithm"]["source"] = {{"url", "https://example.invalid/algo"}};
    CHECK(parse_error(j) == "algorithm.source.url: remote sources are not supported");
  }
  SUBCASE("source, kbs and decompress: wrong types and unknown keys are named") {
    j["datasets"][0]["source"] = {{"encrypted", "yes"}};
    CHECK(parse_error(j) == "datasets[0].source.encrypted: expected a boolean");
    j["datasets"][0]["source"] = {{"url", 1}};
    CHECK(parse_error(j) == "datasets[0].source.url: expected a string");
    j["datasets"][0]["source"] = {{"mirror", ""}};
    CHECK(parse_error(j) == "datasets[0].source.mirror: unknown key");
    j["datasets"][0]["source"] = "local";
    CHECK(parse_error(j) == "datasets[0].source: expected an object");
    j["datasets"][0]["source"] = nullptr;
    j["datasets"][0]["kbs"] = {{"url", "https://kbs.invalid"}, {"enabled", 1}};
    CHECK(parse_error(j) == "datasets[0].kbs.enabled: expected a boolean");
    j["datasets"][0]["kbs"] = {{"url", "https://kbs.invalid"}};
    j["datasets"][0]["decompress"] = "no";
    CHECK(parse_error(j) == "datasets[0].decompress: expected a boolean");
    j["datasets"][0].erase("decompress");
    j["algorithm"]["kbs"] = {{"token", ""}};
    CHECK(parse_error(j) == "algorithm.kbs.token: unknown key");
  }
  SUBCASE("bad algo_type and args") {
    j["algorithm"]["algo_type"] = "docker";
    CHECK(parse_error(j).starts_with("algorithm.algo_type: "));
    j["algorithm"]["algo_type"] = "bin";
    j["algorithm"]["algo_args"] = json::array({"a", 3});
    CHECK(parse_error(j) == "algorithm.algo_args[1]: expected a string");
  }
  SUBCASE("keys: not base64, not a key, wrong type or curve, short RSA, private PEM") {
    j["result_consumers"][0]["user_key"] = "not base64!";
    CHECK(parse_error(j) == "result_consumers[0].user_key: invalid base64");
    j["result_consumers"][0]["user_key"] = b64({1, 2, 3});
    CHECK(parse_error(j).starts_with("result_consumers[0].user_key: not a DER"));
    pkey p384(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384"));
    j["result_consumers"][0]["user_key"] = b64(spki(p384.get()));
    CHECK(parse_error(j) == "result_consumers[0].user_key: EC key is not on P-256");
    pkey rsa1024(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{1024}));
    j["result_consumers"][0]["user_key"] = b64(spki(rsa1024.get()));
    CHECK(parse_error(j) == "result_consumers[0].user_key: RSA key shorter than 2048 bits");
    pkey x(EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519"));
    j["result_consumers"][0]["user_key"] = b64(spki(x.get()));
    CHECK(parse_error(j).starts_with("result_consumers[0].user_key: unsupported key type"));
    auto der = spki(k.ed.get());
    der.push_back(0);
    j["result_consumers"][0]["user_key"] = b64(der);
    CHECK(parse_error(j) == "result_consumers[0].user_key: trailing bytes after the public key");
    j["result_consumers"][0]["user_key"] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    CHECK(parse_error(j) == "result_consumers[0].user_key: expected a PEM \"PUBLIC KEY\" block");
  }
  SUBCASE("timeout of the wrong type") {
    j["timeout_seconds"] = -1;
    CHECK(parse_error(j).starts_with("timeout_seconds: "));
    j["timeout_seconds"] = 1.5;
    CHECK(parse_error(j).starts_with("timeout_seconds: "));
  }
  SUBCASE("not JSON or not an object") {
    CHECK_FALSE(cove::parse_manifest_json("{"));
    CHECK_FALSE(cove::parse_manifest_json("[]"));
    CHECK_FALSE(cove::parse_manifest_json(""));
  }
}

TEST_CASE("to_json output parses back to the same manifest") {
  auto m = cove::parse_manifest_json(valid_json().dump());
  REQUIRE(m);
  const std::string text = cove::to_json(*m);
  CHECK(text.find(std::string(64, 'b')) != std::string::npos);  // hex hashes
  auto back = cove::parse_manifest_json(text);
  REQUIRE_MESSAGE(back, (back ? "" : back.error().message));
  CHECK(*back == *m);
}

TEST_CASE("FlatBuffers round trip and untrusted input checks") {
  auto m = cove::parse_manifest_json(valid_json().dump());
  REQUIRE(m);
  auto roundtrip = [](const cove::manifest& in) {
    flatbuffers::FlatBufferBuilder fbb;
    fbb.Finish(cove::to_fbs(fbb, in));
    flatbuffers::Verifier v(fbb.GetBufferPointer(), fbb.GetSize());
    REQUIRE(v.VerifyBuffer<cove::v1::Manifest>(nullptr));
    return cove::from_fbs(flatbuffers::GetRoot<cove::v1::Manifest>(fbb.GetBufferPointer()));
  };
  auto back = roundtrip(*m);
  REQUIRE_MESSAGE(back, (back ? "" : back.error().message));
  CHECK(*back == *m);

  CHECK_FALSE(cove::from_fbs(nullptr));

  cove::manifest bad = *m;
  bad.datasets[0].user_key.resize(10);
  auto r = roundtrip(bad);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.starts_with("datasets[0].user_key: "));

  bad = *m;
  bad.result_consumers.clear();
  CHECK_FALSE(roundtrip(bad));

  bad = *m;
  bad.id = "has space";
  CHECK_FALSE(roundtrip(bad));

  // A hash of the wrong length and a missing algorithm, built by hand.
  flatbuffers::FlatBufferBuilder fbb;
  std::vector<uint8_t> short_hash(31, 1);
  auto ds = cove::v1::CreateDataset(fbb, fbb.CreateString("a"), fbb.CreateVector(short_hash),
                                    fbb.CreateVector(m->datasets[0].user_key));
  std::vector<flatbuffers::Offset<cove::v1::Dataset>> dss{ds};
  fbb.Finish(cove::v1::CreateManifest(fbb, fbb.CreateString("x"), 0, 0, fbb.CreateVector(dss)));
  r = cove::from_fbs(flatbuffers::GetRoot<cove::v1::Manifest>(fbb.GetBufferPointer()));
  REQUIRE_FALSE(r);
  CHECK(r.error().message == "datasets[0].hash: expected 32 bytes");

  flatbuffers::FlatBufferBuilder fbb2;
  fbb2.Finish(cove::v1::CreateManifest(fbb2, fbb2.CreateString("x")));
  r = cove::from_fbs(flatbuffers::GetRoot<cove::v1::Manifest>(fbb2.GetBufferPointer()));
  REQUIRE_FALSE(r);
  CHECK(r.error().message == "algorithm: missing");
}
