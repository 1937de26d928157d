/* ktls.c: kernel TLS keys out of a finished BoringSSL handshake, the kernel
 * set-up, and the handling of records the kernel hands back. See ktls.h.
 *
 * Facts this file relies on, with their sources:
 *
 * Kernel (Documentation/networking/tls.rst, include/uapi/linux/tls.h,
 * net/tls/tls_sw.c):
 *  - setsockopt(SOL_TCP, TCP_ULP, "tls") on an established TCP socket, then
 *    setsockopt(SOL_TLS, TLS_TX / TLS_RX, &tls12_crypto_info_*, sizeof). The
 *    struct name says tls12 but carries the version (TLS_1_2_VERSION or
 *    TLS_1_3_VERSION) in info.version.
 *  - rec_seq is the 64-bit sequence number of the next record, big-endian.
 *  - AES-GCM: the 12-byte nonce is salt[4] || iv[8]. In TLS 1.3 (and for
 *    ChaCha20 in both versions) the kernel XORs the sequence number into the
 *    low 8 bytes of that nonce for each record. In TLS 1.2 GCM the iv[8] is
 *    the explicit nonce: on RX the kernel takes it from each record; on TX it
 *    writes iv into the record and increments it per record along with
 *    rec_seq, so iv = rec_seq makes the explicit nonce equal to the sequence
 *    number, as BoringSSL and most stacks do.
 *  - ChaCha20-Poly1305: no salt; iv[12] is the whole static IV.
 *  - recv() on a kTLS RX socket returns application data; a record of any
 *    other type makes it fail with EIO unless a control buffer is given, in
 *    which case recvmsg() returns that one record alone with a
 *    cmsg(SOL_TLS, TLS_GET_RECORD_TYPE). sendmsg() with a
 *    cmsg(SOL_TLS, TLS_SET_RECORD_TYPE) sends a record of that type.
 *
 * TLS 1.3 (RFC 8446):
 *  - §7.1 HKDF-Expand-Label(Secret, Label, Context, Length) =
 *    HKDF-Expand(Secret, HkdfLabel, Length), HkdfLabel = uint16 Length ||
 *    opaque label<7..255> = "tls13 " + Label || opaque context<0..255>.
 *  - §7.3 write_key = HKDF-Expand-Label(secret, "key", "", key_length),
 *    write_iv = HKDF-Expand-Label(secret, "iv", "", 12); secret is the
 *    [sender]_application_traffic_secret_N; the hash is the cipher suite's
 *    (SHA-256 for AES-128-GCM and ChaCha20, SHA-384 for AES-256-GCM).
 *  - §5.3 nonce = write_iv XOR (64-bit sequence number, left-padded to 12).
 *  - The key-log format (NSS, used by BoringSSL) names those secrets
 *    CLIENT_TRAFFIC_SECRET_0 and SERVER_TRAFFIC_SECRET_0.
 *
 * TLS 1.2:
 *  - RFC 5246 §6.3 key block = client_write_MAC_key, server_write_MAC_key,
 *    client_write_key, server_write_key, client_write_IV, server_write_IV;
 *    AEAD suites have no MAC keys. SSL_generate_key_block returns it.
 *  - RFC 5288 §3 (AES-GCM): write_IV is the 4-byte salt; the record carries
 *    an 8-byte explicit nonce; nonce = salt || explicit.
 *  - RFC 7905 §2 (ChaCha20-Poly1305): write_IV is 12 bytes; nonce = IV XOR
 *    padded sequence number, as in TLS 1.3. */
#include "server/transport/ktls.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/digest.h>
#include <openssl/hkdf.h>
#include <openssl/mem.h>
#include <openssl/ssl.h>

#include "derp/hex.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

/* ---- probe -------------------------------------------------------------- */

int ktls_probe(void) {
  int lfd = -1, cfd = -1, afd = -1, ok = 0;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 1) < 0 ||
      getsockname(lfd, (struct sockaddr *)&a, &alen) < 0)
    goto out;
  cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (cfd < 0 || connect(cfd, (struct sockaddr *)&a, sizeof a) < 0) goto out;
  afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (afd < 0) goto out;
  /* The ULP only attaches to an established socket (a listening one gives
   * ENOTCONN), which is why the probe needs a real pair. */
  ok = setsockopt(afd, SOL_TCP, TCP_ULP, "tls", sizeof "tls") == 0;
out:
  if (afd >= 0) close(afd);
  if (cfd >= 0) close(cfd);
  if (lfd >= 0) close(lfd);
  return ok;
}

/* ---- crypto info -------------------------------------------------------- */

size_t ktls_info_size(const union ktls_info *ki) {
  switch (ki->info.cipher_type) {
  case TLS_CIPHER_AES_GCM_128: return sizeof ki->gcm128;
  case TLS_CIPHER_AES_GCM_256: return sizeof ki->gcm256;
  case TLS_CIPHER_CHACHA20_POLY1305: return sizeof ki->chacha;
  }
  return 0;
}

void ktls_info_wipe(union ktls_info *ki) { OPENSSL_cleanse(ki, sizeof *ki); }

/* TLS 1.3 application traffic secrets, kept on the SSL from the key-log
 * callback until the SSL is freed. */
struct ktls_secrets {
  uint8_t client[EVP_MAX_MD_SIZE], server[EVP_MAX_MD_SIZE];
  uint8_t client_len, server_len;
  bool key_updated; /* a KeyUpdate was read or written: the _0 secrets are stale */
};

static int secrets_idx = -1;
static pthread_once_t secrets_once = PTHREAD_ONCE_INIT;

static void secrets_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl,
                         void *argp) {
  (void)parent, (void)ad, (void)index, (void)argl, (void)argp;
  if (ptr) {
    OPENSSL_cleanse(ptr, sizeof(struct ktls_secrets));
    free(ptr);
  }
}

static void secrets_init(void) { secrets_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, secrets_free); }

void ktls_keylog(const SSL *ssl, const char *line) {
  static const char kc[] = "CLIENT_TRAFFIC_SECRET_0 ", ks[] = "SERVER_TRAFFIC_SECRET_0 ";
  bool client;
  if (!strncmp(line, kc, sizeof kc - 1)) client = true;
  else if (!strncmp(line, ks, sizeof ks - 1)) client = false;
  else return;
  /* "<label> <client_random hex> <secret hex>" */
  const char *p = strchr(line + sizeof kc - 1, ' ');
  if (!p) return;
  p++;
  size_t hl = strlen(p);
  if (hl == 0 || hl % 2 || hl / 2 > EVP_MAX_MD_SIZE) return;
  pthread_once(&secrets_once, secrets_init);
  if (secrets_idx < 0) return;
  struct ktls_secrets *s = SSL_get_ex_data(ssl, secrets_idx);
  if (!s) {
    s = calloc(1, sizeof *s);
    /* The callback gets a const SSL; it is the caller's own, mutable one. */
    if (!s || !SSL_set_ex_data((SSL *)ssl, secrets_idx, s)) {
      free(s);
      return; /* no secrets stored: ktls_crypto_info will say so */
    }
  }
  if (derp_hex_decode(p, hl / 2, client ? s->client : s->server) != 0) return;
  if (client) s->client_len = (uint8_t)(hl / 2);
  else s->server_len = (uint8_t)(hl / 2);
}

/* A TLS 1.3 KeyUpdate handled in userspace (e.g. one sent right behind the
 * client Finished, read by the SSL_read loop before the switch) moves the
 * keys past the *_TRAFFIC_SECRET_0 the key log gave: note it, so that
 * ktls_crypto_info refuses rather than hand the kernel stale keys. */
static void ktls_msg_cb(int is_write, int version, int content_type, const void *buf, size_t len, SSL *ssl,
                        void *arg) {
  (void)is_write, (void)version, (void)arg;
  if (content_type != SSL3_RT_HANDSHAKE || len < 1 || ((const uint8_t *)buf)[0] != SSL3_MT_KEY_UPDATE) return;
  pthread_once(&secrets_once, secrets_init);
  struct ktls_secrets *s = secrets_idx >= 0 ? SSL_get_ex_data(ssl, secrets_idx) : NULL;
  if (s) s->key_updated = true;
}

void ktls_ctx_init(SSL_CTX *ctx) {
  pthread_once(&secrets_once, secrets_init);
  SSL_CTX_set_keylog_callback(ctx, ktls_keylog);
  SSL_CTX_set_msg_callback(ctx, ktls_msg_cb);
}

/* RFC 8446 §7.1 HKDF-Expand-Label with an empty context. */
static int expand_label(const EVP_MD *md, const uint8_t *secret, size_t secret_len,
                        const char *label, uint8_t *out, size_t out_len) {
  uint8_t info[2 + 1 + 255 + 1];
  size_t ll = strlen(label), n = 0;
  if (6 + ll > 255) return 0;
  info[n++] = (uint8_t)(out_len >> 8);
  info[n++] = (uint8_t)out_len;
  info[n++] = (uint8_t)(6 + ll);
  memcpy(info + n, "tls13 ", 6);
  n += 6;
  memcpy(info + n, label, ll);
  n += ll;
  info[n++] = 0; /* context length */
  return HKDF_expand(out, out_len, md, secret, secret_len, info, n);
}

static void put_be64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), -1)

int ktls_crypto_info(SSL *ssl, int dir, union ktls_info *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (SSL_in_init(ssl)) return ERR("handshake not finished");
  const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
  if (!c) return ERR("no cipher");
  int version = SSL_version(ssl);
  if (version != TLS1_2_VERSION && version != TLS1_3_VERSION)
    return ERR("TLS version 0x%04x not supported by kTLS", version);

  size_t key_len, fixed_iv_len; /* fixed_iv_len: TLS 1.2 write_IV length */
  uint16_t type;
  switch (SSL_CIPHER_get_cipher_nid(c)) {
  case NID_aes_128_gcm: type = TLS_CIPHER_AES_GCM_128, key_len = 16, fixed_iv_len = 4; break;
  case NID_aes_256_gcm: type = TLS_CIPHER_AES_GCM_256, key_len = 32, fixed_iv_len = 4; break;
  case NID_chacha20_poly1305:
    type = TLS_CIPHER_CHACHA20_POLY1305, key_len = 32, fixed_iv_len = 12;
    break;
  default: return ERR("cipher %s not supported by kTLS", SSL_CIPHER_get_name(c));
  }

  /* Our TX is what we write: the server's keys if we are the server. */
  bool server_keys = (dir == KTLS_TX) == (SSL_is_server(ssl) != 0);
  uint64_t seq = dir == KTLS_TX ? SSL_get_write_sequence(ssl) : SSL_get_read_sequence(ssl);
  uint8_t key[32], iv[12]; /* iv: the 12-byte static IV (1.3, ChaCha) or 4-byte salt (1.2 GCM) */

  if (version == TLS1_3_VERSION) {
    pthread_once(&secrets_once, secrets_init);
    const struct ktls_secrets *s = secrets_idx >= 0 ? SSL_get_ex_data(ssl, secrets_idx) : NULL;
    const uint8_t *secret = !s ? NULL : server_keys ? s->server : s->client;
    size_t secret_len = !s ? 0 : server_keys ? s->server_len : s->client_len;
    const EVP_MD *md = EVP_get_digestbynid(SSL_CIPHER_get_prf_nid(c));
    if (!secret_len) return ERR("no TLS 1.3 traffic secret (ktls_ctx_init not called?)");
    if (s->key_updated) return ERR("a KeyUpdate was handled in userspace: the traffic secrets moved on");
    if (!md || EVP_MD_size(md) != secret_len) return ERR("traffic secret does not match the hash");
    if (!expand_label(md, secret, secret_len, "key", key, key_len) ||
        !expand_label(md, secret, secret_len, "iv", iv, sizeof iv)) {
      OPENSSL_cleanse(key, sizeof key);
      return ERR("HKDF-Expand-Label failed");
    }
  } else {
    /* AEAD suites: no MAC keys; client key, server key, client IV, server IV. */
    uint8_t block[2 * (32 + 12)];
    size_t len = SSL_get_key_block_len(ssl);
    if (len != 2 * (key_len + fixed_iv_len))
      return ERR("unexpected TLS 1.2 key block length %zu", len);
    if (!SSL_generate_key_block(ssl, block, len)) return ERR("SSL_generate_key_block failed");
    memcpy(key, block + (server_keys ? key_len : 0), key_len);
    memcpy(iv, block + 2 * key_len + (server_keys ? fixed_iv_len : 0), fixed_iv_len);
    OPENSSL_cleanse(block, sizeof block);
  }

  out->info.version = version == TLS1_3_VERSION ? TLS_1_3_VERSION : TLS_1_2_VERSION;
  out->info.cipher_type = type;
  switch (type) {
  case TLS_CIPHER_AES_GCM_128:
  case TLS_CIPHER_AES_GCM_256: {
    /* Same layout in both structs up to the key length. */
    unsigned char *okey = type == TLS_CIPHER_AES_GCM_128 ? out->gcm128.key : out->gcm256.key;
    unsigned char *osalt = type == TLS_CIPHER_AES_GCM_128 ? out->gcm128.salt : out->gcm256.salt;
    unsigned char *oiv = type == TLS_CIPHER_AES_GCM_128 ? out->gcm128.iv : out->gcm256.iv;
    unsigned char *oseq = type == TLS_CIPHER_AES_GCM_128 ? out->gcm128.rec_seq : out->gcm256.rec_seq;
    memcpy(okey, key, key_len);
    memcpy(osalt, iv, 4);
    if (version == TLS1_3_VERSION) memcpy(oiv, iv + 4, 8); /* salt||iv = write_iv */
    else put_be64(oiv, seq); /* first explicit nonce = sequence number: BoringSSL
                                used 0..seq-1 under this key, so none repeats */
    put_be64(oseq, seq);
    break;
  }
  default:
    memcpy(out->chacha.key, key, 32);
    memcpy(out->chacha.iv, iv, 12);
    put_be64(out->chacha.rec_seq, seq);
    break;
  }
  OPENSSL_cleanse(key, sizeof key);
  OPENSSL_cleanse(iv, sizeof iv);
  return 0;
}

int (*ktls_setsockopt)(int fd, int level, int name, const void *val, socklen_t len) = setsockopt;

int ktls_set_ulp(int fd) {
  return ktls_setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof "tls") < 0 ? -errno : 0;
}

int ktls_set_key(int fd, int dir, const union ktls_info *ki) {
  socklen_t len = (socklen_t)ktls_info_size(ki);
  if (len == 0) return -EINVAL;
  return ktls_setsockopt(fd, SOL_TLS, dir == KTLS_TX ? TLS_TX : TLS_RX, ki, len) < 0 ? -errno : 0;
}

int ktls_install(int fd, const union ktls_info *tx, const union ktls_info *rx) {
  int r = ktls_set_ulp(fd);
  if (r == 0 && tx) r = ktls_set_key(fd, KTLS_TX, tx);
  if (r == 0 && rx) r = ktls_set_key(fd, KTLS_RX, rx);
  return r;
}

/* ---- records ------------------------------------------------------------ */

static enum ktls_action verdict(struct ktls_verdict *v, enum ktls_action a, const char *why) {
  v->action = a;
  v->why = why;
  return a;
}

enum ktls_action ktls_classify(uint8_t type, const uint8_t *body, size_t n, uint16_t version,
                               struct ktls_verdict *v) {
  bool tls13 = version == TLS_1_3_VERSION;
  memset(v, 0, sizeof *v);
  switch (type) {
  case KTLS_REC_APPDATA: return verdict(v, KTLS_ACT_DATA, "application data");
  case KTLS_REC_ALERT:
    /* One alert per record; BoringSSL rejects anything else too. */
    if (n != 2) return verdict(v, KTLS_ACT_ERROR, "malformed alert record");
    v->alert_level = body[0];
    v->alert_desc = body[1];
    if (body[0] != 1 && body[0] != 2) return verdict(v, KTLS_ACT_ERROR, "bad alert level");
    if (body[1] == 0) return verdict(v, KTLS_ACT_CLOSE, "close_notify");
    /* RFC 8446 §6.1: user_canceled comes before a close_notify; §6: every
     * other alert in TLS 1.3 is an error whatever its level. RFC 5246 §7.2:
     * TLS 1.2 warning alerts do not end the connection. */
    if (body[1] == 90 && (tls13 || body[0] == 1)) return verdict(v, KTLS_ACT_IGNORE, "user_canceled");
    if (!tls13 && body[0] == 1) return verdict(v, KTLS_ACT_IGNORE, "warning alert");
    return verdict(v, KTLS_ACT_ALERT, "alert");
  case KTLS_REC_HANDSHAKE: {
    if (n == 0) return verdict(v, KTLS_ACT_ERROR, "empty handshake record");
    /* Post-handshake messages; a record can carry several. Each must be
     * whole: we keep no state to join one split across records. */
    while (n > 0) {
      if (n < 4) return verdict(v, KTLS_ACT_ERROR, "truncated handshake header");
      size_t len = (size_t)body[1] << 16 | (size_t)body[2] << 8 | body[3];
      if (len > n - 4) return verdict(v, KTLS_ACT_ERROR, "handshake message split across records");
      uint8_t mt = body[0];
      if (tls13 && mt == 24) { /* KeyUpdate, RFC 8446 §4.6.3 */
        if (len != 1 || body[4] > 1) return verdict(v, KTLS_ACT_ERROR, "malformed KeyUpdate");
        return verdict(v, KTLS_ACT_KEY_UPDATE, "KeyUpdate");
      }
      if (tls13 && mt == 4) { /* NewSessionTicket: we never resume, drop it */
      } else if (!tls13 && mt == 0) { /* HelloRequest: ignorable, RFC 5246 §7.4.1.1 */
        if (len != 0) return verdict(v, KTLS_ACT_ERROR, "malformed HelloRequest");
      } else if (!tls13 && mt == 1) {
        return verdict(v, KTLS_ACT_ERROR, "renegotiation not supported");
      } else {
        return verdict(v, KTLS_ACT_ERROR, "unexpected post-handshake message");
      }
      body += 4 + len;
      n -= 4 + len;
    }
    return verdict(v, KTLS_ACT_IGNORE, "session ticket");
  }
  case KTLS_REC_CHANGE_CIPHER_SPEC:
    return verdict(v, KTLS_ACT_ERROR, "unexpected change_cipher_spec");
  }
  return verdict(v, KTLS_ACT_ERROR, "unknown record type");
}

int ktls_cmsg_record_type(const void *control, size_t controllen) {
  struct msghdr m = {.msg_control = (void *)(uintptr_t)control, .msg_controllen = controllen};
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm))
    if (cm->cmsg_level == SOL_TLS && cm->cmsg_type == TLS_GET_RECORD_TYPE &&
        cm->cmsg_len >= CMSG_LEN(1))
      return *(const unsigned char *)CMSG_DATA(cm);
  return -1;
}

long ktls_recv_record(int fd, uint8_t *buf, size_t cap, uint8_t *type) {
  union {
    char buf[CMSG_SPACE(sizeof(unsigned char))];
    struct cmsghdr align;
  } ctl;
  struct iovec iov = {.iov_base = buf, .iov_len = cap};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                     .msg_controllen = sizeof ctl.buf};
  ssize_t r = recvmsg(fd, &m, MSG_DONTWAIT);
  if (r < 0) return -errno;
  int t = ktls_cmsg_record_type(ctl.buf, m.msg_controllen);
  *type = t < 0 ? KTLS_REC_APPDATA : (uint8_t)t;
  return (long)r;
}

int ktls_send_alert(int fd, uint8_t level, uint8_t desc) {
  union {
    char buf[CMSG_SPACE(sizeof(unsigned char))];
    struct cmsghdr align;
  } ctl;
  memset(&ctl, 0, sizeof ctl);
  uint8_t body[2] = {level, desc};
  struct iovec iov = {.iov_base = body, .iov_len = sizeof body};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                     .msg_controllen = sizeof ctl.buf};
  struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
  cm->cmsg_level = SOL_TLS;
  cm->cmsg_type = TLS_SET_RECORD_TYPE;
  cm->cmsg_len = CMSG_LEN(sizeof(unsigned char));
  *CMSG_DATA(cm) = KTLS_REC_ALERT;
  return sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 ? -errno : 0;
}
