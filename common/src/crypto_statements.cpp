#include "cove/crypto/statements.hpp"

#include <cstdlib>
#include <cstring>

namespace cove::crypto {

namespace {
// resize + memcpy rather than vector::insert: g++ 12 at -O3 reports a false
// -Wstringop-overflow for insert() after reserve() (Release builds use -Werror).
void put_raw(std::vector<uint8_t>& out, std::span<const uint8_t> bytes) {
  if (bytes.empty()) return;
  size_t at = out.size();
  out.resize(at + bytes.size());
  std::memcpy(out.data() + at, bytes.data(), bytes.size());
}
void put_raw(std::vector<uint8_t>& out, std::string_view s) {
  put_raw(out, std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}
void put_len(std::vector<uint8_t>& out, size_t n) {
  if (n > 0xffffffffu) std::abort();  // no statement field comes near 4 GiB
  auto v = static_cast<uint32_t>(n);
  out.push_back(static_cast<uint8_t>(v >> 24));
  out.push_back(static_cast<uint8_t>(v >> 16));
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}
void put_field(std::vector<uint8_t>& out, std::span<const uint8_t> bytes) {
  put_len(out, bytes.size());
  put_raw(out, bytes);
}
void put_field(std::vector<uint8_t>& out, std::string_view s) {
  put_len(out, s.size());
  put_raw(out, s);
}
}  // namespace

std::vector<uint8_t> upload_statement(std::string_view computation_id, const sha3_digest& manifest_digest,
                                      std::string_view role, std::string_view filename,
                                      const sha3_digest& plaintext_hash,
                                      std::span<const uint8_t> agent_kx_public_key,
                                      std::span<const uint8_t> uploader_kx_public_key) {
  std::vector<uint8_t> out;
  out.reserve(upload_statement_tag.size() + 7 * 4 + computation_id.size() + manifest_digest.size() +
              role.size() + filename.size() + plaintext_hash.size() + agent_kx_public_key.size() +
              uploader_kx_public_key.size());
  put_raw(out, upload_statement_tag);
  put_field(out, computation_id);
  put_field(out, std::span<const uint8_t>(manifest_digest));
  put_field(out, role);
  put_field(out, filename);
  put_field(out, std::span<const uint8_t>(plaintext_hash));
  put_field(out, agent_kx_public_key);
  put_field(out, uploader_kx_public_key);
  return out;
}

std::vector<uint8_t> result_statement(std::string_view computation_id, const sha3_digest& manifest_digest,
                                      std::span<const uint8_t> consumer_key_der,
                                      std::span<const uint8_t> agent_kx_public_key) {
  std::vector<uint8_t> out;
  out.reserve(result_statement_tag.size() + 4 * 4 + computation_id.size() + manifest_digest.size() +
              consumer_key_der.size() + agent_kx_public_key.size());
  put_raw(out, result_statement_tag);
  put_field(out, computation_id);
  put_field(out, std::span<const uint8_t>(manifest_digest));
  put_field(out, consumer_key_der);
  put_field(out, agent_kx_public_key);
  return out;
}

std::array<uint8_t, 64> evidence_report_data(std::span<const uint8_t> kx_pk, std::span<const uint8_t> sign_pk,
                                             std::span<const uint8_t> nonce,
                                             std::span<const uint8_t> ak_name) {
  std::vector<uint8_t> msg;
  msg.reserve(evidence_vtpm_tag.size() + 4 * 4 + kx_pk.size() + sign_pk.size() + nonce.size() +
              ak_name.size());
  put_raw(msg, ak_name.empty() ? evidence_tag : evidence_vtpm_tag);
  put_field(msg, kx_pk);
  put_field(msg, sign_pk);
  put_field(msg, nonce);
  if (!ak_name.empty()) put_field(msg, ak_name);
  return sha512_of(msg);
}

std::array<uint8_t, 64> bridge_report_data(std::span<const uint8_t> kx_pk, std::span<const uint8_t> sign_pk,
                                           std::string_view cvm_id, std::span<const uint8_t> exporter,
                                           std::span<const uint8_t> ak_name) {
  std::vector<uint8_t> msg;
  msg.reserve(bridge_vtpm_tag.size() + 5 * 4 + kx_pk.size() + sign_pk.size() + cvm_id.size() +
              exporter.size() + ak_name.size());
  put_raw(msg, ak_name.empty() ? bridge_binding_tag : bridge_vtpm_tag);
  put_field(msg, kx_pk);
  put_field(msg, sign_pk);
  put_field(msg, cvm_id);
  put_field(msg, exporter);
  if (!ak_name.empty()) put_field(msg, ak_name);
  return sha512_of(msg);
}

sha3_digest vtpm_quote_nonce(std::span<const uint8_t> report_data) {
  std::vector<uint8_t> msg;
  put_raw(msg, vtpm_quote_tag);
  put_raw(msg, report_data);
  return sha3_256_of(msg);
}

}  // namespace cove::crypto
