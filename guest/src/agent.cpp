#include "cove/agent/agent.hpp"

#include <sodium.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "cove/agent/cocos_auth.hpp"
#include "cove/agent/cocos_front.hpp"
#include "cove/agent/eat.hpp"
#include "cove/agent/file_writer.hpp"
#include "cove/agent/runner.hpp"
#include "cove/agent/sealed_reader.hpp"
#include "cove/agent/tpm_provider.hpp"
#include "cove/agent/work_queue.hpp"
#include "cove/attest/dice.hpp"
#include "cove/attest/ima.hpp"
#include "cove/attest/sim_store.hpp"
#include "cove/bridge/client.hpp"
#include "cove/bus/connection.hpp"
#include "cove/bus/envelope.hpp"
#include "cove/bus/subjects.hpp"
#include "cove/crypto/encoding.hpp"
#include "cove/crypto/hash.hpp"
#include "cove/crypto/keys.hpp"
#include "cove/crypto/seal.hpp"
#include "cove/crypto/statements.hpp"
#include "cove/log.hpp"
#include "cove/manifest.hpp"
#include "cove/schemas/bridge_generated.h"
#include "cove/schemas/envelope_generated.h"
#include "cove/zip.hpp"

namespace cove::agent {

namespace fs = std::filesystem;
using bytes = std::vector<uint8_t>;
using v1::AgentState;

expected<void> validate(const agent_config& cfg) {
  if (!bus::valid_id(cfg.cvm_id))
    return make_error(errc::invalid_request, "cvm_id: must match [a-z0-9-]{1,64}");
  if (!cfg.nats_url.empty() && !cfg.bridge_address.empty())
    return make_error(errc::invalid_request, "nats_url (direct) and bridge_address exclude each other");
  if (cfg.nats_url.empty() && cfg.bridge_address.empty() && cfg.cocos.listen.empty())
    return make_error(
        errc::invalid_request,
        "one of nats_url (direct), bridge_address or the cocos front door (grpc listen) is required");
  if (!cfg.cocos.listen.empty())
    if (auto c = validate(cfg.cocos); !c) return c.error();
  if (!cfg.bridge_address.empty() && cfg.bridge_ca.empty())
    return make_error(errc::invalid_request, "bridge_ca: the bridge certificate to pin is required");
  if (cfg.work_dir.empty()) return make_error(errc::invalid_request, "work_dir: empty");
  if (cfg.sim.dir.empty()) return make_error(errc::invalid_request, "sim tee dir: empty");
  if (cfg.chunk_size == 0 || cfg.chunk_size > 768 * 1024)
    return make_error(errc::invalid_request, "chunk_size: must be 1..786432 (NATS max_payload is 1 MiB)");
  if (cfg.window == 0 || cfg.window > 256) return make_error(errc::invalid_request, "window: must be 1..256");
  if (cfg.heartbeat_interval.count() != 0 && (cfg.heartbeat_interval < std::chrono::milliseconds(10) ||
                                              cfg.heartbeat_interval > std::chrono::minutes(10)))
    return make_error(errc::invalid_request, "heartbeat_interval: 0 (off) or 10 ms .. 10 min");
  return ok();
}

namespace {

std::atomic<bool> g_stop{false};
work_queue* g_queue = nullptr;

extern "C" void on_signal(int) {
  g_stop = true;
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string_view state_name(AgentState s) {
  return v1::EnumNameAgentState(s);
}

/// The agent's way onto the bus: the attested bridge (production) or NATS directly
/// (development and benchmarks only: the agent then needs bus access of its own).
class bus_link {
 public:
  using handler = std::function<void(bus::message&&)>;
  virtual ~bus_link() = default;
  virtual expected<void> subscribe(const std::string& subject, handler h) = 0;
  virtual expected<void> publish(std::string_view subject, std::span<const uint8_t> data) = 0;
  virtual expected<void> flush(std::chrono::milliseconds timeout) = 0;
};

class nats_link final : public bus_link {
 public:
  explicit nats_link(std::shared_ptr<bus::connection> c) : bus_(std::move(c)) {}
  ~nats_link() override {
    subscriptions_.clear();
    bus_.reset();
  }
  expected<void> subscribe(const std::string& subject, handler h) override {
    auto sub = bus_->subscribe(subject, std::move(h));
    if (!sub) return sub.error();
    subscriptions_.push_back(std::move(*sub));
    return ok();
  }
  expected<void> publish(std::string_view subject, std::span<const uint8_t> data) override {
    return bus_->publish(subject, data);
  }
  expected<void> flush(std::chrono::milliseconds timeout) override { return bus_->flush(timeout); }

 private:
  std::shared_ptr<bus::connection> bus_;
  std::vector<bus::subscription> subscriptions_;
};

class bridge_link final : public bus_link {
 public:
  explicit bridge_link(std::unique_ptr<bridge::client> c) : client_(std::move(c)) {}
  expected<void> subscribe(const std::string& subject, handler h) override {
    return client_->subscribe(subject, std::move(h));
  }
  expected<void> publish(std::string_view subject, std::span<const uint8_t> data) override {
    return client_->publish(subject, data);
  }
  expected<void> flush(std::chrono::milliseconds timeout) override { return client_->flush(timeout); }

 private:
  std::unique_ptr<bridge::client> client_;
};

/// An upload in progress: the queue thread decrypts chunk by chunk; a writer thread
/// hashes and stores, so decrypting the next chunk overlaps both.
struct upload_stream {
  std::string id;
  v1::FileRole role;
  std::string role_name;  // "algorithm" | "dataset"
  std::string filename;
  uint64_t size = 0;
  uint64_t received = 0;
  uint64_t next_seq = 0;
  crypto::sha3_digest expected_hash{};
  crypto::public_key signer;
  std::array<uint8_t, 32> sender_pk{};
  crypto::open_stream opener;
  fs::path part_path;
  std::unique_ptr<file_writer> writer;
  std::chrono::steady_clock::time_point last_activity;
};

/// A result download in progress: a reader thread reads and seals ahead, in order.
struct result_stream {
  std::string id;
  std::string consumer_fingerprint;
  std::unique_ptr<sealed_reader> reader;
  uint64_t size = 0;
  uint64_t chunks = 0;
  uint64_t next_seq = 0;
  std::chrono::steady_clock::time_point last_activity;
};

/// /proc/uptime's first field (the launch profile's clock), if readable.
std::optional<double> system_uptime() {
  std::ifstream up("/proc/uptime");
  double s = 0;
  if (up >> s) return s;
  return std::nullopt;
}

class agent final : public cocos_backend {
 public:
  explicit agent(agent_config cfg) : cfg_(std::move(cfg)) {}
  // The bridge link first: its threads build hellos (bridge_hello uses tpm_, kx_, ...).
  ~agent() override { link_.reset(); }
  agent(const agent&) = delete;
  agent& operator=(const agent&) = delete;

  int main() {
    // The anchor of the launch profile (docs/performance.md): in a VM, the log's wall
    // clock came from the RTC (whole seconds), eos/init's steps print the uptime.
    if (auto s = system_uptime())
      spdlog::info("agent {} starting at system uptime {:.2f} s", cfg_.cvm_id, *s);
    if (sodium_init() < 0) {
      spdlog::critical("libsodium failed to initialise");
      return 1;
    }
    kx_ = crypto::kx_keypair::generate();
    crypto_sign_keypair(sign_pk_.data(), sign_sk_.data());
    auto tee = attest::load_sim_identity(cfg_.sim.dir);
    if (!tee) {
      spdlog::critical("simulated TEE identity in {}: {}", cfg_.sim.dir.string(), tee.error().to_string());
      return 1;
    }
    chip_ = std::move(*tee);
    measurement_ = own_measurement();
    // The simulated TEE's DICE identity: device (UDS from this chip's VCEK key) -> firmware
    // -> kernel -> agent (FWID = the measurement). Its keys are deterministic: built once.
    auto dice = attest::make_sim_agent_dice_chain(
        std::span(reinterpret_cast<const uint8_t*>(chip_.chip.vcek_key_pem.data()),
                  chip_.chip.vcek_key_pem.size()),
        measurement_);
    if (!dice) {
      spdlog::critical("simulated DICE chain: {}", dice.error().to_string());
      return 1;
    }
    dice_ = std::move(*dice);
    if (auto s = system_uptime())
      spdlog::info("identity (sim chip, measurement, DICE) ready at uptime {:.2f} s", *s);
    if (auto t = open_vtpm(); !t) {
      spdlog::critical("vtpm {}: {}", cfg_.vtpm_tcti, t.error().to_string());
      return 1;
    }

    std::error_code ec;
    fs::create_directories(cfg_.work_dir, ec);
    if (ec) {
      spdlog::critical("work dir {}: {}", cfg_.work_dir.string(), ec.message());
      return 1;
    }
    wipe_run_files();

    sender_ = "agent." + cfg_.cvm_id;
    if (!cfg_.cocos.listen.empty()) {
      auto k = crypto::private_key::generate(crypto::key_type::ecdsa_p256);
      if (!k) {
        spdlog::critical("EAT signing key: {}", k.error().to_string());
        return 1;
      }
      eat_key_.emplace(std::move(*k));
    }
    if (!cfg_.nats_url.empty() || !cfg_.bridge_address.empty()) {
      if (int rc = join_bus(); rc != 0) return rc;
    }

    g_queue = &queue_;
    std::signal(SIGTERM, on_signal);
    std::signal(SIGINT, on_signal);
    spdlog::info("agent {} up; kx key {}", cfg_.cvm_id, crypto::to_hex(kx_.public_key).substr(0, 16));
    transition(AgentState::Idle, "agent started");
    transition(AgentState::ReceivingManifest, "waiting for a computation manifest");
    if (!cfg_.manifest_file.empty()) {
      if (auto r = load_manifest_file(); !r) {
        spdlog::critical("--manifest {}: {}", cfg_.manifest_file.string(), r.error().to_string());
        shutdown();
        return 1;
      }
    }
    if (!cfg_.cocos.listen.empty()) {
      auto front = cocos_front::start(cfg_.cocos, *this);
      if (!front) {
        spdlog::critical("cocos front door: {}", front.error().to_string());
        shutdown();
        return 1;
      }
      front_ = std::move(*front);
    }

    started_ = std::chrono::steady_clock::now();
    publish_heartbeat(started_);
    auto tick = std::chrono::milliseconds(200);
    if (cfg_.heartbeat_interval.count() > 0) tick = std::min(tick, cfg_.heartbeat_interval);
    queue_.run(tick, [this] { on_tick(); });
    shutdown();
    return 0;
  }

 private:
  int join_bus() {
    if (auto l = open_link(); !l) {
      spdlog::critical("bus: {}", l.error().to_string());
      return 1;
    }

    const std::pair<const char*, void (agent::*)(const bus::message&)> routes[] = {
        {"attest", &agent::on_attest}, {"manifest", &agent::on_manifest},
        {"upload", &agent::on_upload}, {"chunk", &agent::on_chunk},
        {"result", &agent::on_result}, {"result.chunk", &agent::on_result_chunk},
        {"status", &agent::on_status}, {"stop", &agent::on_stop},
    };
    for (const auto& [leaf, handler] : routes) {
      auto subject = *bus::cvm_subject(cfg_.cvm_id, leaf);
      auto sub = link_->subscribe(subject, [this, handler = handler](bus::message&& m) {
        queue_.post([this, handler, m = std::move(m)] { (this->*handler)(m); });
      });
      if (!sub) {
        spdlog::critical("subscribe {}: {}", subject, sub.error().to_string());
        return 1;
      }
    }
    if (auto f = link_->flush(std::chrono::seconds(5)); !f) {
      spdlog::critical("bus flush: {}", f.error().to_string());
      return 1;
    }
    return 0;
  }

  // ---- plumbing -----------------------------------------------------------

  expected<void> open_link() {
    if (cfg_.bridge_address.empty()) {
      auto conn = bus::connection::connect({.url = cfg_.nats_url, .name = "agent." + cfg_.cvm_id});
      if (!conn) return conn.error();
      link_ = std::make_unique<nats_link>(std::move(*conn));
      return ok();
    }
    // A refusal is not fatal: the CVM's policy may change (cove cvm policy). The manager
    // removes a CVM whose agent is refused while starting.
    auto wait = std::chrono::milliseconds(100);
    for (;;) {
      auto client = bridge::client::connect(
          {.address = cfg_.bridge_address, .ca_file = cfg_.bridge_ca},
          [this](const std::array<uint8_t, 32>& exporter) { return bridge_hello(exporter); },
          [](std::string_view state, const std::string& detail) {
            spdlog::info("bridge link {}: {}", state, detail);
          });
      if (client) {
        link_ = std::make_unique<bridge_link>(std::move(*client));
        return ok();
      }
      if (client.error().code != errc::attestation_failed && client.error().code != errc::unavailable &&
          client.error().code != errc::timeout)
        return client.error();
      spdlog::warn("bridge: {}; retrying in {} ms", client.error().to_string(), wait.count());
      for (auto until = std::chrono::steady_clock::now() + wait; std::chrono::steady_clock::now() < until;) {
        if (g_stop) return make_error(errc::unavailable, "stopped before joining the bus");
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      wait = std::min(wait * 2, std::chrono::milliseconds(2000));
    }
  }

  /// With --vtpm: connects to the vTPM, creates the attestation key and keeps its TPM name
  /// (bound into every report) and the firmware event log, if the guest has one.
  expected<void> open_vtpm() {
    if (cfg_.vtpm_tcti.empty()) return ok();
    auto tpm = tpm_provider::open(cfg_.vtpm_tcti);
    if (!tpm) return tpm.error();
    auto ak = attest::parse_tpm_public(tpm->ak_public().tpm2b_public);
    if (!ak) return ak.error();
    if (ak->name.empty()) return make_error(errc::internal, "the AK has no sha256 name");
    ak_name_ = std::move(ak->name);
    tpm_ = std::move(*tpm);
    // The firmware log belongs to the platform's TPM: only with the device TCTI is it this
    // vTPM's (a swtpm reached over TCP has none; the host's log would be misleading).
    const bool device = cfg_.vtpm_tcti.starts_with("device");
    std::error_code ec;
    if (device && !cfg_.vtpm_event_log.empty() && fs::exists(cfg_.vtpm_event_log, ec)) {
      // securityfs reports size 0: read up to the cap instead of trusting the size.
      std::ifstream in(cfg_.vtpm_event_log, std::ios::binary);
      bytes log(max_event_log + 1);
      in.read(reinterpret_cast<char*>(log.data()), static_cast<std::streamsize>(log.size()));
      log.resize(static_cast<size_t>(in.gcount()));
      if (log.size() > max_event_log)
        spdlog::warn("vtpm: event log {} is over {} bytes; evidence carries none",
                     cfg_.vtpm_event_log.string(), max_event_log);
      else
        event_log_ = std::move(log);
    }
    // The IMA list, likewise, is this vTPM's only with the device TCTI; an explicit path is
    // the operator's word (tests: a list whose entries were extended into a swtpm).
    if (cfg_.ima_list_explicit) {
      std::ifstream probe(cfg_.ima_list, std::ios::binary);
      if (!probe)
        return make_error(errc::invalid_request, "--ima-list " + cfg_.ima_list.string() + ": cannot be read");
      ima_path_ = cfg_.ima_list;
    } else if (device && !cfg_.ima_list.empty() && fs::exists(cfg_.ima_list, ec)) {
      ima_path_ = cfg_.ima_list;
    }
    quote_pcrs_ = default_quote_pcrs();
    if (!ima_path_.empty()) {
      quote_pcrs_.push_back(attest::ima_default_pcr);
      std::sort(quote_pcrs_.begin(), quote_pcrs_.end());
    }
    spdlog::info("vtpm: AK {} on {}; event log {} bytes; IMA list {} ({})",
                 crypto::to_hex(ak_name_).substr(0, 20), cfg_.vtpm_tcti, event_log_.size(),
                 ima_path_.empty() ? "none" : ima_path_.string(), tpm_->open_profile());
    return ok();
  }

  /// A quote with extraData = vtpm_quote_nonce(report_data), checked locally against the
  /// PCR values read with it (a PCR extended in between: quote again).
  expected<tpm_quote_result> vtpm_quote(const std::array<uint8_t, 64>& report_data) {
    auto nonce = crypto::vtpm_quote_nonce(report_data);
    std::lock_guard lock(tpm_mu_);
    for (int attempt = 0;; ++attempt) {
      auto q = tpm_->quote(nonce, quote_pcrs_);
      if (!q) return q.error();
      auto parsed = attest::parse_tpm_attest(q->attest);
      if (!parsed) return parsed.error();
      auto digest = attest::tpm_pcr_digest(parsed->pcr_select, q->pcrs);
      if (digest && *digest == parsed->pcr_digest) return q;
      if (attempt == 2) return make_error(errc::unavailable, "vtpm: PCRs keep changing under the quote");
    }
  }

  /// The IMA list to send beside a quote whose PCR values are `quoted`, read after the quote:
  /// the kernel appends an entry before it extends PCR 10, so the file may run ahead of the
  /// quote, and the prefix that replays the quoted PCR 10 is sent. A list with no such prefix
  /// is sent whole (the verifier names the mismatch); an unreadable or oversized one is not
  /// sent (a policy asking for IMA then fails closed).
  bytes ima_list_for(const attest::tpm_pcr_values& quoted) const {
    if (ima_path_.empty()) return {};
    std::ifstream in(ima_path_, std::ios::binary);
    if (!in) {
      spdlog::warn("vtpm: cannot read the IMA list {}; evidence carries none", ima_path_.string());
      return {};
    }
    // securityfs reports size 0: read up to the cap instead of trusting the size.
    bytes list(max_ima_list + 1);
    in.read(reinterpret_cast<char*>(list.data()), static_cast<std::streamsize>(list.size()));
    list.resize(static_cast<size_t>(in.gcount()));
    if (list.size() > max_ima_list) {
      spdlog::warn("vtpm: IMA list {} is over {} bytes; evidence carries none", ima_path_.string(),
                   max_ima_list);
      return {};
    }
    auto parsed = attest::parse_ima_list(list);
    auto pcr = quoted.find(attest::ima_default_pcr);
    if (parsed && pcr != quoted.end()) {
      if (auto n = attest::ima_replaying_prefix(list, *parsed, pcr->second)) {
        list.resize(*n);
        return list;
      }
    }
    spdlog::warn("vtpm: IMA list {} {}; sending it whole", ima_path_.string(),
                 parsed ? "does not replay the quoted pcr[10]" : parsed.error().message);
    return list;
  }

  /// Evidence whose REPORT_DATA is `report_data`: the simulated SEV-SNP report signed by
  /// this CVM's VCEK, the VCEK→ASK→ARK chain, the agent's two public keys, the DICE chain with
  /// the agent layer key's signature over report_data and, with a vTPM, the AK and a quote
  /// over report_data (report_data must then bind ak_name_).
  expected<flatbuffers::Offset<v1::Evidence>> build_evidence(flatbuffers::FlatBufferBuilder& b,
                                                             const std::array<uint8_t, 64>& report_data) {
    auto report = attest::make_sim_report(chip_.chip, report_data, measurement_);
    if (!report) return report.error();
    flatbuffers::Offset<v1::VtpmEvidence> vtpm = 0;
    if (tpm_) {
      auto q = vtpm_quote(report_data);
      if (!q) return q.error();
      std::vector<flatbuffers::Offset<v1::PcrValue>> pcrs;
      for (const auto& [i, v] : q->pcrs) pcrs.push_back(v1::CreatePcrValue(b, i, b.CreateVector(v)));
      const auto& ak = tpm_->ak_public();
      vtpm = v1::CreateVtpmEvidence(b, b.CreateVector(ak.tpm2b_public), b.CreateVector(ak.spki_der),
                                    b.CreateVector(q->attest), b.CreateVector(q->signature),
                                    b.CreateVector(pcrs), b.CreateVector(event_log_),
                                    b.CreateVector(ima_list_for(q->pcrs)));
    }
    auto dice_sig = attest::sign_dice_binding(dice_.leaf_key_pem, report_data);
    if (!dice_sig) return dice_sig.error();
    auto dice = v1::CreateDiceEvidence(
        b, b.CreateVector(reinterpret_cast<const uint8_t*>(dice_.chain_pem.data()), dice_.chain_pem.size()),
        b.CreateVector(*dice_sig));
    std::string chain = chip_.chip.vcek_pem + chip_.ask_pem + chip_.ark_pem;
    return v1::CreateEvidence(b, v1::EvidenceKind::sim_snp, b.CreateVector(*report),
                              b.CreateVector(reinterpret_cast<const uint8_t*>(chain.data()), chain.size()),
                              b.CreateVector(kx_.public_key.data(), kx_.public_key.size()),
                              b.CreateVector(sign_pk_.data(), sign_pk_.size()), vtpm, dice);
  }

  /// The first frame on a bridge link: evidence bound to that TLS session's exporter.
  /// Runs on the bridge client's threads; reads only immutable identity state (the vTPM
  /// behind tpm_mu_).
  expected<bytes> bridge_hello(const std::array<uint8_t, 32>& exporter) {
    auto rd = crypto::bridge_report_data(kx_.public_key, sign_pk_, cfg_.cvm_id, exporter, ak_name_);
    flatbuffers::FlatBufferBuilder b(4096);
    auto ev = build_evidence(b, rd);
    if (!ev) return ev.error();
    auto hello = v1::CreateBridgeHello(b, b.CreateString(cfg_.cvm_id), *ev, b.CreateString("cove-agent 0.1"));
    v1::FinishBridgeHelloBuffer(b, hello);
    return bytes(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
  }

  void reply(const bus::message& m, const bytes& payload) {
    if (m.reply.empty()) return;
    if (auto r = link_->publish(m.reply, payload); !r)
      spdlog::warn("reply on {}: {}", m.subject, r.error().to_string());
  }

  void reply_error(const bus::message& m, errc code, const std::string& text) {
    spdlog::info("{} -> {}: {}", m.subject, to_string(code), text);
    reply(m, bus::make_error(code, text, {}, sender_));
  }

  void reply_error(const bus::message& m, const error& e) { reply_error(m, e.code, e.message); }

  void publish_event(std::string_view kind, std::string_view state, std::string_view message) {
    if (!link_) {
      if (kind != "computation") spdlog::info("{}: {}", kind, message);
      return;
    }
    flatbuffers::FlatBufferBuilder b(256);
    auto ev = v1::CreateEventDirect(b, std::string(kind).c_str(), cfg_.cvm_id.c_str(),
                                    manifest_ ? manifest_->id.c_str() : "", std::string(state).c_str(),
                                    std::string(message).c_str(), now_ns());
    auto subject = *bus::cvm_subject(cfg_.cvm_id, "events");
    if (auto r = link_->publish(subject, bus::finish(b, ev, {}, sender_)); !r)
      spdlog::warn("event: {}", r.error().to_string());
  }

  void transition(AgentState to, std::string_view why) {
    spdlog::info("state {} -> {}: {}", state_name(state_), state_name(to), why);
    state_ = to;
    publish_event("computation", state_name(to), why);
  }

  bytes status_payload() {
    flatbuffers::FlatBufferBuilder b(512);
    std::vector<flatbuffers::Offset<flatbuffers::String>> pending;
    if (manifest_ && !algorithm_received_) pending.push_back(b.CreateString("algorithm"));
    for (const auto& name : pending_datasets_) pending.push_back(b.CreateString(name));
    auto digest = manifest_ ? b.CreateVector(manifest_digest_.data(), manifest_digest_.size())
                            : b.CreateVector(std::vector<uint8_t>{});
    auto st = v1::CreateComputationStatus(b, b.CreateString(cfg_.cvm_id),
                                          b.CreateString(manifest_ ? manifest_->id : ""), state_,
                                          b.CreateString(failure_), b.CreateVector(pending), digest);
    return bus::finish(b, st, {}, sender_);
  }

  /// Removes the run's files; `recreate` then sets up empty datasets/ and incoming/. Not at
  /// shutdown: the manager may already have removed the work dir, which must stay gone.
  void wipe_run_files(bool recreate = true) const {
    std::error_code ec;
    for (const char* p : {"datasets", "results", "algo", "incoming", "result.zip", "logs"})
      fs::remove_all(cfg_.work_dir / p, ec);
    if (!recreate) return;
    fs::create_directories(cfg_.work_dir / "datasets", ec);
    fs::create_directories(cfg_.work_dir / "incoming", ec);
  }

  /// The simulated launch measurement: SHA-384 of this executable (a real SEV-SNP
  /// CVM measures firmware, kernel, initrd and command line instead).
  static std::array<uint8_t, 48> own_measurement() {
    auto digest = attest::sha384_file("/proc/self/exe");
    return digest ? *digest : std::array<uint8_t, 48>{};
  }

  // ---- handlers -------------------------------------------------------------

  void on_attest(const bus::message& m) {
    auto req = bus::request_as<v1::AttestationRequest>(m.data);
    if (!req) return reply_error(m, req.error());
    auto* nonce = (*req)->nonce();
    if (nonce == nullptr || nonce->size() < 32 || nonce->size() > 64)
      return reply_error(m, errc::invalid_request, "nonce: 32..64 bytes required");
    auto report_data =
        crypto::evidence_report_data(kx_.public_key, sign_pk_, {nonce->data(), nonce->size()}, ak_name_);
    flatbuffers::FlatBufferBuilder b(4096);
    auto ev = build_evidence(b, report_data);
    if (!ev) return reply_error(m, ev.error());
    reply(m, bus::finish(b, *ev, {}, sender_));
  }

  void on_manifest(const bus::message& m) {
    auto req = bus::request_as<v1::Manifest>(m.data);
    if (!req) return reply_error(m, req.error());
    if (state_ != AgentState::ReceivingManifest)
      return reply_error(
          m, errc::wrong_state,
          fmt::format("a computation is already loaded (state {}); stop it first", state_name(state_)));
    auto man = from_fbs(*req);
    if (!man) return reply_error(m, man.error());
    load_manifest(std::move(*man));
    reply(m, status_payload());
  }

  /// Both front doors: the bus (Manifest) and --manifest FILE.
  void load_manifest(manifest man) {
    manifest_ = std::move(man);
    manifest_digest_ = manifest_digest(*manifest_);
    algorithm_received_ = false;
    run_type_.reset();
    run_args_.reset();
    pending_datasets_.clear();
    for (const auto& d : manifest_->datasets) pending_datasets_.push_back(d.filename);
    failure_.clear();
    transition(AgentState::ReceivingAlgorithm, fmt::format("manifest '{}' accepted", manifest_->id));
  }

  expected<void> load_manifest_file() {
    std::ifstream in(cfg_.manifest_file, std::ios::binary);
    if (!in) return make_error(errc::not_found, "cannot read the file");
    std::string text;
    text.resize(max_manifest_json_size + 1);
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<size_t>(in.gcount()));
    if (text.size() > max_manifest_json_size) return make_error(errc::too_large, "larger than 1 MiB");
    auto man = parse_manifest_json(text);
    if (!man) return man.error();
    load_manifest(std::move(*man));
    return ok();
  }

  void on_upload(const bus::message& m) {
    auto req = bus::request_as<v1::UploadBegin>(m.data);
    if (!req) return reply_error(m, req.error());
    auto r = begin_upload(**req);
    if (!r) return reply_error(m, r.error());
    // The manifest's hash for this file: the uploader signs it instead of hashing the file
    // itself (docs/bus.md §8.2); the agent still hashes what it decrypts and compares.
    const auto& declared = uploads_.at(*r).expected_hash;
    flatbuffers::FlatBufferBuilder b(192);
    auto ready = v1::CreateUploadReady(b, b.CreateString(*r), cfg_.window, cfg_.chunk_size,
                                       b.CreateVector(declared.data(), declared.size()));
    reply(m, bus::finish(b, ready, {}, sender_));
  }

  expected<std::string> begin_upload(const v1::UploadBegin& u) {
    if (!manifest_) return make_error(errc::wrong_state, "no computation manifest loaded");
    if (u.computation_id() == nullptr || u.computation_id()->str() != manifest_->id)
      return make_error(errc::invalid_request, "computation_id does not match the loaded manifest");
    auto* sender_pk = u.sender_pk();
    auto* header = u.stream_header();
    auto* signer = u.signer_key();
    if (sender_pk == nullptr || sender_pk->size() != 32)
      return make_error(errc::invalid_request, "sender_pk: 32 bytes required");
    if (header == nullptr) return make_error(errc::invalid_request, "stream_header missing");
    if (signer == nullptr) return make_error(errc::invalid_request, "signer_key required");
    if (u.size() > cfg_.max_upload_bytes)
      return make_error(errc::too_large, fmt::format("{} bytes exceeds the limit of {} bytes", u.size(),
                                                     cfg_.max_upload_bytes));

    crypto::sha3_digest declared{};
    const std::vector<uint8_t>* allowed_key = nullptr;
    std::string filename;
    std::string_view role;
    if (u.role() == v1::FileRole::algorithm) {
      role = "algorithm";
      filename = "algo";
      if (state_ != AgentState::ReceivingAlgorithm)
        return make_error(algorithm_received_ ? errc::already_exists : errc::wrong_state,
                          algorithm_received_
                              ? "the algorithm was already received"
                              : fmt::format("not accepting an algorithm in state {}", state_name(state_)));
      declared = manifest_->algorithm.hash;
      allowed_key = &manifest_->algorithm.user_key;
    } else if (u.role() == v1::FileRole::dataset) {
      role = "dataset";
      filename = u.filename() ? u.filename()->str() : "";
      const dataset_spec* spec = nullptr;
      for (const auto& d : manifest_->datasets)
        if (d.filename == filename) spec = &d;
      if (spec == nullptr)
        return make_error(errc::not_found,
                          fmt::format("dataset '{}' is not declared in the manifest", filename));
      if (std::find(pending_datasets_.begin(), pending_datasets_.end(), filename) == pending_datasets_.end())
        return make_error(errc::already_exists, fmt::format("dataset '{}' was already received", filename));
      if (state_ != AgentState::ReceivingData)
        return make_error(errc::wrong_state,
                          fmt::format("not accepting datasets in state {}", state_name(state_)));
      declared = spec->hash;
      allowed_key = &spec->user_key;
    } else {
      return make_error(errc::invalid_request, "role: unknown");
    }
    // Only the declared key may upload this file; it proves possession with the
    // signature on the last chunk. Parallel streams for the same file may run:
    // the first that completes verified wins, so nobody can block the slot.
    if (!std::equal(signer->begin(), signer->end(), allowed_key->begin(), allowed_key->end()))
      return make_error(errc::unauthorized,
                        fmt::format("{} '{}': the signing key is not the one the manifest declares for it",
                                    role, filename));
    auto key = crypto::public_key::from_der({signer->data(), signer->size()});
    if (!key) return key.error();
    // The signer key is public (it is in the manifest): bound what an impostor can open
    // before its last-chunk signature fails.
    size_t same_file = 0;
    for (const auto& [other_id, other] : uploads_)
      if (other.role == u.role() && other.filename == filename) ++same_file;
    if (same_file >= max_streams_per_file)
      return make_error(errc::unavailable, fmt::format("{} '{}': {} uploads of it are already in progress",
                                                       role, filename, same_file));
    if (uploads_.size() >= max_streams)
      return make_error(errc::unavailable,
                        fmt::format("{} uploads are already in progress", uploads_.size()));

    auto session = crypto::server_session_key(kx_, {sender_pk->data(), sender_pk->size()});
    if (!session) return session.error();
    auto opener = crypto::open_stream::create(*session, {header->data(), header->size()});
    if (!opener) return opener.error();

    std::string id = fmt::format("{}-{}", role, ++stream_counter_);
    auto part = cfg_.work_dir / "incoming" / (id + ".part");
    upload_stream s{.id = id,
                    .role = u.role(),
                    .role_name = std::string(role),
                    .filename = filename,
                    .size = u.size(),
                    .expected_hash = declared,
                    .signer = std::move(*key),
                    .opener = std::move(*opener),
                    .part_path = part,
                    .writer = std::make_unique<file_writer>()};
    std::copy(sender_pk->begin(), sender_pk->end(), s.sender_pk.begin());
    if (auto r = s.writer->open(part, 4, /*sha3=*/true); !r) return r.error();
    s.last_activity = std::chrono::steady_clock::now();
    uploads_.emplace(id, std::move(s));
    publish_event("upload", state_name(state_),
                  fmt::format("{} '{}' upload started ({} bytes)", role, filename, u.size()));
    return id;
  }

  void abort_upload(const std::string& id) {
    auto it = uploads_.find(id);
    if (it == uploads_.end()) return;
    it->second.writer.reset();  // stops the writer thread and closes the file
    std::error_code ec;
    fs::remove(it->second.part_path, ec);
    uploads_.erase(it);
  }

  void on_chunk(const bus::message& m) {
    auto req = bus::request_as<v1::Chunk>(m.data);
    if (!req) return reply_error(m, req.error());
    const v1::Chunk& c = **req;
    std::string id = c.stream_id() ? c.stream_id()->str() : "";
    auto it = uploads_.find(id);
    if (it == uploads_.end())
      return reply_error(m, errc::not_found, fmt::format("no upload stream '{}'", id));
    auto& s = it->second;
    auto fail = [&](errc code, const std::string& why) {
      // Drop the partial file first: an error reply means nothing of the upload is left.
      std::string filename = s.filename;
      abort_upload(id);
      publish_event("upload", state_name(state_), fmt::format("'{}' upload rejected: {}", filename, why));
      reply_error(m, code, why);
    };
    if (c.seq() != s.next_seq)
      return fail(errc::invalid_request, fmt::format("chunk {} arrived, expected {}", c.seq(), s.next_seq));
    if (c.data() == nullptr) return fail(errc::invalid_request, "chunk without data");
    bool final = false;
    auto plain = s.writer->take_buffer();
    if (auto r = s.opener.pull({c.data()->data(), c.data()->size()}, plain, final); !r)
      return fail(errc::crypto_failed, "chunk failed authentication: " + r.error().message);
    s.received += plain.size();
    if (s.received > s.size) return fail(errc::too_large, "more bytes than announced");
    if (final != c.last()) return fail(errc::crypto_failed, "final tag and last flag disagree");
    if (auto w = s.writer->write(std::move(plain)); !w) return fail(w.error().code, w.error().message);
    ++s.next_seq;
    s.last_activity = std::chrono::steady_clock::now();
    if (!final) return reply(m, ack(id, c.seq(), false));

    if (s.received != s.size)
      return fail(errc::invalid_request, fmt::format("received {} bytes, announced {}", s.received, s.size));
    auto* claimed = c.sha3_256();
    auto* sig = c.signature();
    if (claimed == nullptr || claimed->size() != s.expected_hash.size() || sig == nullptr)
      return fail(errc::invalid_request, "the last chunk must carry sha3_256 (32 bytes) and signature");
    // The writer thread hashed every byte it stored; finish() waits for the last one.
    if (auto w = s.writer->finish(); !w) return fail(w.error().code, w.error().message);
    auto digest = s.writer->digest().value_or(crypto::sha3_digest{});
    if (digest != s.expected_hash)
      return fail(
          errc::hash_mismatch,
          fmt::format("{} '{}': SHA3-256 of the received bytes {} does not match the manifest's {}",
                      s.role_name, s.filename, crypto::to_hex(digest), crypto::to_hex(s.expected_hash)));
    // The claim is the manifest's hash (UploadReady.sha3_256; older clients send the hash
    // they computed, which is the same value for genuine content).
    if (!std::equal(claimed->begin(), claimed->end(), digest.begin()))
      return fail(
          errc::hash_mismatch,
          fmt::format("'{}': the uploader's sha3_256 is not the manifest's hash for this file", s.filename));
    auto statement = crypto::upload_statement(manifest_->id, manifest_digest_, s.role_name, s.filename,
                                              digest, kx_.public_key, s.sender_pk);
    if (auto v = s.signer.verify(statement, {sig->data(), sig->size()}); !v)
      return fail(errc::unauthorized,
                  fmt::format("{} '{}': signature does not verify", s.role_name, s.filename));
    if (auto r = accept_file(s); !r) return fail(r.error().code, r.error().message);
    reply(m, ack(id, c.seq(), true));
    uploads_.erase(id);
    advance_after_upload();
  }

  bytes ack(const std::string& id, uint64_t seq, bool done) {
    flatbuffers::FlatBufferBuilder b(128);
    auto a = v1::CreateChunkAck(b, b.CreateString(id), seq, done);
    return bus::finish(b, a, {}, sender_);
  }

  expected<void> accept_file(upload_stream& s) {
    bool still_wanted = s.role == v1::FileRole::algorithm
                            ? !algorithm_received_ && state_ == AgentState::ReceivingAlgorithm
                            : std::find(pending_datasets_.begin(), pending_datasets_.end(), s.filename) !=
                                  pending_datasets_.end();
    if (!still_wanted)
      return make_error(errc::already_exists, fmt::format("'{}' was already received", s.filename));
    std::error_code ec;
    fs::path dest =
        s.role == v1::FileRole::algorithm ? cfg_.work_dir / "algo" : cfg_.work_dir / "datasets" / s.filename;
    fs::rename(s.part_path, dest, ec);
    if (ec) return make_error(errc::internal, "cannot store the file: " + ec.message());
    if (s.role == v1::FileRole::algorithm) {
      fs::permissions(dest, fs::perms::owner_all, ec);
      algorithm_received_ = true;
      publish_event("upload", state_name(state_), "algorithm received and verified");
    } else {
      std::erase(pending_datasets_, s.filename);
      publish_event("upload", state_name(state_),
                    fmt::format("dataset '{}' received and verified", s.filename));
    }
    return ok();
  }

  void advance_after_upload() {
    if (state_ == AgentState::ReceivingAlgorithm && algorithm_received_) {
      if (pending_datasets_.empty()) {
        start_run();
      } else {
        transition(AgentState::ReceivingData,
                   fmt::format("waiting for {} dataset(s)", pending_datasets_.size()));
      }
    } else if (state_ == AgentState::ReceivingData && pending_datasets_.empty()) {
      start_run();
    }
  }

  void start_run() {
    transition(AgentState::Running, "all inputs received; running the algorithm");
    std::error_code ec;
    fs::create_directories(cfg_.work_dir / "results", ec);
    run_request req;
    req.work_dir = cfg_.work_dir;
    req.type = run_type_.value_or(manifest_->algorithm.type);
    req.algorithm = cfg_.work_dir / "algo";
    req.args = run_args_.value_or(manifest_->algorithm.algo_args);
    req.timeout = manifest_->timeout_seconds > 0
                      ? std::chrono::seconds(manifest_->timeout_seconds)
                      : std::chrono::duration_cast<std::chrono::seconds>(cfg_.default_timeout);
    uint64_t generation = ++run_generation_;
    auto started = runner::start(req);
    if (!started) {
      fail_run(started.error().message);
      return;
    }
    join_waiter();
    running_ = *started;
    // The waiter only blocks on the child and posts the outcome to the agent's queue.
    waiter_ = std::thread([this, generation, algo = running_] {
      auto outcome = algo->wait();
      queue_.post([this, generation, outcome = std::move(outcome)]() mutable {
        on_run_done(generation, std::move(outcome));
      });
    });
  }

  void join_waiter() {
    if (waiter_.joinable()) waiter_.join();
  }

  void on_run_done(uint64_t generation, expected<run_outcome> outcome) {
    if (generation != run_generation_ || state_ != AgentState::Running) return;  // a stopped run
    running_.reset();
    if (!outcome) return fail_run(outcome.error().message);
    if (!outcome->succeeded()) return fail_run("algorithm failed: " + describe(*outcome));
    auto zipped = zip_directory_to_file(cfg_.work_dir / "results", cfg_.work_dir / "result.zip");
    if (!zipped) return fail_run("collecting results: " + zipped.error().message);
    std::error_code ec;
    for (const char* p : {"datasets", "algo", "results"}) fs::remove_all(cfg_.work_dir / p, ec);
    transition(AgentState::ConsumingResults, "results ready for the consumers");
  }

  void fail_run(const std::string& why) {
    failure_ = why;
    std::error_code ec;
    for (const char* p : {"datasets", "algo", "results"}) fs::remove_all(cfg_.work_dir / p, ec);
    transition(AgentState::Failed, why);
  }

  void on_status(const bus::message& m) {
    if (auto req = bus::request_as<v1::StatusRequest>(m.data); !req) return reply_error(m, req.error());
    reply(m, status_payload());
  }

  void on_stop(const bus::message& m) {
    auto req = bus::request_as<v1::ComputationStop>(m.data);
    if (!req) return reply_error(m, req.error());
    ++run_generation_;
    if (running_) running_->cancel();
    running_.reset();
    join_waiter();
    for (auto& [id, s] : uploads_) s.writer.reset();
    uploads_.clear();
    results_.clear();
    manifest_.reset();
    pending_datasets_.clear();
    algorithm_received_ = false;
    run_type_.reset();
    run_args_.reset();
    failure_.clear();
    wipe_run_files();
    transition(AgentState::Idle, "computation stopped; run files wiped");
    transition(AgentState::ReceivingManifest, "waiting for a computation manifest");
    reply(m, status_payload());
  }

  void on_result(const bus::message& m) {
    auto req = bus::request_as<v1::ResultRequest>(m.data);
    if (!req) return reply_error(m, req.error());
    auto r = begin_result(**req);
    if (!r) return reply_error(m, r.error());
    reply(m, *r);
  }

  expected<bytes> begin_result(const v1::ResultRequest& r) {
    if (!manifest_) return make_error(errc::wrong_state, "no computation manifest loaded");
    if (r.computation_id() == nullptr || r.computation_id()->str() != manifest_->id)
      return make_error(errc::invalid_request, "computation_id does not match the loaded manifest");
    auto* key_der = r.consumer_key();
    auto* sig = r.signature();
    if (key_der == nullptr || sig == nullptr)
      return make_error(errc::invalid_request, "consumer_key and signature required");
    bytes der(key_der->begin(), key_der->end());
    if (std::find(manifest_->result_consumers.begin(), manifest_->result_consumers.end(), der) ==
        manifest_->result_consumers.end())
      return make_error(errc::unauthorized, "this key is not a result consumer of the computation");
    auto key = crypto::public_key::from_der(der);
    if (!key) return key.error();
    auto statement = crypto::result_statement(manifest_->id, manifest_digest_, der, kx_.public_key);
    if (auto v = key->verify(statement, {sig->data(), sig->size()}); !v)
      return make_error(errc::unauthorized, "result request signature does not verify");
    if (state_ == AgentState::Failed) return make_error(errc::algorithm_failed, failure_);
    if (state_ != AgentState::ConsumingResults && state_ != AgentState::Complete)
      return make_error(errc::wrong_state,
                        fmt::format("results are not ready (state {})", state_name(state_)));

    // Each stream has a read-ahead thread and up to 4 sealed chunks buffered.
    if (results_.size() >= max_result_streams)
      return make_error(errc::unavailable,
                        fmt::format("{} result downloads are already in progress", results_.size()));
    auto file_key = crypto::secret_key::generate();
    auto wrapped = crypto::wrap_key(*key, file_key);
    if (!wrapped) return wrapped.error();
    crypto::seal_header header{};
    auto sealer = crypto::seal_stream::create(file_key, header);
    if (!sealer) return sealer.error();
    std::error_code ec;
    auto path = cfg_.work_dir / "result.zip";
    uint64_t size = fs::file_size(path, ec);
    if (ec) return make_error(errc::internal, "result file missing");
    uint64_t chunks = size == 0 ? 1 : (size + cfg_.chunk_size - 1) / cfg_.chunk_size;
    std::string id = fmt::format("result-{}", ++stream_counter_);
    result_stream s{.id = id,
                    .consumer_fingerprint = key->fingerprint(),
                    .reader = std::make_unique<sealed_reader>(),
                    .size = size,
                    .chunks = chunks};
    if (auto o = s.reader->open(path, std::move(*sealer), chunks, cfg_.chunk_size); !o)
      return make_error(errc::internal, "cannot open the result file: " + o.error().message);
    s.last_activity = std::chrono::steady_clock::now();
    results_.erase(id);
    results_.emplace(id, std::move(s));
    flatbuffers::FlatBufferBuilder b(512);
    auto ready = v1::CreateResultReady(b, b.CreateString(id), size, chunks, b.CreateVector(*wrapped),
                                       b.CreateVector(header.data(), header.size()), cfg_.window);
    return bus::finish(b, ready, {}, sender_);
  }

  void on_result_chunk(const bus::message& m) {
    auto req = bus::request_as<v1::ResultChunkRequest>(m.data);
    if (!req) return reply_error(m, req.error());
    std::string id = (*req)->stream_id() ? (*req)->stream_id()->str() : "";
    auto it = results_.find(id);
    if (it == results_.end())
      return reply_error(m, errc::not_found, fmt::format("no result stream '{}'", id));
    auto& s = it->second;
    if ((*req)->seq() != s.next_seq) {
      reply_error(m, errc::invalid_request,
                  fmt::format("result chunk {} requested, expected {}", (*req)->seq(), s.next_seq));
      results_.erase(it);
      return;
    }
    bool last = s.next_seq + 1 == s.chunks;
    auto sealed = s.reader->next();
    if (!sealed) {
      reply_error(m, sealed.error());
      results_.erase(it);
      return;
    }
    flatbuffers::FlatBufferBuilder b(sealed->size() + 256);
    auto data = b.CreateVector(*sealed);
    s.reader->recycle(std::move(*sealed));
    auto chunk = v1::CreateChunk(b, b.CreateString(id), s.next_seq, data, last);
    reply(m, bus::finish(b, chunk, {}, sender_));
    ++s.next_seq;
    s.last_activity = std::chrono::steady_clock::now();
    if (last) {
      publish_event("result", state_name(state_),
                    fmt::format("result delivered to consumer {}", s.consumer_fingerprint));
      results_.erase(it);
      if (state_ == AgentState::ConsumingResults) transition(AgentState::Complete, "results consumed");
    }
  }

  // ---- cocos front door (cocos_backend; called on gRPC threads) ---------------

  /// Runs `f` on the agent's queue thread and waits for its result: the front door never
  /// touches agent state itself. Gives up when the agent is shutting down.
  template <class F>
  auto on_queue(F f) -> decltype(f()) {
    using result = decltype(f());
    auto done = std::make_shared<std::promise<result>>();
    auto fut = done->get_future();
    queue_.post([done, f = std::move(f)]() mutable { done->set_value(f()); });
    while (fut.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready)
      if (stopping_) return make_error(errc::unavailable, "the agent is shutting down");
    return fut.get();
  }

  static expected<void> verify_under(const bytes& der, cocos::role r, const bytes& sig) {
    auto key = crypto::public_key::from_der(der);
    if (!key) return key.error();
    return cocos::verify_role_signature(*key, r, sig);
  }

  expected<void> check_upload_allowed(cocos::role r, const bytes& sig) {
    if (!manifest_) return make_error(errc::wrong_state, "no computation manifest loaded");
    if (r == cocos::role::algorithm_provider) {
      if (algorithm_received_) return make_error(errc::already_exists, "the algorithm was already received");
      if (state_ != AgentState::ReceivingAlgorithm)
        return make_error(errc::wrong_state,
                          fmt::format("not accepting an algorithm in state {}", state_name(state_)));
      if (auto v = verify_under(manifest_->algorithm.user_key, r, sig); !v)
        return make_error(
            errc::unauthorized,
            "algorithm upload: the signature does not verify under the manifest's algorithm key");
      return ok();
    }
    if (state_ == AgentState::ReceivingAlgorithm)
      return make_error(errc::wrong_state,
                        "not accepting datasets in state ReceivingAlgorithm: upload the algorithm first");
    if (state_ != AgentState::ReceivingData)
      return make_error(errc::wrong_state,
                        fmt::format("not accepting datasets in state {}", state_name(state_)));
    // Any declared data provider may start an upload; cocos_accept_dataset then requires
    // the key of the dataset the bytes turn out to be.
    for (const auto& d : manifest_->datasets)
      if (verify_under(d.user_key, r, sig)) return ok();
    return make_error(errc::unauthorized,
                      "dataset upload: the signature does not verify under any dataset key of the manifest");
  }

  expected<void> cocos_authorize_upload(cocos::role r, const bytes& signature) override {
    return on_queue([this, r, signature] { return check_upload_allowed(r, signature); });
  }

  expected<void> cocos_accept_algorithm(const fs::path& part, const sha3_digest& digest,
                                        std::optional<algo_type> type,
                                        std::optional<std::vector<std::string>> args,
                                        const bytes& signature) override {
    return on_queue([=, this]() -> expected<void> {
      if (auto a = check_upload_allowed(cocos::role::algorithm_provider, signature); !a) return a;
      if (digest != manifest_->algorithm.hash)
        return make_error(
            errc::hash_mismatch,
            fmt::format("algorithm: SHA3-256 of the received bytes {} does not match the manifest's {}",
                        crypto::to_hex(digest), crypto::to_hex(manifest_->algorithm.hash)));
      std::error_code ec;
      fs::path dest = cfg_.work_dir / "algo";
      fs::rename(part, dest, ec);
      if (ec) return make_error(errc::internal, "cannot store the algorithm: " + ec.message());
      fs::permissions(dest, fs::perms::owner_all, ec);
      algorithm_received_ = true;
      run_type_ = type;
      run_args_ = args;
      publish_event("upload", state_name(state_), "algorithm received and verified (cocos front door)");
      advance_after_upload();
      return ok();
    });
  }

  expected<void> cocos_accept_dataset(const fs::path& part, const std::string& filename,
                                      const sha3_digest& digest, bool decompress,
                                      const bytes& signature) override {
    return on_queue([=, this]() -> expected<void> {
      if (auto a = check_upload_allowed(cocos::role::data_provider, signature); !a) return a;
      auto pending = [&](const dataset_spec& d) {
        return std::find(pending_datasets_.begin(), pending_datasets_.end(), d.filename) !=
               pending_datasets_.end();
      };
      // cocos matches by file name; a client that names the file differently (cocos-cli
      // sends a directory under its base name) is matched by content hash instead.
      const dataset_spec* spec = nullptr;
      for (const auto& d : manifest_->datasets)
        if (d.filename == filename) spec = &d;
      if (spec != nullptr && !pending(*spec))
        return make_error(errc::already_exists, fmt::format("dataset '{}' was already received", filename));
      if (spec == nullptr)
        for (const auto& d : manifest_->datasets)
          if (pending(d) && d.hash == digest) spec = &d;
      if (spec == nullptr)
        return make_error(errc::not_found,
                          fmt::format("dataset '{}' (SHA3-256 {}) is not a pending dataset of the manifest",
                                      filename, crypto::to_hex(digest)));
      if (digest != spec->hash)
        return make_error(
            errc::hash_mismatch,
            fmt::format("dataset '{}': SHA3-256 of the received bytes {} does not match the manifest's {}",
                        spec->filename, crypto::to_hex(digest), crypto::to_hex(spec->hash)));
      // Stricter than cocos: the signature must come from this dataset's own key.
      if (auto v = verify_under(spec->user_key, cocos::role::data_provider, signature); !v)
        return make_error(
            errc::unauthorized,
            fmt::format("dataset '{}': signed by a data provider other than the one the manifest "
                        "declares for it",
                        spec->filename));
      std::error_code ec;
      if (decompress) {
        // Extract beside the upload first, so a bad archive leaves nothing in datasets/.
        fs::path unpacked = part;
        unpacked += ".d";
        auto x = extract_zip(part, unpacked);
        for (const auto& e : x ? fs::directory_iterator(unpacked, ec) : fs::directory_iterator())
          if (fs::exists(cfg_.work_dir / "datasets" / e.path().filename()))
            x = make_error(errc::already_exists, e.path().filename().string() + " is already in datasets/");
        if (x)
          for (const auto& e : fs::directory_iterator(unpacked, ec))
            fs::rename(e.path(), cfg_.work_dir / "datasets" / e.path().filename(), ec);
        fs::remove_all(unpacked, ec);
        if (!x)
          return make_error(
              x.error().code == errc::already_exists ? errc::already_exists : errc::invalid_request,
              fmt::format("dataset '{}': decompress: {}", spec->filename, x.error().message));
        fs::remove(part, ec);
      } else {
        fs::rename(part, cfg_.work_dir / "datasets" / spec->filename, ec);
        if (ec) return make_error(errc::internal, "cannot store the dataset: " + ec.message());
      }
      std::string name = spec->filename;
      std::erase(pending_datasets_, name);
      publish_event("upload", state_name(state_),
                    fmt::format("dataset '{}' received and verified (cocos front door)", name));
      advance_after_upload();
      return ok();
    });
  }

  expected<result_file> cocos_open_result(const bytes& signature) override {
    return on_queue([this, signature]() -> expected<result_file> {
      if (!manifest_) return make_error(errc::wrong_state, "no computation manifest loaded");
      bool authorized = false;
      for (const auto& k : manifest_->result_consumers)
        if (verify_under(k, cocos::role::consumer, signature)) authorized = true;
      if (!authorized)
        return make_error(errc::unauthorized,
                          "the signature does not verify under any result consumer's key");
      if (state_ == AgentState::Failed) return make_error(errc::algorithm_failed, failure_);
      if (state_ != AgentState::ConsumingResults && state_ != AgentState::Complete)
        return make_error(errc::wrong_state, fmt::format("computation results are not yet ready (state {})",
                                                         state_name(state_)));
      auto path = cfg_.work_dir / "result.zip";
      int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
      if (fd < 0) return make_error(errc::internal, "result file missing");
      struct stat st {};
      if (::fstat(fd, &st) != 0) {
        ::close(fd);
        return make_error(errc::internal, "result file unreadable");
      }
      return result_file{fd, static_cast<uint64_t>(st.st_size)};
    });
  }

  void cocos_result_delivered() override {
    queue_.post([this] {
      publish_event("result", state_name(state_), "result delivered (cocos front door)");
      if (state_ == AgentState::ConsumingResults) transition(AgentState::Complete, "results consumed");
    });
  }

  /// Reads only identity state that is immutable after start, so it runs on the caller's thread.
  expected<bytes> cocos_attestation(const std::array<uint8_t, 64>& report_data,
                                    const std::array<uint8_t, 32>& nonce, int type) override {
    switch (type) {
      case 0:
        break;
      case 1:
      case 2:
        return make_error(errc::wrong_state,
                          "vTPM evidence is not available from this agent (--tee sim: SEV-SNP only); "
                          "ask for type 0 (snp)");
      case 3:
        return make_error(errc::wrong_state, "this agent does not run on Azure; ask for type 0 (snp)");
      default:
        return make_error(errc::wrong_state, "this agent is not in a TDX guest; ask for type 0 (snp)");
    }
    if (!eat_key_) return make_error(errc::internal, "no EAT signing key");
    auto report = attest::make_sim_report(chip_.chip, report_data, measurement_);
    if (!report) return report.error();
    auto now =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
    eat_claims c;
    c.issuer = "cove-agent";
    c.issued_at = now.count();
    c.expires = now.count() + 300;
    c.nonce.assign(nonce.begin(), nonce.end());
    c.ueid.assign(chip_.chip.chip_id.begin(), chip_.chip.chip_id.end());
    c.oem_id = 3704;  // AMD
    std::string model = "SEV-SNP-3";
    c.hw_model.assign(model.begin(), model.end());
    c.measurements.assign(measurement_.begin(), measurement_.end());
    c.platform_type = "SNP";
    c.raw_report = std::move(*report);
    c.text_extensions["x-cove-cert-chain"] = chip_.chip.vcek_pem + chip_.ask_pem + chip_.ark_pem;
    return make_eat_token(c, *eat_key_);
  }

  // ---- housekeeping ---------------------------------------------------------

  void on_tick() {
    if (g_stop) {
      queue_.stop();
      return;
    }
    auto now = std::chrono::steady_clock::now();
    constexpr auto idle_limit = std::chrono::seconds(60);
    std::vector<std::string> stale;
    for (auto& [id, s] : uploads_)
      if (now - s.last_activity > idle_limit) stale.push_back(id);
    for (const auto& id : stale) {
      spdlog::info("upload stream {} idle for 60 s; dropped", id);
      abort_upload(id);
    }
    std::erase_if(results_, [&](const auto& kv) { return now - kv.second.last_activity > idle_limit; });
    if (cfg_.heartbeat_interval.count() > 0 && now >= next_heartbeat_) publish_heartbeat(now);
  }

  /// cove.v1.cvm.<id>.heartbeat, from the agent's own thread: a wedged agent stops
  /// sending them, which is what the monitor should notice. About 100 bytes each.
  void publish_heartbeat(std::chrono::steady_clock::time_point now) {
    if (cfg_.heartbeat_interval.count() <= 0 || !link_) return;  // no bus (cocos door only): nobody listens
    next_heartbeat_ = now + cfg_.heartbeat_interval;
    flatbuffers::FlatBufferBuilder b(128);
    auto uptime = std::chrono::duration_cast<std::chrono::milliseconds>(now - started_).count();
    auto hb = v1::CreateHeartbeatDirect(b, cfg_.cvm_id.c_str(), heartbeat_seq_++,
                                        static_cast<uint32_t>(cfg_.heartbeat_interval.count()),
                                        state_name(state_).data(), static_cast<uint64_t>(uptime));
    auto subject = *bus::cvm_subject(cfg_.cvm_id, "heartbeat");
    if (auto r = link_->publish(subject, bus::finish(b, hb, {}, sender_)); !r)
      spdlog::debug("heartbeat: {}", r.error().to_string());
  }

  void shutdown() {
    spdlog::info("agent {} shutting down", cfg_.cvm_id);
    stopping_ = true;
    front_.reset();  // its handlers waiting on the queue give up (stopping_)
    ++run_generation_;
    if (running_) running_->cancel();
    running_.reset();
    join_waiter();
    uploads_.clear();
    results_.clear();
    wipe_run_files(/*recreate=*/false);
    link_.reset();
    sodium_memzero(sign_sk_.data(), sign_sk_.size());
  }

  agent_config cfg_;
  std::chrono::steady_clock::time_point started_;
  std::chrono::steady_clock::time_point next_heartbeat_;
  uint64_t heartbeat_seq_ = 0;
  work_queue queue_;
  std::unique_ptr<bus_link> link_;
  std::string sender_;
  crypto::kx_keypair kx_;
  std::array<uint8_t, crypto_sign_PUBLICKEYBYTES> sign_pk_{};
  std::array<uint8_t, crypto_sign_SECRETKEYBYTES> sign_sk_{};
  attest::sim_identity chip_;
  std::array<uint8_t, 48> measurement_{};
  attest::sim_dice_chain dice_;  // immutable after start (bridge client threads read it)
  // --vtpm: set once before the bus link opens, then used under tpm_mu_ (bridge client threads
  // and the agent's queue both build evidence).
  std::optional<tpm_provider> tpm_;
  std::mutex tpm_mu_;
  bytes ak_name_;                     // the AK's TPM name; empty without a vTPM
  bytes event_log_;                   // the firmware's TCG event log, if the guest exposes one
  fs::path ima_path_;                 // the IMA list sent with every quote; empty = none
  std::vector<uint32_t> quote_pcrs_;  // default_quote_pcrs(), plus PCR 10 with an IMA list
  static constexpr size_t max_event_log = size_t{256} * 1024;  // evidence must fit a 1 MiB bus message
  static constexpr size_t max_ima_list = size_t{512} * 1024;   // with the event log: still under 1 MiB

  AgentState state_ = AgentState::Idle;
  std::optional<manifest> manifest_;
  sha3_digest manifest_digest_{};
  bool algorithm_received_ = false;
  std::vector<std::string> pending_datasets_;
  std::string failure_;
  std::map<std::string, upload_stream> uploads_;
  static constexpr size_t max_streams_per_file = 4;
  static constexpr size_t max_streams = 64;
  std::map<std::string, result_stream> results_;
  static constexpr size_t max_result_streams = 16;
  uint64_t stream_counter_ = 0;
  uint64_t run_generation_ = 0;
  std::shared_ptr<running_algorithm> running_;
  std::thread waiter_;

  // cocos front door: type and args from the Algo upload's metadata (cocos semantics).
  std::optional<algo_type> run_type_;
  std::optional<std::vector<std::string>> run_args_;
  std::optional<crypto::private_key> eat_key_;
  std::atomic<bool> stopping_{false};
  std::unique_ptr<cocos_front> front_;  // last: destroyed (stopped) first
};

}  // namespace

int run(const agent_config& config) {
  agent_config cfg = config;
  if (cfg.cocos.staging_dir.empty()) cfg.cocos.staging_dir = cfg.work_dir / "incoming";
  if (cfg.cocos.socket_path.empty()) cfg.cocos.socket_path = cfg.work_dir / "cocos-grpc.sock";
  if (cfg.cocos.max_upload_bytes > cfg.max_upload_bytes) cfg.cocos.max_upload_bytes = cfg.max_upload_bytes;
  if (auto v = validate(cfg); !v) {
    spdlog::critical("config: {}", v.error().to_string());
    return 2;
  }
  agent a(cfg);
  return a.main();
}

}  // namespace cove::agent
