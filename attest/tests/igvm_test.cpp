// IGVM: cove's OVMF→IGVM builder measured by the IGVM path against the OVMF path of
// compute_launch_digest (and a sev-snp-measure vector), the default (QEMU/KVM) page
// semantics against an independent PAGE_INFO replay, and every parser rejection.
#include <doctest/doctest.h>
#include <openssl/evp.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cove/attest/igvm.hpp"
#include "cove/attest/measure.hpp"
#include "cove/attest/snp_report.hpp"

using namespace cove::attest;
using bytes = std::vector<uint8_t>;

namespace {

const std::string dir = std::string(COVE_FIXTURES_DIR) + "/snp-measure/";

bytes read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

uint32_t rd32(const bytes& b, size_t at) {
  return static_cast<uint32_t>(b[at]) | (static_cast<uint32_t>(b[at + 1]) << 8) |
         (static_cast<uint32_t>(b[at + 2]) << 16) | (static_cast<uint32_t>(b[at + 3]) << 24);
}
template <class T>
void wr(bytes& b, size_t at, T v) {
  for (size_t i = 0; i < sizeof(T); ++i)
    b[at + i] = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
}

/// Recomputes the header checksum after a deliberate edit (so the edit, not the
/// checksum, is what the parser sees).
void reseal(bytes& f) {
  wr<uint32_t>(f, 20, 0);
  size_t vh = rd32(f, 8), vs = rd32(f, 12);
  bytes fh(f.begin(), f.begin() + 24);
  wr<uint32_t>(f, 20, igvm_crc32(std::span(f).subspan(vh, vs), igvm_crc32(fh)));
}

/// A hand-made IGVM file: headers (type, body) and file data appended after them.
struct mini {
  std::vector<std::pair<uint32_t, bytes>> headers;
  bytes data;

  void add(uint32_t type, bytes body) { headers.emplace_back(type, std::move(body)); }
  void platform(uint8_t type = igvm_platform_sev_snp, uint32_t mask = 1) {
    bytes b(16, 0);
    wr<uint32_t>(b, 0, mask);
    b[5] = type;
    wr<uint16_t>(b, 6, 1);
    add(igvm_vht_supported_platform, b);
  }
  /// PAGE_DATA; `data_rel` < 0 = no data, else an offset into `data` (fixed up in bytes()).
  void page(uint64_t gpa, int64_t data_rel, uint16_t type = igvm_page_normal, uint32_t flags = 0,
            uint32_t mask = 1) {
    bytes b(24, 0);
    wr<uint64_t>(b, 0, gpa);
    wr<uint32_t>(b, 8, mask);
    wr<uint32_t>(b, 12, data_rel < 0 ? 0u : 0x80000000u | static_cast<uint32_t>(data_rel));
    wr<uint32_t>(b, 16, flags);
    wr<uint16_t>(b, 20, type);
    add(igvm_vht_page_data, b);
  }
  void vp(uint64_t gpa, int64_t data_rel, uint16_t index = 0, uint32_t mask = 1) {
    bytes b(20, 0);
    wr<uint64_t>(b, 0, gpa);
    wr<uint32_t>(b, 8, mask);
    wr<uint32_t>(b, 12, 0x80000000u | static_cast<uint32_t>(data_rel));
    wr<uint16_t>(b, 16, index);
    add(igvm_vht_vp_context, b);
  }
  bytes build() const {
    bytes vh;
    std::vector<size_t> offsets;
    for (const auto& [t, body] : headers) {
      size_t at = vh.size();
      vh.resize(at + 8 + ((body.size() + 7) & ~size_t{7}), 0);
      wr<uint32_t>(vh, at, t);
      wr<uint32_t>(vh, at + 4, static_cast<uint32_t>(body.size()));
      std::copy(body.begin(), body.end(), vh.begin() + static_cast<ptrdiff_t>(at + 8));
      auto type = t & ~igvm_vht_optional_bit;
      if (type == igvm_vht_page_data || type == igvm_vht_vp_context || type == igvm_vht_parameter_area)
        offsets.push_back(at + 8 + (type == igvm_vht_parameter_area ? 12 : 12));
    }
    bytes f(24, 0);
    wr<uint32_t>(f, 0, 0x4D564749);
    wr<uint32_t>(f, 4, 1);
    wr<uint32_t>(f, 8, 24);
    wr<uint32_t>(f, 12, static_cast<uint32_t>(vh.size()));
    const uint32_t start = static_cast<uint32_t>(24 + vh.size());
    for (size_t at : offsets) {
      uint32_t v = rd32(vh, at);
      if (v & 0x80000000u) wr<uint32_t>(vh, at, (v & 0x7fffffffu) + start);
    }
    f.insert(f.end(), vh.begin(), vh.end());
    f.insert(f.end(), data.begin(), data.end());
    wr<uint32_t>(f, 16, static_cast<uint32_t>(f.size()));
    reseal(f);
    return f;
  }
};

/// Independent SNP PAGE_INFO replay (not the library's guest_context).
struct replay {
  std::array<uint8_t, 48> ld{};
  static std::array<uint8_t, 48> sha384(std::span<const uint8_t> d) {
    std::array<uint8_t, 48> out{};
    unsigned n = 0;
    REQUIRE(EVP_Digest(d.data(), d.size(), out.data(), &n, EVP_sha384(), nullptr) == 1);
    return out;
  }
  void page(uint8_t type, uint64_t gpa, std::span<const uint8_t> contents = {}) {
    bytes pi(0x70, 0);
    std::copy(ld.begin(), ld.end(), pi.begin());
    if (!contents.empty()) {
      auto h = sha384(contents);
      std::copy(h.begin(), h.end(), pi.begin() + 48);
    }
    pi[96] = 0x70;
    pi[98] = type;
    wr<uint64_t>(pi, 104, gpa);
    ld = sha384(pi);
  }
  [[nodiscard]] std::string hex() const { return to_hex(ld); }
};

std::string err(const bytes& f, const igvm_measure_options& o = {}) {
  auto r = measure_igvm(f, o);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == cove::errc::invalid_request);
  return r.error().message;
}

bool has(const std::string& s, const std::string& sub) {
  if (s.find(sub) != std::string::npos) return true;
  MESSAGE("'" << s << "' does not contain '" << sub << "'");
  return false;
}

measure_options ovmf_options(const std::string& ovmf, uint32_t vcpus, const std::string& type, uint64_t gf) {
  measure_options o;
  o.mode = sev_mode::snp;
  o.ovmf = dir + ovmf;
  o.vcpus = vcpus;
  o.vcpu_type = type;
  o.guest_features = gf;
  return o;
}

}  // namespace

TEST_CASE("igvm: crc32 is the IEEE/zlib CRC-32") {
  const std::string s = "123456789";
  CHECK(igvm_crc32({reinterpret_cast<const uint8_t*>(s.data()), s.size()}) == 0xCBF43926u);
  CHECK(igvm_crc32({}) == 0u);
}

TEST_CASE("igvm: an IGVM file built from OVMF measures as the OVMF path (native zero pages)") {
  struct cs {
    const char* ovmf;
    uint32_t vcpus;
    const char* type;
    uint64_t gf;
  };
  for (auto c :
       {cs{"ovmf_AmdSev_suffix.bin", 1, "EPYC-v4", 0x1}, cs{"ovmf_AmdSev_suffix.bin", 4, "EPYC-Milan", 0x21},
        cs{"ovmf_OvmfX64_suffix.bin", 3, "EPYC-Turin", 0x1}, cs{"svsm_ovmf.fd", 2, "EPYC-Genoa", 0x1}}) {
    CAPTURE(c.ovmf);
    CAPTURE(c.vcpus);
    auto ovmf = read_all(dir + c.ovmf);
    REQUIRE_FALSE(ovmf.empty());
    igvm_build_options b;
    b.vcpus = c.vcpus;
    b.vcpu_type = c.type;
    b.guest_features = c.gf;
    auto file = build_igvm_from_ovmf(ovmf, b);
    REQUIRE_MESSAGE(file, (file ? "" : file.error().message));
    auto want = compute_launch_digest(ovmf_options(c.ovmf, c.vcpus, c.type, c.gf));
    REQUIRE(want);
    auto m = measure_igvm(*file, {.native_zero = true});
    REQUIRE_MESSAGE(m, (m ? "" : m.error().message));
    CHECK(to_hex(m->digest) == to_hex(*want));
    CHECK(m->vcpus == c.vcpus);
    CHECK(m->policy == 0x30000u);
    CHECK_FALSE(m->id_block_ld);
    // The default (QEMU/KVM: zero pages are normal pages of zeros) differs when the
    // OVMF has zero-page sections, which all these do.
    auto q = measure_igvm(*file);
    REQUIRE(q);
    CHECK(q->digest != m->digest);
    CHECK(q->pages == m->pages);
  }
}

TEST_CASE("igvm: reproduces a sev-snp-measure vector through the builder") {
  std::ifstream in(dir + "vectors.json");
  std::stringstream ss;
  ss << in.rdbuf();
  auto doc = nlohmann::json::parse(ss.str());
  const nlohmann::json* v = nullptr;
  for (const auto& x : doc["derived_vectors"])
    if (x["id"] == "derived_snp_2vcpus_milan_nokernel_gf1") v = &x;
  REQUIRE(v != nullptr);
  igvm_build_options b;
  b.vcpus = (*v)["vcpus"].get<uint32_t>();
  b.vcpu_type = (*v)["vcpu_type"].get<std::string>();
  b.guest_features = 0x1;
  auto file = build_igvm_from_ovmf(read_all(dir + (*v)["ovmf"].get<std::string>()), b);
  REQUIRE(file);
  auto m = measure_igvm(*file, {.native_zero = true});
  REQUIRE(m);
  CHECK(to_hex(m->digest) == (*v)["expected_digest"].get<std::string>());
}

TEST_CASE("igvm: reproduces the upstream snp:svsm vectors with an SVSM + OVMF IGVM file") {
  auto ovmf = read_all(dir + "svsm_ovmf.fd");
  auto svsm = read_all(dir + "svsm.bin");
  for (auto [vcpus, want] : {std::pair{2u,
                                       "9b94745036aafddf4f7f8b00c7513abb5b7703178cb95aaa57928bd963d68d3bfcb71"
                                       "5d6019b9167ee2517b11b0d9be7"},
                             std::pair{4u,
                                       "27d154c27b7b359c935e250ec6fee72aa0ae8c1225e3b0e1cf46a9567e938066d7d6f"
                                       "94bbdc4a857818bdb79277a44b2"}}) {
    igvm_build_options b;
    b.vcpus = vcpus;
    b.vcpu_type = "EPYC-v4";
    b.svsm = svsm;
    b.vars_size = 540672;
    auto file = build_igvm_from_ovmf(ovmf, b);
    REQUIRE_MESSAGE(file, (file ? "" : file.error().message));
    auto m = measure_igvm(*file, {.native_zero = true});
    REQUIRE_MESSAGE(m, (m ? "" : m.error().message));
    CHECK(to_hex(m->digest) == want);
    CHECK(m->vcpus == vcpus);
  }
  igvm_build_options b;
  b.vcpu_type = "EPYC-v4";
  b.svsm = svsm;
  b.vars_size = 4095;
  CHECK_FALSE(build_igvm_from_ovmf(ovmf, b));
}

TEST_CASE("igvm: the default page semantics match an independent PAGE_INFO replay") {
  auto ovmf = read_all(dir + "ovmf_AmdSev_suffix.bin");
  igvm_build_options b;
  b.vcpus = 2;
  b.vcpu_type = "EPYC-Genoa";
  auto file = build_igvm_from_ovmf(ovmf, b);
  REQUIRE(file);
  auto parsed = parse_igvm(*file);
  REQUIRE(parsed);
  CHECK(parsed->format_version == 1u);
  REQUIRE(parsed->platforms.size() == 1);
  CHECK(parsed->platforms[0].platform_type == igvm_platform_sev_snp);

  // Replay from the parsed directives with the QEMU/KVM rules, hashing independently.
  replay r;
  const bytes zero(4096, 0);
  for (const auto& h : parsed->headers) {
    if (h.type == igvm_vht_page_data) {
      if (h.data_type == igvm_page_secrets)
        r.page(5, h.gpa);
      else if (h.data_type == igvm_page_cpuid_data)
        r.page(6, h.gpa);
      else if (h.file_offset == 0)
        r.page(1, h.gpa, zero);
      else
        r.page(1, h.gpa, parsed->data(h, 4096));
    } else if (h.type == igvm_vht_vp_context) {
      CHECK(h.gpa == 0xFFFFFFFFF000ULL);
      r.page(2, h.gpa, parsed->data(h, 4096));
    }
  }
  auto m = measure_igvm(*file);
  REQUIRE(m);
  CHECK(to_hex(m->digest) == r.hex());
  // The OVMF image is the first PAGE_DATA run, ending at 4 GiB.
  CHECK(parsed->headers[1].type == igvm_vht_page_data);
  CHECK(parsed->headers[1].gpa == 0x100000000ULL - ovmf.size());
}

TEST_CASE("igvm: parameter areas, unmeasured and 2 MiB pages, ID block, optional headers") {
  mini m;
  m.platform();
  m.platform(igvm_platform_native, 2);
  {  // GUEST_POLICY
    bytes b(16, 0);
    wr<uint64_t>(b, 0, 0x30000);
    wr<uint32_t>(b, 8, 1);
    m.add(igvm_vht_guest_policy, b);
  }
  m.data.assign(2 * 4096, 0);
  for (size_t i = 0; i < 4096; ++i) m.data[i] = static_cast<uint8_t>(i * 7);
  m.data[4096] = 0x90;  // the VMSA page
  m.page(0x100000, 0);
  m.page(0x101000, -1, igvm_page_normal, igvm_page_flag_unmeasured);
  m.page(0x200000, -1, igvm_page_normal, igvm_page_flag_2mb);
  m.page(0x500000, 0, igvm_page_normal, 0, 2);  // native only: not measured for SNP
  {                                             // PARAMETER_AREA index 7, 2 pages; VP_COUNT in it; insert
    bytes a(16, 0);
    wr<uint64_t>(a, 0, 0x2000);
    wr<uint32_t>(a, 8, 7);
    m.add(igvm_vht_parameter_area, a);
    bytes u(8, 0);
    wr<uint32_t>(u, 0, 7);
    wr<uint32_t>(u, 4, 0x10);
    m.add(igvm_vht_vp_count_parameter, u);
    bytes ins(16, 0);
    wr<uint64_t>(ins, 0, 0x600000);
    wr<uint32_t>(ins, 8, 1);
    wr<uint32_t>(ins, 12, 7);
    m.add(igvm_vht_parameter_insert, ins);
  }
  {  // REQUIRED_MEMORY: no measurement
    bytes b(24, 0);
    wr<uint64_t>(b, 0, 0x800000);
    wr<uint32_t>(b, 8, 1);
    wr<uint32_t>(b, 12, 0x4000);
    m.add(igvm_vht_required_memory, b);
  }
  m.add(igvm_vht_optional_bit | 0x3F0, bytes(12, 0xAB));  // an optional type cove does not know
  {                                                       // SNP_ID_BLOCK with a launch digest of 0x11s
    bytes b(696, 0);
    wr<uint32_t>(b, 0, 1);
    std::fill(b.begin() + 8, b.begin() + 56, 0x11);
    m.add(igvm_vht_snp_id_block, b);
  }
  m.vp(0xFFFFFFFFF000ULL, 4096);
  auto f = m.build();

  auto r = measure_igvm(f);
  REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
  replay want;
  want.page(1, 0x100000, std::span(m.data).first(4096));
  want.page(4, 0x101000);
  const bytes zero(4096, 0);
  for (uint64_t off = 0; off < (2u << 20); off += 4096) want.page(1, 0x200000 + off, zero);
  want.page(4, 0x600000);
  want.page(4, 0x601000);
  want.page(2, 0xFFFFFFFFF000ULL, std::span(m.data).subspan(4096, 4096));
  CHECK(to_hex(r->digest) == want.hex());
  CHECK(r->pages == 1 + 1 + 512 + 2 + 1);
  CHECK(r->policy == 0x30000u);
  REQUIRE(r->id_block_ld);
  CHECK((*r->id_block_ld)[0] == 0x11);
  CHECK(r->vcpus == 1u);
}

TEST_CASE("igvm: corrupted and truncated files fail with clear errors") {
  igvm_build_options b;
  b.vcpus = 2;
  b.vcpu_type = "EPYC-v4";
  auto good = *build_igvm_from_ovmf(read_all(dir + "ovmf_AmdSev_suffix.bin"), b);
  REQUIRE(measure_igvm(good));
  const size_t vh_size = rd32(good, 12);

  SUBCASE("every truncation") {
    for (size_t n :
         {size_t{0}, size_t{3}, size_t{23}, size_t{24}, size_t{100}, 24 + vh_size, good.size() - 1}) {
      CAPTURE(n);
      bytes t(good.begin(), good.begin() + static_cast<ptrdiff_t>(n));
      auto e = err(t);
      CHECK(has(e, n < 24 ? std::string("smaller than the 24-byte fixed header")
                          : "total_file_size " + std::to_string(good.size()) + " but the file is"));
    }
    // Truncated but with total_file_size and checksum fixed up: the last VMSA is cut.
    bytes t(good.begin(), good.end() - 1);
    wr<uint32_t>(t, 16, static_cast<uint32_t>(t.size()));
    reseal(t);
    CHECK(has(err(t), "VP_CONTEXT file data"));
  }
  SUBCASE("magic, version, checksum, sizes") {
    auto f = good;
    f[0] = 'X';
    CHECK(has(err(f), "not an IGVM file"));
    f = good;
    wr<uint32_t>(f, 4, 3);
    CHECK(has(err(f), "format version 3 is not supported"));
    f = good;
    f[24 + 9] ^= 1;  // inside the first variable header
    CHECK(has(err(f), "does not match the headers' CRC32"));
    f = good;
    wr<uint32_t>(f, 8, 20);
    CHECK(has(err(f), "variable_header_offset 0x14"));
    f = good;
    wr<uint32_t>(f, 12, static_cast<uint32_t>(good.size()));
    CHECK(has(err(f), "runs past the end of the file"));
  }
  SUBCASE("unknown required type, wrong lengths, section order") {
    auto f = good;
    wr<uint32_t>(f, 24, 0x3F0);  // the SUPPORTED_PLATFORM header's type
    reseal(f);
    CHECK(has(err(f), "offset 0x18: unknown variable header type 0x3f0 (not marked optional)"));
    f = good;
    wr<uint32_t>(f, 24 + 4, 24);  // platform header claims 24 bytes
    reseal(f);
    CHECK(has(err(f), "SUPPORTED_PLATFORM has length 24, expected 16"));
    f = good;
    wr<uint32_t>(f, 24 + 4, static_cast<uint32_t>(vh_size));
    reseal(f);
    CHECK(has(err(f), "runs past the variable header section"));
    mini m;
    bytes area(16, 0);
    wr<uint64_t>(area, 0, 0x1000);
    m.add(igvm_vht_parameter_area, area);  // a directive (without a mask) before the platform
    m.platform();
    m.data.assign(8, 0);
    CHECK(has(err(m.build()), "header type 0x1 (platform section) after a later section's header"));
  }
  SUBCASE("file data and field checks") {
    mini m;
    m.platform();
    m.data.assign(4096, 0);
    m.page(0x1001, -1);
    CHECK(has(err(m.build()), "PAGE_DATA GPA 0x1001 is not aligned"));
    m.headers.pop_back();
    m.page(0x1000, 1);  // one byte into a 4 KiB data section: the page runs past the end
    CHECK(has(err(m.build()), "PAGE_DATA file data"));
    m.headers.pop_back();
    m.page(0x1000, -1, 9);
    CHECK(has(err(m.build()), "PAGE_DATA data type 9 is unknown"));
    m.headers.pop_back();
    m.page(0x1000, -1, igvm_page_normal, 0, 4);
    CHECK(has(err(m.build()), "compatibility mask 0x4 does not name declared platforms"));
    m.headers.pop_back();
    bytes ins(16, 0);
    wr<uint32_t>(ins, 8, 1);
    wr<uint32_t>(ins, 12, 3);
    m.add(igvm_vht_parameter_insert, ins);
    CHECK(has(err(m.build()), "PARAMETER_INSERT of parameter area 3, which is not declared"));
    m.headers.pop_back();
    m.add(0x306, bytes(8, 0));
    CHECK(has(err(m.build()), "unknown variable header type 0x306"));
  }
  SUBCASE("measurement refusals") {
    mini m;
    m.platform(igvm_platform_tdx);
    m.data.assign(4096, 0);
    m.page(0x1000, 0);
    CHECK(has(err(m.build()), "declares no SEV-SNP platform"));
    mini n;
    n.platform();
    n.data.assign(4096, 0);
    n.page(0x1000, 0);
    CHECK(has(err(n.build()), "no SEV-SNP VP_CONTEXT"));
    n.vp(0x2000, 0);
    CHECK(has(err(n.build()), "VP_CONTEXT GPA 0x2000: QEMU/KVM only accept the VMSA at 0xfffffffff000"));
    CHECK(measure_igvm(n.build(), {.check_kvm = false}));
    n.headers.pop_back();
    n.vp(0xFFFFFFFFF000ULL, 0, 1);
    CHECK(has(err(n.build()), "VP_CONTEXT for vp_index 1, expected 0"));
    n.headers.pop_back();
    n.vp(0xFFFFFFFFF000ULL, 0);
    n.page(0x3000, -1);
    CHECK(has(err(n.build()), "PAGE_DATA after a VP_CONTEXT"));
    CHECK(measure_igvm(n.build(), {.check_kvm = false}));
    n.headers.pop_back();
    n.headers.pop_back();
    n.page(0x3000, -1, igvm_page_normal, igvm_page_flag_shared);
    n.vp(0xFFFFFFFFF000ULL, 0);
    CHECK(has(err(n.build()), "shared PAGE_DATA"));
    CHECK(measure_igvm(n.build(), {.check_kvm = false}));
    mini r;
    r.platform();
    bytes reloc(48, 0);
    wr<uint32_t>(reloc, 0, 1);
    r.add(igvm_vht_relocatable_region, reloc);
    r.data.assign(4096, 0);
    r.vp(0xFFFFFFFFF000ULL, 0);
    CHECK(has(err(r.build()), "relocatable region for SEV-SNP"));
  }
  SUBCASE("builder errors") {
    CHECK_FALSE(build_igvm_from_ovmf(bytes(4095, 0), b));
    auto e = build_igvm_from_ovmf(bytes(8192, 0), b);
    REQUIRE_FALSE(e);
    CHECK(has(e.error().message, "no SEV metadata sections"));
    igvm_build_options nt;
    nt.vcpu_type = "EPYC-Zen9";
    CHECK_FALSE(build_igvm_from_ovmf(read_all(dir + "ovmf_AmdSev_suffix.bin"), nt));
  }
}

TEST_CASE("igvm: measure_igvm_file reads files and reports missing ones") {
  auto r = measure_igvm_file(dir + "no-such.igvm");
  REQUIRE_FALSE(r);
  CHECK(r.error().code == cove::errc::not_found);
  auto svsm = measure_igvm_file(dir + "svsm.bin");  // not an IGVM file
  REQUIRE_FALSE(svsm);
  CHECK(has(svsm.error().message, "not an IGVM file"));
}
