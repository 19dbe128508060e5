#include "cove/manager/domain_xml.hpp"

#include <algorithm>
#include <set>

#include "cove/crypto/encoding.hpp"

namespace cove::manager {

namespace fs = std::filesystem;

std::string_view to_string(domain_tee t) noexcept {
  switch (t) {
    case domain_tee::none:
      return "none";
    case domain_tee::sev:
      return "sev";
    case domain_tee::sev_snp:
      return "sev-snp";
    case domain_tee::tdx:
      return "tdx";
  }
  return "?";
}

expected<domain_tee> parse_domain_tee(std::string_view s) {
  for (auto t : {domain_tee::none, domain_tee::sev, domain_tee::sev_snp, domain_tee::tdx})
    if (s == to_string(t)) return t;
  return make_error(errc::invalid_request,
                    "tee: '" + std::string(s) + "' is not one of none, sev, sev-snp, tdx");
}

std::string xml_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

namespace {

error invalid(const std::string& field, const std::string& why) {
  return make_error(errc::invalid_request, field + ": " + why);
}

// XML 1.0 cannot carry control characters (even escaped) and libvirt wants UTF-8.
bool xml_safe(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) return false;
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    i += n;
  }
  return true;
}

expected<void> check_text(const std::string& field, std::string_view s) {
  if (!xml_safe(s)) return invalid(field, "contains control characters or invalid UTF-8");
  return ok();
}

expected<void> check_path(const std::string& field, const fs::path& p, bool required) {
  if (p.empty()) {
    if (required) return invalid(field, "empty");
    return ok();
  }
  if (!p.is_absolute()) return invalid(field, "'" + p.string() + "' is not an absolute path");
  return check_text(field, p.string());
}

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool valid_uuid(std::string_view u) {
  if (u.size() != 36) return false;
  for (size_t i = 0; i < u.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? u[i] != '-' : !is_hex(u[i])) return false;
  }
  return true;
}

bool valid_ipv4(std::string_view s) {
  int parts = 0;
  size_t i = 0;
  while (i <= s.size()) {
    size_t j = s.find('.', i);
    if (j == std::string_view::npos) j = s.size();
    auto part = s.substr(i, j - i);
    if (part.empty() || part.size() > 3) return false;
    int v = 0;
    for (char c : part) {
      if (c < '0' || c > '9') return false;
      v = v * 10 + (c - '0');
    }
    if (v > 255 || (part.size() > 1 && part[0] == '0')) return false;
    ++parts;
    i = j + 1;
  }
  return parts == 4;
}

std::string hex(uint64_t v, int min_digits) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s;
  while (v != 0 || static_cast<int>(s.size()) < min_digits) {
    s.insert(s.begin(), digits[v & 0xf]);
    v >>= 4;
  }
  return "0x" + s;
}

// QEMU option values: a ',' inside a value is written ",,".
std::string qemu_opt(std::string_view s) {
  std::string out;
  for (char c : s) {
    out += c;
    if (c == ',') out += ',';
  }
  return out;
}

constexpr uint64_t snp_policy_mbo = 1ull << 17;
constexpr uint64_t snp_policy_debug = 1ull << 19;
constexpr uint64_t snp_policy_known = (1ull << 26) - 1;

expected<void> validate_firmware(const domain_spec& s) {
  const auto& f = s.firmware;
  switch (f.kind) {
    case firmware_kind::seabios:
      if (s.tee != domain_tee::none)
        return invalid("firmware.kind", "seabios cannot boot tee=" + std::string(to_string(s.tee)) +
                                            " (use ovmf" +
                                            (s.tee == domain_tee::sev_snp ? " or igvm)" : ")"));
      if (!f.path.empty() || !f.vars_template.empty() || !f.nvram.empty())
        return invalid("firmware.path", "seabios takes no files");
      return ok();
    case firmware_kind::qboot:
      if (s.tee != domain_tee::none)
        return invalid("firmware.kind", "qboot cannot boot tee=" + std::string(to_string(s.tee)));
      if (!f.vars_template.empty() || !f.nvram.empty())
        return invalid("firmware.nvram", "qboot takes no NVRAM");
      return check_path("firmware.path", f.path, true);
    case firmware_kind::ovmf:
      if (auto r = check_path("firmware.path", f.path, true); !r) return r;
      if (auto r = check_path("firmware.vars_template", f.vars_template, false); !r) return r;
      if (auto r = check_path("firmware.nvram", f.nvram, false); !r) return r;
      if (f.vars_template.empty() != f.nvram.empty())
        return invalid(f.nvram.empty() ? "firmware.nvram" : "firmware.vars_template",
                       "vars_template and nvram go together");
      if (!f.nvram.empty() && (s.tee == domain_tee::sev_snp || s.tee == domain_tee::tdx))
        return invalid("firmware.nvram",
                       "tee=" + std::string(to_string(s.tee)) + " boots OVMF as one measured ROM; no NVRAM");
      return ok();
    case firmware_kind::igvm:
      if (s.tee != domain_tee::sev_snp) return invalid("firmware.kind", "igvm is for tee=sev-snp only");
      if (!f.vars_template.empty() || !f.nvram.empty())
        return invalid("firmware.nvram", "igvm takes no NVRAM");
      return check_path("firmware.path", f.path, true);
  }
  return invalid("firmware.kind", "unknown");
}

expected<void> validate_tee(const domain_spec& s) {
  switch (s.tee) {
    case domain_tee::none:
      return ok();
    case domain_tee::sev:
      if (s.sev.cbitpos < 32 || s.sev.cbitpos > 63)
        return invalid("sev.cbitpos", std::to_string(s.sev.cbitpos) + " is out of range 32..63");
      if (s.sev.reduced_phys_bits < 1 || s.sev.reduced_phys_bits > 63)
        return invalid("sev.reduced_phys_bits",
                       std::to_string(s.sev.reduced_phys_bits) + " is out of range 1..63");
      if ((s.sev.policy & 1u) == 0)
        return invalid("sev.policy", hex(s.sev.policy, 4) + " allows debugging (set NODBG, bit 0)");
      return ok();
    case domain_tee::sev_snp: {
      const auto& p = s.sev_snp;
      if (!p.policy) return invalid("sev_snp.policy", "required for tee=sev-snp (e.g. 0x30000)");
      if ((*p.policy & snp_policy_mbo) == 0)
        return invalid("sev_snp.policy", hex(*p.policy, 5) + " lacks bit 17 (must be one)");
      if (*p.policy & snp_policy_debug)
        return invalid("sev_snp.policy", hex(*p.policy, 5) + " allows debugging (bit 19)");
      if (*p.policy & ~snp_policy_known)
        return invalid("sev_snp.policy", hex(*p.policy, 5) + " sets reserved bits 26..63");
      if (!p.host_data.empty() && p.host_data.size() != 32)
        return invalid("sev_snp.host_data",
                       std::to_string(p.host_data.size()) + " bytes; it must be empty or 32");
      if (p.cbitpos < 32 || p.cbitpos > 63)
        return invalid("sev_snp.cbitpos", std::to_string(p.cbitpos) + " is out of range 32..63");
      if (p.reduced_phys_bits < 1 || p.reduced_phys_bits > 63)
        return invalid("sev_snp.reduced_phys_bits",
                       std::to_string(p.reduced_phys_bits) + " is out of range 1..63");
      return ok();
    }
    case domain_tee::tdx:
      if (!s.tdx.mrconfigid.empty() && s.tdx.mrconfigid.size() != 48)
        return invalid("tdx.mrconfigid",
                       std::to_string(s.tdx.mrconfigid.size()) + " bytes; it must be empty or 48");
      return ok();
  }
  return invalid("tee", "unknown");
}

}  // namespace

expected<void> validate(const domain_spec& s) {
  if (s.cvm_id.empty()) return invalid("cvm_id", "empty");
  if (s.cvm_id.size() > 64)
    return invalid("cvm_id", std::to_string(s.cvm_id.size()) + " characters; at most 64");
  for (char c : s.cvm_id) {
    bool ok_char =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok_char)
      return invalid("cvm_id",
                     "only letters, digits, '-' and '_' are allowed (got '" + xml_escape(s.cvm_id) + "')");
  }
  if (!s.uuid.empty() && !valid_uuid(s.uuid)) return invalid("uuid", "not a UUID (8-4-4-4-12 hex digits)");
  if (s.vcpus < 1 || s.vcpus > 64)
    return invalid("vcpus", std::to_string(s.vcpus) + " is out of range 1..64");
  if (s.memory_mib < 256 || s.memory_mib > 1048576)
    return invalid("memory_mib", std::to_string(s.memory_mib) + " is out of range 256..1048576");
  if (auto r = check_path("emulator", s.emulator, true); !r) return r;
  if (s.tee != domain_tee::none && s.accel != domain_accel::kvm)
    return invalid("accel", "tee=" + std::string(to_string(s.tee)) + " needs kvm, not tcg");
  if (auto r = validate_firmware(s); !r) return r;
  if (auto r = check_path("kernel", s.kernel, true); !r) return r;
  if (auto r = check_path("initrd", s.initrd, false); !r) return r;
  if (auto r = check_text("cmdline", s.cmdline); !r) return r;
  if (s.cmdline.size() >= 2048)
    return invalid("cmdline", std::to_string(s.cmdline.size()) + " bytes; at most 2047");
  if (auto r = check_path("config_dir", s.config_dir, true); !r) return r;
  if (auto r = check_path("console_log", s.console_log, true); !r) return r;
  if (!s.forwards.empty() && !s.network) return invalid("forwards", "need network = true");
  for (const auto& [key, value] : s.metadata) {
    bool ok_key = !key.empty() && key.size() <= 32 && std::all_of(key.begin(), key.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || c == '_';
    });
    if (!ok_key) return invalid("metadata", "key '" + xml_escape(key) + "' is not [a-z_]{1,32}");
    if (auto r = check_text("metadata." + key, value); !r) return r;
  }
  std::set<uint16_t> host_ports;
  for (size_t i = 0; i < s.forwards.size(); ++i) {
    const auto& f = s.forwards[i];
    auto field = "forwards[" + std::to_string(i) + "]";
    if (!valid_ipv4(f.host_address))
      return invalid(field + ".host_address",
                     "'" + xml_escape(f.host_address) + "' is not a dotted IPv4 address");
    if (f.host_port == 0) return invalid(field + ".host_port", "0");
    if (f.guest_port == 0) return invalid(field + ".guest_port", "0");
    if (!host_ports.insert(f.host_port).second)
      return invalid(field + ".host_port", std::to_string(f.host_port) + " is used twice");
  }
  return validate_tee(s);
}

expected<std::vector<std::string>> qemu_passthrough_args(const domain_spec& s) {
  if (auto r = validate(s); !r) return r.error();
  std::vector<std::string> args;
  // Extra -machine options are merged by QEMU into libvirt's own -machine (QEMU >= 6.2
  // parses every -machine into one dictionary). `confidential-guest-support` is the
  // name since QEMU 6.0 (`memory-encryption` is its deprecated alias).
  std::string machine;
  if (s.tee == domain_tee::sev_snp) {
    const auto& p = s.sev_snp;
    std::string obj = "sev-snp-guest,id=snp0,cbitpos=" + std::to_string(p.cbitpos) +
                      ",reduced-phys-bits=" + std::to_string(p.reduced_phys_bits) +
                      ",policy=" + hex(*p.policy, 5) + ",kernel-hashes=on";
    if (!p.host_data.empty()) obj += ",host-data=" + crypto::base64_encode(p.host_data);
    args.insert(args.end(), {"-object", obj});
    machine = "confidential-guest-support=snp0";
    if (s.firmware.kind == firmware_kind::igvm) {
      args.insert(args.end(), {"-object", "igvm-cfg,id=igvm0,file=" + qemu_opt(s.firmware.path.string())});
      machine += ",igvm-cfg=igvm0";
    }
  } else if (s.tee == domain_tee::tdx) {
    std::string obj = "tdx-guest,id=tdx0,sept-ve-disable=";
    obj += s.tdx.sept_ve_disable ? "on" : "off";
    if (!s.tdx.mrconfigid.empty()) obj += ",mrconfigid=" + crypto::base64_encode(s.tdx.mrconfigid);
    args.insert(args.end(), {"-object", obj});
    machine = "confidential-guest-support=tdx0";
  }
  if (!machine.empty()) args.insert(args.end(), {"-machine", machine});
  if (!s.forwards.empty()) {
    // libvirt 9.0 forwards ports only for the passt backend, so the NIC is passed through
    // whole (and replaces <interface>: the guest has one eth0). The explicit slot keeps it
    // clear of libvirt's automatic PCI addresses (slot 0x10 on q35's root bus).
    std::string netdev = "user,id=covenet0";
    for (const auto& f : s.forwards)
      netdev += ",hostfwd=tcp:" + f.host_address + ":" + std::to_string(f.host_port) +
                "-:" + std::to_string(f.guest_port);
    // romfile= (none): no iPXE option ROM, whose banner waits ~2 s at every boot.
    std::string dev = "virtio-net-pci,netdev=covenet0,bus=pcie.0,addr=0x10,disable-legacy=on,romfile=";
    if (s.tee != domain_tee::none) dev += ",iommu_platform=on";
    args.insert(args.end(), {"-netdev", netdev, "-device", dev});
  }
  return args;
}

expected<std::string> to_domain_xml(const domain_spec& s) {
  auto args = qemu_passthrough_args(s);  // validates
  if (!args) return args.error();
  const bool tee = s.tee != domain_tee::none;
  const bool kvm = s.accel == domain_accel::kvm;
  std::string x;
  auto line = [&x](int depth, const std::string& text) {
    x.append(static_cast<size_t>(depth) * 2, ' ');
    x += text;
    x += '\n';
  };
  auto esc = [](const fs::path& p) { return xml_escape(p.string()); };

  line(0, std::string("<domain type='") + (kvm ? "kvm" : "qemu") + "'" +
              (args->empty() ? "" : " xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'") + ">");
  line(1, "<name>" + xml_escape(s.domain_name()) + "</name>");
  if (!s.uuid.empty()) line(1, "<uuid>" + xml_escape(s.uuid) + "</uuid>");
  if (!s.metadata.empty()) {
    line(1, "<metadata>");
    line(2, "<cove:cvm xmlns:cove='" + std::string(metadata_namespace) + "'>");
    for (const auto& [key, value] : s.metadata)
      line(3, "<cove:" + key + ">" + xml_escape(value) + "</cove:" + key + ">");
    line(2, "</cove:cvm>");
    line(1, "</metadata>");
  }
  line(1, "<memory unit='MiB'>" + std::to_string(s.memory_mib) + "</memory>");
  line(1, "<vcpu placement='static'>" + std::to_string(s.vcpus) + "</vcpu>");
  if (s.tee == domain_tee::sev) {
    // SEV pins guest memory against RLIMIT_MEMLOCK; libvirt lifts the limit with <locked/>.
    line(1, "<memoryBacking>");
    line(2, "<locked/>");
    line(1, "</memoryBacking>");
  } else if (s.tee == domain_tee::sev_snp || s.tee == domain_tee::tdx) {
    // RAM as memory-backend-memfd (libvirt's pc.ram object); SNP/TDX QEMU adds the
    // guest_memfd private memory next to it. (AMD's pre-upstream SNP QEMU wanted
    // memory-backend-memfd-private instead: not supported here.)
    line(1, "<memoryBacking>");
    line(2, "<source type='memfd'/>");
    line(1, "</memoryBacking>");
  }
  line(1, "<os>");
  line(2, "<type arch='x86_64' machine='q35'>hvm</type>");
  if (s.firmware.kind == firmware_kind::qboot) {
    line(2, "<loader readonly='yes' type='rom'>" + esc(s.firmware.path) + "</loader>");
  } else if (s.firmware.kind == firmware_kind::ovmf) {
    if (s.firmware.nvram.empty()) {
      line(2, "<loader readonly='yes' type='rom'>" + esc(s.firmware.path) + "</loader>");
    } else {
      line(2, "<loader readonly='yes' type='pflash'>" + esc(s.firmware.path) + "</loader>");
      line(2,
           "<nvram template='" + esc(s.firmware.vars_template) + "'>" + esc(s.firmware.nvram) + "</nvram>");
    }
  }
  line(2, "<kernel>" + esc(s.kernel) + "</kernel>");
  if (!s.initrd.empty()) line(2, "<initrd>" + esc(s.initrd) + "</initrd>");
  if (!s.cmdline.empty()) line(2, "<cmdline>" + xml_escape(s.cmdline) + "</cmdline>");
  line(1, "</os>");
  line(1, "<features>");
  line(2, "<acpi/>");
  if (s.tee == domain_tee::tdx) line(2, "<ioapic driver='qemu'/>");  // kernel-irqchip=split
  if (s.tee == domain_tee::sev_snp || s.tee == domain_tee::tdx) line(2, "<smm state='off'/>");
  line(1, "</features>");
  if (kvm) line(1, "<cpu mode='host-passthrough' check='none'/>");
  line(1, "<clock offset='utc'/>");
  // EOS powers off when the agent exits; a reboot or crash also ends the domain.
  line(1, "<on_poweroff>destroy</on_poweroff>");
  line(1, "<on_reboot>destroy</on_reboot>");
  line(1, "<on_crash>destroy</on_crash>");
  line(1, "<devices>");
  line(2, "<emulator>" + esc(s.emulator) + "</emulator>");
  line(2, "<controller type='usb' model='none'/>");
  // Under SEV/SNP/TDX virtio devices must use the DMA API (bounce buffers in shared memory).
  const std::string iommu = tee ? " iommu='on'" : "";
  line(2, "<filesystem type='mount' accessmode='passthrough'>");
  if (tee) line(3, "<driver type='path'" + iommu + "/>");
  line(3, "<source dir='" + esc(s.config_dir) + "'/>");
  line(3, "<target dir='" + std::string(config_mount_tag) + "'/>");
  line(3, "<readonly/>");
  line(2, "</filesystem>");
  if (s.network && s.forwards.empty()) {
    line(2, "<interface type='user'>");
    line(3, "<model type='virtio'/>");
    if (tee) line(3, "<driver" + iommu + "/>");
    line(3, "<rom enabled='no'/>");  // no iPXE: its banner waits ~2 s at every boot
    line(2, "</interface>");
  }
  line(2, "<serial type='file'>");
  line(3, "<source path='" + esc(s.console_log) + "'/>");
  line(3, "<target port='0'/>");
  line(2, "</serial>");
  if (s.tpm) {
    line(2, "<tpm model='tpm-crb'>");
    line(3, "<backend type='emulator' version='2.0'/>");
    line(2, "</tpm>");
  }
  if (!tee) {
    // Entropy for the guest's CRNG: under TCG (no RDRAND) the kernel otherwise needs
    // seconds of jitter entropy, and the agent's first getrandom() (libsodium) waits for
    // it. Not for a TEE guest: host-supplied entropy is not to be trusted there (it has
    // RDRAND).
    line(2, "<rng model='virtio'>");
    line(3, "<backend model='random'>/dev/urandom</backend>");
    line(2, "</rng>");
  }
  line(2, "<memballoon model='none'/>");
  line(1, "</devices>");
  if (s.tee == domain_tee::sev) {
    line(1, "<launchSecurity type='sev' kernelHashes='yes'>");
    line(2, "<cbitpos>" + std::to_string(s.sev.cbitpos) + "</cbitpos>");
    line(2, "<reducedPhysBits>" + std::to_string(s.sev.reduced_phys_bits) + "</reducedPhysBits>");
    line(2, "<policy>" + hex(s.sev.policy, 4) + "</policy>");
    line(1, "</launchSecurity>");
  }
  if (!args->empty()) {
    line(1, "<qemu:commandline>");
    for (const auto& a : *args) line(2, "<qemu:arg value='" + xml_escape(a) + "'/>");
    line(1, "</qemu:commandline>");
  }
  line(0, "</domain>");
  return x;
}

}  // namespace cove::manager
