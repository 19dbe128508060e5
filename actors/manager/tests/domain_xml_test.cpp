// The libvirt domain generator: golden files per TEE, well-formedness (xmllint), libvirt's
// RelaxNG schema (virt-xml-validate) and the validation errors.
//
// Regenerate the golden files after an intended change:
//   COVE_UPDATE_GOLDEN=1 build/bin/cove_manager_test -tc='domain XML*'
// then review `git diff actors/manager/tests/golden/`.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "cove/crypto/encoding.hpp"
#include "cove/manager/domain_xml.hpp"
#include "cove/test/process.hpp"

using namespace cove::manager;
namespace fs = std::filesystem;

namespace {

const fs::path golden_dir = fs::path(COVE_SOURCE_DIR) / "actors/manager/tests/golden";

// What the manager will build for a CVM on this machine (TCG, SeaBIOS, EOS from build/eos).
domain_spec base_spec() {
  domain_spec s;
  s.cvm_id = "cvm-0123456789abcdef";
  s.uuid = "6c2f1a9e-3b7d-4e58-9a0c-1d2e3f405162";
  s.vcpus = 2;
  s.memory_mib = 1024;
  s.kernel = "/var/lib/cove/eos/vmlinuz";
  s.initrd = "/var/lib/cove/eos/initrd.img";
  s.cmdline = "console=ttyS0 panic=-1 loglevel=4";
  s.config_dir = "/var/lib/cove/cvms/cvm-0123456789abcdef/config";
  s.console_log = "/var/lib/cove/cvms/cvm-0123456789abcdef/console.log";
  return s;
}

std::vector<uint8_t> counting(size_t n, uint8_t start) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(start + i);
  return v;
}

struct golden_case {
  std::string name;
  std::function<domain_spec()> make;
};

std::vector<golden_case> golden_cases() {
  return {
      {"none",
       [] {
         auto s = base_spec();  // OVMF with a per-domain NVRAM, under TCG
         s.firmware = {firmware_kind::ovmf, "/usr/share/OVMF/OVMF_CODE_4M.fd",
                       "/usr/share/OVMF/OVMF_VARS_4M.fd",
                       "/var/lib/cove/cvms/cvm-0123456789abcdef/OVMF_VARS.fd"};
         return s;
       }},
      {"none-seabios-hostfwd",
       [] {
         auto s = base_spec();  // the fastest boot under TCG, plus host → guest ports
         s.uuid.clear();
         s.tpm = false;
         s.forwards = {{"127.0.0.1", 18080, 8080}, {"127.0.0.1", 18443, 443}};
         // What libvirt_backend records to recognize its domains after a restart.
         s.metadata = {{"state_dir", "/var/lib/cove"}, {"cvm_id", s.cvm_id}};
         return s;
       }},
      {"none-qboot",
       [] {
         auto s = base_spec();  // what libvirt_backend boots under TCG: PVH vmlinux, qboot
         s.firmware = {firmware_kind::qboot, "/usr/share/qemu/qboot.rom", {}, {}};
         s.kernel = "/var/lib/cove/eos/vmlinux";
         return s;
       }},
      {"sev",
       [] {
         auto s = base_spec();
         s.tee = domain_tee::sev;
         s.accel = domain_accel::kvm;
         s.firmware = {firmware_kind::ovmf, "/usr/share/OVMF/OVMF.amdsev.fd", {}, {}};
         s.sev = {47, 1, 0x0007};
         return s;
       }},
      {"sev-snp",
       [] {
         auto s = base_spec();
         s.tee = domain_tee::sev_snp;
         s.accel = domain_accel::kvm;
         s.emulator = "/opt/qemu-snp/bin/qemu-system-x86_64";
         s.firmware = {firmware_kind::igvm, "/var/lib/cove/eos/coconut-qemu.igvm", {}, {}};
         s.sev_snp.host_data = counting(32, 0);
         return s;
       }},
      {"tdx",
       [] {
         auto s = base_spec();
         s.tee = domain_tee::tdx;
         s.accel = domain_accel::kvm;
         s.emulator = "/opt/qemu-tdx/bin/qemu-system-x86_64";
         s.firmware = {firmware_kind::ovmf, "/usr/share/ovmf/OVMF.tdx.fd", {}, {}};
         s.tdx.mrconfigid = counting(48, 0xa0);
         return s;
       }},
  };
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// A unified-style line diff (LCS; the files are short), 2 lines of context per hunk.
std::string line_diff(const std::string& want, const std::string& got) {
  auto a = lines_of(want), b = lines_of(got);
  std::vector<std::vector<int>> lcs(a.size() + 1, std::vector<int>(b.size() + 1, 0));
  for (size_t i = a.size(); i-- > 0;)
    for (size_t j = b.size(); j-- > 0;)
      lcs[i][j] = a[i] == b[j] ? lcs[i + 1][j + 1] + 1 : std::max(lcs[i + 1][j], lcs[i][j + 1]);
  std::vector<std::pair<char, std::string>> ops;
  size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    if (i < a.size() && j < b.size() && a[i] == b[j]) {
      ops.emplace_back(' ', a[i++]);
      ++j;
    } else if (i < a.size() && (j == b.size() || lcs[i + 1][j] >= lcs[i][j + 1])) {
      ops.emplace_back('-', a[i++]);
    } else {
      ops.emplace_back('+', b[j++]);
    }
  }
  std::string out = "--- golden\n+++ generated\n";
  const size_t ctx = 2;
  size_t line_a = 1;
  bool in_hunk = false;
  for (size_t k = 0; k < ops.size(); ++k) {
    bool near = false;
    for (size_t d = (k >= ctx ? k - ctx : 0); d < std::min(ops.size(), k + ctx + 1); ++d)
      near = near || ops[d].first != ' ';
    if (near) {
      if (!in_hunk) out += "@@ golden line " + std::to_string(line_a) + " @@\n";
      out += ops[k].first + ops[k].second + "\n";
    }
    in_hunk = near;
    if (ops[k].first != '+') ++line_a;
  }
  return out;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct run_result {
  int status = -1;
  std::string output;
};

// Runs a shell command line (fixed programs, paths from temp_dir) and collects its output.
run_result run(const std::string& cmd) {
  run_result r;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  REQUIRE_MESSAGE(p != nullptr, "popen " << cmd);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

bool on_path(const std::string& tool) {
  return run("command -v " + tool + " >/dev/null").status == 0;
}

}  // namespace

TEST_CASE("domain XML matches the golden file for every TEE") {
  const bool update =
      std::getenv("COVE_UPDATE_GOLDEN") != nullptr && std::string(std::getenv("COVE_UPDATE_GOLDEN")) == "1";
  for (const auto& c : golden_cases()) {
    CAPTURE(c.name);
    auto xml = to_domain_xml(c.make());
    REQUIRE_MESSAGE(xml, (xml ? "" : xml.error().to_string()));
    CHECK(*to_domain_xml(c.make()) == *xml);  // deterministic
    auto path = golden_dir / ("domain-" + c.name + ".xml");
    if (update) {
      std::ofstream(path, std::ios::binary | std::ios::trunc) << *xml;
      MESSAGE("rewrote " << path.string());
      continue;
    }
    REQUIRE_MESSAGE(fs::exists(path), path.string() << " missing; run with COVE_UPDATE_GOLDEN=1");
    auto want = read_file(path);
    if (want != *xml) FAIL_CHECK(path.string() << " differs:\n" << line_diff(want, *xml));
  }
}

TEST_CASE("domain XML is well-formed and valid against libvirt's schema") {
  // Both tools are installed by deploy/install-deps.sh (libxml2-utils, libvirt-clients).
  REQUIRE_MESSAGE(on_path("xmllint"), "xmllint missing: run deploy/install-deps.sh");
  REQUIRE_MESSAGE(on_path("virt-xml-validate"), "virt-xml-validate missing: run deploy/install-deps.sh");
  cove::test::temp_dir tmp("cove-domain-xml");
  for (const auto& c : golden_cases()) {
    CAPTURE(c.name);
    auto xml = to_domain_xml(c.make());
    REQUIRE(xml);
    auto file = tmp.path() / (c.name + ".xml");
    std::ofstream(file, std::ios::binary) << *xml;
    auto wf = run("xmllint --noout '" + file.string() + "'");
    CHECK_MESSAGE(wf.status == 0, wf.output);
    // libvirt 9.0's RelaxNG schema covers <launchSecurity type='sev'> and the
    // <qemu:commandline> namespace, so every variant is checked (what QEMU does with the
    // passed-through arguments is not: that needs SNP/TDX hardware).
    auto v = run("virt-xml-validate '" + file.string() + "' domain");
    CHECK_MESSAGE(v.status == 0, v.output);
  }
  // The checkers can fail: a broken document is refused by both.
  auto bad = tmp.path() / "bad.xml";
  std::ofstream(bad) << "<domain type='qemu'><name>x</name>\n";
  CHECK(run("xmllint --noout '" + bad.string() + "'").status != 0);
  std::ofstream(bad, std::ios::trunc) << "<domain type='qemu'><nosuch/></domain>\n";
  CHECK(run("virt-xml-validate '" + bad.string() + "' domain").status != 0);
}

TEST_CASE("domain XML escapes every string it embeds") {
  auto s = base_spec();
  s.cmdline = "console=ttyS0 cove.note=<a&b>'\"";
  s.kernel = "/srv/k&r/<vmlinuz>";
  s.config_dir = "/srv/it's \"here\"";
  s.tee = domain_tee::sev_snp;
  s.accel = domain_accel::kvm;
  s.firmware = {firmware_kind::igvm, "/srv/a,b'c.igvm", {}, {}};
  auto xml = to_domain_xml(s);
  REQUIRE(xml);
  CHECK(xml->find("<cmdline>console=ttyS0 cove.note=&lt;a&amp;b&gt;&apos;&quot;</cmdline>") !=
        std::string::npos);
  CHECK(xml->find("<kernel>/srv/k&amp;r/&lt;vmlinuz&gt;</kernel>") != std::string::npos);
  CHECK(xml->find("<source dir='/srv/it&apos;s &quot;here&quot;'/>") != std::string::npos);
  // QEMU's own option syntax: ',' in a value is doubled, then XML-escaped.
  CHECK(xml->find("value='igvm-cfg,id=igvm0,file=/srv/a,,b&apos;c.igvm'") != std::string::npos);
  REQUIRE(on_path("xmllint"));
  cove::test::temp_dir tmp("cove-domain-xml");
  auto file = tmp.path() / "escaped.xml";
  std::ofstream(file, std::ios::binary) << *xml;
  auto wf = run("xmllint --xpath 'string(/domain/os/cmdline)' '" + file.string() + "'");
  CHECK(wf.status == 0);
  if (!wf.output.empty() && wf.output.back() == '\n') wf.output.pop_back();  // xmllint adds one
  CHECK(wf.output == s.cmdline);                                             // what libvirt will read back
}

TEST_CASE("SEV-SNP and TDX passthrough arguments") {
  auto s = base_spec();
  s.tee = domain_tee::sev_snp;
  s.accel = domain_accel::kvm;
  s.firmware = {firmware_kind::ovmf, "/usr/share/ovmf/OVMF.amdsev.fd", {}, {}};
  auto args = qemu_passthrough_args(s);
  REQUIRE(args);
  // No host_data: no host-data property; OVMF: no igvm-cfg, loaded as ROM by libvirt.
  CHECK(*args ==
        std::vector<std::string>{"-object",
                                 "sev-snp-guest,id=snp0,cbitpos=51,reduced-phys-bits=1,policy=0x30000,"
                                 "kernel-hashes=on",
                                 "-machine", "confidential-guest-support=snp0"});
  CHECK(to_domain_xml(s)->find("<loader readonly='yes' type='rom'>") != std::string::npos);

  s.sev_snp.host_data = counting(32, 7);
  args = qemu_passthrough_args(s);
  REQUIRE(args);
  auto obj = (*args)[1];
  auto at = obj.find("host-data=");
  REQUIRE(at != std::string::npos);
  auto decoded = cove::crypto::base64_decode(obj.substr(at + 10));
  REQUIRE(decoded);
  CHECK(*decoded == counting(32, 7));

  s.tee = domain_tee::tdx;
  s.tdx.sept_ve_disable = false;
  args = qemu_passthrough_args(s);
  REQUIRE(args);
  CHECK(*args == std::vector<std::string>{"-object", "tdx-guest,id=tdx0,sept-ve-disable=off", "-machine",
                                          "confidential-guest-support=tdx0"});

  s = base_spec();  // tee=none and sev need no passthrough: no qemu namespace at all
  args = qemu_passthrough_args(s);
  REQUIRE(args);
  CHECK(args->empty());
  CHECK(to_domain_xml(s)->find("qemu:") == std::string::npos);
}

TEST_CASE("tee names round-trip; unknown names are refused") {
  for (auto t : {domain_tee::none, domain_tee::sev, domain_tee::sev_snp, domain_tee::tdx}) {
    auto p = parse_domain_tee(to_string(t));
    REQUIRE(p);
    CHECK(*p == t);
  }
  auto bad = parse_domain_tee("snp");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == cove::errc::invalid_request);
  CHECK(bad.error().message == "tee: 'snp' is not one of none, sev, sev-snp, tdx");
}

TEST_CASE("validate names the offending field") {
  struct bad_case {
    std::string want;  // the error message's start
    std::function<void(domain_spec&)> mutate;
  };
  auto snp = [](domain_spec& s) {
    s.tee = domain_tee::sev_snp;
    s.accel = domain_accel::kvm;
    s.firmware = {firmware_kind::igvm, "/x.igvm", {}, {}};
  };
  const std::vector<bad_case> cases = {
      {"cvm_id: empty", [](domain_spec& s) { s.cvm_id.clear(); }},
      {"cvm_id: only letters", [](domain_spec& s) { s.cvm_id = "a'><evil/>"; }},
      {"cvm_id: only letters", [](domain_spec& s) { s.cvm_id = "a/b"; }},
      {"cvm_id: 65 characters", [](domain_spec& s) { s.cvm_id = std::string(65, 'a'); }},
      {"uuid: not a UUID", [](domain_spec& s) { s.uuid = "6c2f1a9e-3b7d-4e58-9a0c-1d2e3f40516"; }},
      {"uuid: not a UUID", [](domain_spec& s) { s.uuid = "6c2f1a9e-3b7d-4e58-9a0c-1d2e3f40516g"; }},
      {"vcpus: 0 is out of range", [](domain_spec& s) { s.vcpus = 0; }},
      {"vcpus: 65 is out of range", [](domain_spec& s) { s.vcpus = 65; }},
      {"memory_mib: 255 is out of range", [](domain_spec& s) { s.memory_mib = 255; }},
      {"emulator: 'qemu' is not an absolute path", [](domain_spec& s) { s.emulator = "qemu"; }},
      {"kernel: empty", [](domain_spec& s) { s.kernel.clear(); }},
      {"kernel: 'vmlinuz' is not an absolute path", [](domain_spec& s) { s.kernel = "vmlinuz"; }},
      {"kernel: contains control", [](domain_spec& s) { s.kernel = "/a\nb"; }},
      {"initrd: contains control", [](domain_spec& s) { s.initrd = std::string("/a\x01", 3); }},
      {"cmdline: contains control", [](domain_spec& s) { s.cmdline = "a\tb"; }},
      {"cmdline: contains control", [](domain_spec& s) { s.cmdline = "bad \xff utf8"; }},
      {"cmdline: 2048 bytes", [](domain_spec& s) { s.cmdline = std::string(2048, 'x'); }},
      {"config_dir: empty", [](domain_spec& s) { s.config_dir.clear(); }},
      {"console_log: empty", [](domain_spec& s) { s.console_log.clear(); }},
      {"forwards: need network",
       [](domain_spec& s) {
         s.network = false;
         s.forwards = {{"127.0.0.1", 1, 2}};
       }},
      {"forwards[0].host_address: '127.0.0.256'",
       [](domain_spec& s) {
         s.forwards = {{"127.0.0.256", 1, 2}};
       }},
      {"forwards[0].host_address: 'localhost'",
       [](domain_spec& s) {
         s.forwards = {{"localhost", 1, 2}};
       }},
      {"forwards[0].host_port: 0",
       [](domain_spec& s) {
         s.forwards = {{"127.0.0.1", 0, 2}};
       }},
      {"forwards[0].guest_port: 0",
       [](domain_spec& s) {
         s.forwards = {{"127.0.0.1", 1, 0}};
       }},
      {"forwards[1].host_port: 1 is used twice",
       [](domain_spec& s) {
         s.forwards = {{"127.0.0.1", 1, 2}, {"127.0.0.1", 1, 3}};
       }},
      {"metadata: key 'State' is not",
       [](domain_spec& s) {
         s.metadata = {{"State", "x"}};
       }},
      {"metadata: key '' is not",
       [](domain_spec& s) {
         s.metadata = {{"", "x"}};
       }},
      {"metadata.state_dir: contains control",
       [](domain_spec& s) {
         s.metadata = {{"state_dir", "a\nb"}};
       }},
      {"firmware.path: empty", [](domain_spec& s) { s.firmware.kind = firmware_kind::ovmf; }},
      {"firmware.path: seabios takes no files", [](domain_spec& s) { s.firmware.path = "/x"; }},
      {"firmware.nvram: vars_template and nvram go together",
       [](domain_spec& s) {
         s.firmware = {firmware_kind::ovmf, "/c.fd", "/v.fd", {}};
       }},
      {"firmware.path: empty", [](domain_spec& s) { s.firmware.kind = firmware_kind::qboot; }},
      {"firmware.nvram: qboot takes no NVRAM",
       [](domain_spec& s) {
         s.firmware = {firmware_kind::qboot, "/q.rom", "/v.fd", "/n.fd"};
       }},
      {"firmware.kind: qboot cannot boot tee=sev",
       [](domain_spec& s) {
         s.tee = domain_tee::sev;
         s.accel = domain_accel::kvm;
         s.firmware = {firmware_kind::qboot, "/q.rom", {}, {}};
       }},
      {"firmware.kind: igvm is for tee=sev-snp only",
       [](domain_spec& s) {
         s.firmware = {firmware_kind::igvm, "/x.igvm", {}, {}};
       }},
      {"accel: tee=sev needs kvm",
       [](domain_spec& s) {
         s.tee = domain_tee::sev;
         s.firmware = {firmware_kind::ovmf, "/c.fd", {}, {}};
       }},
      {"firmware.kind: seabios cannot boot tee=tdx",
       [](domain_spec& s) {
         s.tee = domain_tee::tdx;
         s.accel = domain_accel::kvm;
       }},
      {"firmware.nvram: tee=tdx boots OVMF as one measured ROM",
       [](domain_spec& s) {
         s.tee = domain_tee::tdx;
         s.accel = domain_accel::kvm;
         s.firmware = {firmware_kind::ovmf, "/c.fd", "/v.fd", "/n.fd"};
       }},
      {"sev.policy: 0x0002 allows debugging",
       [](domain_spec& s) {
         s.tee = domain_tee::sev;
         s.accel = domain_accel::kvm;
         s.firmware = {firmware_kind::ovmf, "/c.fd", {}, {}};
         s.sev.policy = 2;
       }},
      {"sev.cbitpos: 31 is out of range",
       [](domain_spec& s) {
         s.tee = domain_tee::sev;
         s.accel = domain_accel::kvm;
         s.firmware = {firmware_kind::ovmf, "/c.fd", {}, {}};
         s.sev.cbitpos = 31;
       }},
      {"sev.reduced_phys_bits: 0 is out of range",
       [](domain_spec& s) {
         s.tee = domain_tee::sev;
         s.accel = domain_accel::kvm;
         s.firmware = {firmware_kind::ovmf, "/c.fd", {}, {}};
         s.sev.reduced_phys_bits = 0;
       }},
      {"sev_snp.policy: required for tee=sev-snp",
       [&](domain_spec& s) {
         snp(s);
         s.sev_snp.policy.reset();
       }},
      {"sev_snp.policy: 0x10000 lacks bit 17",
       [&](domain_spec& s) {
         snp(s);
         s.sev_snp.policy = 0x10000;
       }},
      {"sev_snp.policy: 0xb0000 allows debugging",
       [&](domain_spec& s) {
         snp(s);
         s.sev_snp.policy = 0xb0000;
       }},
      {"sev_snp.policy: 0x4000030000 sets reserved bits",
       [&](domain_spec& s) {
         snp(s);
         s.sev_snp.policy = 0x4000030000;
       }},
      {"sev_snp.host_data: 31 bytes",
       [&](domain_spec& s) {
         snp(s);
         s.sev_snp.host_data = counting(31, 0);
       }},
      {"sev_snp.cbitpos: 64 is out of range",
       [&](domain_spec& s) {
         snp(s);
         s.sev_snp.cbitpos = 64;
       }},
      {"firmware.path: empty",
       [&](domain_spec& s) {
         snp(s);
         s.firmware.path.clear();
       }},
      {"tdx.mrconfigid: 32 bytes",
       [](domain_spec& s) {
         s.tee = domain_tee::tdx;
         s.accel = domain_accel::kvm;
         s.firmware = {firmware_kind::ovmf, "/c.fd", {}, {}};
         s.tdx.mrconfigid = counting(32, 0);
       }},
  };
  REQUIRE(validate(base_spec()));
  for (const auto& c : cases) {
    auto s = base_spec();
    c.mutate(s);
    auto v = validate(s);
    CAPTURE(c.want);
    REQUIRE_FALSE(v);
    CHECK(v.error().code == cove::errc::invalid_request);
    CHECK_MESSAGE(v.error().message.rfind(c.want, 0) == 0, "got: " << v.error().message);
    auto x = to_domain_xml(s);  // the generator refuses the same spec with the same error
    REQUIRE_FALSE(x);
    CHECK(x.error().message == v.error().message);
  }
}
