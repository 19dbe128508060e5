#include "cove/attest/sim.hpp"

#include <fcntl.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "ossl.hpp"

namespace cove::attest {
namespace {

error crypto_error(std::string_view what) {
  return make_error(errc::crypto_failed, std::string(what) + ": " + ossl::last_error());
}

ossl::x509_name make_name(const char* cn) {
  ossl::x509_name n{X509_NAME_new()};
  if (!n) return nullptr;
  const std::pair<const char*, const char*> parts[] = {{"OU", "Engineering"},
                                                       {"C", "US"},
                                                       {"L", "Santa Clara"},
                                                       {"ST", "CA"},
                                                       {"O", "cove simulated TEE (not AMD)"},
                                                       {"CN", cn}};
  for (auto [k, v] : parts)
    if (X509_NAME_add_entry_by_txt(n.get(), k, MBSTRING_ASC, reinterpret_cast<const unsigned char*>(v), -1,
                                   -1, 0) != 1)
      return nullptr;
  return n;
}

bool add_conf_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  ossl::x509_extension ext{X509V3_EXT_conf_nid(nullptr, &ctx, nid, value)};
  return ext && X509_add_ext(cert, ext.get(), -1) == 1;
}

bool add_raw_ext(X509* cert, const char* oid, std::span<const uint8_t> value) {
  ossl::asn1_object obj{OBJ_txt2obj(oid, 1)};
  ossl::asn1_octet_string os{ASN1_OCTET_STRING_new()};
  if (!obj || !os || ASN1_OCTET_STRING_set(os.get(), value.data(), static_cast<int>(value.size())) != 1)
    return false;
  ossl::x509_extension ext{X509_EXTENSION_create_by_OBJ(nullptr, obj.get(), 0, os.get())};
  return ext && X509_add_ext(cert, ext.get(), -1) == 1;
}

std::vector<uint8_t> der_integer(uint8_t v) {
  if (v < 0x80) return {0x02, 0x01, v};
  return {0x02, 0x02, 0x00, v};
}

// Signs with RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48 (what AMD's KDS certificates use).
bool sign_pss(X509* cert, EVP_PKEY* key) {
  ossl::evp_md_ctx ctx{EVP_MD_CTX_new()};
  EVP_PKEY_CTX* pctx = nullptr;
  return ctx && EVP_DigestSignInit(ctx.get(), &pctx, EVP_sha384(), nullptr, key) == 1 &&
         EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 48) == 1 &&
         EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha384()) == 1 && X509_sign_ctx(cert, ctx.get()) > 0;
}

// A certificate for `pub` named `subject`, issued by `issuer` (null = self-issued).
expected<ossl::x509> make_cert(const char* cn, EVP_PKEY* pub, X509* issuer, EVP_PKEY* sign_key, long days,
                               bool ca) {
  ossl::x509 cert{X509_new()};
  ossl::x509_name subject = make_name(cn);
  ossl::bignum serial_bn{BN_new()};
  if (!cert || !subject || !serial_bn) return crypto_error("X509_new");
  ASN1_INTEGER* serial = X509_get_serialNumber(cert.get());
  if (X509_set_version(cert.get(), 2) != 1 ||
      BN_rand(serial_bn.get(), 64, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(serial_bn.get(), serial) == nullptr ||
      X509_set_subject_name(cert.get(), subject.get()) != 1 ||
      X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : subject.get()) != 1 ||
      X509_gmtime_adj(X509_getm_notBefore(cert.get()), -86400) == nullptr ||
      X509_time_adj_ex(X509_getm_notAfter(cert.get()), static_cast<int>(days), 0, nullptr) == nullptr ||
      X509_set_pubkey(cert.get(), pub) != 1)
    return crypto_error("building certificate");
  X509* iss = issuer ? issuer : cert.get();
  bool exts = ca ? add_conf_ext(cert.get(), iss, NID_basic_constraints, "critical,CA:TRUE") &&
                       add_conf_ext(cert.get(), iss, NID_key_usage, "critical,keyCertSign,cRLSign")
                 : add_conf_ext(cert.get(), iss, NID_key_usage, "critical,digitalSignature");
  if (!exts) return crypto_error("certificate extensions");
  if (!sign_pss(cert.get(), sign_key)) return crypto_error("signing certificate");
  return cert;
}

std::string cert_pem(X509* cert) {
  ossl::bio b{BIO_new(BIO_s_mem())};
  if (!b || PEM_write_bio_X509(b.get(), cert) != 1) return {};
  return ossl::bio_to_string(b.get());
}

std::string key_pem(EVP_PKEY* key) {
  ossl::bio b{BIO_new(BIO_s_mem())};
  if (!b || PEM_write_bio_PrivateKey(b.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) return {};
  return ossl::bio_to_string(b.get());
}

ossl::evp_pkey read_key(const std::string& pem) {
  ossl::bio b{BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))};
  if (!b) return nullptr;
  return ossl::evp_pkey{PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr)};
}

ossl::x509 read_cert(const std::string& pem) {
  ossl::bio b{BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))};
  if (!b) return nullptr;
  return ossl::x509{PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr)};
}

expected<void> write_file(const std::filesystem::path& p, const std::string& data, mode_t mode) {
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0)
    return make_error(errc::unavailable, "cannot write " + p.string() + ": " + std::strerror(errno));
  bool good = ::fchmod(fd, mode) == 0;
  std::size_t off = 0;
  while (good && off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      good = false;
    else
      off += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0) good = false;
  if (!good) return make_error(errc::unavailable, "cannot write " + p.string());
  return ok();
}

expected<std::string> read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return make_error(errc::not_found, "cannot read " + p.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void put_le(std::vector<uint8_t>& r, std::size_t off, uint64_t v, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) r[off + i] = static_cast<uint8_t>(v >> (8 * i));
}

template <std::size_t N>
void put(std::vector<uint8_t>& r, std::size_t off, const std::array<uint8_t, N>& a) {
  std::memcpy(r.data() + off, a.data(), N);
}

}  // namespace

expected<sim_root> generate_sim_root() {
  ossl::evp_pkey ark_key{EVP_RSA_gen(2048)};
  ossl::evp_pkey ask_key{EVP_RSA_gen(2048)};
  if (!ark_key || !ask_key) return crypto_error("RSA key generation");
  auto ark = make_cert("ARK-Sim", ark_key.get(), nullptr, ark_key.get(), 25 * 365, true);
  if (!ark) return std::move(ark).error();
  auto ask = make_cert("SEV-Sim", ask_key.get(), ark->get(), ark_key.get(), 25 * 365, true);
  if (!ask) return std::move(ask).error();
  sim_root root{cert_pem(ark->get()), cert_pem(ask->get()), key_pem(ark_key.get()), key_pem(ask_key.get())};
  if (root.ark_pem.empty() || root.ask_pem.empty() || root.ark_key_pem.empty() || root.ask_key_pem.empty())
    return crypto_error("PEM encoding");
  return root;
}

expected<void> save_sim_root(const sim_root& root, const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return make_error(errc::unavailable, "cannot create " + dir.string() + ": " + ec.message());
  if (auto r = write_file(dir / "ark.pem", root.ark_pem, 0644); !r) return r;
  if (auto r = write_file(dir / "ask.pem", root.ask_pem, 0644); !r) return r;
  if (auto r = write_file(dir / "ark.key", root.ark_key_pem, 0600); !r) return r;
  return write_file(dir / "ask.key", root.ask_key_pem, 0600);
}

expected<sim_root> load_sim_root(const std::filesystem::path& dir) {
  sim_root root;
  for (auto [name, dst] :
       {std::pair{"ark.pem", &root.ark_pem}, std::pair{"ask.pem", &root.ask_pem},
        std::pair{"ark.key", &root.ark_key_pem}, std::pair{"ask.key", &root.ask_key_pem}}) {
    auto t = read_text(dir / name);
    if (!t) return std::move(t).error();
    *dst = std::move(*t);
  }
  if (!read_cert(root.ark_pem) || !read_cert(root.ask_pem) || !read_key(root.ark_key_pem) ||
      !read_key(root.ask_key_pem)) {
    ERR_clear_error();
    return make_error(errc::invalid_request, "sim root in " + dir.string() + " is not valid PEM");
  }
  return root;
}

expected<std::string> make_sim_crl(const sim_root& root, bool by_ask, const std::vector<std::string>& revoked,
                                   std::chrono::system_clock::time_point this_update,
                                   std::chrono::system_clock::time_point next_update) {
  ossl::x509 issuer = read_cert(by_ask ? root.ask_pem : root.ark_pem);
  ossl::evp_pkey key = read_key(by_ask ? root.ask_key_pem : root.ark_key_pem);
  if (!issuer || !key) return crypto_error("sim CRL: issuer certificate or key");
  c_handle<X509_CRL, X509_CRL_free> crl{X509_CRL_new()};
  c_handle<ASN1_TIME, ASN1_TIME_free> last{
      ASN1_TIME_set(nullptr, std::chrono::system_clock::to_time_t(this_update))};
  c_handle<ASN1_TIME, ASN1_TIME_free> next{
      ASN1_TIME_set(nullptr, std::chrono::system_clock::to_time_t(next_update))};
  if (!crl || !last || !next || X509_CRL_set_version(crl.get(), 1) != 1 ||
      X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(issuer.get())) != 1 ||
      X509_CRL_set1_lastUpdate(crl.get(), last.get()) != 1 ||
      X509_CRL_set1_nextUpdate(crl.get(), next.get()) != 1)
    return crypto_error("sim CRL: fields");
  for (const auto& pem : revoked) {
    ossl::x509 cert = read_cert(pem);
    if (!cert) return make_error(errc::invalid_request, "sim CRL: a revoked entry is not a PEM certificate");
    X509_REVOKED* r = X509_REVOKED_new();
    if (r == nullptr || X509_REVOKED_set_serialNumber(r, X509_get_serialNumber(cert.get())) != 1 ||
        X509_REVOKED_set_revocationDate(r, last.get()) != 1 || X509_CRL_add0_revoked(crl.get(), r) != 1) {
      X509_REVOKED_free(r);
      return crypto_error("sim CRL: revoked entry");
    }
  }
  X509_CRL_sort(crl.get());
  ossl::evp_md_ctx ctx{EVP_MD_CTX_new()};
  EVP_PKEY_CTX* pctx = nullptr;
  if (!ctx || EVP_DigestSignInit(ctx.get(), &pctx, EVP_sha384(), nullptr, key.get()) != 1 ||
      EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 48) != 1 ||
      EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha384()) != 1 || X509_CRL_sign_ctx(crl.get(), ctx.get()) <= 0)
    return crypto_error("sim CRL: signing");
  ossl::bio b{BIO_new(BIO_s_mem())};
  if (!b || PEM_write_bio_X509_CRL(b.get(), crl.get()) != 1) return crypto_error("sim CRL: PEM");
  return ossl::bio_to_string(b.get());
}

expected<sim_chip> issue_sim_vcek(const sim_root& root, const tcb_version& tcb) {
  ossl::x509 ask = read_cert(root.ask_pem);
  ossl::evp_pkey ask_key = read_key(root.ask_key_pem);
  if (!ask || !ask_key) return crypto_error("reading sim ASK");
  ossl::evp_pkey vcek_key{EVP_EC_gen("secp384r1")};
  if (!vcek_key) return crypto_error("EC P-384 key generation");
  sim_chip chip;
  chip.tcb = tcb;
  if (RAND_bytes(chip.chip_id.data(), static_cast<int>(chip.chip_id.size())) != 1)
    return crypto_error("RAND_bytes");

  ossl::x509 cert{X509_new()};
  ossl::x509_name subject = make_name("SEV-VCEK");
  ossl::bignum serial_bn{BN_new()};
  if (!cert || !subject || !serial_bn) return crypto_error("X509_new");
  if (X509_set_version(cert.get(), 2) != 1 ||
      BN_rand(serial_bn.get(), 64, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(serial_bn.get(), X509_get_serialNumber(cert.get())) == nullptr ||
      X509_set_subject_name(cert.get(), subject.get()) != 1 ||
      X509_set_issuer_name(cert.get(), X509_get_subject_name(ask.get())) != 1 ||
      X509_gmtime_adj(X509_getm_notBefore(cert.get()), -86400) == nullptr ||
      X509_time_adj_ex(X509_getm_notAfter(cert.get()), 7 * 365, 0, nullptr) == nullptr ||
      X509_set_pubkey(cert.get(), vcek_key.get()) != 1)
    return crypto_error("building VCEK");
  const uint8_t ia5_sim[] = {0x16, 0x03, 'S', 'i', 'm'};
  bool exts = add_raw_ext(cert.get(), "1.3.6.1.4.1.3704.1.1", der_integer(1)) &&
              add_raw_ext(cert.get(), "1.3.6.1.4.1.3704.1.2", ia5_sim) &&
              add_raw_ext(cert.get(), "1.3.6.1.4.1.3704.1.3.1", der_integer(tcb.bl)) &&
              add_raw_ext(cert.get(), "1.3.6.1.4.1.3704.1.3.2", der_integer(tcb.tee)) &&
              add_raw_ext(cert.get(), "1.3.6.1.4.1.3704.1.3.3", der_integer(tcb.snp)) &&
              add_raw_ext(cert.get(), "1.3.6.1.4.1.3704.1.3.8", der_integer(tcb.microcode)) &&
              add_raw_ext(cert.get(), "1.3.6.1.4.1.3704.1.4", chip.chip_id);
  if (!exts) return crypto_error("VCEK extensions");
  if (!sign_pss(cert.get(), ask_key.get())) return crypto_error("signing VCEK");
  chip.vcek_pem = cert_pem(cert.get());
  chip.vcek_der = ossl::to_der(cert.get());
  chip.vcek_key_pem = key_pem(vcek_key.get());
  if (chip.vcek_pem.empty() || chip.vcek_der.empty() || chip.vcek_key_pem.empty())
    return crypto_error("encoding VCEK");
  return chip;
}

expected<std::vector<uint8_t>> make_sim_report(const sim_chip& chip,
                                               const std::array<uint8_t, 64>& report_data,
                                               const std::array<uint8_t, 48>& measurement,
                                               const sim_report_options& opts) {
  ossl::evp_pkey key = read_key(chip.vcek_key_pem);
  if (!key) return crypto_error("reading sim VCEK key");
  const snp_product product = product_from_cpuid(opts.cpuid_fam_id, opts.cpuid_mod_id);
  const uint64_t tcb = encode_tcb(chip.tcb, product);

  std::vector<uint8_t> r(snp_report_size, 0);
  put_le(r, 0x000, 3, 4);  // VERSION
  put_le(r, 0x004, opts.guest_svn, 4);
  put_le(r, 0x008, opts.policy, 8);
  put(r, 0x010, opts.family_id);
  put(r, 0x020, opts.image_id);
  put_le(r, 0x030, opts.vmpl, 4);
  put_le(r, 0x034, snp_sig_algo_ecdsa_p384_sha384, 4);
  put_le(r, 0x038, tcb, 8);  // CURRENT_TCB
  put_le(r, 0x040, 0x1, 8);  // PLATFORM_INFO: SMT enabled
  put_le(r, 0x048, 0, 4);    // signed by VCEK, no author key
  put(r, 0x050, report_data);
  put(r, 0x090, measurement);
  put(r, 0x0C0, opts.host_data);
  std::array<uint8_t, 32> report_id{};
  if (RAND_bytes(report_id.data(), static_cast<int>(report_id.size())) != 1)
    return crypto_error("RAND_bytes");
  put(r, 0x140, report_id);
  std::memset(r.data() + 0x160, 0xFF, 32);  // REPORT_ID_MA: no migration agent
  put_le(r, 0x180, tcb, 8);                 // REPORTED_TCB
  r[0x188] = opts.cpuid_fam_id;
  r[0x189] = opts.cpuid_mod_id;
  r[0x18A] = opts.cpuid_step;
  put(r, 0x1A0, chip.chip_id);
  put_le(r, 0x1E0, tcb, 8);  // COMMITTED_TCB
  r[0x1E8] = 1;              // CURRENT build 1, version 1.55
  r[0x1E9] = 55;
  r[0x1EA] = 1;
  r[0x1EC] = 1;
  r[0x1ED] = 55;
  r[0x1EE] = 1;
  put_le(r, 0x1F0, tcb, 8);  // LAUNCH_TCB

  ossl::evp_md_ctx ctx{EVP_MD_CTX_new()};
  std::size_t sig_len = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha384(), nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &sig_len, r.data(), snp_signed_size) != 1)
    return crypto_error("ECDSA sign init");
  std::vector<uint8_t> der(sig_len);
  if (EVP_DigestSign(ctx.get(), der.data(), &sig_len, r.data(), snp_signed_size) != 1)
    return crypto_error("ECDSA sign");
  const unsigned char* p = der.data();
  ossl::ecdsa_sig sig{d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig_len))};
  if (!sig) return crypto_error("decoding ECDSA signature");
  const BIGNUM* sr = nullptr;
  const BIGNUM* ss = nullptr;
  ECDSA_SIG_get0(sig.get(), &sr, &ss);
  if (BN_bn2lebinpad(sr, r.data() + 0x2A0, 72) != 72 || BN_bn2lebinpad(ss, r.data() + 0x2E8, 72) != 72)
    return crypto_error("encoding R/S");
  return r;
}

}  // namespace cove::attest
