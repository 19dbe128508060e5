// Fuzzes evidence_from_json (the file `cove attestation validate --evidence` reads) and
// checks that whatever it accepts survives evidence_to_json unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "cove/cli/evidence_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto e = cove::cli::evidence_from_json(text);
  if (!e) return 0;
  auto back = cove::cli::evidence_from_json(cove::cli::evidence_to_json(*e));
  if (!back || back->kind != e->kind || back->cvm_id != e->cvm_id || back->nonce != e->nonce ||
      back->report != e->report || back->cert_chain != e->cert_chain ||
      back->kx_public_key != e->kx_public_key || back->sign_public_key != e->sign_public_key ||
      back->vtpm.has_value() != e->vtpm.has_value())
    std::abort();
  if (e->vtpm && (back->vtpm->ak_public != e->vtpm->ak_public || back->vtpm->ak_spki != e->vtpm->ak_spki ||
                  back->vtpm->quote != e->vtpm->quote || back->vtpm->signature != e->vtpm->signature ||
                  back->vtpm->pcrs != e->vtpm->pcrs || back->vtpm->event_log != e->vtpm->event_log))
    std::abort();
  if (back->dice.has_value() != e->dice.has_value() ||
      (e->dice &&
       (back->dice->chain != e->dice->chain || back->dice->binding_signature != e->dice->binding_signature)))
    std::abort();
  return 0;
}
