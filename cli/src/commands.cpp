#include <CLI/CLI.hpp>
#include <csignal>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include <fmt/format.h>

#include "cove/bus/envelope.hpp"
#include "cove/bus/subjects.hpp"
#include "cove/cli/cli.hpp"
#include "cove/cli/client.hpp"
#include "cove/cli/measure_cmd.hpp"
#include "cove/cli/policy_cmd.hpp"
#include "cove/cli/validate_cmd.hpp"
#include "cove/crypto/encoding.hpp"
#include "cove/crypto/keys.hpp"
#include "cove/paths.hpp"
#include "cove/schemas/envelope_generated.h"

namespace cove::cli {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr std::string_view sender = "cli";

struct globals {
  std::string nats_url;
  std::string nkey_seed;  // --nkey-seed
  std::string ca_file;    // --ca
  bool json_out = false;
  double timeout_s = 10;
  std::shared_ptr<bus::connection> conn;

  client_options options() const {
    client_options o;
    o.request_timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
    return o;
  }
  std::chrono::milliseconds timeout() const { return options().request_timeout; }
};

/// A command failed: the message goes to stderr, exit code 1.
struct failure {
  error err;
};

void check(const expected<void>& r) {
  if (!r) throw failure{r.error()};
}
template <class T>
T take(expected<T> r) {
  if (!r) throw failure{std::move(r).error()};
  return std::move(*r);
}

bus::connection& connect(globals& g) {
  if (!g.conn) {
    auto url = g.nats_url.empty() ? default_nats_url() : g.nats_url;
    auto opts = bus_options(url, g.nkey_seed, g.ca_file, default_state_dir());
    if (!opts) throw failure{opts.error()};
    auto c = bus::connection::connect(*opts);
    if (!c)
      throw failure{
          make_error(c.error().code, fmt::format("cannot reach the bus at {}: {}", url, c.error().message))};
    g.conn = *c;
  }
  return *g.conn;
}

/// Parses "90", "90s", "15m", "2h", "1d" into seconds.
uint32_t parse_duration(const std::string& text) {
  if (text.empty()) return 0;
  size_t pos = 0;
  unsigned long v = 0;
  try {
    v = std::stoul(text, &pos);
  } catch (const std::exception&) {
    throw failure{make_error(errc::invalid_request,
                             fmt::format("--ttl: '{}' is not a duration (e.g. 90s, 15m, 2h)", text))};
  }
  std::string unit = text.substr(pos);
  unsigned long mult = unit.empty() || unit == "s" ? 1
                       : unit == "m"               ? 60
                       : unit == "h"               ? 3600
                       : unit == "d"               ? 86400
                                                   : 0;
  if (mult == 0 || v * mult > 0xffffffffUL)
    throw failure{make_error(errc::invalid_request,
                             fmt::format("--ttl: '{}' is not a duration (e.g. 90s, 15m, 2h)", text))};
  return static_cast<uint32_t>(v * mult);
}

json info_json(const v1::CvmInfo& i) {
  return {{"id", i.id() ? i.id()->str() : ""},
          {"backend", v1::EnumNameBackend(i.backend())},
          {"tee", v1::EnumNameTee(i.tee())},
          {"state", v1::EnumNameCvmState(i.state())},
          {"pid", i.pid()},
          {"created_at_ns", i.created_at_ns()},
          {"ttl_seconds", i.ttl_seconds()},
          {"detail", i.detail() ? i.detail()->str() : ""},
          {"cocos_grpc_address", i.cocos_grpc_address() ? i.cocos_grpc_address()->str() : ""},
          {"launch_measurement", i.launch_measurement() ? i.launch_measurement()->str() : ""},
          {"policy", i.policy_json() && i.policy_json()->size()
                         ? json::parse(i.policy_json()->str(), nullptr, false)
                         : json(nullptr)}};
}

std::string read_text_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void print_info(const globals& g, const v1::CvmInfo& i) {
  if (g.json_out) {
    std::cout << info_json(i).dump() << '\n';
    return;
  }
  auto j = info_json(i);
  j.erase("policy");
  std::cout << fmt::format("{}  {}  backend={} tee={} pid={}{}{}{}\n", j["id"].get<std::string>(),
                           j["state"].get<std::string>(), j["backend"].get<std::string>(),
                           j["tee"].get<std::string>(), i.pid(),
                           i.ttl_seconds() ? fmt::format(" ttl={}s", i.ttl_seconds()) : "",
                           i.cocos_grpc_address() && i.cocos_grpc_address()->size()
                               ? " cocos-grpc=" + i.cocos_grpc_address()->str()
                               : "",
                           i.detail() && i.detail()->size() ? "  " + i.detail()->str() : "");
}

/// The monitor's view of a CVM (health, latest stats), as JSON; null when no monitor
/// answers (it is optional: coved --services without monitor, or another host's).
json stats_json(const v1::CvmStats& s) {
  return {{"health", v1::EnumNameHealth(s.health())},
          {"last_heartbeat_age_ms", s.last_heartbeat_age_ms()},
          {"heartbeats", s.heartbeats()},
          {"heartbeat_interval_ms", s.interval_ms()},
          {"agent_state", s.agent_state() ? s.agent_state()->str() : ""},
          {"sampled_at_ns", s.sampled_at_ns()},
          {"source", s.source() ? s.source()->str() : ""},
          {"run_state", s.run_state() ? s.run_state()->str() : ""},
          {"cpu_time_ns", s.cpu_time_ns()},
          {"cpu_percent", s.cpu_percent()},
          {"memory_bytes", s.memory_bytes()},
          {"memory_max_bytes", s.memory_max_bytes()},
          {"processes", s.processes()},
          {"detail", s.detail() ? s.detail()->str() : ""}};
}

void print_stats(const globals& g, const expected<bus::reply<v1::CvmStats>>& r) {
  if (g.json_out) return;  // merged into the info object by the caller
  if (!r) {
    std::cout << "  health: unknown (" << r.error().message << ")\n";
    return;
  }
  const auto& s = *r->body;
  auto str = [](const flatbuffers::String* x) { return x ? x->str() : std::string(); };
  auto age = s.last_heartbeat_age_ms();
  std::cout << fmt::format(
      "  health {}  last heartbeat {}  ({} received, every {} ms){}\n", v1::EnumNameHealth(s.health()),
      age < 0 ? "never" : fmt::format("{:.1f} s ago", static_cast<double>(age) / 1000.0), s.heartbeats(),
      s.interval_ms(), str(s.agent_state()).empty() ? "" : "  agent " + str(s.agent_state()));
  if (s.sampled_at_ns() > 0) {
    double ago = std::max(0.0, static_cast<double>(bus::now_ns() - s.sampled_at_ns()) / 1e9);
    constexpr double mib = 1024.0 * 1024.0;
    std::string max = s.memory_max_bytes() > 0
                          ? fmt::format(" of {:.0f} MiB", static_cast<double>(s.memory_max_bytes()) / mib)
                          : "";
    std::cout << fmt::format(
        "  stats ({}, {:.1f} s ago): {}  cpu {:.2f} s ({:.1f}%)  memory {:.1f} MiB{}  {} {}\n",
        str(s.source()), ago, str(s.run_state()), static_cast<double>(s.cpu_time_ns()) / 1e9, s.cpu_percent(),
        static_cast<double>(s.memory_bytes()) / mib, max, s.processes(),
        str(s.source()) == "libvirt" ? "vCPUs" : "processes");
  } else {
    std::cout << "  stats: no sample yet\n";
  }
  if (!str(s.detail()).empty()) std::cout << "  " << str(s.detail()) << '\n';
}

const v1::CvmInfo* cvm_request(globals& g, std::string_view subject, const std::string& id,
                               bus::reply<v1::CvmInfo>& keep) {
  flatbuffers::FlatBufferBuilder b(128);
  auto req = v1::CreateCvmRef(b, b.CreateString(id));
  keep = take(
      bus::request_typed<v1::CvmInfo>(connect(g), subject, bus::finish(b, req, {}, sender), g.timeout()));
  return keep.body;
}

manifest load_manifest(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  auto m = parse_manifest_json(ss.str());
  if (!m) throw failure{make_error(m.error().code, path + ": " + m.error().message)};
  return std::move(*m);
}

crypto::private_key load_key(const std::string& path) {
  return take(crypto::private_key::load_file(path));
}

attest::snp_policy load_policy_or_default(const std::string& path) {
  return take(load_policy(path.empty() ? default_policy_path() : fs::path(path)));
}

void print_status(const globals& g, const status& s) {
  if (g.json_out) {
    std::cout << json{{"computation_id", s.computation_id},
                      {"state", s.state},
                      {"message", s.message},
                      {"pending", s.pending}}
                     .dump()
              << '\n';
    return;
  }
  std::cout << fmt::format("computation {}  state {}", s.computation_id.empty() ? "-" : s.computation_id,
                           s.state);
  if (!s.pending.empty()) std::cout << fmt::format("  waiting for: {}", fmt::join(s.pending, ", "));
  if (!s.message.empty()) std::cout << "\n  " << s.message;
  std::cout << '\n';
}

std::string human_rate(uint64_t bytes, std::chrono::nanoseconds t) {
  double secs = std::max(1e-9, std::chrono::duration<double>(t).count());
  return fmt::format("{} bytes in {:.3f} s ({:.1f} MB/s)", bytes, secs,
                     static_cast<double>(bytes) / secs / 1e6);
}

volatile std::sig_atomic_t interrupted = 0;
extern "C" void on_interrupt(int) {
  interrupted = 1;
}

}  // namespace

int run(int argc, char** argv) {
  globals g;
  CLI::App app{"cove — run computations on data nobody may see, inside attested confidential VMs"};
  app.require_subcommand(1);
  app.fallthrough();  // global options (--json, --nats, --timeout) work after subcommands too
  app.add_option("--nats", g.nats_url, "Bus URL (env COVE_NATS_URL; default: the embedded coved's)");
  app.add_option("--nkey-seed", g.nkey_seed,
                 "Bus identity: an nkey seed file or an Ed25519 participant key (env COVE_NKEY_SEED; "
                 "default with a tls:// bus: this host's coved admin seed)");
  app.add_option("--ca", g.ca_file, "CA certificate of the bus server (env COVE_NATS_CA)");
  app.add_flag("--json", g.json_out, "Machine-readable output");
  app.add_option("--timeout", g.timeout_s, "Request deadline in seconds")->capture_default_str();

  // ---- cvm ----
  auto* cvm = app.add_subcommand("cvm", "Create, list, inspect and remove confidential VMs");
  cvm->require_subcommand(1);
  std::string backend = "process", tee = "sim", ttl, cvm_id;
  auto* create = cvm->add_subcommand("create", "Create a CVM; prints its id");
  create
      ->add_option("--backend", backend,
                   "process (agent as a local process) | libvirt (a QEMU VM booting EOS)")
      ->capture_default_str()
      ->check(CLI::IsMember({"process", "libvirt"}));
  create->add_option("--tee", tee, "sim|none|sev-snp|tdx|sev")
      ->capture_default_str()
      ->check(CLI::IsMember({"sim", "none", "sev-snp", "tdx", "sev"}));
  create->add_option("--ttl", ttl, "Remove the CVM after this long (90s, 15m, 2h)");
  std::string cvm_policy_path;
  bool cocos_grpc = false;
  create->add_flag("--cocos-grpc", cocos_grpc,
                   "The agent also serves cocos's agent.AgentService (for cocos-cli); its address is "
                   "printed as cocos-grpc=HOST:PORT");
  create
      ->add_option("--policy", cvm_policy_path,
                   "Attestation policy the bridge admits the agent under (default: the host's)")
      ->check(CLI::ExistingFile);
  auto* set_policy = cvm->add_subcommand(
      "policy", "Replace a CVM's attestation policy; its agent re-attests under it at once");
  set_policy->add_option("ID", cvm_id, "CVM id")->required();
  set_policy->add_option("POLICY", cvm_policy_path, "Policy JSON (inline trusted_roots only)")
      ->required()
      ->check(CLI::ExistingFile);
  auto* list = cvm->add_subcommand("list", "List CVMs");
  auto* info = cvm->add_subcommand("info", "Show one CVM");
  info->add_option("ID", cvm_id, "CVM id")->required();
  auto* remove = cvm->add_subcommand("remove", "Remove a CVM (kills its agent, wipes its files)");
  remove->add_option("ID", cvm_id, "CVM id")->required();

  // ---- computation ----
  auto* comp = app.add_subcommand("computation", "Start, inspect or stop a computation on a CVM");
  comp->require_subcommand(1);
  std::string manifest_path;
  auto* start = comp->add_subcommand("start", "Send a computation manifest (JSON, cocos shape) to a CVM");
  start->add_option("--cvm", cvm_id, "CVM id")->required();
  start->add_option("MANIFEST", manifest_path, "manifest.json")->required()->check(CLI::ExistingFile);
  auto* cstatus = comp->add_subcommand("status", "Show the agent's state");
  cstatus->add_option("--cvm", cvm_id, "CVM id")->required();
  auto* stop = comp->add_subcommand("stop", "Stop the computation and wipe its files");
  stop->add_option("--cvm", cvm_id, "CVM id")->required();

  // ---- uploads, results ----
  std::string file, key_path, policy_path, out_path, manifest_file;
  auto add_upload = [&](const char* name, const char* what) {
    auto* c = app.add_subcommand(name, what);
    c->add_option("--cvm", cvm_id, "CVM id")->required();
    c->add_option("FILE", file, "File to upload")->required()->check(CLI::ExistingFile);
    c->add_option("PRIVATE_KEY", key_path, "Your key (PEM), declared for this file in the manifest")
        ->required()
        ->check(CLI::ExistingFile);
    c->add_option("--policy", policy_path, "Attestation policy (default: <state>/sim/policy.json)");
    c->add_option("--manifest", manifest_file,
                  "The manifest you agreed to; the CVM must hold exactly it (required: it is what you sign)")
        ->required()
        ->check(CLI::ExistingFile);
    return c;
  };
  auto* algo = add_upload("algo", "Attest the CVM, then upload the algorithm sealed to it");
  auto* data = add_upload("data", "Attest the CVM, then upload a dataset sealed to it");
  auto* result = app.add_subcommand("result", "Attest the CVM, then fetch and decrypt the result");
  result->add_option("--cvm", cvm_id, "CVM id")->required();
  result->add_option("PRIVATE_KEY", key_path, "A result consumer's key (PEM)")
      ->required()
      ->check(CLI::ExistingFile);
  result->add_option("-o,--output", out_path, "Where to write the result (a zip of results/)")->required();
  result->add_option("--policy", policy_path, "Attestation policy (default: <state>/sim/policy.json)");
  result->add_option("--manifest", manifest_file, "The manifest you agreed to; checked against the CVM's")
      ->check(CLI::ExistingFile);

  // ---- attestation ----
  auto* att = app.add_subcommand("attestation", "Fetch and verify a CVM's evidence");
  att->require_subcommand(1);
  auto* att_get = att->add_subcommand(
      "get",
      "Fetch evidence bound to a nonce, save it (for 'attestation validate --evidence') and verify it");
  std::string att_mode = "sim", nonce_hex, report_out, dice_policy_path;
  bool no_verify = false;
  att_get
      ->add_option("--mode", att_mode,
                   "sim | snp | vtpm (any TEE report, must carry a vTPM quote) | snp-vtpm (hardware SEV-SNP "
                   "with a vTPM quote) | dice (must carry a DICE chain: simulated-TEE agents)")
      ->capture_default_str()
      ->check(CLI::IsMember({"sim", "snp", "vtpm", "snp-vtpm", "dice"}));
  att_get->add_option("--cvm", cvm_id, "CVM id")->required();
  att_get->add_option("--nonce", nonce_hex,
                      "Nonce to bind (hex, 32-64 bytes; default: 32 fresh random bytes)");
  att_get->add_option("-o,--output", out_path, "Where to write the evidence (JSON)")->required();
  att_get->add_option("--report", report_out, "Also write the raw 1184-byte report here");
  att_get->add_option("--policy", policy_path, "Attestation policy (default: <state>/sim/policy.json)");
  att_get->add_flag("--no-verify", no_verify, "Only save the evidence; do not verify it");
  att_get
      ->add_option("--dice-policy", dice_policy_path,
                   "dice: DICE policy JSON (trusted root, layers' FWIDs); default: the policy's dice section")
      ->check(CLI::ExistingFile);
  add_validate_command(*att, g.json_out);
  add_collateral_command(app, g.json_out);

  // ---- keys ----
  auto* keys = app.add_subcommand("keys", "Participant keys");
  keys->require_subcommand(1);
  std::string prefix, key_type = "ed25519";
  auto* gen = keys->add_subcommand("generate", "Write PREFIX.key (private, 0600) and PREFIX.pub");
  gen->add_option("-o,--output", prefix, "Path prefix")->required();
  gen->add_option("--type", key_type, "ed25519|ecdsa|rsa")
      ->capture_default_str()
      ->check(CLI::IsMember({"ed25519", "ecdsa", "rsa"}));

  // ---- events ----
  auto* events = app.add_subcommand("events", "Print lifecycle and computation events");
  bool follow = false;
  int64_t count = 0;
  double wait_s = 5;
  events->add_flag("-f,--follow", follow, "Keep printing until interrupted");
  events->add_option("--count", count, "Stop after this many events");
  std::vector<std::string> event_kinds;
  events->add_option("--kind", event_kinds,
                     "Only events of this kind (cvm, health, stats, computation, upload, result, bridge, "
                     "authz); repeatable");
  events->add_option("--wait", wait_s, "Without --follow: stop after this many seconds")
      ->capture_default_str();
  add_measure_command(app);
  add_igvm_command(app);
  add_policy_command(app, g.json_out);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // app.exit prints help or the parse error; CLI11's own codes (100+) become
    // the documented usage-error code.
    // A command callback that failed (e.g. measure) throws CLI::RuntimeError(1): keep 1.
    return e.get_name() == "RuntimeError" ? e.get_exit_code() : app.exit(e) == 0 ? 0 : 2;
  }

  try {
    if (*create) {
      flatbuffers::FlatBufferBuilder b(128);
      auto be = backend == "libvirt" ? v1::Backend::libvirt : v1::Backend::process;
      v1::Tee t = tee == "sim"       ? v1::Tee::sim
                  : tee == "none"    ? v1::Tee::none
                  : tee == "sev-snp" ? v1::Tee::sev_snp
                  : tee == "tdx"     ? v1::Tee::tdx
                                     : v1::Tee::sev;
      auto req = v1::CreateCvmCreate(
          b, be, t, parse_duration(ttl),
          b.CreateString(cvm_policy_path.empty() ? "" : read_text_file(cvm_policy_path)), cocos_grpc);
      auto options = g.options();
      // A VM boots first (libvirt: about 10 s under TCG, more on a loaded host; coved
      // gives up after 120 s): wait for coved's answer rather than guess.
      options.request_timeout = std::max(
          options.request_timeout, std::chrono::milliseconds(be == v1::Backend::libvirt ? 180000 : 20000));
      auto r =
          take(bus::request_typed<v1::CvmInfo>(connect(g), bus::subjects::manager_create,
                                               bus::finish(b, req, {}, sender), options.request_timeout));
      if (g.json_out)
        std::cout << info_json(*r.body).dump() << '\n';
      else
        std::cout << r.body->id()->str() << '\n';
    } else if (*list) {
      flatbuffers::FlatBufferBuilder b(64);
      auto req = v1::CreateCvmListRequest(b);
      auto r = take(bus::request_typed<v1::CvmList>(connect(g), bus::subjects::manager_list,
                                                    bus::finish(b, req, {}, sender), g.timeout()));
      json arr = json::array();
      if (r.body->cvms())
        for (const auto* i : *r.body->cvms()) {
          if (g.json_out)
            arr.push_back(info_json(*i));
          else
            print_info(g, *i);
        }
      if (g.json_out)
        std::cout << arr.dump() << '\n';
      else if (!r.body->cvms() || r.body->cvms()->size() == 0)
        std::cout << "no CVMs\n";
    } else if (*info) {
      bus::reply<v1::CvmInfo> keep;
      const auto* i = cvm_request(g, bus::subjects::manager_info, cvm_id, keep);
      // Health and stats from the monitor; a short deadline, as it may not run at all.
      flatbuffers::FlatBufferBuilder b(128);
      auto req = bus::finish(b, v1::CreateCvmRef(b, b.CreateString(cvm_id)), {}, sender);
      auto stats = bus::request_typed<v1::CvmStats>(connect(g), bus::subjects::monitor_stats, req,
                                                    std::min(g.timeout(), std::chrono::milliseconds(2000)));
      if (g.json_out) {
        auto j = info_json(*i);
        j["monitor"] = stats ? stats_json(*stats->body) : json(nullptr);
        std::cout << j.dump() << '\n';
      } else {
        print_info(g, *i);
        if (i->launch_measurement() && i->launch_measurement()->size())
          std::cout << fmt::format("  launch measurement ({}) {}\n",
                                   i->tee() == v1::Tee::sev_snp ? "SEV-SNP, expected" : "simulated",
                                   i->launch_measurement()->str());
        print_stats(g, stats);
      }
    } else if (*set_policy) {
      flatbuffers::FlatBufferBuilder b(4096);
      auto req = v1::CreateCvmPolicyUpdate(b, b.CreateString(cvm_id),
                                           b.CreateString(read_text_file(cvm_policy_path)));
      auto r = take(bus::request_typed<v1::CvmInfo>(connect(g), bus::subjects::manager_policy,
                                                    bus::finish(b, req, {}, sender), g.timeout()));
      print_info(g, *r.body);
    } else if (*remove) {
      bus::reply<v1::CvmInfo> keep;
      print_info(g, *cvm_request(g, bus::subjects::manager_remove, cvm_id, keep));
    } else if (*start) {
      std::ifstream f(manifest_path);
      std::stringstream ss;
      ss << f.rdbuf();
      auto man = take(parse_manifest_json(ss.str()));
      flatbuffers::FlatBufferBuilder b(4096);
      auto m = to_fbs(b, man);
      auto req = v1::CreateComputationStart(b, b.CreateString(cvm_id), m);
      auto r = take(bus::request_typed<v1::ComputationStatus>(connect(g), bus::subjects::computation_start,
                                                              bus::finish(b, req, {}, sender), g.timeout()));
      if (g.json_out)
        std::cout
            << json{{"computation_id", man.id}, {"state", v1::EnumNameAgentState(r.body->state())}}.dump()
            << '\n';
      else
        std::cout << fmt::format("computation '{}' started on {}: state {}\n", man.id, cvm_id,
                                 v1::EnumNameAgentState(r.body->state()));
    } else if (*cstatus) {
      print_status(g, take(computation_status(connect(g), cvm_id, g.options())));
    } else if (*stop) {
      flatbuffers::FlatBufferBuilder b(128);
      auto req = v1::CreateComputationStop(b, b.CreateString(cvm_id), b.CreateString(""));
      auto r = take(bus::request_typed<v1::ComputationStatus>(connect(g), bus::subjects::computation_stop,
                                                              bus::finish(b, req, {}, sender), g.timeout()));
      std::cout << (g.json_out ? json{{"state", v1::EnumNameAgentState(r.body->state())}}.dump()
                               : fmt::format("stopped; state {}", v1::EnumNameAgentState(r.body->state())))
                << '\n';
    } else if (*algo || *data) {
      auto key = load_key(key_path);
      auto policy = load_policy_or_default(policy_path);
      auto role = *algo ? file_role::algorithm : file_role::dataset;
      auto agreed = load_manifest(manifest_file);
      auto st = take(upload(connect(g), cvm_id, role, file, key, policy, &agreed, g.options()));
      if (g.json_out)
        std::cout << json{{"bytes", st.bytes},
                          {"chunks", st.chunks},
                          {"seconds", std::chrono::duration<double>(st.elapsed).count()}}
                         .dump()
                  << '\n';
      else
        std::cout << fmt::format("{} {} accepted by the attested agent: {}\n",
                                 *algo ? "algorithm" : "dataset", fs::path(file).filename().string(),
                                 human_rate(st.bytes, st.elapsed));
    } else if (*result) {
      auto key = load_key(key_path);
      auto policy = load_policy_or_default(policy_path);
      std::optional<manifest> agreed;
      if (!manifest_file.empty()) agreed = load_manifest(manifest_file);
      auto st = take(
          fetch_result(connect(g), cvm_id, key, policy, out_path, agreed ? &*agreed : nullptr, g.options()));
      if (g.json_out)
        std::cout << json{{"bytes", st.bytes}, {"output", out_path}}.dump() << '\n';
      else
        std::cout << fmt::format("result decrypted to {}: {}\n", out_path, human_rate(st.bytes, st.elapsed));
    } else if (*att_get) {
      if (!dice_policy_path.empty() && att_mode != "dice")
        throw failure{make_error(errc::invalid_request, "--dice-policy applies to --mode dice only")};
      std::vector<uint8_t> nonce(32);
      if (nonce_hex.empty()) {
        crypto::random_bytes(nonce);
      } else {
        auto n = crypto::from_hex(nonce_hex);
        if (!n) throw failure{make_error(errc::invalid_request, "--nonce: not hex")};
        nonce = std::move(*n);
      }
      attest::snp_policy policy;
      if (!no_verify) {
        policy = load_policy_or_default(policy_path);
        // The mode's section must be checked, not merely tolerated.
        if (att_mode == "vtpm" || att_mode == "snp-vtpm") policy.vtpm.required = true;
        if (att_mode == "dice") {
          if (!dice_policy_path.empty()) {
            std::ifstream f(dice_policy_path, std::ios::binary);
            std::stringstream ss;
            ss << f.rdbuf();
            auto dir = fs::path(dice_policy_path).parent_path();
            auto dp = attest::load_dice_policy_json(ss.str(), dir.empty() ? "." : dir.string());
            if (!dp) throw failure{make_error(dp.error().code, "--dice-policy: " + dp.error().message)};
            policy.dice = attest::dice_evidence_policy{true, std::move(*dp)};
          } else if (!policy.dice) {
            throw failure{make_error(errc::invalid_request,
                                     "--mode dice: the policy has no dice section; pass --dice-policy FILE "
                                     "(the trusted DICE root and the layers' FWIDs) or --no-verify")};
          }
          policy.dice->required = true;
        }
      }
      auto ev = take(fetch_evidence(connect(g), cvm_id, nonce, g.options()));
      auto want = att_mode == "sim" ? "sim_snp" : "sev_snp";
      if (att_mode != "vtpm" && att_mode != "dice" && ev.kind != want)
        throw failure{make_error(
            errc::attestation_failed,
            fmt::format("CVM '{}' sent {} evidence, not {} (--mode {})", cvm_id, ev.kind, want, att_mode))};
      if ((att_mode == "vtpm" || att_mode == "snp-vtpm") && !ev.vtpm)
        throw failure{
            make_error(errc::attestation_failed,
                       fmt::format("CVM '{}' sent evidence without a vTPM section (--mode {}); is its "
                                   "agent running with --vtpm?",
                                   cvm_id, att_mode))};
      if (att_mode == "dice" && !ev.dice)
        throw failure{
            make_error(errc::attestation_failed,
                       fmt::format("CVM '{}' sent evidence without a DICE chain (--mode dice); only "
                                   "simulated-TEE agents produce one",
                                   cvm_id))};
      auto write = [](const std::string& path, std::span<const uint8_t> data) {
        auto tmp = path + ".tmp";
        {
          std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
          f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
          if (!f.flush()) throw failure{make_error(errc::internal, "cannot write " + tmp)};
        }
        std::error_code ec;
        fs::rename(tmp, path, ec);
        if (ec) throw failure{make_error(errc::internal, "cannot write " + path + ": " + ec.message())};
      };
      auto text = evidence_to_json(ev);
      write(out_path, std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
      if (!report_out.empty()) write(report_out, ev.report);
      std::string summary;
      std::optional<attest::verified_evidence> verified;
      if (!no_verify) {
        auto a = verify_saved_evidence(ev, policy);
        if (!a)
          throw failure{make_error(a.error().code, fmt::format("evidence saved to {} does not verify: {}",
                                                               out_path, a.error().message))};
        summary = a->summary;
        verified = std::move(a->verified);
      }
      if (g.json_out) {
        json out{{"verified", !no_verify},
                 {"mode", att_mode},
                 {"kind", ev.kind},
                 {"cvm", ev.cvm_id},
                 {"vtpm", ev.vtpm.has_value()},
                 {"dice", ev.dice.has_value()},
                 {"summary", summary},
                 {"output", out_path},
                 {"nonce", crypto::to_hex(ev.nonce)},
                 {"kx_public_key", crypto::to_hex(ev.kx_public_key)},
                 {"sign_public_key", crypto::to_hex(ev.sign_public_key)}};
        // The parsed fields of what was verified (as `attestation validate --json` prints them).
        if (verified) {
          out["report"] = report_to_json(verified->report);
          if (verified->vtpm) out["vtpm_quote"] = vtpm_to_json(*verified->vtpm);
          if (verified->dice) out["dice_chain"] = dice_to_json(*verified->dice);
        }
        std::cout << out.dump() << '\n';
      } else if (no_verify) {
        std::cout << ev.kind << " evidence (not verified) written to " << out_path << '\n';
      } else {
        std::cout << "evidence verified against the policy: " << summary << "\nevidence written to "
                  << out_path << '\n';
      }
    } else if (*gen) {
      auto kt = key_type == "rsa"     ? crypto::key_type::rsa
                : key_type == "ecdsa" ? crypto::key_type::ecdsa_p256
                                      : crypto::key_type::ed25519;
      auto key = take(crypto::private_key::generate(kt));
      auto priv = prefix + ".key";
      auto pub = prefix + ".pub";
      {
        std::ofstream f(priv, std::ios::trunc);
        f << key.to_pem();
        if (!f) throw failure{make_error(errc::internal, "cannot write " + priv)};
      }
      fs::permissions(priv, fs::perms::owner_read | fs::perms::owner_write);
      std::ofstream(pub, std::ios::trunc) << key.public_key().pem();
      auto b64 = crypto::base64_encode(key.public_key().der());
      if (g.json_out)
        std::cout << json{{"private_key", priv}, {"public_key", pub}, {"user_key", b64}}.dump() << '\n';
      else
        std::cout << fmt::format("wrote {} and {}\nmanifest user_key: {}\n", priv, pub, b64);
    } else if (*events) {
      auto& conn = connect(g);
      struct shared {
        std::mutex mu;
        std::condition_variable cv;
        std::vector<std::string> lines;
      };
      auto sh = std::make_shared<shared>();
      bool as_json = g.json_out;
      std::vector<std::string> subjects;
      for (const auto& k : event_kinds) {
        auto subject = bus::events_subject(k);
        if (!subject)
          throw failure{make_error(errc::invalid_request, fmt::format("--kind: '{}' is not a kind", k))};
        subjects.push_back(*subject);
      }
      if (subjects.empty()) subjects.emplace_back(bus::subjects::all_events);
      auto on_event = [sh, as_json](bus::message&& m) {
        auto ev = bus::body_as<v1::Event>(m.data);
        std::string line;
        if (!ev) {
          line = as_json ? json{{"subject", m.subject}, {"error", ev.error().to_string()}}.dump()
                         : fmt::format("{}  <unreadable event: {}>", m.subject, ev.error().to_string());
        } else {
          const auto& e = **ev;
          auto str = [](const flatbuffers::String* s) { return s ? s->str() : std::string(); };
          line = as_json ? json{{"kind", str(e.kind())},
                                {"cvm_id", str(e.cvm_id())},
                                {"computation_id", str(e.computation_id())},
                                {"state", str(e.state())},
                                {"message", str(e.message())},
                                {"at_ns", e.at_ns()}}
                               .dump()
                         : fmt::format("{:<12} {:<14} {:<18} {}", str(e.kind()), str(e.cvm_id()),
                                       str(e.state()), str(e.message()));
        }
        {
          std::lock_guard lock(sh->mu);
          sh->lines.push_back(std::move(line));
        }
        sh->cv.notify_all();
      };
      std::vector<bus::subscription> subs;
      subs.reserve(subjects.size());
      for (const auto& subject : subjects) subs.push_back(take(conn.subscribe(subject, on_event)));
      check(conn.flush(g.timeout()));
      std::signal(SIGINT, on_interrupt);
      std::signal(SIGTERM, on_interrupt);
      auto deadline =
          std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(wait_s * 1000));
      int64_t printed = 0;
      while (!interrupted && (count == 0 || printed < count) &&
             (follow || std::chrono::steady_clock::now() < deadline)) {
        // A bus that refuses this user the events subjects says so asynchronously.
        if (conn.stats().permission_violations > 0)
          throw failure{
              make_error(errc::unauthorized, "the bus refused: " + conn.last_permission_violation())};
        std::unique_lock lock(sh->mu);
        sh->cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return !sh->lines.empty(); });
        for (auto& l : sh->lines) {
          if (count != 0 && printed >= count) break;
          std::cout << l << '\n' << std::flush;
          ++printed;
        }
        sh->lines.clear();
      }
    }
  } catch (const failure& f) {
    if (g.json_out)
      std::cerr << json{{"error", std::string(to_string(f.err.code))}, {"message", f.err.message}}.dump()
                << '\n';
    else
      std::cerr << "cove: " << f.err.to_string() << '\n';
    return 1;
  }
  return 0;
}

}  // namespace cove::cli
