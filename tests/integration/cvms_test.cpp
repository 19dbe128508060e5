// Orchestrators (issue 7): a cocos computation-management server — here a test
// server written from our own cvms.proto — drives a computation on coved over
// cvms.Service/Process, is shut down and restarted mid-run, and sees the
// stream resume; and cocos's manager.ManagerService gateway answers each rpc.
#include <grpcpp/grpcpp.h>

#include <sys/wait.h>
#include <condition_variable>

#include <csignal>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "cove/bus/authz.hpp"
#include "cove/gateway/cvms_rpc.hpp"
#include "fixture.hpp"
#include "manager.grpc.pb.h"

using namespace cove;
using namespace cove::itest;

namespace {

/// A CVMS server: records what coved sends, sends what the test queues.
/// Shut down by destroying it (in-flight streams are cancelled).
class test_cvms_server final : public gateway::cvms_service {
 public:
  /// Listens on 127.0.0.1:`port` (0: any free port), plaintext or with `creds`.
  explicit test_cvms_server(int port = 0, std::shared_ptr<grpc::ServerCredentials> creds = nullptr) {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:" + std::to_string(port), creds ? creds : grpc::InsecureServerCredentials(),
                       &port_);
    b.RegisterService(this);
    server_ = b.BuildAndStart();
    REQUIRE(server_ != nullptr);
    REQUIRE(port_ > 0);
  }
  ~test_cvms_server() override {
    {
      std::lock_guard lock(mu_);
      shutting_ = true;
    }
    cv_.notify_all();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
  }

  int port() const { return port_; }

  grpc::Status Process(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<cvms::ServerStreamMessage, cvms::ClientStreamMessage>* stream) override {
    auto done = std::make_shared<bool>(false);
    {
      std::lock_guard lock(mu_);
      ++streams_;
      live_ = true;
    }
    cv_.notify_all();
    std::thread reader([&, done] {
      cvms::ClientStreamMessage m;
      while (stream->Read(&m)) {
        std::lock_guard lock(mu_);
        received_.push_back(m);
        cv_.notify_all();
      }
      std::lock_guard lock(mu_);
      *done = true;
      cv_.notify_all();
    });
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return *done || shutting_ || !outgoing_.empty(); });
      if (*done || shutting_) break;
      auto m = std::move(outgoing_.front());
      outgoing_.erase(outgoing_.begin());
      lock.unlock();
      stream->Write(m);
      lock.lock();
    }
    live_ = false;
    lock.unlock();
    ctx->TryCancel();
    reader.join();
    return grpc::Status::OK;
  }

  void send(cvms::ServerStreamMessage m) {
    {
      std::lock_guard lock(mu_);
      outgoing_.push_back(std::move(m));
    }
    cv_.notify_all();
  }

  /// Waits until at least `n` streams were opened and one is live.
  bool wait_streams(int n, std::chrono::seconds limit = 20s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return streams_ >= n && live_; });
  }

  /// The first received message (at or after index `from`) matching `pred`.
  std::optional<cvms::ClientStreamMessage> wait_for(
      const std::function<bool(const cvms::ClientStreamMessage&)>& pred, std::chrono::seconds limit = 20s,
      size_t from = 0) {
    std::unique_lock lock(mu_);
    std::optional<cvms::ClientStreamMessage> hit;
    cv_.wait_for(lock, limit, [&] {
      for (size_t i = from; i < received_.size(); ++i)
        if (pred(received_[i])) {
          hit = received_[i];
          return true;
        }
      return false;
    });
    return hit;
  }

  std::vector<cvms::ClientStreamMessage> received() const {
    std::lock_guard lock(mu_);
    return received_;
  }

 private:
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool shutting_ = false;
  bool live_ = false;
  int streams_ = 0;
  std::vector<cvms::ServerStreamMessage> outgoing_;
  std::vector<cvms::ClientStreamMessage> received_;
};

using event_pair = std::pair<std::string, std::string>;

std::vector<event_pair> events_of(const std::vector<cvms::ClientStreamMessage>& ms, const std::string& id) {
  std::vector<event_pair> out;
  for (const auto& m : ms)
    if (m.has_agent_event() && m.agent_event().computation_id() == id)
      out.emplace_back(m.agent_event().event_type(), m.agent_event().status());
  return out;
}

auto is_event(const std::string& type, const std::string& status) {
  return [type, status](const cvms::ClientStreamMessage& m) {
    return m.has_agent_event() && m.agent_event().event_type() == type && m.agent_event().status() == status;
  };
}

/// cocos's form of a cove manifest.
cvms::ComputationRunReq to_run_request(const manifest& m) {
  cvms::ComputationRunReq r;
  r.set_id(m.id);
  r.set_name(m.name);
  r.set_description(m.description);
  auto s = [](const auto& bytes) { return std::string(bytes.begin(), bytes.end()); };
  for (const auto& d : m.datasets) {
    auto* x = r.add_datasets();
    x->set_hash(s(d.hash));
    x->set_userkey(s(d.user_key));
    x->set_filename(d.filename);
  }
  auto* a = r.mutable_algorithm();
  a->set_hash(s(m.algorithm.hash));
  a->set_userkey(s(m.algorithm.user_key));
  a->set_algo_type(std::string(to_string(m.algorithm.type)));
  for (const auto& arg : m.algorithm.algo_args) a->add_algo_args(arg);
  for (const auto& c : m.result_consumers) r.add_result_consumers()->set_userkey(s(c));
  return r;
}

/// How upstream servers send a run request: slices, then an empty last chunk.
void send_chunked(test_cvms_server& srv, const cvms::ComputationRunReq& r, size_t slice) {
  auto bytes = r.SerializeAsString();
  for (size_t off = 0; off < bytes.size(); off += slice) {
    cvms::ServerStreamMessage m;
    m.mutable_runreqchunks()->set_id(r.id());
    m.mutable_runreqchunks()->set_data(bytes.substr(off, slice));
    srv.send(std::move(m));
  }
  cvms::ServerStreamMessage last;
  last.mutable_runreqchunks()->set_id(r.id());
  last.mutable_runreqchunks()->set_is_last(true);
  srv.send(std::move(last));
}

/// Times coved logged that its cvms stream ended.
size_t stream_ends_logged(const cluster& c) {
  size_t n = 0;
  for (const char* f : {"coved.stdout", "coved.stderr"}) {
    std::istringstream in(read_file(c.dir() / f));
    for (std::string line; std::getline(in, line);)
      n += line.find("cvms: stream to") != std::string::npos && line.find(" ended (") != std::string::npos;
  }
  return n;
}

}  // namespace

TEST_CASE("cvms: an orchestrator runs a computation; the stream resumes after a server restart") {
  auto srv = std::make_unique<test_cvms_server>();
  const int port = srv->port();
  cluster c({"--cvms-url", "127.0.0.1:" + std::to_string(port), "--cvms-reconnect-max", "500"});
  REQUIRE_MESSAGE(srv->wait_streams(1), "coved did not dial the CVMS server; log in " << c.dir());

  auto owner = c.make_participant("algo");
  auto provider = c.make_participant("provider", crypto::key_type::ecdsa_p256);
  auto consumer = c.make_participant("consumer");
  auto algo = c.make_file("count.py",
                          "lines = open('datasets/d.txt').read().split()\n"
                          "open('results/n.txt', 'w').write(str(len(lines)) + '\\n')\n");
  auto data = c.make_file("d.txt", "a\nb\nc\n");
  auto m = make_manifest("cvms-run-1", algo, algo_type::python, owner, {{data, &provider}}, {&consumer});
  const std::string id = m.id;

  SUBCASE("nothing runs yet: coved waits for a manifest, like a fresh agent") {
    cvms::ServerStreamMessage q;
    q.mutable_agentstatereq()->set_id("anything");
    srv->send(q);
    auto res = srv->wait_for([](const auto& x) { return x.has_agentstateres(); });
    REQUIRE(res.has_value());
    CHECK(res->agentstateres().id() == "anything");
    CHECK(res->agentstateres().state() == "ReceivingManifest");
  }

  SUBCASE("bad requests get clear answers and create nothing") {
    auto bad = to_run_request(m);
    bad.set_id("cvms-bad");
    bad.mutable_datasets(0)->set_hash("short");
    cvms::ServerStreamMessage run;
    *run.mutable_runreq() = bad;
    srv->send(run);
    auto rr = srv->wait_for([](const auto& x) { return x.has_run_res(); });
    REQUIRE(rr.has_value());
    CHECK(rr->run_res().computation_id() == "cvms-bad");
    CHECK(rr->run_res().error().find("datasets[0].hash: expected 32 bytes, got 5") != std::string::npos);

    cvms::ServerStreamMessage garbage;
    garbage.mutable_runreqchunks()->set_id("cvms-garbage");
    garbage.mutable_runreqchunks()->set_data("\xff\xff\xff");
    garbage.mutable_runreqchunks()->set_is_last(true);
    srv->send(garbage);
    auto gr = srv->wait_for(
        [](const auto& x) { return x.has_run_res() && x.run_res().computation_id() == "cvms-garbage"; });
    REQUIRE(gr.has_value());
    CHECK(gr->run_res().error().find("do not form a ComputationRunReq") != std::string::npos);

    cvms::ServerStreamMessage stop;
    stop.mutable_stopcomputation()->set_computation_id("nope");
    srv->send(stop);
    auto sr = srv->wait_for([](const auto& x) { return x.has_stopcomputationres(); });
    REQUIRE(sr.has_value());
    CHECK(sr->stopcomputationres().message() == "no computation 'nope' on this host");

    flatbuffers::FlatBufferBuilder b(64);
    auto list =
        must(bus::request_typed<v1::CvmList>(c.bus(), bus::subjects::manager_list,
                                             bus::finish(b, v1::CreateCvmListRequest(b), {}, "itest"), 5s),
             "list");
    CHECK((list.body->cvms() == nullptr || list.body->cvms()->size() == 0));
  }

  SUBCASE("end to end, with the server shut down and restarted mid-run") {
    send_chunked(*srv, to_run_request(m), 100);
    auto rr = srv->wait_for([](const auto& x) { return x.has_run_res(); }, 30s);
    REQUIRE_MESSAGE(rr.has_value(), "no run_res; log in " << c.dir());
    CHECK(rr->run_res().computation_id() == id);
    CHECK(rr->run_res().error() == "");
    auto first = srv->wait_for(is_event("ReceivingAlgorithm", "InProgress"));
    REQUIRE(first.has_value());
    auto details = nlohmann::json::parse(first->agent_event().details());
    const std::string cvm = details.at("cvm_id").get<std::string>();
    CHECK(first->agent_event().originator() == "agent");
    CHECK(first->agent_event().timestamp().seconds() > 0);

    // The same request again (a server resending after a reconnect): same answer, no second CVM.
    cvms::ServerStreamMessage again;
    *again.mutable_runreq() = to_run_request(m);
    auto before = srv->received().size();
    srv->send(again);
    auto rr2 = srv->wait_for([](const auto& x) { return x.has_run_res(); }, 20s, before);
    REQUIRE(rr2.has_value());
    CHECK(rr2->run_res().error() == "");

    cvms::ServerStreamMessage q;
    q.mutable_agentstatereq()->set_id(id);
    srv->send(q);
    auto st = srv->wait_for([](const auto& x) { return x.has_agentstateres(); });
    REQUIRE(st.has_value());
    CHECK(st->agentstateres().state() == "ReceivingAlgorithm");

    must(cli::upload(c.bus(), cvm, cli::file_role::algorithm, algo, owner.key, c.policy(), &m), "algo");
    REQUIRE(srv->wait_for(is_event("ReceivingData", "InProgress")).has_value());
    auto seen_before = srv->received();

    // The server goes away. coved notices (the stream ends) and keeps what
    // happens meanwhile for the next server.
    srv.reset();
    REQUIRE_MESSAGE(test::wait_until([&] { return stream_ends_logged(c) >= 1; }, test::deadline_in(20s)),
                    "coved did not notice the server going away; log in " << c.dir());
    must(cli::upload(c.bus(), cvm, cli::file_role::dataset, data, provider.key, c.policy(), &m), "data");
    c.wait_for_state(cvm, "ConsumingResults");

    srv = std::make_unique<test_cvms_server>(port);
    REQUIRE_MESSAGE(srv->wait_streams(1), "coved did not reconnect; log in " << c.dir());
    REQUIRE(srv->wait_for(is_event("ConsumingResults", "Ready")).has_value());
    // Then where each computation stands.
    auto resync =
        srv->wait_for([&](const auto& x) { return x.has_agentstateres() && x.agentstateres().id() == id; });
    REQUIRE(resync.has_value());
    CHECK(resync->agentstateres().state() == "ConsumingResults");

    auto out = c.dir() / "result.zip";
    must(cli::fetch_result(c.bus(), cvm, consumer.key, c.policy(), out, &m), "result");
    REQUIRE(srv->wait_for(is_event("Complete", "Completed")).has_value());

    cvms::ServerStreamMessage stop;
    stop.mutable_stopcomputation()->set_computation_id(id);
    srv->send(stop);
    auto sr = srv->wait_for([](const auto& x) { return x.has_stopcomputationres(); }, 30s);
    REQUIRE(sr.has_value());
    CHECK(sr->stopcomputationres().computation_id() == id);
    CHECK(sr->stopcomputationres().message() == "");
    REQUIRE(srv->wait_for(is_event("Stopped", "Stopped")).has_value());
    check_error(c.cvm_info(cvm), errc::not_found, "no CVM");

    // Across both servers, cocos's sequence for the run, each event once.
    std::string all;
    for (const auto& [type, status] : events_of(seen_before, id)) all += type + "/" + status + " ";
    for (const auto& [type, status] : events_of(srv->received(), id)) all += type + "/" + status + " ";
    CHECK(all ==
          "ReceivingAlgorithm/InProgress ReceivingData/InProgress Running/Starting Running/InProgress "
          "Running/Completed ConsumingResults/Ready Complete/Completed Stopped/Stopped ");
    // Logs came along, with the computation id.
    bool logged = false;
    for (const auto& x : srv->received())
      logged |= x.has_agent_log() && x.agent_log().computation_id() == id && x.agent_log().level() == "INFO";
    CHECK(logged);

    // A disconnect request: coved drops the stream and dials again.
    cvms::ServerStreamMessage bye;
    bye.mutable_disconnectreq()->set_id("bye");
    srv->send(bye);
    CHECK(srv->wait_streams(2));
  }
}

TEST_CASE("cvms: manager.ManagerService onto the bus, each rpc and its errors") {
  cluster c({"--manager-grpc-listen", "127.0.0.1:0"});
  // Written once the gateway listens (just after the services are ready).
  std::string address;
  REQUIRE(test::wait_until(
      [&] {
        address = read_file(c.state_dir() / "manager-grpc.address");
        return !address.empty() && address.back() == '\n';
      },
      test::deadline_in(20s)));
  address.erase(address.find_last_not_of('\n') + 1);
  auto stub =
      ::manager::ManagerService::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  auto ctx = [] {
    auto x = std::make_unique<grpc::ClientContext>();
    x->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return x;
  };

  ::manager::CreateReq create;
  create.set_ttl("1h");
  ::manager::CreateRes created;
  auto s = stub->CreateVm(ctx().get(), create, &created);
  REQUIRE_MESSAGE(s.ok(), s.error_message());
  const std::string id = created.cvm_id();
  CHECK(id.starts_with("cvm-"));
  auto info = must(c.cvm_info(id), "info");
  CHECK(info.body->ttl_seconds() == 3600);

  ::manager::CVMInfoReq ireq;
  ireq.set_id(id);
  ::manager::CVMInfoRes ires;
  s = stub->CVMInfo(ctx().get(), ireq, &ires);
  REQUIRE_MESSAGE(s.ok(), s.error_message());
  CHECK(ires.id() == id);
  CHECK(ires.cpu_type() == "process/sim");

  ::manager::AttestationPolicyReq preq;
  preq.set_id(id);
  ::manager::AttestationPolicyRes pres;
  s = stub->AttestationPolicy(ctx().get(), preq, &pres);
  REQUIRE_MESSAGE(s.ok(), s.error_message());
  CHECK(pres.id() == id);
  auto policy = nlohmann::json::parse(pres.info());
  CHECK(policy.contains("trusted_roots"));

  ::manager::RemoveReq rreq;
  rreq.set_cvm_id(id);
  google::protobuf::Empty empty;
  s = stub->RemoveVm(ctx().get(), rreq, &empty);
  REQUIRE_MESSAGE(s.ok(), s.error_message());
  check_error(c.cvm_info(id), errc::not_found, "no CVM");

  // Errors: unknown id, malformed id, missing id, bad TTL.
  s = stub->RemoveVm(ctx().get(), rreq, &empty);
  CHECK(s.error_code() == grpc::StatusCode::NOT_FOUND);
  CHECK(s.error_message().find("no CVM") != std::string::npos);
  s = stub->CVMInfo(ctx().get(), ireq, &ires);
  CHECK(s.error_code() == grpc::StatusCode::NOT_FOUND);
  preq.set_id("Not.A.Cove.Id");
  s = stub->AttestationPolicy(ctx().get(), preq, &pres);
  CHECK(s.error_code() == grpc::StatusCode::NOT_FOUND);
  ireq.set_id("");
  s = stub->CVMInfo(ctx().get(), ireq, &ires);
  CHECK(s.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  create.set_ttl("ten minutes");
  s = stub->CreateVm(ctx().get(), create, &created);
  CHECK(s.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(s.error_message().find("ttl") != std::string::npos);
}

TEST_CASE("cvms: on coved's locked embedded bus the orchestrator role is all the front doors need") {
  test::temp_dir dir("cove-cvms-locked");
  auto state = dir.path() / "state";
  embedded_server_reaper reap{state};  // runs after coved is gone
  test_cvms_server srv;
  auto coved = must(
      test::child_process::spawn({(bin_dir() / "coved").string(), "--listen", "127.0.0.1:0", "--state-dir",
                                  state.string(), "--log-level", "debug", "--manager-grpc-listen",
                                  "127.0.0.1:0", "--cvms-url", "127.0.0.1:" + std::to_string(srv.port())},
                                 {}, dir.path(), "coved"),
      "coved");
  std::string address;
  REQUIRE_MESSAGE(test::wait_until(
                      [&] {
                        REQUIRE(coved.running());
                        address = read_file(state / "manager-grpc.address");
                        return !address.empty() && address.back() == '\n';
                      },
                      test::deadline_in(30s)),
                  "coved did not start; log in " << dir.path());
  address.erase(address.find_last_not_of('\n') + 1);
  CHECK(read_file(state / "nats.url").starts_with("tls://"));
  REQUIRE(srv.wait_streams(1));

  // The gateway: create (manager replies into the orchestrator's inbox), info, remove.
  auto stub =
      ::manager::ManagerService::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext c1;
  c1.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  ::manager::CreateRes created;
  auto s = stub->CreateVm(&c1, ::manager::CreateReq{}, &created);
  REQUIRE_MESSAGE(s.ok(), s.error_message() << "; log in " << dir.path());
  grpc::ClientContext c2;
  c2.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  ::manager::RemoveReq rm;
  rm.set_cvm_id(created.cvm_id());
  google::protobuf::Empty empty;
  s = stub->RemoveVm(&c2, rm, &empty);
  CHECK_MESSAGE(s.ok(), s.error_message());

  // The CVMS client: create + start (the computation service answers the
  // orchestrator) and the agent's first event (cove.v1.events.computation).
  auto key = must(crypto::private_key::generate(crypto::key_type::ed25519, 0), "key");
  auto der = key.public_key().der();
  cvms::ServerStreamMessage run;
  auto* r = run.mutable_runreq();
  r->set_id("locked-1");
  r->mutable_algorithm()->set_hash(std::string(32, 'a'));
  r->mutable_algorithm()->set_userkey(std::string(der.begin(), der.end()));
  r->add_result_consumers()->set_userkey(std::string(der.begin(), der.end()));
  srv.send(run);
  auto rr = srv.wait_for([](const auto& x) { return x.has_run_res(); }, 30s);
  REQUIRE(rr.has_value());
  CHECK_MESSAGE(rr->run_res().error() == "", rr->run_res().error());
  CHECK(srv.wait_for(is_event("ReceivingAlgorithm", "InProgress")).has_value());

  // Nothing of it was refused by the bus.
  auto log = read_file(state / "nats" / "nats-server.log");
  CHECK_MESSAGE(log.find("Violation") == std::string::npos, log);
  auto status = coved.terminate(15s);
  CHECK(status == 0);
}

TEST_CASE("cvms: coved keeps dialing until the server comes up") {
  int port = 0;
  {
    test_cvms_server probe;  // a free port, closed again
    port = probe.port();
  }
  cluster c({"--cvms-url", "127.0.0.1:" + std::to_string(port), "--cvms-reconnect-max", "400"});
  // coved is up and failing to connect; the server appears later.
  test_cvms_server srv(port);
  REQUIRE_MESSAGE(srv.wait_streams(1), "coved did not connect; log in " << c.dir());
  cvms::ServerStreamMessage q;
  q.mutable_agentstatereq()->set_id("x");
  srv.send(q);
  CHECK(srv.wait_for([](const auto& x) { return x.has_agentstateres(); }).has_value());
}

TEST_CASE("cvms: bad orchestrator flags are refused with a clear message") {
  test::temp_dir dir("cove-cvms-flags");
  auto refused = [&](std::vector<std::string> extra, std::string_view text) {
    std::vector<std::string> argv = {(bin_dir() / "coved").string(), "--nats", "nats://127.0.0.1:1",
                                     "--state-dir", (dir.path() / "state").string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto p = must(test::child_process::spawn(argv, {}, dir.path(), "coved"), "coved");
    auto status = p.wait_for_exit(test::deadline_in(10s));
    REQUIRE(status.has_value());
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) == 2);
    auto err = read_file(dir.path() / "coved.stderr");
    CHECK_MESSAGE(err.find(text) != std::string::npos, err);
  };
  refused({"--cvms-url", "127.0.0.1:1", "--cvms-tee", "bogus"}, "--cvms-tee: unknown TEE 'bogus'");
  refused({"--cvms-ca", "ca.pem"}, "need --cvms-url");
  refused({"--cvms-url", "127.0.0.1:1", "--cvms-cert", "c.pem"}, "--cvms-cert and --cvms-key go together");
  refused({"--manager-grpc-cert", "c.pem", "--manager-grpc-key", "k.pem"}, "needs --manager-grpc-listen");
}

TEST_CASE("cvms: over TLS, coved verifies the server against --cvms-ca") {
  test::temp_dir tls("cove-cvms-tls");
  const auto& p = tls.path();
  must(
      bus::authz::generate_tls(p / "ca.pem", p / "ca.key", p / "server.pem", p / "server.key", {"127.0.0.1"}),
      "tls");
  grpc::SslServerCredentialsOptions o;
  o.pem_key_cert_pairs.push_back({read_file(p / "server.key"), read_file(p / "server.pem")});
  test_cvms_server srv(0, grpc::SslServerCredentials(o));
  cluster c({"--cvms-url", "127.0.0.1:" + std::to_string(srv.port()), "--cvms-ca", (p / "ca.pem").string()});
  REQUIRE_MESSAGE(srv.wait_streams(1), "no TLS stream; log in " << c.dir());
  cvms::ServerStreamMessage q;
  q.mutable_agentstatereq()->set_id("tls");
  srv.send(q);
  auto res = srv.wait_for([](const auto& x) { return x.has_agentstateres(); });
  REQUIRE(res.has_value());
  CHECK(res->agentstateres().id() == "tls");
}

TEST_CASE("cvms: a server whose certificate another CA signed gets no stream") {
  test::temp_dir tls("cove-cvms-tls");
  const auto& p = tls.path();
  must(bus::authz::generate_tls(p / "ca.pem", p / "ca.key", p / "a.pem", p / "a.key", {"127.0.0.1"}), "tls");
  must(bus::authz::generate_tls(p / "other-ca.pem", p / "other-ca.key", p / "b.pem", p / "b.key",
                                {"127.0.0.1"}),
       "tls");
  grpc::SslServerCredentialsOptions o;
  o.pem_key_cert_pairs.push_back({read_file(p / "b.key"), read_file(p / "b.pem")});
  test_cvms_server srv(0, grpc::SslServerCredentials(o));
  cluster c({"--cvms-url", "127.0.0.1:" + std::to_string(srv.port()), "--cvms-ca", (p / "ca.pem").string(),
             "--cvms-reconnect-max", "300"});
  // coved tries (and logs each failed attempt at debug level) but never opens a stream.
  auto failed_attempts = [&] {
    size_t n = 0;
    for (const char* f : {"coved.stdout", "coved.stderr"}) {
      std::istringstream in(read_file(c.dir() / f));
      for (std::string line; std::getline(in, line);) n += line.find("cvms: connect to") != std::string::npos;
    }
    return n;
  };
  REQUIRE(test::wait_until([&] { return failed_attempts() >= 3; }, test::deadline_in(20s)));
  CHECK_FALSE(srv.wait_streams(1, 0s));
}

TEST_CASE("cvms: a server generated by grpc_python_plugin talks to coved") {
  test::temp_dir dir("cove-cvms-py");
  auto py =
      must(test::child_process::spawn({"/usr/bin/python3", COVE_CVMS_PY_SERVER},
                                      {std::string("PYTHONPATH=") + COVE_CVMS_PY_DIR}, dir.path(), "server"),
           "python server");
  std::string port;
  REQUIRE_MESSAGE(test::wait_until(
                      [&] {
                        auto out = read_file(dir.path() / "server.stdout");
                        if (out.find('\n') == std::string::npos) return false;
                        port = out.substr(0, out.find('\n'));
                        return true;
                      },
                      test::deadline_in(20s)),
                  "the python server did not start: " << read_file(dir.path() / "server.stderr"));
  cluster c({"--cvms-url", "127.0.0.1:" + port});
  auto status = py.wait_for_exit(test::deadline_in(60s));
  REQUIRE(status.has_value());
  CHECK_MESSAGE(WIFEXITED(*status), "python server status " << *status);
  CHECK_MESSAGE(WEXITSTATUS(*status) == 0, read_file(dir.path() / "server.stdout")
                                               << read_file(dir.path() / "server.stderr"));
}
