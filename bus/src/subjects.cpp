#include "cove/bus/subjects.hpp"

namespace cove::bus {

namespace {
bool id_char(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}
}  // namespace

bool valid_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id)
    if (!id_char(c)) return false;
  return true;
}

bool valid_leaf(std::string_view leaf) noexcept {
  if (leaf.empty() || leaf.size() > 128) return false;
  bool token_empty = true;
  for (char c : leaf) {
    if (c == '.') {
      if (token_empty) return false;
      token_empty = true;
    } else if (id_char(c) || c == '_') {
      token_empty = false;
    } else {
      return false;
    }
  }
  return !token_empty;
}

std::optional<std::string> cvm_subject(std::string_view cvm_id, std::string_view leaf) {
  if (!valid_id(cvm_id) || !valid_leaf(leaf)) return std::nullopt;
  std::string s(subjects::cvm_prefix);
  s += cvm_id;
  s += '.';
  s += leaf;
  return s;
}

std::optional<std::string> events_subject(std::string_view kind) {
  if (!valid_leaf(kind)) return std::nullopt;
  std::string s(subjects::events_prefix);
  s += kind;
  return s;
}

std::optional<std::string> cvm_id_of(std::string_view subject) {
  if (!subject.starts_with(subjects::cvm_prefix)) return std::nullopt;
  auto rest = subject.substr(subjects::cvm_prefix.size());
  auto dot = rest.find('.');
  auto id = rest.substr(0, dot);
  if (!valid_id(id)) return std::nullopt;
  if (dot != std::string_view::npos && !valid_leaf(rest.substr(dot + 1))) return std::nullopt;
  return std::string(id);
}

std::optional<std::string> cvm_leaf_of(std::string_view subject) {
  if (!cvm_id_of(subject)) return std::nullopt;
  auto rest = subject.substr(subjects::cvm_prefix.size());
  auto dot = rest.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  return std::string(rest.substr(dot + 1));
}

}  // namespace cove::bus
