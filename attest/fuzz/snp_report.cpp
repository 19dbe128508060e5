// Fuzzes parse_snp_report and check_policy (permissive policy) on untrusted report bytes.
#include <cstddef>
#include <cstdint>
#include <span>

#include "cove/attest/policy.hpp"
#include "cove/attest/snp_report.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  auto r = cove::attest::parse_snp_report(in);
  if (!r) return 0;
  cove::attest::snp_policy p;
  p.allow_debug = true;
  p.allow_migration_agent = true;
  // A parsed report always satisfies the permissive policy with its own REPORT_DATA.
  if (!cove::attest::check_policy(*r, p, std::span(r->report_data))) __builtin_trap();
  for (auto prod : {cove::attest::snp_product::milan, cove::attest::snp_product::turin}) {
    r->product = prod;
    p.product = prod;
    p.minimum_tcb = {1, 1, 1, 1, 1};
    p.measurements = {std::vector<uint8_t>(48, 0)};
    p.chip_ids = {std::vector<uint8_t>(64, 0)};
    (void)cove::attest::check_policy(*r, p, in.first(8));
  }
  return 0;
}
