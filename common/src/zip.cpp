#include "cove/zip.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <system_error>

namespace cove {
namespace {

namespace fs = std::filesystem;

constexpr uint32_t local_sig = 0x04034b50;
constexpr uint32_t central_sig = 0x02014b50;
constexpr uint32_t eocd_sig = 0x06054b50;
constexpr uint16_t dos_time = 0;                        // 00:00:00
constexpr uint16_t dos_date = (0 << 9) | (1 << 5) | 1;  // 1980-01-01
constexpr uint16_t version_made_by = (3 << 8) | 20;     // Unix, 2.0
constexpr uint16_t version_needed = 10;                 // stored
constexpr uint16_t flag_utf8 = 0x0800;
constexpr size_t chunk = 64 * 1024;

constexpr std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr auto crc_table = make_crc_table();

// A file descriptor that closes itself.
class unique_fd {
 public:
  explicit unique_fd(int fd = -1) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~unique_fd() { reset(); }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  [[nodiscard]] int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }

 private:
  int fd_;
};

error sys_error(errc code, const std::string& what) {
  return make_error(code, what + ": " + std::strerror(errno));
}

void put16(std::vector<uint8_t>& b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v));
  b.push_back(static_cast<uint8_t>(v >> 8));
}
void put32(std::vector<uint8_t>& b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
uint16_t get16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | p[1] << 8);
}
uint32_t get32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
         static_cast<uint32_t>(p[3]) << 24;
}

// ---- writer

class sink {
 public:
  virtual ~sink() = default;
  virtual expected<void> write(std::span<const uint8_t> data) = 0;
  virtual expected<void> patch(uint64_t offset, std::span<const uint8_t> data) = 0;
  [[nodiscard]] uint64_t pos() const { return pos_; }

 protected:
  uint64_t pos_ = 0;
};

class vector_sink final : public sink {
 public:
  expected<void> write(std::span<const uint8_t> d) override {
    out_.insert(out_.end(), d.begin(), d.end());
    pos_ += d.size();
    return ok();
  }
  expected<void> patch(uint64_t off, std::span<const uint8_t> d) override {
    std::copy(d.begin(), d.end(), out_.begin() + static_cast<std::ptrdiff_t>(off));
    return ok();
  }
  std::vector<uint8_t> out_;
};

class file_sink final : public sink {
 public:
  explicit file_sink(int fd) : fd_(fd) {}
  expected<void> write(std::span<const uint8_t> d) override {
    size_t done = 0;
    while (done < d.size()) {
      ssize_t n = ::write(fd_, d.data() + done, d.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return sys_error(errc::internal, "zip: write");
      done += static_cast<size_t>(n);
    }
    pos_ += d.size();
    return ok();
  }
  expected<void> patch(uint64_t off, std::span<const uint8_t> d) override {
    ssize_t n = ::pwrite(fd_, d.data(), d.size(), static_cast<off_t>(off));
    if (n != static_cast<ssize_t>(d.size())) return sys_error(errc::internal, "zip: write");
    return ok();
  }

 private:
  int fd_;
};

struct source_file {
  std::string name;
  fs::path path;  // what to open (a symlink's resolved target)
};

bool inside(const fs::path& root, const fs::path& p) {
  auto rel = p.lexically_relative(root);
  return !rel.empty() && *rel.begin() != ".." && !rel.is_absolute();
}

expected<std::vector<source_file>> collect(const fs::path& dir, fs::path& root) {
  std::error_code ec;
  root = fs::canonical(dir, ec);
  if (ec || !fs::is_directory(root, ec))
    return make_error(errc::invalid_request, "zip: not a directory: " + dir.string());
  std::vector<source_file> files;
  fs::recursive_directory_iterator it(root, fs::directory_options::none, ec), end;
  if (ec) return make_error(errc::internal, "zip: cannot read " + dir.string() + ": " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) return make_error(errc::internal, "zip: cannot read " + dir.string() + ": " + ec.message());
    const fs::path& p = it->path();
    auto st = it->symlink_status(ec);
    if (ec) return make_error(errc::internal, "zip: cannot stat " + p.string() + ": " + ec.message());
    std::string name = p.lexically_relative(root).generic_string();
    if (fs::is_symlink(st)) {
      fs::path target = fs::weakly_canonical(p, ec);
      if (ec || !inside(root, target))
        return make_error(errc::invalid_request, "zip: symlink escapes the directory: " + name);
      auto ts = fs::status(target, ec);
      if (!ec && fs::is_regular_file(ts)) files.push_back({std::move(name), target});
      ec.clear();
    } else if (fs::is_regular_file(st)) {
      files.push_back({std::move(name), p});
    }
  }
  std::sort(files.begin(), files.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  if (files.size() > 0xFFFF) return make_error(errc::too_large, "zip: more than 65535 files");
  return files;
}

expected<void> write_zip(const fs::path& dir, sink& out) {
  fs::path root;
  auto files = collect(dir, root);
  if (!files) return std::move(files).error();
  std::vector<uint8_t> central;
  std::vector<uint8_t> hdr;
  std::vector<uint8_t> buf(chunk);
  for (const auto& f : *files) {
    if (f.name.size() > 0xFFFF) return make_error(errc::too_large, "zip: file name too long");
    unique_fd fd(::open(f.path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
    if (!fd) return sys_error(errc::internal, "zip: cannot open " + f.name);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return sys_error(errc::internal, "zip: cannot stat " + f.name);
    if (!S_ISREG(st.st_mode)) return make_error(errc::internal, "zip: not a regular file: " + f.name);
    if (static_cast<uint64_t>(st.st_size) >= 0xFFFFFFFFu)
      return make_error(errc::too_large, "zip: file larger than 4 GiB: " + f.name);
    const uint64_t offset = out.pos();
    if (offset >= 0xFFFFFFFFu) return make_error(errc::too_large, "zip: archive larger than 4 GiB");
    const auto size = static_cast<uint32_t>(st.st_size);
    const uint32_t mode = S_IFREG | (st.st_mode & 0777);
    const bool ascii = std::all_of(f.name.begin(), f.name.end(), [](char c) { return (c & 0x80) == 0; });
    const uint16_t flags = ascii ? 0 : flag_utf8;
    hdr.clear();
    put32(hdr, local_sig);
    put16(hdr, version_needed);
    put16(hdr, flags);
    put16(hdr, 0);  // stored
    put16(hdr, dos_time);
    put16(hdr, dos_date);
    put32(hdr, 0);  // crc, patched below
    put32(hdr, size);
    put32(hdr, size);
    put16(hdr, static_cast<uint16_t>(f.name.size()));
    put16(hdr, 0);  // extra
    hdr.insert(hdr.end(), f.name.begin(), f.name.end());
    if (auto r = out.write(hdr); !r) return r;
    uint32_t crc = 0;
    uint64_t copied = 0;
    for (;;) {
      ssize_t n = ::read(fd.get(), buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return sys_error(errc::internal, "zip: cannot read " + f.name);
      if (n == 0) break;
      std::span<const uint8_t> part(buf.data(), static_cast<size_t>(n));
      copied += part.size();
      if (copied > size) break;
      crc = crc32(part, crc);
      if (auto r = out.write(part); !r) return r;
    }
    if (copied != size) return make_error(errc::internal, "zip: file changed while archiving: " + f.name);
    std::vector<uint8_t> crc_bytes;
    put32(crc_bytes, crc);
    if (auto r = out.patch(offset + 14, crc_bytes); !r) return r;

    put32(central, central_sig);
    put16(central, version_made_by);
    put16(central, version_needed);
    put16(central, flags);
    put16(central, 0);
    put16(central, dos_time);
    put16(central, dos_date);
    put32(central, crc);
    put32(central, size);
    put32(central, size);
    put16(central, static_cast<uint16_t>(f.name.size()));
    put16(central, 0);  // extra
    put16(central, 0);  // comment
    put16(central, 0);  // disk
    put16(central, 0);  // internal attributes
    put32(central, mode << 16);
    put32(central, static_cast<uint32_t>(offset));
    central.insert(central.end(), f.name.begin(), f.name.end());
  }
  const uint64_t cd_offset = out.pos();
  if (cd_offset + central.size() >= 0xFFFFFFFFu)
    return make_error(errc::too_large, "zip: archive larger than 4 GiB");
  std::vector<uint8_t> eocd;
  put32(eocd, eocd_sig);
  put16(eocd, 0);
  put16(eocd, 0);
  put16(eocd, static_cast<uint16_t>(files->size()));
  put16(eocd, static_cast<uint16_t>(files->size()));
  put32(eocd, static_cast<uint32_t>(central.size()));
  put32(eocd, static_cast<uint32_t>(cd_offset));
  put16(eocd, 0);
  if (auto r = out.write(central); !r) return r;
  return out.write(eocd);
}

// ---- reader

struct parsed_entry {
  zip_entry info;
  uint64_t header_offset = 0;
  uint64_t data_offset = 0;
};

error corrupt(const std::string& what) {
  return make_error(errc::invalid_request, "zip: " + what);
}

expected<std::vector<parsed_entry>> parse(std::span<const uint8_t> z) {
  if (z.size() < 22) return corrupt("too short");
  // The end-of-central-directory record, possibly followed by a comment.
  std::optional<size_t> eocd;
  const size_t lowest = z.size() >= 22 + 0xFFFF ? z.size() - 22 - 0xFFFF : 0;
  for (size_t i = z.size() - 22 + 1; i-- > lowest;) {
    if (get32(&z[i]) == eocd_sig && i + 22 + get16(&z[i + 20]) == z.size()) {
      eocd = i;
      break;
    }
  }
  if (!eocd) return corrupt("no end of central directory");
  const uint8_t* e = &z[*eocd];
  const uint16_t count = get16(e + 10);
  const uint32_t cd_size = get32(e + 12), cd_off = get32(e + 16);
  if (get16(e + 4) != 0 || get16(e + 6) != 0 || get16(e + 8) != count)
    return corrupt("multi-disk archives are not supported");
  if (cd_off == 0xFFFFFFFFu || count == 0xFFFF) return corrupt("zip64 is not supported");
  if (static_cast<uint64_t>(cd_off) + cd_size > *eocd) return corrupt("central directory out of bounds");
  std::vector<parsed_entry> out;
  out.reserve(count);
  size_t p = cd_off;
  const size_t cd_end = static_cast<size_t>(cd_off) + cd_size;
  for (uint16_t i = 0; i < count; ++i) {
    if (p + 46 > cd_end || get32(&z[p]) != central_sig) return corrupt("bad central directory entry");
    const uint8_t* c = &z[p];
    const uint16_t made_by = get16(c + 4), flags = get16(c + 8), method = get16(c + 10);
    const uint32_t crc = get32(c + 16), csize = get32(c + 20), usize = get32(c + 24);
    const uint16_t nlen = get16(c + 28), xlen = get16(c + 30), clen = get16(c + 32);
    const uint32_t ext = get32(c + 38), lho = get32(c + 42);
    if (p + 46 + nlen + xlen + clen > cd_end) return corrupt("bad central directory entry");
    parsed_entry pe;
    pe.info.name.assign(reinterpret_cast<const char*>(c + 46), nlen);
    if (flags & 0x1) return corrupt("encrypted entries are not supported: " + pe.info.name);
    if (method != 0) return corrupt("only stored (uncompressed) entries are supported: " + pe.info.name);
    if (csize != usize) return corrupt("size mismatch: " + pe.info.name);
    if (csize == 0xFFFFFFFFu || lho == 0xFFFFFFFFu) return corrupt("zip64 is not supported");
    pe.info.size = usize;
    pe.info.crc = crc;
    pe.info.mode = (made_by >> 8) == 3 ? ext >> 16 : 0;
    pe.header_offset = lho;
    if (static_cast<uint64_t>(lho) + 30 > cd_off || get32(&z[lho]) != local_sig)
      return corrupt("bad local header: " + pe.info.name);
    const uint8_t* l = &z[lho];
    const uint16_t lnlen = get16(l + 26), lxlen = get16(l + 28);
    pe.data_offset = static_cast<uint64_t>(lho) + 30 + lnlen + lxlen;
    if (pe.data_offset + usize > cd_off) return corrupt("entry out of bounds: " + pe.info.name);
    if (get16(l + 8) != 0 || lnlen != nlen || std::memcmp(l + 30, c + 46, nlen) != 0)
      return corrupt("local header does not match the central directory: " + pe.info.name);
    out.push_back(std::move(pe));
    p += 46 + nlen + xlen + clen;
  }
  // Entries must not overlap (stops "overlapping entries" zip bombs).
  std::vector<const parsed_entry*> by_off;
  for (const auto& pe : out) by_off.push_back(&pe);
  std::sort(by_off.begin(), by_off.end(),
            [](const auto* a, const auto* b) { return a->header_offset < b->header_offset; });
  for (size_t i = 1; i < by_off.size(); ++i)
    if (by_off[i]->header_offset < by_off[i - 1]->data_offset + by_off[i - 1]->info.size)
      return corrupt("overlapping entries");
  return out;
}

expected<std::vector<uint8_t>> read_file(const fs::path& path) {
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return sys_error(errc::not_found, "zip: cannot open " + path.string());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
    return make_error(errc::invalid_request, "zip: not a regular file: " + path.string());
  std::vector<uint8_t> data(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::read(fd.get(), data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error(errc::internal, "zip: cannot read " + path.string());
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  data.resize(done);
  return data;
}

// Splits a zip entry name into safe components; nullopt if it could escape.
std::optional<std::vector<std::string>> safe_components(const std::string& name, bool& is_dir) {
  if (name.empty() || name.front() == '/' || name.find('\\') != std::string::npos ||
      name.find('\0') != std::string::npos)
    return std::nullopt;
  is_dir = name.back() == '/';
  std::vector<std::string> parts;
  size_t start = 0;
  const size_t stop = is_dir ? name.size() - 1 : name.size();
  while (start <= stop) {
    size_t slash = name.find('/', start);
    if (slash == std::string::npos || slash > stop) slash = stop;
    std::string part = name.substr(start, slash - start);
    if (part.empty() || part == "." || part == "..") return std::nullopt;
    parts.push_back(std::move(part));
    start = slash + 1;
  }
  return parts;
}

}  // namespace

uint32_t crc32(std::span<const uint8_t> data, uint32_t crc) noexcept {
  crc = ~crc;
  for (uint8_t b : data) crc = crc_table[(crc ^ b) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

expected<std::vector<uint8_t>> zip_directory(const fs::path& dir) {
  vector_sink s;
  if (auto r = write_zip(dir, s); !r) return std::move(r).error();
  return std::move(s.out_);
}

expected<void> zip_directory_to_file(const fs::path& dir, const fs::path& out) {
  std::error_code ec;
  auto root = fs::canonical(dir, ec);
  if (!ec && inside(root, fs::weakly_canonical(fs::absolute(out), ec)))
    return make_error(errc::invalid_request, "zip: the archive must not be inside the directory");
  unique_fd fd(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return sys_error(errc::internal, "zip: cannot create " + out.string());
  file_sink s(fd.get());
  auto r = write_zip(dir, s);
  if (r && ::fsync(fd.get()) != 0 && errno != EINVAL) return sys_error(errc::internal, "zip: fsync");
  return r;
}

expected<std::vector<zip_entry>> list_zip(std::span<const uint8_t> zip) {
  auto entries = parse(zip);
  if (!entries) return std::move(entries).error();
  std::vector<zip_entry> out;
  out.reserve(entries->size());
  for (auto& e : *entries) out.push_back(std::move(e.info));
  return out;
}

expected<std::vector<zip_entry>> list_zip(const fs::path& zip) {
  auto data = read_file(zip);
  if (!data) return std::move(data).error();
  return list_zip(std::span<const uint8_t>(*data));
}

expected<void> extract_zip(std::span<const uint8_t> zip, const fs::path& dest) {
  auto entries = parse(zip);
  if (!entries) return std::move(entries).error();
  std::error_code ec;
  fs::create_directories(dest, ec);
  if (ec) return make_error(errc::internal, "zip: cannot create " + dest.string() + ": " + ec.message());
  unique_fd root(::open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root) return sys_error(errc::internal, "zip: cannot open " + dest.string());
  for (const auto& e : *entries) {
    bool is_dir = false;
    auto parts = safe_components(e.info.name, is_dir);
    if (!parts) return corrupt("unsafe entry name: " + e.info.name);
    const uint32_t type = e.info.mode & S_IFMT;
    if (type != 0 && type != S_IFREG && type != S_IFDIR)
      return corrupt("only files and directories are supported: " + e.info.name);
    auto data = zip.subspan(e.data_offset, e.info.size);
    if (!is_dir && crc32(data) != e.info.crc) return corrupt("CRC mismatch: " + e.info.name);
    // Walk down with openat(O_NOFOLLOW) so that no symlink is ever followed.
    unique_fd dir(::dup(root.get()));
    if (!dir) return sys_error(errc::internal, "zip: dup");
    const size_t ndirs = is_dir ? parts->size() : parts->size() - 1;
    for (size_t i = 0; i < ndirs; ++i) {
      const char* comp = (*parts)[i].c_str();
      if (::mkdirat(dir.get(), comp, 0755) != 0 && errno != EEXIST)
        return sys_error(errc::internal, "zip: cannot create directory for " + e.info.name);
      unique_fd next(::openat(dir.get(), comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!next) return sys_error(errc::invalid_request, "zip: cannot enter directory for " + e.info.name);
      dir = std::move(next);
    }
    if (is_dir) continue;
    unique_fd out(::openat(dir.get(), parts->back().c_str(),
                           O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!out) return sys_error(errc::invalid_request, "zip: cannot create " + e.info.name);
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::write(out.get(), data.data() + done, data.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return sys_error(errc::internal, "zip: cannot write " + e.info.name);
      done += static_cast<size_t>(n);
    }
    const mode_t perms = e.info.mode != 0 ? (e.info.mode & 0777) : 0644;
    if (::fchmod(out.get(), perms) != 0) return sys_error(errc::internal, "zip: chmod " + e.info.name);
  }
  return ok();
}

expected<void> extract_zip(const fs::path& zip, const fs::path& dest) {
  auto data = read_file(zip);
  if (!data) return std::move(data).error();
  return extract_zip(std::span<const uint8_t>(*data), dest);
}

}  // namespace cove
