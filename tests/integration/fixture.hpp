#pragma once
// Integration fixture: a real nats-server on a random port, a real coved (child
// process, process backend, simulated TEE) and helpers to drive computations
// through the same client library the `cove` CLI uses. Every process is owned
// and killed by PID; every wait has a deadline.
#include <doctest/doctest.h>

#include <sys/types.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cove/attest/policy.hpp"
#include "cove/bus/connection.hpp"
#include "cove/bus/envelope.hpp"
#include "cove/bus/subjects.hpp"
#include "cove/cli/client.hpp"
#include "cove/crypto/hash.hpp"
#include "cove/crypto/keys.hpp"
#include "cove/manifest.hpp"
#include "cove/schemas/envelope_generated.h"
#include "cove/test/nats_server.hpp"
#include "cove/test/process.hpp"
#include "cove/zip.hpp"

namespace cove::itest {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

inline fs::path bin_dir() {
  return COVE_BIN_DIR;
}

/// Unwraps an expected in a test: fails the test with the error text.
template <class T>
T must(expected<T> r, const char* what = "") {
  if (!r) FAIL(what << ": " << r.error().to_string());
  return std::move(*r);
}
inline void must(const expected<void>& r, const char* what = "") {
  if (!r) FAIL(what << ": " << r.error().to_string());
}

inline void write_file(const fs::path& p, std::string_view content,
                       fs::perms perms = fs::perms::owner_read | fs::perms::owner_write) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << content;
  f.close();
  fs::permissions(p, perms);
}

inline std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

/// A participant of a computation: a key pair on disk.
struct participant {
  crypto::private_key key;
  fs::path key_file;
  std::vector<uint8_t> der() const { return key.public_key().der(); }
};

/// coved's embedded nats-server is coved's child: a clean coved stops it, but a
/// test that fails midway may kill coved with SIGKILL. This kills the server it
/// left behind, by the PID in its ports file name (<state>/nats/nats-server_<pid>.ports).
class embedded_server_reaper {
 public:
  explicit embedded_server_reaper(const fs::path& state) : dir_(state / "nats") {}
  ~embedded_server_reaper() {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir_, ec)) {
      auto name = e.path().filename().string();
      auto us = name.rfind('_');
      if (e.path().extension() != ".ports" || us == std::string::npos) continue;
      auto pid = static_cast<pid_t>(std::strtol(name.substr(us + 1).c_str(), nullptr, 10));
      if (pid > 1) ::kill(pid, SIGKILL);
    }
  }
  embedded_server_reaper(const embedded_server_reaper&) = delete;
  embedded_server_reaper& operator=(const embedded_server_reaper&) = delete;

 private:
  fs::path dir_;
};

/// nats-server + coved, torn down in reverse order.
class cluster {
 public:
  explicit cluster(std::vector<std::string> extra_coved_args = {})
      : dir_("cove-itest"), nats_(must(test::nats_server::start(), "nats-server")) {
    start_coved(std::move(extra_coved_args));
    bus_ = must(bus::connection::connect({.url = nats_.url(), .name = "itest"}), "connect");
    policy_ = must(cli::load_policy(state_dir() / "sim" / "policy.json"), "policy");
  }

  /// coved gets SIGTERM first so it removes its CVMs (agents live in their own
  /// process groups); members then kill whatever is left by PID.
  ~cluster() {
    bus_.reset();
    if (coved_.running()) {
      auto status = coved_.terminate(10s);
      // A clean shutdown exits 0; sanitizer findings in coved make it non-zero.
      CHECK_MESSAGE(status == 0, "coved exit status " << status.value_or(-1) << "; log in " << dir_.path());
    }
  }
  cluster(const cluster&) = delete;
  cluster& operator=(const cluster&) = delete;

  void start_coved(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {
        (bin_dir() / "coved").string(), "--nats",      nats_.url(), "--state-dir",
        state_dir().string(),           "--log-level", "debug"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    coved_ = must(test::child_process::spawn(argv, {}, dir_.path(), "coved"), "coved");
    // coved is ready when the manager answers a list request.
    auto probe = must(bus::connection::connect({.url = nats_.url(), .name = "probe"}), "connect");
    flatbuffers::FlatBufferBuilder b(64);
    auto payload = bus::finish(b, v1::CreateCvmListRequest(b), {}, "itest");
    bool ready = test::wait_until(
        [&] {
          REQUIRE(coved_.running());
          return static_cast<bool>(
              bus::request_typed<v1::CvmList>(*probe, bus::subjects::manager_list, payload, 500ms));
        },
        test::deadline_in(20s));
    REQUIRE_MESSAGE(ready, "coved did not become ready; log in " << dir_.path());
  }

  fs::path dir() const { return dir_.path(); }
  fs::path state_dir() const { return dir_.path() / "state"; }
  bus::connection& bus() { return *bus_; }
  std::shared_ptr<bus::connection> bus_ptr() { return bus_; }
  const attest::snp_policy& policy() const { return policy_; }
  test::nats_server& nats() { return nats_; }
  test::child_process& coved() { return coved_; }

  /// Creates a process-backend CVM and returns its id.
  std::string create_cvm(uint32_t ttl_seconds = 0) {
    flatbuffers::FlatBufferBuilder b(64);
    auto req = v1::CreateCvmCreate(b, v1::Backend::process, v1::Tee::sim, ttl_seconds);
    auto r = must(bus::request_typed<v1::CvmInfo>(*bus_, bus::subjects::manager_create,
                                                  bus::finish(b, req, {}, "itest"), 20s),
                  "cvm create");
    REQUIRE(r.body->id() != nullptr);
    CHECK(r.body->state() == v1::CvmState::running);
    return r.body->id()->str();
  }

  expected<bus::reply<v1::CvmInfo>> cvm_info(const std::string& id) {
    flatbuffers::FlatBufferBuilder b(64);
    auto req = v1::CreateCvmRef(b, b.CreateString(id));
    return bus::request_typed<v1::CvmInfo>(*bus_, bus::subjects::manager_info,
                                           bus::finish(b, req, {}, "itest"), 5s);
  }

  /// cove.v1.manager.remove: the reply comes once the agent has exited and its files are gone.
  expected<bus::reply<v1::CvmInfo>> remove_cvm(const std::string& id, std::chrono::seconds limit = 10s) {
    flatbuffers::FlatBufferBuilder b(64);
    auto req = v1::CreateCvmRef(b, b.CreateString(id));
    return bus::request_typed<v1::CvmInfo>(*bus_, bus::subjects::manager_remove,
                                           bus::finish(b, req, {}, "itest"), limit);
  }

  participant make_participant(const std::string& name, crypto::key_type type = crypto::key_type::ed25519) {
    auto key = must(crypto::private_key::generate(type, 2048), "keygen");
    auto file = dir_.path() / (name + ".key");
    write_file(file, key.to_pem());
    return participant{std::move(key), file};
  }

  /// Writes `content` to a file in the test directory and returns its path.
  fs::path make_file(const std::string& name, std::string_view content, bool executable = false) {
    auto p = dir_.path() / "inputs";
    fs::create_directories(p);
    p /= name;
    write_file(p, content,
               executable ? fs::perms::owner_all : fs::perms::owner_read | fs::perms::owner_write);
    return p;
  }

  /// Sends a manifest through the computation service; returns the agent's reply state.
  expected<std::string> start_computation(const std::string& cvm_id, const manifest& m) {
    flatbuffers::FlatBufferBuilder b(4096);
    auto off = to_fbs(b, m);
    auto req = v1::CreateComputationStart(b, b.CreateString(cvm_id), off);
    auto r = bus::request_typed<v1::ComputationStatus>(*bus_, bus::subjects::computation_start,
                                                       bus::finish(b, req, {}, "itest"), 10s);
    if (!r) return r.error();
    return std::string(v1::EnumNameAgentState(r->body->state()));
  }

  /// Fetches the result as `consumer` (attesting the CVM first), unzips it into a fresh
  /// <dir>/result and returns the text of `name` from it.
  std::string fetch_result_file(const std::string& cvm_id, const participant& consumer,
                                const std::string& name, const cli::client_options& opt = {}) {
    auto out = dir_.path() / "result.zip";
    must(cli::fetch_result(*bus_, cvm_id, consumer.key, policy_, out, nullptr, opt), "result");
    auto extracted = dir_.path() / "result";
    fs::remove_all(extracted);
    must(extract_zip(out, extracted), "unzip");
    return read_file(extracted / name);
  }

  /// Polls the agent's status until `state` (or Failed) is reached.
  cli::status wait_for_state(const std::string& cvm_id, std::string_view state,
                             std::chrono::seconds limit = 30s) {
    cli::status last;
    bool reached = test::wait_until(
        [&] {
          auto s = cli::computation_status(*bus_, cvm_id);
          if (!s) return false;
          last = *s;
          return last.state == state || last.state == "Failed";
        },
        test::deadline_in(limit));
    INFO("last state " << last.state << ": " << last.message);
    REQUIRE(reached);
    return last;
  }

 private:
  test::temp_dir dir_;
  test::nats_server nats_;
  test::child_process coved_;
  std::shared_ptr<bus::connection> bus_;
  attest::snp_policy policy_;
};

/// Checks that `r` failed with `code` and a message containing `text`.
template <class T>
void check_error(const expected<T>& r, errc code, std::string_view text) {
  REQUIRE_FALSE(r.has_value());
  INFO(r.error().to_string());
  CHECK(r.error().code == code);
  CHECK(r.error().message.find(text) != std::string::npos);
}

inline bool dir_empty(const fs::path& p) {
  std::error_code ec;
  return !fs::exists(p, ec) || fs::is_empty(p, ec);
}

inline sha3_digest sha3_of_file(const fs::path& p) {
  return must(crypto::sha3_256_file(p), "sha3");
}

/// A manifest for one algorithm, some datasets and some consumers.
inline manifest make_manifest(const std::string& id, const fs::path& algo, algo_type type,
                              const participant& algo_owner,
                              const std::vector<std::pair<fs::path, const participant*>>& datasets,
                              const std::vector<const participant*>& consumers, uint32_t timeout_seconds = 0,
                              std::vector<std::string> args = {}) {
  manifest m;
  m.id = id;
  m.name = "integration " + id;
  m.algorithm.hash = sha3_of_file(algo);
  m.algorithm.user_key = algo_owner.der();
  m.algorithm.type = type;
  m.algorithm.algo_args = std::move(args);
  for (const auto& [file, owner] : datasets)
    m.datasets.push_back(dataset_spec{file.filename().string(), sha3_of_file(file), owner->der()});
  for (const auto* c : consumers) m.result_consumers.push_back(c->der());
  m.timeout_seconds = timeout_seconds;
  return m;
}

}  // namespace cove::itest
