#include "cove/gateway/cvms_client.hpp"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>
#include <variant>

#include "cove/bus/envelope.hpp"
#include "cove/bus/subjects.hpp"
#include "cove/gateway/cvms_rpc.hpp"
#include "cove/gateway/mapping.hpp"

namespace cove::gateway {

namespace {

constexpr std::string_view sender = "coved.orchestrator";

/// The events it maps (exactly what the bus's orchestrator role may read).
constexpr std::array<std::string_view, 5> event_subjects = {"cove.v1.events.computation",
                                                            "cove.v1.events.upload", "cove.v1.events.result",
                                                            "cove.v1.events.cvm", "cove.v1.events.bridge"};

expected<std::string> read_pem(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return make_error(errc::invalid_request, fmt::format("{}: cannot read {}", what, path));
  std::string s{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  if (s.find("-----BEGIN") == std::string::npos)
    return make_error(errc::invalid_request, fmt::format("{}: {} is not PEM", what, path));
  return s;
}

cvms::ClientStreamMessage run_response(const std::string& id, const std::string& err) {
  cvms::ClientStreamMessage m;
  m.mutable_run_res()->set_computation_id(id);
  m.mutable_run_res()->set_error(err);
  return m;
}

}  // namespace

expected<void> validate(const cvms_config& cfg) {
  if (cfg.url.empty()) return make_error(errc::invalid_request, "--cvms-url: empty");
  if (!cfg.bus) return make_error(errc::invalid_request, "cvms client: no bus connection");
  if ((cfg.cert_file.empty()) != (cfg.key_file.empty()))
    return make_error(errc::invalid_request, "--cvms-cert and --cvms-key go together");
  if (!cfg.cert_file.empty() && cfg.ca_file.empty())
    return make_error(errc::invalid_request, "--cvms-cert needs --cvms-ca (the server's CA)");
  if (cfg.backoff_initial.count() <= 0 || cfg.backoff_max < cfg.backoff_initial)
    return make_error(errc::invalid_request, "cvms reconnect backoff: need 0 < initial <= max");
  if (cfg.outbox_limit == 0) return make_error(errc::invalid_request, "cvms outbox limit: 0");
  return ok();
}

struct cvms_client::impl {
  struct bus_event {
    std::vector<uint8_t> data;
  };
  struct stream_opened {};
  struct stream_ended {};
  using item = std::variant<cvms::ServerStreamMessage, bus_event, stream_opened, stream_ended>;

  struct tracked {
    std::string cvm_id;
    std::string state;  // last cove agent state seen in its events
  };

  cvms_config cfg;
  std::shared_ptr<grpc::ChannelCredentials> creds;

  // Work for the worker thread (it alone does blocking bus requests and owns
  // the computation table).
  std::mutex qmu;
  std::condition_variable qcv;
  std::deque<item> queue;
  bool stopping = false;

  // Messages for the server, in order; the writer of the live stream drains it.
  mutable std::mutex omu;
  std::condition_variable ocv;
  std::deque<cvms::ClientStreamMessage> outbox;
  bool stream_live = false;
  cvms_stats counters;

  std::mutex cmu;
  grpc::ClientContext* current = nullptr;  // the live stream's context (for cancel)

  // Worker-only.
  std::map<std::string, tracked> computations;  // cocos computation id -> CVM
  std::map<std::string, std::string> by_cvm;    // CVM id -> computation id
  std::atomic<size_t> n_computations{0};
  run_request_assembler assembler;

  std::vector<bus::subscription> events;
  std::thread io;
  std::thread worker;

  bool stopped() {
    std::lock_guard lock(qmu);
    return stopping;
  }

  void push(item it) {
    {
      std::lock_guard lock(qmu);
      queue.push_back(std::move(it));
    }
    qcv.notify_one();
  }

  void send(cvms::ClientStreamMessage m) {
    {
      std::lock_guard lock(omu);
      if (outbox.size() >= cfg.outbox_limit) {
        outbox.pop_front();
        ++counters.dropped;
      }
      outbox.push_back(std::move(m));
    }
    ocv.notify_all();
  }

  void stop() {
    {
      std::lock_guard lock(qmu);
      stopping = true;
    }
    qcv.notify_all();
    {
      std::lock_guard lock(cmu);
      if (current != nullptr) current->TryCancel();
    }
    ocv.notify_all();
    if (io.joinable()) io.join();
    if (worker.joinable()) worker.join();
  }

  // ---- the stream (io thread) ----

  std::shared_ptr<grpc::Channel> make_channel() {
    grpc::ChannelArguments args;
    // A fresh channel per attempt, with its own subchannels: no reconnect
    // state survives from an earlier attempt (our backoff is the only one).
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, static_cast<int>(cfg.backoff_initial.count()));
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, static_cast<int>(cfg.backoff_max.count()));
    // A server that vanished without closing the connection (host down,
    // partition) is noticed by HTTP/2 pings: every 6 min, 20 s to answer.
    // Go servers refuse pings more often than every 5 min by default.
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 360'000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20'000);
    return grpc::CreateCustomChannel(cfg.url, creds, args);
  }

  /// One connection attempt: true once the channel is READY; false on the
  /// first failure, at the connect timeout, or when stopping.
  bool try_connect(grpc::Channel& ch) {
    auto deadline = std::chrono::system_clock::now() + cfg.connect_timeout;
    auto st = ch.GetState(true);
    while (st != GRPC_CHANNEL_READY) {
      if (st == GRPC_CHANNEL_TRANSIENT_FAILURE || st == GRPC_CHANNEL_SHUTDOWN || stopped()) return false;
      auto now = std::chrono::system_clock::now();
      if (now >= deadline) return false;
      ch.WaitForStateChange(st, std::min(deadline, now + std::chrono::milliseconds(200)));
      st = ch.GetState(true);
    }
    return true;
  }

  void sleep_backoff(std::chrono::milliseconds d) {
    std::unique_lock lock(qmu);
    qcv.wait_for(lock, d, [this] { return stopping; });
  }

  void io_loop() {
    auto backoff = cfg.backoff_initial;
    bool was_up = false;
    while (!stopped()) {
      auto ch = make_channel();
      if (!try_connect(*ch)) {
        if (stopped()) break;
        if (was_up)
          spdlog::warn("cvms: {} unreachable; retrying with backoff up to {} ms", cfg.url,
                       cfg.backoff_max.count());
        was_up = false;
        spdlog::debug("cvms: connect to {} failed; next attempt in {} ms", cfg.url, backoff.count());
        sleep_backoff(backoff);
        backoff = std::min(backoff * 2, cfg.backoff_max);
        continue;
      }
      was_up = true;
      backoff = cfg.backoff_initial;
      run_stream(ch);
      if (!stopped()) sleep_backoff(backoff);
    }
  }

  void run_stream(const std::shared_ptr<grpc::Channel>& ch) {
    grpc::ClientContext ctx;
    {
      std::lock_guard lock(cmu);
      if (stopped()) return;
      current = &ctx;
    }
    auto stream = open_cvms_process(ch.get(), &ctx);
    spdlog::info("cvms: stream to {} open", cfg.url);
    push(stream_opened{});
    {
      std::lock_guard lock(omu);
      stream_live = true;
      ++counters.streams;
    }
    std::thread writer([&] { write_loop(*stream, ctx); });
    cvms::ServerStreamMessage in;
    std::string why = "the server closed it";
    while (stream->Read(&in)) {
      if (in.has_disconnectreq()) {
        why = fmt::format("the server asked to disconnect (id '{}')", in.disconnectreq().id());
        break;
      }
      push(std::move(in));
      in = cvms::ServerStreamMessage{};
    }
    {
      std::lock_guard lock(omu);
      stream_live = false;
      ++counters.disconnects;
    }
    ocv.notify_all();
    ctx.TryCancel();
    writer.join();
    auto status = stream->Finish();
    {
      std::lock_guard lock(cmu);
      current = nullptr;
    }
    push(stream_ended{});
    if (!stopped())
      spdlog::warn("cvms: stream to {} ended ({}; status {} '{}'); reconnecting", cfg.url, why,
                   static_cast<int>(status.error_code()), status.error_message());
  }

  void write_loop(cvms_client_stream& stream, grpc::ClientContext& ctx) {
    std::unique_lock lock(omu);
    for (;;) {
      ocv.wait(lock, [this] { return !stream_live || !outbox.empty(); });
      if (!stream_live) return;
      auto m = std::move(outbox.front());
      outbox.pop_front();
      lock.unlock();
      bool written = stream.Write(m);
      lock.lock();
      if (!written) {
        // Not handed to the transport: keep it for the next stream.
        outbox.push_front(std::move(m));
        lock.unlock();
        ctx.TryCancel();
        return;
      }
      ++counters.sent;
    }
  }

  // ---- requests and events (worker thread) ----

  void worker_loop() {
    for (;;) {
      item it;
      {
        std::unique_lock lock(qmu);
        qcv.wait_for(lock, std::chrono::seconds(1), [this] { return stopping || !queue.empty(); });
        if (stopping) return;
        if (queue.empty()) {
          lock.unlock();
          for (auto& id : assembler.expire())
            spdlog::warn("cvms: chunked run request '{}' dropped: no chunk for {} s", id,
                         run_request_chunk_timeout.count());
          continue;
        }
        it = std::move(queue.front());
        queue.pop_front();
      }
      try {
        std::visit([this](auto& x) { handle(x); }, it);
      } catch (const std::exception& e) {
        spdlog::error("cvms: {}", e.what());
      }
    }
  }

  void handle(stream_opened&) {
    // The server may have missed messages written just before the old stream
    // broke: tell it where every computation stands.
    for (const auto& [id, t] : computations) {
      cvms::ClientStreamMessage m;
      m.mutable_agentstateres()->set_id(id);
      m.mutable_agentstateres()->set_state(t.state);
      send(std::move(m));
    }
  }

  void handle(stream_ended&) {
    if (assembler.pending() > 0)
      spdlog::warn("cvms: {} partial run request(s) dropped with the stream", assembler.pending());
    assembler.clear();
  }

  void handle(cvms::ServerStreamMessage& m) {
    switch (m.message_case()) {
      case cvms::ServerStreamMessage::kRunReqChunks:
        if (auto r = assembler.add(m.runreqchunks())) {
          if (!r->request) {
            spdlog::warn("cvms: run request '{}': {}", r->id, r->request.error().message);
            send(run_response(r->id, r->request.error().message));
          } else {
            run(*r->request);
          }
        }
        break;
      case cvms::ServerStreamMessage::kRunReq:
        run(m.runreq());
        break;
      case cvms::ServerStreamMessage::kStopComputation:
        stop_computation(m.stopcomputation().computation_id());
        break;
      case cvms::ServerStreamMessage::kAgentStateReq:
        agent_state(m.agentstatereq().id());
        break;
      default:
        spdlog::warn("cvms: ignoring a server message of unknown type {}",
                     static_cast<int>(m.message_case()));
        break;
    }
  }

  void forget(const std::string& computation_id) {
    auto it = computations.find(computation_id);
    if (it == computations.end()) return;
    by_cvm.erase(it->second.cvm_id);
    computations.erase(it);
    n_computations = computations.size();
  }

  expected<void> remove_cvm(const std::string& cvm_id) {
    flatbuffers::FlatBufferBuilder b(64);
    auto req = v1::CreateCvmRef(b, b.CreateString(cvm_id));
    auto r = bus::request_typed<v1::CvmInfo>(*cfg.bus, bus::subjects::manager_remove,
                                             bus::finish(b, req, {}, sender), cfg.create_timeout);
    if (!r) return r.error();
    return ok();
  }

  void run(const cvms::ComputationRunReq& req) {
    const std::string& id = req.id();
    if (auto it = computations.find(id); it != computations.end()) {
      // A server that resends after a reconnect gets the same answer, not a second CVM.
      spdlog::info("cvms: run request '{}' repeated; it runs on {}", id, it->second.cvm_id);
      send(run_response(id, ""));
      return;
    }
    auto m = manifest_from_run_request(req);
    if (!m) {
      spdlog::warn("cvms: run request '{}' refused: {}", id, m.error().message);
      send(run_response(id, m.error().message));
      return;
    }
    flatbuffers::FlatBufferBuilder cb(64);
    auto create = v1::CreateCvmCreate(cb, cfg.backend, cfg.tee, cfg.cvm_ttl_seconds);
    auto info = bus::request_typed<v1::CvmInfo>(*cfg.bus, bus::subjects::manager_create,
                                                bus::finish(cb, create, {}, sender), cfg.create_timeout);
    if (!info || info->body->id() == nullptr) {
      auto text = info ? std::string("no CVM id in the manager's reply") : info.error().to_string();
      spdlog::warn("cvms: run request '{}': create CVM: {}", id, text);
      send(run_response(id, "create CVM: " + text));
      return;
    }
    std::string cvm = info->body->id()->str();
    computations[id] = tracked{cvm, "ReceivingManifest"};
    by_cvm[cvm] = id;
    n_computations = computations.size();
    flatbuffers::FlatBufferBuilder sb(4096);
    auto man = to_fbs(sb, *m);
    auto start = v1::CreateComputationStart(sb, sb.CreateString(cvm), man);
    auto st = bus::request_typed<v1::ComputationStatus>(
        *cfg.bus, bus::subjects::computation_start, bus::finish(sb, start, {}, sender), cfg.request_timeout);
    if (!st) {
      spdlog::warn("cvms: run request '{}': start on {}: {}", id, cvm, st.error().to_string());
      forget(id);
      if (auto r = remove_cvm(cvm); !r) spdlog::warn("cvms: remove {}: {}", cvm, r.error().to_string());
      send(run_response(id, "start computation: " + st.error().to_string()));
      return;
    }
    spdlog::info("cvms: computation '{}' runs on {}", id, cvm);
    send(run_response(id, ""));
  }

  void stop_computation(const std::string& id) {
    cvms::ClientStreamMessage res;
    res.mutable_stopcomputationres()->set_computation_id(id);
    auto it = computations.find(id);
    if (it == computations.end()) {
      res.mutable_stopcomputationres()->set_message(fmt::format("no computation '{}' on this host", id));
      send(std::move(res));
      return;
    }
    std::string cvm = it->second.cvm_id;
    std::string problems;
    flatbuffers::FlatBufferBuilder b(128);
    auto req = v1::CreateComputationStop(b, b.CreateString(cvm), b.CreateString(id));
    auto st = bus::request_typed<v1::ComputationStatus>(*cfg.bus, bus::subjects::computation_stop,
                                                        bus::finish(b, req, {}, sender), cfg.request_timeout);
    if (!st) problems = "stop: " + st.error().to_string();
    if (auto r = remove_cvm(cvm); !r && r.error().code != errc::not_found)
      problems += (problems.empty() ? "" : "; ") + std::string("remove CVM: ") + r.error().to_string();
    forget(id);
    send(make_agent_event("Stopped", "Stopped", "agent", id, cvm, "computation stopped; CVM removed",
                          bus::now_ns()));
    for (auto& l : make_agent_logs(
             problems.empty() ? "INFO" : "WARN",
             problems.empty() ? "computation stopped; CVM " + cvm + " removed" : problems, id, bus::now_ns()))
      send(std::move(l));
    res.mutable_stopcomputationres()->set_message(problems);
    send(std::move(res));
  }

  void agent_state(const std::string& id) {
    cvms::ClientStreamMessage res;
    res.mutable_agentstateres()->set_id(id);
    auto it = computations.find(id);
    if (it == computations.end() && computations.size() == 1) it = computations.begin();
    if (it == computations.end()) {
      // Nothing runs here: like a fresh cocos agent, coved waits for a manifest.
      res.mutable_agentstateres()->set_state(computations.empty() ? "ReceivingManifest" : "Idle");
      send(std::move(res));
      return;
    }
    std::string state = it->second.state;
    flatbuffers::FlatBufferBuilder b(64);
    auto req = v1::CreateStatusRequest(b, b.CreateString(it->second.cvm_id));
    auto st = bus::request_typed<v1::ComputationStatus>(*cfg.bus, bus::subjects::computation_status,
                                                        bus::finish(b, req, {}, sender), cfg.request_timeout);
    if (st)
      state = v1::EnumNameAgentState(st->body->state());
    else
      spdlog::warn("cvms: status of {}: {}; answering the last known state", it->second.cvm_id,
                   st.error().to_string());
    res.mutable_agentstateres()->set_state(state);
    send(std::move(res));
  }

  void handle(bus_event& e) {
    auto ev = bus::body_as<v1::Event>(e.data);
    if (!ev) return;
    const v1::Event* x = *ev;
    auto str = [](const flatbuffers::String* s) { return s ? s->str() : std::string(); };
    event_view v{str(x->kind()),  str(x->cvm_id()),  str(x->computation_id()),
                 str(x->state()), str(x->message()), x->at_ns()};
    auto c = by_cvm.find(v.cvm_id);
    if (c == by_cvm.end()) return;  // not one of ours
    std::string id = c->second;
    auto& t = computations.at(id);
    for (auto& m : map_event(v, t.state, id)) send(std::move(m));
    if (v.kind == "computation") t.state = v.state;
    if (v.kind == "cvm" &&
        (v.state == "removed" || v.state == "crashed" || v.state == "stopped" || v.state == "expired")) {
      spdlog::info("cvms: computation '{}' ends with its CVM {} ({})", id, v.cvm_id, v.state);
      forget(id);
    }
  }
};

cvms_client::cvms_client(std::unique_ptr<impl> p) noexcept : impl_(std::move(p)) {}

cvms_client::~cvms_client() {
  impl_->events.clear();  // no more events into the queue
  impl_->stop();
}

expected<std::unique_ptr<cvms_client>> cvms_client::start(cvms_config cfg) {
  if (auto v = validate(cfg); !v) return v.error();
  auto p = std::make_unique<impl>();
  if (cfg.ca_file.empty()) {
    p->creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions o;
    auto ca = read_pem(cfg.ca_file, "--cvms-ca");
    if (!ca) return ca.error();
    o.pem_root_certs = std::move(*ca);
    if (!cfg.cert_file.empty()) {
      auto cert = read_pem(cfg.cert_file, "--cvms-cert");
      if (!cert) return cert.error();
      auto key = read_pem(cfg.key_file, "--cvms-key");
      if (!key) return key.error();
      o.pem_cert_chain = std::move(*cert);
      o.pem_private_key = std::move(*key);
    }
    p->creds = grpc::SslCredentials(o);
  }
  p->cfg = std::move(cfg);
  impl* raw = p.get();
  for (auto subject : event_subjects) {
    auto sub = raw->cfg.bus->subscribe(
        subject, [raw](bus::message&& m) { raw->push(impl::bus_event{std::move(m.data)}); });
    if (!sub) return sub.error();
    p->events.push_back(std::move(*sub));
  }
  if (auto f = raw->cfg.bus->flush(std::chrono::seconds(5)); !f) return f.error();
  p->worker = std::thread([raw] { raw->worker_loop(); });
  p->io = std::thread([raw] { raw->io_loop(); });
  spdlog::info("cvms: dialing {} ({})", raw->cfg.url,
               raw->cfg.ca_file.empty() ? "plaintext" : (raw->cfg.cert_file.empty() ? "TLS" : "mutual TLS"));
  return std::unique_ptr<cvms_client>(new cvms_client(std::move(p)));
}

cvms_stats cvms_client::stats() const {
  std::lock_guard lock(impl_->omu);
  auto s = impl_->counters;
  s.outbox = impl_->outbox.size();
  s.computations = impl_->n_computations;
  return s;
}

}  // namespace cove::gateway
