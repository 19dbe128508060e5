// The pure translations between cocos's orchestrator messages and cove's bus.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "cove/crypto/keys.hpp"
#include "cove/gateway/mapping.hpp"

using namespace cove;
using namespace cove::gateway;

namespace {

std::string der_of_new_key() {
  auto k = crypto::private_key::generate(crypto::key_type::ed25519, 0);
  REQUIRE(k.has_value());
  auto der = k->public_key().der();
  return {der.begin(), der.end()};
}

cvms::ComputationRunReq valid_request() {
  cvms::ComputationRunReq r;
  r.set_id("comp-1");
  r.set_name("a name");
  auto key = der_of_new_key();
  auto* a = r.mutable_algorithm();
  a->set_hash(std::string(32, 'a'));
  a->set_userkey(key);
  a->set_algo_type("python");
  a->add_algo_args("--x");
  auto* d = r.add_datasets();
  d->set_hash(std::string(32, 'd'));
  d->set_userkey(key);
  d->set_filename("data.csv");
  r.add_result_consumers()->set_userkey(key);
  return r;
}

std::vector<std::pair<std::string, std::string>> events_of(const std::vector<cvms::ClientStreamMessage>& ms) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& m : ms)
    if (m.has_agent_event()) out.emplace_back(m.agent_event().event_type(), m.agent_event().status());
  return out;
}

}  // namespace

TEST_CASE("a cocos run request becomes a cove manifest") {
  auto m = manifest_from_run_request(valid_request());
  REQUIRE_MESSAGE(m.has_value(), m.error().to_string());
  CHECK(m->id == "comp-1");
  CHECK(m->name == "a name");
  CHECK(m->algorithm.type == algo_type::python);
  CHECK(m->algorithm.algo_args == std::vector<std::string>{"--x"});
  REQUIRE(m->datasets.size() == 1);
  CHECK(m->datasets[0].filename == "data.csv");
  CHECK(m->datasets[0].hash[0] == 'd');
  CHECK(m->result_consumers.size() == 1);

  SUBCASE("a missing algo_type is a binary (the Go agent crashes on it)") {
    auto r = valid_request();
    r.mutable_algorithm()->clear_algo_type();
    CHECK(manifest_from_run_request(r)->algorithm.type == algo_type::bin);
  }
}

TEST_CASE("bad run requests get a clear error naming the field") {
  auto check = [](const cvms::ComputationRunReq& r, std::string_view text) {
    auto m = manifest_from_run_request(r);
    REQUIRE_FALSE(m.has_value());
    INFO(m.error().message);
    CHECK(m.error().code == errc::invalid_request);
    CHECK(m.error().message.find(text) != std::string::npos);
  };
  auto r = valid_request();
  r.mutable_datasets(0)->set_hash("short");
  check(r, "datasets[0].hash: expected 32 bytes, got 5");
  r = valid_request();
  r.clear_algorithm();
  check(r, "algorithm: required");
  r = valid_request();
  r.mutable_algorithm()->set_algo_type("docker");
  check(r, "algorithm.algo_type: 'docker' is not supported");
  r = valid_request();
  r.mutable_algorithm()->mutable_source()->set_url("s3://bucket/algo");
  check(r, "algorithm.source: remote sources are not supported");
  r = valid_request();
  r.mutable_datasets(0)->mutable_kbs()->set_enabled(true);
  check(r, "datasets[0].kbs");
  r = valid_request();
  r.clear_result_consumers();
  check(r, "consumer");
  r = valid_request();
  r.set_id("bad id with spaces");
  check(r, "id");
  r = valid_request();
  r.mutable_algorithm()->set_userkey("not DER");
  check(r, "algorithm");
}

TEST_CASE("chunked run requests are reassembled; limits hold") {
  auto whole = valid_request().SerializeAsString();
  run_request_assembler a;
  auto t0 = run_request_assembler::clock::now();
  cvms::RunReqChunks c;
  c.set_id("comp-1");
  for (size_t off = 0; off < whole.size(); off += 7) {
    c.set_data(whole.substr(off, 7));
    CHECK_FALSE(a.add(c, t0).has_value());
  }
  CHECK(a.pending() == 1);
  c.set_data("");
  c.set_is_last(true);
  auto r = a.add(c, t0);
  REQUIRE(r.has_value());
  REQUIRE(r->request.has_value());
  CHECK(r->request->id() == "comp-1");
  CHECK(a.pending() == 0);

  SUBCASE("garbage does not parse") {
    cvms::RunReqChunks g;
    g.set_id("x");
    g.set_data("\xff\xff\xff\xff");
    g.set_is_last(true);
    auto bad = a.add(g, t0);
    REQUIRE(bad.has_value());
    CHECK_FALSE(bad->request.has_value());
  }
  SUBCASE("too large") {
    cvms::RunReqChunks big;
    big.set_id("big");
    big.set_data(std::string(max_run_request_bytes + 1, 'x'));
    auto bad = a.add(big, t0);
    REQUIRE(bad.has_value());
    CHECK(bad->request.error().code == errc::too_large);
    CHECK(a.pending() == 0);
  }
  SUBCASE("too many at once") {
    cvms::RunReqChunks p;
    p.set_data("x");
    for (size_t i = 0; i < max_partial_run_requests; ++i) {
      p.set_id("p" + std::to_string(i));
      CHECK_FALSE(a.add(p, t0).has_value());
    }
    p.set_id("one-more");
    auto bad = a.add(p, t0);
    REQUIRE(bad.has_value());
    CHECK_FALSE(bad->request.has_value());
  }
  SUBCASE("idle partial requests expire") {
    cvms::RunReqChunks p;
    p.set_id("slow");
    p.set_data("x");
    CHECK_FALSE(a.add(p, t0).has_value());
    CHECK(a.expire(t0 + std::chrono::seconds(29)).empty());
    CHECK(a.expire(t0 + run_request_chunk_timeout) == std::vector<std::string>{"slow"});
  }
}

TEST_CASE("cove events become the AgentEvents cocos publishes for the same transition") {
  event_view ev{"computation",
                "cvm-1",
                "comp-1",
                "ReceivingAlgorithm",
                "manifest accepted",
                int64_t{1'700'000'000'123'456'789}};
  auto ms = map_event(ev, "ReceivingManifest", "comp-1");
  using P = std::pair<std::string, std::string>;
  CHECK(events_of(ms) == std::vector<P>{{"ReceivingAlgorithm", "InProgress"}});
  const auto& e = ms[0].agent_event();
  CHECK(e.computation_id() == "comp-1");
  CHECK(e.originator() == "agent");
  CHECK(e.timestamp().seconds() == 1'700'000'000);
  CHECK(e.timestamp().nanos() == 123'456'789);
  auto details = nlohmann::json::parse(e.details());
  CHECK(details["cvm_id"] == "cvm-1");
  CHECK(details["message"] == "manifest accepted");
  REQUIRE(ms.back().has_agent_log());
  CHECK(ms.back().agent_log().level() == "INFO");

  ev.state = "Running";
  CHECK(events_of(map_event(ev, "ReceivingData", "comp-1")) ==
        std::vector<P>{{"Running", "Starting"}, {"Running", "InProgress"}});
  ev.state = "ConsumingResults";
  CHECK(events_of(map_event(ev, "Running", "comp-1")) ==
        std::vector<P>{{"Running", "Completed"}, {"ConsumingResults", "Ready"}});
  ev.state = "Complete";
  CHECK(events_of(map_event(ev, "ConsumingResults", "comp-1")) == std::vector<P>{{"Complete", "Completed"}});
  ev.state = "Failed";
  auto failed = map_event(ev, "Running", "comp-1");
  CHECK(events_of(failed) == std::vector<P>{{"Running", "Failed"}, {"Failed", "Failed"}});
  CHECK(failed.back().agent_log().level() == "ERROR");
  ev.state = "Idle";
  CHECK(events_of(map_event(ev, "Running", "comp-1")) == std::vector<P>{{"Stopped", "Stopped"}});
  CHECK(events_of(map_event(ev, "ReceivingManifest", "comp-1")).empty());  // the agent starting up
  CHECK(events_of(map_event(ev, "", "comp-1")).empty());
  ev.state = "ReceivingManifest";
  CHECK(events_of(map_event(ev, "Idle", "comp-1")).empty());

  event_view crash{"cvm", "cvm-1", "", "crashed", "agent killed by signal 9", 0};
  auto c = map_event(crash, "Running", "comp-1");
  CHECK(events_of(c) == std::vector<P>{{"Failed", "Failed"}});
  CHECK(c[0].agent_event().originator() == "manager");
  CHECK(c.back().agent_log().level() == "ERROR");
  CHECK(events_of(map_event(crash, "Complete", "comp-1")).empty());

  event_view up{"upload", "cvm-1", "comp-1", "ReceivingData", "'a.csv' upload rejected: bad", 0};
  auto u = map_event(up, "ReceivingData", "comp-1");
  REQUIRE(u.size() == 1);
  CHECK(u[0].agent_log().level() == "WARN");
}

TEST_CASE("logs are split at 500 bytes, never inside a UTF-8 sequence") {
  std::string text(499, 'a');
  text += "\xC3\xA9";  // é straddles the boundary
  text += std::string(600, 'b');
  auto pieces = split_utf8(text, 500);
  REQUIRE(pieces.size() == 3);
  CHECK(pieces[0].size() == 499);
  CHECK(pieces[1].substr(0, 2) == "\xC3\xA9");
  std::string joined;
  for (auto& p : pieces) {
    CHECK(p.size() <= 500);
    joined += p;
  }
  CHECK(joined == text);
  CHECK(make_agent_logs("INFO", text, "c", 0).size() == 3);
  CHECK(split_utf8("", 500).size() == 1);
}

TEST_CASE("Go durations") {
  CHECK(*parse_go_duration("") == 0u);
  CHECK(*parse_go_duration("0") == 0u);
  CHECK(*parse_go_duration("90s") == 90u);
  CHECK(*parse_go_duration("1h30m") == 5400u);
  CHECK(*parse_go_duration("1.5h") == 5400u);
  CHECK(*parse_go_duration("300ms") == 1u);
  CHECK(*parse_go_duration("2m0.5s") == 121u);
  for (const char* bad : {"10", "abc", "1x", "-5m", "1..5s", "h", "99999999999h"}) {
    auto r = parse_go_duration(bad);
    INFO(bad);
    CHECK_FALSE(r.has_value());
  }
  CHECK(parse_go_duration("-5m").error().message.find("negative") != std::string::npos);
}

TEST_CASE("cove errors map onto gRPC status codes") {
  CHECK(to_grpc_status(make_error(errc::not_found, "no CVM 'x'")).error_code() ==
        grpc::StatusCode::NOT_FOUND);
  CHECK(to_grpc_status(make_error(errc::not_found, "no CVM 'x'")).error_message() == "no CVM 'x'");
  CHECK(to_grpc_status(make_error(errc::invalid_request, "")).error_code() ==
        grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(to_grpc_status(make_error(errc::unavailable, "")).error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(to_grpc_status(make_error(errc::timeout, "")).error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
  CHECK(to_grpc_status(make_error(errc::too_large, "")).error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK(to_grpc_status(make_error(errc::internal, "")).error_code() == grpc::StatusCode::INTERNAL);
}
