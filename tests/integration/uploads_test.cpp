// Uploads that must be refused: wrong content, wrong signer, duplicates, forged
// chunks, oversize, wrong state and untrustworthy evidence. Every refusal is a
// typed error, the agent keeps serving, and what it had already accepted stays.
#include "fixture.hpp"

#include <atomic>
#include <functional>
#include <optional>

#include "cove/attest/sim.hpp"
#include "cove/crypto/encoding.hpp"
#include "cove/crypto/hash.hpp"
#include "cove/crypto/seal.hpp"
#include "cove/crypto/statements.hpp"

using namespace cove;
using namespace cove::itest;

namespace {

using bytes = std::vector<uint8_t>;

/// Sums the integers of every dataset into results/total.txt.
constexpr std::string_view sum_script =
    "#!/bin/sh\n"
    "cat datasets/* | awk '{ s += $1 } END { print s }' > results/total.txt\n";

fs::path work_dir(cluster& c, const std::string& cvm) {
  return c.state_dir() / "cvms" / cvm / "work";
}

/// A hand-made uploader speaking the upload protocol directly (see cli::upload),
/// so that a test can lie where the real CLI never would.
struct raw_upload_spec {
  std::string computation_id;
  cli::file_role role = cli::file_role::dataset;
  std::string filename;             // dataset name; ignored for the algorithm
  sha3_digest declared_hash{};      // what UploadBegin claims (and the signature covers)
  uint64_t declared_size = 0;       // what UploadBegin announces
  std::vector<std::string> chunks;  // plaintext of each chunk actually sent
  const crypto::private_key* signer = nullptr;
  std::optional<bytes> claimed_signer_der;                  // signer_key to announce instead of signer's own
  std::function<void(uint64_t seq, bytes& cipher)> tamper;  // edits a chunk's ciphertext before sending
};

struct raw_outcome {
  std::string stage;  // "begin" (UploadBegin refused), "chunk" (a chunk refused) or "done"
  uint64_t seq = 0;   // the refused chunk
  std::optional<error> err;
  bytes announced_hash;  // UploadReady.sha3_256: the manifest's hash the agent expects
};

raw_outcome raw_upload(cluster& c, const std::string& cvm, const raw_upload_spec& s) {
  REQUIRE(s.signer != nullptr);
  auto agent = must(cli::attest(c.bus(), cvm, c.policy()), "attest");
  auto status = must(cli::computation_status(c.bus(), cvm), "status");
  sha3_digest manifest_digest{};
  if (status.manifest_digest.size() == manifest_digest.size())
    std::copy(status.manifest_digest.begin(), status.manifest_digest.end(), manifest_digest.begin());
  bool algo = s.role == cli::file_role::algorithm;
  auto eph = crypto::kx_keypair::generate();
  auto statement = crypto::upload_statement(s.computation_id, manifest_digest, algo ? "algorithm" : "dataset",
                                            algo ? "algo" : s.filename, s.declared_hash, agent.kx_public_key,
                                            eph.public_key);
  auto signature = must(s.signer->sign(statement), "sign");
  auto session = must(crypto::client_session_key(eph, agent.kx_public_key), "session key");
  crypto::seal_header header{};
  auto sealer = must(crypto::seal_stream::create(session, header), "seal");
  bytes signer_der = s.claimed_signer_der ? *s.claimed_signer_der : s.signer->public_key().der();

  flatbuffers::FlatBufferBuilder b(1024);
  auto begin = v1::CreateUploadBegin(
      b, b.CreateString(s.computation_id), algo ? v1::FileRole::algorithm : v1::FileRole::dataset,
      b.CreateString(algo ? "" : s.filename), s.declared_size,
      b.CreateVector(eph.public_key.data(), eph.public_key.size()),
      b.CreateVector(header.data(), header.size()), b.CreateVector(signer_der));
  auto ready = bus::request_typed<v1::UploadReady>(c.bus(), *bus::cvm_subject(cvm, "upload"),
                                                   bus::finish(b, begin, {}, "itest"), 10s);
  if (!ready) return {"begin", 0, ready.error()};
  REQUIRE(ready->body->stream_id() != nullptr);
  std::string stream_id = ready->body->stream_id()->str();
  bytes announced;
  if (const auto* h = ready->body->sha3_256(); h != nullptr) announced.assign(h->begin(), h->end());

  REQUIRE(!s.chunks.empty());
  for (uint64_t seq = 0; seq < s.chunks.size(); ++seq) {
    bool last = seq + 1 == s.chunks.size();
    const auto& plain = s.chunks[seq];
    bytes cipher;
    must(sealer.push({reinterpret_cast<const uint8_t*>(plain.data()), plain.size()}, last, cipher),
         "seal chunk");
    if (s.tamper) s.tamper(seq, cipher);
    flatbuffers::FlatBufferBuilder cb(cipher.size() + 256);
    auto data = cb.CreateVector(cipher);
    // The last chunk claims the declared hash and carries the signature over it.
    flatbuffers::Offset<flatbuffers::Vector<uint8_t>> hash_off, sig_off;
    if (last) {
      hash_off = cb.CreateVector(s.declared_hash.data(), s.declared_hash.size());
      sig_off = cb.CreateVector(signature);
    }
    auto chunk = v1::CreateChunk(cb, cb.CreateString(stream_id), seq, data, last, hash_off, sig_off);
    auto ack = bus::request_typed<v1::ChunkAck>(c.bus(), *bus::cvm_subject(cvm, "chunk"),
                                                bus::finish(cb, chunk, {}, "itest"), 10s);
    if (!ack) return {"chunk", seq, ack.error(), announced};
    CHECK(ack->body->done() == last);
  }
  return {"done", s.chunks.size(), std::nullopt, announced};
}

/// Checks a refusal: the expected stage, error code and a part of the message.
void check_refused(const raw_outcome& o, std::string_view stage, errc code, std::string_view text) {
  INFO("stage " << o.stage << " seq " << o.seq << (o.err ? ": " + o.err->to_string() : std::string()));
  CHECK(o.stage == stage);
  REQUIRE(o.err.has_value());
  CHECK(o.err->code == code);
  CHECK(o.err->message.find(text) != std::string::npos);
}

std::vector<std::string> pending_of(cluster& c, const std::string& cvm) {
  return must(cli::computation_status(c.bus(), cvm), "status").pending;
}

/// Waits for the run and checks the consumer's total.
void check_total(cluster& c, const std::string& cvm, const participant& consumer, std::string_view total) {
  c.wait_for_state(cvm, "ConsumingResults");
  CHECK(c.fetch_result_file(cvm, consumer, "total.txt") == std::string(total) + "\n");
  CHECK(must(cli::computation_status(c.bus(), cvm)).state == "Complete");
}

/// The usual cast: an algorithm owner, two hospitals, a consumer and a stranger.
struct cast {
  participant algo_owner, hospital_a, hospital_b, consumer, stranger;
  explicit cast(cluster& c)
      : algo_owner(c.make_participant("algo")),
        hospital_a(c.make_participant("a", crypto::key_type::ecdsa_p256)),
        hospital_b(c.make_participant("b")),
        consumer(c.make_participant("consumer")),
        stranger(c.make_participant("stranger")) {}
};

}  // namespace

TEST_CASE(
    "content that does not match the manifest hash is refused, at UploadBegin and after the last chunk") {
  cluster c;
  cast p(c);
  auto algo = c.make_file("sum.sh", sum_script, true);
  auto a = c.make_file("a.txt", "1\n2\n3\n");
  auto b = c.make_file("b.txt", "10\n20\n");
  auto m = make_manifest("hash-1", algo, algo_type::bin, p.algo_owner,
                         {{a, &p.hospital_a}, {b, &p.hospital_b}}, {&p.consumer});
  auto cvm = c.create_cvm();
  CHECK(must(c.start_computation(cvm, m), "start") == "ReceivingAlgorithm");
  must(cli::upload(c.bus(), cvm, cli::file_role::algorithm, algo, p.algo_owner.key, c.policy()), "algo");
  must(cli::upload(c.bus(), cvm, cli::file_role::dataset, b, p.hospital_b.key, c.policy()), "data b");

  // Changed content: the agent's hash of what arrived differs from the manifest's, so the
  // upload is refused at its last chunk and nothing of it is kept.
  write_file(a, "1\n2\n4\n");
  check_error(cli::upload(c.bus(), cvm, cli::file_role::dataset, a, p.hospital_a.key, c.policy()),
              errc::hash_mismatch, "does not match the manifest");
  CHECK(pending_of(c, cvm) == std::vector<std::string>{"a.txt"});

  // A client that declares the manifest's hash but streams other bytes (same size):
  // the agent re-hashes the plaintext and refuses the final chunk.
  raw_upload_spec lie{.computation_id = m.id,
                      .filename = "a.txt",
                      .declared_hash = m.datasets[0].hash,
                      .declared_size = 6,
                      .chunks = {"1\n2", "\n4\n"},
                      .signer = &p.hospital_a.key};
  auto lied = raw_upload(c, cvm, lie);
  check_refused(lied, "chunk", errc::hash_mismatch, "SHA3-256 of the received bytes");
  // UploadReady names the manifest's hash: what the CLI signs instead of hashing the file.
  CHECK(lied.announced_hash == bytes(m.datasets[0].hash.begin(), m.datasets[0].hash.end()));

  // The genuine bytes, but a claim (and signature) over another hash than the manifest's.
  raw_upload_spec wrong_claim{.computation_id = m.id,
                              .filename = "a.txt",
                              .declared_hash = crypto::sha3_256_of(std::string_view("not the manifest's")),
                              .declared_size = 6,
                              .chunks = {"1\n2\n3\n"},
                              .signer = &p.hospital_a.key};
  check_refused(raw_upload(c, cvm, wrong_claim), "chunk", errc::hash_mismatch,
                "the uploader's sha3_256 is not the manifest's hash");
  auto wd = work_dir(c, cvm);
  CHECK_FALSE(fs::exists(wd / "datasets" / "a.txt"));
  CHECK(dir_empty(wd / "incoming"));             // the partial file is gone
  CHECK(fs::exists(wd / "datasets" / "b.txt"));  // b, accepted before, is kept

  // Still serving: the genuine content is accepted and the run completes with b too.
  auto st = must(cli::computation_status(c.bus(), cvm), "status");
  CHECK(st.state == "ReceivingData");
  CHECK(st.pending == std::vector<std::string>{"a.txt"});
  write_file(a, "1\n2\n3\n");
  must(cli::upload(c.bus(), cvm, cli::file_role::dataset, a, p.hospital_a.key, c.policy()), "data a");
  check_total(c, cvm, p.consumer, "36");
}

TEST_CASE("an upload signed by a key the manifest does not declare for that file is unauthorized") {
  cluster c;
  cast p(c);
  auto algo = c.make_file("sum.sh", sum_script, true);
  auto a = c.make_file("a.txt", "5\n");
  auto b = c.make_file("b.txt", "7\n");
  auto m = make_manifest("auth-1", algo, algo_type::bin, p.algo_owner,
                         {{a, &p.hospital_a}, {b, &p.hospital_b}}, {&p.consumer});
  auto cvm = c.create_cvm();
  must(c.start_computation(cvm, m), "start");

  // The algorithm signed by a hospital, a dataset by the other hospital or a stranger.
  check_error(cli::upload(c.bus(), cvm, cli::file_role::algorithm, algo, p.hospital_a.key, c.policy()),
              errc::unauthorized, "not the one the manifest declares");
  must(cli::upload(c.bus(), cvm, cli::file_role::algorithm, algo, p.algo_owner.key, c.policy()), "algo");
  must(cli::upload(c.bus(), cvm, cli::file_role::dataset, b, p.hospital_b.key, c.policy()), "data b");
  check_error(cli::upload(c.bus(), cvm, cli::file_role::dataset, a, p.hospital_b.key, c.policy()),
              errc::unauthorized, "not the one the manifest declares");
  check_error(cli::upload(c.bus(), cvm, cli::file_role::dataset, a, p.stranger.key, c.policy()),
              errc::unauthorized, "not the one the manifest declares");

  // Claiming hospital A's key without holding it: the signature does not verify.
  auto a_content = read_file(a);
  raw_upload_spec forged{.computation_id = m.id,
                         .filename = "a.txt",
                         .declared_hash = m.datasets[0].hash,
                         .declared_size = a_content.size(),
                         .chunks = {a_content},
                         .signer = &p.stranger.key,
                         .claimed_signer_der = p.hospital_a.der()};
  check_refused(raw_upload(c, cvm, forged), "chunk", errc::unauthorized, "signature does not verify");

  CHECK(pending_of(c, cvm) == std::vector<std::string>{"a.txt"});
  must(cli::upload(c.bus(), cvm, cli::file_role::dataset, a, p.hospital_a.key, c.policy()), "data a");
  check_total(c, cvm, p.consumer, "12");
}

TEST_CASE("a second upload of an accepted file is refused and the first copy stays") {
  cluster c;
  cast p(c);
  auto algo = c.make_file("sum.sh", sum_script, true);
  auto a = c.make_file("a.txt", "100\n");
  auto b = c.make_file("b.txt", "1\n");
  auto m = make_manifest("dup-1", algo, algo_type::bin, p.algo_owner,
                         {{a, &p.hospital_a}, {b, &p.hospital_b}}, {&p.consumer});
  auto cvm = c.create_cvm();
  must(c.start_computation(cvm, m), "start");
  must(cli::upload(c.bus(), cvm, cli::file_role::algorithm, algo, p.algo_owner.key, c.policy()), "algo");
  must(cli::upload(c.bus(), cvm, cli::file_role::dataset, a, p.hospital_a.key, c.policy()), "data a");

  check_error(cli::upload(c.bus(), cvm, cli::file_role::dataset, a, p.hospital_a.key, c.policy()),
              errc::already_exists, "'a.txt' was already received");
  check_error(cli::upload(c.bus(), cvm, cli::file_role::algorithm, algo, p.algo_owner.key, c.policy()),
              errc::already_exists, "already received");

  auto wd = work_dir(c, cvm);
  CHECK(read_file(wd / "datasets" / "a.txt") == "100\n");
  CHECK(fs::exists(wd / "algo"));
  CHECK(dir_empty(wd / "incoming"));
  auto st = must(cli::computation_status(c.bus(), cvm), "status");
  CHECK(st.state == "ReceivingData");
  CHECK(st.pending == std::vector<std::string>{"b.txt"});

  must(cli::upload(c.bus(), cvm, cli::file_role::dataset, b, p.hospital_b.key, c.policy()), "data b");
  check_total(c, cvm, p.consumer, "101");
}

TEST_CASE("a forged or truncated chunk fails authentication and the upload can be retried") {
  cluster c;
  cast p(c);
  auto algo = c.make_file("sum.sh", sum_script, true);
  auto a = c.make_file("a.txt", "40\n2\n");
  auto m = make_manifest("forge-1", algo, algo_type::bin, p.algo_owner, {{a, &p.hospital_a}}, {&p.consumer});
  auto cvm = c.create_cvm();
  must(c.start_computation(cvm, m), "start");
  must(cli::upload(c.bus(), cvm, cli::file_role::algorithm, algo, p.algo_owner.key, c.policy()), "algo");

  auto content = read_file(a);
  raw_upload_spec spec{.computation_id = m.id,
                       .filename = "a.txt",
                       .declared_hash = m.datasets[0].hash,
                       .declared_size = content.size(),
                       .chunks = {content.substr(0, 3), content.substr(3)},
                       .signer = &p.hospital_a.key};
  SUBCASE("a flipped ciphertext byte") {
    spec.tamper = [](uint64_t seq, bytes& cipher) {
      if (seq == 1) cipher[cipher.size() / 2] ^= 0x01;
    };
    check_refused(raw_upload(c, cvm, spec), "chunk", errc::crypto_failed, "failed authentication");
  }
  SUBCASE("a chunk from another stream") {
    // Replaces chunk 1 by one sealed under a different session key.
    spec.tamper = [](uint64_t seq, bytes& cipher) {
      if (seq != 1) return;
      auto key = crypto::secret_key::generate();
      crypto::seal_header h{};
      auto other = must(crypto::seal_stream::create(key, h), "seal");
      bytes plain(cipher.size() - crypto::seal_overhead, '0');
      must(other.push(plain, true, cipher), "push");
    };
    check_refused(raw_upload(c, cvm, spec), "chunk", errc::crypto_failed, "failed authentication");
  }
  SUBCASE("a stream cut short: the last chunk lacks the final tag") {
    // One chunk sealed without TAG_FINAL but flagged last: built by hand.
    auto agent = must(cli::attest(c.bus(), cvm, c.policy()), "attest");
    auto eph = crypto::kx_keypair::generate();
    auto statement = crypto::upload_statement(m.id, manifest_digest(m), "dataset", "a.txt",
                                              m.datasets[0].hash, agent.kx_public_key, eph.public_key);
    auto sig = must(p.hospital_a.key.sign(statement), "sign");
    auto session = must(crypto::client_session_key(eph, agent.kx_public_key), "session");
    crypto::seal_header header{};
    auto sealer = must(crypto::seal_stream::create(session, header), "seal");
    flatbuffers::FlatBufferBuilder fb(1024);
    auto begin = v1::CreateUploadBegin(
        fb, fb.CreateString(m.id), v1::FileRole::dataset, fb.CreateString("a.txt"), content.size(),
        fb.CreateVector(eph.public_key.data(), 32), fb.CreateVector(header.data(), header.size()),
        fb.CreateVector(p.hospital_a.der()));
    auto ready = must(bus::request_typed<v1::UploadReady>(c.bus(), *bus::cvm_subject(cvm, "upload"),
                                                          bus::finish(fb, begin, {}, "itest"), 10s),
                      "begin");
    bytes cipher;
    must(sealer.push({reinterpret_cast<const uint8_t*>(content.data()), content.size()}, false, cipher),
         "push");
    flatbuffers::FlatBufferBuilder cb(1024);
    auto data = cb.CreateVector(cipher);
    auto chunk = v1::CreateChunk(cb, cb.CreateString(ready.body->stream_id()->str()), 0, data, true,
                                 cb.CreateVector(m.datasets[0].hash.data(), 32), cb.CreateVector(sig));
    auto ack = bus::request_typed<v1::ChunkAck>(c.bus(), *bus::cvm_subject(cvm, "chunk"),
                                                bus::finish(cb, chunk, {}, "itest"), 10s);
    check_error(ack, errc::crypto_failed, "final tag and last flag disagree");
  }

  // Nothing half-received survives, and the honest upload goes through.
  auto wd = work_dir(c, cvm);
  CHECK(dir_empty(wd / "incoming"));
  CHECK_FALSE(fs::exists(wd / "datasets" / "a.txt"));
  CHECK(pending_of(c, cvm) == std::vector<std::string>{"a.txt"});
  must(cli::upload(c.bus(), cvm, cli::file_role::dataset, a, p.hospital_a.key, c.policy()), "retry");
  check_total(c, cvm, p.consumer, "42");
}

TEST_CASE("an oversized upload is refused at UploadBegin, and so is a stream longer than announced") {
  cluster c({"--agent-max-upload", "1024"});
  cast p(c);
  auto algo = c.make_file("sum.sh", sum_script, true);
  auto a = c.make_file("a.txt", "3\n4\n");
  auto m = make_manifest("big-1", algo, algo_type::bin, p.algo_owner, {{a, &p.hospital_a}}, {&p.consumer});
  auto cvm = c.create_cvm();
  must(c.start_computation(cvm, m), "start");
  must(cli::upload(c.bus(), cvm, cli::file_role::algorithm, algo, p.algo_owner.key, c.policy()), "algo");

  // A 4 KiB file under the declared name: the size limit is checked before anything else.
  auto big_dir = c.dir() / "big";
  fs::create_directories(big_dir);
  write_file(big_dir / "a.txt", std::string(4096, '9'));
  check_error(
      cli::upload(c.bus(), cvm, cli::file_role::dataset, big_dir / "a.txt", p.hospital_a.key, c.policy()),
      errc::too_large, "exceeds the limit of 1024 bytes");

  // Announces 2 bytes, sends 4.
  raw_upload_spec more{.computation_id = m.id,
                       .filename = "a.txt",
                       .declared_hash = m.datasets[0].hash,
                       .declared_size = 2,
                       .chunks = {"3\n", "4\n"},
                       .signer = &p.hospital_a.key};
  check_refused(raw_upload(c, cvm, more), "chunk", errc::too_large, "more bytes than announced");
  CHECK(dir_empty(work_dir(c, cvm) / "incoming"));

  CHECK(pending_of(c, cvm) == std::vector<std::string>{"a.txt"});
  must(cli::upload(c.bus(), cvm, cli::file_role::dataset, a, p.hospital_a.key, c.policy()), "data a");
  check_total(c, cvm, p.consumer, "7");
}

TEST_CASE("uploads out of order are refused with wrong_state") {
  cluster c;
  cast p(c);
  auto algo = c.make_file("sum.sh", sum_script, true);
  auto a = c.make_file("a.txt", "8\n");
  auto m = make_manifest("order-1", algo, algo_type::bin, p.algo_owner, {{a, &p.hospital_a}}, {&p.consumer});
  auto cvm = c.create_cvm();

  // A fresh CVM has no manifest: the CLI says so, and so does the agent when asked directly.
  check_error(cli::upload(c.bus(), cvm, cli::file_role::algorithm, algo, p.algo_owner.key, c.policy()),
              errc::wrong_state, "has no computation");
  raw_upload_spec early{.computation_id = m.id,
                        .role = cli::file_role::algorithm,
                        .declared_hash = m.algorithm.hash,
                        .declared_size = 1,
                        .chunks = {"x"},
                        .signer = &p.algo_owner.key};
  check_refused(raw_upload(c, cvm, early), "begin", errc::wrong_state, "no computation manifest loaded");
  CHECK(must(cli::computation_status(c.bus(), cvm), "status").state == "ReceivingManifest");

  must(c.start_computation(cvm, m), "start");
  check_error(cli::upload(c.bus(), cvm, cli::file_role::dataset, a, p.hospital_a.key, c.policy()),
              errc::wrong_state, "not accepting datasets in state ReceivingAlgorithm");
  auto st = must(cli::computation_status(c.bus(), cvm), "status");
  CHECK(st.state == "ReceivingAlgorithm");
  CHECK(st.pending == std::vector<std::string>{"algorithm", "a.txt"});

  must(cli::upload(c.bus(), cvm, cli::file_role::algorithm, algo, p.algo_owner.key, c.policy()), "algo");
  must(cli::upload(c.bus(), cvm, cli::file_role::dataset, a, p.hospital_a.key, c.policy()), "data a");
  check_total(c, cvm, p.consumer, "8");
}

TEST_CASE(
    "the CLI refuses replayed evidence, untrusted roots and unexpected measurements, and then sends "
    "nothing") {
  cluster c;
  cast p(c);
  auto algo = c.make_file("sum.sh", sum_script, true);
  auto a = c.make_file("a.txt", "2\n");
  auto m =
      make_manifest("evidence-1", algo, algo_type::bin, p.algo_owner, {{a, &p.hospital_a}}, {&p.consumer});
  auto cvm = c.create_cvm();
  must(c.start_computation(cvm, m), "start");

  // Capture genuine evidence for a nonce of our own choosing.
  std::array<uint8_t, 32> nonce{};
  crypto::random_bytes(nonce);
  flatbuffers::FlatBufferBuilder b(128);
  auto req = v1::CreateAttestationRequest(b, b.CreateVector(nonce.data(), nonce.size()));
  auto captured = must(bus::request_typed<v1::Evidence>(c.bus(), *bus::cvm_subject(cvm, "attest"),
                                                        bus::finish(b, req, {}, "itest"), 10s),
                       "capture evidence");
  bytes evidence = captured.msg.data;

  // An impostor replays it for every attestation request and counts anything else it receives.
  const std::string fake = "impostor-1";
  auto others = std::make_shared<std::atomic<int>>(0);
  bus::connection* conn = &c.bus();  // outlives the subscriptions below
  auto attest_sub = must(
      conn->subscribe(*bus::cvm_subject(fake, "attest"),
                      [conn, evidence](bus::message&& msg) { (void)conn->publish(msg.reply, evidence); }),
      "impostor attest");
  auto rest_sub = must(conn->subscribe("cove.v1.cvm." + fake + ".>",
                                       [others](bus::message&& msg) {
                                         if (!msg.subject.ends_with(".attest")) ++*others;
                                       }),
                       "impostor rest");
  must(conn->flush(5s), "flush");

  check_error(cli::attest(c.bus(), fake, c.policy()), errc::attestation_failed, "report_data");
  check_error(cli::upload(c.bus(), fake, cli::file_role::algorithm, algo, p.algo_owner.key, c.policy(), &m),
              errc::attestation_failed, "report_data");
  must(conn->flush(5s), "flush");
  CHECK(others->load() == 0);

  // The real agent, under policies it does not satisfy.
  auto no_roots = c.policy();
  no_roots.trusted_roots.clear();
  check_error(cli::attest(c.bus(), cvm, no_roots), errc::attestation_failed, "no trusted ARK configured");
  auto other_root = must(attest::generate_sim_root(), "sim root");
  auto foreign = c.policy();
  foreign.trusted_roots = {other_root.ark_pem};
  check_error(cli::attest(c.bus(), cvm, foreign), errc::attestation_failed,
              "is not one of the trusted roots");
  auto measured = c.policy();
  measured.measurements = {bytes(48, 0xab)};
  check_error(cli::attest(c.bus(), cvm, measured), errc::attestation_failed, "measurement");

  // An upload under a failing policy never leaves the CLI.
  const std::pair<const attest::snp_policy*, std::string_view> failing[] = {
      {&no_roots, "no trusted ARK"}, {&foreign, "not one of the trusted roots"}, {&measured, "measurement"}};
  for (const auto& [policy, why] : failing)
    check_error(cli::upload(c.bus(), cvm, cli::file_role::algorithm, algo, p.algo_owner.key, *policy),
                errc::attestation_failed, why);
  auto st = must(cli::computation_status(c.bus(), cvm), "status");
  CHECK(st.state == "ReceivingAlgorithm");
  CHECK(st.pending == std::vector<std::string>{"algorithm", "a.txt"});
  CHECK(dir_empty(work_dir(c, cvm) / "incoming"));

  // With the right policy everything proceeds.
  must(cli::attest(c.bus(), cvm, c.policy()), "attest");
  must(cli::upload(c.bus(), cvm, cli::file_role::algorithm, algo, p.algo_owner.key, c.policy()), "algo");
  must(cli::upload(c.bus(), cvm, cli::file_role::dataset, a, p.hospital_a.key, c.policy()), "data a");
  check_total(c, cvm, p.consumer, "2");
}
