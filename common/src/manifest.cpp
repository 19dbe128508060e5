#include "cove/manifest.hpp"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "cove/c_handle.hpp"
#include "cove/crypto/hash.hpp"

namespace cove {
namespace {

using json = nlohmann::json;
using evp_pkey = c_handle<EVP_PKEY, EVP_PKEY_free>;
using bio = c_handle<BIO, BIO_free>;

error bad(const std::string& path, std::string_view what) {
  return make_error(errc::invalid_request, path + ": " + std::string(what));
}

// "path.key": where a member sits, for error messages.
std::string member_path(const std::string& path, std::string_view key) {
  std::string p = path;
  p += '.';
  p += key;
  return p;
}

// ---- small private encoders (OpenSSL EVP; cove::crypto has the public ones)

std::string base64_encode(std::span<const uint8_t> in) {
  std::string out(4 * ((in.size() + 2) / 3), '\0');
  if (in.empty()) return out;
  int n =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), in.data(), static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(std::max(n, 0)));
  return out;
}

bool is_b64_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

// Strict standard base64 with padding (what Go's encoding/json emits for []byte).
std::optional<std::vector<uint8_t>> base64_decode(std::string_view in) {
  if (in.empty() || in.size() % 4 != 0 || in.size() > (1u << 24)) return std::nullopt;
  size_t pad = 0;
  if (in.back() == '=') pad = (in[in.size() - 2] == '=') ? 2 : 1;
  for (size_t i = 0; i < in.size() - pad; ++i)
    if (!is_b64_char(in[i])) return std::nullopt;
  std::vector<uint8_t> out(in.size() / 4 * 3);
  int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  if (n < 0 || static_cast<size_t>(n) != out.size()) return std::nullopt;
  out.resize(out.size() - pad);
  // Reject non-canonical encodings (stray bits in the last character).
  if (base64_encode(out) != in) return std::nullopt;
  return out;
}

std::string hex_encode(std::span<const uint8_t> in) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(in.size() * 2);
  for (uint8_t b : in) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 0xf]);
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// ---- field parsers

constexpr std::string_view hash_msg = "expected 64 hex characters or an array of 32 integers";

expected<sha3_digest> parse_hash(const json& j, const std::string& path) {
  sha3_digest h{};
  if (j.is_string()) {
    const auto& s = j.get_ref<const std::string&>();
    if (s.size() != 64) return bad(path, hash_msg);
    for (size_t i = 0; i < 32; ++i) {
      int hi = hex_value(s[2 * i]), lo = hex_value(s[2 * i + 1]);
      if (hi < 0 || lo < 0) return bad(path, hash_msg);
      h[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    return h;
  }
  if (j.is_array()) {
    if (j.size() != 32) return bad(path, hash_msg);
    for (size_t i = 0; i < 32; ++i) {
      const auto& v = j[i];
      if (!v.is_number_unsigned() || v.get<uint64_t>() > 255) return bad(path, hash_msg);
      h[i] = static_cast<uint8_t>(v.get<uint64_t>());
    }
    return h;
  }
  return bad(path, hash_msg);
}

// PEM "PUBLIC KEY" block -> DER bytes.
std::optional<std::vector<uint8_t>> pem_to_der(std::string_view pem) {
  bio b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!b) return std::nullopt;
  char* name = nullptr;
  char* header = nullptr;
  unsigned char* data = nullptr;
  long len = 0;
  if (PEM_read_bio(b.get(), &name, &header, &data, &len) != 1) return std::nullopt;
  std::optional<std::vector<uint8_t>> out;
  if (std::strcmp(name, "PUBLIC KEY") == 0 && header[0] == '\0' && len > 0) out.emplace(data, data + len);
  OPENSSL_free(name);
  OPENSSL_free(header);
  OPENSSL_free(data);
  return out;
}

expected<std::vector<uint8_t>> parse_key(const json& j, const std::string& path) {
  if (!j.is_string()) return bad(path, "expected a base64 DER or PEM public key string");
  const auto& s = j.get_ref<const std::string&>();
  if (s.size() > max_manifest_json_size) return bad(path, "key too long");
  std::optional<std::vector<uint8_t>> der;
  if (s.find("-----BEGIN") != std::string::npos) {
    der = pem_to_der(s);
    if (!der) return bad(path, "expected a PEM \"PUBLIC KEY\" block");
  } else {
    der = base64_decode(s);
    if (!der) return bad(path, "invalid base64");
  }
  if (auto r = check_public_key_der(*der); !r) return bad(path, r.error().message);
  return std::move(*der);
}

expected<std::string> parse_string(const json& j, const std::string& path) {
  if (!j.is_string()) return bad(path, "expected a string");
  return j.get<std::string>();
}

// ---- cocos fields cove accepts but does not act on; cocos sends each as null when unset

enum class field_type { string, boolean };

expected<void> check_null_or(const json& v, field_type t, const std::string& path) {
  if (v.is_null()) return ok();
  if (t == field_type::string && !v.is_string()) return bad(path, "expected a string");
  if (t == field_type::boolean && !v.is_boolean()) return bad(path, "expected a boolean");
  return ok();
}

struct ignored_field {
  std::string_view key;
  field_type type;
  const char* if_non_empty = nullptr;  // a non-empty string is refused with this message
};

// null, or an object of the given keys only, each null or of its type.
expected<void> check_ignored_object(const json& j, const std::string& path,
                                    std::initializer_list<ignored_field> fields) {
  if (j.is_null()) return ok();
  if (!j.is_object()) return bad(path, "expected an object");
  for (const auto& [k, v] : j.items()) {
    const std::string p = member_path(path, k);
    auto f =
        std::find_if(fields.begin(), fields.end(), [&k = k](const ignored_field& x) { return x.key == k; });
    if (f == fields.end()) return bad(p, "unknown key");
    if (auto r = check_null_or(v, f->type, p); !r) return r;
    if (f->if_non_empty && v.is_string() && !v.get_ref<const std::string&>().empty())
      return bad(p, f->if_non_empty);
  }
  return ok();
}

// The `source` and `kbs` objects of a dataset or the algorithm; nullopt if `key` is neither. `source`:
// only an empty/absent url is accepted (local upload); `kbs` only matters for remote sources.
std::optional<expected<void>> check_source_or_kbs(const std::string& key, const json& v,
                                                  const std::string& path) {
  if (key == "source")
    return check_ignored_object(v, path,
                                {{"url", field_type::string, "remote sources are not supported"},
                                 {"type", field_type::string},
                                 {"kbs_resource_path", field_type::string},
                                 {"encrypted", field_type::boolean}});
  if (key == "kbs")
    return check_ignored_object(v, path, {{"url", field_type::string}, {"enabled", field_type::boolean}});
  return std::nullopt;
}

expected<dataset_spec> parse_dataset(const json& j, const std::string& path) {
  if (!j.is_object()) return bad(path, "expected an object");
  dataset_spec d;
  bool have_hash = false, have_key = false, have_name = false;
  for (const auto& [k, v] : j.items()) {
    const std::string p = member_path(path, k);
    if (k == "filename") {
      auto s = parse_string(v, p);
      if (!s) return std::move(s).error();
      d.filename = std::move(*s);
      have_name = true;
    } else if (k == "hash") {
      auto h = parse_hash(v, p);
      if (!h) return std::move(h).error();
      d.hash = *h;
      have_hash = true;
    } else if (k == "user_key") {
      auto key = parse_key(v, p);
      if (!key) return std::move(key).error();
      d.user_key = std::move(*key);
      have_key = true;
    } else if (auto r = check_source_or_kbs(k, v, p)) {
      if (!*r) return std::move(*r).error();
    } else if (k == "decompress") {
      if (auto r = check_null_or(v, field_type::boolean, p); !r) return std::move(r).error();
    } else {
      return bad(p, "unknown key");
    }
  }
  if (!have_name) return bad(path + ".filename", "missing");
  if (!have_hash) return bad(path + ".hash", "missing");
  if (!have_key) return bad(path + ".user_key", "missing");
  return d;
}

expected<algorithm_spec> parse_algorithm(const json& j, const std::string& path) {
  if (!j.is_object()) return bad(path, "expected an object");
  algorithm_spec a;
  bool have_hash = false, have_key = false;
  for (const auto& [k, v] : j.items()) {
    const std::string p = member_path(path, k);
    if (k == "hash") {
      auto h = parse_hash(v, p);
      if (!h) return std::move(h).error();
      a.hash = *h;
      have_hash = true;
    } else if (k == "user_key") {
      auto key = parse_key(v, p);
      if (!key) return std::move(key).error();
      a.user_key = std::move(*key);
      have_key = true;
    } else if (k == "algo_type") {
      if (v.is_null()) continue;
      if (!v.is_string()) return bad(p, "expected \"bin\", \"python\" or \"wasm\"");
      const auto& s = v.get_ref<const std::string&>();
      if (s.empty() || s == "bin")
        a.type = algo_type::bin;
      else if (s == "python")
        a.type = algo_type::python;
      else if (s == "wasm")
        a.type = algo_type::wasm;
      else
        return bad(p, "expected \"bin\", \"python\" or \"wasm\"");
    } else if (k == "algo_args") {
      if (v.is_null()) continue;
      if (!v.is_array()) return bad(p, "expected an array of strings");
      for (size_t i = 0; i < v.size(); ++i) {
        if (!v[i].is_string()) return bad(p + "[" + std::to_string(i) + "]", "expected a string");
        a.algo_args.push_back(v[i].get<std::string>());
      }
    } else if (auto r = check_source_or_kbs(k, v, p)) {
      if (!*r) return std::move(*r).error();
    } else {
      return bad(p, "unknown key");
    }
  }
  if (!have_hash) return bad(path + ".hash", "missing");
  if (!have_key) return bad(path + ".user_key", "missing");
  return a;
}

expected<std::vector<uint8_t>> parse_consumer(const json& j, const std::string& path) {
  if (!j.is_object()) return bad(path, "expected an object with \"user_key\"");
  std::optional<std::vector<uint8_t>> key;
  for (const auto& [k, v] : j.items()) {
    const std::string p = member_path(path, k);
    if (k != "user_key") return bad(p, "unknown key");
    auto r = parse_key(v, p);
    if (!r) return std::move(r).error();
    key = std::move(*r);
  }
  if (!key) return bad(path + ".user_key", "missing");
  return std::move(*key);
}

expected<manifest> parse_root(const json& j) {
  if (!j.is_object()) return make_error(errc::invalid_request, "manifest: expected a JSON object");
  manifest m;
  bool have_id = false, have_algo = false, have_consumers = false;
  for (const auto& [k, v] : j.items()) {
    if (k == "id" || k == "name" || k == "description") {
      auto s = parse_string(v, k);
      if (!s) return std::move(s).error();
      (k == "id" ? m.id : k == "name" ? m.name : m.description) = std::move(*s);
      have_id = have_id || k == "id";
    } else if (k == "datasets") {
      if (v.is_null()) continue;
      if (!v.is_array()) return bad(k, "expected an array");
      for (size_t i = 0; i < v.size(); ++i) {
        auto d = parse_dataset(v[i], "datasets[" + std::to_string(i) + "]");
        if (!d) return std::move(d).error();
        m.datasets.push_back(std::move(*d));
      }
    } else if (k == "algorithm") {
      auto a = parse_algorithm(v, k);
      if (!a) return std::move(a).error();
      m.algorithm = std::move(*a);
      have_algo = true;
    } else if (k == "result_consumers") {
      if (v.is_null()) continue;
      if (!v.is_array()) return bad(k, "expected an array");
      for (size_t i = 0; i < v.size(); ++i) {
        auto c = parse_consumer(v[i], "result_consumers[" + std::to_string(i) + "]");
        if (!c) return std::move(c).error();
        m.result_consumers.push_back(std::move(*c));
      }
      have_consumers = true;
    } else if (k == "timeout_seconds") {
      if (!v.is_number_unsigned() || v.get<uint64_t>() > UINT32_MAX)
        return bad(k, "expected an integer 0..4294967295");
      m.timeout_seconds = static_cast<uint32_t>(v.get<uint64_t>());
    } else {
      return bad(k, "unknown key");
    }
  }
  if (!have_id) return bad("id", "missing");
  if (!have_algo) return bad("algorithm", "missing");
  if (!have_consumers) return bad("result_consumers", "missing");
  if (auto r = validate(m); !r) return std::move(r).error();
  return m;
}

bool valid_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  });
}

expected<void> check_filename(std::string_view f, const std::string& path) {
  if (f.empty()) return bad(path, "empty file name");
  if (f.size() > 255) return bad(path, "file name longer than 255 bytes");
  if (f == "." || f == "..") return bad(path, "not a file name");
  if (f.find('/') != std::string_view::npos || f.find('\\') != std::string_view::npos ||
      f.find('\0') != std::string_view::npos)
    return bad(path, "file name must not contain '/', '\\' or NUL");
  return ok();
}

template <class T>
std::vector<uint8_t> bytes_of(const flatbuffers::Vector<T>* v) {
  if (v == nullptr) return {};
  return {v->begin(), v->end()};
}

}  // namespace

std::string_view to_string(algo_type t) noexcept {
  switch (t) {
    case algo_type::bin:
      return "bin";
    case algo_type::python:
      return "python";
    case algo_type::wasm:
      return "wasm";
  }
  return "bin";
}

expected<void> check_public_key_der(std::span<const uint8_t> der) {
  if (der.empty()) return make_error(errc::invalid_request, "empty public key");
  if (der.size() > 16384) return make_error(errc::invalid_request, "public key too long");
  const unsigned char* p = der.data();
  evp_pkey key(d2i_PUBKEY(nullptr, &p, static_cast<long>(der.size())));
  if (!key) return make_error(errc::invalid_request, "not a DER SubjectPublicKeyInfo");
  if (p != der.data() + der.size())
    return make_error(errc::invalid_request, "trailing bytes after the public key");
  switch (EVP_PKEY_get_base_id(key.get())) {
    case EVP_PKEY_ED25519:
      return ok();
    case EVP_PKEY_RSA:
      if (EVP_PKEY_get_bits(key.get()) < 2048)
        return make_error(errc::invalid_request, "RSA key shorter than 2048 bits");
      return ok();
    case EVP_PKEY_EC: {
      char group[64] = {};
      size_t len = 0;
      if (EVP_PKEY_get_group_name(key.get(), group, sizeof group, &len) != 1 ||
          std::string_view(group, len) != "prime256v1")
        return make_error(errc::invalid_request, "EC key is not on P-256");
      return ok();
    }
    default:
      return make_error(errc::invalid_request, "unsupported key type (RSA, EC P-256 or Ed25519)");
  }
}

expected<void> validate(const manifest& m) {
  if (!valid_id(m.id)) return bad("id", "expected 1 to 64 characters of [A-Za-z0-9_-]");
  std::set<std::string_view> names;
  for (size_t i = 0; i < m.datasets.size(); ++i) {
    const std::string p = "datasets[" + std::to_string(i) + "]";
    const auto& d = m.datasets[i];
    if (auto r = check_filename(d.filename, p + ".filename"); !r) return r;
    if (!names.insert(d.filename).second)
      return bad(p + ".filename", "duplicate file name '" + d.filename + "'");
    if (auto r = check_public_key_der(d.user_key); !r) return bad(p + ".user_key", r.error().message);
  }
  if (auto r = check_public_key_der(m.algorithm.user_key); !r)
    return bad("algorithm.user_key", r.error().message);
  if (m.algorithm.type != algo_type::bin && m.algorithm.type != algo_type::python &&
      m.algorithm.type != algo_type::wasm)
    return bad("algorithm.algo_type", "unknown algorithm type");
  if (m.result_consumers.empty()) return bad("result_consumers", "at least one result consumer is required");
  for (size_t i = 0; i < m.result_consumers.size(); ++i)
    if (auto r = check_public_key_der(m.result_consumers[i]); !r)
      return bad("result_consumers[" + std::to_string(i) + "].user_key", r.error().message);
  return ok();
}

expected<manifest> parse_manifest_json(std::string_view text) {
  if (text.size() > max_manifest_json_size) return make_error(errc::too_large, "manifest: larger than 1 MiB");
  try {
    json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return make_error(errc::invalid_request, "manifest: not valid JSON");
    return parse_root(j);
  } catch (const std::exception& e) {
    return make_error(errc::invalid_request, std::string("manifest: ") + e.what());
  }
}

sha3_digest manifest_digest(const manifest& m) {
  crypto::sha3_256 h;
  auto put_u32 = [&](size_t n) {
    const std::array<uint8_t, 4> be = {static_cast<uint8_t>(n >> 24), static_cast<uint8_t>(n >> 16),
                                       static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(n)};
    h.update(be);
  };
  auto put = [&](std::span<const uint8_t> b) {
    put_u32(b.size());
    h.update(b);
  };
  auto put_str = [&](std::string_view s) {
    put(std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
  };
  h.update(std::string_view("cove-manifest-v1"));
  put_str(m.id);
  put_str(m.name);
  put_str(m.description);
  put_u32(m.datasets.size());
  for (const auto& d : m.datasets) {
    put_str(d.filename);
    put(d.hash);
    put(d.user_key);
  }
  put(m.algorithm.hash);
  put(m.algorithm.user_key);
  put_str(to_string(m.algorithm.type));
  put_u32(m.algorithm.algo_args.size());
  for (const auto& a : m.algorithm.algo_args) put_str(a);
  put_u32(m.result_consumers.size());
  for (const auto& c : m.result_consumers) put(c);
  put_u32(m.timeout_seconds);
  return h.finish();
}

std::string to_json(const manifest& m) {
  try {
    json j = json::object();
    j["id"] = m.id;
    if (!m.name.empty()) j["name"] = m.name;
    if (!m.description.empty()) j["description"] = m.description;
    j["datasets"] = json::array();
    for (const auto& d : m.datasets)
      j["datasets"].push_back(
          {{"filename", d.filename}, {"hash", hex_encode(d.hash)}, {"user_key", base64_encode(d.user_key)}});
    json a = {{"hash", hex_encode(m.algorithm.hash)},
              {"user_key", base64_encode(m.algorithm.user_key)},
              {"algo_type", std::string(to_string(m.algorithm.type))}};
    if (!m.algorithm.algo_args.empty()) a["algo_args"] = m.algorithm.algo_args;
    j["algorithm"] = std::move(a);
    j["result_consumers"] = json::array();
    for (const auto& c : m.result_consumers)
      j["result_consumers"].push_back({{"user_key", base64_encode(c)}});
    if (m.timeout_seconds != 0) j["timeout_seconds"] = m.timeout_seconds;
    return j.dump(2, ' ', false, json::error_handler_t::replace);
  } catch (const std::exception&) {
    return "{}";  // only on allocation failure
  }
}

flatbuffers::Offset<v1::Manifest> to_fbs(flatbuffers::FlatBufferBuilder& fbb, const manifest& m) {
  std::vector<flatbuffers::Offset<v1::Dataset>> datasets;
  datasets.reserve(m.datasets.size());
  for (const auto& d : m.datasets)
    datasets.push_back(v1::CreateDataset(fbb, fbb.CreateString(d.filename),
                                         fbb.CreateVector(d.hash.data(), d.hash.size()),
                                         fbb.CreateVector(d.user_key)));
  std::vector<flatbuffers::Offset<flatbuffers::String>> args;
  for (const auto& s : m.algorithm.algo_args) args.push_back(fbb.CreateString(s));
  auto algo = v1::CreateAlgorithm(fbb, fbb.CreateVector(m.algorithm.hash.data(), m.algorithm.hash.size()),
                                  fbb.CreateVector(m.algorithm.user_key),
                                  static_cast<v1::AlgoType>(m.algorithm.type), fbb.CreateVector(args));
  std::vector<flatbuffers::Offset<v1::Consumer>> consumers;
  for (const auto& c : m.result_consumers) consumers.push_back(v1::CreateConsumer(fbb, fbb.CreateVector(c)));
  return v1::CreateManifest(fbb, fbb.CreateString(m.id), fbb.CreateString(m.name),
                            fbb.CreateString(m.description), fbb.CreateVector(datasets), algo,
                            fbb.CreateVector(consumers), m.timeout_seconds);
}

expected<manifest> from_fbs(const v1::Manifest* f) {
  if (f == nullptr) return make_error(errc::invalid_request, "manifest: missing");
  manifest m;
  if (f->id() == nullptr) return bad("id", "missing");
  m.id = f->id()->str();
  if (f->name() != nullptr) m.name = f->name()->str();
  if (f->description() != nullptr) m.description = f->description()->str();
  if (const auto* ds = f->datasets()) {
    for (flatbuffers::uoffset_t i = 0; i < ds->size(); ++i) {
      const std::string p = "datasets[" + std::to_string(i) + "]";
      const v1::Dataset* d = ds->Get(i);
      if (d == nullptr) return bad(p, "missing");
      dataset_spec spec;
      if (d->filename() == nullptr) return bad(p + ".filename", "missing");
      spec.filename = d->filename()->str();
      if (d->hash() == nullptr || d->hash()->size() != 32) return bad(p + ".hash", "expected 32 bytes");
      std::copy(d->hash()->begin(), d->hash()->end(), spec.hash.begin());
      spec.user_key = bytes_of(d->user_key());
      m.datasets.push_back(std::move(spec));
    }
  }
  const v1::Algorithm* a = f->algorithm();
  if (a == nullptr) return bad("algorithm", "missing");
  if (a->hash() == nullptr || a->hash()->size() != 32) return bad("algorithm.hash", "expected 32 bytes");
  std::copy(a->hash()->begin(), a->hash()->end(), m.algorithm.hash.begin());
  m.algorithm.user_key = bytes_of(a->user_key());
  switch (a->algo_type()) {
    case v1::AlgoType::bin:
      m.algorithm.type = algo_type::bin;
      break;
    case v1::AlgoType::python:
      m.algorithm.type = algo_type::python;
      break;
    case v1::AlgoType::wasm:
      m.algorithm.type = algo_type::wasm;
      break;
    default:
      return bad("algorithm.algo_type", "unknown algorithm type");
  }
  if (const auto* args = a->algo_args()) {
    for (flatbuffers::uoffset_t i = 0; i < args->size(); ++i) {
      if (args->Get(i) == nullptr) return bad("algorithm.algo_args[" + std::to_string(i) + "]", "missing");
      m.algorithm.algo_args.push_back(args->Get(i)->str());
    }
  }
  if (const auto* cs = f->result_consumers()) {
    for (flatbuffers::uoffset_t i = 0; i < cs->size(); ++i) {
      const v1::Consumer* c = cs->Get(i);
      if (c == nullptr) return bad("result_consumers[" + std::to_string(i) + "]", "missing");
      m.result_consumers.push_back(bytes_of(c->user_key()));
    }
  }
  m.timeout_seconds = f->timeout_seconds();
  if (auto r = validate(m); !r) return std::move(r).error();
  return m;
}

}  // namespace cove
