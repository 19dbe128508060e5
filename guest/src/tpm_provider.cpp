#include "cove/agent/tpm_provider.hpp"

#include <openssl/sha.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include <algorithm>
#include <chrono>
#include <cstring>

namespace cove::agent {

namespace {

error tss_error(std::string_view what, TSS2_RC rc) {
  const char* text = Tss2_RC_Decode(rc);
  return make_error(errc::unavailable,
                    "tpm: " + std::string(what) + ": " + (text != nullptr ? text : "error"));
}

// Owns memory returned by ESAPI (Esys_Free).
template <class T>
struct esys_ptr {
  T* p = nullptr;
  esys_ptr() = default;
  esys_ptr(const esys_ptr&) = delete;
  esys_ptr& operator=(const esys_ptr&) = delete;
  ~esys_ptr() { Esys_Free(p); }
  T** out() { return &p; }
  T* operator->() const { return p; }
};

// A TPMS_PCR_SELECTION of the sha256 bank.
TPML_PCR_SELECTION sha256_selection(std::span<const uint32_t> pcrs) {
  TPML_PCR_SELECTION sel{};
  sel.count = 1;
  sel.pcrSelections[0].hash = TPM2_ALG_SHA256;
  sel.pcrSelections[0].sizeofSelect = 3;
  for (auto i : pcrs) sel.pcrSelections[0].pcrSelect[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
  return sel;
}

bool selection_empty(const TPMS_PCR_SELECTION& s) {
  return std::all_of(s.pcrSelect, s.pcrSelect + s.sizeofSelect, [](uint8_t b) { return b == 0; });
}

template <class T, class F>
expected<std::vector<uint8_t>> marshal(const T& v, F fn, std::string_view what) {
  std::vector<uint8_t> buf(sizeof(T) + 16);
  size_t off = 0;
  TSS2_RC rc = fn(&v, buf.data(), buf.size(), &off);
  if (rc != TSS2_RC_SUCCESS) return tss_error(std::string("marshal ") + std::string(what), rc);
  buf.resize(off);
  return buf;
}

TPM2B_PUBLIC storage_template() {
  TPM2B_PUBLIC t{};
  auto& p = t.publicArea;
  p.type = TPM2_ALG_ECC;
  p.nameAlg = TPM2_ALG_SHA256;
  p.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
                       TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
  p.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_AES;
  p.parameters.eccDetail.symmetric.keyBits.aes = 128;
  p.parameters.eccDetail.symmetric.mode.aes = TPM2_ALG_CFB;
  p.parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
  p.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
  p.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
  return t;
}

TPM2B_PUBLIC ak_template(tpm_ak_type type) {
  TPM2B_PUBLIC t{};
  auto& p = t.publicArea;
  p.nameAlg = TPM2_ALG_SHA256;
  p.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
                       TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT;
  if (type == tpm_ak_type::ecc_p256) {
    p.type = TPM2_ALG_ECC;
    p.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
    p.parameters.eccDetail.scheme.scheme = TPM2_ALG_ECDSA;
    p.parameters.eccDetail.scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
    p.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
    p.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
  } else {
    p.type = TPM2_ALG_RSA;
    p.parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_NULL;
    p.parameters.rsaDetail.scheme.scheme = TPM2_ALG_RSASSA;
    p.parameters.rsaDetail.scheme.details.rsassa.hashAlg = TPM2_ALG_SHA256;
    p.parameters.rsaDetail.keyBits = 2048;
    p.parameters.rsaDetail.exponent = 0;
  }
  return t;
}

}  // namespace

struct tpm_provider::impl {
  TSS2_TCTI_CONTEXT* tcti = nullptr;
  ESYS_CONTEXT* esys = nullptr;
  ESYS_TR ak = ESYS_TR_NONE;
  tpm_ak_public ak_pub;
  std::string profile;
  std::chrono::steady_clock::time_point mark = std::chrono::steady_clock::now();

  void step(std::string_view name) {
    auto now = std::chrono::steady_clock::now();
    if (!profile.empty()) profile += ", ";
    profile += std::string(name) + " " +
               std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now - mark).count()) +
               " ms";
    mark = now;
  }

  impl() = default;
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;
  ~impl() {
    if (esys != nullptr && ak != ESYS_TR_NONE) Esys_FlushContext(esys, ak);
    if (esys != nullptr) Esys_Finalize(&esys);
    if (tcti != nullptr) Tss2_TctiLdr_Finalize(&tcti);
  }
};

tpm_provider::tpm_provider(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
tpm_provider::tpm_provider(tpm_provider&&) noexcept = default;
tpm_provider& tpm_provider::operator=(tpm_provider&&) noexcept = default;
tpm_provider::~tpm_provider() = default;

const tpm_ak_public& tpm_provider::ak_public() const noexcept {
  return impl_->ak_pub;
}

const std::string& tpm_provider::open_profile() const noexcept {
  return impl_->profile;
}

expected<tpm_provider> tpm_provider::open(const std::string& tcti_conf, tpm_ak_type ak_type) {
  auto d = std::make_unique<impl>();
  TSS2_RC rc = Tss2_TctiLdr_Initialize(tcti_conf.empty() ? nullptr : tcti_conf.c_str(), &d->tcti);
  if (rc != TSS2_RC_SUCCESS) return tss_error("TCTI '" + tcti_conf + "'", rc);
  rc = Esys_Initialize(&d->esys, d->tcti, nullptr);
  if (rc != TSS2_RC_SUCCESS) return tss_error("Esys_Initialize", rc);
  d->step("tcti+esys");
  rc = Esys_Startup(d->esys, TPM2_SU_CLEAR);
  if (rc != TSS2_RC_SUCCESS && rc != TPM2_RC_INITIALIZE) return tss_error("TPM2_Startup", rc);
  d->step("startup");

  // Storage primary (endorsement hierarchy, empty auth), then the AK under it.
  TPM2B_SENSITIVE_CREATE sensitive{};
  TPM2B_DATA outside{};
  TPML_PCR_SELECTION creation_pcrs{};
  auto primary_tpl = storage_template();
  ESYS_TR primary = ESYS_TR_NONE;
  {
    esys_ptr<TPM2B_PUBLIC> pub;
    esys_ptr<TPM2B_CREATION_DATA> cdata;
    esys_ptr<TPM2B_DIGEST> chash;
    esys_ptr<TPMT_TK_CREATION> ticket;
    rc = Esys_CreatePrimary(d->esys, ESYS_TR_RH_ENDORSEMENT, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                            &sensitive, &primary_tpl, &outside, &creation_pcrs, &primary, pub.out(),
                            cdata.out(), chash.out(), ticket.out());
    if (rc != TSS2_RC_SUCCESS) return tss_error("CreatePrimary (storage key)", rc);
  }
  d->step("storage primary");
  auto ak_tpl = ak_template(ak_type);
  esys_ptr<TPM2B_PRIVATE> priv;
  esys_ptr<TPM2B_PUBLIC> pub;
  {
    esys_ptr<TPM2B_CREATION_DATA> cdata;
    esys_ptr<TPM2B_DIGEST> chash;
    esys_ptr<TPMT_TK_CREATION> ticket;
    rc = Esys_Create(d->esys, primary, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sensitive, &ak_tpl,
                     &outside, &creation_pcrs, priv.out(), pub.out(), cdata.out(), chash.out(), ticket.out());
  }
  d->step("create AK");
  if (rc == TSS2_RC_SUCCESS) {
    rc = Esys_Load(d->esys, primary, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, priv.p, pub.p, &d->ak);
  }
  d->step("load AK");
  Esys_FlushContext(d->esys, primary);
  d->step("flush");
  if (rc != TSS2_RC_SUCCESS) return tss_error("Create/Load (attestation key)", rc);

  auto m = marshal(*pub.p, Tss2_MU_TPM2B_PUBLIC_Marshal, "TPM2B_PUBLIC");
  if (!m) return m.error();
  auto parsed = attest::parse_tpm_public(*m);
  if (!parsed) return make_error(errc::internal, "tpm: AK public: " + parsed.error().message);
  d->ak_pub.tpm2b_public = std::move(*m);
  d->ak_pub.spki_der = std::move(parsed->spki_der);
  return tpm_provider(std::move(d));
}

expected<attest::tpm_pcr_values> tpm_provider::read_pcrs(std::span<const uint32_t> pcrs) {
  for (auto i : pcrs) {
    if (i >= attest::tpm_pcr_count)
      return make_error(errc::invalid_request, "tpm: no PCR " + std::to_string(i));
  }
  attest::tpm_pcr_values out;
  auto want = sha256_selection(pcrs);
  // TPM2_PCR_Read returns at most 8 digests per call: repeat for what is left.
  while (!selection_empty(want.pcrSelections[0])) {
    UINT32 counter = 0;
    esys_ptr<TPML_PCR_SELECTION> got;
    esys_ptr<TPML_DIGEST> values;
    TSS2_RC rc = Esys_PCR_Read(impl_->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &want, &counter,
                               got.out(), values.out());
    if (rc != TSS2_RC_SUCCESS) return tss_error("PCR_Read", rc);
    std::size_t k = 0;
    bool progress = false;
    for (UINT32 s = 0; s < got->count; ++s) {
      const auto& sel = got->pcrSelections[s];
      if (sel.hash != TPM2_ALG_SHA256) continue;
      for (uint32_t i = 0; i < 8u * sel.sizeofSelect; ++i) {
        if (((sel.pcrSelect[i / 8] >> (i % 8)) & 1u) == 0) continue;
        if (k >= values->count) return make_error(errc::internal, "tpm: PCR_Read returned too few digests");
        const auto& v = values->digests[k++];
        out[i].assign(v.buffer, v.buffer + v.size);
        want.pcrSelections[0].pcrSelect[i / 8] &= static_cast<uint8_t>(~(1u << (i % 8)));
        progress = true;
      }
    }
    if (!progress) return make_error(errc::unavailable, "tpm: the sha256 PCR bank is not allocated");
  }
  return out;
}

expected<tpm_quote_result> tpm_provider::quote(std::span<const uint8_t> nonce,
                                               std::span<const uint32_t> pcrs) {
  if (nonce.size() > 64) return make_error(errc::invalid_request, "tpm: nonce longer than 64 bytes");
  if (pcrs.empty()) return make_error(errc::invalid_request, "tpm: empty PCR selection");
  auto values = read_pcrs(pcrs);
  if (!values) return values.error();
  TPM2B_DATA qualifying{};
  qualifying.size = static_cast<UINT16>(nonce.size());
  std::copy(nonce.begin(), nonce.end(), qualifying.buffer);
  TPMT_SIG_SCHEME scheme{};
  scheme.scheme = TPM2_ALG_NULL;  // the AK's own scheme
  auto sel = sha256_selection(pcrs);
  esys_ptr<TPM2B_ATTEST> quoted;
  esys_ptr<TPMT_SIGNATURE> sig;
  TSS2_RC rc = Esys_Quote(impl_->esys, impl_->ak, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &qualifying,
                          &scheme, &sel, quoted.out(), sig.out());
  if (rc != TSS2_RC_SUCCESS) return tss_error("Quote", rc);
  auto a = marshal(*quoted.p, Tss2_MU_TPM2B_ATTEST_Marshal, "TPM2B_ATTEST");
  if (!a) return a.error();
  auto s = marshal(*sig.p, Tss2_MU_TPMT_SIGNATURE_Marshal, "TPMT_SIGNATURE");
  if (!s) return s.error();
  return tpm_quote_result{std::move(*a), std::move(*s), std::move(*values)};
}

expected<std::vector<uint8_t>> tpm_provider::extend(uint32_t pcr, std::span<const uint8_t> data) {
  if (pcr >= attest::tpm_pcr_count)
    return make_error(errc::invalid_request, "tpm: no PCR " + std::to_string(pcr));
  TPML_DIGEST_VALUES digests{};
  digests.count = 1;
  digests.digests[0].hashAlg = TPM2_ALG_SHA256;
  SHA256(data.data(), data.size(), digests.digests[0].digest.sha256);
  TSS2_RC rc = Esys_PCR_Extend(impl_->esys, static_cast<ESYS_TR>(ESYS_TR_PCR0 + pcr), ESYS_TR_PASSWORD,
                               ESYS_TR_NONE, ESYS_TR_NONE, &digests);
  if (rc != TSS2_RC_SUCCESS) return tss_error("PCR_Extend " + std::to_string(pcr), rc);
  return std::vector<uint8_t>(digests.digests[0].digest.sha256,
                              digests.digests[0].digest.sha256 + SHA256_DIGEST_LENGTH);
}

}  // namespace cove::agent
