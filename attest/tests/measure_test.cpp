// Launch-measurement tests: every vector in shared/fixtures/snp-measure/vectors.json
// (digests from virtee/sev-snp-measure), the two upstream SVSM vectors, and errors.
#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cove/attest/measure.hpp"
#include "cove/attest/snp_report.hpp"

using namespace cove::attest;
using json = nlohmann::json;

namespace {

const std::string dir = std::string(COVE_FIXTURES_DIR) + "/snp-measure/";

std::filesystem::path fixture(const std::string& name) {
  return name.starts_with("/") ? std::filesystem::path(name) : std::filesystem::path(dir + name);
}

std::vector<uint8_t> read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

json load_vectors() {
  std::ifstream in(dir + "vectors.json");
  std::stringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str());
}

measure_options options_of(const json& v) {
  measure_options o;
  auto str = [&](const char* k) -> std::optional<std::string> {
    if (!v.contains(k) || v[k].is_null()) return std::nullopt;
    return v[k].get<std::string>();
  };
  o.mode = *parse_sev_mode(v["mode"].get<std::string>());
  if (v.contains("vcpus") && !v["vcpus"].is_null()) o.vcpus = v["vcpus"].get<uint32_t>();
  o.vcpu_type = str("vcpu_type").value_or("");
  if (v.contains("vcpu_sig") && !v["vcpu_sig"].is_null())
    o.vcpu_sig = v["vcpu_sig"].is_string()
                     ? static_cast<uint32_t>(std::stoul(v["vcpu_sig"].get<std::string>(), nullptr, 0))
                     : v["vcpu_sig"].get<uint32_t>();
  o.ovmf = fixture(*str("ovmf"));
  if (auto k = str("kernel")) o.kernel = fixture(*k);
  if (auto i = str("initrd")) o.initrd = fixture(*i);
  o.append = str("append");
  if (auto gf = str("guest_features")) o.guest_features = std::stoull(*gf, nullptr, 0);
  if (auto vmm = str("vmm_type")) o.vmm = *parse_vmm_type(*vmm);
  o.snp_ovmf_hash = str("snp_ovmf_hash").value_or("");
  if (auto s = str("svsm")) o.svsm = fixture(*s);
  if (v.contains("vars_size") && !v["vars_size"].is_null()) o.vars_size = v["vars_size"].get<uint64_t>();
  return o;
}

}  // namespace

TEST_CASE("measure: every vector in vectors.json") {
  auto all = load_vectors();
  size_t checked = 0;
  for (const char* list : {"vectors", "derived_vectors"}) {
    REQUIRE(all.contains(list));
    for (const auto& v : all[list]) {
      CAPTURE(v["id"].get<std::string>());
      auto r = compute_launch_digest(options_of(v));
      if (v.contains("expected_error")) {
        REQUIRE_FALSE(r);
        CHECK(r.error().code == cove::errc::invalid_request);
        CHECK(r.error().message.find(v["expected_error"].get<std::string>()) != std::string::npos);
      } else {
        REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
        CHECK(to_hex(*r) == v["expected_digest"].get<std::string>());
        bool snp = v["mode"].get<std::string>().starts_with("snp");
        CHECK(r->size() == (snp ? 48u : 32u));
      }
      ++checked;
    }
  }
  CHECK(checked == 17);
}

TEST_CASE("measure: snp:svsm (upstream test_snp_svsm_{2,4}_vcpus)") {
  measure_options o;
  o.mode = sev_mode::snp_svsm;
  o.vcpu_type = "EPYC-v4";
  o.ovmf = fixture("svsm_ovmf.fd");
  o.svsm = fixture("svsm.bin");
  o.vars_size = 540672;
  o.guest_features = 0x21;  // ignored: SVSM vCPUs always run with SEV_FEATURES = 1
  o.vcpus = 2;
  auto r = compute_launch_digest(o);
  REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
  CHECK(to_hex(*r) ==
        "9b94745036aafddf4f7f8b00c7513abb5b7703178cb95aaa57928bd963d68d3bfcb715d6019b9167ee2517b11b0d9be7");
  o.vcpus = 4;
  r = compute_launch_digest(o);
  REQUIRE(r);
  CHECK(to_hex(*r) ==
        "27d154c27b7b359c935e250ec6fee72aa0ae8c1225e3b0e1cf46a9567e938066d7d6f94bbdc4a857818bdb79277a44b2");
  o.vmm = vmm_type::ec2;
  CHECK_FALSE(compute_launch_digest(o));
  o.vmm = vmm_type::qemu;
  o.vars_size = 4095;
  CHECK_FALSE(compute_launch_digest(o));
}

TEST_CASE("measure: vCPU signatures") {
  CHECK(*vcpu_signature("EPYC-v4") == 0x800f12);
  CHECK(*vcpu_signature("EPYC") == 0x800f12);
  CHECK(*vcpu_signature("EPYC-Rome") == 0x830f10);
  CHECK(*vcpu_signature("EPYC-Milan") == 0xa00f11);
  CHECK(*vcpu_signature("EPYC-Genoa") == 0xa10f10);
  CHECK(*vcpu_signature("EPYC-Turin") == 0xb00f00);
  CHECK(cpu_signature(25, 1, 1) == 0xa00f11);
  CHECK(cpu_signature(6, 0x55, 7) == 0x50657);
  auto bad = vcpu_signature("epyc-v4");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message.find("unknown vCPU type 'epyc-v4'") != std::string::npos);
  CHECK(vcpu_type_names().size() == 16);
}

TEST_CASE("measure: an explicit signature equals the named vCPU type") {
  measure_options o;
  o.mode = sev_mode::snp;
  o.vcpus = 2;
  o.ovmf = fixture("ovmf_AmdSev_suffix.bin");
  o.vcpu_type = "EPYC-Milan";
  auto a = compute_launch_digest(o);
  o.vcpu_type = "no-such-cpu";  // ignored when the signature is given
  o.vcpu_sig = 0xa00f11;
  auto b = compute_launch_digest(o);
  REQUIRE(a);
  REQUIRE(b);
  CHECK(*a == *b);
  o.vcpu_sig = 0xa00f10;
  auto c = compute_launch_digest(o);
  REQUIRE(c);
  CHECK(*c != *a);
}

TEST_CASE("measure: errors") {
  measure_options o;
  o.mode = sev_mode::snp;
  o.vcpus = 1;
  o.vcpu_type = "EPYC-v4";
  o.ovmf = fixture("ovmf_AmdSev_suffix.bin");
  auto msg = [](const measure_options& x) {
    auto r = compute_launch_digest(x);
    REQUIRE_FALSE(r);
    return r.error().message;
  };

  SUBCASE("unknown vcpu type") {
    o.vcpu_type = "EPYC-Zen9";
    CHECK(msg(o).find("unknown vCPU type") != std::string::npos);
  }
  SUBCASE("missing vcpu type for QEMU, but not for GCE") {
    o.vcpu_type.clear();
    CHECK(msg(o).find("missing vCPU type") != std::string::npos);
    o.vmm = vmm_type::gce;
    CHECK(compute_launch_digest(o));
  }
  SUBCASE("zero vcpus") {
    o.vcpus = 0;
    CHECK(msg(o).find("vCPUs") != std::string::npos);
  }
  SUBCASE("ovmf hash outside snp") {
    o.mode = sev_mode::seves;
    o.snp_ovmf_hash = std::string(96, 'a');
    CHECK(msg(o) == "SNP OVMF hash only works with SNP");
  }
  SUBCASE("ovmf hash of the wrong length") {
    o.snp_ovmf_hash = "abcd";
    CHECK(msg(o).find("96 hex digits") != std::string::npos);
  }
  SUBCASE("sev kernel with firmware lacking the hashes table") {
    o.mode = sev_mode::sev;
    o.ovmf = fixture("ovmf_OvmfX64_suffix.bin");
    o.kernel = "/dev/null";
    CHECK(msg(o) == "Kernel specified but OVMF doesn't support kernel/initrd/cmdline measurement");
  }
  SUBCASE("initrd without kernel") {
    o.initrd = "/dev/null";
    CHECK(msg(o).find("without a kernel") != std::string::npos);
  }
  SUBCASE("missing files") {
    o.ovmf = fixture("does-not-exist.fd");
    auto r = compute_launch_digest(o);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == cove::errc::not_found);
    o.ovmf = fixture("ovmf_AmdSev_suffix.bin");
    o.kernel = fixture("no-kernel");
    r = compute_launch_digest(o);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == cove::errc::not_found);
  }
  SUBCASE("firmware without the SEV metadata / footer table") {
    auto tmp = std::filesystem::temp_directory_path() / "cove_measure_zero.fd";
    {
      std::ofstream f(tmp, std::ios::binary);
      std::string zeros(8192, '\0');
      f.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
    }
    o.ovmf = tmp;
    CHECK(msg(o).find("SEV-ES reset block") != std::string::npos);
    o.kernel = "/dev/null";
    CHECK(msg(o).find("SNP_KERNEL_HASHES") != std::string::npos);
    // Plain SEV without a kernel needs no metadata: SHA-256 of the image.
    o.kernel.reset();
    o.mode = sev_mode::sev;
    CHECK(compute_launch_digest(o));
    std::filesystem::remove(tmp);
  }
}

TEST_CASE("measure: OVMF layout parser") {
  auto amd = read_all(fixture("ovmf_AmdSev_suffix.bin"));
  auto x64 = read_all(fixture("ovmf_OvmfX64_suffix.bin"));
  REQUIRE(amd.size() == 4096);
  auto a = parse_ovmf_layout(amd);
  REQUIRE(a);
  CHECK(a->has_section(ovmf_section_snp_kernel_hashes));
  CHECK(a->has_section(ovmf_section_snp_secrets));
  CHECK(a->has_section(ovmf_section_cpuid));
  CHECK(a->entry_u32(*parse_guid("00f771de-1a7e-4fcb-890e-68c77e2fb44e")).has_value());
  CHECK(a->entry_u32(*parse_guid("7255371f-3a3b-4b04-927b-1da6efa8d454")).value_or(0) != 0);
  auto x = parse_ovmf_layout(x64);
  REQUIRE(x);
  CHECK_FALSE(x->has_section(ovmf_section_snp_kernel_hashes));
  CHECK_FALSE(x->sections.empty());

  CHECK(parse_guid("96b582de-1fb2-45f7-baea-a366c55a082d") == guid_le{0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f,
                                                                      0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66,
                                                                      0xc5, 0x5a, 0x08, 0x2d});
  CHECK_FALSE(parse_guid("96b582de-1fb2-45f7-baea-a366c55a082"));
  CHECK_FALSE(parse_guid("96b582de-1fb2-45f7-baea-a366c55a082g"));

  // Too small, truncated and corrupted images are errors, never crashes.
  CHECK_FALSE(parse_ovmf_layout(std::span(amd).last(40)));
  for (size_t cut : {64u, 200u, 1024u, 2048u}) (void)parse_ovmf_layout(std::span(amd).last(cut));
  auto bad = amd;
  // Footer entry size field sits 50 bytes before the end; make it larger than the image.
  bad[bad.size() - 50] = 0xff;
  bad[bad.size() - 49] = 0xff;
  CHECK_FALSE(parse_ovmf_layout(bad));
  // Corrupt the "ASEV" signature.
  auto off = a->entry_u32(*parse_guid("dc886566-984a-4798-a75e-5585a7bf67cc"));
  REQUIRE(off);
  bad = amd;
  bad[bad.size() - *off] ^= 1;
  auto r = parse_ovmf_layout(bad);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("signature") != std::string::npos);
}

TEST_CASE("measure: mode and vmm names") {
  CHECK(*parse_sev_mode("snp") == sev_mode::snp);
  CHECK(*parse_sev_mode("SEV-ES") == sev_mode::seves);
  CHECK(*parse_sev_mode("snp:ovmf-hash") == sev_mode::snp_ovmf_hash);
  CHECK(*parse_sev_mode("SNP:SVSM") == sev_mode::snp_svsm);
  CHECK_FALSE(parse_sev_mode("tdx"));
  CHECK(*parse_vmm_type("gce") == vmm_type::gce);
  CHECK_FALSE(parse_vmm_type("qemu"));
}
