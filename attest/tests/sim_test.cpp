#include "cove/attest/sim.hpp"

#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>

#include "cove/attest/policy.hpp"
#include "test_util.hpp"

using namespace cove::attest;
namespace t = cove::attest::test;

namespace {

const sim_root& shared_root() {
  static const sim_root root = [] {
    auto r = generate_sim_root();
    REQUIRE(r);
    return *r;
  }();
  return root;
}

std::array<uint8_t, 64> rd_of(uint8_t v) {
  std::array<uint8_t, 64> a{};
  a.fill(v);
  return a;
}
std::array<uint8_t, 48> meas_of(uint8_t v) {
  std::array<uint8_t, 48> a{};
  a.fill(v);
  return a;
}

verify_options trusting(const std::string& ark_pem) {
  verify_options o;
  o.trusted_ark_pems = {ark_pem};
  return o;
}

struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "cove-attest-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace

TEST_CASE("sim root looks like an AMD chain") {
  const auto& root = shared_root();
  auto chain = identify_ask_ark(root.bundle_pem());
  REQUIRE(chain);
  CHECK(root.ark_pem.find("BEGIN CERTIFICATE") != std::string::npos);
  CHECK(root.ark_key_pem.find("BEGIN PRIVATE KEY") != std::string::npos);
  auto ark = pem_to_der(root.ark_pem);
  REQUIRE(ark);
  CHECK(*ark == chain->ark_der);
}

TEST_CASE("sim round trip through the real verification path") {
  const auto& root = shared_root();
  auto chip = issue_sim_vcek(root, {4, 1, 9, 200, 0});
  REQUIRE(chip);
  auto info = parse_vcek_extensions(chip->vcek_der);
  REQUIRE(info);
  CHECK(info->product_name == "Sim");
  CHECK(info->bl == 4);
  CHECK(info->tee == 1);
  CHECK(info->snp == 9);
  CHECK(info->microcode == 200);
  REQUIRE(info->hwid);
  CHECK(std::equal(info->hwid->begin(), info->hwid->end(), chip->chip_id.begin(), chip->chip_id.end()));

  sim_report_options ro;
  ro.host_data[0] = 0x42;
  ro.vmpl = 2;
  auto bytes = make_sim_report(*chip, rd_of(7), meas_of(9), ro);
  REQUIRE(bytes);
  CHECK(bytes->size() == 1184);

  auto r = verify_snp_evidence(*bytes, chip->vcek_der, root.bundle_pem(), trusting(root.ark_pem));
  if (!r) MESSAGE(r.error().message);
  REQUIRE(r);
  CHECK(r->version == 3);
  CHECK(r->report_data == rd_of(7));
  CHECK(r->measurement == meas_of(9));
  CHECK(r->host_data[0] == 0x42);
  CHECK(r->vmpl == 2);
  CHECK(r->chip_id == chip->chip_id);
  CHECK(r->product == snp_product::genoa);  // from the simulated CPUID
  CHECK(r->reported() == tcb_version{4, 1, 9, 200, 0});

  // And the policy layer on top, with the sim root named in JSON.
  std::string json = R"({"measurements": [")" + to_hex(meas_of(9)) + R"("], "vmpl": 2,
      "minimum_tcb": {"bl": 4, "snp": 9, "microcode": 200},
      "host_data": ")" +
                     to_hex(r->host_data) + R"(", "trusted_roots": []})";
  auto p = load_policy_json(json);
  REQUIRE(p);
  p->trusted_roots.push_back(root.ark_pem);
  auto o = make_verify_options(*p);
  auto again = verify_snp_evidence(*bytes, chip->vcek_der, root.bundle_pem(), o);
  REQUIRE(again);
  CHECK(check_policy(*again, *p, rd_of(7)));
  auto wrong_rd = check_policy(*again, *p, rd_of(8));
  REQUIRE_FALSE(wrong_rd);
  CHECK(wrong_rd.error().message.rfind("report_data: got 0707", 0) == 0);
}

TEST_CASE("sim evidence is rejected unless its root is trusted") {
  const auto& root = shared_root();
  auto chip = issue_sim_vcek(root);
  REQUIRE(chip);
  auto bytes = make_sim_report(*chip, rd_of(1), meas_of(2));
  REQUIRE(bytes);

  auto none = verify_snp_evidence(*bytes, chip->vcek_der, root.bundle_pem(), verify_options{});
  REQUIRE_FALSE(none);
  CHECK(none.error().message == "cert chain: no trusted ARK configured");

  auto amd = t::real_amd_options();
  amd.now.reset();
  auto real_only = verify_snp_evidence(*bytes, chip->vcek_der, root.bundle_pem(), amd);
  REQUIRE_FALSE(real_only);
  CHECK(real_only.error().message.find("ARK-Sim") != std::string::npos);
  CHECK(real_only.error().message.find("is not one of the trusted roots") != std::string::npos);

  auto other = generate_sim_root();
  REQUIRE(other);
  auto wrong_sim = verify_snp_evidence(*bytes, chip->vcek_der, root.bundle_pem(), trusting(other->ark_pem));
  REQUIRE_FALSE(wrong_sim);
  CHECK(wrong_sim.error().message.find("is not one of the trusted roots") != std::string::npos);

  // Presenting the chip with another sim root's ASK/ARK (trusted) breaks the chain instead.
  auto swapped = verify_snp_evidence(*bytes, chip->vcek_der, other->bundle_pem(), trusting(other->ark_pem));
  REQUIRE_FALSE(swapped);
  CHECK(swapped.error().message.rfind("cert chain: VCEK signature does not verify with the ASK key", 0) == 0);
}

TEST_CASE("tampered sim report fails") {
  const auto& root = shared_root();
  auto chip = issue_sim_vcek(root);
  REQUIRE(chip);
  auto bytes = make_sim_report(*chip, rd_of(1), meas_of(2));
  REQUIRE(bytes);
  auto b = *bytes;
  b[0x90] ^= 1;
  auto r = verify_snp_evidence(b, chip->vcek_der, root.bundle_pem(), trusting(root.ark_pem));
  REQUIRE_FALSE(r);
  CHECK(r.error().message == "signature: report signature does not verify with the VCEK public key");
  // A report from another chip under the same root fails the signature check.
  auto chip2 = issue_sim_vcek(root);
  REQUIRE(chip2);
  auto r2 = verify_snp_evidence(*bytes, chip2->vcek_der, root.bundle_pem(), trusting(root.ark_pem));
  REQUIRE_FALSE(r2);
  CHECK(r2.error().message.rfind("signature:", 0) == 0);
}

TEST_CASE("sim root save/load") {
  temp_dir dir;
  const auto& root = shared_root();
  REQUIRE(save_sim_root(root, dir.path / "sim"));
  struct stat st {};
  REQUIRE(::stat((dir.path / "sim" / "ark.key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  REQUIRE(::stat((dir.path / "sim" / "ask.key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  auto loaded = load_sim_root(dir.path / "sim");
  REQUIRE(loaded);
  CHECK(loaded->ark_pem == root.ark_pem);
  CHECK(loaded->ask_key_pem == root.ask_key_pem);
  auto chip = issue_sim_vcek(*loaded);
  REQUIRE(chip);
  auto bytes = make_sim_report(*chip, rd_of(3), meas_of(4));
  REQUIRE(bytes);
  CHECK(verify_snp_evidence(*bytes, chip->vcek_der, root.bundle_pem(), trusting(root.ark_pem)));

  // A policy file naming the sim ARK by path.
  REQUIRE(std::filesystem::exists(dir.path / "sim" / "ark.pem"));
  { std::ofstream(dir.path / "policy.json") << R"({"trusted_roots": ["sim/ark.pem"]})"; }
  auto p = load_policy_file(dir.path / "policy.json");
  REQUIRE(p);
  REQUIRE(p->trusted_roots.size() == 1);
  CHECK(p->trusted_roots[0] == root.ark_pem);

  auto missing = load_sim_root(dir.path / "nope");
  CHECK_FALSE(missing);
}

namespace {
// Re-signs the sim VCEK with the sim ASK key using `pss` padding or not, and digest `md`.
std::vector<uint8_t> resign_vcek(const sim_root& root, const sim_chip& chip, bool pss, const EVP_MD* md) {
  BIO* kb = BIO_new_mem_buf(root.ask_key_pem.data(), static_cast<int>(root.ask_key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
  BIO_free(kb);
  const unsigned char* p = chip.vcek_der.data();
  X509* cert = d2i_X509(nullptr, &p, static_cast<long>(chip.vcek_der.size()));
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_PKEY_CTX* pctx = nullptr;
  EVP_DigestSignInit(ctx, &pctx, md, nullptr, key);
  if (pss) {
    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32);
  }
  REQUIRE(X509_sign_ctx(cert, ctx) > 0);
  unsigned char* out = nullptr;
  int n = i2d_X509(cert, &out);
  std::vector<uint8_t> der(out, out + n);
  OPENSSL_free(out);
  EVP_MD_CTX_free(ctx);
  X509_free(cert);
  EVP_PKEY_free(key);
  return der;
}
}  // namespace

TEST_CASE("certificate signatures must be RSASSA-PSS with SHA-384") {
  const auto& root = shared_root();
  auto chip = issue_sim_vcek(root);
  REQUIRE(chip);
  auto o = trusting(root.ark_pem);
  REQUIRE(verify_cert_chain(chip->vcek_der, root.bundle_pem(), o));
  auto pkcs1 = resign_vcek(root, *chip, false, EVP_sha384());
  auto r = verify_cert_chain(pkcs1, root.bundle_pem(), o);
  REQUIRE_FALSE(r);
  CHECK(r.error().message == "VCEK is not signed with RSASSA-PSS");
  auto pss256 = resign_vcek(root, *chip, true, EVP_sha256());
  auto r2 = verify_cert_chain(pss256, root.bundle_pem(), o);
  REQUIRE_FALSE(r2);
  CHECK(r2.error().message == "VCEK RSASSA-PSS parameters are not SHA-384");
  auto pss384 = resign_vcek(root, *chip, true, EVP_sha384());  // salt 32 is fine: PSS params are honoured
  CHECK(verify_cert_chain(pss384, root.bundle_pem(), o));
}

#include "cove/attest/sim_store.hpp"

TEST_CASE("sim identity files (sim_store) round trip into a verifiable report") {
  temp_dir dir;
  const auto& root = shared_root();
  auto chip = issue_sim_vcek(root, {2, 0, 7, 90, 0});
  REQUIRE(chip);
  REQUIRE(save_sim_identity(*chip, root, dir.path / "id"));
  auto id = load_sim_identity(dir.path / "id");
  REQUIRE(id);
  CHECK(id->chip.vcek_der == chip->vcek_der);
  CHECK(id->chip.chip_id == chip->chip_id);
  CHECK(id->chip.tcb == chip->tcb);
  auto bytes = make_sim_report(id->chip, rd_of(5), meas_of(6));
  REQUIRE(bytes);
  auto p = load_policy_json(sim_policy_json(root, meas_of(6)));
  REQUIRE(p);
  auto r = verify_snp_evidence(*bytes, id->chip.vcek_der, id->ask_pem + id->ark_pem, make_verify_options(*p));
  REQUIRE(r);
  CHECK(check_policy(*r, *p, rd_of(5)));
  CHECK_FALSE(check_policy(*r, *load_policy_json(sim_policy_json(root, meas_of(7))), rd_of(5)));
}
