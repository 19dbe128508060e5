#include "cove/attest/sim_store.hpp"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cove/c_handle.hpp"

namespace cove::attest {

namespace fs = std::filesystem;

namespace {

std::string hex(std::span<const uint8_t> b) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  s.reserve(b.size() * 2);
  for (auto x : b) {
    s.push_back(digits[x >> 4]);
    s.push_back(digits[x & 15]);
  }
  return s;
}

expected<void> write_file(const fs::path& p, const std::string& content, fs::perms perms) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  if (!f) return make_error(errc::internal, "cannot write " + p.string());
  f << content;
  f.close();
  std::error_code ec;
  fs::permissions(p, perms, ec);
  if (ec) return make_error(errc::internal, "cannot set permissions of " + p.string());
  return ok();
}

expected<std::string> read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) return make_error(errc::not_found, "cannot read " + p.string());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

expected<void> save_sim_identity(const sim_chip& chip, const sim_root& root, const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return make_error(errc::internal, "cannot create " + dir.string());
  nlohmann::json j = {{"chip_id", hex(chip.chip_id)},
                      {"tcb",
                       {{"bl", chip.tcb.bl},
                        {"tee", chip.tcb.tee},
                        {"snp", chip.tcb.snp},
                        {"microcode", chip.tcb.microcode},
                        {"fmc", chip.tcb.fmc}}}};
  const auto rw = fs::perms::owner_read | fs::perms::owner_write;
  for (auto r :
       {write_file(dir / "vcek.key.pem", chip.vcek_key_pem, rw),
        write_file(dir / "vcek.pem", chip.vcek_pem, rw), write_file(dir / "chip.json", j.dump(2), rw),
        write_file(dir / "ask.pem", root.ask_pem, rw), write_file(dir / "ark.pem", root.ark_pem, rw)})
    if (!r) return r;
  return ok();
}

expected<sim_identity> load_sim_identity(const fs::path& dir) {
  sim_identity id;
  auto key = read_file(dir / "vcek.key.pem");
  auto cert = read_file(dir / "vcek.pem");
  auto chip = read_file(dir / "chip.json");
  auto ask = read_file(dir / "ask.pem");
  auto ark = read_file(dir / "ark.pem");
  for (auto* r : {&key, &cert, &chip, &ask, &ark})
    if (!*r) return r->error();
  id.chip.vcek_key_pem = *key;
  id.chip.vcek_pem = *cert;
  id.ask_pem = *ask;
  id.ark_pem = *ark;
  c_handle<BIO, BIO_free> bio(BIO_new_mem_buf(cert->data(), static_cast<int>(cert->size())));
  c_handle<X509, X509_free> x509(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!x509) return make_error(errc::invalid_request, "vcek.pem: not a PEM certificate");
  int len = i2d_X509(x509.get(), nullptr);
  if (len <= 0) return make_error(errc::invalid_request, "vcek.pem: cannot encode");
  id.chip.vcek_der.resize(static_cast<size_t>(len));
  auto* p = id.chip.vcek_der.data();
  i2d_X509(x509.get(), &p);
  try {
    auto j = nlohmann::json::parse(*chip);
    auto chip_hex = j.at("chip_id").get<std::string>();
    if (chip_hex.size() != 128)
      return make_error(errc::invalid_request, "chip.json: chip_id must be 64 bytes");
    for (size_t i = 0; i < 64; ++i)
      id.chip.chip_id[i] = static_cast<uint8_t>(std::stoul(chip_hex.substr(i * 2, 2), nullptr, 16));
    const auto& t = j.at("tcb");
    id.chip.tcb =
        tcb_version{t.at("bl").get<uint8_t>(), t.at("tee").get<uint8_t>(), t.at("snp").get<uint8_t>(),
                    t.at("microcode").get<uint8_t>(), t.at("fmc").get<uint8_t>()};
  } catch (const std::exception& e) {
    return make_error(errc::invalid_request, std::string("chip.json: ") + e.what());
  }
  return id;
}

expected<std::array<uint8_t, 48>> sha384_file(const fs::path& file) {
  std::ifstream f(file, std::ios::binary);
  if (!f) return make_error(errc::not_found, "cannot read " + file.string());
  c_handle<EVP_MD_CTX, EVP_MD_CTX_free> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha384(), nullptr) != 1)
    return make_error(errc::internal, "SHA-384 unavailable");
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (f.gcount() > 0) EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(f.gcount()));
  }
  std::array<uint8_t, 48> out{};
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx.get(), out.data(), &n);
  return out;
}

std::string sim_policy_json(const sim_root& root, const std::array<uint8_t, 48>& measurement) {
  nlohmann::json j = {
      {"measurements", {hex(measurement)}},
      {"allow_debug", false},
      {"minimum_report_version", 2},
      {"trusted_roots", {root.ark_pem}},
  };
  return j.dump(2);
}

}  // namespace cove::attest
