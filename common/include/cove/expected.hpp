#pragma once
// A small expected<T, cove::error> (C++20 has no std::expected).
#include <cassert>
#include <utility>
#include <variant>

#include "cove/errors.hpp"

namespace cove {

template <class T>
class [[nodiscard]] expected {
 public:
  expected(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT(google-explicit-constructor)
  expected(cove::error err)
      : v_(std::in_place_index<1>, std::move(err)) {}  // NOLINT(google-explicit-constructor)

  [[nodiscard]] bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & {
    assert(has_value());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(has_value());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(has_value());
    return std::get<0>(std::move(v_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const cove::error& error() const& {
    assert(!has_value());
    return std::get<1>(v_);
  }
  cove::error&& error() && {
    assert(!has_value());
    return std::get<1>(std::move(v_));
  }

 private:
  std::variant<T, cove::error> v_;
};

/// expected<void>: success or an error.
template <>
class [[nodiscard]] expected<void> {
 public:
  expected() = default;
  expected(cove::error err) : err_(std::move(err)), ok_(false) {}  // NOLINT(google-explicit-constructor)
  [[nodiscard]] bool has_value() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
  const cove::error& error() const& {
    assert(!ok_);
    return err_;
  }
  cove::error&& error() && {
    assert(!ok_);
    return std::move(err_);
  }

 private:
  cove::error err_{};
  bool ok_ = true;
};

/// Shorthand for returning success from an expected<void> function.
inline expected<void> ok() {
  return {};
}

}  // namespace cove
