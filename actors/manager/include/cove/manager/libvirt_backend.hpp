#pragma once
// The `libvirt` CVM backend: each CVM is a transient QEMU domain (libvirt C API,
// qemu:///system by default) that boots the EOS image (build/eos: vmlinuz,
// initrd.img, cmdline) by direct kernel boot, with
//   - a read-only 9p share (<cvm dir>/config, tag "coveconfig") carrying agent.conf,
//     the bridge's certificate (never its key) and the CVM's simulated TEE identity;
//   - QEMU user networking: the guest reaches the host's loopback at 10.0.2.2, which
//     is how the agent dials the attested bridge;
//   - an emulated TPM 2.0 (libvirt starts swtpm) and the serial console in
//     <cvm dir>/console.log.
// On this machine kind the domain is tee=none under TCG (no SEV-SNP/TDX, no usable
// KVM); domain_xml.hpp also renders SEV/SNP/TDX domains for real hardware.
//
// A libvirt event-loop thread turns lifecycle events into the exit callback: a VM
// that powers off after its agent exited with N reports exit status N; one that
// dies otherwise (QEMU killed, crashed, destroyed) reports SIGKILL, and
// describe_exit() names the reason with the console's last lines.
//
// Domains are transient. Each carries <metadata> naming the state dir that owns it,
// so a restarted coved finds its leftovers (reconcile()) and destroys them: their
// agents were admitted by the previous coved's bridge (an ephemeral port, now gone)
// and the computations they ran lived in that coved's memory, so none can be resumed.
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cove/expected.hpp"
#include "cove/manager/backend.hpp"
#include "cove/manager/domain_xml.hpp"

namespace cove::manager {

struct libvirt_config {
  std::string uri = "qemu:///system";
  std::filesystem::path state_dir;  // owner tag in each domain's metadata (made absolute)
  std::filesystem::path image_dir;  // eos/build.sh output: vmlinuz, initrd.img, cmdline
  uint32_t vcpus = 1;
  // SEV-SNP launches (the expected launch measurement, launch_measurement.hpp): an
  // OVMF with the kernel-hashes table (empty: not configured), the vCPU model and
  // the VMSA SEV_FEATURES.
  std::filesystem::path snp_ovmf;
  std::string snp_vcpu_type = "EPYC-v4";
  uint64_t snp_guest_features = 0x1;
  uint64_t memory_mib = 512;
  bool tpm = true;  // emulated TPM 2.0 (swtpm, started by libvirt)
  // The user QEMU runs as (qemu.conf `user`): it needs search permission down to
  // each CVM's share and owns the share's files (0400). Empty or unknown: no change.
  std::string qemu_user = "libvirt-qemu";
  // Non-empty: the guest agent gets `--vtpm VALUE` (e.g. "device:/dev/tpmrm0").
  std::string guest_vtpm_tcti;
  // Host → guest TCP forwards for every CVM (QEMU hostfwd; fixed host ports, so only
  // for one CVM at a time). Empty by default.
  std::vector<port_forward> forwards;
  std::filesystem::path emulator = "/usr/bin/qemu-system-x86_64";
  // The firmware for the fast TCG boot: when it exists and the image has a vmlinux (PVH
  // entry), domains boot vmlinux with this qboot ROM instead of vmlinuz with SeaBIOS
  // (seconds faster under TCG: no xz decompressor, no SeaBIOS POST). Empty: always
  // vmlinuz + SeaBIOS. SeaBIOS cannot boot vmlinux with a TPM: QEMU's PVH loader puts the
  // initrd over SeaBIOS's ACPI tables (docs/performance.md, launch).
  std::filesystem::path pvh_firmware = "/usr/share/qemu/qboot.rom";
  // Where libvirtd keeps <domain>.pid (qemu:///system); the pid shown in CvmInfo.
  std::filesystem::path run_dir = "/run/libvirt/qemu";
};

/// The guest port of the agent's cocos front door (cocos's ingress convention).
inline constexpr uint16_t cocos_guest_port = 7002;

/// A domain's state as libvirt reports it (virDomainGetInfo).
struct domain_stats {
  std::string state;  // "running", "paused", "shutoff", ...
  uint64_t cpu_time_ns = 0;
  uint64_t memory_kib = 0;
  uint64_t max_memory_kib = 0;
  uint32_t vcpus = 0;
};

/// Checks the image directory: vmlinuz, initrd.img and cmdline must exist.
expected<void> check_image_dir(const std::filesystem::path& dir);

/// Lets `uid` search `dir` (not list it) with a POSIX ACL entry u:<uid>:--x, unless
/// its mode already does. For QEMU's user on the way down to a CVM's share.
expected<void> grant_search(const std::filesystem::path& dir, uid_t uid);
/// Can `uid` (primary group `gid`) search `dir`, by its mode bits or a named-user ACL?
bool searchable_by(const std::filesystem::path& dir, uid_t uid, gid_t gid);

/// The bridge or bus address as the guest must dial it: loopback and wildcard hosts
/// become 10.0.2.2 (QEMU user networking's alias of the host's 127.0.0.1).
std::string guest_view_of(const std::string& host_port);

class libvirt_event_loop;  // libvirt_backend.cpp: the process-wide event-loop thread

class libvirt_backend final : public cvm_backend {
 public:
  /// Does not connect: the connection opens on first use.
  libvirt_backend(libvirt_config cfg, exit_callback on_exit);
  ~libvirt_backend() override;

  [[nodiscard]] std::string_view name() const override { return "libvirt"; }
  [[nodiscard]] std::string_view log_name() const override { return "console.log"; }
  /// Writes <dir>/config (the share), then creates the transient domain. Blocks for
  /// the libvirt call (about 1 s). Returns QEMU's pid (0 if libvirt's pid file is
  /// unreadable).
  expected<pid_t> launch(const agent_launch& l) override;
  /// Destroys the domain on a worker thread (libvirt: SIGTERM, SIGKILL after a grace).
  void stop(const std::string& cvm_id, pid_t pid, bool force) override;
  [[nodiscard]] std::string describe_exit(const std::string& cvm_id, int status) const override;
  void forget(const std::string& cvm_id) override;
  /// Destroys every domain this backend started, joins its threads, closes libvirt.
  void shutdown() override;

  /// Connects and destroys every running domain whose metadata names this state dir
  /// (left by a coved that died); removes their <state>/cvms/<id>. Returns their ids.
  expected<std::vector<std::string>> reconcile();
  /// The domain of a live CVM (for the monitor). Safe against a concurrent shutdown():
  /// it calls libvirt with a connection reference of its own.
  expected<domain_stats> stats(const std::string& cvm_id);
  /// snp: the SEV-SNP launch digest of the image (vmlinuz, initrd.img, cmdline) with
  /// `snp_ovmf` and `vcpus`; otherwise the image's agent.sha384 (empty if absent).
  [[nodiscard]] expected<std::string> launch_measurement(bool snp) const override;
  [[nodiscard]] const libvirt_config& config() const { return cfg_; }

 private:
  struct live_domain {
    std::string cvm_id;
    std::filesystem::path console_log;
  };
  expected<void> connect_locked();
  void on_stopped(const std::string& domain_name, int detail);
  struct staged_boot {
    std::filesystem::path kernel, initrd;
    bool pvh = false;  // kernel is vmlinux, booted by cfg_.pvh_firmware
  };
  /// The kernel and initrd QEMU boots: copies of the image's under <state>/eos, so
  /// QEMU's user needs to reach only the state dir (the image may sit in a private
  /// build tree) and libvirt's ownership changes never touch the originals.
  expected<staged_boot> stage_image();

  libvirt_config cfg_;
  exit_callback on_exit_;
  mutable std::mutex mu_;
  std::mutex image_mu_;   // stage_image()
  void* conn_ = nullptr;  // virConnectPtr (kept opaque: no libvirt headers here)
  int callback_id_ = -1;
  std::map<std::string, live_domain> live_;     // by domain name
  std::map<std::string, std::string> endings_;  // cvm id -> describe_exit text
  std::vector<std::thread> workers_;            // destroy calls
  std::shared_ptr<libvirt_event_loop> loop_;    // shared by the process's backends
  bool shut_down_ = false;
  bool keep_marker_ = false;  // a leftover domain could not be destroyed: keep <state>/libvirt.uri
};

}  // namespace cove::manager
