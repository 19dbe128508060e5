// Envelope building, verification and typed bodies.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include "cove/bus/envelope.hpp"
#include "cove/bus/subjects.hpp"
#include "envelope_samples.hpp"
#include "helpers.hpp"

using namespace cove;
using namespace cove::bus;
namespace v1 = cove::v1;

TEST_CASE("finish builds a verifiable envelope") {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = v1::CreateCvmRefDirect(fbb, "cvm-1");
  auto buf = finish(fbb, body, "corr-7", "cli");
  const auto* env = verified_envelope(buf);
  REQUIRE(env != nullptr);
  CHECK(env->schema_version() == 1);
  CHECK(env->correlation_id()->str() == "corr-7");
  CHECK(env->sender()->str() == "cli");
  CHECK(env->sent_at_ns() > 1'600'000'000'000'000'000LL);
  CHECK(env->body_type() == v1::Body::CvmRef);
  auto ref = body_as<v1::CvmRef>(buf);
  REQUIRE(ref.has_value());
  CHECK((*ref)->id()->str() == "cvm-1");
}

TEST_CASE("verified_envelope rejects malformed buffers") {
  auto good = make_ok("c", "s");
  REQUIRE(verified_envelope(good) != nullptr);

  CHECK(verified_envelope({}) == nullptr);
  std::vector<uint8_t> three{1, 2, 3};
  CHECK(verified_envelope(three) == nullptr);

  std::mt19937 rng(42);
  for (int i = 0; i < 200; ++i) {
    std::vector<uint8_t> junk(8 + rng() % 256);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    CHECK(verified_envelope(junk) == nullptr);
  }

  // Valid buffer, wrong file identifier (bytes 4..7).
  auto wrong_id = good;
  REQUIRE(std::string(wrong_id.begin() + 4, wrong_id.begin() + 8) == "COV1");
  wrong_id[7] = '2';
  CHECK(verified_envelope(wrong_id) == nullptr);

  // Truncated valid buffers (every length).
  auto err = make_error(errc::not_found, "no such cvm", "c", "s");
  for (size_t n = 0; n < err.size(); ++n) {
    std::vector<uint8_t> cut(err.begin(), err.begin() + static_cast<long>(n));
    CHECK(verified_envelope(cut) == nullptr);
  }

  // Larger than 1 MiB: rejected before the verifier looks at it.
  std::vector<uint8_t> huge(max_envelope_size + 1);
  std::copy(good.begin(), good.end(), huge.begin());
  CHECK(verified_envelope(huge) == nullptr);
}

TEST_CASE("body_as: wrong body type and Error bodies") {
  auto ok_buf = make_ok("c", "s");
  auto wrong = body_as<v1::CvmInfo>(ok_buf);
  REQUIRE_FALSE(wrong.has_value());
  CHECK(wrong.error().code == errc::invalid_request);
  CHECK(wrong.error().message == "expected CvmInfo body, got Ok");

  auto err_buf = make_error(errc::hash_mismatch, "dataset a.csv", "c", "agent.x");
  auto mapped = body_as<v1::CvmInfo>(err_buf);
  REQUIRE_FALSE(mapped.has_value());
  CHECK(mapped.error().code == errc::hash_mismatch);
  CHECK(mapped.error().message == "dataset a.csv");

  // Asking for the Error itself returns it.
  auto e = body_as<v1::Error>(err_buf);
  REQUIRE(e.has_value());
  CHECK((*e)->code() == v1::ErrorCode::hash_mismatch);

  // An error code this build does not know decodes as unknown.
  flatbuffers::FlatBufferBuilder fbb;
  auto body = v1::CreateErrorDirect(fbb, static_cast<v1::ErrorCode>(200), "future");
  auto future = finish(fbb, body, "c", "s");
  auto f = body_as<v1::Ok>(future);
  REQUIRE_FALSE(f.has_value());
  CHECK(f.error().code == errc::unknown);

  // Garbage is invalid_request, never a crash.
  std::vector<uint8_t> junk{1, 2, 3, 4, 5, 6, 7, 8, 9};
  auto g = body_as<v1::Ok>(junk);
  REQUIRE_FALSE(g.has_value());
  CHECK(g.error().code == errc::invalid_request);
}

TEST_CASE("request_as: an Error body is a wrong request, never the sender's error") {
  auto err_buf = make_error(errc::unauthorized, "chosen by the caller", "c", "cli");
  auto r = request_as<v1::CvmRef>(err_buf);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == errc::invalid_request);
  CHECK(r.error().message == "expected CvmRef body, got Error");

  flatbuffers::FlatBufferBuilder fbb;
  auto ref = v1::CreateCvmRefDirect(fbb, "cvm-1");
  auto good = finish(fbb, ref, "c", "cli");
  auto ok_ref = request_as<v1::CvmRef>(good);
  REQUIRE(ok_ref.has_value());
  CHECK((*ok_ref)->id()->str() == "cvm-1");
  auto wrong = request_as<v1::CvmInfo>(good);
  REQUIRE_FALSE(wrong.has_value());
  CHECK(wrong.error().message == "expected CvmInfo body, got CvmRef");
  std::vector<uint8_t> junk{1, 2, 3};
  CHECK(request_as<v1::CvmRef>(junk).error().code == errc::invalid_request);
}

TEST_CASE("request_typed over a real server") {
  using namespace cove::bus::testing;
  auto srv = start_server();
  auto conn = connect_to(srv);
  auto* c = conn.get();
  auto sub = conn->subscribe(std::string(subjects::manager_info), [c](message&& m) {
    auto ref = body_as<v1::CvmRef>(m.data);
    const v1::Envelope* req = verified_envelope(m.data);
    std::string cid = req != nullptr && req->correlation_id() ? req->correlation_id()->str() : "";
    if (!ref) {
      (void)c->publish(m.reply, make_error(ref.error().code, ref.error().message, cid, "test"));
      return;
    }
    if ((*ref)->id() == nullptr || (*ref)->id()->str() != "cvm-1") {
      (void)c->publish(m.reply, make_error(errc::not_found, "no such cvm", cid, "test"));
      return;
    }
    flatbuffers::FlatBufferBuilder fbb;
    auto info = v1::CreateCvmInfoDirect(fbb, "cvm-1", v1::Backend::process, v1::Tee::sim,
                                        v1::CvmState::running, 1234);
    (void)c->publish(m.reply, finish(fbb, info, cid, "test"));
  });
  REQUIRE(sub.has_value());

  auto ask = [&](const char* id) {
    flatbuffers::FlatBufferBuilder fbb;
    auto buf = finish(fbb, v1::CreateCvmRefDirect(fbb, id), "r1", "cli");
    return request_typed<v1::CvmInfo>(*conn, subjects::manager_info, buf, 5s);
  };
  auto r = ask("cvm-1");
  REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().to_string()));
  CHECK(r->body->id()->str() == "cvm-1");
  CHECK(r->body->pid() == 1234);
  auto moved = std::move(*r);  // the body stays valid after a move
  CHECK(moved.body->state() == v1::CvmState::running);

  auto missing = ask("cvm-2");
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.error().code == errc::not_found);

  std::vector<uint8_t> junk{0, 1, 2};
  auto bad = request_typed<v1::CvmInfo>(*conn, subjects::manager_info, junk, 5s);
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().code == errc::invalid_request);
}

TEST_CASE("fuzz seeds: every sample body verifies; the committed corpus is valid") {
  auto samples = testing::sample_envelopes();
  CHECK(samples.size() >= 6);
  for (const auto& sample : samples) {  // not a structured binding: INFO captures it, clang 14 cannot
    INFO(sample.first);
    CHECK(verified_envelope(sample.second) != nullptr);
  }
  std::filesystem::path dir = std::filesystem::path(COVE_SOURCE_DIR) / "bus/fuzz/corpus/envelope";
  if (std::getenv("COVE_WRITE_FUZZ_SEEDS") != nullptr) {  // regenerate the committed seeds
    std::filesystem::create_directories(dir);
    for (const auto& [name, buf] : samples)
      std::ofstream(dir / name, std::ios::binary)
          .write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(buf.size()));
  }
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::ifstream f(e.path(), std::ios::binary);
    std::vector<uint8_t> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    INFO(e.path().string());
    CHECK(verified_envelope(b) != nullptr);
    ++n;
  }
  CHECK(n >= 6);
}
