/* test_ktls.c: proof, in userspace, that the crypto infos ktls_crypto_info()
 * builds are the ones the kernel needs. The development and CI kernels have
 * no kTLS, so instead of handing the structs to the kernel this test plays
 * the kernel's part (ktls_emul.c): it takes only the union ktls_info (the SSL is freed
 * first, as derpd will), builds nonces and additional data the way the
 * kernel does (net/tls: salt || explicit nonce for TLS 1.2 GCM, IV XOR
 * sequence number for TLS 1.3 and ChaCha20), and with BoringSSL's EVP_AEAD:
 *   (a) opens the peer's next records (including data the client sent right
 *       behind its Finished, and close_notify / KeyUpdate control records);
 *   (b) seals records that the peer's SSL_read must accept, after any session
 *       tickets BoringSSL already sent, and an alert the peer must see.
 * Peers: a BoringSSL client in memory (every version x cipher the library
 * lets us force), and `openssl s_client` in a child process over loopback TCP
 * (every version x cipher, and the only way to get TLS 1.3 AES-256-GCM, which
 * BoringSSL never picks against itself: test_ktls_openssl.c, in the same
 * binary, sharing ktls_test.h). If the kernel does have kTLS, one
 * more test installs the infos for real.
 *
 * Not Criterion: Criterion links libgit2 and through it OpenSSL's
 * libcrypto.so.3, whose symbols clash with BoringSSL's. A small runner below:
 * `test_ktls [name...]` runs all tests or the named ones, prints PASS / FAIL /
 * SKIP per test and then "N passed, N failed"; exit status 1 on failure. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/aead.h>
#include <openssl/bio.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "ktls_emul.h"
#include "ktls_test.h"
#include "server/transport/ktls.h"

/* ---- runner ------------------------------------------------------------- */

static char skip_why[256];

int skip(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(skip_why, sizeof skip_why, fmt, ap);
  va_end(ap);
  return SKIP;
}

/* ---- test certificate --------------------------------------------------- */

static EVP_PKEY *g_key;
static X509 *g_cert;

static int make_cert(void) {
  EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
  if (!ec || !EC_KEY_generate_key(ec)) return -1;
  g_key = EVP_PKEY_new();
  if (!g_key || !EVP_PKEY_assign_EC_KEY(g_key, ec)) return -1;
  g_cert = X509_new();
  X509_NAME *name = X509_get_subject_name(g_cert);
  if (!X509_set_version(g_cert, 2) || !ASN1_INTEGER_set(X509_get_serialNumber(g_cert), 1) ||
      !X509_gmtime_adj(X509_getm_notBefore(g_cert), -3600) ||
      !X509_gmtime_adj(X509_getm_notAfter(g_cert), 86400) ||
      !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const uint8_t *)"derpd-ktls-test",
                                  -1, -1, 0) ||
      !X509_set_issuer_name(g_cert, name) || !X509_set_pubkey(g_cert, g_key) ||
      !X509_sign(g_cert, g_key, EVP_sha256()))
    return -1;
  return 0;
}

/* ---- a BoringSSL pair in memory ----------------------------------------- */

const struct cipher ciphers[3] = {
  {"aes128gcm", "ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_AES_128_GCM_SHA256", NID_aes_128_gcm,
   TLS_CIPHER_AES_GCM_128},
  {"aes256gcm", "ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_AES_256_GCM_SHA384", NID_aes_256_gcm,
   TLS_CIPHER_AES_GCM_256},
  {"chacha20", "ECDHE-ECDSA-CHACHA20-POLY1305", "TLS_CHACHA20_POLY1305_SHA256",
   NID_chacha20_poly1305, TLS_CIPHER_CHACHA20_POLY1305},
};

/* Sessions (tickets) the BoringSSL client received. */
static int g_tickets;
static int count_ticket(SSL *ssl, SSL_SESSION *sess) {
  (void)ssl, (void)sess;
  g_tickets++;
  return 0; /* not kept */
}

SSL_CTX *make_ctx(bool server, int version, const struct cipher *ci, bool tickets) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  if (!ctx) return NULL;
  SSL_CTX_set_min_proto_version(ctx, (uint16_t)version);
  SSL_CTX_set_max_proto_version(ctx, (uint16_t)version);
  if (version == TLS1_2_VERSION && !SSL_CTX_set_strict_cipher_list(ctx, ci->tls12)) goto fail;
  if (!server) {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
    SSL_CTX_sess_set_new_cb(ctx, count_ticket);
  }
  if (server) {
    if (!SSL_CTX_use_certificate(ctx, g_cert) || !SSL_CTX_use_PrivateKey(ctx, g_key)) goto fail;
    ktls_ctx_init(ctx);
    if (!tickets) {
      SSL_CTX_set_num_tickets(ctx, 0);
      SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    }
  }
  return ctx;
fail:
  SSL_CTX_free(ctx);
  return NULL;
}

/* Move everything from one memory BIO to another (the network). */
static void pump(BIO *from, BIO *to) {
  uint8_t buf[4096];
  int n;
  while ((n = BIO_read(from, buf, sizeof buf)) > 0) BIO_write(to, buf, n);
}

/* Wires s (server) and c (client) to each other through memory BIOs. */
static void mem_link(SSL *s, SSL *c) {
  SSL_set_bio(s, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
  SSL_set_bio(c, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
  SSL_set_accept_state(s);
  SSL_set_connect_state(c);
}

/* Drives a mem_link'ed pair's handshake, pumping both ways. */
static void mem_handshake(SSL *s, SSL *c) {
  for (int i = 0; i < 8; i++) {
    SSL_do_handshake(c);
    pump(SSL_get_wbio(c), SSL_get_rbio(s));
    SSL_do_handshake(s);
    pump(SSL_get_wbio(s), SSL_get_rbio(c));
  }
}

static size_t drain(BIO *from, uint8_t *buf, size_t cap) {
  size_t got = 0;
  int n;
  while (got < cap && (n = BIO_read(from, buf + got, (int)(cap - got))) > 0) got += (size_t)n;
  return got;
}

struct variant {
  bool tickets;         /* server sends TLS 1.3 NewSessionTickets / 1.2 tickets */
  bool userspace_first; /* one record each way in userspace before the switch */
  bool key_update;      /* end with a client KeyUpdate (1.3) instead of close_notify */
};

static const char early_msg[] = "sent right behind the client Finished";

/* Decrypt the next record from raw (advancing *off) and check it. */
static int expect_record(struct kdir *rx, const uint8_t *raw, size_t rawlen, size_t *off,
                         uint8_t want_type, const void *want, size_t want_len, uint8_t *got_body,
                         long *got_len) {
  size_t l = rec_len(raw + *off, rawlen - *off);
  CHECK(l > 0, "no complete record at offset %zu of %zu", *off, rawlen);
  uint8_t type = 0;
  uint64_t seq = rx->seq;
  long n = kopen(rx, raw + *off, l, &type, got_body);
  CHECK(n >= 0, "record at seq %llu did not authenticate with the RX info",
        (unsigned long long)seq);
  CHECK(type == want_type, "record type %u, want %u", type, want_type);
  if (want) CHECK((size_t)n == want_len && !memcmp(got_body, want, want_len),
                  "plaintext differs (%ld bytes)", n);
  if (got_len) *got_len = n;
  *off += l;
  return PASS;
}

static int run_pair(int version, const struct cipher *ci, struct variant v) {
  SSL_CTX *sctx = make_ctx(true, version, ci, v.tickets), *cctx = make_ctx(false, version, ci, true);
  CHECK(sctx && cctx, "SSL_CTX set-up");
  SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
  CHECK(s && c, "SSL_new");
  mem_link(s, c);
  BIO *s_in = SSL_get_rbio(s), *s_out = SSL_get_wbio(s);
  BIO *c_in = SSL_get_rbio(c), *c_out = SSL_get_wbio(c);
  g_tickets = 0;

  /* Handshake. The client writes application data the moment its handshake
   * is done: in TLS 1.3 that is before the server has read the client
   * Finished, so the data lands right behind it. */
  bool cdone = false, sdone = false;
  for (int i = 0; i < 16 && !(cdone && sdone); i++) {
    if (!cdone) {
      int r = SSL_do_handshake(c);
      if (r == 1) {
        cdone = true;
        CHECK(SSL_write(c, early_msg, sizeof early_msg) == (int)sizeof early_msg, "early write");
      } else {
        CHECK(SSL_get_error(c, r) == SSL_ERROR_WANT_READ, "client handshake: %d",
              SSL_get_error(c, r));
      }
    }
    pump(c_out, s_in);
    if (!sdone) {
      int r = SSL_do_handshake(s);
      if (r == 1) sdone = true;
      else CHECK(SSL_get_error(s, r) == SSL_ERROR_WANT_READ, "server handshake: %d",
                 SSL_get_error(s, r));
    }
    pump(s_out, c_in);
  }
  pump(c_out, s_in);
  CHECK(cdone && sdone, "handshake did not finish");
  CHECK(SSL_version(s) == version, "version 0x%x", SSL_version(s));
  CHECK(SSL_CIPHER_get_cipher_nid(SSL_get_current_cipher(s)) == ci->nid, "negotiated %s",
        SSL_CIPHER_get_name(SSL_get_current_cipher(s)));
  /* BoringSSL read exactly the Finished: the early data is still unread. */
  CHECK(BIO_ctrl_pending(s_in) > 0, "client data not behind Finished");

  uint64_t wseq0 = SSL_get_write_sequence(s), rseq0 = SSL_get_read_sequence(s);
  uint8_t body[16384];
  if (v.userspace_first) {
    /* The transport decrypts what it already read before switching; the
     * sequence numbers must follow. */
    int n = SSL_read(s, body, sizeof body);
    CHECK(n == (int)sizeof early_msg && !memcmp(body, early_msg, sizeof early_msg),
          "userspace read: %d", n);
    static const char hello[] = "server record sealed by BoringSSL";
    CHECK(SSL_write(s, hello, sizeof hello) == (int)sizeof hello, "userspace write");
    pump(s_out, c_in);
    n = SSL_read(c, body, sizeof body);
    CHECK(n == (int)sizeof hello && !memcmp(body, hello, sizeof hello), "client read: %d", n);
    CHECK(SSL_get_read_sequence(s) == rseq0 + 1, "read sequence did not advance");
  }
  /* Whatever the server SSL sealed is on its way. BoringSSL's TLS 1.3
   * server seals its NewSessionTickets only with the first SSL_write: at
   * the handshake's end the write sequence is still 0, and if the SSL is
   * freed before any write they are never sent. With a userspace write
   * first they precede it and count in the write sequence, which the
   * client's acceptance of our records below proves. */
  pump(s_out, c_in);
  int tickets_before = g_tickets;

  union ktls_info tx, rx;
  char err[128] = "";
  CHECK(ktls_crypto_info(s, KTLS_TX, &tx, err, sizeof err) == 0, "TX info: %s", err);
  CHECK(ktls_crypto_info(s, KTLS_RX, &rx, err, sizeof err) == 0, "RX info: %s", err);
  uint16_t kv = version == TLS1_3_VERSION ? TLS_1_3_VERSION : TLS_1_2_VERSION;
  CHECK(tx.info.version == kv && rx.info.version == kv, "info.version");
  CHECK(tx.info.cipher_type == ci->ktype && rx.info.cipher_type == ci->ktype, "cipher_type");
  CHECK(ktls_info_size(&tx) > sizeof(struct tls_crypto_info), "size");

  /* From here on, as derpd: the bytes still in the read BIO are the socket's,
   * the SSL is gone, only the infos remain. */
  uint8_t raw[65536];
  size_t rawlen = drain(s_in, raw, sizeof raw), off = 0;
  SSL_free(s);
  SSL_CTX_free(sctx);

  struct kdir krx, ktx;
  CHECK(kdir_init(&krx, &rx) == 0 && kdir_init(&ktx, &tx) == 0, "AEAD from infos");
  /* First application-data epoch record is 0 in TLS 1.3; in TLS 1.2 the
   * client Finished was record 0 under these keys. */
  uint64_t rbase = (version == TLS1_3_VERSION ? 0 : 1) + (v.userspace_first ? 1 : 0);
  CHECK(rseq0 == (version == TLS1_3_VERSION ? 0u : 1u), "read sequence at handshake end");
  CHECK(krx.seq == rbase, "RX rec_seq %llu, want %llu", (unsigned long long)krx.seq,
        (unsigned long long)rbase);
  /* TX: TLS 1.2 Finished was record 0; TLS 1.3 tickets count. */
  printf("    %s %s tickets=%d userspace_first=%d: rx seq %llu, tx seq %llu (at handshake end %llu)\n",
         version == TLS1_3_VERSION ? "TLS1.3" : "TLS1.2", ci->name, v.tickets, v.userspace_first,
         (unsigned long long)krx.seq, (unsigned long long)ktx.seq, (unsigned long long)wseq0);

  /* (a) The client's data right behind Finished, unless userspace took it. */
  if (!v.userspace_first) {
    int r = expect_record(&krx, raw, rawlen, &off, KTLS_REC_APPDATA, early_msg, sizeof early_msg,
                          body, NULL);
    if (r != PASS) return r;
  }
  CHECK(off == rawlen, "%zu unexpected bytes after the early data", rawlen - off);
  /* ... and the next ones. */
  for (int i = 0; i < 3; i++) {
    char msg[64];
    int ml = snprintf(msg, sizeof msg, "client record %d", i);
    CHECK(SSL_write(c, msg, ml) == ml, "client write");
    rawlen = drain(c_out, raw, sizeof raw), off = 0;
    int r = expect_record(&krx, raw, rawlen, &off, KTLS_REC_APPDATA, msg, (size_t)ml, body, NULL);
    if (r != PASS) return r;
    CHECK(off == rawlen, "one record per write");
  }

  /* (b) Records sealed from the TX info: the client takes them, after any
   * tickets that arrived before. */
  for (int i = 0; i < 3; i++) {
    char msg[64];
    int ml = snprintf(msg, sizeof msg, "server record %d via kTLS", i);
    uint8_t wire[256];
    size_t wl = kseal(&ktx, KTLS_REC_APPDATA, msg, (size_t)ml, wire);
    CHECK(wl > 0, "seal");
    BIO_write(c_in, wire, (int)wl);
    int n = SSL_read(c, body, sizeof body);
    CHECK(n == ml && !memcmp(body, msg, (size_t)ml), "client SSL_read of sealed record: %d (%d)",
          n, SSL_get_error(c, n));
  }

  if (version == TLS1_3_VERSION && v.tickets && v.userspace_first)
    CHECK(tickets_before > 0, "the client got no ticket before the switch");
  if (version == TLS1_3_VERSION && !v.tickets)
    CHECK(g_tickets == 0, "%d tickets although disabled", g_tickets);

  /* Control records from the client through the classifier. */
  struct ktls_verdict vd;
  long n;
  if (v.key_update && version == TLS1_3_VERSION) {
    CHECK(SSL_key_update(c, SSL_KEY_UPDATE_NOT_REQUESTED), "SSL_key_update");
    CHECK(SSL_write(c, "x", 1) == 1, "write after KeyUpdate");
    rawlen = drain(c_out, raw, sizeof raw), off = 0;
    int r = expect_record(&krx, raw, rawlen, &off, KTLS_REC_HANDSHAKE, NULL, 0, body, &n);
    if (r != PASS) return r;
    CHECK(ktls_classify(KTLS_REC_HANDSHAKE, body, (size_t)n, kv, &vd) == KTLS_ACT_KEY_UPDATE,
          "KeyUpdate classified as %d (%s)", vd.action, vd.why);
    /* The record after it is under the next key: without re-keying we
     * cannot read it, which is why KeyUpdate closes. */
    size_t l = rec_len(raw + off, rawlen - off);
    uint8_t t;
    CHECK(l > 0 && kopen(&krx, raw + off, l, &t, body) < 0, "old key opened a new-key record");
  } else {
    CHECK(SSL_shutdown(c) == 0, "client close_notify");
    rawlen = drain(c_out, raw, sizeof raw), off = 0;
    int r = expect_record(&krx, raw, rawlen, &off, KTLS_REC_ALERT, "\x01\x00", 2, body, &n);
    if (r != PASS) return r;
    CHECK(ktls_classify(KTLS_REC_ALERT, body, (size_t)n, kv, &vd) == KTLS_ACT_CLOSE,
          "close_notify classified as %d", vd.action);
  }

  /* Our close_notify, as sendmsg(TLS_SET_RECORD_TYPE=21) would send it. */
  uint8_t wire[64];
  size_t wl = kseal(&ktx, KTLS_REC_ALERT, "\x01\x00", 2, wire);
  CHECK(wl > 0, "seal alert");
  BIO_write(c_in, wire, (int)wl);
  int r = SSL_read(c, body, sizeof body);
  CHECK(r == 0 && SSL_get_error(c, r) == SSL_ERROR_ZERO_RETURN, "client saw close_notify: %d/%d", r,
        SSL_get_error(c, r));

  ktls_info_wipe(&tx);
  ktls_info_wipe(&rx);
  kdir_free(&krx);
  kdir_free(&ktx);
  SSL_free(c);
  SSL_CTX_free(cctx);
  return PASS;
}

static int run_all_variants(int version, const struct cipher *ci) {
  for (int t = 0; t < 2; t++)
    for (int u = 0; u < 2; u++) {
      struct variant v = {.tickets = t, .userspace_first = u, .key_update = u};
      int r = run_pair(version, ci, v);
      if (r != PASS) {
        fprintf(stderr, "    (variant: tickets=%d userspace_first=%d key_update=%d)\n", t, u, u);
        return r;
      }
    }
  return PASS;
}

static int t12_aes128(void) { return run_all_variants(TLS1_2_VERSION, &ciphers[0]); }
static int t12_aes256(void) { return run_all_variants(TLS1_2_VERSION, &ciphers[1]); }
static int t12_chacha(void) { return run_all_variants(TLS1_2_VERSION, &ciphers[2]); }

static int t13_aes128(void) {
  if (!EVP_has_aes_hardware())
    return skip("no AES hardware: BoringSSL prefers ChaCha20 in TLS 1.3 (covered by openssl_tls13_aes128gcm)");
  return run_all_variants(TLS1_3_VERSION, &ciphers[0]);
}

static int t13_aes256(void) {
  return skip("BoringSSL offers AES-128-GCM before AES-256-GCM in TLS 1.3 and has no knob "
              "to change it; covered by openssl_tls13_aes256gcm");
}

/* BoringSSL picks ChaCha20 in TLS 1.3 only without AES hardware; hide it by
 * re-running this test in a child with OPENSSL_ia32cap clearing the AES-NI
 * bit (CPUID.1:ECX bit 25 = bit 57 of the first word), read at library init. */
static const char *g_self;
static int t13_chacha(void) {
  if (!EVP_has_aes_hardware()) return run_all_variants(TLS1_3_VERSION, &ciphers[2]);
  if (getenv("KTLS_TEST_CHILD")) return FAIL; /* the mask did not take */
  fflush(NULL);
  pid_t pid = fork();
  CHECK(pid >= 0, "fork");
  if (pid == 0) {
    setenv("OPENSSL_ia32cap", "~0x200000000000000", 1);
    setenv("KTLS_TEST_CHILD", "1", 1);
    execl("/proc/self/exe", g_self, "tls13_chacha20", (char *)NULL);
    _exit(127);
  }
  int st;
  CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child with AES-NI masked failed (status %d)", st);
  return PASS;
}

/* ---- probe, classifier, cmsg, flag -------------------------------------- */

static int probe(void) {
  int p = ktls_probe();
  CHECK(p == 0 || p == 1, "probe returned %d", p);
  CHECK(ktls_probe() == p, "probe not stable");
  printf("    kernel kTLS: %s\n", p ? "available" : "not available (TCP_ULP \"tls\" refused)");
  return PASS;
}

static int classify(void) {
  struct ktls_verdict v;
  const uint16_t t3 = TLS_1_3_VERSION, t2 = TLS_1_2_VERSION;
  CHECK(ktls_classify(23, (const uint8_t *)"abc", 3, t3, &v) == KTLS_ACT_DATA, "data");
  CHECK(ktls_classify(23, NULL, 0, t3, &v) == KTLS_ACT_DATA, "empty data");
  /* alerts */
  CHECK(ktls_classify(21, (const uint8_t *)"\x01\x00", 2, t3, &v) == KTLS_ACT_CLOSE, "close_notify");
  CHECK(ktls_classify(21, (const uint8_t *)"\x01\x00", 2, t2, &v) == KTLS_ACT_CLOSE, "close_notify 1.2");
  CHECK(ktls_classify(21, (const uint8_t *)"\x02\x14", 2, t3, &v) == KTLS_ACT_ALERT &&
            v.alert_level == 2 && v.alert_desc == 20, "bad_record_mac");
  CHECK(ktls_classify(21, (const uint8_t *)"\x01\x2a", 2, t3, &v) == KTLS_ACT_ALERT,
        "1.3 warning-level alert is fatal");
  CHECK(ktls_classify(21, (const uint8_t *)"\x01\x2a", 2, t2, &v) == KTLS_ACT_IGNORE,
        "1.2 warning alert ignored");
  CHECK(ktls_classify(21, (const uint8_t *)"\x01\x5a", 2, t3, &v) == KTLS_ACT_IGNORE, "user_canceled");
  CHECK(ktls_classify(21, (const uint8_t *)"\x01", 1, t3, &v) == KTLS_ACT_ERROR, "short alert");
  CHECK(ktls_classify(21, (const uint8_t *)"\x01\x00\x01\x00", 4, t3, &v) == KTLS_ACT_ERROR,
        "two alerts");
  CHECK(ktls_classify(21, (const uint8_t *)"\x03\x00", 2, t3, &v) == KTLS_ACT_ERROR, "bad level");
  /* handshake */
  CHECK(ktls_classify(22, (const uint8_t *)"\x18\x00\x00\x01\x00", 5, t3, &v) == KTLS_ACT_KEY_UPDATE,
        "KeyUpdate");
  CHECK(ktls_classify(22, (const uint8_t *)"\x18\x00\x00\x01\x01", 5, t3, &v) == KTLS_ACT_KEY_UPDATE,
        "KeyUpdate requested");
  CHECK(ktls_classify(22, (const uint8_t *)"\x18\x00\x00\x01\x02", 5, t3, &v) == KTLS_ACT_ERROR,
        "KeyUpdate bad value");
  CHECK(ktls_classify(22, (const uint8_t *)"\x18\x00\x00\x02\x00\x00", 6, t3, &v) == KTLS_ACT_ERROR,
        "KeyUpdate bad length");
  static const uint8_t two_nst_then_ku[] = {4, 0, 0, 2, 0xaa, 0xbb, 4, 0, 0, 0, 24, 0, 0, 1, 0};
  CHECK(ktls_classify(22, two_nst_then_ku, 10, t3, &v) == KTLS_ACT_IGNORE, "two tickets");
  CHECK(ktls_classify(22, two_nst_then_ku, sizeof two_nst_then_ku, t3, &v) == KTLS_ACT_KEY_UPDATE,
        "tickets then KeyUpdate");
  CHECK(ktls_classify(22, two_nst_then_ku, 5, t3, &v) == KTLS_ACT_ERROR, "split message");
  CHECK(ktls_classify(22, two_nst_then_ku, 3, t3, &v) == KTLS_ACT_ERROR, "short header");
  CHECK(ktls_classify(22, NULL, 0, t3, &v) == KTLS_ACT_ERROR, "empty handshake");
  CHECK(ktls_classify(22, (const uint8_t *)"\x0d\x00\x00\x00", 4, t3, &v) == KTLS_ACT_ERROR,
        "CertificateRequest");
  CHECK(ktls_classify(22, (const uint8_t *)"\x18\x00\x00\x01\x00", 5, t2, &v) == KTLS_ACT_ERROR,
        "KeyUpdate in 1.2");
  CHECK(ktls_classify(22, (const uint8_t *)"\x00\x00\x00\x00", 4, t2, &v) == KTLS_ACT_IGNORE,
        "HelloRequest");
  CHECK(ktls_classify(22, (const uint8_t *)"\x01\x00\x00\x00", 4, t2, &v) == KTLS_ACT_ERROR,
        "renegotiation");
  CHECK(ktls_classify(20, (const uint8_t *)"\x01", 1, t3, &v) == KTLS_ACT_ERROR, "CCS");
  CHECK(ktls_classify(24, (const uint8_t *)"\x01", 1, t3, &v) == KTLS_ACT_ERROR, "heartbeat");
  CHECK(v.why && *v.why, "reason string");
  return PASS;
}

static int cmsg_type(void) {
  union {
    char buf[CMSG_SPACE(1) + CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } u;
  memset(&u, 0, sizeof u);
  struct msghdr m = {.msg_control = u.buf, .msg_controllen = sizeof u.buf};
  struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
  cm->cmsg_level = SOL_SOCKET, cm->cmsg_type = SCM_RIGHTS, cm->cmsg_len = CMSG_LEN(sizeof(int));
  cm = CMSG_NXTHDR(&m, cm);
  CHECK(cm, "room for two");
  cm->cmsg_level = SOL_TLS, cm->cmsg_type = TLS_GET_RECORD_TYPE, cm->cmsg_len = CMSG_LEN(1);
  *CMSG_DATA(cm) = 21;
  CHECK(ktls_cmsg_record_type(u.buf, sizeof u.buf) == 21, "found after another cmsg");
  CHECK(ktls_cmsg_record_type(u.buf, CMSG_SPACE(sizeof(int))) == -1, "absent");
  CHECK(ktls_cmsg_record_type(NULL, 0) == -1, "no control");
  return PASS;
}

static int mode_flag(void) {
  enum ktls_mode m;
  CHECK(ktls_mode_parse("auto", &m) == 0 && m == KTLS_AUTO, "auto");
  CHECK(ktls_mode_parse("off", &m) == 0 && m == KTLS_OFF, "off");
  CHECK(ktls_mode_parse("require", &m) == 0 && m == KTLS_REQUIRE, "require");
  CHECK(ktls_mode_parse("on", &m) == -1, "on");
  CHECK(!strcmp(ktls_mode_name(KTLS_REQUIRE), "require"), "name");
  return PASS;
}

/* Errors: unfinished handshake, and a cipher the kernel path does not take. */
static int info_errors(void) {
  SSL_CTX *ctx = make_ctx(true, TLS1_3_VERSION, &ciphers[0], true);
  SSL *s = SSL_new(ctx);
  union ktls_info ki;
  char err[128] = "";
  CHECK(ktls_crypto_info(s, KTLS_TX, &ki, err, sizeof err) == -1 && *err, "before handshake");
  SSL_free(s);
  SSL_CTX_free(ctx);
  /* TLS 1.3 without ktls_ctx_init: no secrets. */
  SSL_CTX *sctx = SSL_CTX_new(TLS_method()), *cctx = SSL_CTX_new(TLS_method());
  SSL_CTX_use_certificate(sctx, g_cert);
  SSL_CTX_use_PrivateKey(sctx, g_key);
  s = SSL_new(sctx);
  SSL *c = SSL_new(cctx);
  mem_link(s, c);
  mem_handshake(s, c);
  CHECK(!SSL_in_init(s), "handshake");
  err[0] = 0;
  CHECK(ktls_crypto_info(s, KTLS_RX, &ki, err, sizeof err) == -1 && strstr(err, "secret"),
        "no secrets: %s", err);
  SSL_free(s);
  SSL_free(c);
  SSL_CTX_free(sctx);
  SSL_CTX_free(cctx);
  return PASS;
}

/* derpd decides "part of a record already read in userspace" (the RX switch
 * must then not happen) with SSL_has_pending. BoringSSL's header says that in
 * TLS it equals SSL_pending != 0; what matters is that it also sees ciphertext
 * of an unfinished record, down to part of a header. */
static int partial_record_pending(void) {
  for (int vi = 0; vi < 2; vi++) {
    int version = vi ? TLS1_3_VERSION : TLS1_2_VERSION;
    SSL_CTX *sctx = make_ctx(true, version, &ciphers[0], false);
    SSL_CTX *cctx = make_ctx(false, version, &ciphers[0], true);
    SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
    mem_link(s, c);
    mem_handshake(s, c);
    BIO *s_in = SSL_get_rbio(s), *c_out = SSL_get_wbio(c);
    CHECK(!SSL_in_init(s) && !SSL_in_init(c), "handshake");
    CHECK(!SSL_has_pending(s), "nothing pending after the handshake");
    static const char msg[] = "GET /derp HTTP/1.1";
    CHECK(SSL_write(c, msg, sizeof msg) == (int)sizeof msg, "write");
    uint8_t rec[256], out[256];
    size_t n = drain(c_out, rec, sizeof rec);
    size_t cuts[] = {3, 5, n - 1};
    for (size_t k = 0; k < 3; k++) {
      BIO_write(s_in, rec, (int)cuts[k]);
      CHECK(SSL_read(s, out, sizeof out) < 0, "partial record read");
      CHECK(SSL_has_pending(s), "TLS%s: %zu of %zu bytes buffered, not seen", vi ? "1.3" : "1.2",
            cuts[k], n);
      BIO_write(s_in, rec + cuts[k], (int)(n - cuts[k]));
      CHECK(SSL_read(s, out, sizeof out) == (int)sizeof msg, "the rest");
      CHECK(!SSL_has_pending(s), "whole record consumed");
      if (k < 2) {
        CHECK(SSL_write(c, msg, sizeof msg) == (int)sizeof msg, "write");
        CHECK(drain(c_out, rec, sizeof rec) == n, "same size");
      }
    }
    SSL_free(s);
    SSL_free(c);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
  }
  return PASS;
}

/* A TLS 1.3 KeyUpdate that the server handles in userspace before the
 * switch (the client sent it right behind its Finished, and tls_recv's read
 * loop took it): the keys are past the *_TRAFFIC_SECRET_0 the key log gave,
 * so ktls_crypto_info refuses both directions and the conn stays in
 * userspace TLS (it handed the kernel the stale keys: EBADMSG on the
 * client's next record, and BoringSSL's own KeyUpdate answer lost). */
static int key_update_before_switch(void) {
  SSL_CTX *sctx = make_ctx(true, TLS1_3_VERSION, &ciphers[0], false);
  SSL_CTX *cctx = make_ctx(false, TLS1_3_VERSION, &ciphers[0], false);
  SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
  mem_link(s, c);
  mem_handshake(s, c);
  CHECK(!SSL_in_init(s) && !SSL_in_init(c), "handshake");
  union ktls_info info;
  char err[160] = "";
  CHECK(ktls_crypto_info(s, KTLS_RX, &info, err, sizeof err) == 0, "before any KeyUpdate: %s", err);
  CHECK(SSL_key_update(c, SSL_KEY_UPDATE_REQUESTED) == 1, "client KeyUpdate");
  static const char msg[] = "GET /derp HTTP/1.1";
  CHECK(SSL_write(c, msg, sizeof msg) == (int)sizeof msg, "write");
  pump(SSL_get_wbio(c), SSL_get_rbio(s));
  uint8_t out[256];
  CHECK(SSL_read(s, out, sizeof out) == (int)sizeof msg, "the request behind the KeyUpdate");
  CHECK(ktls_crypto_info(s, KTLS_RX, &info, err, sizeof err) < 0, "RX keys given after a KeyUpdate");
  CHECK(strstr(err, "KeyUpdate") != NULL, "reason: %s", err);
  CHECK(ktls_crypto_info(s, KTLS_TX, &info, err, sizeof err) < 0, "TX keys given after a KeyUpdate");
  ktls_info_wipe(&info);
  SSL_free(s);
  SSL_free(c);
  SSL_CTX_free(sctx);
  SSL_CTX_free(cctx);
  return PASS;
}

/* ktls_install's steps through the ktls_setsockopt hook: the ULP first, then
 * each key with its own struct size; the first failure stops the rest. */
struct call { int level, name; socklen_t len; };
static struct call g_calls[4];
static int g_ncalls, g_fail_at = -1, g_fail_errno;
static int fake_setsockopt(int fd, int level, int name, const void *val, socklen_t len) {
  (void)fd, (void)val;
  if (g_ncalls < 4) g_calls[g_ncalls] = (struct call){level, name, len};
  if (g_ncalls++ == g_fail_at) {
    errno = g_fail_errno;
    return -1;
  }
  return 0;
}

static int install_steps(void) {
  int (*real)(int, int, int, const void *, socklen_t) = ktls_setsockopt;
  ktls_setsockopt = fake_setsockopt;
  union ktls_info tx, rx;
  memset(&tx, 0, sizeof tx);
  memset(&rx, 0, sizeof rx);
  tx.info.cipher_type = TLS_CIPHER_AES_GCM_256;
  rx.info.cipher_type = TLS_CIPHER_CHACHA20_POLY1305;
  int ok = 1;
  g_ncalls = 0, g_fail_at = -1;
  ok &= ktls_install(7, &tx, &rx) == 0 && g_ncalls == 3;
  ok &= g_calls[0].level == SOL_TCP && g_calls[0].name == TCP_ULP;
  ok &= g_calls[1].level == SOL_TLS && g_calls[1].name == TLS_TX &&
        g_calls[1].len == sizeof(struct tls12_crypto_info_aes_gcm_256);
  ok &= g_calls[2].level == SOL_TLS && g_calls[2].name == TLS_RX &&
        g_calls[2].len == sizeof(struct tls12_crypto_info_chacha20_poly1305);
  /* The kernel without the tls module: the ULP is refused, no key is tried. */
  g_ncalls = 0, g_fail_at = 0, g_fail_errno = ENOENT;
  ok &= ktls_set_ulp(7) == -ENOENT && g_ncalls == 1;
  g_ncalls = 0;
  ok &= ktls_install(7, &tx, &rx) == -ENOENT && g_ncalls == 1;
  /* A refused key is reported as such. */
  g_ncalls = 0, g_fail_at = 1, g_fail_errno = EINVAL;
  ok &= ktls_install(7, &tx, NULL) == -EINVAL && g_ncalls == 2;
  g_ncalls = 0, g_fail_at = -1;
  ok &= ktls_set_key(7, KTLS_RX, &rx) == 0 && g_ncalls == 1 && g_calls[0].name == TLS_RX;
  union ktls_info bad;
  memset(&bad, 0, sizeof bad);
  g_ncalls = 0;
  ok &= ktls_set_key(7, KTLS_TX, &bad) == -EINVAL && g_ncalls == 0; /* unknown cipher */
  ktls_setsockopt = real;
  CHECK(ok, "install steps");
  return PASS;
}

/* ---- the real kernel, where it has kTLS --------------------------------- */

static int kernel_install(void) {
  if (!ktls_probe()) return skip("kernel has no kTLS (TCP_ULP \"tls\" refused)");
  for (int vi = 0; vi < 2; vi++)
    for (int ci = 0; ci < 3; ci++) {
      int version = vi ? TLS1_3_VERSION : TLS1_2_VERSION;
      if (version == TLS1_3_VERSION && ci == 1) continue; /* BoringSSL won't pick it */
      if (version == TLS1_3_VERSION && ci == 2 && EVP_has_aes_hardware()) continue;
      if (version == TLS1_3_VERSION && ci == 0 && !EVP_has_aes_hardware()) continue;
      int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
      socklen_t alen = sizeof a;
      CHECK(bind(lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(lfd, 1) == 0 &&
                getsockname(lfd, (struct sockaddr *)&a, &alen) == 0, "listen");
      int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      CHECK(connect(cfd, (struct sockaddr *)&a, sizeof a) == 0, "connect");
      int sfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
      CHECK(sfd >= 0, "accept");
      close(lfd);
      /* One thread drives both ends: non-blocking fds for the handshake. */
      fcntl(sfd, F_SETFL, O_NONBLOCK);
      fcntl(cfd, F_SETFL, O_NONBLOCK);
      SSL_CTX *sctx = make_ctx(true, version, &ciphers[ci], true);
      SSL_CTX *cctx = make_ctx(false, version, &ciphers[ci], true);
      SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
      SSL_set_fd(s, sfd);
      SSL_set_fd(c, cfd);
      SSL_set_accept_state(s);
      SSL_set_connect_state(c);
      bool cd = false, sd = false;
      for (int i = 0; i < 200 && !(cd && sd); i++) {
        if (!cd) cd = SSL_do_handshake(c) == 1;
        if (!sd) sd = SSL_do_handshake(s) == 1;
        usleep(1000);
      }
      CHECK(cd && sd, "handshake over loopback");
      union ktls_info tx, rx;
      char err[128];
      CHECK(ktls_crypto_info(s, KTLS_TX, &tx, err, sizeof err) == 0, "%s", err);
      CHECK(ktls_crypto_info(s, KTLS_RX, &rx, err, sizeof err) == 0, "%s", err);
      SSL_free(s);
      SSL_CTX_free(sctx);
      int r = ktls_install(sfd, &tx, &rx);
      CHECK(r == 0, "ktls_install: %s", strerror(-r));
      fcntl(sfd, F_SETFL, 0);
      static const char m1[] = "plaintext written to a kTLS socket";
      CHECK(write(sfd, m1, sizeof m1) == (ssize_t)sizeof m1, "write");
      uint8_t buf[256];
      int n = -1;
      for (int i = 0; i < 1000 && n <= 0; i++) {
        n = SSL_read(c, buf, sizeof buf);
        if (n <= 0) usleep(1000);
      }
      CHECK(n == (int)sizeof m1 && !memcmp(buf, m1, sizeof m1), "client read %d", n);
      static const char m2[] = "client record decrypted by the kernel";
      CHECK(SSL_write(c, m2, sizeof m2) == (int)sizeof m2, "client write");
      uint8_t type;
      long got = -EAGAIN;
      for (int i = 0; i < 1000 && got == -EAGAIN; i++) {
        got = ktls_recv_record(sfd, buf, sizeof buf, &type);
        if (got == -EAGAIN) usleep(1000);
      }
      CHECK(got == (long)sizeof m2 && type == KTLS_REC_APPDATA && !memcmp(buf, m2, sizeof m2),
            "kernel read %ld", got);
      CHECK(SSL_shutdown(c) == 0, "close_notify");
      got = -EAGAIN;
      for (int i = 0; i < 1000 && got == -EAGAIN; i++) {
        got = ktls_recv_record(sfd, buf, sizeof buf, &type);
        if (got == -EAGAIN) usleep(1000);
      }
      struct ktls_verdict vd;
      CHECK(got == 2 && type == KTLS_REC_ALERT &&
                ktls_classify(type, buf, 2, tx.info.version, &vd) == KTLS_ACT_CLOSE,
            "close_notify via kernel: %ld type %u", got, type);
      CHECK(ktls_send_alert(sfd, 1, 0) == 0, "send close_notify");
      n = -1;
      int e = 0;
      for (int i = 0; i < 1000; i++) {
        n = SSL_read(c, buf, sizeof buf);
        e = SSL_get_error(c, n);
        if (e != SSL_ERROR_WANT_READ) break;
        usleep(1000);
      }
      CHECK(n == 0 && e == SSL_ERROR_ZERO_RETURN, "client saw our close_notify: %d/%d", n, e);
      printf("    kernel kTLS ok: %s %s\n", vi ? "TLS1.3" : "TLS1.2", ciphers[ci].name);
      SSL_free(c);
      SSL_CTX_free(cctx);
      close(sfd);
      close(cfd);
    }
  return PASS;
}

/* ---- main --------------------------------------------------------------- */

static const struct test {
  const char *name;
  int (*fn)(void);
} tests[] = {
  {"probe", probe},
  {"classify", classify},
  {"cmsg_record_type", cmsg_type},
  {"mode_flag", mode_flag},
  {"info_errors", info_errors},
  {"partial_record_pending", partial_record_pending},
  {"key_update_before_switch", key_update_before_switch},
  {"install_steps", install_steps},
  {"tls12_aes128gcm", t12_aes128},
  {"tls12_aes256gcm", t12_aes256},
  {"tls12_chacha20", t12_chacha},
  {"tls13_aes128gcm", t13_aes128},
  {"tls13_aes256gcm", t13_aes256},
  {"tls13_chacha20", t13_chacha},
  {"openssl_tls12_aes128gcm", o12_aes128},
  {"openssl_tls12_aes256gcm", o12_aes256},
  {"openssl_tls12_chacha20", o12_chacha},
  {"openssl_tls13_aes128gcm", o13_aes128},
  {"openssl_tls13_aes256gcm", o13_aes256},
  {"openssl_tls13_chacha20", o13_chacha},
  {"kernel_install", kernel_install},
};

int main(int argc, char **argv) {
  g_self = argv[0];
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (make_cert() < 0) {
    fprintf(stderr, "cannot make the test certificate\n");
    ERR_print_errors_fp(stderr);
    return 1;
  }
  int passed = 0, failed = 0;
  for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
    bool want = argc < 2;
    for (int a = 1; a < argc; a++) want |= !strcmp(argv[a], tests[i].name);
    if (!want) continue;
    skip_why[0] = 0;
    int r = tests[i].fn();
    ERR_clear_error();
    if (r == SKIP) printf("SKIP %s: %s\n", tests[i].name, skip_why);
    else printf("%s %s\n", r == PASS ? "PASS" : "FAIL", tests[i].name);
    if (r == FAIL) failed++;
    else passed++;
  }
  printf("%d passed, %d failed\n", passed, failed);
  X509_free(g_cert);
  EVP_PKEY_free(g_key);
  return failed ? 1 : 0;
}
