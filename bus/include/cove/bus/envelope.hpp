#pragma once
// Building and reading cove.v1.Envelope buffers (schemas/envelope.fbs).
// Every received buffer goes through verified_envelope()/body_as() before use.
#include <flatbuffers/flatbuffers.h>

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cove/bus/connection.hpp"
#include "cove/errors.hpp"
#include "cove/expected.hpp"
#include "cove/schemas/envelope_generated.h"

namespace cove::bus {

namespace v1 = cove::v1;

/// NATS's default max_payload: larger buffers are rejected before verification.
inline constexpr size_t max_envelope_size = size_t{1024} * 1024;

/// Unix epoch nanoseconds.
int64_t now_ns() noexcept;

/// Finishes `fbb` with an Envelope around `body` (schema_version 1, sent_at_ns
/// now, identifier "COV1") and returns a copy of the bytes.
std::vector<uint8_t> finish_envelope(flatbuffers::FlatBufferBuilder& fbb, v1::Body type,
                                     flatbuffers::Offset<void> body, std::string_view correlation_id,
                                     std::string_view sender);

/// finish_envelope() for a typed body. The builder work stays out of line: inlined into every
/// caller, clang-analyzer followed it into flatbuffers' buffer growth and reported a false leak
/// (vector_downward.h:266) in each of them.
template <class Body>
std::vector<uint8_t> finish(flatbuffers::FlatBufferBuilder& fbb, flatbuffers::Offset<Body> body,
                            std::string_view correlation_id, std::string_view sender) {
  return finish_envelope(fbb, v1::BodyTraits<Body>::enum_value, body.Union(), correlation_id, sender);
}

/// An Envelope carrying v1::Error{code, message}.
std::vector<uint8_t> make_error(cove::errc code, std::string_view message, std::string_view correlation_id,
                                std::string_view sender);
/// An Envelope carrying v1::Ok.
std::vector<uint8_t> make_ok(std::string_view correlation_id, std::string_view sender);

/// The envelope if `buf` is 8 B..1 MiB and passes the FlatBuffers verifier
/// (max depth 16, max 4096 tables, file identifier "COV1"); nullptr otherwise.
const v1::Envelope* verified_envelope(std::span<const uint8_t> buf) noexcept;

/// "Error", "CvmInfo", ... ("unknown(<n>)" for numbers this build does not know).
std::string body_name(v1::Body type);

/// The body of a verified envelope if it is a `Body`. A v1::Error body becomes
/// its cove::error (code via errc_from_wire); anything else is invalid_request.
template <class Body>
expected<const Body*> body_as(std::span<const uint8_t> buf) {
  const v1::Envelope* env = verified_envelope(buf);
  if (env == nullptr) return cove::make_error(errc::invalid_request, "malformed envelope");
  constexpr v1::Body want = v1::BodyTraits<Body>::enum_value;
  v1::Body got = env->body_type();
  if constexpr (want != v1::Body::Error) {
    if (got == v1::Body::Error) {
      const auto* e = env->body_as_Error();
      if (e == nullptr) return cove::make_error(errc::invalid_request, "error envelope without body");
      return cove::make_error(errc_from_wire(static_cast<uint8_t>(e->code())),
                              e->message() != nullptr ? e->message()->str() : std::string());
    }
  }
  if (got != want)
    return cove::make_error(errc::invalid_request,
                            "expected " + body_name(want) + " body, got " + body_name(got));
  const auto* body = static_cast<const Body*>(env->body());
  if (body == nullptr)
    return cove::make_error(errc::invalid_request, body_name(want) + " envelope without body");
  return body;
}

/// The body of a verified *request* envelope: like body_as(), except that an
/// Error body is only a wrong body type (invalid_request). Requests carry no
/// errors, and a service must never answer with an error code its caller chose.
template <class Body>
expected<const Body*> request_as(std::span<const uint8_t> buf) {
  const v1::Envelope* env = verified_envelope(buf);
  if (env != nullptr && env->body_type() == v1::Body::Error)
    return cove::make_error(errc::invalid_request,
                            "expected " + body_name(v1::BodyTraits<Body>::enum_value) + " body, got Error");
  return body_as<Body>(buf);
}

/// A reply message together with its verified body (points into msg.data;
/// moving a reply keeps the vector's buffer, so `body` stays valid).
template <class Body>
struct reply {
  message msg;
  const Body* body = nullptr;
};

/// Blocking request whose reply must be an Envelope with a `Body` (an Error
/// reply becomes its cove::error).
template <class Body>
expected<reply<Body>> request_typed(connection& conn, std::string_view subject, std::span<const uint8_t> data,
                                    std::chrono::milliseconds timeout) {
  auto m = conn.request(subject, data, timeout);
  if (!m) return std::move(m).error();
  reply<Body> r{std::move(*m), nullptr};
  auto b = body_as<Body>(r.msg.data);
  if (!b) return std::move(b).error();
  r.body = *b;
  return r;
}

}  // namespace cove::bus
