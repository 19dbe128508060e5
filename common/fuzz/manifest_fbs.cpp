// Fuzzes from_fbs on untrusted bytes: verified first (as every bus buffer
// is), then read; whatever is accepted must round-trip through to_fbs.
#include <cstdint>
#include <cstdlib>

#include "cove/manifest.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  flatbuffers::Verifier::Options opts;
  opts.max_depth = 16;
  opts.max_tables = 4096;
  flatbuffers::Verifier v(data, size, opts);
  if (!v.VerifyBuffer<cove::v1::Manifest>(nullptr)) return 0;
  auto m = cove::from_fbs(flatbuffers::GetRoot<cove::v1::Manifest>(data));
  if (!m) return 0;
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(cove::to_fbs(fbb, *m));
  auto back = cove::from_fbs(flatbuffers::GetRoot<cove::v1::Manifest>(fbb.GetBufferPointer()));
  if (!back || !(*back == *m)) std::abort();
  return 0;
}
