#include "cove/attest/verify.hpp"

#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <algorithm>
#include <cstring>

#include "ossl.hpp"

namespace cove::attest {
namespace {

constexpr const char* amd_oid_product = "1.3.6.1.4.1.3704.1.2";
constexpr const char* amd_oid_bl = "1.3.6.1.4.1.3704.1.3.1";
constexpr const char* amd_oid_tee = "1.3.6.1.4.1.3704.1.3.2";
constexpr const char* amd_oid_snp = "1.3.6.1.4.1.3704.1.3.3";
constexpr const char* amd_oid_ucode = "1.3.6.1.4.1.3704.1.3.8";
constexpr const char* amd_oid_fmc = "1.3.6.1.4.1.3704.1.3.9";
constexpr const char* amd_oid_hwid = "1.3.6.1.4.1.3704.1.4";

void openssl_free_bytes(unsigned char* p) noexcept {
  OPENSSL_free(p);
}

error chain_error(std::string msg) {
  return make_error(errc::attestation_failed, std::move(msg));
}

std::string name_of(const X509* c) {
  ossl::bio b{BIO_new(BIO_s_mem())};
  if (!b) return "?";
  X509_NAME_print_ex(b.get(), X509_get_subject_name(c), 0, XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB);
  return ossl::bio_to_string(b.get());
}

std::string time_text(const ASN1_TIME* t) {
  ossl::bio b{BIO_new(BIO_s_mem())};
  if (!b || ASN1_TIME_print(b.get(), t) != 1) return "?";
  return ossl::bio_to_string(b.get());
}

// The extension's raw extnValue contents, or nullopt when absent.
std::optional<std::span<const uint8_t>> ext_value(const X509* cert, const char* oid) {
  ossl::asn1_object obj{OBJ_txt2obj(oid, 1)};
  if (!obj) return std::nullopt;
  int idx = X509_get_ext_by_OBJ(cert, obj.get(), -1);
  if (idx < 0) return std::nullopt;
  X509_EXTENSION* ext = X509_get_ext(cert, idx);
  const ASN1_OCTET_STRING* data = X509_EXTENSION_get_data(ext);
  if (data == nullptr) return std::nullopt;
  return std::span<const uint8_t>(ASN1_STRING_get0_data(data),
                                  static_cast<std::size_t>(ASN1_STRING_length(data)));
}

expected<std::optional<uint8_t>> spl_ext(const X509* cert, const char* oid) {
  auto v = ext_value(cert, oid);
  if (!v) return std::optional<uint8_t>{};
  const unsigned char* p = v->data();
  ossl::asn1_integer i{d2i_ASN1_INTEGER(nullptr, &p, static_cast<long>(v->size()))};
  int64_t n = -1;
  if (!i || p != v->data() + v->size() || ASN1_INTEGER_get_int64(&n, i.get()) != 1 || n < 0 || n > 255) {
    ERR_clear_error();
    return make_error(errc::attestation_failed,
                      std::string("VCEK extension ") + oid + " is not an SPL INTEGER 0..255");
  }
  return std::optional<uint8_t>{static_cast<uint8_t>(n)};
}

// Signature algorithm must be RSASSA-PSS with SHA-384 (hash and MGF1 checked by
// X509_get_signature_info, which OpenSSL 3 fills from the PSS parameters).
expected<void> require_pss_sha384(const X509* cert, const char* what) {
  if (X509_get_signature_nid(cert) != NID_rsassaPss)
    return chain_error(std::string(what) + " is not signed with RSASSA-PSS");
  int md = 0, pk = 0, bits = 0;
  uint32_t flags = 0;
  if (X509_get_signature_info(const_cast<X509*>(cert), &md, &pk, &bits, &flags) != 1 || md != NID_sha384) {
    ERR_clear_error();
    return chain_error(std::string(what) + " RSASSA-PSS parameters are not SHA-384");
  }
  return ok();
}

expected<void> check_signed_by(const X509* cert, const X509* issuer, const char* what, const char* by) {
  if (X509_NAME_cmp(X509_get_issuer_name(cert), X509_get_subject_name(issuer)) != 0)
    return chain_error(std::string(what) + " issuer '" + name_of(cert) + "' is not the " + by + " '" +
                       name_of(issuer) + "'");
  if (auto r = require_pss_sha384(cert, what); !r) return r;
  EVP_PKEY* key = X509_get0_pubkey(issuer);
  if (key == nullptr || !EVP_PKEY_is_a(key, "RSA")) {
    ERR_clear_error();
    return chain_error(std::string(by) + " public key is not RSA");
  }
  if (X509_verify(const_cast<X509*>(cert), key) != 1)
    return chain_error(std::string(what) + " signature does not verify with the " + by + " key (" +
                       ossl::last_error("bad signature") + ")");
  return ok();
}

expected<void> check_validity(const X509* cert, const char* what, std::time_t now) {
  const ASN1_TIME* nb = X509_get0_notBefore(cert);
  const ASN1_TIME* na = X509_get0_notAfter(cert);
  int before = X509_cmp_time(nb, &now);
  int after = X509_cmp_time(na, &now);
  if (before == 0 || after == 0) {
    ERR_clear_error();
    return chain_error(std::string(what) + " has a malformed validity period");
  }
  if (before > 0)
    return chain_error(std::string(what) + " is not yet valid (notBefore " + time_text(nb) + ")");
  if (after < 0) return chain_error(std::string(what) + " has expired (notAfter " + time_text(na) + ")");
  return ok();
}

}  // namespace

expected<std::vector<std::vector<uint8_t>>> split_pem_bundle(std::string_view pem) {
  if (pem.size() > (1u << 20)) return make_error(errc::invalid_request, "PEM bundle too large");
  ossl::bio b{BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))};
  if (!b) return make_error(errc::internal, "BIO_new_mem_buf failed");
  std::vector<std::vector<uint8_t>> out;
  ERR_clear_error();
  for (;;) {
    ossl::x509 cert{PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr)};
    if (!cert) break;
    out.push_back(ossl::to_der(cert.get()));
  }
  unsigned long e = ERR_peek_last_error();
  bool clean_end = e == 0 || (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE);
  if (!clean_end)
    return make_error(errc::invalid_request, "malformed certificate in PEM: " + ossl::last_error());
  ERR_clear_error();
  if (out.empty()) return make_error(errc::invalid_request, "no certificate in PEM");
  return out;
}

expected<std::vector<uint8_t>> pem_to_der(std::string_view pem) {
  auto certs = split_pem_bundle(pem);
  if (!certs) return std::move(certs).error();
  if (certs->size() != 1)
    return make_error(errc::invalid_request,
                      "expected one certificate, got " + std::to_string(certs->size()));
  return std::move((*certs)[0]);
}

expected<ask_ark> identify_ask_ark(std::string_view pem_bundle) {
  auto certs = split_pem_bundle(pem_bundle);
  if (!certs) return std::move(certs).error();
  if (certs->size() != 2)
    return make_error(errc::invalid_request,
                      "ASK/ARK bundle holds " + std::to_string(certs->size()) + " certificates, expected 2");
  ask_ark out;
  int arks = 0;
  for (auto& der : *certs) {
    ossl::x509 c = ossl::parse_der(der);
    if (!c) return make_error(errc::invalid_request, "unparsable certificate in ASK/ARK bundle");
    if (X509_NAME_cmp(X509_get_issuer_name(c.get()), X509_get_subject_name(c.get())) == 0) {
      ++arks;
      out.ark_der = std::move(der);
    } else {
      out.ask_der = std::move(der);
    }
  }
  if (arks != 1)
    return make_error(errc::invalid_request,
                      "ASK/ARK bundle must hold exactly one self-issued certificate (the ARK), found " +
                          std::to_string(arks));
  return out;
}

expected<vcek_info> parse_vcek_extensions(std::span<const uint8_t> vcek_der) {
  ossl::x509 cert = ossl::parse_der(vcek_der);
  if (!cert) return make_error(errc::invalid_request, "VCEK is not a DER certificate");
  vcek_info info;
  if (auto v = ext_value(cert.get(), amd_oid_product)) {
    const unsigned char* p = v->data();
    ossl::asn1_string s{d2i_ASN1_IA5STRING(nullptr, &p, static_cast<long>(v->size()))};
    if (!s) {
      ERR_clear_error();
      return make_error(errc::attestation_failed, "VCEK product-name extension is not an IA5String");
    }
    info.product_name.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s.get())),
                             static_cast<std::size_t>(ASN1_STRING_length(s.get())));
  }
  struct field {
    const char* oid;
    std::optional<uint8_t>* dst;
  };
  for (auto [oid, dst] :
       {field{amd_oid_bl, &info.bl}, field{amd_oid_tee, &info.tee}, field{amd_oid_snp, &info.snp},
        field{amd_oid_ucode, &info.microcode}, field{amd_oid_fmc, &info.fmc}}) {
    auto v = spl_ext(cert.get(), oid);
    if (!v) return std::move(v).error();
    *dst = *v;
  }
  if (auto v = ext_value(cert.get(), amd_oid_hwid)) {
    if (v->empty() || v->size() > 64)
      return make_error(errc::attestation_failed, "VCEK hwID has a bad length");
    info.hwid = std::vector<uint8_t>(v->begin(), v->end());
  }
  return info;
}

expected<void> verify_snp_signature(const snp_report& report, const X509* vcek) {
  if (report.signature_algo != snp_sig_algo_ecdsa_p384_sha384)
    return make_error(errc::attestation_failed, "unsupported signature algorithm");
  EVP_PKEY* key = X509_get0_pubkey(vcek);
  if (key == nullptr) return make_error(errc::attestation_failed, "VCEK has no usable public key");
  char group[64] = {};
  std::size_t glen = 0;
  if (!EVP_PKEY_is_a(key, "EC") || EVP_PKEY_get_group_name(key, group, sizeof group, &glen) != 1 ||
      std::strcmp(group, "secp384r1") != 0) {
    ERR_clear_error();
    return make_error(errc::attestation_failed, "VCEK key is not EC P-384");
  }
  // R and S are 72-byte little-endian integers.
  ossl::bignum r{
      BN_lebin2bn(report.signature_r.data(), static_cast<int>(report.signature_r.size()), nullptr)};
  ossl::bignum s{
      BN_lebin2bn(report.signature_s.data(), static_cast<int>(report.signature_s.size()), nullptr)};
  ossl::ecdsa_sig sig{ECDSA_SIG_new()};
  if (!r || !s || !sig) return make_error(errc::internal, "out of memory");
  if (ECDSA_SIG_set0(sig.get(), r.get(), s.get()) != 1)
    return make_error(errc::internal, "ECDSA_SIG_set0 failed");
  (void)r.release();
  (void)s.release();
  unsigned char* der = nullptr;
  int der_len = i2d_ECDSA_SIG(sig.get(), &der);
  if (der_len <= 0) return make_error(errc::internal, "i2d_ECDSA_SIG failed");
  c_handle<unsigned char, openssl_free_bytes> der_owner{der};
  ossl::evp_md_ctx ctx{EVP_MD_CTX_new()};
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha384(), nullptr, key) != 1)
    return make_error(errc::internal, "EVP_DigestVerifyInit: " + ossl::last_error());
  int rc =
      EVP_DigestVerify(ctx.get(), der, static_cast<std::size_t>(der_len), report.raw.data(), snp_signed_size);
  ERR_clear_error();
  if (rc != 1)
    return make_error(errc::attestation_failed, "report signature does not verify with the VCEK public key");
  return ok();
}

expected<void> verify_snp_signature(const snp_report& report, std::span<const uint8_t> vcek_der) {
  ossl::x509 cert = ossl::parse_der(vcek_der);
  if (!cert) return make_error(errc::attestation_failed, "VCEK is not a DER certificate");
  return verify_snp_signature(report, cert.get());
}

expected<void> verify_cert_chain(std::span<const uint8_t> vcek_der, std::span<const uint8_t> ask_der,
                                 std::span<const uint8_t> ark_der, const verify_options& opts) {
  ossl::x509 vcek = ossl::parse_der(vcek_der);
  ossl::x509 ask = ossl::parse_der(ask_der);
  ossl::x509 ark = ossl::parse_der(ark_der);
  if (!vcek) return chain_error("VCEK is not a DER certificate");
  if (!ask) return chain_error("ASK is not a DER certificate");
  if (!ark) return chain_error("ARK is not a DER certificate");

  // 1. The ARK must be one we were told to trust, byte for byte.
  if (opts.trusted_ark_pems.empty()) return chain_error("no trusted ARK configured");
  const std::vector<uint8_t> ark_bytes = ossl::to_der(ark.get());
  bool trusted = false;
  for (const auto& pem : opts.trusted_ark_pems) {
    auto certs = split_pem_bundle(pem);
    if (!certs) continue;
    trusted = std::any_of(certs->begin(), certs->end(), [&](const auto& d) { return d == ark_bytes; });
    if (trusted) break;
  }
  if (!trusted) return chain_error("ARK '" + name_of(ark.get()) + "' is not one of the trusted roots");

  // 2. Signatures: ARK self-signed, ARK -> ASK, ASK -> VCEK.
  if (auto r = check_signed_by(ark.get(), ark.get(), "ARK", "ARK (self-signature)"); !r) return r;
  if (auto r = check_signed_by(ask.get(), ark.get(), "ASK", "ARK"); !r) return r;
  if (auto r = check_signed_by(vcek.get(), ask.get(), "VCEK", "ASK"); !r) return r;

  // 3. Validity at `now`.
  const std::time_t now =
      std::chrono::system_clock::to_time_t(opts.now.value_or(std::chrono::system_clock::now()));
  for (auto [c, what] :
       {std::pair{ark.get(), "ARK"}, std::pair{ask.get(), "ASK"}, std::pair{vcek.get(), "VCEK"}})
    if (auto r = check_validity(c, what, now); !r) return r;

  // 4. Revocation, when CRLs are given.
  if (!opts.crls.empty())
    if (auto r = check_crls(vcek.get(), ask.get(), ark.get(), opts.crls, now); !r) return r;

  // 5. The VCEK key must be P-384.
  EVP_PKEY* key = X509_get0_pubkey(vcek.get());
  char group[64] = {};
  std::size_t glen = 0;
  if (key == nullptr || !EVP_PKEY_is_a(key, "EC") ||
      EVP_PKEY_get_group_name(key, group, sizeof group, &glen) != 1 || std::strcmp(group, "secp384r1") != 0) {
    ERR_clear_error();
    return chain_error("VCEK key is not EC P-384");
  }
  return ok();
}

namespace {

using x509_crl = c_handle<X509_CRL, X509_CRL_free>;

expected<std::vector<x509_crl>> parse_crls(std::string_view in) {
  std::vector<x509_crl> out;
  if (in.find("-----BEGIN X509 CRL-----") != std::string_view::npos) {
    ossl::bio b{BIO_new_mem_buf(in.data(), static_cast<int>(in.size()))};
    while (b) {
      x509_crl c{PEM_read_bio_X509_CRL(b.get(), nullptr, nullptr, nullptr)};
      if (!c) break;
      out.push_back(std::move(c));
    }
    ERR_clear_error();
    if (out.empty()) return make_error(errc::invalid_request, "crl: malformed PEM CRL");
    return out;
  }
  if (in.empty() || in.size() > (16u << 20))
    return make_error(errc::invalid_request, "crl: empty or over 16 MiB");
  const auto* p = reinterpret_cast<const unsigned char*>(in.data());
  x509_crl c{d2i_X509_CRL(nullptr, &p, static_cast<long>(in.size()))};
  if (!c || p != reinterpret_cast<const unsigned char*>(in.data() + in.size())) {
    ERR_clear_error();
    return make_error(errc::invalid_request, "crl: neither a PEM nor a DER CRL");
  }
  out.push_back(std::move(c));
  return out;
}

std::string crl_issuer(const X509_CRL* c) {
  ossl::bio b{BIO_new(BIO_s_mem())};
  if (!b) return "?";
  X509_NAME_print_ex(b.get(), X509_CRL_get_issuer(c), 0, XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB);
  return ossl::bio_to_string(b.get());
}

std::string serial_hex(const X509* c) {
  ossl::bignum bn{ASN1_INTEGER_to_BN(X509_get0_serialNumber(c), nullptr)};
  char* h = bn ? BN_bn2hex(bn.get()) : nullptr;
  std::string s = h ? std::string("0x") + h : "?";
  OPENSSL_free(h);
  return s;
}

}  // namespace

expected<std::string> crls_to_pem(std::string_view pem_or_der) {
  auto crls = parse_crls(pem_or_der);
  if (!crls) return crls.error();
  ossl::bio b{BIO_new(BIO_s_mem())};
  if (!b) return make_error(errc::internal, "crl: BIO_new");
  for (const auto& c : *crls)
    if (PEM_write_bio_X509_CRL(b.get(), c.get()) != 1) return make_error(errc::internal, "crl: PEM encoding");
  return ossl::bio_to_string(b.get());
}

expected<void> check_crls(const X509* vcek, const X509* ask, const X509* ark,
                          const std::vector<std::string>& crls, std::time_t now) {
  for (const auto& text : crls) {
    auto parsed = parse_crls(text);
    if (!parsed) return chain_error(parsed.error().message);
    for (auto& crl : *parsed) {
      const X509_NAME* issuer = X509_CRL_get_issuer(crl.get());
      const bool by_ark = X509_NAME_cmp(issuer, X509_get_subject_name(ark)) == 0;
      const bool by_ask = !by_ark && X509_NAME_cmp(issuer, X509_get_subject_name(ask)) == 0;
      if (!by_ark && !by_ask)
        return chain_error("crl: CRL of '" + crl_issuer(crl.get()) + "' is issued by neither the ARK '" +
                           name_of(ark) + "' nor the ASK '" + name_of(ask) + "' of this chain");
      const X509* signer = by_ark ? ark : ask;
      if (X509_CRL_verify(crl.get(), X509_get0_pubkey(signer)) != 1) {
        ERR_clear_error();
        return chain_error("crl: CRL of '" + crl_issuer(crl.get()) + "' does not verify with the " +
                           (by_ark ? "ARK" : "ASK") + " key");
      }
      const ASN1_TIME* last = X509_CRL_get0_lastUpdate(crl.get());
      const ASN1_TIME* next = X509_CRL_get0_nextUpdate(crl.get());
      if (last == nullptr || X509_cmp_time(last, &now) > 0)
        return chain_error("crl: CRL of '" + crl_issuer(crl.get()) + "' is not yet valid (thisUpdate " +
                           (last ? time_text(last) : std::string("missing")) + ")");
      if (next != nullptr && X509_cmp_time(next, &now) < 0)
        return chain_error("crl: CRL of '" + crl_issuer(crl.get()) + "' is stale (nextUpdate " +
                           time_text(next) + "); fetch a current one");
      const X509* subject = by_ark ? ask : vcek;
      X509_REVOKED* revoked = nullptr;
      if (X509_CRL_get0_by_cert(crl.get(), &revoked, const_cast<X509*>(subject)) == 1)
        return chain_error(std::string(by_ark ? "ASK" : "VCEK") + " '" + name_of(subject) +
                           "' is revoked (serial " + serial_hex(subject) + ", CRL of '" +
                           crl_issuer(crl.get()) + "')");
      ERR_clear_error();
    }
  }
  return ok();
}

expected<void> verify_cert_chain(std::span<const uint8_t> vcek_der, std::string_view ask_ark_pem_bundle,
                                 const verify_options& opts) {
  auto chain = identify_ask_ark(ask_ark_pem_bundle);
  if (!chain) return chain_error(chain.error().message);
  return verify_cert_chain(vcek_der, chain->ask_der, chain->ark_der, opts);
}

expected<void> check_vcek_binding(snp_report& report, const vcek_info& vcek) {
  if (auto p = product_from_name(vcek.product_name); p != snp_product::unknown) {
    if (report.product != snp_product::unknown && report.product != p)
      return make_error(errc::attestation_failed, "product: report CPUID says " +
                                                      std::string(to_string(report.product)) +
                                                      ", VCEK says " + vcek.product_name);
    report.product = p;
  }
  const tcb_version t = report.reported();
  struct spl {
    const char* name;
    std::optional<uint8_t> cert;
    uint8_t report;
  };
  const spl spls[] = {{"bl", vcek.bl, t.bl},
                      {"tee", vcek.tee, t.tee},
                      {"snp", vcek.snp, t.snp},
                      {"microcode", vcek.microcode, t.microcode},
                      {"fmc", report.product == snp_product::turin ? vcek.fmc : std::nullopt, t.fmc}};
  for (const auto& s : spls) {
    if (s.cert && *s.cert != s.report)
      return make_error(errc::attestation_failed, std::string("tcb: REPORTED_TCB ") + s.name + "=" +
                                                      std::to_string(s.report) + " but VCEK " + s.name +
                                                      " SPL=" + std::to_string(*s.cert));
  }
  if (vcek.hwid) {
    const auto& h = *vcek.hwid;
    bool match = h.size() <= report.chip_id.size() &&
                 std::equal(h.begin(), h.end(), report.chip_id.begin()) &&
                 std::all_of(report.chip_id.begin() + static_cast<std::ptrdiff_t>(h.size()),
                             report.chip_id.end(), [](uint8_t b) { return b == 0; });
    if (!match)
      return make_error(errc::attestation_failed,
                        "chip_id: report CHIP_ID " + to_hex(std::span(report.chip_id).first(16)) +
                            "... does not match VCEK hwID " +
                            to_hex(std::span(h).first(std::min<std::size_t>(16, h.size()))) + "...");
  }
  return ok();
}

expected<snp_report> verify_snp_evidence(std::span<const uint8_t> report, std::span<const uint8_t> vcek_der,
                                         std::string_view ask_ark_pem_bundle, const verify_options& opts) {
  auto fail = [](std::string_view step, const error& e) {
    return make_error(errc::attestation_failed, std::string(step) + ": " + e.message);
  };
  auto parsed = parse_snp_report(report);
  if (!parsed) return fail("report", parsed.error());
  if (parsed->signing_key() != 0)
    return make_error(errc::attestation_failed, "report: not signed by a VCEK (SIGNING_KEY=" +
                                                    std::to_string(parsed->signing_key()) + ")");
  if (auto r = verify_cert_chain(vcek_der, ask_ark_pem_bundle, opts); !r)
    return fail("cert chain", r.error());
  if (auto r = verify_snp_signature(*parsed, vcek_der); !r) return fail("signature", r.error());
  auto info = parse_vcek_extensions(vcek_der);
  if (!info) return fail("vcek binding", info.error());
  if (auto r = check_vcek_binding(*parsed, *info); !r) return fail("vcek binding", r.error());
  return parsed;
}

}  // namespace cove::attest
