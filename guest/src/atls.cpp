#include "cove/agent/atls.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstring>
#include <string_view>

#include "cove/c_handle.hpp"
#include "cove/crypto/encoding.hpp"

namespace cove::agent::atls {

namespace {

using md_ctx = c_handle<EVP_MD_CTX, EVP_MD_CTX_free>;
using pkey_handle = c_handle<EVP_PKEY, EVP_PKEY_free>;
using x509_handle = c_handle<X509, X509_free>;

constexpr uint8_t hs_client_certificate_request = 17;
constexpr uint8_t hs_certificate = 11;
constexpr uint8_t hs_certificate_verify = 15;
constexpr uint8_t hs_finished = 20;
constexpr std::string_view label_hs_ctx = "EXPORTER-server authenticator handshake context";
constexpr std::string_view label_fin_key = "EXPORTER-server authenticator finished key";
constexpr std::string_view label_binding = "Attestation";

error bad(std::string what) {
  return make_error(errc::invalid_request, "attested TLS: " + std::move(what));
}

void put_u8(bytes& b, size_t v) {
  b.push_back(static_cast<uint8_t>(v));
}
void put_u16(bytes& b, size_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}
void put_u24(bytes& b, size_t v) {
  b.push_back(static_cast<uint8_t>(v >> 16));
  put_u16(b, v & 0xffff);
}
void put(bytes& b, std::span<const uint8_t> s) {
  b.insert(b.end(), s.begin(), s.end());
}

/// A bounds-checked reader over untrusted bytes.
struct reader {
  std::span<const uint8_t> s;
  bool ok = true;
  size_t n(size_t width) {
    if (!ok || s.size() < width) {
      ok = false;
      return 0;
    }
    size_t v = 0;
    for (size_t i = 0; i < width; ++i) v = (v << 8) | s[i];
    s = s.subspan(width);
    return v;
  }
  std::span<const uint8_t> take(size_t len) {
    if (!ok || s.size() < len) {
      ok = false;
      return {};
    }
    auto out = s.first(len);
    s = s.subspan(len);
    return out;
  }
  [[nodiscard]] bool done() const { return ok && s.empty(); }
};

/// The handshake message `type` at the front of `r` (1-byte type, 3-byte length), whole.
expected<std::span<const uint8_t>> handshake_message(reader& r, uint8_t type, const char* name) {
  auto start = r.s;
  if (r.n(1) != type) return bad(std::string("expected a ") + name + " message");
  size_t len = r.n(3);
  r.take(len);
  if (!r.ok) return bad(std::string(name) + ": truncated");
  return start.first(4 + len);
}

const EVP_MD* handshake_md(SSL* ssl) {
  const SSL_CIPHER* c = SSL_get_current_cipher(ssl);
  return c != nullptr ? SSL_CIPHER_get_handshake_digest(c) : nullptr;
}

expected<bytes> exporter(SSL* ssl, std::string_view label, std::span<const uint8_t> context, bool use_context,
                         size_t len) {
  bytes out(len);
  if (SSL_export_keying_material(ssl, out.data(), out.size(), label.data(), label.size(),
                                 context.empty() ? nullptr : context.data(), context.size(),
                                 use_context ? 1 : 0) != 1) {
    ERR_clear_error();
    return make_error(errc::crypto_failed, "attested TLS: TLS exporter failed");
  }
  return out;
}

bytes digest(const EVP_MD* md, std::initializer_list<std::span<const uint8_t>> parts) {
  md_ctx ctx(EVP_MD_CTX_new());
  EVP_DigestInit_ex(ctx.get(), md, nullptr);
  for (auto p : parts) EVP_DigestUpdate(ctx.get(), p.data(), p.size());
  bytes out(static_cast<size_t>(EVP_MD_get_size(md)));
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), out.data(), &len);
  return out;
}

bytes hmac(const EVP_MD* md, std::span<const uint8_t> key, std::span<const uint8_t> data) {
  bytes out(EVP_MAX_MD_SIZE);
  unsigned int len = 0;
  HMAC(md, key.data(), static_cast<int>(key.size()), data.data(), data.size(), out.data(), &len);
  out.resize(len);
  return out;
}

/// 64 spaces || "Exported Authenticator" || 0 || transcript hash (RFC 9261 §5.2.2).
bytes verify_content(std::span<const uint8_t> transcript_hash) {
  static constexpr char ctx[] = "Exported Authenticator";  // with its terminating 0
  bytes c(64 + sizeof ctx + transcript_hash.size(), 0x20);
  std::memcpy(c.data() + 64, ctx, sizeof ctx);
  if (!transcript_hash.empty())
    std::memcpy(c.data() + 64 + sizeof ctx, transcript_hash.data(), transcript_hash.size());
  return c;
}

expected<bytes> spki_der(X509* cert) {
  EVP_PKEY* pub = X509_get0_pubkey(cert);
  if (pub == nullptr) return bad("certificate without a public key");
  int len = i2d_PUBKEY(pub, nullptr);
  if (len <= 0) return bad("cannot encode the public key");
  bytes der(static_cast<size_t>(len));
  unsigned char* p = der.data();
  i2d_PUBKEY(pub, &p);
  return der;
}

struct binder {
  bytes exported;
  bytes aik_pub_hash;
  bytes binding;
  std::array<uint8_t, 64> report_data{};
  std::array<uint8_t, 32> nonce{};
};

expected<binder> make_binder(SSL* ssl, const EVP_MD* md, std::span<const uint8_t> context,
                             std::span<const uint8_t> spki) {
  binder b;
  auto exported = exporter(ssl, label_binding, context, true, 32);
  if (!exported) return exported.error();
  b.exported = std::move(*exported);
  b.aik_pub_hash = digest(md, {spki});
  b.binding = digest(md, {spki, b.exported});
  auto rd = digest(EVP_sha512(), {b.binding});
  auto n = digest(EVP_sha256(), {b.exported});
  std::copy(rd.begin(), rd.end(), b.report_data.begin());
  std::copy(n.begin(), n.end(), b.nonce.begin());
  return b;
}

/// The value of "key": "..." in our own flat JSON (the CMW object); empty if absent.
std::string json_string(std::string_view json, std::string_view key) {
  std::string needle = "\"" + std::string(key) + "\":\"";
  auto at = json.find(needle);
  if (at == std::string_view::npos) return {};
  auto start = at + needle.size();
  auto end = json.find('"', start);
  return end == std::string_view::npos ? std::string() : std::string(json.substr(start, end - start));
}

expected<void> ssl_read_all(SSL* ssl, uint8_t* out, size_t n) {
  while (n > 0) {
    size_t got = 0;
    if (SSL_read_ex(ssl, out, n, &got) != 1) {
      ERR_clear_error();
      return make_error(errc::unavailable,
                        "attested TLS: connection closed during the authenticator exchange");
    }
    out += got;
    n -= got;
  }
  return ok();
}

}  // namespace

expected<void> write_frame(SSL* ssl, uint8_t type, std::span<const uint8_t> payload) {
  if (payload.size() > max_frame) return bad("frame larger than 16 MiB");
  bytes f;
  f.reserve(5 + payload.size());
  put_u8(f, type);
  put_u16(f, (payload.size() >> 16) & 0xffff);
  put_u16(f, payload.size() & 0xffff);
  put(f, payload);
  size_t written = 0;
  if (SSL_write_ex(ssl, f.data(), f.size(), &written) != 1 || written != f.size()) {
    ERR_clear_error();
    return make_error(errc::unavailable, "attested TLS: cannot send a frame");
  }
  return ok();
}

expected<std::pair<uint8_t, bytes>> read_frame(SSL* ssl) {
  uint8_t head[5];
  if (auto r = ssl_read_all(ssl, head, sizeof head); !r) return r.error();
  size_t len = (size_t{head[1]} << 24) | (size_t{head[2]} << 16) | (size_t{head[3]} << 8) | head[4];
  if (head[0] == 0) return bad("frame type 0 is invalid");
  if (len > max_frame) return bad("frame larger than 16 MiB");
  bytes payload(len);
  if (auto r = ssl_read_all(ssl, payload.data(), len); !r) return r.error();
  return std::pair<uint8_t, bytes>{head[0], std::move(payload)};
}

bytes make_request(std::span<const uint8_t> context) {
  bytes exts;
  put_u16(exts, ext_signature_algorithms);
  put_u16(exts, 4);
  put_u16(exts, 2);
  put_u16(exts, scheme_ecdsa_p256_sha256);
  put_u16(exts, ext_cmw_attestation);
  put_u16(exts, 0);
  bytes body;
  put_u8(body, context.size());
  put(body, context);
  put_u16(body, exts.size());
  put(body, exts);
  bytes msg;
  put_u8(msg, hs_client_certificate_request);
  put_u24(msg, body.size());
  put(msg, body);
  return msg;
}

expected<authenticator_request> parse_request(std::span<const uint8_t> msg) {
  authenticator_request req;
  reader r{msg};
  if (r.n(1) != hs_client_certificate_request)
    return bad("the request is not a ClientCertificateRequest (17)");
  size_t len = r.n(3);
  if (!r.ok || r.s.size() != len) return bad("request length does not match");
  auto ctx = r.take(r.n(1));
  reader exts{r.take(r.n(2))};
  if (!r.done()) return bad("trailing bytes after the request");
  req.context.assign(ctx.begin(), ctx.end());
  while (exts.ok && !exts.s.empty()) {
    size_t type = exts.n(2);
    reader data{exts.take(exts.n(2))};
    if (!exts.ok) break;
    if (type == ext_signature_algorithms) {
      reader list{data.take(data.n(2))};
      if (!data.done() || list.s.size() % 2 != 0) return bad("malformed signature_algorithms");
      while (!list.s.empty()) req.schemes.push_back(static_cast<uint16_t>(list.n(2)));
    } else if (type == ext_cmw_attestation) {
      req.offers_attestation = true;
    }
  }
  if (!exts.ok) return bad("malformed request extensions");
  if (!req.offers_attestation) return bad("the request does not offer cmw_attestation (0xFF00)");
  req.raw.assign(msg.begin(), msg.end());
  return req;
}

expected<bytes> make_authenticator(SSL* ssl, const authenticator_request& req, X509* leaf, EVP_PKEY* key,
                                   const evidence_fn& evidence) {
  if (std::find(req.schemes.begin(), req.schemes.end(), scheme_ecdsa_p256_sha256) == req.schemes.end())
    return bad(
        "the client does not accept ecdsa_secp256r1_sha256 (0x0403), the only scheme this agent signs with");
  const EVP_MD* md = handshake_md(ssl);
  if (md == nullptr || SSL_version(ssl) != TLS1_3_VERSION) return bad("not a TLS 1.3 connection");
  size_t hlen = static_cast<size_t>(EVP_MD_get_size(md));
  auto hs_ctx = exporter(ssl, label_hs_ctx, {}, false, hlen);
  if (!hs_ctx) return hs_ctx.error();
  auto fin_key = exporter(ssl, label_fin_key, {}, false, hlen);
  if (!fin_key) return fin_key.error();
  auto spki = spki_der(leaf);
  if (!spki) return spki.error();
  auto b = make_binder(ssl, md, req.context, *spki);
  if (!b) return b.error();
  auto ev = evidence(b->report_data, b->nonce);
  if (!ev) return ev.error();

  std::string cmw = R"({"version":1,"media_type":"application/eat+cwt","evidence":")" +
                    crypto::base64_encode(*ev) +
                    R"(","binder":{"exporter_label":"Attestation","aik_pub_hash":")" +
                    crypto::base64_encode(b->aik_pub_hash) + R"(","binding":")" +
                    crypto::base64_encode(b->binding) + "\"}}";
  if (cmw.size() > 0xfff0) return make_error(errc::too_large, "attested TLS: evidence too large for 0xFF00");
  int der_len = i2d_X509(leaf, nullptr);
  if (der_len <= 0) return bad("cannot encode the leaf certificate");
  bytes der(static_cast<size_t>(der_len));
  unsigned char* p = der.data();
  i2d_X509(leaf, &p);

  bytes entry;
  put_u24(entry, der.size());
  put(entry, der);
  bytes ext;
  put_u16(ext, ext_cmw_attestation);
  put_u16(ext, cmw.size() + 2);
  put_u16(ext, cmw.size());
  ext.insert(ext.end(), cmw.begin(), cmw.end());
  put_u16(entry, ext.size());
  put(entry, ext);
  bytes body;
  put_u8(body, req.context.size());
  put(body, req.context);
  put_u24(body, entry.size());
  put(body, entry);
  bytes certificate;
  put_u8(certificate, hs_certificate);
  put_u24(certificate, body.size());
  put(certificate, body);

  auto content = verify_content(digest(md, {*hs_ctx, req.raw, certificate}));
  md_ctx sctx(EVP_MD_CTX_new());
  size_t sig_len = 0;
  if (EVP_DigestSignInit(sctx.get(), nullptr, EVP_sha256(), nullptr, key) != 1 ||
      EVP_DigestSign(sctx.get(), nullptr, &sig_len, content.data(), content.size()) != 1) {
    ERR_clear_error();
    return make_error(errc::crypto_failed, "attested TLS: cannot sign CertificateVerify");
  }
  bytes sig(sig_len);
  if (EVP_DigestSign(sctx.get(), sig.data(), &sig_len, content.data(), content.size()) != 1) {
    ERR_clear_error();
    return make_error(errc::crypto_failed, "attested TLS: cannot sign CertificateVerify");
  }
  sig.resize(sig_len);
  bytes cv;
  put_u8(cv, hs_certificate_verify);
  put_u24(cv, 4 + sig.size());
  put_u16(cv, scheme_ecdsa_p256_sha256);
  put_u16(cv, sig.size());
  put(cv, sig);

  auto mac = hmac(md, *fin_key, digest(md, {*hs_ctx, req.raw, certificate, cv}));
  bytes out = certificate;
  put(out, cv);
  put_u8(out, hs_finished);
  put_u24(out, mac.size());
  put(out, mac);
  return out;
}

expected<verified_authenticator> verify_authenticator(SSL* ssl, std::span<const uint8_t> request,
                                                      std::span<const uint8_t> authenticator) {
  auto req = parse_request(request);
  if (!req) return req.error();
  const EVP_MD* md = handshake_md(ssl);
  if (md == nullptr) return bad("no negotiated cipher suite");
  size_t hlen = static_cast<size_t>(EVP_MD_get_size(md));
  reader r{authenticator};
  auto certificate = handshake_message(r, hs_certificate, "Certificate");
  if (!certificate) return certificate.error();
  auto cv = handshake_message(r, hs_certificate_verify, "CertificateVerify");
  if (!cv) return cv.error();
  auto fin = handshake_message(r, hs_finished, "Finished");
  if (!fin) return fin.error();
  if (!r.done()) return bad("trailing bytes after Finished");

  verified_authenticator out;
  reader c{certificate->subspan(4)};
  auto ctx = c.take(c.n(1));
  if (!c.ok || !std::equal(ctx.begin(), ctx.end(), req->context.begin(), req->context.end()))
    return bad("the authenticator does not echo the request context");
  reader list{c.take(c.n(3))};
  if (!c.done()) return bad("malformed Certificate");
  bool first = true;
  while (list.ok && !list.s.empty()) {
    auto der = list.take(list.n(3));
    reader exts{list.take(list.n(2))};
    if (!list.ok) break;
    if (first) out.leaf_der.assign(der.begin(), der.end());
    while (exts.ok && !exts.s.empty()) {
      size_t type = exts.n(2);
      reader data{exts.take(exts.n(2))};
      if (type != ext_cmw_attestation) continue;
      if (!first) return bad("0xFF00 on a certificate other than the leaf");
      auto payload = data.take(data.n(2));
      if (!data.done()) return bad("malformed 0xFF00 extension");
      out.cmw_json.assign(payload.begin(), payload.end());
    }
    if (!exts.ok) return bad("malformed certificate extensions");
    first = false;
  }
  if (!list.ok || out.leaf_der.empty()) return bad("no leaf certificate");
  if (out.cmw_json.empty()) return bad("the leaf carries no attestation (0xFF00)");

  const unsigned char* p = out.leaf_der.data();
  x509_handle leaf(d2i_X509(nullptr, &p, static_cast<long>(out.leaf_der.size())));
  if (!leaf) return bad("the leaf is not a DER certificate");
  auto hs_ctx = exporter(ssl, label_hs_ctx, {}, false, hlen);
  if (!hs_ctx) return hs_ctx.error();
  auto fin_key = exporter(ssl, label_fin_key, {}, false, hlen);
  if (!fin_key) return fin_key.error();

  reader v{cv->subspan(4)};
  size_t scheme = v.n(2);
  auto sig = v.take(v.n(2));
  if (!v.done() || scheme != scheme_ecdsa_p256_sha256)
    return bad("CertificateVerify: not ecdsa_secp256r1_sha256");
  auto content = verify_content(digest(md, {*hs_ctx, request, *certificate}));
  md_ctx vctx(EVP_MD_CTX_new());
  if (EVP_DigestVerifyInit(vctx.get(), nullptr, EVP_sha256(), nullptr, X509_get0_pubkey(leaf.get())) != 1 ||
      EVP_DigestVerify(vctx.get(), sig.data(), sig.size(), content.data(), content.size()) != 1) {
    ERR_clear_error();
    return make_error(errc::attestation_failed, "attested TLS: CertificateVerify does not verify");
  }
  auto mac = hmac(md, *fin_key, digest(md, {*hs_ctx, request, *certificate, *cv}));
  auto got = fin->subspan(4);
  if (!crypto::constant_time_equal(mac, got))
    return make_error(errc::attestation_failed, "attested TLS: Finished does not verify");

  auto spki = spki_der(leaf.get());
  if (!spki) return spki.error();
  auto b = make_binder(ssl, md, req->context, *spki);
  if (!b) return b.error();
  auto label = json_string(out.cmw_json, "exporter_label");
  if (!label.empty() && label != label_binding) return bad("binder: unexpected exporter label");
  auto binding = crypto::base64_decode(json_string(out.cmw_json, "binding"));
  if (!binding || !crypto::constant_time_equal(*binding, b->binding))
    return make_error(errc::attestation_failed, "attested TLS: the binder does not match this session");
  auto evidence = crypto::base64_decode(json_string(out.cmw_json, "evidence"));
  if (!evidence || evidence->empty()) return bad("the CMW carries no evidence");
  out.evidence = std::move(*evidence);
  out.report_data = b->report_data;
  out.nonce = b->nonce;
  return out;
}

}  // namespace cove::agent::atls
