#include "cove/agent/eat.hpp"

#include <openssl/bn.h>
#include <openssl/ecdsa.h>

#include <string_view>

#include "cove/c_handle.hpp"

namespace cove::agent {

namespace {

using bytes = std::vector<uint8_t>;

/// A minimal CBOR (RFC 8949) writer: definite lengths only, shortest integer forms.
class cbor_writer {
 public:
  void head(uint8_t major, uint64_t v) {
    uint8_t m = static_cast<uint8_t>(major << 5);
    if (v < 24) {
      out_.push_back(m | static_cast<uint8_t>(v));
    } else if (v <= 0xff) {
      out_.push_back(m | 24);
      out_.push_back(static_cast<uint8_t>(v));
    } else if (v <= 0xffff) {
      out_.push_back(m | 25);
      be(v, 2);
    } else if (v <= 0xffffffffull) {
      out_.push_back(m | 26);
      be(v, 4);
    } else {
      out_.push_back(m | 27);
      be(v, 8);
    }
  }
  void integer(int64_t v) {
    if (v >= 0) {
      head(0, static_cast<uint64_t>(v));
    } else {
      head(1, static_cast<uint64_t>(-(v + 1)));
    }
  }
  void byte_string(std::span<const uint8_t> b) {
    head(2, b.size());
    out_.insert(out_.end(), b.begin(), b.end());
  }
  void text(std::string_view s) {
    head(3, s.size());
    out_.insert(out_.end(), s.begin(), s.end());
  }
  void array(size_t n) { head(4, n); }
  void map(size_t n) { head(5, n); }
  void tag(uint64_t t) { head(6, t); }
  bytes take() { return std::move(out_); }

 private:
  void be(uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  bytes out_;
};

using ecdsa_sig = c_handle<ECDSA_SIG, ECDSA_SIG_free>;

/// DER ECDSA signature -> COSE's fixed-width r || s (32 + 32 bytes for P-256).
expected<bytes> der_to_raw(const bytes& der) {
  const unsigned char* p = der.data();
  ecdsa_sig sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())));
  if (!sig) return make_error(errc::crypto_failed, "ECDSA signature is not DER");
  bytes raw(64);
  if (BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), raw.data(), 32) != 32 ||
      BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), raw.data() + 32, 32) != 32)
    return make_error(errc::crypto_failed, "ECDSA signature does not fit P-256");
  return raw;
}

}  // namespace

bytes eat_payload_cbor(const eat_claims& c) {
  cbor_writer w;
  size_t n = 7;  // iss, exp, iat, nonce, ueid, dbgstat, measurements
  if (c.oem_id != 0) ++n;
  if (!c.hw_model.empty()) ++n;
  if (!c.platform_type.empty()) ++n;
  if (!c.raw_report.empty()) ++n;
  n += c.text_extensions.size();
  w.map(n);
  w.integer(1);
  w.text(c.issuer);
  w.integer(4);
  w.integer(c.expires);
  w.integer(6);
  w.integer(c.issued_at);
  w.integer(10);
  w.byte_string(c.nonce);
  w.integer(256);
  w.byte_string(c.ueid);
  if (c.oem_id != 0) {
    w.integer(258);
    w.integer(c.oem_id);
  }
  if (!c.hw_model.empty()) {
    w.integer(259);
    w.byte_string(c.hw_model);
  }
  w.integer(263);
  w.integer(c.debug_status);
  w.integer(265);
  w.byte_string(c.measurements);
  if (!c.platform_type.empty()) {
    w.text("platform_type");
    w.text(c.platform_type);
  }
  if (!c.raw_report.empty()) {
    w.text("raw_report");
    w.byte_string(c.raw_report);
  }
  for (const auto& [k, v] : c.text_extensions) {
    w.text(k);
    w.text(v);
  }
  return w.take();
}

expected<bytes> make_eat_token(const eat_claims& c, const crypto::private_key& key) {
  if (key.type() != crypto::key_type::ecdsa_p256)
    return make_error(errc::invalid_request, "EAT signing key must be ECDSA P-256 (ES256)");
  cbor_writer prot;
  prot.map(1);
  prot.integer(1);   // alg
  prot.integer(-7);  // ES256
  bytes protected_header = prot.take();
  bytes payload = eat_payload_cbor(c);

  cbor_writer tbs;  // Sig_structure = ["Signature1", protected, external_aad, payload]
  tbs.array(4);
  tbs.text("Signature1");
  tbs.byte_string(protected_header);
  tbs.byte_string({});
  tbs.byte_string(payload);
  auto der = key.sign(tbs.take());
  if (!der) return der.error();
  auto raw = der_to_raw(*der);
  if (!raw) return raw.error();

  cbor_writer w;
  w.tag(18);
  w.array(4);
  w.byte_string(protected_header);
  w.map(1);
  w.integer(4);  // kid
  w.byte_string({reinterpret_cast<const uint8_t*>(c.issuer.data()), c.issuer.size()});
  w.byte_string(payload);
  w.byte_string(*raw);
  return w.take();
}

}  // namespace cove::agent
