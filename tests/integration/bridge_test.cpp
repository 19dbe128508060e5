// The attested bridge: agents join the bus only through it, bound to their TLS
// session, and relay only their own CVM's subjects. `ctest -R bridge` selects these.
#include <sodium.h>

#include <csignal>
#include <mutex>
#include <nlohmann/json.hpp>

#include "event_log.hpp"
#include "fixture.hpp"

#include "cove/attest/dice.hpp"
#include "cove/attest/sim.hpp"
#include "cove/attest/sim_store.hpp"
#include "cove/bridge/client.hpp"
#include "cove/crypto/encoding.hpp"
#include "cove/crypto/statements.hpp"
#include "cove/schemas/bridge_generated.h"

using namespace cove;
using namespace cove::itest;

namespace {

std::string bridge_address(cluster& c) {
  auto text = read_file(c.state_dir() / "bridge" / "address");
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  REQUIRE_FALSE(text.empty());
  return text;
}

/// Plays a (compromised or replaying) agent that holds a CVM's simulated TEE key: it
/// can produce genuine evidence for whatever REPORT_DATA it likes.
struct impostor {
  attest::sim_identity tee;
  std::array<uint8_t, 48> measurement{};
  std::array<uint8_t, 32> kx{}, sign{};
  std::string cvm_id;

  impostor(cluster& c, const std::string& cvm) : cvm_id(cvm) {
    REQUIRE(sodium_init() >= 0);
    tee = must(attest::load_sim_identity(c.state_dir() / "cvms" / cvm / "tee"), "tee");
    measurement = must(attest::sha384_file(bin_dir() / "cove-agent"), "measurement");
    randombytes_buf(kx.data(), kx.size());
    randombytes_buf(sign.data(), sign.size());
  }

  std::vector<uint8_t> hello_for(const std::array<uint8_t, 64>& report_data) {
    auto report = must(attest::make_sim_report(tee.chip, report_data, measurement), "report");
    std::string chain = tee.chip.vcek_pem + tee.ask_pem + tee.ark_pem;
    flatbuffers::FlatBufferBuilder b(4096);
    auto ev =
        v1::CreateEvidence(b, v1::EvidenceKind::sim_snp, b.CreateVector(report),
                           b.CreateVector(reinterpret_cast<const uint8_t*>(chain.data()), chain.size()),
                           b.CreateVector(kx.data(), kx.size()), b.CreateVector(sign.data(), sign.size()));
    v1::FinishBridgeHelloBuffer(
        b, v1::CreateBridgeHello(b, b.CreateString(cvm_id), ev, b.CreateString("impostor")));
    return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()};
  }

  /// A correctly bound hello for the session with this exporter.
  std::vector<uint8_t> bound_hello(const std::array<uint8_t, 32>& exporter) {
    return hello_for(crypto::bridge_report_data(kx, sign, cvm_id, exporter));
  }
};

expected<std::unique_ptr<bridge::client>> dial(cluster& c, bridge::hello_fn hello) {
  return bridge::client::connect({.address = bridge_address(c),
                                  .ca_file = c.state_dir() / "bridge" / "cert.pem",
                                  .handshake_timeout = 20s},
                                 std::move(hello));
}

std::string policy_with_measurement(cluster& c, const std::string& hex) {
  auto j = nlohmann::json::parse(read_file(c.state_dir() / "sim" / "policy.json"));
  j["measurements"] = nlohmann::json::array({hex});
  return j.dump();
}

expected<bus::reply<v1::CvmInfo>> set_policy(cluster& c, const std::string& cvm, const std::string& policy) {
  flatbuffers::FlatBufferBuilder b(4096);
  auto req = v1::CreateCvmPolicyUpdate(b, b.CreateString(cvm), b.CreateString(policy));
  return bus::request_typed<v1::CvmInfo>(c.bus(), bus::subjects::manager_policy,
                                         bus::finish(b, req, {}, "itest"), 5s);
}

}  // namespace

TEST_CASE("bridge: an attested agent joins through the bridge and runs a computation") {
  cluster c;
  event_log events(c.bus());
  auto cvm = c.create_cvm();
  auto admitted = events.wait(cvm, "admitted");
  CHECK(admitted.find("evidence verified") != std::string::npos);
  // The agent's log shows the bridge link, and it was never given a bus URL.
  auto log = read_file(c.state_dir() / "cvms" / cvm / "agent.log");
  CHECK(log.find("bridge link admitted") != std::string::npos);
  auto info = must(c.cvm_info(cvm), "info");
  REQUIRE(info.body->policy_json());
  CHECK(info.body->policy_json()->str().find("measurements") != std::string::npos);

  auto owner = c.make_participant("owner");
  auto consumer = c.make_participant("consumer");
  auto algo = c.make_file("algo.sh", "#!/bin/sh\ncat datasets/* | wc -l > results/lines\n", true);
  auto data = c.make_file("rows.csv", "1\n2\n3\n");
  auto m = make_manifest("bridge-1", algo, algo_type::bin, owner, {{data, &owner}}, {&consumer});
  CHECK(must(c.start_computation(cvm, m), "start") == "ReceivingAlgorithm");
  must(cli::upload(c.bus(), cvm, cli::file_role::algorithm, algo, owner.key, c.policy()), "algo");
  must(cli::upload(c.bus(), cvm, cli::file_role::dataset, data, owner.key, c.policy()), "data");
  c.wait_for_state(cvm, "ConsumingResults");
  CHECK(c.fetch_result_file(cvm, consumer, "lines") == "3\n");
  CHECK(events.count(cvm, "denied") == 0);
}

TEST_CASE("bridge: an agent whose measurement is not in the CVM's policy is refused") {
  cluster c;
  event_log events(c.bus());
  flatbuffers::FlatBufferBuilder b(4096);
  auto policy = policy_with_measurement(c, std::string(96, 'a'));
  auto req = v1::CreateCvmCreate(b, v1::Backend::process, v1::Tee::sim, 0, b.CreateString(policy));
  auto r = bus::request_typed<v1::CvmInfo>(c.bus(), bus::subjects::manager_create,
                                           bus::finish(b, req, {}, "itest"), 30s);
  check_error(r, errc::attestation_failed, "measurement");
  // The manager removes the refused CVM (its agent is stopped, its files wiped).
  flatbuffers::FlatBufferBuilder lb(64);
  auto list_req = bus::finish(lb, v1::CreateCvmListRequest(lb), {}, "itest");
  bool gone = test::wait_until(
      [&] {
        auto list = bus::request_typed<v1::CvmList>(c.bus(), bus::subjects::manager_list, list_req, 5s);
        return list && (!list->body->cvms() || list->body->cvms()->size() == 0);
      },
      test::deadline_in(20s));
  CHECK(gone);
  CHECK(dir_empty(c.state_dir() / "cvms"));
}

TEST_CASE("bridge: a policy that names files or does not parse is refused at create") {
  cluster c;
  flatbuffers::FlatBufferBuilder b(4096);
  auto req = v1::CreateCvmCreate(b, v1::Backend::process, v1::Tee::sim, 0,
                                 b.CreateString(R"({"measurements":[],"trusted_roots":["/etc/passwd"]})"));
  auto r = bus::request_typed<v1::CvmInfo>(c.bus(), bus::subjects::manager_create,
                                           bus::finish(b, req, {}, "itest"), 10s);
  check_error(r, errc::invalid_request, "does not read files");
}

TEST_CASE("bridge: evidence replayed from another TLS session is refused") {
  cluster c;
  event_log events(c.bus());
  auto cvm = c.create_cvm();
  events.wait(cvm, "admitted");
  impostor agent(c, cvm);

  // Session A: genuine evidence bound to A. We capture the hello A sent.
  std::vector<uint8_t> captured;
  {
    auto a = must(dial(c,
                       [&](const std::array<uint8_t, 32>& exporter) -> expected<std::vector<uint8_t>> {
                         captured = agent.bound_hello(exporter);
                         return captured;
                       }),
                  "session A");
    CHECK(a->connected());
  }
  REQUIRE_FALSE(captured.empty());

  SUBCASE("the hello captured on session A, presented on session B") {
    auto b =
        dial(c, [&](const std::array<uint8_t, 32>&) -> expected<std::vector<uint8_t>> { return captured; });
    check_error(b, errc::attestation_failed, "report_data");
    CHECK(events.wait(cvm, "refused", "report_data").find("report_data") != std::string::npos);
  }
  SUBCASE("evidence the real agent gives a verifier whose nonce is B's exporter") {
    // A relay asks the genuine agent (cove.v1.cvm.<id>.attest) for evidence over B's
    // exporter: the agent binds verifier nonces under another tag, so it cannot pass.
    // (Session A displaced the agent's link; wait until it has re-attested.)
    events.wait(cvm, "admitted", {}, 3);
    auto b = dial(c, [&](const std::array<uint8_t, 32>& exporter) -> expected<std::vector<uint8_t>> {
      flatbuffers::FlatBufferBuilder rb(128);
      std::vector<uint8_t> nonce(exporter.begin(), exporter.end());
      auto req = v1::CreateAttestationRequest(rb, rb.CreateVector(nonce));
      auto subject = *bus::cvm_subject(cvm, "attest");
      auto ev = bus::request_typed<v1::Evidence>(c.bus(), subject, bus::finish(rb, req, {}, "relay"), 5s);
      if (!ev) return ev.error();
      const auto* e = ev->body;
      flatbuffers::FlatBufferBuilder hb(8192);
      auto copy = [&](const flatbuffers::Vector<uint8_t>* v) {
        return hb.CreateVector(v->data(), v->size());
      };
      auto evidence = v1::CreateEvidence(hb, e->kind(), copy(e->report()), copy(e->cert_chain()),
                                         copy(e->kx_public_key()), copy(e->sign_public_key()));
      v1::FinishBridgeHelloBuffer(hb, v1::CreateBridgeHello(hb, hb.CreateString(cvm), evidence));
      return std::vector<uint8_t>(hb.GetBufferPointer(), hb.GetBufferPointer() + hb.GetSize());
    });
    check_error(b, errc::attestation_failed, "report_data");
  }
  SUBCASE("a hello for another CVM than the evidence's keys were bound to") {
    auto other = c.create_cvm();
    auto b = dial(c, [&](const std::array<uint8_t, 32>& exporter) -> expected<std::vector<uint8_t>> {
      impostor wrong(c, other);  // other CVM's name, this CVM's binding
      wrong.tee = agent.tee;
      wrong.kx = agent.kx;
      wrong.sign = agent.sign;
      return wrong.hello_for(crypto::bridge_report_data(agent.kx, agent.sign, cvm, exporter));
    });
    REQUIRE_FALSE(b);
    CHECK(b.error().code == errc::attestation_failed);
  }
}

TEST_CASE("bridge: an admitted agent can reach only its own CVM's subjects and speak only for it (authz)") {
  cluster c;
  event_log events(c.bus());
  auto mine = c.create_cvm();
  auto other = c.create_cvm();
  events.wait(mine, "admitted");
  impostor agent(c, mine);
  // The real agent of `mine` would take its link back (a newer link replaces the
  // older one) and close the impostor's mid-test: freeze it while the impostor plays.
  auto info = must(c.cvm_info(mine), "cvm info");
  pid_t real_agent = static_cast<pid_t>(info.body->pid());
  REQUIRE(real_agent > 0);
  REQUIRE(::kill(real_agent, SIGSTOP) == 0);
  struct resume {
    pid_t pid;
    ~resume() { ::kill(pid, SIGCONT); }
  } resume_on_exit{real_agent};

  // A spy sees everything on the other CVM's subjects.
  std::mutex mu;
  std::vector<std::string> leaked;
  auto spy = must(c.bus().subscribe(std::string(bus::subjects::cvm_prefix) + other + ".>",
                                    [&](bus::message&& m) {
                                      std::lock_guard lock(mu);
                                      leaked.push_back(m.subject);
                                    }),
                  "spy");
  must(c.bus().flush(5s), "flush");

  auto link = must(dial(c,
                        [&](const std::array<uint8_t, 32>& e) -> expected<std::vector<uint8_t>> {
                          return agent.bound_hello(e);
                        }),
                   "dial");
  auto other_events = *bus::cvm_subject(other, "events");
  std::vector<uint8_t> junk = {1, 2, 3};
  must(link->publish(other_events, junk), "publish");
  must(link->publish("cove.v1.manager.remove", junk), "publish");
  must(link->publish("_INBOX.someone-else.1", junk), "publish");
  must(link->subscribe(*bus::cvm_subject(other, "upload"), [](bus::message&&) {}), "subscribe");
  must(link->subscribe("cove.v1.cvm.*.upload", [](bus::message&&) {}), "subscribe");
  must(link->flush(5s), "flush");

  events.wait(mine, "denied", other_events);
  events.wait(mine, "denied", "cove.v1.manager.remove");
  events.wait(mine, "denied", "_INBOX.someone-else.1");
  events.wait(mine, "denied", "subscribe to 'cove.v1.cvm." + other + ".upload'");
  events.wait(mine, "denied", "subscribe to 'cove.v1.cvm.*.upload'");

  // Its own subjects work, and a request to the other CVM never reaches this link.
  std::atomic<int> got{0};
  must(link->subscribe(*bus::cvm_subject(mine, "status"), [&](bus::message&&) { ++got; }), "subscribe own");
  must(link->flush(5s), "flush");
  must(c.bus().publish(*bus::cvm_subject(mine, "status"), junk), "publish own");
  must(c.bus().flush(5s), "flush");
  CHECK(test::wait_until([&] { return got.load() == 1; }, test::deadline_in(10s)));

  // Events: the body must name the agent's own CVM. An event for `other`, sent on
  // the agent's own (allowed) events subject, is refused at the bridge and never
  // reaches the bus, so `other`'s event stream (cove.v1.events.* filtered by its
  // cvm_id) sees nothing; junk that is no Event is refused too.
  auto own_events = *bus::cvm_subject(mine, "events");
  auto event_for = [](const std::string& cvm, const char* state) {
    flatbuffers::FlatBufferBuilder b(256);
    auto ev = v1::CreateEventDirect(b, "computation", cvm.c_str(), "forged-run", state, "from an impostor",
                                    bus::now_ns());
    return bus::finish(b, ev, {}, "itest");
  };
  must(link->publish(own_events, event_for(other, "Complete")), "forged event");
  must(link->publish(own_events, junk), "junk event");
  must(link->publish(own_events, event_for(mine, "Probe")), "own event");
  must(link->flush(5s), "flush");
  events.wait(mine, "denied", "an Event for CVM '" + other + "' from the agent of " + mine);
  events.wait(mine, "denied", own_events + "': not an Event");
  // The agent's frames are relayed in order: once its own event is fanned out, the
  // forged one (sent before it) would have been too.
  events.wait(mine, "Probe");
  CHECK(events.count(other, "Complete") == 0);

  // Around the bridge (a client publishing on the CVM subject itself, as anyone can
  // on an open bus): the computation service's fan-out drops a body whose cvm_id is
  // not the subject's.
  must(c.bus().publish(own_events, event_for(other, "Failed")), "forged on the bus");
  must(c.bus().publish(own_events, event_for(mine, "Probe2")), "own on the bus");
  must(c.bus().flush(5s), "flush");
  events.wait(mine, "Probe2");
  CHECK(events.count(other, "Failed") == 0);
  std::lock_guard lock(mu);
  CHECK(leaked.empty());
}

TEST_CASE("bridge: expired evidence closes the link and the agent re-attests") {
  cluster c({"--bridge-evidence-ttl", "2"});
  event_log events(c.bus());
  auto cvm = c.create_cvm();
  events.wait(cvm, "admitted");
  auto closed = events.wait(cvm, "closed", "validity window", 1, 30s);
  CHECK(closed.find("fresh evidence") != std::string::npos);
  events.wait(cvm, "admitted", {}, 2, 30s);
  // Still the same agent, still serving.
  c.wait_for_state(cvm, "ReceivingManifest");
}

TEST_CASE("bridge: a policy change closes the link; the agent is re-verified under the new policy") {
  cluster c;
  event_log events(c.bus());
  auto cvm = c.create_cvm();
  events.wait(cvm, "admitted");
  auto good = read_file(c.state_dir() / "sim" / "policy.json");

  must(set_policy(c, cvm, policy_with_measurement(c, std::string(96, 'b'))), "policy");
  events.wait(cvm, "closed", "policy changed");
  events.wait(cvm, "refused", "measurement");
  // Nobody answers for the CVM now.
  auto st = cli::computation_status(c.bus(), cvm, {.request_timeout = 2s});
  REQUIRE_FALSE(st);

  must(set_policy(c, cvm, good), "policy");
  events.wait(cvm, "admitted", {}, 2, 30s);
  c.wait_for_state(cvm, "ReceivingManifest");

  SUBCASE("an invalid policy is refused and changes nothing") {
    auto bad = set_policy(c, cvm, "{not json");
    check_error(bad, errc::invalid_request, "policy_json");
    auto missing = set_policy(c, "cvm-nope", good);
    check_error(missing, errc::not_found, "cvm-nope");
  }
}

/// The CVM's policy plus a `dice` section requiring the simulated TEE's chain: its device
/// root (derived from the CVM's chip) and the FWIDs of firmware, kernel and agent.
std::string policy_requiring_dice(cluster& c, const std::string& cvm, const std::string& agent_fwid_hex) {
  auto tee = must(attest::load_sim_identity(c.state_dir() / "cvms" / cvm / "tee"), "tee");
  auto measurement = must(attest::sha384_file(bin_dir() / "cove-agent"), "measurement");
  auto dice = must(attest::make_sim_agent_dice_chain(
                       std::span(reinterpret_cast<const uint8_t*>(tee.chip.vcek_key_pem.data()),
                                 tee.chip.vcek_key_pem.size()),
                       measurement),
                   "dice");
  auto j = nlohmann::json::parse(read_file(c.state_dir() / "sim" / "policy.json"));
  j["dice"] = {{"required", true},
               {"trusted_roots", {dice.root_pem}},
               {"layers",
                {{{"name", "firmware"}, {"fwids", {crypto::to_hex(attest::sim_dice_firmware_fwid())}}},
                 {{"name", "kernel"}, {"fwids", {crypto::to_hex(attest::sim_dice_kernel_fwid())}}},
                 {{"name", "agent"}, {"fwids", {agent_fwid_hex}}}}}};
  return j.dump();
}

TEST_CASE("bridge: a policy requiring DICE admits the agent's chain and refuses a wrong agent FWID") {
  cluster c;
  event_log events(c.bus());
  auto cvm = c.create_cvm();
  events.wait(cvm, "admitted");
  auto measurement = must(attest::sha384_file(bin_dir() / "cove-agent"), "measurement");

  // The agent's DICE chain (agent FWID = its measurement) is verified and admitted.
  must(set_policy(c, cvm, policy_requiring_dice(c, cvm, crypto::to_hex(measurement))), "dice policy");
  events.wait(cvm, "closed", "policy changed");
  auto admitted = events.wait(cvm, "admitted", "with DICE chain", 1, 30s);
  CHECK(admitted.find("evidence with DICE chain verified") != std::string::npos);
  c.wait_for_state(cvm, "ReceivingManifest");

  // Another agent FWID: refused, naming the layer.
  must(set_policy(c, cvm, policy_requiring_dice(c, cvm, std::string(96, 'c'))), "wrong fwid");
  events.wait(cvm, "closed", "policy changed", 2);
  auto refused = events.wait(cvm, "refused", "fwid", 1, 30s);
  CHECK(refused.find("dice: layer 3 (agent) fwid: got " + crypto::to_hex(measurement)) != std::string::npos);
}

TEST_CASE("bridge: a hello that is not a BridgeHello or names a bad CVM id is refused") {
  cluster c;
  event_log events(c.bus());
  auto cvm = c.create_cvm();
  auto garbage = dial(c, [](const std::array<uint8_t, 32>&) -> expected<std::vector<uint8_t>> {
    return std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8};
  });
  check_error(garbage, errc::attestation_failed, "not a valid BridgeHello");
  impostor agent(c, cvm);
  agent.cvm_id = "BAD.ID";
  auto bad_id = dial(c, [&](const std::array<uint8_t, 32>& e) -> expected<std::vector<uint8_t>> {
    return agent.bound_hello(e);
  });
  check_error(bad_id, errc::attestation_failed, "cvm_id");
  agent.cvm_id = "cvm-nope";
  auto unknown = dial(c, [&](const std::array<uint8_t, 32>& e) -> expected<std::vector<uint8_t>> {
    return agent.bound_hello(e);
  });
  check_error(unknown, errc::attestation_failed, "cvm-nope");
  events.wait("cvm-nope", "refused", "cvm-nope");
}
