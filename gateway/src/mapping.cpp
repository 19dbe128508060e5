#include "cove/gateway/mapping.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

namespace cove::gateway {

namespace {

error invalid(std::string text) {
  return make_error(errc::invalid_request, std::move(text));
}

expected<sha3_digest> hash32(const std::string& bytes, const std::string& path) {
  if (bytes.size() != 32) return invalid(fmt::format("{}: expected 32 bytes, got {}", path, bytes.size()));
  sha3_digest d{};
  std::copy(bytes.begin(), bytes.end(), d.begin());
  return d;
}

std::vector<uint8_t> to_bytes(const std::string& s) {
  return {s.begin(), s.end()};
}

expected<void> no_remote_source(bool has_source, const cvms::Source& src, const cvms::KBSConfig* kbs,
                                const std::string& path) {
  if (has_source && !src.url().empty())
    return invalid(path + ".source: remote sources are not supported by cove; upload the file instead");
  if (kbs != nullptr && kbs->enabled()) return invalid(path + ".kbs: key broker downloads are not supported");
  return ok();
}

void set_time(google::protobuf::Timestamp* ts, int64_t at_ns) {
  if (at_ns <= 0) return;
  ts->set_seconds(at_ns / 1'000'000'000);
  ts->set_nanos(static_cast<int32_t>(at_ns % 1'000'000'000));
}

}  // namespace

expected<manifest> manifest_from_run_request(const cvms::ComputationRunReq& req) {
  manifest m;
  m.id = req.id();
  m.name = req.name();
  m.description = req.description();
  for (int i = 0; i < req.datasets_size(); ++i) {
    const auto& d = req.datasets(i);
    auto path = fmt::format("datasets[{}]", i);
    if (auto r = no_remote_source(d.has_source(), d.source(), d.has_kbs() ? &d.kbs() : nullptr, path); !r)
      return r.error();
    auto h = hash32(d.hash(), path + ".hash");
    if (!h) return h.error();
    if (d.filename().empty()) return invalid(path + ".filename: required");
    m.datasets.push_back(dataset_spec{d.filename(), *h, to_bytes(d.userkey())});
  }
  if (!req.has_algorithm()) return invalid("algorithm: required");
  const auto& a = req.algorithm();
  if (auto r = no_remote_source(a.has_source(), a.source(), a.has_kbs() ? &a.kbs() : nullptr, "algorithm");
      !r)
    return r.error();
  auto h = hash32(a.hash(), "algorithm.hash");
  if (!h) return h.error();
  m.algorithm.hash = *h;
  m.algorithm.user_key = to_bytes(a.userkey());
  // cocos: a missing type means a binary ("bin"; the proto comment says "binary").
  const auto& t = a.algo_type();
  if (t.empty() || t == "bin" || t == "binary")
    m.algorithm.type = algo_type::bin;
  else if (t == "python")
    m.algorithm.type = algo_type::python;
  else if (t == "wasm")
    m.algorithm.type = algo_type::wasm;
  else
    return invalid(fmt::format("algorithm.algo_type: '{}' is not supported (bin, python, wasm)", t));
  m.algorithm.algo_args.assign(a.algo_args().begin(), a.algo_args().end());
  for (int i = 0; i < req.result_consumers_size(); ++i)
    m.result_consumers.push_back(to_bytes(req.result_consumers(i).userkey()));
  if (auto v = validate(m); !v) return v.error();
  return m;
}

std::optional<run_request_assembler::result> run_request_assembler::add(const cvms::RunReqChunks& chunk,
                                                                        clock::time_point now) {
  const std::string& id = chunk.id();
  auto it = partial_.find(id);
  if (it == partial_.end()) {
    if (partial_.size() >= max_partial_run_requests)
      return result{id, invalid(fmt::format("more than {} chunked run requests in progress; chunk for '{}' "
                                            "refused",
                                            max_partial_run_requests, id))};
    it = partial_.emplace(id, partial{}).first;
  }
  auto& p = it->second;
  if (p.data.size() + chunk.data().size() > max_run_request_bytes) {
    partial_.erase(it);
    return result{id, make_error(errc::too_large, fmt::format("run request '{}' is over {} bytes", id,
                                                              max_run_request_bytes))};
  }
  p.data += chunk.data();
  p.last = now;
  if (!chunk.is_last()) return std::nullopt;
  std::string data = std::move(p.data);
  partial_.erase(it);
  cvms::ComputationRunReq req;
  if (!req.ParseFromString(data))
    return result{id,
                  invalid(fmt::format("run request '{}': the chunks do not form a ComputationRunReq", id))};
  return result{id, std::move(req)};
}

std::vector<std::string> run_request_assembler::expire(clock::time_point now) {
  std::vector<std::string> gone;
  for (auto it = partial_.begin(); it != partial_.end();) {
    if (now - it->second.last >= run_request_chunk_timeout) {
      gone.push_back(it->first);
      it = partial_.erase(it);
    } else {
      ++it;
    }
  }
  return gone;
}

std::vector<std::string> split_utf8(std::string_view text, size_t max) {
  std::vector<std::string> out;
  if (max < 4) max = 4;
  while (text.size() > max) {
    size_t cut = max;
    // Back up over continuation bytes (10xxxxxx) so a sequence stays whole.
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    if (cut == 0) cut = max;  // not UTF-8 at all: cut anyway
    out.emplace_back(text.substr(0, cut));
    text.remove_prefix(cut);
  }
  if (!text.empty() || out.empty()) out.emplace_back(text);
  return out;
}

cvms::ClientStreamMessage make_agent_event(std::string_view event_type, std::string_view status,
                                           std::string_view originator, const std::string& computation_id,
                                           std::string_view cvm_id, std::string_view message, int64_t at_ns) {
  cvms::ClientStreamMessage out;
  auto* e = out.mutable_agent_event();
  e->set_event_type(std::string(event_type));
  e->set_status(std::string(status));
  e->set_originator(std::string(originator));
  e->set_computation_id(computation_id);
  set_time(e->mutable_timestamp(), at_ns);
  nlohmann::json details = {{"cvm_id", std::string(cvm_id)}, {"message", std::string(message)}};
  e->set_details(details.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  return out;
}

std::vector<cvms::ClientStreamMessage> make_agent_logs(std::string_view level, std::string_view text,
                                                       const std::string& computation_id, int64_t at_ns) {
  std::vector<cvms::ClientStreamMessage> out;
  for (auto& piece : split_utf8(text, max_log_message_bytes)) {
    cvms::ClientStreamMessage m;
    auto* l = m.mutable_agent_log();
    l->set_message(std::move(piece));
    l->set_level(std::string(level));
    l->set_computation_id(computation_id);
    set_time(l->mutable_timestamp(), at_ns);
    out.push_back(std::move(m));
  }
  return out;
}

std::vector<cvms::ClientStreamMessage> map_event(const event_view& ev, std::string_view previous_state,
                                                 const std::string& computation_id) {
  std::vector<cvms::ClientStreamMessage> out;
  auto event = [&](std::string_view type, std::string_view status, std::string_view originator = "agent") {
    out.push_back(
        make_agent_event(type, status, originator, computation_id, ev.cvm_id, ev.message, ev.at_ns));
  };
  std::string level = "INFO";
  if (ev.kind == "computation") {
    const auto& s = ev.state;
    if (s == "ReceivingAlgorithm" || s == "ReceivingData") {
      event(s, "InProgress");
    } else if (s == "Running") {
      event("Running", "Starting");
      event("Running", "InProgress");
    } else if (s == "ConsumingResults") {
      event("Running", "Completed");
      event("ConsumingResults", "Ready");
    } else if (s == "Complete") {
      event("Complete", "Completed");
    } else if (s == "Failed") {
      level = "ERROR";
      if (previous_state == "Running") event("Running", "Failed");
      event("Failed", "Failed");
    } else if (s == "Idle") {
      // A loaded computation was stopped (not the agent's own start-up Idle).
      if (!previous_state.empty() && previous_state != "Idle" && previous_state != "ReceivingManifest")
        event("Stopped", "Stopped");
    }
    // ReceivingManifest: the agent is ready; cocos publishes no event for it.
  } else if (ev.kind == "upload") {
    if (ev.message.find("rejected") != std::string::npos) level = "WARN";
  } else if (ev.kind == "cvm") {
    if (ev.state == "crashed" || ev.state == "stopped" || ev.state == "expired") {
      level = "ERROR";
      // The computation cannot go on: say so in cocos's words.
      if (previous_state != "Complete" && previous_state != "Failed") event("Failed", "Failed", "manager");
    }
  } else if (ev.kind == "bridge") {
    if (ev.state != "admitted") level = "WARN";
  }
  std::string text = ev.kind + ": " + (ev.state.empty() ? "" : ev.state + ": ") + ev.message;
  for (auto& l : make_agent_logs(level, text, computation_id, ev.at_ns)) out.push_back(std::move(l));
  return out;
}

expected<uint32_t> parse_go_duration(std::string_view text) {
  if (text.empty() || text == "0") return 0u;
  auto bad = [&] {
    return invalid(fmt::format("ttl: '{}' is not a duration like 1h30m, 90s or 1.5h", text));
  };
  std::string_view s = text;
  if (s.front() == '-') return invalid(fmt::format("ttl: '{}' is negative", text));
  if (s.front() == '+') s.remove_prefix(1);
  if (s.empty() || s.size() > 64) return bad();
  long double total = 0;  // seconds
  while (!s.empty()) {
    size_t i = 0;
    while (i < s.size() && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) ++i;
    if (i == 0) return bad();
    std::string num(s.substr(0, i));
    if (std::count(num.begin(), num.end(), '.') > 1 || num == ".") return bad();
    s.remove_prefix(i);
    size_t j = 0;
    while (j < s.size() && !((s[j] >= '0' && s[j] <= '9') || s[j] == '.')) ++j;
    std::string_view unit = s.substr(0, j);
    s.remove_prefix(j);
    long double scale = 0;
    if (unit == "ns")
      scale = 1e-9L;
    else if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs")
      scale = 1e-6L;
    else if (unit == "ms")
      scale = 1e-3L;
    else if (unit == "s")
      scale = 1;
    else if (unit == "m")
      scale = 60;
    else if (unit == "h")
      scale = 3600;
    else
      return bad();  // Go requires a unit on every number but "0"
    total += std::strtold(num.c_str(), nullptr) * scale;
    if (total > static_cast<long double>(std::numeric_limits<uint32_t>::max()))
      return invalid(fmt::format("ttl: '{}' is too long", text));
  }
  return static_cast<uint32_t>(std::ceil(total));
}

grpc::Status to_grpc_status(const error& e) {
  using grpc::StatusCode;
  StatusCode c = StatusCode::INTERNAL;
  switch (e.code) {
    case errc::invalid_request:
      c = StatusCode::INVALID_ARGUMENT;
      break;
    case errc::not_found:
      c = StatusCode::NOT_FOUND;
      break;
    case errc::already_exists:
      c = StatusCode::ALREADY_EXISTS;
      break;
    case errc::unauthorized:
      c = StatusCode::PERMISSION_DENIED;
      break;
    case errc::wrong_state:
    case errc::attestation_failed:
      c = StatusCode::FAILED_PRECONDITION;
      break;
    case errc::timeout:
      c = StatusCode::DEADLINE_EXCEEDED;
      break;
    case errc::unavailable:
      c = StatusCode::UNAVAILABLE;
      break;
    case errc::too_large:
      c = StatusCode::RESOURCE_EXHAUSTED;
      break;
    default:
      c = StatusCode::INTERNAL;
      break;
  }
  return {c, e.message};
}

}  // namespace cove::gateway
