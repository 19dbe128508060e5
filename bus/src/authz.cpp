#include "cove/bus/authz.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include <fmt/format.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cove/bus/subjects.hpp"
#include "cove/c_handle.hpp"
#include "cove/crypto/x509.hpp"

namespace cove::bus::authz {

namespace fs = std::filesystem;

namespace {

using evp_pkey = c_handle<EVP_PKEY, EVP_PKEY_free>;

std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

std::string list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    out += quote(items[i]);
  }
  return out + "]";
}

bool is_ip(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

expected<void> write_pem(const fs::path& path, X509* cert, EVP_PKEY* key) {
  auto pem = crypto::to_pem(cert, key);
  if (!pem) return pem.error();
  auto r = write_private_file(path, *pem);
  OPENSSL_cleanse(pem->data(), pem->size());
  return r;
}

expected<evp_pkey> p256() {
  evp_pkey key{EVP_EC_gen("P-256")};
  if (!key) return crypto::openssl_error("P-256 key generation");
  return key;
}

}  // namespace

std::string_view to_string(role r) noexcept {
  switch (r) {
    case role::manager:
      return "manager";
    case role::computation:
      return "computation";
    case role::attestation:
      return "attestation";
    case role::bridge:
      return "bridge";
    case role::monitor:
      return "monitor";
    case role::admin:
      return "admin";
    case role::orchestrator:
      return "orchestrator";
  }
  return "unknown";
}

expected<role> role_from_string(std::string_view name) {
  for (auto r : all_roles)
    if (to_string(r) == name) return r;
  return make_error(errc::invalid_request, fmt::format("unknown bus role '{}'", name));
}

std::string inbox_prefix(std::string_view nkey_public) {
  return "_INBOX." + std::string(nkey_public);
}

permissions role_permissions(role r, const inboxes& all) {
  auto inbox_of = [&](role who) {
    auto it = all.roles.find(who);
    return (it == all.roles.end() ? inbox_prefix(to_string(who)) : it->second) + ".>";
  };
  auto participants = [&](std::vector<std::string>& out) {
    for (const auto& p : all.participants) out.push_back(p + ".>");
  };
  permissions p;
  switch (r) {
    case role::manager:
      p.publish = {"cove.v1.events.cvm", inbox_of(role::admin), inbox_of(role::bridge),
                   inbox_of(role::orchestrator), inbox_of(role::monitor)};
      p.subscribe = {"cove.v1.manager.>", "cove.v1.cvm.*.events", "cove.v1.events.bridge"};
      break;
    case role::computation:
      p.publish = {"cove.v1.events.>",   "cove.v1.cvm.*.manifest", "cove.v1.cvm.*.status",
                   "cove.v1.cvm.*.stop", inbox_of(role::admin),    inbox_of(role::orchestrator)};
      participants(p.publish);
      p.subscribe = {"cove.v1.computation.>", "cove.v1.cvm.*.events", std::string(subjects::cvm_events)};
      break;
    case role::attestation:
      p.publish = {inbox_of(role::admin), inbox_of(role::bridge)};
      p.subscribe = {std::string(subjects::attestation_verify)};
      break;
    case role::bridge:
      p.publish = {"cove.v1.cvm.*.>",
                   "cove.v1.events.bridge",
                   std::string(subjects::attestation_verify),
                   std::string(subjects::manager_info),
                   inbox_of(role::admin),
                   inbox_of(role::computation)};
      participants(p.publish);
      p.subscribe = {"cove.v1.cvm.*.>", "cove.v1.events.cvm"};
      break;
    case role::monitor:
      // coved's bus-log watcher (authz) and the monitor service: health and stats events,
      // manager.list/info to learn CVMs' pids and backends, replies to the operator.
      p.publish = {"cove.v1.events.authz",
                   std::string(subjects::health_events),
                   std::string(subjects::stats_events),
                   std::string(subjects::manager_list),
                   std::string(subjects::manager_info),
                   inbox_of(role::admin)};
      p.subscribe = {"cove.v1.events.>", "cove.v1.cvm.*.events", std::string(subjects::all_heartbeats),
                     "cove.v1.monitor.>"};
      break;
    case role::admin:
      p.publish = {"cove.v1.>"};
      p.subscribe = {"cove.v1.>"};
      p.allow_responses = true;
      break;
    case role::orchestrator:
      // coved's orchestrator front doors (gateway/): the cvms client and the
      // manager.ManagerService gateway. CVM lifecycle and computation control,
      // and the events it streams back; nothing on any CVM's own subjects.
      p.publish = {std::string(subjects::manager_create),   std::string(subjects::manager_info),
                   std::string(subjects::manager_remove),   std::string(subjects::computation_start),
                   std::string(subjects::computation_stop), std::string(subjects::computation_status)};
      p.subscribe = {"cove.v1.events.computation", "cove.v1.events.upload", "cove.v1.events.result",
                     "cove.v1.events.cvm", "cove.v1.events.bridge"};
      break;
  }
  p.subscribe.push_back(inbox_of(r));
  return p;
}

permissions participant_permissions(const std::set<std::string>& cvm_ids, std::string_view inbox) {
  permissions p;
  for (const auto& id : cvm_ids)
    for (auto leaf : participant_leaves)
      if (auto s = cvm_subject(id, leaf)) p.publish.push_back(*s);
  p.publish.emplace_back(subjects::computation_status);
  p.subscribe.push_back(std::string(inbox) + ".>");
  return p;
}

std::string render_server_config(const tls_files* tls, const std::vector<user>& users) {
  std::string out =
      "# Generated by coved: do not edit (rewritten on every computation start).\n"
      "# docs/security.md \"Bus security\" explains the roles and their subjects.\n";
  if (tls != nullptr) {
    out += fmt::format("tls {{\n  cert_file: {}\n  key_file: {}\n  timeout: 5\n}}\n",
                       quote(tls->cert.string()), quote(tls->key.string()));
  }
  out += "authorization {\n  users: [\n";
  for (const auto& u : users) {
    out += fmt::format("    {{\n      nkey: {}\n      permissions: {{\n", quote(u.nkey));
    // nats-server reads an empty allow list as "no restriction": say deny-all.
    auto rule = [](const std::vector<std::string>& allow) {
      return allow.empty() ? std::string("{ deny: [\">\"] }") : fmt::format("{{ allow: {} }}", list(allow));
    };
    out += fmt::format("        publish: {}\n", rule(u.perms.publish));
    out += fmt::format("        subscribe: {}\n", rule(u.perms.subscribe));
    if (u.perms.allow_responses) out += "        allow_responses: true\n";
    out += "      }\n    }\n";
  }
  out += "  ]\n}\n";
  return out;
}

expected<void> write_private_file(const fs::path& path, std::string_view text) {
  auto tmp = path;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return make_error(errc::internal, "cannot write " + tmp.string() + ": " + std::strerror(errno));
  bool written = ::fchmod(fd, 0600) == 0;
  size_t done = 0;
  while (written && done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      written = false;
    else
      done += static_cast<size_t>(n);
  }
  written = written && ::fsync(fd) == 0;
  int saved = errno;
  ::close(fd);
  if (!written || ::rename(tmp.c_str(), path.c_str()) != 0) {
    if (written) saved = errno;
    ::unlink(tmp.c_str());
    return make_error(errc::internal, "cannot write " + path.string() + ": " + std::strerror(saved));
  }
  return ok();
}

expected<void> generate_tls(const fs::path& ca_cert, const fs::path& ca_key, const fs::path& server_cert,
                            const fs::path& server_key, const std::vector<std::string>& hosts) {
  auto cak = p256();
  if (!cak) return cak.error();
  auto ca = crypto::issue_certificate(cak->get(), "cove bus CA", nullptr, cak->get(), 3650,
                                      {{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                                       {NID_key_usage, "critical,keyCertSign,cRLSign"},
                                       {NID_subject_key_identifier, "hash"}});
  if (!ca) return ca.error();
  auto sk = p256();
  if (!sk) return sk.error();
  std::string san;
  for (const auto& h : hosts) {
    if (!san.empty()) san += ",";
    san += (is_ip(h) ? "IP:" : "DNS:") + h;
  }
  auto srv = crypto::issue_certificate(sk->get(), "cove bus", ca->get(), cak->get(), 1825,
                                       {{NID_basic_constraints, "critical,CA:FALSE"},
                                        {NID_key_usage, "critical,digitalSignature"},
                                        {NID_ext_key_usage, "serverAuth"},
                                        {NID_subject_alt_name, san},
                                        {NID_authority_key_identifier, "keyid"}});
  if (!srv) return srv.error();
  if (auto r = write_pem(ca_key, nullptr, cak->get()); !r) return r;
  if (auto r = write_pem(ca_cert, ca->get(), nullptr); !r) return r;
  if (auto r = write_pem(server_key, nullptr, sk->get()); !r) return r;
  return write_pem(server_cert, srv->get(), nullptr);
}

fs::path bus_dir::seed_file(role r) const {
  return dir_ / (std::string(to_string(r)) + ".seed");
}

expected<bus_dir> bus_dir::open_or_create(const fs::path& dir, std::vector<std::string> hosts) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return make_error(errc::internal, "cannot create " + dir.string() + ": " + ec.message());
  if (::chmod(dir.c_str(), 0700) != 0)
    return make_error(errc::internal, "chmod " + dir.string() + ": " + std::strerror(errno));
  bus_dir d;
  d.dir_ = dir;
  for (const char* h : {"127.0.0.1", "::1", "localhost"})
    if (std::find(hosts.begin(), hosts.end(), h) == hosts.end()) hosts.emplace_back(h);
  auto tls = d.server_tls();
  bool have_tls = fs::exists(d.ca_file(), ec) && fs::exists(tls.cert, ec) && fs::exists(tls.key, ec);
  if (!have_tls) {
    if (auto r = generate_tls(d.ca_file(), dir / "ca.key", tls.cert, tls.key, hosts); !r) return r.error();
  }
  for (auto r : all_roles) {
    auto file = d.seed_file(r);
    expected<nkeys::user_key> key = make_error(errc::internal, "");
    if (fs::exists(file, ec)) {
      key = nkeys::user_key::load_file(file);
    } else {
      key = nkeys::user_key::generate();
      if (key)
        if (auto s = nkeys::save_seed(*key, file); !s) return s.error();
    }
    if (!key) return key.error();
    d.keys_[r] = std::make_shared<const nkeys::user_key>(std::move(*key));
  }
  return d;
}

std::shared_ptr<const nkeys::user_key> bus_dir::key(role r) const {
  auto it = keys_.find(r);
  return it == keys_.end() ? nullptr : it->second;
}

connect_options bus_dir::credentials(role r, connect_options base) const {
  base.ca_file = ca_file().string();
  base.nkey = key(r);
  return base;
}

void bus_dir::grant(const std::string& cvm_id, const std::vector<nkeys::raw_public>& participants) {
  if (participants.empty()) {
    grants_.erase(cvm_id);
    return;
  }
  auto& set = grants_[cvm_id];
  set.clear();
  for (const auto& pk : participants) set.insert(nkeys::encode_user_public(pk));
}

std::vector<user> bus_dir::users() const {
  std::vector<user> out;
  inboxes all;
  for (const auto& [r, key] : keys_) all.roles[r] = inbox_prefix(key->public_key());
  // One user per participant key, with the union of its CVMs.
  std::map<std::string, std::set<std::string>> cvms_of;
  for (const auto& [cvm, keys] : grants_)
    for (const auto& k : keys) {
      bool is_role = false;
      for (const auto& [r, key] : keys_) is_role |= key->public_key() == k;
      if (!is_role) cvms_of[k].insert(cvm);
    }
  for (const auto& [k, cvms] : cvms_of) all.participants.push_back(inbox_prefix(k));
  for (const auto& [r, key] : keys_) out.push_back({key->public_key(), role_permissions(r, all)});
  for (const auto& [k, cvms] : cvms_of) out.push_back({k, participant_permissions(cvms, inbox_prefix(k))});
  return out;
}

std::string bus_dir::render() const {
  auto tls = server_tls();
  return render_server_config(&tls, users());
}

expected<void> bus_dir::write_config() const {
  return write_private_file(config_file(), render());
}

}  // namespace cove::bus::authz
