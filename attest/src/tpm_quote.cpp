#include "cove/attest/tpm_quote.hpp"

#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <optional>
#include <set>

#include "cove/attest/snp_report.hpp"
#include "ossl.hpp"

namespace cove::attest {

namespace {

using bytes = std::vector<uint8_t>;

error malformed(std::string_view what, std::string_view detail) {
  return make_error(errc::invalid_request, std::string(what) + ": " + std::string(detail));
}

error failed(std::string msg) {
  return make_error(errc::attestation_failed, std::move(msg));
}

// Big-endian reader over TPM marshalled bytes; every read reports truncation by field name.
class be_reader {
 public:
  be_reader(std::span<const uint8_t> in, std::string_view what) : in_(in), what_(what) {}

  expected<uint8_t> u8(std::string_view field) {
    auto b = take(1, field);
    if (!b) return b.error();
    return (*b)[0];
  }
  expected<uint16_t> u16(std::string_view field) {
    auto b = take(2, field);
    if (!b) return b.error();
    return static_cast<uint16_t>(((*b)[0] << 8) | (*b)[1]);
  }
  expected<uint32_t> u32(std::string_view field) {
    auto b = take(4, field);
    if (!b) return b.error();
    uint32_t v = 0;
    for (auto c : *b) v = (v << 8) | c;
    return v;
  }
  expected<uint64_t> u64(std::string_view field) {
    auto b = take(8, field);
    if (!b) return b.error();
    uint64_t v = 0;
    for (auto c : *b) v = (v << 8) | c;
    return v;
  }
  expected<std::span<const uint8_t>> take(std::size_t n, std::string_view field) {
    if (in_.size() - pos_ < n) {
      return malformed(what_, "truncated at " + std::string(field) + " (offset " + std::to_string(pos_) +
                                  ", need " + std::to_string(n) + ", have " +
                                  std::to_string(in_.size() - pos_) + ")");
    }
    auto s = in_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  // TPM2B: u16 size then bytes; `max` bounds the size.
  expected<bytes> tpm2b(std::string_view field, std::size_t max) {
    auto n = u16(field);
    if (!n) return n.error();
    if (*n > max) {
      return malformed(
          what_, std::string(field) + " size " + std::to_string(*n) + " exceeds " + std::to_string(max));
    }
    auto b = take(*n, field);
    if (!b) return b.error();
    return bytes(b->begin(), b->end());
  }
  expected<void> finish() {
    if (pos_ != in_.size()) {
      return malformed(what_, std::to_string(in_.size() - pos_) + " trailing bytes");
    }
    return ok();
  }
  [[nodiscard]] std::size_t pos() const noexcept { return pos_; }

 private:
  std::span<const uint8_t> in_;
  std::string_view what_;
  std::size_t pos_ = 0;
};

#define TPM_CAT2(a, b) a##b
#define TPM_CAT(a, b) TPM_CAT2(a, b)
// var = *expr, or return expr's error.
#define TPM_TRY(var, expr)                                              \
  auto TPM_CAT(try_, __LINE__) = (expr);                                \
  if (!TPM_CAT(try_, __LINE__)) return TPM_CAT(try_, __LINE__).error(); \
  var = std::move(*TPM_CAT(try_, __LINE__))

std::string alg_name(uint16_t alg) {
  switch (alg) {
    case tpm_alg_sha1:
      return "sha1";
    case tpm_alg_sha256:
      return "sha256";
    case 0x000C:
      return "sha384";
    case 0x000D:
      return "sha512";
    case tpm_alg_rsassa:
      return "rsassa";
    case tpm_alg_rsapss:
      return "rsapss";
    case tpm_alg_ecdsa:
      return "ecdsa";
    case tpm_alg_null:
      return "null";
    default: {
      char buf[8];
      std::snprintf(buf, sizeof buf, "0x%04x", alg);
      return buf;
    }
  }
}

std::string short_hex(std::span<const uint8_t> b) {
  auto h = to_hex(b);
  return h.empty() ? "(empty)" : h;
}

bytes sha256(std::span<const uint8_t> in) {
  bytes out(SHA256_DIGEST_LENGTH);
  SHA256(in.data(), in.size(), out.data());
  return out;
}

expected<std::vector<tpm_pcr_selection>> read_pcr_selection(be_reader& r) {
  std::vector<tpm_pcr_selection> out;
  uint32_t count = 0;
  TPM_TRY(count, r.u32("TPML_PCR_SELECTION.count"));
  if (count > 16)
    return malformed("TPMS_ATTEST", "PCR selection count " + std::to_string(count) + " exceeds 16");
  for (uint32_t i = 0; i < count; ++i) {
    tpm_pcr_selection sel;
    TPM_TRY(sel.hash_alg, r.u16("TPMS_PCR_SELECTION.hash"));
    uint8_t size = 0;
    TPM_TRY(size, r.u8("TPMS_PCR_SELECTION.sizeofSelect"));
    if (size > 4) return malformed("TPMS_ATTEST", "sizeofSelect " + std::to_string(size) + " exceeds 4");
    std::span<const uint8_t> bitmap;
    TPM_TRY(bitmap, r.take(size, "TPMS_PCR_SELECTION.pcrSelect"));
    for (uint32_t byte = 0; byte < size; ++byte) {
      for (uint32_t bit = 0; bit < 8; ++bit) {
        if ((bitmap[byte] >> bit) & 1u) sel.pcrs.push_back(byte * 8 + bit);
      }
    }
    out.push_back(std::move(sel));
  }
  return out;
}

// TPMT_SYM_DEF_OBJECT.
expected<void> skip_sym_def(be_reader& r) {
  uint16_t alg = 0;
  TPM_TRY(alg, r.u16("symmetric.algorithm"));
  if (alg == tpm_alg_null) return ok();
  auto bits = r.u16("symmetric.keyBits");
  if (!bits) return bits.error();
  auto mode = r.u16("symmetric.mode");
  if (!mode) return mode.error();
  return ok();
}

// A signing scheme: alg, and unless null a hash (ECDAA also a count).
expected<void> read_scheme(be_reader& r, uint16_t& scheme, uint16_t& hash) {
  TPM_TRY(scheme, r.u16("scheme"));
  hash = 0;
  if (scheme == tpm_alg_null) return ok();
  TPM_TRY(hash, r.u16("scheme.hashAlg"));
  if (scheme == 0x001A) {  // TPM_ALG_ECDAA: + count
    auto c = r.u16("scheme.count");
    if (!c) return c.error();
  }
  return ok();
}

expected<ossl::evp_pkey> rsa_key(std::span<const uint8_t> n, uint32_t e) {
  ossl::bignum bn_n{BN_bin2bn(n.data(), static_cast<int>(n.size()), nullptr)};
  ossl::bignum bn_e{BN_new()};
  if (!bn_n || !bn_e || BN_set_word(bn_e.get(), e == 0 ? 65537 : e) != 1) {
    return make_error(errc::crypto_failed, "RSA key: " + ossl::last_error());
  }
  c_handle<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free> bld{OSSL_PARAM_BLD_new()};
  if (!bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1) {
    return make_error(errc::crypto_failed, "RSA key: " + ossl::last_error());
  }
  c_handle<OSSL_PARAM, OSSL_PARAM_free> params{OSSL_PARAM_BLD_to_param(bld.get())};
  c_handle<EVP_PKEY_CTX, EVP_PKEY_CTX_free> ctx{EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr)};
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    return malformed("TPM2B_PUBLIC", "bad RSA public key: " + ossl::last_error());
  }
  return ossl::evp_pkey{raw};
}

expected<ossl::evp_pkey> ec_key(std::span<const uint8_t> x, std::span<const uint8_t> y) {
  if (x.size() > 32 || y.size() > 32)
    return malformed("TPM2B_PUBLIC", "P-256 coordinate longer than 32 bytes");
  bytes point(65, 0);
  point[0] = 0x04;
  std::copy(x.begin(), x.end(), point.begin() + 1 + (32 - static_cast<long>(x.size())));
  std::copy(y.begin(), y.end(), point.begin() + 33 + (32 - static_cast<long>(y.size())));
  c_handle<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free> bld{OSSL_PARAM_BLD_new()};
  if (!bld || OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) != 1) {
    return make_error(errc::crypto_failed, "EC key: " + ossl::last_error());
  }
  c_handle<OSSL_PARAM, OSSL_PARAM_free> params{OSSL_PARAM_BLD_to_param(bld.get())};
  c_handle<EVP_PKEY_CTX, EVP_PKEY_CTX_free> ctx{EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr)};
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    return malformed("TPM2B_PUBLIC", "bad P-256 point: " + ossl::last_error());
  }
  ossl::evp_pkey key{raw};
  // fromdata does not check that the point is on the curve.
  c_handle<EVP_PKEY_CTX, EVP_PKEY_CTX_free> check{EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr)};
  if (!check || EVP_PKEY_public_check(check.get()) != 1) {
    return malformed("TPM2B_PUBLIC", "P-256 point is not on the curve: " + ossl::last_error());
  }
  return key;
}

bytes spki_of(EVP_PKEY* key) {
  int n = i2d_PUBKEY(key, nullptr);
  if (n <= 0) return {};
  bytes out(static_cast<std::size_t>(n));
  unsigned char* p = out.data();
  i2d_PUBKEY(key, &p);
  return out;
}

expected<ossl::evp_pkey> key_from_spki(std::span<const uint8_t> der) {
  const unsigned char* p = der.data();
  ossl::evp_pkey key{d2i_PUBKEY(nullptr, &p, static_cast<long>(der.size()))};
  if (!key || p != der.data() + der.size()) {
    ERR_clear_error();
    return malformed("AK public key", "neither a TPM2B_PUBLIC nor a DER SubjectPublicKeyInfo");
  }
  return key;
}

// DER ECDSA-Sig-Value from big-endian r and s.
expected<bytes> ecdsa_der(const bytes& r, const bytes& s) {
  ossl::ecdsa_sig sig{ECDSA_SIG_new()};
  BIGNUM* br = BN_bin2bn(r.data(), static_cast<int>(r.size()), nullptr);
  BIGNUM* bs = BN_bin2bn(s.data(), static_cast<int>(s.size()), nullptr);
  if (!sig || br == nullptr || bs == nullptr || ECDSA_SIG_set0(sig.get(), br, bs) != 1) {
    BN_free(br);
    BN_free(bs);
    return make_error(errc::crypto_failed, "ECDSA signature: " + ossl::last_error());
  }
  int n = i2d_ECDSA_SIG(sig.get(), nullptr);
  if (n <= 0) return make_error(errc::crypto_failed, "ECDSA signature: " + ossl::last_error());
  bytes out(static_cast<std::size_t>(n));
  unsigned char* p = out.data();
  i2d_ECDSA_SIG(sig.get(), &p);
  return out;
}

}  // namespace

expected<tpm_attest> parse_tpm_attest(std::span<const uint8_t> in) {
  if (in.size() < 4) return malformed("TPM2B_ATTEST", "truncated (" + std::to_string(in.size()) + " bytes)");
  std::span<const uint8_t> body = in;
  uint32_t lead = (uint32_t{in[0]} << 24) | (uint32_t{in[1]} << 16) | (uint32_t{in[2]} << 8) | in[3];
  if (lead != tpm_generated_value) {
    std::size_t size = (std::size_t{in[0]} << 8) | in[1];
    if (size != in.size() - 2) {
      return malformed("TPM2B_ATTEST", "size field " + std::to_string(size) + " but " +
                                           std::to_string(in.size() - 2) + " bytes follow");
    }
    body = in.subspan(2);
  }
  be_reader r(body, "TPMS_ATTEST");
  tpm_attest a;
  TPM_TRY(a.magic, r.u32("magic"));
  if (a.magic != tpm_generated_value) return malformed("TPMS_ATTEST", "magic is not TPM_GENERATED_VALUE");
  TPM_TRY(a.type, r.u16("type"));
  if (a.type != tpm_st_attest_quote) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "type 0x%04x is not TPM_ST_ATTEST_QUOTE", a.type);
    return malformed("TPMS_ATTEST", buf);
  }
  TPM_TRY(a.qualified_signer, r.tpm2b("qualifiedSigner", 2 + 64));
  TPM_TRY(a.extra_data, r.tpm2b("extraData", 64));
  TPM_TRY(a.clock, r.u64("clockInfo.clock"));
  TPM_TRY(a.reset_count, r.u32("clockInfo.resetCount"));
  TPM_TRY(a.restart_count, r.u32("clockInfo.restartCount"));
  uint8_t safe = 0;
  TPM_TRY(safe, r.u8("clockInfo.safe"));
  if (safe > 1) return malformed("TPMS_ATTEST", "clockInfo.safe is not a TPMI_YES_NO");
  a.safe = safe == 1;
  TPM_TRY(a.firmware_version, r.u64("firmwareVersion"));
  TPM_TRY(a.pcr_select, read_pcr_selection(r));
  TPM_TRY(a.pcr_digest, r.tpm2b("pcrDigest", 64));
  if (auto f = r.finish(); !f) return f.error();
  a.body.assign(body.begin(), body.end());
  return a;
}

expected<tpm_signature> parse_tpm_signature(std::span<const uint8_t> in) {
  be_reader r(in, "TPMT_SIGNATURE");
  tpm_signature s;
  TPM_TRY(s.sig_alg, r.u16("sigAlg"));
  switch (s.sig_alg) {
    case tpm_alg_rsassa:
    case tpm_alg_rsapss: {
      TPM_TRY(s.hash_alg, r.u16("hash"));
      TPM_TRY(s.rsa_sig, r.tpm2b("sig", 512));
      if (s.rsa_sig.empty()) return malformed("TPMT_SIGNATURE", "empty RSA signature");
      break;
    }
    case tpm_alg_ecdsa: {
      TPM_TRY(s.hash_alg, r.u16("hash"));
      TPM_TRY(s.ecdsa_r, r.tpm2b("signatureR", 66));
      TPM_TRY(s.ecdsa_s, r.tpm2b("signatureS", 66));
      break;
    }
    default:
      return malformed("TPMT_SIGNATURE", "unsupported sigAlg " + alg_name(s.sig_alg));
  }
  if (auto f = r.finish(); !f) return f.error();
  return s;
}

expected<tpm_public> parse_tpm_public(std::span<const uint8_t> in) {
  if (in.size() < 2) return malformed("TPM2B_PUBLIC", "truncated");
  std::size_t size = (std::size_t{in[0]} << 8) | in[1];
  if (size != in.size() - 2) {
    return malformed("TPM2B_PUBLIC", "size field " + std::to_string(size) + " but " +
                                         std::to_string(in.size() - 2) + " bytes follow");
  }
  auto body = in.subspan(2);
  be_reader r(body, "TPM2B_PUBLIC");
  tpm_public p;
  TPM_TRY(p.type, r.u16("type"));
  TPM_TRY(p.name_alg, r.u16("nameAlg"));
  TPM_TRY(p.attributes, r.u32("objectAttributes"));
  bytes policy;
  TPM_TRY(policy, r.tpm2b("authPolicy", 64));
  ossl::evp_pkey key;
  if (p.type == tpm_alg_rsa) {
    if (auto s = skip_sym_def(r); !s) return s.error();
    if (auto s = read_scheme(r, p.scheme, p.scheme_hash); !s) return s.error();
    uint16_t bits = 0;
    uint32_t exponent = 0;
    TPM_TRY(bits, r.u16("keyBits"));
    TPM_TRY(exponent, r.u32("exponent"));
    bytes n;
    TPM_TRY(n, r.tpm2b("unique.rsa", 512));
    if (bits < 2048 || bits > 4096 || n.size() * 8 != bits) {
      return malformed("TPM2B_PUBLIC", "RSA modulus of " + std::to_string(n.size() * 8) + " bits (keyBits " +
                                           std::to_string(bits) + "); 2048..4096 supported");
    }
    TPM_TRY(key, rsa_key(n, exponent));
  } else if (p.type == tpm_alg_ecc) {
    if (auto s = skip_sym_def(r); !s) return s.error();
    if (auto s = read_scheme(r, p.scheme, p.scheme_hash); !s) return s.error();
    uint16_t curve = 0;
    TPM_TRY(curve, r.u16("curveID"));
    uint16_t kdf = 0;
    uint16_t kdf_hash = 0;
    if (auto s = read_scheme(r, kdf, kdf_hash); !s) return s.error();
    bytes x;
    bytes y;
    TPM_TRY(x, r.tpm2b("unique.ecc.x", 66));
    TPM_TRY(y, r.tpm2b("unique.ecc.y", 66));
    if (curve != tpm_ecc_nist_p256) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "unsupported ECC curve 0x%04x (P-256 only)", curve);
      return malformed("TPM2B_PUBLIC", buf);
    }
    TPM_TRY(key, ec_key(x, y));
  } else {
    return malformed("TPM2B_PUBLIC", "unsupported key type " + alg_name(p.type) + " (RSA or ECC only)");
  }
  if (auto f = r.finish(); !f) return f.error();
  p.spki_der = spki_of(key.get());
  if (p.spki_der.empty()) return make_error(errc::crypto_failed, "TPM2B_PUBLIC: cannot encode the key");
  if (p.name_alg == tpm_alg_sha256) {
    p.name = {0x00, 0x0B};
    auto h = sha256(body);
    p.name.insert(p.name.end(), h.begin(), h.end());
  }
  return p;
}

expected<std::vector<uint8_t>> tpm_pcr_digest(std::span<const tpm_pcr_selection> selection,
                                              const tpm_pcr_values& values) {
  bytes concat;
  for (const auto& sel : selection) {
    if (sel.hash_alg != tpm_alg_sha256) {
      if (sel.pcrs.empty()) continue;  // an empty selection contributes nothing
      return make_error(errc::invalid_request,
                        "PCR bank " + alg_name(sel.hash_alg) + " is not supported (sha256 only)");
    }
    for (auto i : sel.pcrs) {
      auto it = values.find(i);
      if (it == values.end()) {
        return make_error(errc::invalid_request,
                          "pcr[" + std::to_string(i) + "] is quoted but no value was supplied");
      }
      if (it->second.size() != SHA256_DIGEST_LENGTH) {
        return make_error(errc::invalid_request, "pcr[" + std::to_string(i) + "] value is " +
                                                     std::to_string(it->second.size()) + " bytes, not 32");
      }
      concat.insert(concat.end(), it->second.begin(), it->second.end());
    }
  }
  return sha256(concat);
}

expected<tpm_attest> verify_tpm_quote(std::span<const uint8_t> attest, std::span<const uint8_t> signature,
                                      std::span<const uint8_t> ak_public, std::span<const uint8_t> nonce,
                                      const tpm_pcr_values& pcrs) {
  auto a = parse_tpm_attest(attest);
  if (!a) return a.error();
  auto sig = parse_tpm_signature(signature);
  if (!sig) return sig.error();
  if (ak_public.empty() || ak_public.size() > 4096) {
    return malformed("AK public key", "size " + std::to_string(ak_public.size()) + " out of range");
  }

  // The AK: TPM2B_PUBLIC starts with its own size; anything else is tried as DER SPKI.
  ossl::evp_pkey key;
  std::optional<tpm_public> pub;
  bool is_tpm2b =
      ak_public.size() >= 2 && ((std::size_t{ak_public[0]} << 8) | ak_public[1]) == ak_public.size() - 2;
  if (is_tpm2b) {
    auto p = parse_tpm_public(ak_public);
    if (!p) return p.error();
    if (!p->restricted_signing()) {
      return failed("AK is not a restricted signing key (objectAttributes lack restricted|sign)");
    }
    auto k = key_from_spki(p->spki_der);
    if (!k) return k.error();
    key = std::move(*k);
    pub = std::move(*p);
  } else {
    auto k = key_from_spki(ak_public);
    if (!k) return k.error();
    key = std::move(*k);
  }

  // Signature over TPMS_ATTEST.
  if (sig->hash_alg != tpm_alg_sha256) {
    return failed("quote signature hash " + alg_name(sig->hash_alg) + " is not supported (sha256 only)");
  }
  int key_type = EVP_PKEY_get_base_id(key.get());
  bool rsa = sig->sig_alg == tpm_alg_rsassa || sig->sig_alg == tpm_alg_rsapss;
  if (rsa ? key_type != EVP_PKEY_RSA : key_type != EVP_PKEY_EC) {
    return failed("quote signature algorithm " + alg_name(sig->sig_alg) + " does not match the AK key type");
  }
  if (pub && pub->scheme != tpm_alg_null && pub->scheme != sig->sig_alg) {
    return failed("quote signature algorithm " + alg_name(sig->sig_alg) + " differs from the AK scheme " +
                  alg_name(pub->scheme));
  }
  bytes sig_bytes;
  if (rsa) {
    sig_bytes = sig->rsa_sig;
  } else {
    auto der = ecdsa_der(sig->ecdsa_r, sig->ecdsa_s);
    if (!der) return der.error();
    sig_bytes = std::move(*der);
  }
  ossl::evp_md_ctx md{EVP_MD_CTX_new()};
  EVP_PKEY_CTX* pctx = nullptr;
  if (!md || EVP_DigestVerifyInit(md.get(), &pctx, EVP_sha256(), nullptr, key.get()) != 1) {
    return make_error(errc::crypto_failed, "quote signature: " + ossl::last_error());
  }
  if (rsa) {
    int pad = sig->sig_alg == tpm_alg_rsapss ? RSA_PKCS1_PSS_PADDING : RSA_PKCS1_PADDING;
    if (EVP_PKEY_CTX_set_rsa_padding(pctx, pad) != 1 ||
        (pad == RSA_PKCS1_PSS_PADDING && EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_AUTO) != 1)) {
      return make_error(errc::crypto_failed, "quote signature: " + ossl::last_error());
    }
  }
  int v = EVP_DigestVerify(md.get(), sig_bytes.data(), sig_bytes.size(), a->body.data(), a->body.size());
  ERR_clear_error();
  if (v != 1) return failed("quote signature does not verify with the AK");

  // Freshness.
  if (!std::equal(a->extra_data.begin(), a->extra_data.end(), nonce.begin(), nonce.end())) {
    return failed("nonce mismatch: quote extraData " + short_hex(a->extra_data) + ", expected " +
                  short_hex(nonce));
  }

  // PCR values.
  auto digest = tpm_pcr_digest(a->pcr_select, pcrs);
  if (!digest) return digest.error();
  if (*digest != a->pcr_digest) {
    return failed("pcrDigest mismatch: the supplied PCR values hash to " + to_hex(*digest) +
                  ", the quote says " + short_hex(a->pcr_digest));
  }
  return a;
}

expected<tpm_policy> load_tpm_policy_json(std::string_view text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return make_error(errc::invalid_request, "tpm policy: not a JSON object");
  tpm_policy p;
  for (const auto& [key, value] : j.items()) {
    if (key != "pcrs") return make_error(errc::invalid_request, "tpm policy: unknown key '" + key + "'");
    if (!value.is_object()) return make_error(errc::invalid_request, "tpm policy: 'pcrs' must be an object");
    for (const auto& [idx, hex] : value.items()) {
      uint32_t i = 0;
      auto [ptr, ec] = std::from_chars(idx.data(), idx.data() + idx.size(), i);
      if (ec != std::errc{} || ptr != idx.data() + idx.size() || idx.empty() || i >= tpm_pcr_count) {
        return make_error(errc::invalid_request, "tpm policy: bad PCR index '" + idx + "' (0..23)");
      }
      if (!hex.is_string())
        return make_error(errc::invalid_request, "tpm policy: pcrs." + idx + " must be hex");
      auto v = from_hex(hex.get<std::string>());
      if (!v || v->size() != SHA256_DIGEST_LENGTH) {
        return make_error(errc::invalid_request, "tpm policy: pcrs." + idx + " must be 64 hex digits");
      }
      p.pcrs[i] = std::move(*v);
    }
  }
  return p;
}

expected<void> check_tpm_policy(const tpm_attest& quote, const tpm_pcr_values& pcrs,
                                const tpm_policy& policy) {
  std::set<uint32_t> quoted;
  for (const auto& sel : quote.pcr_select) {
    if (sel.hash_alg == tpm_alg_sha256) quoted.insert(sel.pcrs.begin(), sel.pcrs.end());
  }
  for (const auto& [i, want] : policy.pcrs) {
    auto name = "pcr[" + std::to_string(i) + "]";
    if (quoted.count(i) == 0) return failed(name + " is required by the policy but not quoted");
    auto it = pcrs.find(i);
    if (it == pcrs.end()) return failed(name + " has no value");
    if (it->second != want) {
      return failed(name + ": got " + short_hex(it->second) + ", expected " + short_hex(want));
    }
  }
  return ok();
}

}  // namespace cove::attest
