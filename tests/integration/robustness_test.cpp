// Robustness against a hostile bus, end-to-end secrecy as the host sees it, and
// the event stream of a journey.
#include "fixture.hpp"

#include <algorithm>
#include <mutex>
#include <random>

#include "cove/zip.hpp"

using namespace cove;
using namespace cove::itest;

namespace {

using bytes = std::vector<uint8_t>;

/// The request body each subject expects, as a well-formed envelope.
bytes expected_envelope(std::string_view leaf, const std::string& cvm_id) {
  flatbuffers::FlatBufferBuilder b(256);
  auto id = b.CreateString(cvm_id);
  auto fin = [&](auto body) { return bus::finish(b, body, "robustness", "itest"); };
  if (leaf == "create") return fin(v1::CreateCvmCreate(b, v1::Backend::process, v1::Tee::sim, 0));
  if (leaf == "list") return fin(v1::CreateCvmListRequest(b));
  if (leaf == "info" || leaf == "remove") return fin(v1::CreateCvmRef(b, id));
  if (leaf == "start")
    return fin(v1::CreateComputationStart(b, id, v1::CreateManifest(b, b.CreateString("m-1"))));
  if (leaf == "stop") return fin(v1::CreateComputationStop(b, id, b.CreateString("m-1")));
  if (leaf == "status") return fin(v1::CreateStatusRequest(b, id));
  if (leaf == "attest") {
    std::array<uint8_t, 32> nonce{};
    return fin(v1::CreateAttestationRequest(b, b.CreateVector(nonce.data(), nonce.size())));
  }
  if (leaf == "manifest") return fin(v1::CreateManifest(b, b.CreateString("m-1"), b.CreateString("name")));
  if (leaf == "upload")
    return fin(v1::CreateUploadBegin(b, b.CreateString("m-1"), v1::FileRole::algorithm, b.CreateString("f")));
  if (leaf == "chunk") {
    std::array<uint8_t, 64> data{};
    return fin(
        v1::CreateChunk(b, b.CreateString("algorithm-1"), 0, b.CreateVector(data.data(), data.size()), true));
  }
  if (leaf == "result") return fin(v1::CreateResultRequest(b, b.CreateString("m-1")));
  if (leaf == "result.chunk") return fin(v1::CreateResultChunkRequest(b, b.CreateString("result-1"), 0));
  FAIL("no expected body for " << leaf);
  return {};
}

struct malformed {
  std::string label;
  bytes payload;
};

/// Payloads no service may accept on `leaf` (whose expected body is built by expected_envelope).
std::vector<malformed> malformed_payloads(std::string_view leaf, const std::string& cvm_id) {
  std::vector<malformed> out;
  out.push_back({"empty", {}});
  out.push_back({"3 bytes", {0x01, 0x02, 0x03}});
  std::mt19937 rng(0xc0ffee);
  bytes noise(200);
  for (auto& x : noise) x = static_cast<uint8_t>(rng());
  out.push_back({"200 random bytes", noise});

  auto valid = expected_envelope(leaf, cvm_id);
  REQUIRE(bus::verified_envelope(valid) != nullptr);  // the mutations below are what breaks it
  auto wrong_id = valid;
  std::copy_n("XOV9", 4, wrong_id.begin() + 4);
  out.push_back({"wrong file identifier", wrong_id});
  out.push_back({"truncated envelope",
                 bytes(valid.begin(), valid.begin() + static_cast<std::ptrdiff_t>(valid.size() / 2))});

  flatbuffers::FlatBufferBuilder b(64);
  out.push_back({"Ok body", bus::finish(b, v1::CreateOk(b), {}, "itest")});
  // An Error body is a reply, never a request: the sender's error code must not
  // come back as if the service had decided it.
  out.push_back({"Error body", bus::make_error(errc::unauthorized, "not a request", {}, "itest")});
  flatbuffers::FlatBufferBuilder e(64);
  auto ev = v1::CreateEventDirect(e, "cvm", cvm_id.c_str(), "", "running", "spoofed", 0);
  out.push_back({"Event body", bus::finish(e, ev, {}, "itest")});
  return out;
}

/// Sends every malformed payload to `subject`; each must be answered with an
/// invalid_request Error envelope (not a timeout, not another code).
void expect_rejections(bus::connection& conn, const std::string& subject, std::string_view leaf,
                       const std::string& cvm_id) {
  for (const auto& [label, payload] : malformed_payloads(leaf, cvm_id)) {
    INFO(subject << " <- " << label);
    auto reply = conn.request(subject, payload, 5s);
    REQUIRE_MESSAGE(reply, (reply ? "" : reply.error().to_string()));
    const v1::Envelope* env = bus::verified_envelope(reply->data);
    REQUIRE(env != nullptr);
    REQUIRE(env->body_type() == v1::Body::Error);
    const v1::Error* err = env->body_as_Error();
    REQUIRE(err != nullptr);
    INFO("reply: " << (err->message() ? err->message()->str() : ""));
    CHECK(err->code() == v1::ErrorCode::invalid_request);
    // The same through the typed helper the CLI uses.
    auto typed = bus::body_as<v1::Ok>(reply->data);
    REQUIRE_FALSE(typed);
    CHECK(typed.error().code == errc::invalid_request);
  }
}

/// Records every message the bus carries (the view of a curious host).
struct bus_tap {
  struct captured {
    std::string subject;
    bytes data;
  };
  std::mutex mu;
  std::vector<captured> messages;
  std::vector<std::pair<std::string, std::string>> events;  // (kind or subject, state) in arrival order

  std::vector<captured> snapshot() {
    std::lock_guard lock(mu);
    return messages;
  }
};

bool contains(const bytes& hay, std::string_view needle) {
  return std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

std::string repeat(std::string_view s, size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (size_t i = 0; i < n; ++i) out += s;
  return out;
}

/// A small computation: one dataset of numbers, summed by a python algorithm.
void run_small_journey(cluster& c, const std::string& cvm, const std::string& id) {
  auto owner = c.make_participant(id + "-owner");
  auto consumer = c.make_participant(id + "-consumer");
  auto algo = c.make_file(id + ".py",
                          "total = sum(int(l) for l in open('datasets/n.txt') if l.strip())\n"
                          "open('results/total.txt', 'w').write(str(total))\n");
  auto data = c.make_file("n.txt", "4\n5\n6\n");
  auto m = make_manifest(id, algo, algo_type::python, owner, {{data, &owner}}, {&consumer});
  CHECK(must(c.start_computation(cvm, m), "start") == "ReceivingAlgorithm");
  must(cli::upload(c.bus(), cvm, cli::file_role::algorithm, algo, owner.key, c.policy()), "algo");
  must(cli::upload(c.bus(), cvm, cli::file_role::dataset, data, owner.key, c.policy()), "data");
  CHECK(c.wait_for_state(cvm, "ConsumingResults").state == "ConsumingResults");
  auto out = c.dir() / (id + ".zip");
  must(cli::fetch_result(c.bus(), cvm, consumer.key, c.policy(), out), "result");
  auto extracted = c.dir() / (id + "-out");
  must(extract_zip(out, extracted), "unzip");
  CHECK(read_file(extracted / "total.txt") == "15");
}

}  // namespace

TEST_CASE("every service subject answers malformed requests with invalid_request and keeps serving") {
  cluster c;
  auto cvm = c.create_cvm();

  const std::pair<std::string_view, std::string_view> service_subjects[] = {
      {bus::subjects::manager_create, "create"},     {bus::subjects::manager_list, "list"},
      {bus::subjects::manager_info, "info"},         {bus::subjects::manager_remove, "remove"},
      {bus::subjects::computation_start, "start"},   {bus::subjects::computation_stop, "stop"},
      {bus::subjects::computation_status, "status"},
  };
  for (const auto& [subject, leaf] : service_subjects)
    expect_rejections(c.bus(), std::string(subject), leaf, cvm);

  for (std::string_view leaf :
       {"attest", "manifest", "upload", "chunk", "result", "result.chunk", "status", "stop"}) {
    auto subject = bus::cvm_subject(cvm, leaf);
    REQUIRE(subject);
    expect_rejections(c.bus(), *subject, leaf, cvm);
  }

  // Nothing was created, removed or changed by the garbage.
  flatbuffers::FlatBufferBuilder b(64);
  auto list =
      must(bus::request_typed<v1::CvmList>(c.bus(), bus::subjects::manager_list,
                                           bus::finish(b, v1::CreateCvmListRequest(b), {}, "itest"), 5s),
           "list");
  REQUIRE(list.body->cvms() != nullptr);
  REQUIRE(list.body->cvms()->size() == 1);
  CHECK(list.body->cvms()->Get(0)->id()->str() == cvm);
  CHECK(list.body->cvms()->Get(0)->state() == v1::CvmState::running);
  CHECK(must(cli::computation_status(c.bus(), cvm), "status").state == "ReceivingManifest");
  CHECK(c.coved().running());

  // And the CVM still runs a whole computation.
  run_small_journey(c, cvm, "after-garbage");
}

TEST_CASE("the host never sees a plaintext byte of algorithm, datasets or results") {
  constexpr std::string_view dataset_marker = "PLAINTEXT-DATASET-MARKER-7f3a\n";
  constexpr std::string_view result_marker = "PLAINTEXT-RESULT-MARKER-91c2\n";
  constexpr std::string_view algo_marker = "PLAINTEXT-ALGORITHM-MARKER-c0de";
  cluster c;

  // The curious host: everything on the bus, from before the computation starts.
  auto spy = must(bus::connection::connect({.url = c.nats().url(), .name = "spy"}), "spy connect");
  bus_tap tap;
  auto sub = must(spy->subscribe(">",
                                 [&tap](bus::message&& m) {
                                   std::lock_guard lock(tap.mu);
                                   tap.messages.push_back({std::move(m.subject), std::move(m.data)});
                                 }),
                  "subscribe >");
  must(spy->flush(5s), "flush");

  auto cvm = c.create_cvm();
  auto owner = c.make_participant("owner");
  auto consumer = c.make_participant("consumer", crypto::key_type::ecdsa_p256);
  // The dataset (~900 KiB) and the result (~1.7 MB) span several 768 KiB chunks.
  auto dataset = c.make_file("secret.txt", repeat(dataset_marker, 30000));
  auto algo =
      c.make_file("reveal.py", "# " + std::string(algo_marker) +
                                   "\n"
                                   "data = open('datasets/secret.txt').read()\n"
                                   "n = data.count('PLAINTEXT-DATASET-' + 'MARKER-7f3a')\n"
                                   "line = 'PLAINTEXT-' + 'RESULT-MARKER-91c2\\n'\n"
                                   "open('results/out.txt', 'w').write('count=%d\\n' % n + line * 60000)\n");
  auto m = make_manifest("secrecy-1", algo, algo_type::python, owner, {{dataset, &owner}}, {&consumer});
  CHECK(must(c.start_computation(cvm, m), "start") == "ReceivingAlgorithm");
  auto up_algo =
      must(cli::upload(c.bus(), cvm, cli::file_role::algorithm, algo, owner.key, c.policy()), "algo");
  auto up_data =
      must(cli::upload(c.bus(), cvm, cli::file_role::dataset, dataset, owner.key, c.policy()), "data");
  CHECK(up_data.chunks >= 2);
  c.wait_for_state(cvm, "ConsumingResults");
  auto out = c.dir() / "result.zip";
  auto got = must(cli::fetch_result(c.bus(), cvm, consumer.key, c.policy(), out), "result");
  CHECK(got.chunks >= 3);
  CHECK(must(cli::computation_status(c.bus(), cvm)).state == "Complete");

  // The consumer reads the plaintext...
  auto extracted = c.dir() / "result";
  must(extract_zip(out, extracted), "unzip");
  auto text = read_file(extracted / "out.txt");
  CHECK(text.starts_with("count=30000\n"));
  CHECK(text.size() == std::string("count=30000\n").size() + 60000 * result_marker.size());
  CHECK(text.find(result_marker) != std::string::npos);

  // ...and the host saw none of it, although it carried every chunk.
  must(spy->flush(5s), "flush");
  sub.reset();
  CHECK(sub.dropped() == 0);
  auto captured = tap.snapshot();
  auto chunk_subject = *bus::cvm_subject(cvm, "chunk");
  auto result_chunk_subject = *bus::cvm_subject(cvm, "result.chunk");
  size_t chunk_msgs = 0, chunk_bytes = 0, result_chunk_requests = 0, total_bytes = 0;
  // Positive control: the tap and the search do see what is public (the manifest id).
  CHECK(std::any_of(captured.begin(), captured.end(),
                    [](const auto& msg) { return contains(msg.data, "secrecy-1"); }));
  for (const auto& msg : captured) {
    INFO("subject " << msg.subject << ", " << msg.data.size() << " bytes");
    CHECK_FALSE(contains(msg.data, dataset_marker));
    CHECK_FALSE(contains(msg.data, result_marker));
    CHECK_FALSE(contains(msg.data, algo_marker));
    CHECK_FALSE(contains(msg.data, "PLAINTEXT-"));
    total_bytes += msg.data.size();
    if (msg.subject == chunk_subject && !msg.data.empty()) {
      ++chunk_msgs;
      chunk_bytes += msg.data.size();
    }
    if (msg.subject == result_chunk_subject && !msg.data.empty()) ++result_chunk_requests;
  }
  // Upload chunks: algorithm (1) + dataset (>= 2), carrying at least the dataset's size.
  CHECK(chunk_msgs == up_algo.chunks + up_data.chunks);
  CHECK(chunk_bytes >= 30000 * dataset_marker.size());
  CHECK(result_chunk_requests == got.chunks);
  // The sealed result chunks travel as replies: the tap saw at least the result's size.
  CHECK(total_bytes >= chunk_bytes + text.size());
}

TEST_CASE("a journey publishes cvm and computation events in state order") {
  cluster c;
  auto spy = must(bus::connection::connect({.url = c.nats().url(), .name = "events"}), "connect");
  struct seen {
    std::string kind, cvm_id, state;
  };
  std::mutex mu;
  std::vector<seen> events;
  auto sub =
      must(spy->subscribe(
               bus::subjects::all_events,
               [&](bus::message&& m) {
                 auto ev = bus::body_as<v1::Event>(m.data);
                 std::lock_guard lock(mu);
                 if (!ev) {
                   events.push_back({"<malformed on " + m.subject + ">", "", ""});
                   return;
                 }
                 auto str = [](const flatbuffers::String* s) { return s ? s->str() : std::string(); };
                 events.push_back({str((*ev)->kind()), str((*ev)->cvm_id()), str((*ev)->state())});
                 // The subject names the kind.
                 if (m.subject != "cove.v1.events." + events.back().kind)
                   events.push_back({"<" + m.subject + " carries kind " + events.back().kind + ">", "", ""});
               }),
           "subscribe events");
  must(spy->flush(5s), "flush");

  auto cvm = c.create_cvm();
  run_small_journey(c, cvm, "events-1");

  auto states_of = [&](std::string_view kind) {
    std::lock_guard lock(mu);
    std::vector<std::string> out;
    for (const auto& e : events)
      if (e.kind == kind && e.cvm_id == cvm) out.push_back(e.state);
    return out;
  };
  // Events are asynchronous: wait for the last one.
  bool complete = test::wait_until(
      [&] {
        auto s = states_of("computation");
        return !s.empty() && s.back() == "Complete";
      },
      test::deadline_in(10s));
  {
    std::lock_guard lock(mu);
    for (const auto& e : events) {
      INFO(e.kind << " " << e.cvm_id << " " << e.state);
      CHECK(e.kind.front() != '<');
    }
  }
  REQUIRE(complete);
  CHECK(states_of("cvm") == std::vector<std::string>{"starting", "running"});
  CHECK(states_of("computation") == std::vector<std::string>{"Idle", "ReceivingManifest",
                                                             "ReceivingAlgorithm", "ReceivingData", "Running",
                                                             "ConsumingResults", "Complete"});
  // Upload and result events name the CVM too.
  CHECK(states_of("upload").size() >= 4);  // started + verified, for the algorithm and the dataset
  CHECK(states_of("result").size() == 1);
}
