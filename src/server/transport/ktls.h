/* ktls.h: kernel TLS offload. After a BoringSSL handshake, take the record
 * keys out of the SSL object, hand them to the kernel (TCP_ULP "tls", then
 * SOL_TLS TLS_TX / TLS_RX), free the SSL, and from then on read and write
 * plaintext on the socket; the kernel seals and opens the records.
 *
 * What the caller (the TLS transport) must do around ktls_crypto_info():
 *  - Call ktls_ctx_init() on the SSL_CTX before handshakes: TLS 1.3 secrets
 *    only come out of BoringSSL's C API through the key-log callback.
 *  - After the handshake, put every byte BoringSSL has already sealed on the
 *    socket before installing TX (the records are in the write BIO).
 *  - Decrypt in userspace, with SSL_read, every byte already read from the
 *    socket (it sits in the read BIO) before installing RX: the kernel only
 *    sees what is still in the socket. Take the infos after that, since
 *    rec_seq comes from SSL_get_read_sequence / SSL_get_write_sequence.
 *  - TLS 1.3: install before any KeyUpdate is processed in userspace; the
 *    key-log callback only reports the first application traffic secrets.
 *    A message callback notes a KeyUpdate read or written, and
 *    ktls_crypto_info then refuses (the conn stays in userspace TLS).
 *
 * Under kTLS RX a plain recv() returns application data only; the first
 * non-data record makes it fail with EIO (Documentation/networking/tls.rst).
 * Read that record with ktls_recv_record() (recvmsg with a TLS_GET_RECORD_TYPE
 * control message) and decide with ktls_classify(). */
#ifndef DERPD_KTLS_H
#define DERPD_KTLS_H

#include <linux/tls.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <stdint.h>

/* BoringSSL's SSL and SSL_CTX, by their struct tags, so this header needs no
 * BoringSSL include path (the classifier is usable without it). */
struct ssl_st;
struct ssl_ctx_st;

/* ---- policy (ktls_policy.c: no BoringSSL, no syscalls) -------------------- */

/* --ktls: off = userspace TLS always; auto = kTLS where the kernel has it;
 * require = refuse to start without it, and close a connection that cannot
 * switch rather than keep it in userspace. */
enum ktls_mode { KTLS_OFF = 0, KTLS_AUTO, KTLS_REQUIRE };
/* "off" | "auto" | "require" -> *out; 0 ok, -1 unknown. */
int ktls_mode_parse(const char *s, enum ktls_mode *out);
const char *ktls_mode_name(enum ktls_mode m);

/* When a TLS connection may hand a direction to the kernel. The two
 * directions switch separately (RX first, TX when it can):
 *  - RX only where no read is in flight (the kernel would otherwise race a
 *    read already consuming socket bytes) and nothing of an unfinished
 *    record sits in userspace: those bytes left the socket and the kernel
 *    would start mid-record. Such a conn stays in userspace TLS (fallback).
 *  - TX only once RX is in the kernel, and only while no record sealed in
 *    userspace is queued, in flight or unflushed: the kernel would seal them
 *    again, and rec_seq (SSL_get_write_sequence) must count every record
 *    already on its way. Until then TX waits; the SSL keeps sealing. */
struct ktls_switch_in {
  bool handshake_done;
  bool recv_in_flight;   /* a socket read is armed or running */
  bool rx_partial;       /* ciphertext of an unfinished record is in userspace */
  bool rx_installed;     /* TLS_RX is in the kernel */
  bool wire_queued;      /* userspace-sealed records queued for the socket */
  bool send_in_flight;   /* a send (of any bytes) is running */
  bool ssl_out_pending;  /* sealed records not yet queued, or a wrapped batch held */
};
enum ktls_step {
  KTLS_STEP_WAIT = 1,    /* not now; ask again at the next chance */
  KTLS_STEP_INSTALL,     /* hand the keys to the kernel now */
  KTLS_STEP_FALLBACK,    /* never for this connection: stay in userspace */
};
enum ktls_step ktls_rx_step(const struct ktls_switch_in *s);
enum ktls_step ktls_tx_step(const struct ktls_switch_in *s);
/* Records with no data and no effect (a TLS 1.2 warning alert, user_canceled,
 * a ticket or HelloRequest, which a client has no reason to send at all): a
 * client gets KTLS_IGNORED_MAX of them per connection, then is cut. Each
 * costs a recvmsg and moves nothing; BoringSSL, in userspace, allows 4
 * warning alerts in a row. `so_far`: how many this conn had; true = ignore
 * this one too. */
#define KTLS_IGNORED_MAX 3
bool ktls_may_ignore(unsigned so_far);

/* Suites whose key the kernel refused for lack of their crypto (ENOENT: no
 * module it could load; ENOPROTOOPT, EOPNOTSUPP: not built in): remembered
 * for the process (any shard, atomically), so that later connections of
 * that TLS version and cipher_type (linux/tls.h) stay in userspace without
 * asking again. Each such refusal runs modprobe inside the setsockopt, on a
 * shard, where any client that offers only that suite could call for it.
 * ktls_note_refusal: true if err is such a refusal (now remembered). */
bool ktls_note_refusal(uint16_t version, uint16_t cipher_type, int err);
bool ktls_suite_refused(uint16_t version, uint16_t cipher_type);

/* 1 if this kernel accepts TCP_ULP "tls" on a connected TCP socket, 0 if not
 * (ENOENT: no tls module; EOPNOTSUPP etc.). Makes and closes a loopback
 * socket pair. Call once at start. */
int ktls_probe(void);

enum { KTLS_TX = 0, KTLS_RX = 1 };

/* Exactly what setsockopt(SOL_TLS, TLS_TX/TLS_RX) takes. info.cipher_type
 * says which member is valid; ktls_info_size() is the length to pass. */
union ktls_info {
  struct tls_crypto_info info;
  struct tls12_crypto_info_aes_gcm_128 gcm128;
  struct tls12_crypto_info_aes_gcm_256 gcm256;
  struct tls12_crypto_info_chacha20_poly1305 chacha;
};
size_t ktls_info_size(const union ktls_info *ki); /* 0 if cipher_type unknown */
void ktls_info_wipe(union ktls_info *ki);

/* Sets the SSL_CTX's key-log callback to ktls_keylog (TLS 1.3 secrets). */
void ktls_ctx_init(struct ssl_ctx_st *ctx);
/* The callback itself, for a transport that wants its own key-log callback
 * too: call this from it with every line. It stores the first client and
 * server application traffic secrets on the SSL (ex_data, freed with it). */
void ktls_keylog(const struct ssl_st *ssl, const char *line);

/* Fill *out with the kernel's crypto info for one direction of a completed
 * handshake: KTLS_TX = what this end writes, KTLS_RX = what it reads (so
 * for a server, TX = server write keys). TLS 1.2 / 1.3 with AES-128-GCM,
 * AES-256-GCM or ChaCha20-Poly1305. 0 ok; -1 with a reason in err (an
 * unsupported version or cipher: stay in userspace TLS). */
int ktls_crypto_info(struct ssl_st *ssl, int dir, union ktls_info *out, char *err,
                     size_t errlen);

/* setsockopt(TCP_ULP "tls"), then TLS_TX with *tx and TLS_RX with *rx (either
 * may be NULL). 0, or -errno of the first call that failed. Once the ULP is
 * set it cannot be removed: on failure, close the connection. */
int ktls_install(int fd, const union ktls_info *tx, const union ktls_info *rx);
/* The steps of ktls_install, for a caller that installs the directions at
 * different times. ktls_set_ulp: 0 or -errno; on failure the socket is
 * unchanged (plain TCP: userspace TLS can go on). ktls_set_key: TLS_TX or
 * TLS_RX (dir KTLS_TX / KTLS_RX), 0 or -errno; once the ULP is set a failure
 * leaves the socket unusable for userspace TLS: close it. */
int ktls_set_ulp(int fd);
int ktls_set_key(int fd, int dir, const union ktls_info *ki);
/* The setsockopt the three above call (tests replace it; default setsockopt). */
extern int (*ktls_setsockopt)(int fd, int level, int name, const void *val, socklen_t len);

/* ---- records under kTLS ------------------------------------------------- */

enum {
  KTLS_REC_CHANGE_CIPHER_SPEC = 20,
  KTLS_REC_ALERT = 21,
  KTLS_REC_HANDSHAKE = 22,
  KTLS_REC_APPDATA = 23,
};

enum ktls_action {
  KTLS_ACT_DATA = 1,     /* application data: feed to the frame reader */
  KTLS_ACT_IGNORE,       /* drop the record, keep reading */
  KTLS_ACT_CLOSE,        /* close_notify: the peer is done, close cleanly */
  KTLS_ACT_KEY_UPDATE,   /* TLS 1.3 KeyUpdate: we do not re-key; close
                            cleanly and count it */
  KTLS_ACT_ALERT,        /* any other alert: close, alert in the verdict */
  KTLS_ACT_ERROR,        /* malformed or unexpected record: close */
};

struct ktls_verdict {
  enum ktls_action action;
  uint8_t alert_level, alert_desc; /* KTLS_ACT_ALERT / _CLOSE */
  const char *why;                 /* static string, for logs */
};

/* Decide what to do with one whole record (the kernel returns non-data
 * records one per recvmsg) of `type` with plaintext body[0..n), on a
 * connection of TLS `version` (TLS_1_2_VERSION / TLS_1_3_VERSION). Pure. */
enum ktls_action ktls_classify(uint8_t type, const uint8_t *body, size_t n, uint16_t version,
                               struct ktls_verdict *out);

/* Read one record's plaintext (or part of an application-data run) with
 * recvmsg(MSG_DONTWAIT) and a TLS_GET_RECORD_TYPE control message. Returns
 * bytes read (0 = EOF) with the record type in *type, or -errno. Under kTLS,
 * EBADMSG means a record failed authentication and EMSGSIZE a record too big:
 * both are fatal (bad_record_mac / record_overflow). */
long ktls_recv_record(int fd, uint8_t *buf, size_t cap, uint8_t *type);

/* The record type from a recvmsg's control messages: 0..255, or -1 if there
 * is none (a recv without a control buffer only ever returns data). Pure. */
int ktls_cmsg_record_type(const void *control, size_t controllen);

/* Send one alert record under kTLS TX (sendmsg with TLS_SET_RECORD_TYPE 21):
 * ktls_send_alert(fd, 1, 0) is close_notify. 0 or -errno. */
int ktls_send_alert(int fd, uint8_t level, uint8_t desc);

#endif
