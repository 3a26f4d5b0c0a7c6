#include "egressd/net/tls.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <sys/socket.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <cerrno>
#include <ctime>

namespace egressd::net {

namespace asio = boost::asio;

namespace {

constexpr auto token = asio::as_tuple(asio::use_awaitable);

// TLS 1.2 suites: forward secret and AEAD only (TLS 1.3 suites are all of that already).
constexpr const char* tls12_ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// Largest TLS record payload: several small buffers are joined up to this size, so a response
// head and the start of its body go out in one record.
constexpr std::size_t record_size = 16 * 1024;

// OpenSSL's reason for the last failure, and the error queue emptied.
std::string openssl_reason() {
  unsigned long e = ERR_peek_last_error();
  std::string out;
  if (e != 0) {
    const char* r = ERR_reason_error_string(e);
    out = r != nullptr ? r : "error " + std::to_string(e);
  }
  ERR_clear_error();
  return out.empty() ? "unknown error" : out;
}

long long to_unix(const ASN1_TIME* t) {
  if (t == nullptr) return 0;
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<long long>(timegm(&tm));
}

bool printable(const unsigned char* p, int n) {
  if (n <= 0) return false;
  for (int i = 0; i < n; ++i)
    if (p[i] < 0x20 || p[i] > 0x7e) return false;
  return true;
}

void add_identity(std::vector<std::string>& out, const ASN1_STRING* s) {
  if (s == nullptr) return;
  const unsigned char* p = ASN1_STRING_get0_data(s);
  const int n = ASN1_STRING_length(s);
  if (!printable(p, n)) return;  // never a control byte or UTF-8 in a log line or a rule
  out.emplace_back(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
}

// OpenSSL's BIO holds the descriptor number, not the socket: once the session closed the socket
// (a timeout, the other direction failing), that number may already belong to a new
// connection, so no SSL call may touch it again.
constexpr auto closed = asio::error::bad_descriptor;

boost::system::error_code protocol_error() {
  return boost::system::errc::make_error_code(boost::system::errc::protocol_error);
}

}  // namespace

std::shared_ptr<tls_context> tls_context::load(const config::tls_settings& s, std::string* error) {
  std::shared_ptr<tls_context> c(new tls_context());
  ERR_clear_error();
  c->ctx_ = SSL_CTX_new(TLS_server_method());
  auto fail = [&](const std::string& what) {
    *error = what + ": " + openssl_reason();
    return nullptr;
  };
  if (c->ctx_ == nullptr) return fail("cannot create a TLS context");
  SSL_CTX* ctx = c->ctx_;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  // One read() takes what is there (up to 64 KiB: four full records) instead of a record
  // header, then its body.
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, 64 * 1024);
  if (SSL_CTX_set_cipher_list(ctx, tls12_ciphers) != 1) return fail("cipher list");
  if (SSL_CTX_use_certificate_chain_file(ctx, s.cert_file.c_str()) != 1) {
    return fail("cannot load the certificate chain " + s.cert_file);
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, s.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return fail("cannot load the private key " + s.key_file);
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return fail("the private key " + s.key_file + " does not match the certificate " + s.cert_file);
  }
  if (!s.client_ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, s.client_ca_file.c_str(), nullptr) != 1) {
      return fail("cannot load the client CA bundle " + s.client_ca_file);
    }
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(s.client_ca_file.c_str());
    if (names == nullptr) return fail("no CA certificate in " + s.client_ca_file);
    SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    // Resumed sessions keep the verified certificate; the context id scopes them to egressd.
    static const unsigned char sid[] = "egressd";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
    c->verify_ = true;
    if (!s.client_crl_file.empty() && !c->load_crls(s.client_crl_file, error)) return nullptr;
  }
  if (X509* leaf = SSL_CTX_get0_certificate(ctx)) {
    c->not_after_ = to_unix(X509_get0_notAfter(leaf));
    char buf[256];
    X509_NAME_oneline(X509_get_subject_name(leaf), buf, sizeof(buf));
    c->subject_ = buf;
  }
  ERR_clear_error();
  return c;
}

// Every CRL in a PEM file goes into the context's verification store, and the leaf certificate
// of each client is checked against its issuer's CRL (X509_V_FLAG_CRL_CHECK: the client
// certificate, not the CA chain above it, the revocation list operators keep for their clients).
// A certificate whose issuer has no CRL in the file, or only an expired one, is refused.
bool tls_context::load_crls(const std::string& file, std::string* error) {
  BIO* in = BIO_new_file(file.c_str(), "r");
  if (in == nullptr) {
    *error = "cannot read the client CRL file " + file + ": " + openssl_reason();
    return false;
  }
  X509_STORE* store = SSL_CTX_get_cert_store(ctx_);
  bool ok = true;
  // PEM blocks of other types (certificates kept in the same file) are skipped.
  while (X509_CRL* crl = PEM_read_bio_X509_CRL(in, nullptr, nullptr, nullptr)) {
    ok = X509_STORE_add_crl(store, crl) == 1;  // the store takes its own reference
    X509_CRL_free(crl);
    if (!ok) break;
    ++crl_count_;
  }
  // The loop ends at the end of the file (PEM "no start line") or at a CRL that does not decode.
  const unsigned long last = ERR_peek_last_error();
  const bool at_end = last == 0 || (ERR_GET_LIB(last) == ERR_LIB_PEM &&
                                    ERR_GET_REASON(last) == PEM_R_NO_START_LINE);
  BIO_free(in);
  if (!ok || !at_end || crl_count_ == 0) {
    *error = (crl_count_ == 0 && ok && at_end ? "no CRL in the client CRL file (PEM expected) "
                                              : "cannot load the client CRL file ") +
             file + ": " + openssl_reason();
    return false;
  }
  ERR_clear_error();
  X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
  check_crls(file);
  return true;
}

// For each CA of client_ca, the CRL OpenSSL's check will use: signed by that CA, not a delta
// CRL (ignored without X509_V_FLAG_USE_DELTAS), valid now if one is, else the newest. Its
// nextUpdate feeds crl_next_update() (the earliest over the CAs), so a file that still holds the
// previous CRL beside the current one reports the current one; what would refuse every
// certificate a CA signs becomes a warning.
void tls_context::check_crls(const std::string& file) {
  X509_STORE* store = SSL_CTX_get_cert_store(ctx_);
  STACK_OF(X509_OBJECT)* objects = X509_STORE_get0_objects(store);
  std::vector<X509*> cas;
  std::vector<X509_CRL*> crls;
  for (int i = 0; i < sk_X509_OBJECT_num(objects); ++i) {
    X509_OBJECT* o = sk_X509_OBJECT_value(objects, i);
    if (X509* x = X509_OBJECT_get0_X509(o)) cas.push_back(x);
    X509_CRL* c = X509_OBJECT_get0_X509_CRL(o);
    if (c != nullptr && X509_CRL_get_ext_by_NID(c, NID_delta_crl, -1) < 0) crls.push_back(c);
  }
  const long long now = static_cast<long long>(std::time(nullptr));
  auto current = [&](X509_CRL* c) {
    const long long last = to_unix(X509_CRL_get0_lastUpdate(c));
    const long long next = to_unix(X509_CRL_get0_nextUpdate(c));
    return last <= now && (next == 0 || now < next);
  };
  for (X509* ca : cas) {
    char name[256];
    X509_NAME_oneline(X509_get_subject_name(ca), name, sizeof(name));
    const std::string who = std::string("the client CA ") + name;
    bool named = false;  // some CRL carries this CA's name
    X509_CRL* best = nullptr;
    for (X509_CRL* c : crls) {
      if (X509_NAME_cmp(X509_CRL_get_issuer(c), X509_get_subject_name(ca)) != 0) continue;
      named = true;
      if (X509_CRL_verify(c, X509_get0_pubkey(ca)) != 1) continue;
      const bool better =
          best == nullptr || (current(c) && !current(best)) ||
          (current(c) == current(best) &&
           to_unix(X509_CRL_get0_lastUpdate(c)) > to_unix(X509_CRL_get0_lastUpdate(best)));
      if (better) best = c;
    }
    const std::string refused =
        ": every client certificate it signs directly is refused (crl_unusable)";
    if (best == nullptr) {
      warnings_.push_back(named ? "the CRL for " + who + " in " + file + " is not signed by it" +
                                      refused
                                : who + " has no CRL in " + file + refused);
      continue;
    }
    const long long next = to_unix(X509_CRL_get0_nextUpdate(best));
    if (next != 0 && (crl_next_update_ == 0 || next < crl_next_update_)) crl_next_update_ = next;
    if (!current(best)) {
      warnings_.push_back("the CRL for " + who + " in " + file +
                          " is past its nextUpdate (or not yet valid)" + refused);
    }
  }
  ERR_clear_error();
}

tls_context::~tls_context() {
  SSL_CTX_free(ctx_);
}

tls_contexts load_tls_contexts(const config::config& cfg, std::vector<std::string>* errors,
                               std::vector<std::string>* warnings) {
  auto load_one = [&](const std::string& path, const config::tls_settings& s) {
    std::string error;
    auto ctx = tls_context::load(s, &error);
    if (!ctx) errors->push_back(path + ": " + error);
    if (ctx && warnings != nullptr) {
      for (const auto& w : ctx->warnings()) warnings->push_back(path + ": " + w);
    }
    return std::shared_ptr<const tls_context>(std::move(ctx));
  };
  tls_contexts out;
  out.listeners.reserve(cfg.listeners.size());
  for (std::size_t i = 0; i < cfg.listeners.size(); ++i) {
    std::shared_ptr<const tls_context> ctx;
    if (cfg.listeners[i].tls) {
      ctx = load_one("listeners[" + std::to_string(i) + "].tls", *cfg.listeners[i].tls);
    }
    out.listeners.push_back(std::move(ctx));
  }
  if (cfg.admin.tls) out.admin = load_one("admin.tls", *cfg.admin.tls);
  return out;
}

namespace {

// The write side: OpenSSL appends its records to the stream's own buffer, and the stream sends
// the buffer with one send() per write call (four 16 KiB records of a 64 KiB chunk in one
// syscall instead of four). The buffer is the stream's, so it is freed while idle.
int out_write(BIO* b, const char* data, int n) {
  static_cast<std::string*>(BIO_get_data(b))->append(data, static_cast<std::size_t>(n));
  return n;
}

long out_ctrl(BIO* b, int cmd, long, void*) {
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;  // the stream flushes after every SSL call that writes
    case BIO_CTRL_WPENDING:
      return static_cast<long>(static_cast<std::string*>(BIO_get_data(b))->size());
    default:
      return 0;
  }
}

int out_create(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

BIO_METHOD* out_method() {
  static BIO_METHOD* m = [] {
    BIO_METHOD* meth = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "egressd-out");
    BIO_meth_set_write(meth, out_write);
    BIO_meth_set_ctrl(meth, out_ctrl);
    BIO_meth_set_create(meth, out_create);
    return meth;
  }();
  return m;
}

}  // namespace

tls_stream::tls_stream(socket& sock, std::shared_ptr<const tls_context> ctx,
                       std::string_view prefix)
    : sock_(sock), ctx_(std::move(ctx)) {
  boost::system::error_code ec;
  sock_.native_non_blocking(true, ec);
  ssl_ = SSL_new(ctx_->native());
  if (ssl_ == nullptr) return;  // handshake() fails
  const int fd = sock_.native_handle();
  BIO* wbio = BIO_new(out_method());
  BIO_set_data(wbio, &out_);
  BIO* rbio = BIO_new_socket(fd, BIO_NOCLOSE);
  if (!prefix.empty()) {
    // The bytes after the PROXY header are the start of the ClientHello: a buffer BIO serves
    // them first, then reads the socket. It is swapped for a plain socket BIO once empty.
    rbio = BIO_push(BIO_new(BIO_f_buffer()), rbio);
    BIO_set_buffer_read_data(rbio, const_cast<char*>(prefix.data()),
                             static_cast<long>(prefix.size()));
    buffered_rbio_ = true;
  }
  SSL_set_bio(ssl_, rbio, wbio);
  SSL_set_accept_state(ssl_);
}

tls_stream::~tls_stream() {
  SSL_free(ssl_);
}

// Sends what OpenSSL wrote into out_. Only one flush runs at a time: the writers (write,
// shutdown_send, the handshake) never overlap; reads only try send_now().
asio::awaitable<boost::system::error_code> tls_stream::flush() {
  while (out_off_ < out_.size()) {
    if (!sock_.is_open()) co_return closed;
    const ssize_t n = ::send(sock_.native_handle(), out_.data() + out_off_, out_.size() - out_off_,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      out_off_ += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      auto [ec] = co_await sock_.async_wait(socket::wait_write, token);
      if (ec) co_return ec;
      continue;
    }
    co_return boost::system::error_code(n < 0 ? errno : EPIPE, boost::system::system_category());
  }
  out_.clear();
  out_off_ = 0;
  co_return boost::system::error_code();
}

// What a read made OpenSSL write (an alert: no_renegotiation; a KeyUpdate answer) goes out at
// once if the socket takes it; otherwise with the next write. Safe beside a suspended flush():
// both advance out_off_, and flush() re-reads it when it resumes.
void tls_stream::send_now() noexcept {
  while (out_off_ < out_.size() && sock_.is_open()) {
    const ssize_t n = ::send(sock_.native_handle(), out_.data() + out_off_, out_.size() - out_off_,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      out_off_ += static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return;
    }
  }
  if (out_off_ >= out_.size()) {
    out_.clear();
    out_off_ = 0;
  }
}

void tls_stream::release_buffers() noexcept {
  if (out_off_ >= out_.size()) {
    std::string().swap(out_);
    out_off_ = 0;
  }
}

// After an SSL call failed with ssl_error (taken at once, before anything else could touch the
// thread's error queue): waits for readability and returns true (call again), or returns false
// with *ec set (eof after close_notify or a TCP EOF).
asio::awaitable<bool> tls_stream::wait_for(int ssl_error, int sys_errno,
                                           boost::system::error_code* ec) {
  if (ssl_error == SSL_ERROR_WANT_READ) {
    auto [wec] = co_await sock_.async_wait(socket::wait_read, token);
    if (wec) {
      *ec = wec;
      co_return false;
    }
    co_return true;
  }
  if (ssl_error == SSL_ERROR_ZERO_RETURN) {
    *ec = asio::error::eof;
  } else if (ssl_error == SSL_ERROR_SYSCALL) {
    *ec = sys_errno != 0 && sys_errno != EAGAIN
              ? boost::system::error_code(sys_errno, boost::system::system_category())
              : boost::system::error_code(asio::error::eof);
  } else {
    *ec = protocol_error();  // SSL_ERROR_SSL; WANT_WRITE cannot happen with the out_ BIO
  }
  co_return false;
}

// Only called after read_some said would_block: OpenSSL has consumed every complete record it
// holds (SSL_has_pending may still be true for a partial one), so only the socket can help.
asio::awaitable<boost::system::error_code> tls_stream::wait_readable() {
  auto [ec] = co_await sock_.async_wait(socket::wait_read, token);
  co_return ec;
}

asio::awaitable<boost::system::error_code> tls_stream::handshake() {
  boost::system::error_code ec;
  if (ssl_ == nullptr) {
    failure_ = metrics::tls_failure::other;
    failure_detail_ = "cannot create a TLS connection: " + openssl_reason();
    co_return protocol_error();
  }
  for (;;) {
    if (!sock_.is_open()) {
      failure_ = metrics::tls_failure::timeout;
      failure_detail_ = "handshake timed out";
      co_return closed;
    }
    ERR_clear_error();
    const int r = SSL_accept(ssl_);
    const int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl_, r);
    const int err = errno;
    if (r != 1 && e != SSL_ERROR_WANT_READ) classify_handshake_failure(e);
    ERR_clear_error();
    // Whatever the step produced goes out first: the server's flight, or the alert that tells
    // the client why it was refused.
    auto fec = co_await flush();
    if (r == 1) {
      if (fec) co_return fec;
      break;
    }
    if (fec && e == SSL_ERROR_WANT_READ) {
      failure_ = metrics::tls_failure::client_closed;
      failure_detail_ = fec.message();
      co_return fec;
    }
    if (co_await wait_for(e, err, &ec)) continue;
    if (ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor) {
      failure_ = metrics::tls_failure::timeout;  // the watchdog cancelled the wait
      failure_detail_ = "handshake timed out";
    } else if (e == SSL_ERROR_WANT_READ) {
      failure_ = metrics::tls_failure::client_closed;
      failure_detail_ = ec.message();
    }
    co_return ec;
  }
  if (buffered_rbio_ && BIO_ctrl_pending(SSL_get_rbio(ssl_)) == 0) {
    SSL_set0_rbio(ssl_, BIO_new_socket(sock_.native_handle(), BIO_NOCLOSE));
    buffered_rbio_ = false;
  }
  read_identities();
  release_buffers();
  co_return ec;
}

void tls_stream::classify_handshake_failure(int ssl_error) {
  using metrics::tls_failure;
  if (ssl_error == SSL_ERROR_SYSCALL || ssl_error == SSL_ERROR_ZERO_RETURN) {
    failure_ = tls_failure::client_closed;
    failure_detail_ = "connection closed during the handshake";
    return;
  }
  failure_ = classify_tls_error(ERR_peek_last_error(), ssl_, &failure_detail_);
}

metrics::tls_failure classify_tls_error(unsigned long err, SSL* ssl, std::string* detail) {
  using metrics::tls_failure;
  std::string ignored;
  std::string& why = detail != nullptr ? *detail : ignored;
  const char* text = ERR_reason_error_string(err);
  why = text != nullptr ? text : "handshake failed";
  switch (ERR_GET_REASON(err)) {
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
      return tls_failure::no_client_cert;
    case SSL_R_CERTIFICATE_VERIFY_FAILED: {
      const long v = SSL_get_verify_result(ssl);
      why += std::string(": ") + X509_verify_cert_error_string(v);
      switch (v) {
        case X509_V_ERR_CERT_HAS_EXPIRED:
        case X509_V_ERR_CERT_NOT_YET_VALID:
          return tls_failure::cert_expired;
        case X509_V_ERR_CERT_REVOKED:
          return tls_failure::cert_revoked;
        case X509_V_ERR_UNABLE_TO_GET_CRL:
        case X509_V_ERR_CRL_HAS_EXPIRED:
        case X509_V_ERR_CRL_NOT_YET_VALID:
        case X509_V_ERR_CRL_SIGNATURE_FAILURE:
        case X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE:
        case X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD:
        case X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD:
        case X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER:
        case X509_V_ERR_KEYUSAGE_NO_CRL_SIGN:
        case X509_V_ERR_DIFFERENT_CRL_SCOPE:
        case X509_V_ERR_UNHANDLED_CRITICAL_CRL_EXTENSION:
        case X509_V_ERR_CRL_PATH_VALIDATION_ERROR:
          return tls_failure::crl_unusable;
        default:
          return tls_failure::cert_untrusted;
      }
    }
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
      return tls_failure::not_tls;
    default:
      return ERR_GET_LIB(err) == ERR_LIB_SSL ? tls_failure::protocol : tls_failure::other;
  }
}

void tls_stream::read_identities() {
  identities_.clear();
  X509* cert = SSL_get0_peer_certificate(ssl_);
  if (cert == nullptr || SSL_get_verify_result(ssl_) != X509_V_OK) return;
  X509_NAME* subject = X509_get_subject_name(cert);
  for (int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1); i >= 0;
       i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) {
    add_identity(identities_, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i)));
  }
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
      const GENERAL_NAME* g = sk_GENERAL_NAME_value(names, i);
      if (g->type == GEN_DNS) add_identity(identities_, g->d.dNSName);
      if (g->type == GEN_URI) add_identity(identities_, g->d.uniformResourceIdentifier);
    }
    GENERAL_NAMES_free(names);
  }
}

asio::awaitable<tls_stream::result> tls_stream::read_some(asio::mutable_buffer buf, bool wait) {
  boost::system::error_code ec;
  auto* p = static_cast<char*>(buf.data());
  std::size_t total = 0;
  for (;;) {
    if (!sock_.is_open()) co_return result{closed, total};
    ERR_clear_error();
    std::size_t n = 0;
    const int r = SSL_read_ex(ssl_, p + total, buf.size() - total, &n);
    const int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl_, r);
    const int err = errno;
    ERR_clear_error();
    if (out_off_ < out_.size()) send_now();
    if (r == 1) {
      total += n;
      // More records already read from the socket (read-ahead) fill the buffer further
      // without a syscall.
      if (total < buf.size() && SSL_has_pending(ssl_)) continue;
      co_return result{ec, total};
    }
    if (total > 0) co_return result{ec, total};  // an end or error shows on the next call
    if (e == SSL_ERROR_WANT_READ && !wait) co_return result{asio::error::would_block, 0};
    if (!co_await wait_for(e, err, &ec)) co_return result{ec, 0};
  }
}

asio::awaitable<tls_stream::result> tls_stream::write(asio::const_buffer buf) {
  // Up to 64 KiB (four records) per SSL_write and flush: one send() each, bounded memory.
  constexpr std::size_t slice = 64 * 1024;
  boost::system::error_code ec;
  std::size_t done = 0;
  const auto* p = static_cast<const char*>(buf.data());
  while (done < buf.size()) {
    if (!sock_.is_open()) {
      ec = closed;
      break;
    }
    ERR_clear_error();
    std::size_t n = 0;
    const int r = SSL_write_ex(ssl_, p + done, std::min(slice, buf.size() - done), &n);
    if (r != 1) {
      ERR_clear_error();
      ec = protocol_error();  // the out_ BIO never blocks: only a failed connection lands here
      break;
    }
    if ((ec = co_await flush())) break;
    done += n;
  }
  co_return result{ec, done};
}

asio::awaitable<tls_stream::result> tls_stream::write(std::span<const asio::const_buffer> bufs) {
  std::size_t total = 0;
  for (const auto& b : bufs) total += b.size();
  if (bufs.size() > 1 && total <= record_size) {
    // Small pieces (a response head and a short body) join into one record.
    std::string joined;
    joined.reserve(total);
    for (const auto& b : bufs) joined.append(static_cast<const char*>(b.data()), b.size());
    co_return co_await write(asio::buffer(joined));
  }
  std::size_t done = 0;
  for (const auto& b : bufs) {
    auto [ec, n] = co_await write(b);
    done += n;
    if (ec) co_return result{ec, done};
  }
  co_return result{boost::system::error_code(), done};
}

asio::awaitable<void> tls_stream::shutdown_send() {
  if (shut_ || ssl_ == nullptr || !sock_.is_open()) co_return;
  shut_ = true;
  ERR_clear_error();
  SSL_shutdown(ssl_);  // writes close_notify into out_; the peer's is not awaited
  ERR_clear_error();
  auto ec = co_await flush();
  if (!ec && sock_.is_open()) sock_.shutdown(socket::shutdown_send, ec);
  release_buffers();
}

std::string_view tls_stream::version() const noexcept {
  return ssl_ != nullptr ? SSL_get_version(ssl_) : "";
}

std::string_view tls_stream::cipher() const noexcept {
  return ssl_ != nullptr ? SSL_get_cipher_name(ssl_) : "";
}

}  // namespace egressd::net
