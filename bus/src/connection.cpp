#include "cove/bus/connection.hpp"

#include "subscription_impl.hpp"

#include <openssl/err.h>

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

namespace cove::bus {

namespace {

void open_library() {
  static std::once_flag once;
  std::call_once(once, [] { nats_Open(-1); });
}

std::string cstr(std::string_view s) {
  return std::string(s);
}

// Appends nats.c's thread-local error text (e.g. the server's "Authorization
// Violation" or an OpenSSL verify failure) when it adds something.
cove::error with_detail(cove::error e) {
  natsStatus last = NATS_OK;
  const char* text = nats_GetLastError(&last);
  if (text != nullptr && *text != '\0' && e.message.find(text) == std::string::npos) {
    e.message += " (";
    e.message += text;
    e.message += ")";
  }
  return e;
}

int64_t to_ms(std::chrono::milliseconds d) {
  return d.count() < 1 ? 1 : d.count();
}

message copy_out(natsMsg* m) {
  message out;
  if (const char* s = natsMsg_GetSubject(m)) out.subject = s;
  if (const char* r = natsMsg_GetReply(m)) out.reply = r;
  const auto* d = reinterpret_cast<const uint8_t*>(natsMsg_GetData(m));
  int n = natsMsg_GetDataLength(m);
  if (d != nullptr && n > 0) out.data.assign(d, d + n);
  out.no_responders = natsMsg_IsNoResponders(m);
  return out;
}

}  // namespace

cove::error error_from_status(natsStatus s, std::string_view what) {
  std::string msg(what);
  msg += ": ";
  msg += natsStatus_GetText(s);
  errc code = errc::internal;
  switch (s) {
    case NATS_TIMEOUT:
      code = errc::timeout;
      break;
    case NATS_NO_RESPONDERS:
      code = errc::unavailable;
      break;
    case NATS_MAX_PAYLOAD:
      code = errc::too_large;
      break;
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NOT_YET_CONNECTED:
    case NATS_NO_SERVER:
    case NATS_IO_ERROR:
    case NATS_STALE_CONNECTION:
    case NATS_DRAINING:
    case NATS_INSUFFICIENT_BUFFER:  // reconnect buffer full
    case NATS_SLOW_CONSUMER:
      code = errc::unavailable;
      break;
    case NATS_CONNECTION_AUTH_FAILED:
    case NATS_NOT_PERMITTED:
    case NATS_SECURE_CONNECTION_REQUIRED:
    case NATS_SECURE_CONNECTION_WANTED:
    case NATS_SSL_ERROR:  // e.g. the server's certificate is not from the trusted CA
      code = errc::unauthorized;
      break;
    case NATS_INVALID_SUBJECT:
    case NATS_INVALID_ARG:
    case NATS_INVALID_QUEUE_NAME:
      code = errc::invalid_request;
      break;
    default:
      break;
  }
  return cove::make_error(code, std::move(msg));
}

// Shared with NATS callbacks (error/closed handlers, the async-request inbox
// subscription and the deadline thread) so it outlives every callback.
struct connection::state {
  // counters
  std::atomic<uint64_t> slow_consumer{0}, async_errors{0}, disconnects{0}, reconnects{0}, not_permitted{0};
  // credentials and permission violations
  std::shared_ptr<const nkeys::user_key> nkey;
  std::string reply_prefix;  // custom inbox prefix, e.g. "_INBOX.U..."
  std::function<void(const cove::error&)> on_violation;
  mutable std::mutex violation_mu;
  std::string last_violation;
  std::chrono::milliseconds reconnect_wait{50}, reconnect_wait_max{2000};
  // closed callback
  std::mutex closed_mu;
  std::condition_variable closed_cv;
  bool closed = false;
  // async requests
  struct pending {
    std::chrono::steady_clock::time_point deadline;
    std::string subject;
    async_handler done;
  };
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  uint64_t next_token = 1;
  std::string inbox_prefix;  // "_INBOX.<nuid>"; requests reply to "<prefix>.<token>"
  std::unordered_map<uint64_t, pending> pending_by_token;
  std::multimap<std::chrono::steady_clock::time_point, uint64_t> deadlines;
  std::thread sweeper;
  subscription inbox_sub;

  // Removes and returns the pending request `token`, if still there.
  std::optional<pending> take(uint64_t token) {
    std::lock_guard lock(mu);
    auto it = pending_by_token.find(token);
    if (it == pending_by_token.end()) return std::nullopt;
    pending p = std::move(it->second);
    pending_by_token.erase(it);
    auto [b, e] = deadlines.equal_range(p.deadline);
    for (auto d = b; d != e; ++d)
      if (d->second == token) {
        deadlines.erase(d);
        break;
      }
    return p;
  }

  // The server refused to let us publish to `subject`: requests waiting for a
  // reply from it fail now instead of at their deadline.
  void refuse(const std::string& subject, const std::string& reason) {
    std::vector<pending> refused;
    {
      std::lock_guard lock(mu);
      for (auto it = pending_by_token.begin(); it != pending_by_token.end();) {
        if (it->second.subject != subject) {
          ++it;
          continue;
        }
        auto [b, e] = deadlines.equal_range(it->second.deadline);
        for (auto d = b; d != e; ++d)
          if (d->second == it->first) {
            deadlines.erase(d);
            break;
          }
        refused.push_back(std::move(it->second));
        it = pending_by_token.erase(it);
      }
    }
    for (auto& p : refused) p.done(cove::make_error(errc::unauthorized, "the bus refused: " + reason));
  }

  void on_reply(message&& m) {
    auto dot = m.subject.rfind('.');
    if (dot == std::string::npos) return;
    uint64_t token = 0;
    for (char c : std::string_view(m.subject).substr(dot + 1)) {
      if (c < '0' || c > '9') return;
      token = token * 10 + static_cast<uint64_t>(c - '0');
    }
    auto p = take(token);
    if (!p) return;  // late reply after the deadline: dropped
    if (m.no_responders)
      p->done(cove::make_error(errc::unavailable, "no service answers on " + p->subject));
    else
      p->done(std::move(m));
  }

  void sweep() {
    std::unique_lock lock(mu);
    while (!stopping) {
      if (deadlines.empty()) {
        cv.wait(lock);
        continue;
      }
      auto first = deadlines.begin()->first;
      if (std::chrono::steady_clock::now() < first) {
        cv.wait_until(lock, first);
        continue;
      }
      uint64_t token = deadlines.begin()->second;
      deadlines.erase(deadlines.begin());
      auto it = pending_by_token.find(token);
      if (it == pending_by_token.end()) continue;
      pending p = std::move(it->second);
      pending_by_token.erase(it);
      lock.unlock();
      p.done(cove::make_error(errc::timeout, "no reply on " + p.subject + " in time"));
      lock.lock();
    }
  }
};

namespace {

extern "C" void on_error(natsConnection* nc, natsSubscription*, natsStatus err, void* closure) {
  auto* st = static_cast<connection::state*>(closure);
  st->async_errors.fetch_add(1, std::memory_order_relaxed);
  if (err == NATS_SLOW_CONSUMER) st->slow_consumer.fetch_add(1, std::memory_order_relaxed);
  if (err == NATS_NOT_PERMITTED) {
    const char* text = nullptr;
    natsConnection_GetLastError(nc, &text);
    std::string reason = text != nullptr && *text != '\0' ? text : "permission violation";
    {
      std::lock_guard lock(st->violation_mu);
      st->last_violation = reason;
    }
    st->not_permitted.fetch_add(1, std::memory_order_release);  // after the text: readers see both
    // "Permissions Violation for Publish to "<subject>"" (quotes normalised away
    // by nats.c in some versions): fail the requests sent there.
    constexpr std::string_view marker = "Publish to ";
    if (auto at = reason.find(marker); at != std::string::npos) {
      std::string subject = reason.substr(at + marker.size());
      std::erase(subject, '"');
      std::erase(subject, '\'');
      if (auto sp = subject.find(' '); sp != std::string::npos) subject.resize(sp);
      st->refuse(subject, reason);
    }
    if (st->on_violation) {
      try {
        st->on_violation(cove::make_error(errc::unauthorized, reason));
      } catch (...) {
        // must not throw across the C library
      }
    }
  }
}

// Signs the server's nonce with the connection's nkey; nats.c frees `signature`.
extern "C" natsStatus sign_nonce(char** custom_err, unsigned char** signature, int* length, const char* nonce,
                                 void* closure) {
  auto* st = static_cast<connection::state*>(closure);
  if (!st->nkey || nonce == nullptr) {
    *custom_err = strdup("no nkey to sign the server nonce");
    return NATS_ERR;
  }
  auto sig = st->nkey->sign({reinterpret_cast<const uint8_t*>(nonce), std::strlen(nonce)});
  auto* out = static_cast<unsigned char*>(std::malloc(sig.size()));
  if (out == nullptr) return NATS_NO_MEMORY;
  std::memcpy(out, sig.data(), sig.size());
  *signature = out;
  *length = static_cast<int>(sig.size());
  return NATS_OK;
}

extern "C" void on_disconnected(natsConnection*, void* closure) {
  static_cast<connection::state*>(closure)->disconnects.fetch_add(1, std::memory_order_relaxed);
}

extern "C" void on_reconnected(natsConnection*, void* closure) {
  static_cast<connection::state*>(closure)->reconnects.fetch_add(1, std::memory_order_relaxed);
}

extern "C" void on_closed(natsConnection*, void* closure) {
  auto* st = static_cast<connection::state*>(closure);
  std::lock_guard lock(st->closed_mu);
  st->closed = true;
  st->closed_cv.notify_all();
}

extern "C" int64_t reconnect_delay(natsConnection*, int attempts, void* closure) {
  auto* st = static_cast<connection::state*>(closure);
  int64_t d = st->reconnect_wait.count();
  int64_t cap = st->reconnect_wait_max.count();
  for (int i = 1; i < attempts && d < cap; ++i) d *= 2;
  return std::min(d, cap);
}

// The closure NATS holds: one reference to the shared subscription state,
// released by the on-complete callback (after the handler's last call).
using sub_ctx = std::shared_ptr<detail::sub_state>;

extern "C" void on_msg(natsConnection*, natsSubscription*, natsMsg* raw, void* closure) {
  nats_msg msg{raw};  // we own it; destroyed exactly once
  auto* st = static_cast<sub_ctx*>(closure)->get();
  const detail::sub_state* outer = std::exchange(detail::delivering(), st);
  try {
    st->handler(copy_out(msg.get()));
  } catch (...) {
    // A handler must not throw across the C library; the message is dropped.
  }
  detail::delivering() = outer;
}

extern "C" void on_sub_complete(void* closure) {
  auto* ctx = static_cast<sub_ctx*>(closure);
  {
    std::lock_guard lock((*ctx)->mu);
    (*ctx)->complete = true;
    (*ctx)->cv.notify_all();
  }
  delete ctx;
}

}  // namespace

expected<std::shared_ptr<connection>> connection::connect(const connect_options& o) {
  open_library();
  std::shared_ptr<connection> c(new connection());
  c->state_ = std::make_shared<state>();
  c->state_->reconnect_wait = o.reconnect_wait;
  c->state_->reconnect_wait_max = std::max(o.reconnect_wait_max, o.reconnect_wait);
  natsStatus s = natsOptions_Create(out_ptr(c->opts_));
  natsOptions* op = c->opts_.get();
  void* st = c->state_.get();
  if (s == NATS_OK) s = natsOptions_SetURL(op, o.url.c_str());
  if (s == NATS_OK) s = natsOptions_SetName(op, o.name.c_str());
  if (s == NATS_OK) s = natsOptions_SetTimeout(op, to_ms(o.connect_timeout));
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(op, o.max_reconnect);
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(op, o.max_reconnect != 0);
  if (s == NATS_OK) s = natsOptions_SetCustomReconnectDelay(op, reconnect_delay, st);
  if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(op, o.reconnect_buffer_bytes);
  if (s == NATS_OK) s = natsOptions_SetSendAsap(op, true);
  if (s == NATS_OK && o.no_echo) s = natsOptions_SetNoEcho(op, true);
  if (s == NATS_OK && o.shared_delivery_threads) s = natsOptions_UseGlobalMessageDelivery(op, true);
  if (s == NATS_OK) s = natsOptions_SetMaxPendingMsgs(op, o.max_pending_msgs);
  if (s == NATS_OK) s = natsOptions_SetErrorHandler(op, on_error, st);
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(op, on_disconnected, st);
  if (s == NATS_OK) s = natsOptions_SetReconnectedCB(op, on_reconnected, st);
  if (s == NATS_OK) s = natsOptions_SetClosedCB(op, on_closed, st);
  if (s == NATS_OK && o.retry_on_failed_connect)
    s = natsOptions_SetRetryOnFailedConnect(op, true, nullptr, nullptr);
  if (s == NATS_OK && !o.ca_file.empty()) {
    s = natsOptions_SetSecure(op, true);
    if (s == NATS_OK) s = natsOptions_LoadCATrustedCertificates(op, o.ca_file.c_str());
    if (s != NATS_OK) return with_detail(error_from_status(s, "CA file " + o.ca_file));
  }
  c->state_->nkey = o.nkey;
  c->state_->on_violation = o.on_permission_violation;
  c->state_->reply_prefix = o.inbox_prefix;
  if (c->state_->reply_prefix.empty())
    c->state_->reply_prefix = o.nkey ? "_INBOX." + o.nkey->public_key() : "_INBOX";
  if (s == NATS_OK && o.nkey) s = natsOptions_SetNKey(op, o.nkey->public_key().c_str(), sign_nonce, st);
  if (s == NATS_OK) s = natsOptions_SetCustomInboxPrefix(op, c->state_->reply_prefix.c_str());
  if (s != NATS_OK) return with_detail(error_from_status(s, "nats options"));
  // nats.c's TLS handshake is non-blocking and asks SSL_get_error() why
  // SSL_connect() stopped; a stale entry in this thread's OpenSSL error queue
  // (left by any earlier OpenSSL call, e.g. parsing a PEM key) makes it read
  // "would block" as a failure ("No server available"), depending on timing.
  ERR_clear_error();
  s = natsConnection_Connect(out_ptr(c->conn_), op);
  // nats-server 2.9 sends no nonce to a connection it accepts while reloading
  // its authorization (coved reloads at every computation start), and then
  // refuses the nkey it could not check. A real refusal repeats; try twice more.
  for (int retry = 0; retry < 2 && s == NATS_CONNECTION_AUTH_FAILED && o.nkey; ++retry) {
    ERR_clear_error();
    s = natsConnection_Connect(out_ptr(c->conn_), op);
  }
  if (s == NATS_NOT_YET_CONNECTED) s = NATS_OK;  // retry_on_failed_connect: connecting in background
  if (s != NATS_OK) {
    // No connection object means no callbacks will run: nothing to wait for.
    return with_detail(error_from_status(s, "connect to " + o.url));
  }
  c->max_pending_msgs_ = o.max_pending_msgs;
  c->max_pending_bytes_ = o.max_pending_bytes;
  return c;
}

connection::~connection() {
  if (!state_) return;
  // 1. Stop the deadline thread and the async inbox, fail what is still pending.
  {
    std::lock_guard lock(state_->mu);
    state_->stopping = true;
  }
  state_->cv.notify_all();
  if (state_->sweeper.joinable()) {
    if (state_->sweeper.get_id() == std::this_thread::get_id())
      state_->sweeper.detach();  // destroyed from a completion on the sweeper: it exits by itself
    else
      state_->sweeper.join();
  }
  state_->inbox_sub.reset();
  std::unordered_map<uint64_t, state::pending> left;
  {
    std::lock_guard lock(state_->mu);
    left.swap(state_->pending_by_token);
    state_->deadlines.clear();
  }
  for (auto& [token, p] : left)
    p.done(cove::make_error(errc::unavailable, "connection closed before a reply on " + p.subject));
  // 2. Close, wait (bounded) for the closed callback so no callback touches
  //    state_ afterwards, then destroy connection, then options.
  if (conn_) {
    natsConnection_Close(conn_.get());
    std::unique_lock lock(state_->closed_mu);
    state_->closed_cv.wait_for(lock, std::chrono::seconds(5), [&] { return state_->closed; });
  }
  conn_.reset();
  opts_.reset();
}

expected<void> connection::publish(std::string_view subject, std::span<const uint8_t> data,
                                   std::string_view reply) {
  if (data.size() > static_cast<size_t>(INT32_MAX))
    return cove::make_error(errc::too_large, "publish " + cstr(subject) + ": payload too large");
  auto subj = cstr(subject);
  natsStatus s;
  if (reply.empty())
    s = natsConnection_Publish(conn_.get(), subj.c_str(), data.data(), static_cast<int>(data.size()));
  else
    s = natsConnection_PublishRequest(conn_.get(), subj.c_str(), cstr(reply).c_str(), data.data(),
                                      static_cast<int>(data.size()));
  if (s != NATS_OK) return error_from_status(s, "publish " + subj);
  return ok();
}

expected<message> connection::request(std::string_view subject, std::span<const uint8_t> data,
                                      std::chrono::milliseconds timeout) {
  // Built on request_async so that a permission violation fails the request at
  // once (errc::unauthorized) instead of at its deadline.
  struct waiter {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<expected<message>> result;
  };
  auto w = std::make_shared<waiter>();
  auto sent = request_async(subject, data, timeout, [w](expected<message> r) {
    std::lock_guard lock(w->mu);
    w->result.emplace(std::move(r));
    w->cv.notify_all();
  });
  if (!sent) return sent.error();
  std::unique_lock lock(w->mu);
  // The deadline thread completes it at `timeout`; the margin only guards
  // against a completion that never comes.
  if (!w->cv.wait_for(lock, timeout + std::chrono::seconds(5), [&] { return w->result.has_value(); }))
    return cove::make_error(errc::timeout, "no reply on " + cstr(subject) + " in time");
  return std::move(*w->result);
}

expected<void> connection::start_async_inbox() {
  // Called with state_->mu NOT held. Idempotent.
  {
    std::lock_guard lock(state_->mu);
    if (!state_->inbox_prefix.empty()) return ok();
  }
  std::string prefix = new_inbox();
  std::weak_ptr<state> weak = state_;
  auto sub = subscribe(prefix + ".*", [weak](message&& m) {
    if (auto st = weak.lock()) st->on_reply(std::move(m));
  });
  if (!sub) return sub.error();
  std::lock_guard lock(state_->mu);
  if (!state_->inbox_prefix.empty()) return ok();  // lost a race: `sub` unsubscribes
  state_->inbox_prefix = prefix;
  state_->inbox_sub = std::move(*sub);
  // The thread keeps the state alive until it returns (see ~connection).
  state_->sweeper = std::thread([st = state_] { st->sweep(); });
  return ok();
}

expected<void> connection::request_async(std::string_view subject, std::span<const uint8_t> data,
                                         std::chrono::milliseconds timeout, async_handler done) {
  if (!done) return cove::make_error(errc::invalid_request, "request_async: no completion");
  if (auto r = start_async_inbox(); !r) return r;
  uint64_t token = 0;
  std::string reply;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  {
    std::lock_guard lock(state_->mu);
    if (state_->stopping) return cove::make_error(errc::unavailable, "connection closing");
    token = state_->next_token++;
    reply = state_->inbox_prefix + "." + std::to_string(token);
    state_->pending_by_token.emplace(token, state::pending{deadline, cstr(subject), std::move(done)});
    state_->deadlines.emplace(deadline, token);
  }
  state_->cv.notify_all();
  if (auto r = publish(subject, data, reply); !r) {
    // Not sent: withdraw it, unless the sweeper already completed it (tiny timeout).
    if (state_->take(token)) return r;
    return ok();
  }
  return ok();
}

expected<subscription> connection::subscribe(std::string_view subject, handler h,
                                             std::string_view queue_group) {
  if (!h) return cove::make_error(errc::invalid_request, "subscribe: no handler");
  auto subj = cstr(subject);
  auto st = std::make_shared<detail::sub_state>();
  st->handler = std::move(h);
  auto* ctx = new sub_ctx(st);
  nats_sub sub;
  natsStatus s;
  if (queue_group.empty())
    s = natsConnection_Subscribe(out_ptr(sub), conn_.get(), subj.c_str(), on_msg, ctx);
  else
    s = natsConnection_QueueSubscribe(out_ptr(sub), conn_.get(), subj.c_str(), cstr(queue_group).c_str(),
                                      on_msg, ctx);
  if (s != NATS_OK) {
    delete ctx;  // never registered: no callback can run
    return error_from_status(s, "subscribe " + subj);
  }
  s = natsSubscription_SetOnCompleteCB(sub.get(), on_sub_complete, ctx);
  if (s != NATS_OK) {
    // Already closed (connection closing): the delivery thread is done or
    // finishing; leak ctx rather than risk freeing it under a running handler.
    natsSubscription_Unsubscribe(sub.get());
    return error_from_status(s, "subscribe " + subj);
  }
  s = natsSubscription_SetPendingLimits(sub.get(), max_pending_msgs_, max_pending_bytes_);
  if (s != NATS_OK) {
    subscription cleanup{std::move(sub), std::move(st)};
    return error_from_status(s, "subscribe " + subj);
  }
  return subscription{std::move(sub), std::move(st)};
}

std::string connection::new_inbox() {
  natsInbox* inbox = nullptr;
  if (natsInbox_Create(&inbox) != NATS_OK || inbox == nullptr) return state_->reply_prefix + ".cove";
  std::string_view s(inbox);  // "_INBOX.<nuid>"
  auto dot = s.find('.');
  std::string out =
      state_->reply_prefix + "." + std::string(dot == std::string_view::npos ? s : s.substr(dot + 1));
  natsInbox_Destroy(inbox);
  return out;
}

std::string connection::last_permission_violation() const {
  std::lock_guard lock(state_->violation_mu);
  return state_->last_violation;
}

const std::string& connection::inbox_prefix() const noexcept {
  return state_->reply_prefix;
}

expected<void> connection::flush(std::chrono::milliseconds timeout) {
  natsStatus s = natsConnection_FlushTimeout(conn_.get(), to_ms(timeout));
  if (s != NATS_OK) return error_from_status(s, "flush");
  return ok();
}

bool connection::connected() const noexcept {
  return conn_ && natsConnection_Status(conn_.get()) == NATS_CONN_STATUS_CONNECTED;
}

int64_t connection::max_payload() const noexcept {
  return conn_ ? natsConnection_GetMaxPayload(conn_.get()) : 0;
}

connection_stats connection::stats() const noexcept {
  connection_stats out;
  out.slow_consumer_events = state_->slow_consumer.load(std::memory_order_relaxed);
  out.async_errors = state_->async_errors.load(std::memory_order_relaxed);
  out.disconnects = state_->disconnects.load(std::memory_order_relaxed);
  out.reconnects = state_->reconnects.load(std::memory_order_relaxed);
  out.permission_violations = state_->not_permitted.load(std::memory_order_acquire);
  return out;
}

}  // namespace cove::bus
