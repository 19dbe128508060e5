#pragma once
// RAII for C handles: a unique_ptr with a function-pointer deleter, plus an
// out-parameter adapter for APIs that return a handle through T**.
#include <memory>

namespace cove {

template <class T, auto Free>
struct c_deleter {
  void operator()(T* p) const noexcept {
    if (p != nullptr) Free(p);
  }
};

template <class T, auto Free>
using c_handle = std::unique_ptr<T, c_deleter<T, Free>>;

/// out_ptr(h): pass to `f(T** out)`; on scope exit h owns what f stored.
template <class Handle>
class out_ptr_t {
 public:
  using pointer = typename Handle::pointer;
  explicit out_ptr_t(Handle& h) noexcept : h_(h) {}
  out_ptr_t(const out_ptr_t&) = delete;
  out_ptr_t& operator=(const out_ptr_t&) = delete;
  ~out_ptr_t() { h_.reset(p_); }
  operator pointer*() noexcept { return &p_; }  // NOLINT(google-explicit-constructor)

 private:
  Handle& h_;
  pointer p_ = nullptr;
};

template <class Handle>
out_ptr_t<Handle> out_ptr(Handle& h) noexcept {
  return out_ptr_t<Handle>(h);
}

}  // namespace cove
