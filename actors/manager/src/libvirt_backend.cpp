#include "cove/manager/libvirt_backend.hpp"

#include <grp.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "cove/c_handle.hpp"
#include "cove/crypto/encoding.hpp"
#include "cove/manager/launch_measurement.hpp"

namespace cove::manager {

namespace fs = std::filesystem;

namespace {

using conn_handle = c_handle<virConnect, virConnectClose>;
using domain_handle = c_handle<virDomain, virDomainFree>;

virConnectPtr as_conn(void* p) {
  return static_cast<virConnectPtr>(p);
}

/// A reference to the connection of our own (virConnectRef); take it under the
/// backend's mu_. The calls made with it after the lock is released survive a
/// concurrent shutdown(), which closes the backend's reference: libvirt frees the
/// connection with the last one. Empty when there is no connection.
conn_handle ref_conn(void* conn) {
  if (conn == nullptr || virConnectRef(as_conn(conn)) < 0) return {};
  return conn_handle(as_conn(conn));
}

std::string last_error() {
  const char* m = virGetLastErrorMessage();
  return m != nullptr ? m : "unknown libvirt error";
}

/// libvirt prints every error to stderr unless told otherwise; errors are read
/// from virGetLastErrorMessage() where they happen.
void quiet(void* /*opaque*/, virErrorPtr /*err*/) {}

/// The default event loop is process-wide and must be registered before the first
/// connection that wants events.
void init_libvirt_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    virInitialize();
    virSetErrorFunc(nullptr, quiet);
    virEventRegisterDefaultImpl();
  });
}

}  // namespace

/// libvirt's default event loop is process-wide and only one thread may run it:
/// every backend of the process shares this one thread, which stops when the last
/// backend lets go.
class libvirt_event_loop {
 public:
  static std::shared_ptr<libvirt_event_loop> acquire() {
    std::lock_guard lock(mu());
    if (auto p = current().lock()) return p;
    std::shared_ptr<libvirt_event_loop> p(new libvirt_event_loop, [](libvirt_event_loop* l) {
      std::lock_guard lock(mu());  // no second loop starts while this one stops
      delete l;
    });
    current() = p;
    return p;
  }
  libvirt_event_loop(const libvirt_event_loop&) = delete;
  libvirt_event_loop& operator=(const libvirt_event_loop&) = delete;
  ~libvirt_event_loop() {
    stop_ = true;
    // Wake the loop: a timer that fires at once.
    if (virEventAddTimeout(
            0, [](int t, void*) { virEventRemoveTimeout(t); }, nullptr, nullptr) < 0)
      spdlog::warn("libvirt: cannot wake the event loop");
    thread_.join();
  }

 private:
  libvirt_event_loop() {
    init_libvirt_once();
    thread_ = std::thread([this] {
      while (!stop_.load())
        if (virEventRunDefaultImpl() < 0) spdlog::warn("libvirt event loop: {}", last_error());
    });
  }
  static std::mutex& mu() {
    static std::mutex m;
    return m;
  }
  static std::weak_ptr<libvirt_event_loop>& current() {
    static std::weak_ptr<libvirt_event_loop> w;
    return w;
  }
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && s[i] == ' ') ++i;
  return s.substr(i);
}

/// The last `max_bytes` of a file.
std::string tail_bytes(const fs::path& p, size_t max_bytes) {
  std::ifstream f(p, std::ios::binary | std::ios::ate);
  if (!f) return {};
  auto size = static_cast<size_t>(f.tellg());
  size_t from = size > max_bytes ? size - max_bytes : 0;
  f.seekg(static_cast<std::streamoff>(from));
  std::string s(size - from, '\0');
  f.read(s.data(), static_cast<std::streamsize>(s.size()));
  s.resize(static_cast<size_t>(f.gcount()));
  return s;
}

/// The console's last `lines` non-empty lines, printable ASCII only, joined by " | ".
std::string console_tail(const fs::path& log, size_t lines) {
  auto text = tail_bytes(log, 4096);
  std::vector<std::string> all;
  std::string cur;
  for (char c : text) {
    if (c == '\n') {
      if (!trim(cur).empty()) all.push_back(trim(cur));
      cur.clear();
    } else if (c >= 0x20 && c < 0x7f) {
      cur += c;
    }
  }
  if (!trim(cur).empty()) all.push_back(trim(cur));
  if (all.size() > lines) all.erase(all.begin(), all.end() - static_cast<std::ptrdiff_t>(lines));
  std::string out;
  for (const auto& l : all) out += (out.empty() ? "" : " | ") + l;
  return out.empty() ? "(empty)" : out;
}

/// "EOS: agent exited with N" (eos/init) in the console's last 64 KiB, or -1.
int agent_exit_code(const fs::path& log) {
  auto text = tail_bytes(log, 65536);
  constexpr std::string_view marker = "EOS: agent exited with ";
  auto at = text.rfind(marker);
  if (at == std::string::npos) return -1;
  int n = 0;
  size_t i = at + marker.size(), digits = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9' && digits < 4)
    n = n * 10 + (text[i++] - '0'), ++digits;
  return digits == 0 ? -1 : std::min(n, 255);
}

std::string stop_reason(int detail) {
  switch (detail) {
    case VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN:
      return "the guest powered off";
    case VIR_DOMAIN_EVENT_STOPPED_DESTROYED:
      return "the domain was destroyed";
    case VIR_DOMAIN_EVENT_STOPPED_CRASHED:
      return "the guest crashed";
    case VIR_DOMAIN_EVENT_STOPPED_FAILED:
      return "QEMU failed or was killed";
    default:
      return fmt::format("the domain stopped (libvirt reason {})", detail);
  }
}

std::string domain_state_name(unsigned char s) {
  switch (s) {
    case VIR_DOMAIN_RUNNING:
      return "running";
    case VIR_DOMAIN_BLOCKED:
      return "blocked";
    case VIR_DOMAIN_PAUSED:
      return "paused";
    case VIR_DOMAIN_SHUTDOWN:
      return "shutting-down";
    case VIR_DOMAIN_SHUTOFF:
      return "shutoff";
    case VIR_DOMAIN_CRASHED:
      return "crashed";
    case VIR_DOMAIN_PMSUSPENDED:
      return "suspended";
    default:
      return "unknown";
  }
}

std::string random_uuid() {
  std::array<uint8_t, 16> b{};
  crypto::random_bytes(b);
  b[6] = static_cast<uint8_t>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<uint8_t>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
  auto h = crypto::to_hex(b);
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) + "-" +
         h.substr(20);
}

// ---- POSIX ACLs: search permission for QEMU's user on the CVM's directories ------
//
// The state dir is 0700 (root). QEMU runs as libvirt-qemu and must reach each CVM's
// share, so the directories on the way get an ACL entry u:<qemu>:--x (search only:
// no listing, nothing else readable). system.posix_acl_access is the kernel's
// little-endian format: a u32 version (2), then {u16 tag, u16 perm, u32 id} entries
// sorted by tag, then id.

constexpr uint16_t acl_user_obj = 0x01, acl_user = 0x02, acl_group_obj = 0x04, acl_group = 0x08,
                   acl_mask = 0x10, acl_other = 0x20;
constexpr uint32_t acl_undefined_id = 0xffffffffu;

struct acl_entry {
  uint16_t tag;
  uint16_t perm;
  uint32_t id;
};

uint32_t le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

}  // namespace

expected<void> grant_search(const fs::path& dir, uid_t uid) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0)
    return make_error(errc::internal, fmt::format("stat {}: {}", dir.string(), std::strerror(errno)));
  if ((st.st_mode & S_IXOTH) != 0 || (st.st_uid == uid && (st.st_mode & S_IXUSR) != 0)) return ok();
  std::vector<acl_entry> entries;
  std::array<uint8_t, 1024> buf{};
  ssize_t n = ::getxattr(dir.c_str(), "system.posix_acl_access", buf.data(), buf.size());
  if (n >= 4 && le32(buf.data()) == 2 && (n - 4) % 8 == 0) {
    for (ssize_t i = 4; i < n; i += 8) {
      const uint8_t* p = buf.data() + i;
      entries.push_back(
          {static_cast<uint16_t>(p[0] | p[1] << 8), static_cast<uint16_t>(p[2] | p[3] << 8), le32(p + 4)});
    }
  } else {
    entries = {{acl_user_obj, static_cast<uint16_t>((st.st_mode >> 6) & 7), acl_undefined_id},
               {acl_group_obj, static_cast<uint16_t>((st.st_mode >> 3) & 7), acl_undefined_id},
               {acl_other, static_cast<uint16_t>(st.st_mode & 7), acl_undefined_id}};
  }
  bool found = false;
  for (auto& e : entries)
    if (e.tag == acl_user && e.id == uid) {
      e.perm |= 1;
      found = true;
    }
  if (!found) entries.push_back({acl_user, 1, uid});
  // The mask bounds every group-class entry: the union of them (what setfacl does).
  uint16_t mask = 0;
  for (const auto& e : entries)
    if (e.tag == acl_user || e.tag == acl_group_obj || e.tag == acl_group) mask |= e.perm;
  std::erase_if(entries, [](const acl_entry& e) { return e.tag == acl_mask; });
  entries.push_back({acl_mask, mask, acl_undefined_id});
  std::sort(entries.begin(), entries.end(), [](const acl_entry& a, const acl_entry& b) {
    return a.tag != b.tag ? a.tag < b.tag : a.id < b.id;
  });
  std::vector<uint8_t> out = {2, 0, 0, 0};
  for (const auto& e : entries) {
    out.insert(out.end(), {static_cast<uint8_t>(e.tag), static_cast<uint8_t>(e.tag >> 8),
                           static_cast<uint8_t>(e.perm), static_cast<uint8_t>(e.perm >> 8),
                           static_cast<uint8_t>(e.id), static_cast<uint8_t>(e.id >> 8),
                           static_cast<uint8_t>(e.id >> 16), static_cast<uint8_t>(e.id >> 24)});
  }
  if (::setxattr(dir.c_str(), "system.posix_acl_access", out.data(), out.size(), 0) != 0)
    return make_error(errc::internal, fmt::format("cannot let QEMU's user search {} (POSIX ACL): {}",
                                                  dir.string(), std::strerror(errno)));
  return ok();
}

bool searchable_by(const fs::path& dir, uid_t uid, gid_t gid) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return false;
  if (uid == 0) return true;
  if (st.st_uid == uid) return (st.st_mode & S_IXUSR) != 0;
  if (st.st_gid == gid && (st.st_mode & S_IXGRP) != 0) return true;
  if ((st.st_mode & S_IXOTH) != 0) return true;
  // A named-user ACL entry (with the mask) would do too.
  std::array<uint8_t, 1024> buf{};
  ssize_t n = ::getxattr(dir.c_str(), "system.posix_acl_access", buf.data(), buf.size());
  if (n < 4 || le32(buf.data()) != 2) return false;
  bool user_x = false, mask_x = true;
  for (ssize_t i = 4; i + 8 <= n; i += 8) {
    const uint8_t* p = buf.data() + i;
    uint16_t tag = static_cast<uint16_t>(p[0] | p[1] << 8), perm = static_cast<uint16_t>(p[2] | p[3] << 8);
    if (tag == acl_user && le32(p + 4) == uid) user_x = (perm & 1) != 0;
    if (tag == acl_mask) mask_x = (perm & 1) != 0;
  }
  return user_x && mask_x;
}

namespace {

expected<void> write_file(const fs::path& p, std::string_view content) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << content;
  f.close();
  if (!f) return make_error(errc::internal, "cannot write " + p.string());
  return ok();
}

}  // namespace

expected<void> check_image_dir(const fs::path& dir) {
  for (const char* f : {"vmlinuz", "initrd.img", "cmdline"})
    if (!fs::is_regular_file(dir / f))
      return make_error(errc::invalid_request,
                        fmt::format("EOS image: {} missing (build it with ./cove.sh eos, or point coved's "
                                    "--eos-dir at an eos/build.sh output)",
                                    (dir / f).string()));
  return ok();
}

std::string guest_view_of(const std::string& address) {
  // Accepts HOST:PORT and scheme://HOST:PORT.
  auto scheme_end = address.find("://");
  size_t host_at = scheme_end == std::string::npos ? 0 : scheme_end + 3;
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon < host_at) return address;
  auto host = address.substr(host_at, colon - host_at);
  if (host == "127.0.0.1" || host == "localhost" || host == "0.0.0.0" || host == "[::1]" || host == "[::]" ||
      host.empty())
    return address.substr(0, host_at) + "10.0.2.2" + address.substr(colon);
  return address;
}

libvirt_backend::libvirt_backend(libvirt_config cfg, exit_callback on_exit)
    : cfg_(std::move(cfg)), on_exit_(std::move(on_exit)) {
  std::error_code ec;
  if (!cfg_.state_dir.empty()) cfg_.state_dir = fs::weakly_canonical(fs::absolute(cfg_.state_dir), ec);
}

libvirt_backend::~libvirt_backend() {
  shutdown();
}

expected<void> libvirt_backend::connect_locked() {
  if (conn_ != nullptr) return ok();
  if (shut_down_) return make_error(errc::unavailable, "libvirt backend: shutting down");
  auto loop = libvirt_event_loop::acquire();  // before the connection: it delivers its events
  conn_handle conn(virConnectOpen(cfg_.uri.c_str()));
  if (!conn)
    return make_error(
        errc::unavailable,
        fmt::format("libvirt: cannot connect to {}: {} (is libvirtd running? deploy/libvirtd.sh "
                    "starts it)",
                    cfg_.uri, last_error()));
  auto cb = [](virConnectPtr, virDomainPtr dom, int event, int detail, void* opaque) -> int {
    if (event != VIR_DOMAIN_EVENT_STOPPED) return 0;
    const char* name = virDomainGetName(dom);
    if (name != nullptr) static_cast<libvirt_backend*>(opaque)->on_stopped(name, detail);
    return 0;
  };
  int id = virConnectDomainEventRegisterAny(conn.get(), nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                            VIR_DOMAIN_EVENT_CALLBACK(+cb), this, nullptr);
  if (id < 0)
    return make_error(errc::internal, "libvirt: cannot subscribe to lifecycle events: " + last_error());
  callback_id_ = id;
  loop_ = std::move(loop);
  // Dead-peer detection (needs the event loop): 5 s interval, 3 missed → closed.
  if (virConnectSetKeepAlive(conn.get(), 5, 3) < 0) spdlog::debug("libvirt keepalive: {}", last_error());
  conn_ = conn.release();
  spdlog::info("libvirt: connected to {}", cfg_.uri);
  return ok();
}

expected<libvirt_backend::staged_boot> libvirt_backend::stage_image() {
  std::lock_guard lock(image_mu_);
  const fs::path dir = cfg_.state_dir / "eos";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return make_error(errc::internal, "cannot create " + dir.string() + ": " + ec.message());
  fs::permissions(dir, fs::perms(0711), ec);
  // The PVH vmlinux with qboot when both are there: under TCG the bzImage's xz
  // decompressor and SeaBIOS's POST cost seconds. SeaBIOS cannot boot vmlinux here:
  // QEMU's PVH loader places the initrd 160 KiB below the top of RAM, and with a TPM
  // SeaBIOS's ACPI tables (and TPM log) reach lower, so the initrd overwrites them
  // ("ACPI Error: Resize of Root Table Array", dead virtio devices). qboot puts the
  // tables below 1 MiB. docs/performance.md, launch.
  const bool pvh = !cfg_.pvh_firmware.empty() && fs::exists(cfg_.image_dir / "vmlinux", ec) &&
                   fs::exists(cfg_.pvh_firmware, ec);
  const char* kernel = pvh ? "vmlinux" : "vmlinuz";
  for (const char* name : {kernel, "initrd.img"}) {
    const fs::path from = cfg_.image_dir / name, to = dir / name;
    auto size = fs::file_size(from, ec);
    if (ec) return make_error(errc::invalid_request, "EOS image: " + from.string() + ": " + ec.message());
    auto mtime = fs::last_write_time(from, ec);
    std::error_code ec2, ec3;
    if (fs::file_size(to, ec2) == size && fs::last_write_time(to, ec3) == mtime && !ec2 && !ec3) continue;
    const fs::path tmp = dir / (std::string(name) + ".tmp");
    fs::copy_file(from, tmp, fs::copy_options::overwrite_existing, ec);
    if (!ec) fs::last_write_time(tmp, mtime, ec);
    if (!ec) fs::permissions(tmp, fs::perms(0644), ec);
    if (!ec) fs::rename(tmp, to, ec);
    if (ec)
      return make_error(errc::internal,
                        "cannot stage " + from.string() + " in " + dir.string() + ": " + ec.message());
    spdlog::info("libvirt: staged {} ({} bytes) in {}", from.string(), size, dir.string());
  }
  return staged_boot{dir / kernel, dir / "initrd.img", pvh};
}

expected<pid_t> libvirt_backend::launch(const agent_launch& l) {
  if (auto img = check_image_dir(cfg_.image_dir); !img) return img.error();
  auto boot = stage_image();
  if (!boot) return boot.error();
  const fs::path share = l.dir / "config";
  std::error_code ec;
  fs::create_directories(share / "sim", ec);
  if (ec) return make_error(errc::internal, "cannot create " + share.string() + ": " + ec.message());

  // agent.conf: parsed (never sourced) by eos/init; see eos/README.md.
  std::string args = "--sim-dir /config/sim";
  if (l.max_upload_bytes > 0) args += fmt::format(" --max-upload {}", l.max_upload_bytes);
  if (l.heartbeat_interval_ms > 0) args += fmt::format(" --heartbeat-interval {}", l.heartbeat_interval_ms);
  if (!cfg_.guest_vtpm_tcti.empty()) args += " --vtpm " + cfg_.guest_vtpm_tcti;
  if (l.cocos_grpc_port != 0)
    args += fmt::format(" --grpc-listen 0.0.0.0:{} --grpc-tls {}", cocos_guest_port, l.cocos_grpc_tls);
  std::string conf = "# written by coved for " + l.cvm_id + "\nCVM_ID=" + l.cvm_id +
                     "\nLOG_LEVEL=" + l.log_level + "\nWORK_DIR=/var/lib/cove/work\nNET=static\n";
  if (!l.bridge_address.empty()) {
    conf += "BRIDGE=" + guest_view_of(l.bridge_address) + "\n";
    fs::copy_file(l.bridge_ca, share / "bridge-ca.pem", fs::copy_options::overwrite_existing, ec);
    if (ec) return make_error(errc::internal, "cannot copy the bridge certificate: " + ec.message());
  } else {
    args += " --nats " + guest_view_of(l.nats_url);
  }
  conf += "COVE_AGENT_ARGS=" + args + "\n";
  if (auto w = write_file(share / "agent.conf", conf); !w) return w.error();
  for (const auto& e : fs::directory_iterator(l.tee_dir, ec)) {
    fs::copy_file(e.path(), share / "sim" / e.path().filename(), fs::copy_options::overwrite_existing, ec);
    if (ec) return make_error(errc::internal, "cannot copy the simulated TEE identity: " + ec.message());
  }

  // QEMU (not root) reads the share: its user owns it, read-only, nobody else can.
  if (struct passwd* pw = cfg_.qemu_user.empty() ? nullptr : ::getpwnam(cfg_.qemu_user.c_str())) {
    const uid_t uid = pw->pw_uid;
    const gid_t gid = pw->pw_gid;
    for (auto it = fs::recursive_directory_iterator(share, ec); it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      if (::chown(it->path().c_str(), uid, gid) != 0)
        return make_error(errc::internal,
                          fmt::format("chown {}: {}", it->path().string(), std::strerror(errno)));
      fs::permissions(it->path(), it->is_directory() ? fs::perms(0500) : fs::perms(0400), ec);
    }
    if (::chown(share.c_str(), uid, gid) != 0)
      return make_error(errc::internal, fmt::format("chown {}: {}", share.string(), std::strerror(errno)));
    fs::permissions(share, fs::perms(0500), ec);
    // Search permission on the way down from the state dir; above it, the operator's call.
    if (auto g = grant_search(cfg_.state_dir / "eos", uid); !g) return g.error();
    for (auto p = l.dir; !cfg_.state_dir.empty(); p = p.parent_path()) {
      if (auto g = grant_search(p, uid); !g) return g.error();
      if (p == cfg_.state_dir || p == p.parent_path()) break;
    }
    for (auto p = cfg_.state_dir.parent_path(); !p.empty(); p = p.parent_path()) {
      if (!searchable_by(p, uid, gid))
        return make_error(errc::internal,
                          fmt::format("libvirt: QEMU runs as {} and cannot reach the state dir: {} is not "
                                      "searchable by it (chmod o+x, or setfacl -m u:{}:x)",
                                      cfg_.qemu_user, p.string(), cfg_.qemu_user));
      if (p == p.parent_path()) break;
    }
  }

  domain_spec spec;
  spec.cvm_id = l.cvm_id;
  spec.uuid = random_uuid();
  spec.vcpus = cfg_.vcpus;
  spec.memory_mib = cfg_.memory_mib;
  spec.emulator = cfg_.emulator;
  spec.kernel = fs::absolute(boot->kernel);
  spec.initrd = fs::absolute(boot->initrd);
  if (boot->pvh) spec.firmware = {firmware_kind::qboot, fs::absolute(cfg_.pvh_firmware), {}, {}};
  spec.cmdline = trim(read_text(cfg_.image_dir / "cmdline"));
  spec.config_dir = fs::absolute(share);
  spec.console_log = fs::absolute(l.log_file);
  spec.tpm = cfg_.tpm;
  spec.forwards = cfg_.forwards;
  if (l.cocos_grpc_port != 0)
    spec.forwards.push_back(
        {.host_address = "127.0.0.1", .host_port = l.cocos_grpc_port, .guest_port = cocos_guest_port});
  spec.metadata = {{"state_dir", cfg_.state_dir.string()}, {"cvm_id", l.cvm_id}};
  auto xml = to_domain_xml(spec);
  if (!xml) return xml.error();
  if (auto w = write_file(l.dir / "domain.xml", *xml); !w) return w.error();

  std::unique_lock lock(mu_);
  if (auto c = connect_locked(); !c) return c.error();
  // The mark that this state dir has VMs: a coved restarted after a crash reconciles.
  if (!cfg_.state_dir.empty())
    if (auto w = write_file(cfg_.state_dir / "libvirt.uri", cfg_.uri + "\n"); !w) return w.error();
  const auto name = spec.domain_name();
  // Registered first: the domain may stop before virDomainCreateXML returns.
  live_[name] = live_domain{l.cvm_id, spec.console_log};
  endings_.erase(l.cvm_id);
  conn_handle conn = ref_conn(conn_);  // shutdown() may close the backend's meanwhile
  lock.unlock();
  if (!conn) {
    std::lock_guard relock(mu_);
    live_.erase(name);
    return make_error(errc::internal, "libvirt: " + last_error());
  }
  domain_handle dom(virDomainCreateXML(conn.get(), xml->c_str(), 0));
  if (!dom) {
    auto why = last_error();
    std::lock_guard relock(mu_);
    live_.erase(name);
    return make_error(errc::internal, fmt::format("libvirt: cannot start {}: {}", name, why));
  }
  pid_t pid = 0;
  auto pid_text = trim(read_text(cfg_.run_dir / (name + ".pid")));
  if (!pid_text.empty()) pid = static_cast<pid_t>(std::strtol(pid_text.c_str(), nullptr, 10));
  spdlog::info("libvirt: {} started (QEMU pid {}, console {})", name, pid, spec.console_log.string());
  return pid;
}

void libvirt_backend::on_stopped(const std::string& domain_name, int detail) {
  live_domain d;
  {
    std::lock_guard lock(mu_);
    auto it = live_.find(domain_name);
    if (it == live_.end()) return;
    d = it->second;
    live_.erase(it);
  }
  int status = SIGKILL;  // a wait status: "killed by signal 9"
  std::string text;
  int code = detail == VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN ? agent_exit_code(d.console_log) : -1;
  if (code >= 0) {
    status = code << 8;  // W_EXITCODE(code, 0)
    text = fmt::format("agent exit status {} ({})", code, stop_reason(detail));
    if (code != 0) text += "; last lines: " + console_tail(d.console_log, 6);
  } else {
    text = stop_reason(detail) + "; last lines: " + console_tail(d.console_log, 6);
  }
  spdlog::info("libvirt: {} stopped: {}", domain_name, text);
  {
    std::lock_guard lock(mu_);
    endings_[d.cvm_id] = text;
  }
  if (on_exit_) on_exit_(d.cvm_id, status);
}

void libvirt_backend::stop(const std::string& cvm_id, pid_t /*pid*/, bool force) {
  std::lock_guard lock(mu_);
  if (conn_ == nullptr || shut_down_) return;
  auto name = "cove-" + cvm_id;
  if (live_.count(name) == 0) return;
  auto* conn = as_conn(conn_);
  workers_.emplace_back([conn, name, force] {
    domain_handle dom(virDomainLookupByName(conn, name.c_str()));
    if (!dom) return;  // already gone
    // Destroy, not an ACPI shutdown: nothing in a CVM outlives its agent, and the
    // guest's memory is all there is to clean up. libvirt sends SIGTERM, then SIGKILL.
    if (virDomainDestroy(dom.get()) < 0) spdlog::warn("libvirt: destroy {}: {}", name, last_error());
    (void)force;
  });
}

std::string libvirt_backend::describe_exit(const std::string& cvm_id, int status) const {
  std::lock_guard lock(mu_);
  auto it = endings_.find(cvm_id);
  if (it != endings_.end()) return it->second;
  return "VM " + std::to_string(status);
}

void libvirt_backend::forget(const std::string& cvm_id) {
  std::lock_guard lock(mu_);
  endings_.erase(cvm_id);
}

void libvirt_backend::shutdown() {
  std::vector<std::thread> workers;
  std::vector<std::string> names;
  virConnectPtr conn = nullptr;
  {
    std::lock_guard lock(mu_);
    if (shut_down_) return;
    shut_down_ = true;
    workers.swap(workers_);
    for (const auto& [name, d] : live_) names.push_back(name);
    conn = as_conn(conn_);
  }
  for (const auto& name : names)
    workers.emplace_back([conn, name] {
      domain_handle dom(virDomainLookupByName(conn, name.c_str()));
      if (dom && virDomainDestroy(dom.get()) < 0) spdlog::warn("libvirt: destroy {}: {}", name, last_error());
    });
  for (auto& t : workers)
    if (t.joinable()) t.join();
  if (conn == nullptr) return;
  // The STOPPED events of the domains just destroyed may still be queued: after the
  // deregistration no callback runs, so report what is left here.
  virConnectDomainEventDeregisterAny(conn, callback_id_);
  std::vector<std::pair<std::string, live_domain>> left;
  {
    std::lock_guard lock(mu_);
    for (auto& [name, d] : live_) left.emplace_back(name, d);
  }
  for (const auto& [name, d] : left) on_stopped(name, VIR_DOMAIN_EVENT_STOPPED_DESTROYED);
  virConnectClose(conn);
  std::lock_guard lock(mu_);
  conn_ = nullptr;
  loop_.reset();
  std::error_code ec;
  if (!cfg_.state_dir.empty() && !keep_marker_) fs::remove(cfg_.state_dir / "libvirt.uri", ec);  // none left
}

expected<std::vector<std::string>> libvirt_backend::reconcile() {
  std::unique_lock lock(mu_);
  if (auto c = connect_locked(); !c) return c.error();
  conn_handle conn = ref_conn(conn_);
  lock.unlock();
  if (!conn) return make_error(errc::internal, "libvirt: " + last_error());
  virDomainPtr* doms = nullptr;
  int n = virConnectListAllDomains(conn.get(), &doms, VIR_CONNECT_LIST_DOMAINS_ACTIVE);
  if (n < 0) return make_error(errc::internal, "libvirt: cannot list domains: " + last_error());
  std::vector<domain_handle> all;
  for (int i = 0; i < n; ++i) all.emplace_back(doms[i]);
  free(doms);  // NOLINT(cppcoreguidelines-no-malloc): libvirt allocates the array with malloc
  const std::string ns(metadata_namespace);
  // libvirt hands the element back without the prefix it was defined with (seen with
  // 9.0: <cvm><state_dir>…</state_dir>…); accept either form.
  const std::string dir = xml_escape(cfg_.state_dir.string());
  const std::string want = "<state_dir>" + dir + "</state_dir>";
  const std::string want_prefixed = "<cove:state_dir>" + dir + "</cove:state_dir>";
  std::vector<std::string> destroyed;
  for (auto& dom : all) {
    const char* name = virDomainGetName(dom.get());
    if (name == nullptr || std::string_view(name).substr(0, 5) != "cove-") continue;
    char* meta =
        virDomainGetMetadata(dom.get(), VIR_DOMAIN_METADATA_ELEMENT, ns.c_str(), VIR_DOMAIN_AFFECT_LIVE);
    if (meta == nullptr) continue;  // not ours, or no cove metadata
    std::string m(meta);
    free(meta);  // NOLINT(cppcoreguidelines-no-malloc)
    if (m.find(want) == std::string::npos && m.find(want_prefixed) == std::string::npos) continue;
    std::string cvm_id = std::string(name).substr(5);
    {
      std::lock_guard relock(mu_);
      if (live_.count(name) != 0) continue;  // one of ours, started by this coved
    }
    spdlog::warn("libvirt: destroying {} left by a previous coved (state dir {})", name,
                 cfg_.state_dir.string());
    if (virDomainDestroy(dom.get()) < 0) {
      spdlog::warn("libvirt: destroy {}: {}", name, last_error());
      std::lock_guard relock(mu_);
      keep_marker_ = true;  // the next coved tries again
      continue;
    }
    std::error_code ec;
    fs::remove_all(cfg_.state_dir / "cvms" / cvm_id, ec);
    destroyed.push_back(cvm_id);
  }
  return destroyed;
}

expected<std::string> libvirt_backend::launch_measurement(bool snp) const {
  if (snp) {
    auto plan = snp_plan_of(cfg_);
    if (!plan) return plan.error();
    return expected_snp_measurement(*plan);
  }
  auto hex = trim(read_text(cfg_.image_dir / "agent.sha384"));
  if (hex.size() != 96 || hex.find_first_not_of("0123456789abcdef") != std::string::npos)
    return std::string();
  return hex;
}

expected<domain_stats> libvirt_backend::stats(const std::string& cvm_id) {
  conn_handle conn;
  {
    std::lock_guard lock(mu_);
    if (live_.count("cove-" + cvm_id) == 0 || conn_ == nullptr || shut_down_)
      return make_error(errc::not_found, "no libvirt domain for CVM '" + cvm_id + "'");
    // A reference of our own, taken under the lock: shutdown() may close the backend's
    // while the calls below run (the monitor samples on its own thread); libvirt frees
    // the connection with its last reference.
    conn = ref_conn(conn_);
  }
  if (!conn) return make_error(errc::internal, "libvirt: " + last_error());
  domain_handle dom(virDomainLookupByName(conn.get(), ("cove-" + cvm_id).c_str()));
  if (!dom) return make_error(errc::not_found, "libvirt: " + last_error());
  virDomainInfo info{};
  if (virDomainGetInfo(dom.get(), &info) < 0) return make_error(errc::internal, "libvirt: " + last_error());
  return domain_stats{domain_state_name(info.state), info.cpuTime, info.memory, info.maxMem, info.nrVirtCpu};
}

}  // namespace cove::manager
