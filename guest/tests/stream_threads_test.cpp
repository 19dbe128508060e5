// The agent's per-stream threads: file_writer (hashes and stores an upload) and
// sealed_reader (reads and seals a result ahead of the requests).
#include <doctest/doctest.h>
#include <sodium.h>
#include <stdlib.h>

#include <fstream>

#include "cove/agent/file_writer.hpp"
#include "cove/agent/sealed_reader.hpp"
#include "cove/crypto/encoding.hpp"
#include "cove/crypto/hash.hpp"
#include "cove/crypto/seal.hpp"

namespace fs = std::filesystem;
using cove::errc;
using cove::agent::file_writer;
using cove::agent::sealed_reader;
namespace crypto = cove::crypto;

namespace {

struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string tmpl = (fs::temp_directory_path() / "cove-streams-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::vector<uint8_t> random_payload(size_t n) {
  std::vector<uint8_t> v(n);
  crypto::random_bytes(v);
  return v;
}

std::vector<uint8_t> read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("file_writer with sha3 stores every buffer in order and hashes exactly those bytes") {
  REQUIRE(sodium_init() >= 0);
  temp_dir d;
  auto data = random_payload(10 * 4096 + 123);
  file_writer w;
  REQUIRE(w.open(d.path / "f.part", 2, /*sha3=*/true));
  // Uneven pieces, more than the queue depth, through recycled buffers.
  for (size_t off = 0; off < data.size();) {
    size_t n = std::min<size_t>(data.size() - off, 3000 + off % 1777);
    auto buf = w.take_buffer();
    buf.assign(data.begin() + static_cast<std::ptrdiff_t>(off),
               data.begin() + static_cast<std::ptrdiff_t>(off + n));
    REQUIRE(w.write(std::move(buf)));
    off += n;
  }
  REQUIRE(w.finish());
  REQUIRE(w.digest().has_value());
  CHECK(*w.digest() == crypto::sha3_256_of(data));
  CHECK(read_all(d.path / "f.part") == data);
}

TEST_CASE("file_writer without sha3 has no digest; a failed open says why") {
  temp_dir d;
  file_writer w;
  REQUIRE(w.open(d.path / "g.part"));
  REQUIRE(w.write(std::vector<uint8_t>{1, 2, 3}));
  REQUIRE(w.finish());
  CHECK_FALSE(w.digest().has_value());
  file_writer bad;
  auto r = bad.open(d.path / "missing-dir" / "x.part", 4, true);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("cannot create the upload file") != std::string::npos);
}

TEST_CASE("sealed_reader seals a file ahead, in order, with the final tag on the last chunk") {
  REQUIRE(sodium_init() >= 0);
  temp_dir d;
  const size_t chunk = 1000;
  for (size_t size : {size_t{0}, size_t{999}, size_t{1000}, size_t{9 * 1000 + 1}}) {
    CAPTURE(size);
    auto data = random_payload(size);
    {
      std::ofstream out(d.path / "r.bin", std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    }
    auto key = crypto::secret_key::generate();
    crypto::seal_header header{};
    auto sealer = crypto::seal_stream::create(key, header);
    REQUIRE(sealer);
    uint64_t chunks = size == 0 ? 1 : (size + chunk - 1) / chunk;
    sealed_reader r;
    REQUIRE(r.open(d.path / "r.bin", std::move(*sealer), chunks, chunk, 2));
    auto opener = crypto::open_stream::create(key, header);
    REQUIRE(opener);
    std::vector<uint8_t> got, plain;
    for (uint64_t seq = 0; seq < chunks; ++seq) {
      auto c = r.next();
      REQUIRE(c);
      bool final = false;
      REQUIRE(opener->pull(*c, plain, final));
      CHECK(final == (seq + 1 == chunks));
      got.insert(got.end(), plain.begin(), plain.end());
      r.recycle(std::move(*c));
    }
    CHECK(got == data);
    auto after = r.next();  // nothing more: an error, not a wait
    REQUIRE_FALSE(after);
    CHECK(after.error().code == errc::wrong_state);
  }
}

TEST_CASE("sealed_reader reports a file shorter than announced and a missing file") {
  REQUIRE(sodium_init() >= 0);
  temp_dir d;
  {
    std::ofstream out(d.path / "short.bin", std::ios::binary);
    out << "only a few bytes";
  }
  auto key = crypto::secret_key::generate();
  crypto::seal_header header{};
  auto sealer = crypto::seal_stream::create(key, header);
  REQUIRE(sealer);
  sealed_reader r;
  REQUIRE(r.open(d.path / "short.bin", std::move(*sealer), 4, 8));  // 4 chunks announced, 2 there
  REQUIRE(r.next());                                                // bytes 0..7
  REQUIRE(r.next());                                                // bytes 8..15
  auto third = r.next();
  REQUIRE_FALSE(third);
  CHECK(third.error().code == errc::internal);
  CHECK(third.error().message.find("shorter than announced") != std::string::npos);

  auto sealer2 = crypto::seal_stream::create(key, header);
  REQUIRE(sealer2);
  sealed_reader missing;
  auto o = missing.open(d.path / "nope.bin", std::move(*sealer2), 1, 8);
  REQUIRE_FALSE(o);
  CHECK(o.error().message.find("cannot open the file") != std::string::npos);
}

TEST_CASE("sealed_reader stops cleanly with unread chunks waiting") {
  REQUIRE(sodium_init() >= 0);
  temp_dir d;
  auto data = random_payload(64 * 1000);
  {
    std::ofstream out(d.path / "big.bin", std::ios::binary);
    out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  }
  auto key = crypto::secret_key::generate();
  crypto::seal_header header{};
  auto sealer = crypto::seal_stream::create(key, header);
  REQUIRE(sealer);
  auto r = std::make_unique<sealed_reader>();
  REQUIRE(r->open(d.path / "big.bin", std::move(*sealer), 64, 1000, 2));
  REQUIRE(r->next());
  r.reset();  // the thread is blocked on the full queue: the destructor must wake and join it
  CHECK(r == nullptr);
}
