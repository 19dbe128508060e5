#include "cove/computation/computation.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "cove/bus/envelope.hpp"
#include "cove/bus/subjects.hpp"
#include "cove/crypto/keys.hpp"
#include "cove/manifest.hpp"
#include "cove/schemas/envelope_generated.h"

namespace cove::computation {

namespace {

using self_ptr = computation_actor::stateful_pointer<computation_state>;
using bytes = std::vector<uint8_t>;
constexpr std::string_view sender = "coved.computation";

void send(self_ptr self, const std::string& subject, const bytes& payload) {
  if (subject.empty()) return;
  if (auto r = self->state.cfg.bus->publish(subject, payload); !r)
    spdlog::warn("computation: publish {}: {}", subject, r.error().to_string());
}

void send_error(self_ptr self, const std::string& subject, const error& e) {
  spdlog::info("computation: {} -> {}", subject, e.to_string());
  send(self, subject, bus::make_error(e.code, e.message, {}, sender));
}

/// Forwards `payload` to the agent's `leaf` subject and relays its answer (or a
/// typed error) to `reply` without blocking the actor.
void forward(self_ptr self, const std::string& cvm_id, std::string_view leaf, bytes payload,
             const std::string& reply) {
  auto subject = bus::cvm_subject(cvm_id, leaf);
  if (!subject)
    return send_error(self, reply, make_error(errc::invalid_request, "cvm_id: must match [a-z0-9-]{1,64}"));
  auto target = caf::actor_cast<computation_actor>(self);
  auto sent = self->state.cfg.bus->request_async(
      *subject, payload, self->state.cfg.agent_timeout,
      [target, reply, cvm_id](expected<bus::message> answer) {
        bytes out;
        if (answer) {
          out = std::move(answer->data);
        } else {
          auto e = answer.error();
          if (e.code == errc::unavailable) e.message = fmt::format("no agent answers for CVM '{}'", cvm_id);
          if (e.code == errc::timeout)
            e.message = fmt::format("the agent of CVM '{}' did not answer in time", cvm_id);
          out = bus::make_error(e.code, e.message, {}, sender);
        }
        caf::anon_send(target, atom::forwarded::value, reply, std::move(out));
      });
  if (!sent) send_error(self, reply, sent.error());
}

/// The raw Ed25519 keys of everyone the manifest names (deduplicated).
std::vector<bus::nkeys::raw_public> participant_keys(const manifest& man) {
  std::vector<const std::vector<uint8_t>*> ders = {&man.algorithm.user_key};
  for (const auto& d : man.datasets) ders.push_back(&d.user_key);
  for (const auto& c : man.result_consumers) ders.push_back(&c);
  std::vector<bus::nkeys::raw_public> out;
  for (const auto* der : ders) {
    auto key = crypto::public_key::from_der(*der);
    if (!key) continue;
    auto raw = bus::nkeys::raw_ed25519(*key);
    if (!raw) {
      spdlog::info("computation: participant {} has a {} key: no bus access of its own", key->short_id(),
                   crypto::to_string(key->type()));
      continue;
    }
    if (std::find(out.begin(), out.end(), *raw) == out.end()) out.push_back(*raw);
  }
  return out;
}

/// The record of a CVM whose agent is gone, or null.
const run_record* ended_run(self_ptr self, const std::string& cvm_id) {
  auto it = self->state.runs.find(cvm_id);
  return it != self->state.runs.end() && !it->second.cvm_ended.empty() ? &it->second : nullptr;
}

void on_start(self_ptr self, const bus::bus_msg& m) {
  auto req = bus::request_as<v1::ComputationStart>(m.data);
  if (!req) return send_error(self, m.reply, req.error());
  std::string cvm_id = (*req)->cvm_id() ? (*req)->cvm_id()->str() : "";
  if (!bus::valid_id(cvm_id))
    return send_error(self, m.reply, make_error(errc::invalid_request, "cvm_id: invalid"));
  if ((*req)->manifest() == nullptr)
    return send_error(self, m.reply, make_error(errc::invalid_request, "manifest missing"));
  if (const auto* ended = ended_run(self, cvm_id))
    return send_error(
        self, m.reply,
        make_error(errc::wrong_state, fmt::format("CVM '{}' has no agent: {}", cvm_id, ended->cvm_ended)));
  auto man = from_fbs((*req)->manifest());
  if (!man) return send_error(self, m.reply, man.error());
  // Re-encode: the agent receives exactly the manifest this service validated.
  flatbuffers::FlatBufferBuilder b(4096);
  auto off = to_fbs(b, *man);
  auto payload = bus::finish(b, off, {}, sender);
  self->state.runs[cvm_id] = run_record{man->id, "ReceivingManifest", "manifest sent"};
  spdlog::info("computation: starting '{}' on {}", man->id, cvm_id);
  if (self->state.cfg.grant_participants) {
    try {
      self->state.cfg.grant_participants(cvm_id, participant_keys(*man));
    } catch (const std::exception& e) {
      spdlog::error("computation: granting the participants of {} failed: {}", cvm_id, e.what());
    }
  }
  forward(self, cvm_id, "manifest", std::move(payload), m.reply);
}

/// Event kinds coved's own services publish. An agent's event of such a kind is not
/// republished: it would speak for the manager (lifecycle), bridge, monitor or coved.
bool reserved_kind(std::string_view kind) {
  return kind == "cvm" || kind == "bridge" || kind == "health" || kind == "stats" || kind == "authz";
}

void on_agent_event(self_ptr self, const bus::bus_msg& m) {
  auto id = bus::cvm_id_of(m.subject);
  if (!id) return;
  auto ev = bus::body_as<v1::Event>(m.data);
  if (!ev) {
    spdlog::warn("computation: malformed event from {}: {}", *id, ev.error().to_string());
    return;
  }
  // The subject says whose agent published (the bridge lets an agent publish only
  // under its own id); the body must say the same, or the fan-out below would put
  // the event in another CVM's stream. The bridge already refuses such an event;
  // this catches one published around it (an open bus).
  std::string_view claimed = (*ev)->cvm_id() ? (*ev)->cvm_id()->string_view() : std::string_view();
  if (claimed != *id) {
    ++self->state.forged_events;
    spdlog::warn("computation: dropped an event from the agent of {} that names CVM '{}' ({} so far)", *id,
                 bus::valid_id(claimed) ? claimed : std::string_view("<invalid id>"),
                 self->state.forged_events);
    return;
  }
  auto kind = (*ev)->kind() ? (*ev)->kind()->str() : "computation";
  if (reserved_kind(kind)) {
    spdlog::warn("computation: dropped an event of kind '{}' from the agent of {}", kind, *id);
    return;
  }
  auto& r = self->state.runs[*id];
  if (!r.cvm_ended.empty()) return;  // a straggler from an agent already reported gone
  if ((*ev)->computation_id()) r.computation_id = (*ev)->computation_id()->str();
  if ((*ev)->state()) r.state = (*ev)->state()->str();
  if ((*ev)->message()) r.message = (*ev)->message()->str();
  if (r.state == "Idle") r.computation_id.clear();  // stopped: no computation loaded
  // Agents may only publish under their own CVM subject; this service fans the
  // events out on the public events subject.
  if (auto subject = bus::events_subject(kind)) send(self, *subject, m.data);
}

/// "CVM crashed: <the first line of the manager's reason>".
std::string ended_reason(const std::string& state, std::string_view detail) {
  detail = detail.substr(0, detail.find('\n'));
  if (detail.empty() || detail == state) return "CVM " + state;
  return fmt::format("CVM {}: {}", state, detail);
}

/// The manager's lifecycle events (cove.v1.events.cvm): a CVM that crashed, stopped,
/// was removed or expired while its computation was unfinished fails that computation
/// at once, with the reason, as an Event{kind:"computation", state:"Failed"}; `status`
/// then answers from this record, as no agent will.
void on_cvm_event(self_ptr self, const bus::bus_msg& m) {
  auto ev = bus::body_as<v1::Event>(m.data);
  if (!ev || !(*ev)->cvm_id() || !(*ev)->state()) return;
  auto id = (*ev)->cvm_id()->str();
  auto state = (*ev)->state()->str();
  auto& runs = self->state.runs;
  auto it = runs.find(id);
  if (it == runs.end()) return;
  bool gone = state == "removed" || state == "expired";
  if (state == "crashed" || state == "stopped" || gone) {
    auto& r = it->second;
    bool unfinished = !r.computation_id.empty() && r.state != "Complete" && r.state != "Failed";
    if (r.cvm_ended.empty())
      r.cvm_ended = ended_reason(state, (*ev)->message() ? (*ev)->message()->string_view() : "");
    if (unfinished) {
      r.state = v1::EnumNameAgentState(v1::AgentState::Failed);
      r.message = r.cvm_ended;
      spdlog::info("computation: '{}' on {} failed: {}", r.computation_id, id, r.message);
      flatbuffers::FlatBufferBuilder b(256);
      auto out = v1::CreateEventDirect(b, "computation", id.c_str(), r.computation_id.c_str(),
                                       r.state.c_str(), r.message.c_str(), bus::now_ns());
      send(self, *bus::events_subject("computation"), bus::finish(b, out, {}, sender));
    }
    if (gone) runs.erase(it);  // the CVM id is gone: nothing left to answer for
  } else if (state == "starting" || state == "running") {
    if (!it->second.cvm_ended.empty()) runs.erase(it);  // a new CVM under that id
  }
}

/// `status` for a CVM whose agent is gone, from the record: its computation's last
/// state (Failed with the reason when it was unfinished), or `wrong_state` naming why.
void answer_ended(self_ptr self, const std::string& cvm_id, const run_record& r, const std::string& reply) {
  if (r.computation_id.empty())
    return send_error(
        self, reply,
        make_error(errc::wrong_state, fmt::format("CVM '{}' has no agent: {}", cvm_id, r.cvm_ended)));
  auto state = v1::AgentState::Failed;
  for (auto s : v1::EnumValuesAgentState())
    if (r.state == v1::EnumNameAgentState(s)) state = s;
  flatbuffers::FlatBufferBuilder b(256);
  auto body = v1::CreateComputationStatusDirect(b, cvm_id.c_str(), r.computation_id.c_str(), state,
                                                r.message.c_str());
  send(self, reply, bus::finish(b, body, {}, sender));
}

void on_bus(self_ptr self, const bus::bus_msg& m) {
  if (m.subject == bus::subjects::computation_start) return on_start(self, m);
  if (m.subject == bus::subjects::computation_stop) {
    auto req = bus::request_as<v1::ComputationStop>(m.data);
    if (!req) return send_error(self, m.reply, req.error());
    std::string cvm_id = (*req)->cvm_id() ? (*req)->cvm_id()->str() : "";
    return forward(self, cvm_id, "stop", m.data, m.reply);
  }
  if (m.subject == bus::subjects::computation_status) {
    auto req = bus::request_as<v1::StatusRequest>(m.data);
    if (!req) return send_error(self, m.reply, req.error());
    std::string cvm_id = (*req)->cvm_id() ? (*req)->cvm_id()->str() : "";
    if (const auto* r = ended_run(self, cvm_id)) return answer_ended(self, cvm_id, *r, m.reply);
    return forward(self, cvm_id, "status", m.data, m.reply);
  }
  if (m.subject == bus::subjects::cvm_events) return on_cvm_event(self, m);
  if (m.subject.ends_with(".events")) return on_agent_event(self, m);
  send_error(self, m.reply, make_error(errc::invalid_request, "unknown subject"));
}

}  // namespace

computation_actor::behavior_type computation(computation_actor::stateful_pointer<computation_state> self,
                                             computation_config cfg) {
  if (!cfg.bus) {
    spdlog::error("computation: no bus connection");
    self->quit(caf::sec::invalid_argument);
    return computation_actor::behavior_type::make_empty_behavior();
  }
  self->state.cfg = std::move(cfg);
  return {
      [self](bus::bus_msg& m) { on_bus(self, m); },
      [self](atom::forwarded, std::string& reply, std::vector<uint8_t>& payload) {
        send(self, reply, payload);
      },
  };
}

}  // namespace cove::computation
