#pragma once
// The locked-down bus: per-role nkey users, subject permissions, the TLS
// material and the nats-server configuration that enforces them
// (docs/security.md "Bus security").
//
// Every user's reply inbox is "_INBOX.<its nkey public key>"; the server lets
// each user subscribe only to its own, so nobody reads another's replies.
#include <array>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "cove/bus/connection.hpp"
#include "cove/bus/nkeys.hpp"
#include "cove/expected.hpp"

namespace cove::bus::authz {

enum class role { manager, computation, attestation, bridge, monitor, admin, orchestrator };
inline constexpr std::array all_roles = {role::manager, role::computation, role::attestation, role::bridge,
                                         role::monitor, role::admin,       role::orchestrator};

std::string_view to_string(role r) noexcept;
expected<role> role_from_string(std::string_view name);

/// Subjects a user may publish to and subscribe to (NATS wildcards allowed).
/// Nothing else is allowed. allow_responses: the user may also publish one
/// reply to the reply subject of each request it received — only the admin
/// gets it: nats-server forgets those pending replies when it reloads its
/// configuration (which coved does on every computation start), so services
/// instead may publish to the inboxes of exactly the users that send them
/// requests.
struct permissions {
  std::vector<std::string> publish;
  std::vector<std::string> subscribe;
  bool allow_responses = false;
};

/// "_INBOX.<nkey public key>".
std::string inbox_prefix(std::string_view nkey_public);

/// Inbox prefixes of everyone on the bus (see inbox_prefix()).
struct inboxes {
  std::map<role, std::string> roles;
  std::vector<std::string> participants;
};

/// What a role may do. Its replies may go to the inboxes of the users that
/// send it requests:
///   manager      <- admin, bridge (cove.v1.manager.info), orchestrator
///   computation  <- admin, participants (cove.v1.computation.status), orchestrator
///   attestation  <- admin, bridge
///   bridge       <- admin, computation, participants (the CVM subjects)
permissions role_permissions(role r, const inboxes& all);

/// The CVM subjects a participant may publish to (requests to its agent).
inline constexpr std::array<std::string_view, 6> participant_leaves = {"attest", "upload",       "chunk",
                                                                       "result", "result.chunk", "status"};

/// A participant of the computations on `cvm_ids`: the participant leaves of
/// those CVMs, cove.v1.computation.status, and its own inbox.
permissions participant_permissions(const std::set<std::string>& cvm_ids, std::string_view inbox);

struct user {
  std::string nkey;  // "U..."
  permissions perms;
};

struct tls_files {
  std::filesystem::path cert;
  std::filesystem::path key;
};

/// nats-server configuration text: a tls block (when `tls` is given) and an
/// authorization block with one nkey user each.
std::string render_server_config(const tls_files* tls, const std::vector<user>& users);

/// Generates a CA (ECDSA P-256, self-signed) and a server certificate signed by
/// it for `hosts` (IP addresses or DNS names) into PEM files, keys 0600.
expected<void> generate_tls(const std::filesystem::path& ca_cert, const std::filesystem::path& ca_key,
                            const std::filesystem::path& server_cert, const std::filesystem::path& server_key,
                            const std::vector<std::string>& hosts);

/// <state>/bus: keys and configuration of coved's embedded secure bus.
///   ca.pem ca.key server.pem server.key   TLS (P-256)
///   <role>.seed                           one nkey per role
///   nats-server.conf                      generated; rewritten on each grant
/// The directory is 0700, every file 0600. Created on first open, reused after;
/// delete it to rotate everything.
class bus_dir {
 public:
  /// `hosts`: names the server certificate must cover (127.0.0.1, ::1 and
  /// localhost are always included).
  static expected<bus_dir> open_or_create(const std::filesystem::path& dir,
                                          std::vector<std::string> hosts = {});

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return dir_; }
  [[nodiscard]] std::filesystem::path ca_file() const { return dir_ / "ca.pem"; }
  [[nodiscard]] std::filesystem::path config_file() const { return dir_ / "nats-server.conf"; }
  [[nodiscard]] std::filesystem::path seed_file(role r) const;
  [[nodiscard]] tls_files server_tls() const { return {dir_ / "server.pem", dir_ / "server.key"}; }
  [[nodiscard]] std::shared_ptr<const nkeys::user_key> key(role r) const;

  /// `base` with this role's credentials (CA, nkey).
  [[nodiscard]] connect_options credentials(role r, connect_options base = {}) const;

  /// Sets the participants allowed on `cvm_id` (replacing any earlier set;
  /// empty: revokes). Takes effect at the next write_config() + reload.
  void grant(const std::string& cvm_id, const std::vector<nkeys::raw_public>& participants);
  /// Participants' nkeys by CVM (for tests and logs).
  [[nodiscard]] const std::map<std::string, std::set<std::string>>& grants() const noexcept {
    return grants_;
  }

  /// The users: every role, then every granted participant.
  [[nodiscard]] std::vector<user> users() const;
  [[nodiscard]] std::string render() const;
  /// Writes nats-server.conf atomically (temp file 0600, rename).
  [[nodiscard]] expected<void> write_config() const;

 private:
  std::filesystem::path dir_;
  std::map<role, std::shared_ptr<const nkeys::user_key>> keys_;
  std::map<std::string, std::set<std::string>> grants_;  // CVM id -> participant nkey public keys
};

/// Writes `text` to `path` atomically with mode 0600.
expected<void> write_private_file(const std::filesystem::path& path, std::string_view text);

}  // namespace cove::bus::authz
