#include "cove/monitor/monitor.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "cove/bus/envelope.hpp"
#include "cove/bus/subjects.hpp"

namespace cove::monitor {

using self_ptr = monitor_actor::stateful_pointer<monitor_state>;
using bytes = std::vector<uint8_t>;

expected<void> validate(const monitor_config& cfg) {
  if (cfg.heartbeat_interval < min_heartbeat_interval || cfg.heartbeat_interval > max_heartbeat_interval)
    return make_error(
        errc::invalid_request,
        fmt::format("heartbeat_interval: {} ms is outside {}..{}", cfg.heartbeat_interval.count(),
                    min_heartbeat_interval.count(), max_heartbeat_interval.count()));
  if (cfg.heartbeat_misses < 1 || cfg.heartbeat_misses > 1000)
    return make_error(errc::invalid_request, "heartbeat_misses: must be 1..1000");
  if (cfg.stats_interval.count() < 0 ||
      (cfg.stats_interval.count() > 0 && cfg.stats_interval < std::chrono::milliseconds(10)))
    return make_error(errc::invalid_request, "stats_interval: 0 (off) or at least 10 ms");
  if (cfg.resync_interval < std::chrono::milliseconds(100))
    return make_error(errc::invalid_request, "resync_interval: at least 100 ms");
  if (cfg.request_timeout < std::chrono::milliseconds(10))
    return make_error(errc::invalid_request, "request_timeout: at least 10 ms");
  for (const auto& [backend, source] : cfg.sources)
    if (!source)
      return make_error(errc::invalid_request,
                        fmt::format("sources: no source for backend {}", v1::EnumNameBackend(backend)));
  if (cfg.max_cvms == 0) return make_error(errc::invalid_request, "max_cvms: must be > 0");
  if (!cfg.bus) return make_error(errc::invalid_request, "bus: required");
  return ok();
}

namespace {

constexpr std::string_view sender = "coved.monitor";

/// The sampler thread: samples the board's targets with the source of each backend.
stats_sampler_actor::behavior_type sampler(stats_sampler_actor::pointer self,
                                           std::shared_ptr<sample_board> board,
                                           std::map<v1::Backend, std::shared_ptr<stats_source>> sources,
                                           monitor_actor parent) {
  (void)self;
  return {
      [board = std::move(board), sources = std::move(sources), parent = std::move(parent)](atom::sample,
                                                                                           uint64_t round) {
        std::vector<sample_board::entry> work;
        {
          std::lock_guard lock(board->mu);
          if (board->round == round) work = board->entries;  // else: stale, answer with nothing
        }
        for (const auto& [backend, source] : sources) {
          std::vector<stats_target> targets;
          std::vector<size_t> where;
          for (size_t i = 0; i < work.size(); ++i)
            if (work[i].backend == backend) {
              targets.push_back(work[i].target);
              where.push_back(i);
            }
          if (targets.empty()) continue;
          std::vector<expected<cvm_sample>> results;
          try {
            results = source->sample(targets);
          } catch (const std::exception& e) {
            results.clear();
            spdlog::warn("monitor: stats source {} failed: {}", source->name(), e.what());
          }
          for (size_t k = 0; k < where.size(); ++k) {
            auto& e = work[where[k]];
            e.source = std::string(source->name());
            if (k < results.size())
              e.result = std::move(results[k]);
            else
              e.result = make_error(errc::internal, "the stats source returned no sample");
          }
        }
        {
          std::lock_guard lock(board->mu);
          if (board->round == round) board->entries = std::move(work);
        }
        caf::anon_send(parent, atom::sampled::value, round);
      },
  };
}

void send(self_ptr self, std::string_view subject, const bytes& payload) {
  if (subject.empty()) return;
  if (auto r = self->state.cfg.bus->publish(subject, payload); !r)
    spdlog::warn("monitor: publish {}: {}", subject, r.error().to_string());
}

void send_error(self_ptr self, const std::string& subject, errc code, const std::string& text) {
  spdlog::debug("monitor: {} -> {}: {}", subject, to_string(code), text);
  send(self, subject, bus::make_error(code, text, {}, sender));
}

void publish_event(self_ptr self, std::string_view subject, std::string_view kind, const std::string& cvm_id,
                   std::string_view state, const std::string& message) {
  flatbuffers::FlatBufferBuilder b(256);
  auto ev = v1::CreateEventDirect(b, std::string(kind).c_str(), cvm_id.c_str(), "",
                                  std::string(state).c_str(), message.c_str(), bus::now_ns());
  send(self, subject, bus::finish(b, ev, {}, sender));
}

void publish_health(self_ptr self, const tracked_cvm& c, const health_transition& t) {
  if (t.to == health_state::unhealthy)
    spdlog::warn("monitor: {} unhealthy: {}", c.id, t.message);
  else
    spdlog::info("monitor: {} {}: {}", c.id, to_string(t.to), t.message);
  publish_event(self, bus::subjects::health_events, "health", c.id, to_string(t.to), t.message);
}

tracked_cvm* upsert(self_ptr self, const std::string& id) {
  auto& st = self->state;
  if (auto it = st.cvms.find(id); it != st.cvms.end()) return &it->second;
  if (st.cvms.size() >= st.cfg.max_cvms) {
    spdlog::warn("monitor: tracking {} CVMs already; {} is not tracked", st.cvms.size(), id);
    return nullptr;
  }
  tracked_cvm c{.id = id,
                .health = health_tracker(
                    {.default_interval = st.cfg.heartbeat_interval, .misses = st.cfg.heartbeat_misses})};
  return &st.cvms.emplace(id, std::move(c)).first->second;
}

/// Asks the manager about one CVM (its backend and pid); at most one question per id.
void lookup_info(self_ptr self, const std::string& id) {
  auto& st = self->state;
  if (st.info_pending.count(id) || st.info_pending.size() >= 256) return;
  st.info_pending[id] = steady_clock::now();
  flatbuffers::FlatBufferBuilder b(64);
  auto req = bus::finish(b, v1::CreateCvmRef(b, b.CreateString(id)), {}, sender);
  auto target = caf::actor_cast<monitor_actor>(self);
  auto sent = st.cfg.bus->request_async(
      bus::subjects::manager_info, req, st.cfg.request_timeout, [target, id](expected<bus::message> r) {
        bytes out = r ? std::move(r->data) : bus::make_error(r.error().code, r.error().message, {}, sender);
        caf::anon_send(target, atom::mgr_reply::value, id, std::move(out));
      });
  if (!sent) st.info_pending.erase(id);
}

void request_list(self_ptr self) {
  auto& st = self->state;
  st.list_pending = true;
  flatbuffers::FlatBufferBuilder b(64);
  auto req = bus::finish(b, v1::CreateCvmListRequest(b), {}, sender);
  auto target = caf::actor_cast<monitor_actor>(self);
  auto sent = st.cfg.bus->request_async(
      bus::subjects::manager_list, req, st.cfg.request_timeout, [target](expected<bus::message> r) {
        bytes out = r ? std::move(r->data) : bus::make_error(r.error().code, r.error().message, {}, sender);
        caf::anon_send(target, atom::mgr_reply::value, std::string(), std::move(out));
      });
  if (!sent) {
    st.list_pending = false;
    st.next_resync = steady_clock::now() + std::chrono::seconds(1);
  }
}

/// What the manager says about a CVM: track it with its backend and pid, or forget it.
void apply_info(self_ptr self, const v1::CvmInfo& info) {
  if (!info.id() || !bus::valid_id(info.id()->str())) return;
  auto id = info.id()->str();
  auto state = info.state();
  if (state == v1::CvmState::removed || state == v1::CvmState::expired) {
    self->state.cvms.erase(id);
    return;
  }
  auto* c = upsert(self, id);
  if (!c) return;
  c->backend = info.backend();
  c->pid = info.pid();
  c->known = true;
  if (state == v1::CvmState::running) c->health.ready(steady_clock::now());
  if ((state == v1::CvmState::crashed || state == v1::CvmState::stopped) &&
      c->health.state() != health_state::gone)
    c->health.gone(info.detail() ? info.detail()->str() : std::string(v1::EnumNameCvmState(state)));
}

void on_manager_reply(self_ptr self, const std::string& id, const bytes& payload) {
  auto& st = self->state;
  if (id.empty()) {
    st.list_pending = false;
    auto list = bus::body_as<v1::CvmList>(payload);
    if (!list) {
      // The manager may not be up yet (same coved, or another host): ask again soon.
      spdlog::debug("monitor: manager.list: {}", list.error().to_string());
      st.next_resync =
          steady_clock::now() + std::min(st.cfg.resync_interval, std::chrono::milliseconds(1000));
      return;
    }
    std::set<std::string> listed;
    if ((*list)->cvms())
      for (const auto* info : *(*list)->cvms()) {
        if (!info) continue;
        apply_info(self, *info);
        if (info->id()) listed.insert(info->id()->str());
      }
    // Confirmed CVMs the manager no longer lists were removed while an event was missed.
    std::erase_if(st.cvms, [&](const auto& kv) { return kv.second.known && !listed.count(kv.first); });
    st.next_resync = steady_clock::now() + st.cfg.resync_interval;
    return;
  }
  st.info_pending.erase(id);
  auto info = bus::body_as<v1::CvmInfo>(payload);
  if (info) return apply_info(self, **info);
  if (info.error().code == errc::not_found) {
    st.cvms.erase(id);  // heartbeats of a CVM this manager does not know are not tracked
    return;
  }
  spdlog::debug("monitor: manager.info {}: {}", id, info.error().to_string());
}

/// A malformed heartbeat: logged, and (at most once a second per CVM, or once a second
/// for subjects of unknown CVMs) an event; nothing else changes.
void reject(self_ptr self, const bus::bus_msg& m, const std::string& why) {
  auto& st = self->state;
  ++st.rejected;
  auto id = bus::cvm_id_of(m.subject).value_or("");
  auto now = steady_clock::now();
  auto it = st.cvms.find(id);
  auto& last = it != st.cvms.end() ? it->second.last_rejection : st.last_unknown_rejection;
  if (now - last < std::chrono::seconds(1)) return;
  last = now;
  spdlog::warn("monitor: rejected a heartbeat on {} ({} bytes): {}", m.subject, m.data.size(), why);
  publish_event(self, bus::subjects::health_events, "health", id, "rejected", "malformed heartbeat: " + why);
}

void on_heartbeat(self_ptr self, const bus::bus_msg& m) {
  auto hb = decode_heartbeat(m.subject, m.data);
  if (!hb) return reject(self, m, hb.error().message);
  auto& st = self->state;
  auto it = st.cvms.find(hb->cvm_id);
  if (it == st.cvms.end()) return lookup_info(self, hb->cvm_id);  // tracked once the manager confirms
  auto& c = it->second;
  if (!c.known) lookup_info(self, c.id);
  if (auto t = c.health.on_heartbeat(*hb, steady_clock::now())) publish_health(self, c, *t);
}

void on_cvm_event(self_ptr self, const bus::bus_msg& m) {
  auto ev = bus::body_as<v1::Event>(m.data);
  if (!ev || !(*ev)->cvm_id() || !(*ev)->state()) return;
  auto id = (*ev)->cvm_id()->str();
  if (!bus::valid_id(id)) return;
  auto state = (*ev)->state()->str();
  auto& st = self->state;
  if (state == "removed" || state == "expired") {
    st.cvms.erase(id);
  } else if (state == "starting" || state == "running") {
    auto* c = upsert(self, id);
    if (!c) return;
    if (state == "running") c->health.ready(steady_clock::now());
    // pid 0: listed while its backend was still launching it; ask again now that it runs.
    if (!c->known || c->pid == 0) lookup_info(self, id);
  } else if (state == "crashed" || state == "stopped") {
    if (auto it = st.cvms.find(id); it != st.cvms.end() && it->second.health.state() != health_state::gone)
      it->second.health.gone((*ev)->message() ? (*ev)->message()->str() : state);
  }
}

void on_stats_request(self_ptr self, const bus::bus_msg& m) {
  auto req = bus::request_as<v1::CvmRef>(m.data);
  if (!req) return send(self, m.reply, bus::make_error(req.error().code, req.error().message, {}, sender));
  std::string id = (*req)->id() ? (*req)->id()->str() : "";
  auto it = self->state.cvms.find(id);
  if (it == self->state.cvms.end())
    return send_error(
        self, m.reply, errc::not_found,
        fmt::format("the monitor does not track CVM '{}'", bus::valid_id(id) ? id : "<invalid id>"));
  const auto& c = it->second;
  auto now = steady_clock::now();
  int64_t age = -1;
  if (auto last = c.health.last_heartbeat())
    age = std::chrono::duration_cast<std::chrono::milliseconds>(now - *last).count();
  std::string detail = c.health.detail();
  if (!c.sample_error.empty()) detail += (detail.empty() ? "" : "; ") + c.sample_error;
  cvm_sample s = c.sample.value_or(cvm_sample{});
  flatbuffers::FlatBufferBuilder b(512);
  auto body = v1::CreateCvmStatsDirect(
      b, c.id.c_str(), static_cast<v1::Health>(static_cast<uint8_t>(c.health.state())), age,
      c.health.heartbeats(), c.health.agent_state().c_str(), c.sampled_at_ns, c.source.c_str(),
      s.run_state.c_str(), s.cpu_time_ns, c.cpu_percent, s.memory_bytes, s.memory_max_bytes, s.processes,
      detail.c_str(), static_cast<uint32_t>(c.health.interval().count()));
  send(self, m.reply, bus::finish(b, body, {}, sender));
}

void start_round(self_ptr self, steady_clock::time_point now) {
  auto& st = self->state;
  st.next_sample = now + st.cfg.stats_interval;
  uint64_t round = 0;
  {
    std::lock_guard lock(st.board->mu);
    round = ++st.board->round;
    st.board->entries.clear();
    for (auto& [id, c] : st.cvms) {
      if (!c.known || c.health.state() == health_state::gone) continue;
      if (!st.cfg.sources.count(c.backend)) {
        c.sample_error = fmt::format("no stats source for backend {}", v1::EnumNameBackend(c.backend));
        continue;
      }
      st.board->entries.push_back({.target = {.cvm_id = id, .pid = static_cast<pid_t>(c.pid)},
                                   .backend = c.backend,
                                   .result = std::nullopt,
                                   .source = {}});
    }
    if (st.board->entries.empty()) return;
  }
  st.sampling = true;
  self->send(st.sampler, atom::sample::value, round);
}

void on_sampled(self_ptr self, uint64_t round) {
  auto& st = self->state;
  st.sampling = false;
  std::vector<sample_board::entry> done;
  {
    std::lock_guard lock(st.board->mu);
    if (st.board->round != round) return;
    done.swap(st.board->entries);
  }
  auto now = steady_clock::now();
  int64_t now_ns = bus::now_ns();
  for (auto& e : done) {
    auto it = st.cvms.find(e.target.cvm_id);
    if (it == st.cvms.end() || !e.result) continue;
    auto& c = it->second;
    c.source = e.source;
    if (!*e.result) {
      c.sample_error = e.result->error().message;
      continue;
    }
    auto& s = **e.result;
    c.cpu_percent = 0;
    if (c.sample && s.cpu_time_ns >= c.sample->cpu_time_ns && now > c.sampled_at) {
      auto dt = std::chrono::duration_cast<std::chrono::nanoseconds>(now - c.sampled_at).count();
      c.cpu_percent =
          100.0 * static_cast<double>(s.cpu_time_ns - c.sample->cpu_time_ns) / static_cast<double>(dt);
    }
    c.sample = s;
    c.sample_error.clear();
    c.sampled_at = now;
    c.sampled_at_ns = now_ns;
    if (st.cfg.stats_events)
      publish_event(self, bus::subjects::stats_events, "stats", c.id, s.run_state,
                    fmt::format("cpu {:.1f}% ({:.2f} s), memory {:.1f} MiB, {} {}", c.cpu_percent,
                                static_cast<double>(s.cpu_time_ns) / 1e9,
                                static_cast<double>(s.memory_bytes) / (1024.0 * 1024.0), s.processes,
                                c.backend == v1::Backend::libvirt ? "vCPUs" : "processes"));
  }
}

std::chrono::milliseconds tick_period(const monitor_config& cfg) {
  auto p = cfg.heartbeat_interval / 4;
  if (cfg.stats_interval.count() > 0) p = std::min(p, cfg.stats_interval / 2);
  return std::clamp(p, std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
}

void on_tick(self_ptr self) {
  auto& st = self->state;
  auto now = steady_clock::now();
  for (auto& [id, c] : st.cvms)
    if (auto t = c.health.check(now)) publish_health(self, c, *t);
  if (st.cfg.stats_interval.count() > 0 && !st.sampling && now >= st.next_sample) start_round(self, now);
  if (!st.list_pending && now >= st.next_resync) request_list(self);
  // A lost reply must not block later questions about the same CVM.
  std::erase_if(st.info_pending,
                [&](const auto& kv) { return now - kv.second > st.cfg.request_timeout * 2; });
  self->delayed_send(self, tick_period(st.cfg), atom::hb_check::value);
}

}  // namespace

monitor_actor::behavior_type monitor(monitor_actor::stateful_pointer<monitor_state> self,
                                     monitor_config cfg) {
  if (auto v = validate(cfg); !v) {
    spdlog::error("monitor: {}", v.error().to_string());
    self->quit(caf::sec::invalid_argument);
    return monitor_actor::behavior_type::make_empty_behavior();
  }
  self->state.cfg = std::move(cfg);
  self->state.sampler = self->spawn<caf::detached + caf::linked>(
      sampler, self->state.board, self->state.cfg.sources, caf::actor_cast<monitor_actor>(self));
  self->send(self, atom::hb_check::value);
  return {
      [self](bus::bus_msg& m) {
        if (m.subject == bus::subjects::monitor_stats) return on_stats_request(self, m);
        if (m.subject == bus::subjects::cvm_events) return on_cvm_event(self, m);
        if (m.subject.ends_with(".heartbeat")) return on_heartbeat(self, m);
        send_error(self, m.reply, errc::invalid_request, "unknown subject");
      },
      [self](atom::hb_check) { on_tick(self); },
      [self](atom::sampled, uint64_t round) { on_sampled(self, round); },
      [self](atom::mgr_reply, std::string& id, std::vector<uint8_t>& payload) {
        on_manager_reply(self, id, payload);
      },
  };
}

}  // namespace cove::monitor
