#pragma once
// The computation manifest: who uploads which algorithm and datasets (by
// SHA3-256 hash and signing key) and who may read the results. Its JSON form
// is cocos's internal `Computation` shape (cocos-interfaces.md §3.3), its bus
// form is cove.v1.Manifest (schemas/computation.fbs). Both parsers treat the
// input as untrusted and apply the same rules (see validate()).
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <flatbuffers/flatbuffers.h>

#include "cove/expected.hpp"
#include "cove/schemas/computation_generated.h"

namespace cove {

enum class algo_type : uint8_t { bin = 0, python = 1, wasm = 2 };

/// "bin", "python", "wasm".
std::string_view to_string(algo_type t) noexcept;

/// SHA3-256 of a file's plaintext.
using sha3_digest = std::array<uint8_t, 32>;

struct dataset_spec {
  std::string filename;           // a plain file name: no '/', not "." or ".."
  sha3_digest hash{};             // SHA3-256 of the plaintext
  std::vector<uint8_t> user_key;  // DER SubjectPublicKeyInfo of the only allowed uploader
  friend bool operator==(const dataset_spec&, const dataset_spec&) = default;
};

struct algorithm_spec {
  sha3_digest hash{};
  std::vector<uint8_t> user_key;    // DER SPKI
  algo_type type = algo_type::bin;  // JSON key "algo_type"
  std::vector<std::string> algo_args;
  friend bool operator==(const algorithm_spec&, const algorithm_spec&) = default;
};

struct manifest {
  std::string id;  // [A-Za-z0-9_-]{1,64}: it is used in bus subjects
  std::string name;
  std::string description;
  std::vector<dataset_spec> datasets;
  algorithm_spec algorithm;
  std::vector<std::vector<uint8_t>> result_consumers;  // DER SPKI each, at least one
  uint32_t timeout_seconds = 0;                        // cove extension; 0 = the agent's default
  friend bool operator==(const manifest&, const manifest&) = default;
};

/// Largest manifest JSON text accepted (the bus payload limit).
inline constexpr size_t max_manifest_json_size = 1 << 20;

/// Parses cocos's JSON form. Accepts `hash` as 64 hex characters or as an
/// array of 32 integers 0..255, `user_key` as base64 DER SPKI or as a PEM
/// "PUBLIC KEY" block, `algo_type` "bin"/"python"/"wasm" (missing = bin).
/// cocos's `source`, `kbs` and `decompress` keys are accepted and ignored,
/// except that a non-empty `source.url` is an error (remote sources are not
/// supported yet). Unknown keys are errors. Every error is
/// errc::invalid_request and starts with the JSON path, e.g.
/// "datasets[1].hash: expected 64 hex characters or an array of 32 integers".
expected<manifest> parse_manifest_json(std::string_view text);

/// JSON text (hex hashes, base64 DER keys) that parse_manifest_json accepts.
std::string to_json(const manifest& m);

/// Checks the rules both parsers enforce: id pattern, at least one result
/// consumer, plain unique dataset filenames, every key a DER SPKI of type
/// RSA (>= 2048 bits), EC P-256 or Ed25519.
expected<void> validate(const manifest& m);

/// The manifest's identity, which every upload and result request signs:
/// SHA3-256("cove-manifest-v1" || lp(id) || lp(name) || lp(description)
///   || u32(#datasets) || per dataset lp(filename) lp(hash) lp(user_key)
///   || lp(algorithm.hash) || lp(algorithm.user_key) || lp(algo_type name)
///   || u32(#args) || lp(arg)... || u32(#consumers) || lp(user_key)... || u32(timeout_seconds)),
/// lp(x) = u32 big-endian length || x. Any party can recompute it from the JSON.
sha3_digest manifest_digest(const manifest& m);

/// Checks that `der` is exactly one DER SubjectPublicKeyInfo of an accepted
/// key type (see validate()).
expected<void> check_public_key_der(std::span<const uint8_t> der);

/// Serializes into `fbb` (the caller finishes the buffer or nests the table).
flatbuffers::Offset<v1::Manifest> to_fbs(flatbuffers::FlatBufferBuilder& fbb, const manifest& m);

/// Reads a verified v1::Manifest (from the untrusted bus: every field is
/// checked; null pointers and wrong hash lengths are errors, not crashes).
expected<manifest> from_fbs(const v1::Manifest* m);

}  // namespace cove
