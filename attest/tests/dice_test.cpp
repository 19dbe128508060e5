#include "cove/attest/dice.hpp"

#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "cove/attest/snp_report.hpp"
#include "cove/attest/verify.hpp"
#include "test_util.hpp"

using namespace cove::attest;

namespace {

std::vector<uint8_t> bytes_of(std::string_view s) {
  return {s.begin(), s.end()};
}

sim_dice_inputs base_inputs() {
  sim_dice_inputs in;
  in.uds = std::vector<uint8_t>(32, 0x42);
  in.firmware = bytes_of("firmware image v1");
  in.kernel = bytes_of("kernel+initrd+cmdline v1");
  in.agent = bytes_of("cove-agent v1");
  return in;
}

const sim_dice_chain& good_chain() {
  static const sim_dice_chain c = [] {
    auto r = make_sim_dice_chain(base_inputs());
    REQUIRE(r);
    return *r;
  }();
  return c;
}

std::chrono::system_clock::time_point pinned_now() {
  return std::chrono::sys_days{std::chrono::year{2027} / 1 / 1};
}

std::vector<uint8_t> sha384_of(std::string_view s) {
  std::vector<uint8_t> out(48);
  unsigned int n = 0;
  EVP_Digest(s.data(), s.size(), out.data(), &n, EVP_sha384(), nullptr);
  return out;
}

dice_policy policy_for(const sim_dice_chain& c) {
  dice_policy p;
  p.trusted_roots_pem = {c.root_pem};
  p.layers = {{std::nullopt, "firmware", {sha384_of("firmware image v1")}, 1, 0},
              {2, "kernel", {sha384_of("kernel+initrd+cmdline v1")}, std::nullopt, 0},
              {3, std::nullopt, {sha384_of("cove-agent v1")}, std::nullopt, 0}};
  return p;
}

std::vector<std::vector<uint8_t>> ders_of(const std::string& pem) {
  auto d = split_pem_bundle(pem);
  REQUIRE(d);
  return *d;
}

std::string der_concat(const std::vector<std::vector<uint8_t>>& ders) {
  std::string s;
  for (const auto& d : ders) s.append(d.begin(), d.end());
  return s;
}

std::string pem_of(const std::vector<uint8_t>& der) {
  auto pem = cove::attest::test::der_to_pem(der);
  REQUIRE_FALSE(pem.empty());
  return pem;
}

std::string verify_error(const std::string& chain_text, const dice_policy& p) {
  auto chain = parse_dice_chain(chain_text);
  REQUIRE_MESSAGE(chain, (chain ? "" : chain.error().message));
  auto r = verify_dice_chain(*chain, p, pinned_now());
  REQUIRE_FALSE(r);
  CHECK(r.error().code == cove::errc::attestation_failed);
  return r.error().message;
}

}  // namespace

TEST_CASE("dice: generated chain parses root first with DiceTcbInfo") {
  const auto& c = good_chain();
  auto chain = parse_dice_chain(c.chain_pem);
  REQUIRE(chain);
  REQUIRE(chain->size() == 4);
  CHECK((*chain)[0].name == "device");
  CHECK_FALSE((*chain)[0].has_tcb_info);
  const char* names[] = {"firmware", "kernel", "agent"};
  const char* inputs[] = {"firmware image v1", "kernel+initrd+cmdline v1", "cove-agent v1"};
  for (int i = 1; i <= 3; ++i) {
    const auto& l = (*chain)[static_cast<std::size_t>(i)];
    CHECK(l.name == names[i - 1]);
    CHECK(l.has_tcb_info);
    CHECK(l.layer == i);
    CHECK(l.svn == 1);
    CHECK(l.vendor == "cove");
    CHECK(l.flags == 0);
    REQUIRE(l.fwids.size() == 1);
    CHECK(l.fwids[0].hash_alg == oid_sha384);
    CHECK(l.fwids[0].digest == sha384_of(inputs[i - 1]));
    CHECK(l.issuer == (*chain)[static_cast<std::size_t>(i - 1)].subject);
  }
  CHECK(c.fwids.size() == 3);
  CHECK(c.leaf_key_pem.find("BEGIN PRIVATE KEY") != std::string::npos);
}

TEST_CASE("dice: generated chain verifies") {
  auto chain = parse_dice_chain(good_chain().chain_pem);
  REQUIRE(chain);
  auto r = verify_dice_chain(*chain, policy_for(good_chain()), pinned_now());
  CHECK_MESSAGE(r, (r ? "" : r.error().message));
}

TEST_CASE("dice: keys are deterministic from the UDS and measurements") {
  auto again = make_sim_dice_chain(base_inputs());
  REQUIRE(again);
  CHECK(again->leaf_key_pem == good_chain().leaf_key_pem);
  auto in = base_inputs();
  in.kernel = bytes_of("other kernel");
  auto other = make_sim_dice_chain(in);
  REQUIRE(other);
  CHECK(other->leaf_key_pem != good_chain().leaf_key_pem);
}

TEST_CASE("dice: reordered input (PEM reversed, DER shuffled) verifies") {
  auto ders = ders_of(good_chain().chain_pem);
  std::string reversed;
  for (auto it = ders.rbegin(); it != ders.rend(); ++it) reversed += pem_of(*it);
  auto a = parse_dice_chain(reversed);
  REQUIRE(a);
  CHECK((*a)[0].name == "device");
  CHECK((*a)[3].name == "agent");
  CHECK(verify_dice_chain(*a, policy_for(good_chain()), pinned_now()));

  std::vector<std::vector<uint8_t>> shuffled = {ders[2], ders[0], ders[3], ders[1]};
  auto b = parse_dice_chain(der_concat(shuffled));
  REQUIRE(b);
  CHECK((*b)[2].name == "kernel");
  CHECK(verify_dice_chain(*b, policy_for(good_chain()), pinned_now()));
}

TEST_CASE("dice: wrong root fails") {
  auto in = base_inputs();
  in.uds = std::vector<uint8_t>(32, 0x07);
  auto other = make_sim_dice_chain(in);
  REQUIRE(other);
  auto p = policy_for(good_chain());
  p.trusted_roots_pem = {other->root_pem};
  auto msg = verify_error(good_chain().chain_pem, p);
  CHECK(msg.find("layer 0 (device) root") != std::string::npos);

  p.trusted_roots_pem = {};
  CHECK(verify_error(good_chain().chain_pem, p).find("no trusted roots") != std::string::npos);
}

TEST_CASE("dice: tampered signature fails and names the layer") {
  auto ders = ders_of(good_chain().chain_pem);
  ders[2].back() ^= 0x01;  // last byte of the kernel certificate's ECDSA S value
  auto msg = verify_error(der_concat(ders), policy_for(good_chain()));
  CHECK(msg.find("layer 2 (kernel) signature") != std::string::npos);
}

TEST_CASE("dice: expired certificate fails at a pinned now") {
  auto in = base_inputs();
  in.not_after = std::chrono::sys_days{std::chrono::year{2026} / 6 / 1};
  auto c = make_sim_dice_chain(in);
  REQUIRE(c);
  auto chain = parse_dice_chain(c->chain_pem);
  REQUIRE(chain);
  CHECK(verify_dice_chain(*chain, policy_for(*c), std::chrono::sys_days{std::chrono::year{2026} / 1 / 1}));
  auto msg = verify_error(c->chain_pem, policy_for(*c));
  CHECK(msg.find("layer 0 (device) validity: expired") != std::string::npos);
  auto early =
      verify_dice_chain(*chain, policy_for(*c), std::chrono::sys_days{std::chrono::year{2024} / 1 / 1});
  REQUIRE_FALSE(early);
  CHECK(early.error().message.find("not yet valid") != std::string::npos);
}

TEST_CASE("dice: fwid mismatch in the middle layer names the layer and both digests") {
  auto in = base_inputs();
  in.kernel = bytes_of("evil kernel");
  auto c = make_sim_dice_chain(in);
  REQUIRE(c);
  auto p = policy_for(good_chain());
  p.trusted_roots_pem = {c->root_pem};
  auto msg = verify_error(c->chain_pem, p);
  CHECK(msg.find("layer 2 (kernel) fwid: got " + to_hex(sha384_of("evil kernel"))) == 0);
  CHECK(msg.find("expected one of [" + to_hex(sha384_of("kernel+initrd+cmdline v1")) + "]") !=
        std::string::npos);
}

TEST_CASE("dice: min_svn") {
  auto p = policy_for(good_chain());
  p.layers[0].min_svn = 2;
  CHECK(verify_error(good_chain().chain_pem, p) == "layer 1 (firmware) svn: got 1, expected >= 2");
}

TEST_CASE("dice: debug flag fails unless the layer policy allows it") {
  auto in = base_inputs();
  in.kernel_flags = dice_flag_debug;
  auto c = make_sim_dice_chain(in);
  REQUIRE(c);
  auto p = policy_for(*c);
  CHECK(verify_error(c->chain_pem, p) == "layer 2 (kernel) flags: debug set");
  p.layers[1].allowed_flags = dice_flag_debug;
  auto chain = parse_dice_chain(c->chain_pem);
  REQUIRE(chain);
  CHECK(verify_dice_chain(*chain, p, pinned_now()));

  in = base_inputs();
  in.agent_flags = dice_flag_not_configured | dice_flag_not_secure;
  auto c2 = make_sim_dice_chain(in);
  REQUIRE(c2);
  CHECK(verify_error(c2->chain_pem, policy_for(*c2)) ==
        "layer 3 (agent) flags: not_configured,not_secure set");
}

TEST_CASE("dice: a missing layer (gap) fails") {
  auto ders = ders_of(good_chain().chain_pem);
  ders.erase(ders.begin() + 2);  // drop the kernel
  auto r = parse_dice_chain(der_concat(ders));
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("gap") != std::string::npos);
  CHECK(r.error().message.find("CN=kernel") != std::string::npos);
}

TEST_CASE("dice: duplicated certificate and forks fail") {
  auto ders = ders_of(good_chain().chain_pem);
  ders.push_back(ders[1]);
  auto r = parse_dice_chain(der_concat(ders));
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("duplicate certificate 'firmware'") != std::string::npos);

  // A second kernel certificate for the same firmware (different measurement, same names).
  auto in = base_inputs();
  in.agent = bytes_of("other agent");
  auto other = make_sim_dice_chain(in);
  REQUIRE(other);
  auto od = ders_of(other->chain_pem);
  auto good = ders_of(good_chain().chain_pem);
  auto r2 = parse_dice_chain(der_concat({good[0], good[1], good[2], good[3], od[3]}));
  REQUIRE_FALSE(r2);
  CHECK(r2.error().message.find("two certificates with subject") != std::string::npos);
}

TEST_CASE("dice: hand-built layer list is re-checked for linkage") {
  auto chain = parse_dice_chain(good_chain().chain_pem);
  REQUIRE(chain);
  std::swap((*chain)[1], (*chain)[2]);
  auto r = verify_dice_chain(*chain, policy_for(good_chain()), pinned_now());
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("layer 1 (kernel) issuer") == 0);
}

TEST_CASE("dice: policy entries must match a layer; algorithms are enforced") {
  auto p = policy_for(good_chain());
  p.layers.push_back({std::nullopt, "bootloader", {}, std::nullopt, 0});
  CHECK(verify_error(good_chain().chain_pem, p).find("name 'bootloader') matches no layer") !=
        std::string::npos);
  p = policy_for(good_chain());
  p.allowed_signature_algorithms = {"ecdsa-p384-sha384"};
  CHECK(verify_error(good_chain().chain_pem, p) ==
        "layer 0 (device) signature algorithm: ecdsa-p256-sha256 is not allowed");
}

TEST_CASE("dice: DiceTcbInfo DER encoding") {
  dice_tcb_info info;
  info.flags = dice_flag_debug;
  auto der = encode_dice_tcb_info(info);
  CHECK(der == std::vector<uint8_t>{0x30, 0x04, 0x87, 0x02, 0x04, 0x10});
  info.vendor = "v";
  info.svn = 300;
  info.layer = 0;
  info.fwids = {{oid_sha256, std::vector<uint8_t>(32, 0xab)}};
  info.flags = dice_flag_not_configured | dice_flag_recovery;
  info.type = {1, 2};
  auto round = parse_dice_tcb_info(encode_dice_tcb_info(info));
  REQUIRE(round);
  CHECK(round->vendor == "v");
  CHECK(round->svn == 300);
  CHECK(round->layer == 0);
  CHECK(round->flags == (dice_flag_not_configured | dice_flag_recovery));
  REQUIRE(round->fwids.size() == 1);
  CHECK(round->fwids[0].hash_alg == oid_sha256);
  CHECK(round->type == std::vector<uint8_t>{1, 2});

  // flagsMask [10] masks flags; out-of-order and explicit-tagged fields are rejected.
  auto masked =
      parse_dice_tcb_info(std::vector<uint8_t>{0x30, 0x08, 0x87, 0x02, 0x04, 0x10, 0x8a, 0x02, 0x07, 0x80});
  REQUIRE(masked);
  CHECK(masked->flags == 0u);
  CHECK_FALSE(parse_dice_tcb_info(std::vector<uint8_t>{0x30, 0x06, 0x84, 0x01, 0x01, 0x83, 0x01, 0x01}));
  CHECK_FALSE(parse_dice_tcb_info(std::vector<uint8_t>{0x30, 0x05, 0xa3, 0x03, 0x02, 0x01, 0x01}));
  CHECK_FALSE(parse_dice_tcb_info(std::vector<uint8_t>{0x30, 0x03, 0x83, 0x01, 0x01, 0x00}));
}

TEST_CASE("dice: policy JSON") {
  std::string fw = to_hex(sha384_of("firmware image v1"));
  std::string root = good_chain().root_pem;
  std::string j = R"({"trusted_roots": ["ROOT"],
    "allowed_signature_algorithms": ["ecdsa-p256-sha256"],
    "layers": [{"name": "firmware", "fwids": [")" +
                  fw + R"("], "min_svn": 1},
               {"index": 2, "name": "kernel", "allowed_flags": ["recovery"]}]})";
  // Inline PEM needs JSON escaping of newlines.
  std::string esc;
  for (char ch : root) esc += ch == '\n' ? std::string("\\n") : std::string(1, ch);
  j.replace(j.find("ROOT"), 4, esc);
  auto p = load_dice_policy_json(j);
  REQUIRE_MESSAGE(p, (p ? "" : p.error().message));
  CHECK(p->trusted_roots_pem.size() == 1);
  REQUIRE(p->layers.size() == 2);
  CHECK(p->layers[0].allowed_fwids[0] == sha384_of("firmware image v1"));
  CHECK(p->layers[1].index == 2u);
  CHECK(p->layers[1].allowed_flags == dice_flag_recovery);
  auto chain = parse_dice_chain(good_chain().chain_pem);
  REQUIRE(chain);
  CHECK(verify_dice_chain(*chain, *p, pinned_now()));

  CHECK_FALSE(load_dice_policy_json(R"({"trusted_root": []})"));
  CHECK_FALSE(load_dice_policy_json(R"({"layers": [{"name": "x", "fwid": []}]})"));
  CHECK_FALSE(load_dice_policy_json(R"({"layers": [{"name": "x", "fwids": ["abcd"]}]})"));
  CHECK_FALSE(load_dice_policy_json(R"({"layers": [{"fwids": []}]})"));
  CHECK_FALSE(load_dice_policy_json(R"({"layers": [{"name": "x", "allowed_flags": ["sleepy"]}]})"));
  CHECK_FALSE(load_dice_policy_json(R"({"allowed_signature_algorithms": ["rsa"]})"));
  CHECK_FALSE(load_dice_policy_json(R"({"trusted_roots": ["does-not-exist.pem"]})", "/nonexistent"));
  CHECK_FALSE(load_dice_policy_json("[1]"));
  CHECK_FALSE(load_dice_policy_json("{"));
}

TEST_CASE("dice: garbage input is rejected") {
  CHECK_FALSE(parse_dice_chain(""));
  CHECK_FALSE(parse_dice_chain("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"));
  CHECK_FALSE(parse_dice_chain(std::string("\x30\x03\x02\x01\x01", 5)));
  CHECK_FALSE(verify_dice_chain({}, policy_for(good_chain()), pinned_now()));
}

// Writes the fuzz seeds when COVE_WRITE_DICE_SEEDS names a directory (run once by hand).
TEST_CASE("dice: write fuzz seeds (only with COVE_WRITE_DICE_SEEDS)") {
  const char* dir = std::getenv("COVE_WRITE_DICE_SEEDS");
  if (dir == nullptr) return;
  std::filesystem::create_directories(dir);
  auto write = [&](const char* name, const std::string& data) {
    std::ofstream(std::filesystem::path(dir) / name, std::ios::binary) << data;
  };
  write("chain.pem", good_chain().chain_pem);
  write("chain.der", der_concat(ders_of(good_chain().chain_pem)));
  auto ders = ders_of(good_chain().chain_pem);
  write("kernel.der", der_concat({ders[2]}));
  dice_tcb_info info;
  info.vendor = "cove";
  info.model = "sim";
  info.version = "1";
  info.svn = 7;
  info.layer = 2;
  info.index = 0;
  info.fwids = {{oid_sha384, sha384_of("kernel")}, {oid_sha256, std::vector<uint8_t>(32, 1)}};
  info.flags = dice_flag_debug | dice_flag_recovery;
  info.vendor_info = {1, 2, 3};
  info.type = {4};
  auto tcb = encode_dice_tcb_info(info);
  write("tcbinfo.der", std::string(tcb.begin(), tcb.end()));
}
