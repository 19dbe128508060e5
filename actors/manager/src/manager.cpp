#include "cove/manager/manager.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>

#include <spdlog/spdlog.h>

#include "cove/attest/policy.hpp"
#include "cove/attest/sim_store.hpp"
#include "cove/bus/envelope.hpp"
#include "cove/bus/subjects.hpp"
#include "cove/crypto/encoding.hpp"
#include "cove/manager/process_backend.hpp"

namespace cove::manager {

namespace fs = std::filesystem;
using self_ptr = manager_actor::stateful_pointer<manager_state>;
using bytes = std::vector<uint8_t>;

expected<void> validate(const manager_config& cfg) {
  if (cfg.state_dir.empty()) return make_error(errc::invalid_request, "state_dir: empty");
  if (!fs::exists(cfg.agent_binary))
    return make_error(errc::invalid_request,
                      "agent_binary: " + cfg.agent_binary.string() + " does not exist");
  if (cfg.agent_nats_url.empty() && cfg.agent_bridge_address.empty())
    return make_error(errc::invalid_request, "agent_bridge_address or agent_nats_url required");
  if (!cfg.bus || !cfg.backend || !cfg.sim_root)
    return make_error(errc::invalid_request, "bus, backend and sim_root required");
  return ok();
}

namespace {

constexpr std::string_view sender = "coved.manager";

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void send(self_ptr self, const std::string& subject, const bytes& payload) {
  if (subject.empty()) return;
  if (auto r = self->state.cfg.bus->publish(subject, payload); !r)
    spdlog::warn("manager: publish {}: {}", subject, r.error().to_string());
}

void send_error(self_ptr self, const std::string& subject, errc code, const std::string& text) {
  spdlog::info("manager: {} -> {}: {}", subject, to_string(code), text);
  send(self, subject, bus::make_error(code, text, {}, sender));
}

flatbuffers::Offset<v1::CvmInfo> build_info(flatbuffers::FlatBufferBuilder& b, const cvm_record& r) {
  return v1::CreateCvmInfo(b, b.CreateString(r.id), r.backend, r.tee, r.state, r.pid, r.created_at_ns,
                           r.ttl_seconds, b.CreateString(r.detail), b.CreateString(r.policy_json),
                           r.cocos_grpc_address.empty() ? 0 : b.CreateString(r.cocos_grpc_address),
                           r.launch_measurement.empty() ? 0 : b.CreateString(r.launch_measurement));
}

bytes info_payload(const cvm_record& r) {
  flatbuffers::FlatBufferBuilder b(256);
  return bus::finish(b, build_info(b, r), {}, sender);
}

void publish_event(self_ptr self, const cvm_record& r, const std::string& message) {
  flatbuffers::FlatBufferBuilder b(256);
  auto ev = v1::CreateEventDirect(b, "cvm", r.id.c_str(), "", v1::EnumNameCvmState(r.state), message.c_str(),
                                  now_ns());
  send(self, *bus::events_subject("cvm"), bus::finish(b, ev, {}, sender));
}

const std::shared_ptr<cvm_backend>& backend_ptr(self_ptr self, const cvm_record& r) {
  return r.backend == v1::Backend::libvirt ? self->state.cfg.libvirt : self->state.cfg.backend;
}

cvm_backend& backend_of(self_ptr self, const cvm_record& r) {
  return *backend_ptr(self, r);
}

/// One create's launch, on a thread of its own (a blocking actor is detached): the
/// backend may block (libvirt: define and start the domain, swtpm, 1-2 s) and the
/// manager must keep answering list/info/remove meanwhile. The result comes back as
/// `launched`; the manager is the only one that touches the CVM's record.
void launch_worker(caf::blocking_actor*, std::shared_ptr<cvm_backend> backend, agent_launch l,
                   manager_actor manager) {
  expected<pid_t> pid = make_error(errc::internal, "launch did not run");
  try {
    pid = backend->launch(l);
  } catch (const std::exception& e) {
    pid = make_error(errc::internal, std::string("launch: ") + e.what());
  }
  if (pid)
    caf::anon_send(manager, atom::launched::value, l.cvm_id, static_cast<int32_t>(*pid), uint8_t{0},
                   std::string());
  else
    caf::anon_send(manager, atom::launched::value, l.cvm_id, int32_t{0},
                   static_cast<uint8_t>(pid.error().code), pid.error().message);
}

std::string log_of(self_ptr self, const cvm_record& r) {
  return (r.dir / backend_of(self, r).log_name()).string();
}

/// A loopback TCP port nobody listens on now, for a CVM's cocos front door (the agent,
/// or QEMU's forward, binds it moments later; a race with another process taking it
/// in between makes that CVM's front door fail, reported in its log).
expected<uint16_t> free_loopback_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(errc::internal, std::string("socket: ") + std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  int err = errno;
  ::close(fd);
  if (!ok) return make_error(errc::internal, std::string("no free loopback port: ") + std::strerror(err));
  return ntohs(a.sin_port);
}

std::string new_cvm_id(const manager_state& st) {
  for (;;) {
    std::array<uint8_t, 5> rnd{};
    crypto::random_bytes(rnd);
    std::string id = "cvm-" + crypto::to_hex(rnd);
    if (st.cvms.count(id) == 0) return id;
  }
}

/// CvmInfo.launch_measurement of a new CVM (hex; empty: unknown). The CVMs this host
/// runs carry the simulated measurement: the libvirt image's agent.sha384, or the
/// SHA-384 of the process backend's agent binary (hashed once).
std::string expected_measurement(self_ptr self, v1::Backend kind, v1::Tee tee) {
  auto& st = self->state;
  if (kind == v1::Backend::libvirt) {
    auto m = st.cfg.libvirt->launch_measurement(tee == v1::Tee::sev_snp);
    if (!m) spdlog::info("manager: launch measurement unknown: {}", m.error().message);
    return m ? *m : std::string();
  }
  if (st.agent_measurement.empty()) {
    auto d = attest::sha384_file(st.cfg.agent_binary);
    if (d) st.agent_measurement = crypto::to_hex(*d);
  }
  return st.agent_measurement;
}

void on_create(self_ptr self, const bus::bus_msg& m) {
  auto req = bus::request_as<v1::CvmCreate>(m.data);
  if (!req) return send(self, m.reply, bus::make_error(req.error().code, req.error().message, {}, sender));
  auto& st = self->state;
  const auto kind = (*req)->backend();
  const auto tee = (*req)->tee();
  if (kind == v1::Backend::libvirt) {
    if (!st.cfg.libvirt)
      return send_error(self, m.reply, errc::unavailable, "the libvirt backend is not enabled on this host");
    // tee=none VMs (this machine kind has no SEV-SNP/TDX): the agent's evidence is
    // the simulated SEV-SNP one, from the identity on its config share.
    if (tee != v1::Tee::sim && tee != v1::Tee::none) {
      // The launch plan needs no hardware: say what an SNP host would measure.
      std::string expected;
      if (tee == v1::Tee::sev_snp) {
        auto d = st.cfg.libvirt->launch_measurement(/*snp=*/true);
        expected = d ? "; its expected launch measurement (SEV-SNP) would be " + *d
                     : "; expected launch measurement not computed: " + d.error().message;
      }
      return send_error(
          self, m.reply, errc::unavailable,
          fmt::format("tee '{}' needs SEV-SNP/TDX hardware, which this host does not offer; the "
                      "libvirt backend runs tee 'none' (simulated evidence), see "
                      "docs/operations.md §8{}",
                      v1::EnumNameTee(tee), expected));
    }
  } else if (kind != v1::Backend::process) {
    return send_error(self, m.reply, errc::unavailable,
                      fmt::format("backend '{}' is not available in this build; use 'process' or 'libvirt'",
                                  v1::EnumNameBackend(kind)));
  } else if (tee != v1::Tee::sim) {
    return send_error(
        self, m.reply, errc::unavailable,
        fmt::format("tee '{}' needs the libvirt backend; the process backend simulates SEV-SNP (tee 'sim')",
                    v1::EnumNameTee(tee)));
  }
  if (st.cvms.size() >= st.cfg.max_cvms)
    return send_error(self, m.reply, errc::too_large,
                      fmt::format("this host already runs {} CVMs", st.cvms.size()));

  std::string policy = (*req)->policy_json() ? (*req)->policy_json()->str() : "";
  if (policy.empty()) policy = st.cfg.default_policy_json;
  if (auto p = attest::load_inline_policy_json(policy); !p)
    return send_error(self, m.reply, errc::invalid_request, "policy_json: " + p.error().message);

  cvm_record r;
  r.id = new_cvm_id(st);
  r.backend = kind;
  r.tee = tee;
  r.policy_json = std::move(policy);
  uint16_t cocos_port = 0;
  if ((*req)->cocos_grpc()) {
    auto port = free_loopback_port();
    if (!port)
      return send_error(self, m.reply, port.error().code, "cocos front door: " + port.error().message);
    cocos_port = *port;
    r.cocos_grpc_address = "127.0.0.1:" + std::to_string(cocos_port);
  }
  r.launch_measurement = expected_measurement(self, kind, tee);
  r.created_at_ns = now_ns();
  r.ttl_seconds = (*req)->ttl_seconds();
  r.dir = st.cfg.state_dir / "cvms" / r.id;
  r.generation = ++st.generation;
  r.create_reply = m.reply;
  std::error_code ec;
  fs::create_directories(r.dir / "work", ec);
  if (!ec) fs::create_directories(r.dir / "tee", ec);
  if (ec) return send_error(self, m.reply, errc::internal, "cannot create the CVM directory");
  fs::permissions(r.dir, fs::perms::owner_all, ec);

  auto chip = attest::issue_sim_vcek(*st.cfg.sim_root);
  if (!chip) return send_error(self, m.reply, errc::internal, "simulated TEE: " + chip.error().message);
  if (auto saved = attest::save_sim_identity(*chip, *st.cfg.sim_root, r.dir / "tee"); !saved)
    return send_error(self, m.reply, errc::internal, "simulated TEE: " + saved.error().message);

  auto& backend = backend_of(self, r);
  agent_launch l{.cvm_id = r.id,
                 .agent_binary = st.cfg.agent_binary,
                 .bridge_address = st.cfg.agent_bridge_address,
                 .bridge_ca = st.cfg.agent_bridge_ca,
                 .nats_url = st.cfg.agent_nats_url,
                 .dir = r.dir,
                 .work_dir = r.dir / "work",
                 .tee_dir = r.dir / "tee",
                 .log_file = r.dir / backend.log_name(),
                 .log_level = st.cfg.agent_log_level,
                 .max_upload_bytes = st.cfg.agent_max_upload,
                 .heartbeat_interval_ms = static_cast<uint32_t>(st.cfg.agent_heartbeat_interval.count()),
                 .vtpm_tcti = st.cfg.agent_vtpm_tcti,
                 .ima_list = st.cfg.agent_ima_list,
                 .cocos_grpc_port = cocos_port,
                 .cocos_grpc_tls = st.cfg.cocos_grpc_tls};
  r.launching = true;
  spdlog::info("manager: {} launching ({} backend)", r.id, backend.name());
  // The deadline covers the launch too.
  self->delayed_send(self, kind == v1::Backend::libvirt ? st.cfg.vm_create_timeout : st.cfg.create_timeout,
                     atom::deadline::value, r.id, r.generation);
  self->spawn(launch_worker, backend_ptr(self, r), std::move(l), caf::actor_cast<manager_actor>(self));
  st.cvms.emplace(r.id, std::move(r));
}

void finish_create(self_ptr self, cvm_record& r) {
  r.state = v1::CvmState::running;
  spdlog::info("manager: {} running", r.id);
  publish_event(self, r, "agent ready");
  send(self, r.create_reply, info_payload(r));
  r.create_reply.clear();
  if (r.ttl_seconds > 0)
    self->delayed_send(self, std::chrono::seconds(r.ttl_seconds), atom::expire::value, r.id);
}

void start_remove(self_ptr self, cvm_record& r, const std::string& reply, v1::CvmState final_state) {
  if (!reply.empty()) r.remove_replies.push_back(reply);
  if (r.state == v1::CvmState::crashed || r.state == v1::CvmState::stopped) {
    // Already gone: forget it now.
    r.state = final_state;
    // Wipe first: a remove reply (or event) means the CVM's files are gone.
    std::error_code ec;
    fs::remove_all(r.dir, ec);
    auto payload = info_payload(r);
    for (const auto& s : r.remove_replies) send(self, s, payload);
    publish_event(self, r, "removed");
    backend_of(self, r).forget(r.id);
    self->state.cvms.erase(r.id);
    return;
  }
  if (r.state == v1::CvmState::removed || r.state == v1::CvmState::expired) return;  // already in progress
  if (!r.create_reply.empty()) {
    send_error(self, r.create_reply, errc::not_found, "the CVM was removed while starting");
    r.create_reply.clear();
  }
  r.state = final_state;
  r.generation = ++self->state.generation;
  if (r.launching) return;  // the backend does not know it yet: stopped once `launched` arrives
  backend_of(self, r).stop(r.id, r.pid, /*force=*/false);
  self->delayed_send(self, self->state.cfg.remove_timeout, atom::deadline::value, r.id, r.generation);
}

cvm_record* lookup(self_ptr self, const bus::bus_msg& m) {
  auto req = bus::request_as<v1::CvmRef>(m.data);
  if (!req) {
    send(self, m.reply, bus::make_error(req.error().code, req.error().message, {}, sender));
    return nullptr;
  }
  std::string id = (*req)->id() ? (*req)->id()->str() : "";
  auto it = self->state.cvms.find(id);
  if (it == self->state.cvms.end()) {
    send_error(self, m.reply, errc::not_found,
               fmt::format("no CVM '{}'", bus::valid_id(id) ? id : "<invalid id>"));
    return nullptr;
  }
  return &it->second;
}

void on_agent_event(self_ptr self, const bus::bus_msg& m) {
  auto id = bus::cvm_id_of(m.subject);
  if (!id) return;
  auto it = self->state.cvms.find(*id);
  if (it == self->state.cvms.end()) return;
  auto ev = bus::body_as<v1::Event>(m.data);
  if (!ev) {
    spdlog::warn("manager: malformed event from {}: {}", *id, ev.error().to_string());
    return;
  }
  auto& r = it->second;
  // The agent announces readiness by entering ReceivingManifest.
  if (r.state == v1::CvmState::starting && (*ev)->state() && (*ev)->state()->str() == "ReceivingManifest") {
    if (r.launching)
      r.early_ready = true;  // its `starting` event and pid come first
    else
      finish_create(self, r);
  }
}

/// The bridge refused a starting CVM's agent: the create fails now, with the reason,
/// instead of timing out.
void on_bridge_event(self_ptr self, const bus::bus_msg& m) {
  auto ev = bus::body_as<v1::Event>(m.data);
  if (!ev || !(*ev)->state() || (*ev)->state()->str() != "refused" || !(*ev)->cvm_id()) return;
  auto it = self->state.cvms.find((*ev)->cvm_id()->str());
  if (it == self->state.cvms.end() || it->second.state != v1::CvmState::starting) return;
  auto& r = it->second;
  r.detail = "the bridge refused the agent: " + ((*ev)->message() ? (*ev)->message()->str() : std::string());
  spdlog::warn("manager: {}: {}", r.id, r.detail);
  send_error(self, r.create_reply, errc::attestation_failed, r.detail);
  r.create_reply.clear();
  start_remove(self, r, {}, v1::CvmState::removed);
}

void on_policy(self_ptr self, const bus::bus_msg& m) {
  auto req = bus::request_as<v1::CvmPolicyUpdate>(m.data);
  if (!req) return send(self, m.reply, bus::make_error(req.error().code, req.error().message, {}, sender));
  std::string id = (*req)->id() ? (*req)->id()->str() : "";
  auto it = self->state.cvms.find(id);
  if (it == self->state.cvms.end())
    return send_error(self, m.reply, errc::not_found,
                      fmt::format("no CVM '{}'", bus::valid_id(id) ? id : "<invalid id>"));
  std::string policy = (*req)->policy_json() ? (*req)->policy_json()->str() : "";
  if (auto p = attest::load_inline_policy_json(policy); !p)
    return send_error(self, m.reply, errc::invalid_request, "policy_json: " + p.error().message);
  auto& r = it->second;
  r.policy_json = std::move(policy);
  spdlog::info("manager: {} has a new attestation policy", r.id);
  // The bridge closes the agent's link on this event; the agent re-attests under it.
  publish_event(self, r, "policy updated");
  send(self, m.reply, info_payload(r));
}

void on_bus(self_ptr self, const bus::bus_msg& m) {
  if (m.subject == bus::subjects::manager_create) return on_create(self, m);
  if (m.subject == bus::subjects::manager_list) {
    if (auto req = bus::request_as<v1::CvmListRequest>(m.data); !req)
      return send(self, m.reply, bus::make_error(req.error().code, req.error().message, {}, sender));
    flatbuffers::FlatBufferBuilder b(1024);
    std::vector<flatbuffers::Offset<v1::CvmInfo>> infos;
    for (const auto& [id, r] : self->state.cvms) infos.push_back(build_info(b, r));
    auto list = v1::CreateCvmList(b, b.CreateVector(infos));
    return send(self, m.reply, bus::finish(b, list, {}, sender));
  }
  if (m.subject == bus::subjects::manager_info) {
    if (auto* r = lookup(self, m)) send(self, m.reply, info_payload(*r));
    return;
  }
  if (m.subject == bus::subjects::manager_remove) {
    if (auto* r = lookup(self, m)) start_remove(self, *r, m.reply, v1::CvmState::removed);
    return;
  }
  if (m.subject == bus::subjects::manager_policy) return on_policy(self, m);
  if (m.subject == bus::subjects::bridge_events) return on_bridge_event(self, m);
  if (m.subject.ends_with(".events")) return on_agent_event(self, m);
  send_error(self, m.reply, errc::invalid_request, "unknown subject");
}

/// The CVM's agent (or VM) ended with wait status `status`.
void on_exited(self_ptr self, const std::string& id, int status) {
  auto it = self->state.cvms.find(id);
  if (it == self->state.cvms.end()) return;
  auto& r = it->second;
  if (r.launching) {  // overtook its `launched`: handled right after it
    r.early_exit = status;
    return;
  }
  auto how = backend_of(self, r).describe_exit(r.id, status);
  std::error_code ec;
  if (r.state == v1::CvmState::removed || r.state == v1::CvmState::expired) {
    spdlog::info("manager: {} {} ({})", r.id, v1::EnumNameCvmState(r.state), how);
    fs::remove_all(r.dir, ec);  // before the reply: "removed" means the files are gone
    auto payload = info_payload(r);
    for (const auto& s : r.remove_replies) send(self, s, payload);
    publish_event(self, r, r.state == v1::CvmState::expired ? "TTL expired; removed" : "removed");
    backend_of(self, r).forget(r.id);
    self->state.cvms.erase(it);
    return;
  }
  bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  r.state = clean ? v1::CvmState::stopped : v1::CvmState::crashed;
  r.detail = how + "; log: " + log_of(self, r);
  r.generation = ++self->state.generation;
  spdlog::warn("manager: {} {}: {}", r.id, v1::EnumNameCvmState(r.state), r.detail);
  fs::remove_all(r.dir / "work", ec);  // never leave a run's plaintext behind
  if (!r.create_reply.empty()) {
    send_error(self, r.create_reply, errc::internal, "the agent exited while starting: " + r.detail);
    r.create_reply.clear();
  }
  publish_event(self, r, r.detail);
}

/// A launch worker finished: the CVM runs (pid), or its create fails (code != 0).
void on_launched(self_ptr self, const std::string& id, int32_t pid, uint8_t code, const std::string& text) {
  auto it = self->state.cvms.find(id);
  if (it == self->state.cvms.end() || !it->second.launching) return;
  auto& r = it->second;
  r.launching = false;
  if (code != 0) {
    std::error_code ec;
    fs::remove_all(r.dir, ec);
    if (!r.create_reply.empty()) send_error(self, r.create_reply, static_cast<errc>(code), text);
    spdlog::warn("manager: {} did not launch: {}", r.id, text);
    // Removed while launching: nothing ran, nothing is left.
    r.state = r.state == v1::CvmState::expired ? v1::CvmState::expired : v1::CvmState::removed;
    auto payload = info_payload(r);
    for (const auto& s : r.remove_replies) send(self, s, payload);
    self->state.cvms.erase(it);
    return;
  }
  r.pid = pid;
  auto& backend = backend_of(self, r);
  if (r.state == v1::CvmState::starting) {
    spdlog::info("manager: {} starting ({} backend, pid {})", r.id, backend.name(), r.pid);
    publish_event(self, r,
                  r.backend == v1::Backend::libvirt ? fmt::format("VM booting (QEMU pid {})", r.pid)
                                                    : "agent starting");
  } else if (!r.early_exit) {
    // Removed (or timed out) while launching: stop it now, as start_remove would have.
    spdlog::info("manager: {} launched after its remove; stopping it", r.id);
    backend.stop(r.id, r.pid, /*force=*/false);
    self->delayed_send(self, self->state.cfg.remove_timeout, atom::deadline::value, r.id, r.generation);
  }
  if (r.early_exit) return on_exited(self, id, *r.early_exit);
  if (r.early_ready && r.state == v1::CvmState::starting) finish_create(self, r);
}

}  // namespace

manager_actor::behavior_type manager(manager_actor::stateful_pointer<manager_state> self,
                                     manager_config cfg) {
  if (auto v = validate(cfg); !v) {
    spdlog::error("manager: {}", v.error().to_string());
    self->quit(caf::sec::invalid_argument);
    return manager_actor::behavior_type::make_empty_behavior();
  }
  self->state.cfg = std::move(cfg);
  return {
      [self](bus::bus_msg& m) { on_bus(self, m); },
      [self](atom::exited, std::string& id, int status) { on_exited(self, id, status); },
      [self](atom::launched, std::string& id, int32_t pid, uint8_t code, std::string& text) {
        on_launched(self, id, pid, code, text);
      },
      [self](atom::deadline, std::string& id, uint64_t generation) {
        auto it = self->state.cvms.find(id);
        if (it == self->state.cvms.end() || it->second.generation != generation) return;
        auto& r = it->second;
        if (r.state == v1::CvmState::starting) {
          r.detail = "the agent did not become ready in time; log: " + log_of(self, r);
          send_error(self, r.create_reply, errc::timeout, r.detail);
          r.create_reply.clear();
          start_remove(self, r, {}, v1::CvmState::removed);
        } else if (r.state == v1::CvmState::removed || r.state == v1::CvmState::expired) {
          spdlog::warn("manager: {} did not stop in time; forcing", r.id);
          backend_of(self, r).stop(r.id, r.pid, /*force=*/true);
        }
      },
      [self](atom::expire, std::string& id) {
        auto it = self->state.cvms.find(id);
        if (it == self->state.cvms.end() || it->second.state != v1::CvmState::running) return;
        spdlog::info("manager: {} TTL expired", id);
        start_remove(self, it->second, {}, v1::CvmState::expired);
      },
  };
}

}  // namespace cove::manager
