#pragma once
// All actor interfaces and atoms of coved, in one place (CAF 0.17.6 syntax).
// Services talk to each other only over the bus; these interfaces are how the
// bus, child-process reapers and timers reach a service's actor.
#include <caf/all.hpp>

#include <string>
#include <vector>

#include "cove/bus/actor.hpp"  // cove::bus::bus_msg

namespace cove::atom {
// Texts are unique, <= 10 characters of [A-Za-z0-9_].
using exited = caf::atom_constant<caf::atom("exited")>;        // a child process ended
using deadline = caf::atom_constant<caf::atom("deadline")>;    // a create/remove took too long
using expire = caf::atom_constant<caf::atom("expire")>;        // a CVM's TTL ran out
using forwarded = caf::atom_constant<caf::atom("forwarded")>;  // reply from an agent arrived
using verify = caf::atom_constant<caf::atom("verify")>;        // evidence for a verifier worker
using hb_check = caf::atom_constant<caf::atom("hb_check")>;    // monitor: deadlines, sampling, resync
using sample = caf::atom_constant<caf::atom("sample")>;        // monitor -> its stats sampler: a round
using sampled = caf::atom_constant<caf::atom("sampled")>;      // stats sampler -> monitor: round done
using mgr_reply = caf::atom_constant<caf::atom("mgr_reply")>;  // monitor: the manager answered
using launched = caf::atom_constant<caf::atom("launched")>;    // manager: a backend launch finished
}  // namespace cove::atom

namespace cove {

/// The MANAGER actor: CVM lifecycle (cove.v1.manager.*), one per coved.
///  - bus_msg: requests on cove.v1.manager.* and agent events on cove.v1.cvm.*.events
///  - (exited, cvm_id, wait status): the agent process of a CVM ended
///  - (deadline, cvm_id, generation): a pending create/remove ran out of time
///  - (expire, cvm_id): the CVM's TTL ran out
///  - (launched, cvm_id, pid, error code, error text): a launch worker (a detached actor
///    per create: backends block, libvirt for seconds) finished; code 0 = started
using manager_actor =
    caf::typed_actor<caf::reacts_to<bus::bus_msg>, caf::reacts_to<atom::exited, std::string, int>,
                     caf::reacts_to<atom::deadline, std::string, uint64_t>,
                     caf::reacts_to<atom::expire, std::string>,
                     caf::reacts_to<atom::launched, std::string, int32_t, uint8_t, std::string>>;

/// The COMPUTATION actor: manifests and run state (cove.v1.computation.*).
///  - bus_msg: requests on cove.v1.computation.* and agent events
///  - (forwarded, reply subject, payload): an agent's answer to a forwarded request
using computation_actor =
    caf::typed_actor<caf::reacts_to<bus::bus_msg>,
                     caf::reacts_to<atom::forwarded, std::string, std::vector<uint8_t>>>;

/// The ATTESTATION actor: verifies evidence and caches verdicts (cove.v1.attestation.verify).
///  - bus_msg: VerifyRequest on cove.v1.attestation.verify
using attestation_actor = caf::typed_actor<caf::reacts_to<bus::bus_msg>>;

/// The BRIDGE actor: reacts to CVM lifecycle events (cove.v1.events.cvm) by closing the
/// agent link of a CVM whose policy changed or that went away. The TLS front itself
/// (cove::bridge::server) runs on its own threads.
///  - bus_msg: events on cove.v1.events.cvm
using bridge_actor = caf::typed_actor<caf::reacts_to<bus::bus_msg>>;

/// The MONITOR actor: agent heartbeats, health, resource stats (cove.v1.monitor.*).
///  - bus_msg: cove.v1.cvm.*.heartbeat, cove.v1.events.cvm, requests on cove.v1.monitor.*
///  - hb_check: its own periodic timer (heartbeat deadlines, sampling rounds, resync)
///  - (sampled, round): the stats sampler finished a round (results on the shared board)
///  - (mgr_reply, cvm id or "" for list, payload): the manager answered info/list
using monitor_actor = caf::typed_actor<caf::reacts_to<bus::bus_msg>, caf::reacts_to<atom::hb_check>,
                                       caf::reacts_to<atom::sampled, uint64_t>,
                                       caf::reacts_to<atom::mgr_reply, std::string, std::vector<uint8_t>>>;

/// The STATS SAMPLER of the monitor, spawned detached and linked: stats sources may block
/// (/proc scans, libvirt RPC), so they run on its own thread, never the monitor's.
///  - (sample, round): sample the targets on the shared board, then tell the monitor
using stats_sampler_actor = caf::typed_actor<caf::reacts_to<atom::sample, uint64_t>>;

/// A VERIFIER worker of the attestation service, spawned detached: certificate-chain and
/// report-signature checks (RSA/ECDSA) block its own thread, never the service's.
///  - (verify, VerifyRequest envelope) -> (valid, reason, measurement, report version, product,
///    vtpm verified, dice verified)
using attestation_verifier_actor = caf::typed_actor<caf::replies_to<atom::verify, std::vector<uint8_t>>::with<
    bool, std::string, std::vector<uint8_t>, uint32_t, std::string, bool, bool>>;

}  // namespace cove
