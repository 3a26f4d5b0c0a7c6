#pragma once
// TLS on the proxy and admin listeners, with OpenSSL directly on the connection's descriptor.
//
// Why not asio::ssl::stream: a tunnel needs a half-close -- when the origin ends its side,
// egressd sends close_notify and keeps reading what the client still sends. asio's
// async_shutdown waits for the peer's close_notify (a read), which cannot run beside the
// tunnel's own pending read. Driving SSL_read/SSL_write/SSL_shutdown on a non-blocking socket and
// waiting for readiness with async_wait (the way HAProxy's ssl_sock does) gives that control and
// a read and a write in flight at once. OpenSSL reads the socket directly (read-ahead, up to
// 64 KiB per read()); the records it writes collect in the stream's own buffer, sent with one
// send() per write call and freed while idle.
//
// Policy (server_context): TLS 1.2 and 1.3 only; TLS 1.2 with forward-secret AEAD ciphers only
// (ECDHE with AES-GCM or ChaCha20-Poly1305); no renegotiation, no compression; buffers released
// while idle; an EOF without close_notify reads as a plain EOF (the payload's own framing, or the
// tunnelled TLS inside, tells whether it was complete). With a client CA the handshake requires a
// certificate that chains to it.
#include <openssl/ssl.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "egressd/config/config.hpp"
#include "egressd/metrics/stats.hpp"

namespace egressd::net {

// Why a TLS handshake failed, from the OpenSSL error err (ERR_get_error's packing) of a server
// handshake on ssl: a missing or refused client certificate, plain HTTP sent to a TLS port, a
// protocol error, or other. detail (may be null) gets OpenSSL's reason text, with the
// certificate check's own reason for a refused certificate.
metrics::tls_failure classify_tls_error(unsigned long err, SSL* ssl, std::string* detail);

class tls_context {
 public:
  // Loads the certificate chain, the key, the optional client CA bundle and the optional client
  // CRL file. On failure returns nullptr and sets *error to a message naming the file and
  // OpenSSL's reason.
  static std::shared_ptr<tls_context> load(const config::tls_settings& settings,
                                           std::string* error);
  ~tls_context();
  tls_context(const tls_context&) = delete;
  tls_context& operator=(const tls_context&) = delete;

  SSL_CTX* native() const noexcept { return ctx_; }
  bool verifies_clients() const noexcept { return verify_; }
  // The certificate's notAfter as Unix time (0 if unknown), for the status page and logs.
  long long not_after() const noexcept { return not_after_; }
  const std::string& subject() const noexcept { return subject_; }
  // With client_crl: how many CRLs were loaded and the earliest nextUpdate among them (Unix
  // time; 0 when none has one). After that time OpenSSL refuses every certificate whose issuer's
  // CRL has expired (reason crl_unusable) until a reload brings a fresh one.
  int crl_count() const noexcept { return crl_count_; }
  long long crl_next_update() const noexcept { return crl_next_update_; }
  // What loaded but will refuse clients: a CA of client_ca without a CRL in client_crl, a CRL
  // not signed by its CA, or one already past its nextUpdate (every certificate of that CA is
  // then refused as crl_unusable). For the operator's log; the context is usable.
  const std::vector<std::string>& warnings() const noexcept { return warnings_; }

 private:
  tls_context() = default;
  bool load_crls(const std::string& file, std::string* error);
  void check_crls(const std::string& file);
  SSL_CTX* ctx_ = nullptr;
  bool verify_ = false;
  long long not_after_ = 0;
  std::string subject_;
  int crl_count_ = 0;
  long long crl_next_update_ = 0;
  std::vector<std::string> warnings_;
};

// The contexts of every TLS block of one config. Loaded once per config load (start,
// --check-config, reload) and handed to the proxy runtime and the admin server, so each
// certificate, key and CA file is read once and what was checked is what gets served.
struct tls_contexts {
  // Same index as cfg.listeners; null for a plain TCP listener.
  std::vector<std::shared_ptr<const tls_context>> listeners;
  std::shared_ptr<const tls_context> admin;  // null without admin.tls
};

// Loads every TLS block of cfg (listeners, then admin). Appends one message per failure to
// *errors, "listeners[0].tls: cannot load ... (reason)"; the failed block's context stays null.
// The result is usable only when nothing was appended. warnings (may be null) gets each
// context's warnings(), prefixed the same way.
tls_contexts load_tls_contexts(const config::config& cfg, std::vector<std::string>* errors,
                               std::vector<std::string>* warnings = nullptr);

// A server-side TLS connection over a connected TCP socket it does not own. One read and one
// write may be pending at once (a tunnel's two directions); everything runs on the socket's
// executor. Cancelling or closing the socket ends pending operations with its error.
class tls_stream {
 public:
  using socket = boost::asio::ip::tcp::socket;
  using result = std::tuple<boost::system::error_code, std::size_t>;

  // prefix: bytes already read from the socket that belong to the TLS stream (they followed a
  // PROXY header in the same segment); they are fed to OpenSSL before the socket.
  tls_stream(socket& sock, std::shared_ptr<const tls_context> ctx, std::string_view prefix);
  ~tls_stream();
  tls_stream(const tls_stream&) = delete;
  tls_stream& operator=(const tls_stream&) = delete;

  // The server handshake. On failure the error is set and failure() says why.
  boost::asio::awaitable<boost::system::error_code> handshake();
  metrics::tls_failure failure() const noexcept { return failure_; }
  const std::string& failure_detail() const noexcept { return failure_detail_; }

  // Reads decrypted bytes (as many records as are at hand, up to the buffer's size); eof after
  // the client's close_notify (or a plain TCP EOF). wait = false: would_block instead of
  // waiting when nothing is readable (see wait_readable).
  boost::asio::awaitable<result> read_some(boost::asio::mutable_buffer buf, bool wait = true);
  // After read_some returned would_block: completes when the socket is readable.
  boost::asio::awaitable<boost::system::error_code> wait_readable();
  // Writes all of the buffers (as records of up to 16 KiB, up to four per send()); returns the
  // bytes written.
  boost::asio::awaitable<result> write(std::span<const boost::asio::const_buffer> bufs);
  boost::asio::awaitable<result> write(boost::asio::const_buffer buf);
  // Sends close_notify (once) and then a TCP FIN; reading stays possible (half-close).
  boost::asio::awaitable<void> shutdown_send();
  // Frees the send buffer when it is empty (a connection going idle keeps no 64 KiB buffer).
  void release_buffers() noexcept;

  // The verified client certificate's identities: subject CN, then SAN DNS names and URIs, in
  // certificate order, printable ASCII only (others are skipped). Empty without a certificate.
  const std::vector<std::string>& identities() const noexcept { return identities_; }
  std::string_view version() const noexcept;  // "TLSv1.3"
  std::string_view cipher() const noexcept;

 private:
  boost::asio::awaitable<bool> wait_for(int ssl_error, int sys_errno,
                                        boost::system::error_code* ec);
  boost::asio::awaitable<boost::system::error_code> flush();
  void send_now() noexcept;
  void classify_handshake_failure(int ssl_error);
  void read_identities();

  socket& sock_;
  std::shared_ptr<const tls_context> ctx_;
  SSL* ssl_ = nullptr;
  bool buffered_rbio_ = false;  // reads go through a buffer BIO holding the prefix
  bool shut_ = false;
  std::string out_;          // records OpenSSL wrote, not yet sent
  std::size_t out_off_ = 0;  // how much of out_ is sent
  metrics::tls_failure failure_ = metrics::tls_failure::other;
  std::string failure_detail_;
  std::vector<std::string> identities_;
};

}  // namespace egressd::net
