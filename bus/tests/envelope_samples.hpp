#pragma once
// Valid envelopes of several body types (fuzz seeds and test inputs).
#include <string>
#include <utility>
#include <vector>

#include "cove/bus/envelope.hpp"

namespace cove::bus::testing {

inline std::vector<std::pair<std::string, std::vector<uint8_t>>> sample_envelopes() {
  namespace v1 = cove::v1;
  std::vector<std::pair<std::string, std::vector<uint8_t>>> out;
  out.emplace_back("error", make_error(errc::not_found, "no such cvm", "c1", "coved.manager"));
  out.emplace_back("ok", make_ok("c2", "agent.cvm-1"));
  {
    flatbuffers::FlatBufferBuilder fbb;
    auto b = v1::CreateCvmInfoDirect(fbb, "cvm-1", v1::Backend::process, v1::Tee::sim, v1::CvmState::running,
                                     42, 1700000000000000000LL, 60, "ok");
    out.emplace_back("cvm_info", finish(fbb, b, "c3", "coved.manager"));
  }
  {
    flatbuffers::FlatBufferBuilder fbb;
    auto i1 = v1::CreateCvmInfoDirect(fbb, "a");
    auto i2 = v1::CreateCvmInfoDirect(fbb, "b", v1::Backend::libvirt, v1::Tee::sev_snp);
    std::vector<flatbuffers::Offset<v1::CvmInfo>> v{i1, i2};
    out.emplace_back("cvm_list", finish(fbb, v1::CreateCvmListDirect(fbb, &v), "c4", "coved.manager"));
  }
  {
    flatbuffers::FlatBufferBuilder fbb;
    std::vector<uint8_t> hash(32, 7), key(44, 9);
    auto ds = v1::CreateDatasetDirect(fbb, "a.csv", &hash, &key);
    std::vector<flatbuffers::Offset<v1::Dataset>> dss{ds};
    std::vector<flatbuffers::Offset<flatbuffers::String>> args{fbb.CreateString("--x")};
    auto algo = v1::CreateAlgorithmDirect(fbb, &hash, &key, v1::AlgoType::python, &args);
    auto cons = v1::CreateConsumerDirect(fbb, &key);
    std::vector<flatbuffers::Offset<v1::Consumer>> cs{cons};
    auto man = v1::CreateManifestDirect(fbb, "comp-1", "n", "d", &dss, algo, &cs, 30);
    auto start = v1::CreateComputationStartDirect(fbb, "cvm-1", man);
    out.emplace_back("computation_start", finish(fbb, start, "c5", "cli"));
  }
  {
    flatbuffers::FlatBufferBuilder fbb;
    std::vector<uint8_t> data(100, 0x5a);
    auto ch = v1::CreateChunkDirect(fbb, "s-1", 3, &data, true);
    out.emplace_back("chunk", finish(fbb, ch, "c6", "cli"));
  }
  {
    flatbuffers::FlatBufferBuilder fbb;
    std::vector<uint8_t> rep(1184, 1), k(32, 2);
    auto ev = v1::CreateEvidenceDirect(fbb, v1::EvidenceKind::sim_snp, &rep, nullptr, &k, &k);
    out.emplace_back("evidence", finish(fbb, ev, "c7", "agent.cvm-1"));
  }
  {
    flatbuffers::FlatBufferBuilder fbb;
    std::vector<flatbuffers::Offset<flatbuffers::String>> pending{fbb.CreateString("a.csv")};
    auto st = v1::CreateComputationStatusDirect(fbb, "cvm-1", "comp-1", v1::AgentState::ReceivingData,
                                                "waiting", &pending);
    out.emplace_back("computation_status", finish(fbb, st, "c8", "agent.cvm-1"));
  }
  {
    flatbuffers::FlatBufferBuilder fbb;
    auto ev = v1::CreateEventDirect(fbb, "cvm", "cvm-1", "", "running", "", 1);
    out.emplace_back("event", finish(fbb, ev, "c9", "coved.monitor"));
  }
  return out;
}

}  // namespace cove::bus::testing
