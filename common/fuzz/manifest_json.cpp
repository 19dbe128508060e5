// Fuzzes parse_manifest_json; whatever parses must survive to_json and the
// FlatBuffers form unchanged.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "cove/manifest.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto m = cove::parse_manifest_json(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!m) {
    if (m.error().message.empty()) std::abort();
    return 0;
  }
  auto again = cove::parse_manifest_json(cove::to_json(*m));
  if (!again || !(*again == *m)) std::abort();
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(cove::to_fbs(fbb, *m));
  flatbuffers::Verifier v(fbb.GetBufferPointer(), fbb.GetSize());
  if (!v.VerifyBuffer<cove::v1::Manifest>(nullptr)) std::abort();
  auto back = cove::from_fbs(flatbuffers::GetRoot<cove::v1::Manifest>(fbb.GetBufferPointer()));
  if (!back || !(*back == *m)) std::abort();
  return 0;
}
