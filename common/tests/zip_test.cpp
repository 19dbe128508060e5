#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "cove/zip.hpp"

namespace fs = std::filesystem;

namespace {

struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string tmpl = (fs::temp_directory_path() / "cove-zip-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

void write(const fs::path& p, const std::string& content, mode_t mode = 0644) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << content;
  REQUIRE(::chmod(p.c_str(), mode) == 0);
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A directory with nested files, an executable, an empty file, an empty
// directory and a non-ASCII name.
void populate(const fs::path& d) {
  write(d / "b.txt", "bee\n");
  write(d / "a" / "z.csv", "1,2,3\n");
  write(d / "a" / "run.sh", "#!/bin/sh\necho hi\n", 0755);
  write(d / "empty", "");
  write(d / "caf\xc3\xa9.txt", "accent");
  std::string big(200000, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
  write(d / "big.bin", big);
  fs::create_directories(d / "emptydir");
}

int sh(const std::string& cmd) {
  return std::system(cmd.c_str());
}

}  // namespace

TEST_CASE("crc32 matches the standard check value") {
  const std::string s = "123456789";
  CHECK(cove::crc32({reinterpret_cast<const uint8_t*>(s.data()), s.size()}) == 0xCBF43926u);
  CHECK(cove::crc32({}) == 0);
  // Incremental use gives the same value.
  auto part1 = cove::crc32({reinterpret_cast<const uint8_t*>(s.data()), 4});
  CHECK(cove::crc32({reinterpret_cast<const uint8_t*>(s.data()) + 4, 5}, part1) == 0xCBF43926u);
}

TEST_CASE("zip_directory is deterministic, sorted, and python's zipfile accepts it") {
  temp_dir src, work;
  populate(src.path);
  auto z = cove::zip_directory(src.path);
  REQUIRE_MESSAGE(z, (z ? "" : z.error().message));

  // Same bytes again, and from the streaming variant.
  auto z2 = cove::zip_directory(src.path);
  REQUIRE(z2);
  CHECK(*z2 == *z);
  const fs::path out = work.path / "out.zip";
  auto f = cove::zip_directory_to_file(src.path, out);
  REQUIRE_MESSAGE(f, (f ? "" : f.error().message));
  const std::string file_bytes = slurp(out);
  CHECK(std::vector<uint8_t>(file_bytes.begin(), file_bytes.end()) == *z);

  auto entries = cove::list_zip(out);
  REQUIRE(entries);
  std::vector<std::string> names;
  for (const auto& e : *entries) names.push_back(e.name);
  CHECK(names ==
        std::vector<std::string>{"a/run.sh", "a/z.csv", "b.txt", "big.bin", "caf\xc3\xa9.txt", "empty"});
  CHECK((*entries)[0].mode == (S_IFREG | 0755));
  CHECK((*entries)[1].mode == (S_IFREG | 0644));
  CHECK((*entries)[3].size == 200000);

  CHECK(sh("python3 -m zipfile -t '" + out.string() + "' > /dev/null") == 0);
  const fs::path listing = work.path / "listing.txt";
  CHECK(sh("python3 -m zipfile -l '" + out.string() + "' > '" + listing.string() + "'") == 0);
  const std::string l = slurp(listing);
  CHECK(l.find("a/run.sh") != std::string::npos);
  CHECK(l.find("caf\xc3\xa9.txt") != std::string::npos);
  CHECK(l.find("1980-01-01 00:00:00") != std::string::npos);
  CHECK(l.find("emptydir") == std::string::npos);
  // Python extracts the same bytes.
  const fs::path pyout = work.path / "py";
  CHECK(sh("python3 -m zipfile -e '" + out.string() + "' '" + pyout.string() + "'") == 0);
  CHECK(slurp(pyout / "big.bin") == slurp(src.path / "big.bin"));

  // Writing the archive inside the directory is refused.
  CHECK_FALSE(cove::zip_directory_to_file(src.path, src.path / "self.zip"));
}

TEST_CASE("zip round trip preserves bytes and permission bits") {
  temp_dir src, dst;
  populate(src.path);
  auto z = cove::zip_directory(src.path);
  REQUIRE(z);
  auto r = cove::extract_zip(std::span<const uint8_t>(*z), dst.path / "x");
  REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
  for (const char* name : {"b.txt", "a/z.csv", "a/run.sh", "empty", "caf\xc3\xa9.txt", "big.bin"})
    CHECK_MESSAGE(slurp(dst.path / "x" / name) == slurp(src.path / name), name);
  struct stat st {};
  REQUIRE(::stat((dst.path / "x" / "a" / "run.sh").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0755);
  // Refuses to overwrite what is already there.
  CHECK_FALSE(cove::extract_zip(std::span<const uint8_t>(*z), dst.path / "x"));
}

TEST_CASE("symlinks: inside are stored as files, escaping ones are rejected") {
  temp_dir src, outside;
  write(src.path / "real.txt", "real");
  fs::create_symlink("real.txt", src.path / "link.txt");
  fs::create_directories(src.path / "sub");
  fs::create_directory_symlink("..", src.path / "sub" / "up");  // a loop, not followed
  auto z = cove::zip_directory(src.path);
  REQUIRE_MESSAGE(z, (z ? "" : z.error().message));
  auto entries = cove::list_zip(std::span<const uint8_t>(*z));
  REQUIRE(entries);
  REQUIRE(entries->size() == 2);
  CHECK((*entries)[0].name == "link.txt");
  CHECK((*entries)[0].size == 4);

  write(outside.path / "secret", "s");
  fs::create_symlink(outside.path / "secret", src.path / "escape");
  auto bad = cove::zip_directory(src.path);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message.find("escapes") != std::string::npos);
}

TEST_CASE("the reader rejects traversal, absolute names, CRC mismatch and compression") {
  temp_dir src, dst;
  write(src.path / "aa_evil", "payload");
  auto z = cove::zip_directory(src.path);
  REQUIRE(z);
  // Rename the entry in both headers (the name is not covered by the CRC).
  auto rename = [&](const std::string& to) {
    std::vector<uint8_t> copy = *z;
    const std::string from = "aa_evil";
    for (size_t i = 0; i + from.size() <= copy.size(); ++i)
      if (std::equal(from.begin(), from.end(), copy.begin() + static_cast<std::ptrdiff_t>(i)))
        std::copy(to.begin(), to.end(), copy.begin() + static_cast<std::ptrdiff_t>(i));
    return copy;
  };
  int n = 0;
  for (const std::string to : {"../evil", "/a_evil", "a/../ev", "a\\_evil", "a//evil"}) {
    auto bad = rename(to);
    CHECK(cove::list_zip(std::span<const uint8_t>(bad)));  // structurally fine
    auto r = cove::extract_zip(std::span<const uint8_t>(bad), dst.path / std::to_string(n++));
    REQUIRE_FALSE(r);
    CHECK_MESSAGE(r.error().message.find("unsafe entry name") != std::string::npos, to);
  }
  CHECK_FALSE(fs::exists(dst.path / "evil"));

  std::vector<uint8_t> flipped = *z;
  flipped[30 + 7] ^= 0x01;  // first data byte (after the 30-byte header and the 7-byte name)
  auto r = cove::extract_zip(std::span<const uint8_t>(flipped), dst.path / "crc");
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("CRC mismatch") != std::string::npos);

  std::vector<uint8_t> deflated = *z;
  deflated[8] = 8;  // method in the local header
  CHECK_FALSE(cove::list_zip(std::span<const uint8_t>(deflated)));

  std::vector<uint8_t> truncated(z->begin(), z->end() - 5);
  CHECK_FALSE(cove::list_zip(std::span<const uint8_t>(truncated)));
  CHECK_FALSE(cove::list_zip(std::span<const uint8_t>()));
}

TEST_CASE("an empty directory gives an empty archive and a missing one an error") {
  temp_dir d;
  auto z = cove::zip_directory(d.path);
  REQUIRE(z);
  CHECK(z->size() == 22);
  auto entries = cove::list_zip(std::span<const uint8_t>(*z));
  REQUIRE(entries);
  CHECK(entries->empty());
  CHECK_FALSE(cove::zip_directory(d.path / "missing"));
}
