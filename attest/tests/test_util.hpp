#pragma once
// Helpers shared by the attest tests: fixture loading and a pinned clock.
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "cove/attest/verify.hpp"

namespace cove::attest::test {

inline std::string fixture_path(const std::string& name) {
  return std::string(COVE_FIXTURES_DIR) + "/snp/" + name;
}

inline std::vector<uint8_t> read_bytes(const std::string& name) {
  std::ifstream in(fixture_path(name), std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline std::string read_text(const std::string& name) {
  std::ifstream in(fixture_path(name), std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline std::string der_to_pem(const std::vector<uint8_t>& der) {
  const unsigned char* p = der.data();
  X509* c = d2i_X509(nullptr, &p, static_cast<long>(der.size()));
  if (c == nullptr) return {};
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, c);
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  std::string out(data, static_cast<std::size_t>(n));
  BIO_free(b);
  X509_free(c);
  return out;
}

/// The ARK (only) of a fixture bundle, as PEM.
inline std::string ark_pem_of(const std::string& bundle_name) {
  auto chain = identify_ask_ark(read_text(bundle_name));
  return chain ? der_to_pem(chain->ark_der) : std::string{};
}

/// 2027-01-01: inside the validity window of every fixture VCEK.
inline std::chrono::system_clock::time_point pinned_now() {
  return std::chrono::sys_days{std::chrono::year{2027} / 1 / 1};
}

/// All three real AMD ARKs trusted, clock pinned.
inline verify_options real_amd_options() {
  verify_options o;
  o.trusted_ark_pems = {ark_pem_of("ask_ark_milan.pem"), ark_pem_of("ask_ark_genoa.pem"),
                        ark_pem_of("ask_ark_turin.pem")};
  o.now = pinned_now();
  return o;
}

}  // namespace cove::attest::test
