// DICE certificate chains: DiceTcbInfo parsing, chain ordering and verification.
#include "cove/attest/dice.hpp"

#include <openssl/core_names.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <map>

#include "cove/attest/snp_report.hpp"
#include "cove/attest/verify.hpp"
#include "dice_der.hpp"
#include "ossl.hpp"

namespace cove::attest {
namespace {

constexpr std::size_t max_chain = 16;
constexpr uint32_t default_forbidden =
    dice_flag_not_configured | dice_flag_not_secure | dice_flag_recovery | dice_flag_debug;

error bad_input(std::string msg) {
  return make_error(errc::invalid_request, std::move(msg));
}
error fail(std::string msg) {
  return make_error(errc::attestation_failed, std::move(msg));
}

std::string rfc2253(const X509_NAME* n) {
  ossl::bio b{BIO_new(BIO_s_mem())};
  if (!b || X509_NAME_print_ex(b.get(), n, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) < 0) return "?";
  return ossl::bio_to_string(b.get());
}

std::string common_name(const X509_NAME* n) {
  int idx = X509_NAME_get_index_by_NID(n, NID_commonName, -1);
  if (idx < 0) return {};
  const ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, idx));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, s);
  if (len < 0) {
    ERR_clear_error();
    return {};
  }
  std::string out(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

std::optional<uint32_t> bit_string_flags(std::span<const uint8_t> c) {
  if (c.empty() || c[0] > 7 || (c.size() == 1 && c[0] != 0)) return std::nullopt;
  uint32_t flags = 0;
  for (std::size_t i = 1; i < c.size() && i <= 4; ++i)
    for (int b = 0; b < 8; ++b)
      if (c[i] & (0x80 >> b)) flags |= 1u << ((i - 1) * 8 + static_cast<std::size_t>(b));
  return flags;
}

std::vector<uint8_t> flags_bit_string(uint32_t flags) {
  // DER named bit list: trailing zero bits removed.
  if (flags == 0) return {0x00};
  int highest = 31;
  while (!(flags & (1u << highest))) --highest;
  std::size_t nbytes = static_cast<std::size_t>(highest / 8 + 1);
  std::vector<uint8_t> out(1 + nbytes, 0);
  for (int b = 0; b <= highest; ++b)
    if (flags & (1u << b)) out[1 + static_cast<std::size_t>(b / 8)] |= static_cast<uint8_t>(0x80 >> (b % 8));
  out[0] = static_cast<uint8_t>(7 - highest % 8);
  return out;
}

expected<std::vector<fwid>> parse_fwids(std::span<const uint8_t> c) {
  std::vector<fwid> out;
  while (!c.empty()) {
    auto seq = der::read(c);
    if (!seq || seq->tag != 0x30) return bad_input("DiceTcbInfo fwids: FWID is not a SEQUENCE");
    auto alg = der::read(seq->content);
    if (!alg || alg->tag != 0x06) return bad_input("DiceTcbInfo fwids: hashAlg is not an OBJECT IDENTIFIER");
    auto oid = der::to_oid(alg->content);
    if (!oid) return bad_input("DiceTcbInfo fwids: malformed hashAlg");
    auto dig = der::read(seq->content.subspan(alg->total));
    if (!dig || dig->tag != 0x04 || alg->total + dig->total != seq->content.size())
      return bad_input("DiceTcbInfo fwids: digest is not an OCTET STRING");
    if (dig->content.size() > 64) return bad_input("DiceTcbInfo fwids: digest longer than 64 bytes");
    out.push_back({*oid, {dig->content.begin(), dig->content.end()}});
    if (out.size() > 16) return bad_input("DiceTcbInfo fwids: more than 16 FWIDs");
    c = c.subspan(seq->total);
  }
  return out;
}

std::string hex_list(const std::vector<std::vector<uint8_t>>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + to_hex(v[i]);
  return s + "]";
}

// Signature algorithm name in policy vocabulary, given the issuer's key.
std::string sig_alg_name(const X509* cert, EVP_PKEY* issuer_key) {
  int nid = X509_get_signature_nid(cert);
  if (nid == NID_ED25519) return EVP_PKEY_is_a(issuer_key, "ED25519") ? "ed25519" : "ed25519 (key mismatch)";
  if (nid == NID_ecdsa_with_SHA256 || nid == NID_ecdsa_with_SHA384) {
    const char* md = nid == NID_ecdsa_with_SHA256 ? "sha256" : "sha384";
    char group[64] = {};
    std::size_t glen = 0;
    if (!EVP_PKEY_is_a(issuer_key, "EC") ||
        EVP_PKEY_get_utf8_string_param(issuer_key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &glen) !=
            1) {
      ERR_clear_error();
      return std::string("ecdsa-?-") + md;
    }
    std::string g(group);
    std::string curve = g == "prime256v1" ? "p256" : g == "secp384r1" ? "p384" : g;
    return "ecdsa-" + curve + "-" + md;
  }
  const char* sn = OBJ_nid2sn(nid);
  return sn != nullptr ? sn : "unknown";
}

std::string time_text(const ASN1_TIME* t) {
  ossl::bio b{BIO_new(BIO_s_mem())};
  if (!b || ASN1_TIME_print(b.get(), t) != 1) return "?";
  return ossl::bio_to_string(b.get());
}

expected<void> check_validity(const X509* cert, const std::string& label, std::time_t now) {
  const ASN1_TIME* nb = X509_get0_notBefore(cert);
  const ASN1_TIME* na = X509_get0_notAfter(cert);
  int before = X509_cmp_time(nb, &now);
  int after = X509_cmp_time(na, &now);
  if (before == 0 || after == 0) {
    ERR_clear_error();
    return fail(label + " validity: malformed validity period");
  }
  if (before > 0) return fail(label + " validity: not yet valid (notBefore " + time_text(nb) + ")");
  if (after < 0) return fail(label + " validity: expired (notAfter " + time_text(na) + ")");
  return ok();
}

expected<void> check_signature(X509* cert, EVP_PKEY* key, const std::string& label,
                               const dice_policy& policy) {
  std::string alg = sig_alg_name(cert, key);
  const auto& allowed = policy.allowed_signature_algorithms;
  if (std::find(allowed.begin(), allowed.end(), alg) == allowed.end())
    return fail(label + " signature algorithm: " + alg + " is not allowed");
  if (X509_verify(cert, key) != 1)
    return fail(label + " signature: does not verify with the issuer key (" +
                ossl::last_error("bad signature") + ")");
  return ok();
}

expected<void> check_extensions(X509* cert, const std::string& label, bool issues_certs,
                                std::size_t cas_below) {
  uint32_t ef = X509_get_extension_flags(cert);
  if (ef & EXFLAG_INVALID) return fail(label + " extensions: malformed or duplicated standard extension");
  int n = X509_get_ext_count(cert);
  for (int i = 0; i < n; ++i) {
    X509_EXTENSION* ext = X509_get_ext(cert, i);
    if (!X509_EXTENSION_get_critical(ext) || X509_supported_extension(ext)) continue;
    char oid[80] = {};
    OBJ_obj2txt(oid, sizeof oid, X509_EXTENSION_get_object(ext), 1);
    if (std::string_view(oid) != dice_tcb_info_oid)
      return fail(label + " extensions: unsupported critical extension " + oid);
  }
  if (!issues_certs) return ok();
  if (!(ef & EXFLAG_BCONS) || !(ef & EXFLAG_CA))
    return fail(label + " basicConstraints: issues a certificate but is not a CA");
  if ((ef & EXFLAG_KUSAGE) && !(X509_get_key_usage(cert) & KU_KEY_CERT_SIGN))
    return fail(label + " keyUsage: issues a certificate but lacks keyCertSign");
  long pathlen = X509_get_pathlen(cert);
  if (pathlen >= 0 && static_cast<std::size_t>(pathlen) < cas_below)
    return fail(label + " basicConstraints: pathLenConstraint " + std::to_string(pathlen) + " < " +
                std::to_string(cas_below) + " CA certificates below it");
  return ok();
}

bool policy_matches(const dice_layer_policy& p, std::size_t i, const dice_layer& l) {
  if (!p.index && !p.name) return false;
  if (p.index && *p.index != i) return false;
  if (p.name && *p.name != l.name) return false;
  return true;
}

std::string policy_label(const dice_layer_policy& p, std::size_t k) {
  std::string s = "policy layer entry " + std::to_string(k) + " (";
  if (p.index) s += "index " + std::to_string(*p.index);
  if (p.index && p.name) s += ", ";
  if (p.name) s += "name '" + *p.name + "'";
  return s + ")";
}

expected<void> check_layer_policy(const dice_layer& l, const dice_layer_policy& p, const std::string& label) {
  if (!p.allowed_fwids.empty()) {
    if (l.fwids.empty())
      return fail(label + " fwid: none in the certificate, expected one of " + hex_list(p.allowed_fwids));
    bool found = false;
    for (const auto& f : l.fwids) {
      bool alg_ok = (f.hash_alg == oid_sha384 && f.digest.size() == 48) ||
                    (f.hash_alg == oid_sha256 && f.digest.size() == 32);
      if (alg_ok &&
          std::find(p.allowed_fwids.begin(), p.allowed_fwids.end(), f.digest) != p.allowed_fwids.end())
        found = true;
    }
    if (!found) {
      std::vector<std::vector<uint8_t>> got;
      for (const auto& f : l.fwids) got.push_back(f.digest);
      return fail(label + " fwid: got " + (got.size() == 1 ? to_hex(got[0]) : hex_list(got)) +
                  ", expected one of " + hex_list(p.allowed_fwids));
    }
  }
  if (p.min_svn) {
    if (!l.svn) return fail(label + " svn: missing, expected >= " + std::to_string(*p.min_svn));
    if (*l.svn < *p.min_svn)
      return fail(label + " svn: got " + std::to_string(*l.svn) +
                  ", expected >= " + std::to_string(*p.min_svn));
  }
  return ok();
}

}  // namespace

std::optional<uint32_t> dice_flag_from_name(std::string_view name) {
  if (name == "not_configured") return dice_flag_not_configured;
  if (name == "not_secure") return dice_flag_not_secure;
  if (name == "recovery") return dice_flag_recovery;
  if (name == "debug") return dice_flag_debug;
  return std::nullopt;
}

std::string dice_flags_to_string(uint32_t flags) {
  static constexpr const char* names[] = {"not_configured", "not_secure", "recovery", "debug"};
  std::string s;
  for (int b = 0; b < 32; ++b) {
    if (!(flags & (1u << b))) continue;
    if (!s.empty()) s += ",";
    s += b < 4 ? names[b] : "bit" + std::to_string(b);
  }
  return s.empty() ? "none" : s;
}

expected<dice_tcb_info> parse_dice_tcb_info(std::span<const uint8_t> in) {
  auto top = der::read(in);
  if (!top || top->tag != 0x30 || top->total != in.size())
    return bad_input("DiceTcbInfo is not one DER SEQUENCE");
  dice_tcb_info info;
  std::optional<uint32_t> mask;
  int last = -1;
  auto c = top->content;
  while (!c.empty()) {
    auto f = der::read(c);
    if (!f) return bad_input("DiceTcbInfo: truncated field");
    c = c.subspan(f->total);
    if ((f->tag & 0xc0) != 0x80) return bad_input("DiceTcbInfo: field without a context tag");
    int num = f->tag & 0x1f;
    bool constructed = (f->tag & 0x20) != 0;
    if (num <= last)
      return bad_input("DiceTcbInfo: field [" + std::to_string(num) + "] repeated or out of order");
    last = num;
    if (constructed != (num == 6))
      return bad_input("DiceTcbInfo: field [" + std::to_string(num) + "] has the wrong form");
    std::string what = "DiceTcbInfo field [" + std::to_string(num) + "]";
    switch (num) {
      case 0:
      case 1:
      case 2: {
        if (f->content.size() > 1024) return bad_input(what + " too long");
        std::string s(f->content.begin(), f->content.end());
        (num == 0 ? info.vendor : num == 1 ? info.model : info.version) = std::move(s);
        break;
      }
      case 3:
      case 4:
      case 5: {
        auto v = der::to_int64(f->content);
        if (!v) return bad_input(what + " is not an INTEGER within int64");
        (num == 3 ? info.svn : num == 4 ? info.layer : info.index) = *v;
        break;
      }
      case 6: {
        auto fw = parse_fwids(f->content);
        if (!fw) return std::move(fw).error();
        info.fwids = std::move(*fw);
        break;
      }
      case 7:
      case 10: {
        auto v = bit_string_flags(f->content);
        if (!v) return bad_input(what + " is not a BIT STRING");
        (num == 7 ? info.flags : mask) = *v;
        break;
      }
      case 8:
      case 9:
        if (f->content.size() > 4096) return bad_input(what + " too long");
        (num == 8 ? info.vendor_info : info.type).assign(f->content.begin(), f->content.end());
        break;
      default:
        return bad_input("DiceTcbInfo: unknown field [" + std::to_string(num) + "]");
    }
  }
  if (info.flags && mask) *info.flags &= *mask;
  return info;
}

std::vector<uint8_t> encode_dice_tcb_info(const dice_tcb_info& info) {
  std::vector<uint8_t> body;
  auto str = [&](uint8_t tag, const std::optional<std::string>& s) {
    if (s) der::put(body, tag, std::span(reinterpret_cast<const uint8_t*>(s->data()), s->size()));
  };
  auto integer = [&](uint8_t tag, const std::optional<int64_t>& v) {
    if (v) der::put(body, tag, der::int64_content(*v));
  };
  str(0x80, info.vendor);
  str(0x81, info.model);
  str(0x82, info.version);
  integer(0x83, info.svn);
  integer(0x84, info.layer);
  integer(0x85, info.index);
  if (!info.fwids.empty()) {
    std::vector<uint8_t> list;
    for (const auto& f : info.fwids) {
      std::vector<uint8_t> one;
      der::put(one, 0x06, der::oid_content(f.hash_alg));
      der::put(one, 0x04, f.digest);
      der::put(list, 0x30, one);
    }
    der::put(body, 0xa6, list);
  }
  if (info.flags) der::put(body, 0x87, flags_bit_string(*info.flags));
  if (!info.vendor_info.empty()) der::put(body, 0x88, info.vendor_info);
  if (!info.type.empty()) der::put(body, 0x89, info.type);
  std::vector<uint8_t> out;
  der::put(out, 0x30, body);
  return out;
}

expected<std::vector<dice_layer>> parse_dice_chain(std::string_view input) {
  if (input.size() > (1u << 20)) return bad_input("DICE chain larger than 1 MiB");
  std::vector<std::vector<uint8_t>> ders;
  if (input.find("-----BEGIN") != std::string_view::npos) {
    auto split = split_pem_bundle(input);
    if (!split) return std::move(split).error();
    ders = std::move(*split);
  } else {
    std::span<const uint8_t> rest(reinterpret_cast<const uint8_t*>(input.data()), input.size());
    while (!rest.empty()) {
      auto t = der::read(rest);
      if (!t || t->tag != 0x30)
        return bad_input("DICE chain: certificate " + std::to_string(ders.size()) + " is not DER");
      ders.emplace_back(rest.begin(), rest.begin() + static_cast<long>(t->total));
      rest = rest.subspan(t->total);
      if (ders.size() > max_chain) break;
    }
    if (ders.empty()) return bad_input("DICE chain: no certificate");
  }
  if (ders.size() > max_chain) return bad_input("DICE chain: more than 16 certificates");

  std::vector<ossl::x509> certs;
  std::vector<dice_layer> layers;
  for (std::size_t i = 0; i < ders.size(); ++i) {
    auto cert = ossl::parse_der(ders[i]);
    if (!cert) return bad_input("DICE chain: certificate " + std::to_string(i) + " is malformed");
    dice_layer l;
    l.subject = rfc2253(X509_get_subject_name(cert.get()));
    l.issuer = rfc2253(X509_get_issuer_name(cert.get()));
    l.name = common_name(X509_get_subject_name(cert.get()));
    if (l.name.empty()) l.name = l.subject;
    ossl::asn1_object obj{OBJ_txt2obj(dice_tcb_info_oid, 1)};
    if (!obj) return make_error(errc::internal, "OBJ_txt2obj failed");
    int idx = X509_get_ext_by_OBJ(cert.get(), obj.get(), -1);
    if (idx >= 0) {
      if (X509_get_ext_by_OBJ(cert.get(), obj.get(), idx) >= 0)
        return bad_input("DICE chain: certificate '" + l.name + "' has two DiceTcbInfo extensions");
      const ASN1_OCTET_STRING* data = X509_EXTENSION_get_data(X509_get_ext(cert.get(), idx));
      auto info = parse_dice_tcb_info(std::span<const uint8_t>(
          ASN1_STRING_get0_data(data), static_cast<std::size_t>(ASN1_STRING_length(data))));
      if (!info) return bad_input("DICE chain: certificate '" + l.name + "': " + info.error().message);
      l.has_tcb_info = true;
      l.vendor = std::move(info->vendor);
      l.model = std::move(info->model);
      l.version = std::move(info->version);
      l.svn = info->svn;
      l.layer = info->layer;
      l.index = info->index;
      l.fwids = std::move(info->fwids);
      l.flags = info->flags.value_or(0);
      l.vendor_info = std::move(info->vendor_info);
      l.type = std::move(info->type);
    }
    for (std::size_t j = 0; j < layers.size(); ++j) {
      if (layers[j].cert_der == ders[i])
        return bad_input("DICE chain: duplicate certificate '" + l.name + "'");
      if (X509_NAME_cmp(X509_get_subject_name(certs[j].get()), X509_get_subject_name(cert.get())) == 0)
        return bad_input("DICE chain: two certificates with subject '" + l.subject + "'");
    }
    l.cert_der = std::move(ders[i]);
    layers.push_back(std::move(l));
    certs.push_back(std::move(cert));
  }

  // parent[i]: the certificate in the set that issued i (by name), or none.
  const std::size_t n = layers.size();
  constexpr std::size_t none = ~std::size_t{0};
  std::vector<std::size_t> parent(n, none), child(n, none);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < n; ++j)
      if (i != j &&
          X509_NAME_cmp(X509_get_issuer_name(certs[i].get()), X509_get_subject_name(certs[j].get())) == 0)
        parent[i] = j;
  for (std::size_t i = 0; i < n; ++i) {
    if (parent[i] == none) continue;
    if (child[parent[i]] != none)
      return bad_input("DICE chain: '" + layers[parent[i]].name + "' issued both '" +
                       layers[child[parent[i]]].name + "' and '" + layers[i].name + "'");
    child[parent[i]] = i;
  }
  std::vector<std::size_t> roots;
  for (std::size_t i = 0; i < n; ++i)
    if (parent[i] == none) roots.push_back(i);
  if (roots.empty()) return bad_input("DICE chain: issuer cycle (no root certificate)");
  if (roots.size() > 1) {
    // Prefer to name the orphan that is not self-issued: its issuer is the missing layer.
    std::size_t orphan = roots[1];
    for (auto r : roots)
      if (layers[r].issuer != layers[r].subject) orphan = r;
    return bad_input("DICE chain: gap: issuer '" + layers[orphan].issuer + "' of '" + layers[orphan].name +
                     "' is not in the chain");
  }
  std::vector<dice_layer> ordered;
  for (std::size_t i = roots[0]; i != none && ordered.size() < n; i = child[i])
    ordered.push_back(std::move(layers[i]));
  if (ordered.size() != n)
    return bad_input("DICE chain: issuer cycle among certificates not linked to the root");
  return ordered;
}

expected<void> verify_dice_chain(const std::vector<dice_layer>& chain, const dice_policy& policy,
                                 std::chrono::system_clock::time_point now) {
  if (chain.empty()) return fail("DICE chain is empty");
  if (chain.size() > max_chain) return fail("DICE chain has more than 16 certificates");
  const std::time_t t = std::chrono::system_clock::to_time_t(now);

  std::vector<ossl::x509> certs;
  std::vector<std::string> labels;
  for (std::size_t i = 0; i < chain.size(); ++i) {
    labels.push_back("layer " + std::to_string(i) + " (" + chain[i].name + ")");
    auto c = ossl::parse_der(chain[i].cert_der);
    if (!c) return fail(labels[i] + " certificate: malformed DER");
    certs.push_back(std::move(c));
  }

  // Trust anchor.
  std::vector<ossl::x509> anchors;
  for (const auto& pem : policy.trusted_roots_pem) {
    auto ders = split_pem_bundle(pem);
    if (!ders) return fail("policy trusted_roots: " + ders.error().message);
    for (const auto& d : *ders)
      if (auto a = ossl::parse_der(d)) anchors.push_back(std::move(a));
  }
  if (anchors.empty()) return fail("policy: no trusted roots configured");
  {
    X509* root = certs[0].get();
    const std::string& label = labels[0];
    bool self_issued = X509_NAME_cmp(X509_get_issuer_name(root), X509_get_subject_name(root)) == 0;
    bool pinned = false;
    for (const auto& a : anchors)
      if (ossl::to_der(a.get()) == chain[0].cert_der) pinned = true;
    if (pinned) {
      if (self_issued) {
        if (auto r = check_signature(root, X509_get0_pubkey(root), label, policy); !r) return r;
      }
    } else {
      const X509* by = nullptr;
      for (const auto& a : anchors)
        if (X509_NAME_cmp(X509_get_issuer_name(root), X509_get_subject_name(a.get())) == 0 &&
            X509_verify(root, X509_get0_pubkey(a.get())) == 1)
          by = a.get();
      ERR_clear_error();
      if (by == nullptr)
        return fail(label + " root: not a trusted root and not signed by one (issuer '" + chain[0].issuer +
                    "')");
      if (auto r = check_signature(root, X509_get0_pubkey(by), label, policy); !r) return r;
      if (auto r = check_validity(by, "trusted root '" + rfc2253(X509_get_subject_name(by)) + "'", t); !r)
        return r;
    }
  }

  for (std::size_t i = 0; i < chain.size(); ++i) {
    X509* c = certs[i].get();
    if (i > 0) {
      if (X509_NAME_cmp(X509_get_issuer_name(c), X509_get_subject_name(certs[i - 1].get())) != 0)
        return fail(labels[i] + " issuer: '" + chain[i].issuer + "' is not layer " + std::to_string(i - 1) +
                    " '" + chain[i - 1].subject + "'");
      EVP_PKEY* key = X509_get0_pubkey(certs[i - 1].get());
      if (key == nullptr) return fail(labels[i - 1] + " public key: unreadable");
      if (auto r = check_signature(c, key, labels[i], policy); !r) return r;
    }
    if (auto r = check_validity(c, labels[i], t); !r) return r;
    bool issues = i + 1 < chain.size();
    std::size_t cas_below = issues ? chain.size() - i - 2 : 0;
    if (auto r = check_extensions(c, labels[i], issues, cas_below); !r) return r;
  }

  // Per-layer policy and operational flags.
  std::vector<uint32_t> allowed_flags(chain.size(), 0);
  std::vector<bool> has_policy(chain.size(), false);
  for (std::size_t k = 0; k < policy.layers.size(); ++k) {
    const auto& p = policy.layers[k];
    if (!p.index && !p.name) return fail(policy_label(p, k) + ": names neither index nor name");
    bool matched = false;
    for (std::size_t i = 0; i < chain.size(); ++i) {
      if (!policy_matches(p, i, chain[i])) continue;
      matched = true;
      allowed_flags[i] = has_policy[i] ? (allowed_flags[i] & p.allowed_flags) : p.allowed_flags;
      has_policy[i] = true;
    }
    if (!matched) return fail(policy_label(p, k) + " matches no layer of the chain");
  }
  for (std::size_t i = 0; i < chain.size(); ++i) {
    uint32_t bad = chain[i].flags & default_forbidden & ~allowed_flags[i];
    if (bad != 0) return fail(labels[i] + " flags: " + dice_flags_to_string(bad) + " set");
    for (const auto& p : policy.layers)
      if (policy_matches(p, i, chain[i]))
        if (auto r = check_layer_policy(chain[i], p, labels[i]); !r) return r;
  }
  return ok();
}

}  // namespace cove::attest
