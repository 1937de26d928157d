/* handshake.c: ServerKey, ClientInfo and ServerInfo payloads.
 *
 * Owns building and opening the handshake payloads: the NaCl box (libsodium
 * crypto_box_easy, random 24-byte nonce first on the wire) and the JSON inside
 * it (jansson). JSON is read the way Go's encoding/json reads into a struct:
 * key names match case-insensitively, unknown keys are ignored, null leaves a
 * field alone, and a known key of the wrong type is an error. One bound of
 * derpd's own: a meshKey longer than DERP_MESH_KEY_MAX fails the open. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <sodium.h>

#include "derp/frame.h"
#include "derp/handshake.h"

#define BOX_OVERHEAD crypto_box_MACBYTES                 /* 16 */
#define CI_HEAD (DERP_KEY_LEN + DERP_NONCE_LEN)          /* key + nonce */
#define SI_MAX_PAYLOAD (64 * 1024)                       /* frame limit for ServerInfo */
/* The ClientInfo JSON that fits DERP_CLIENT_INFO_SEAL_MAX once sealed. */
#define JSON_MAX (DERP_CLIENT_INFO_SEAL_MAX - CI_HEAD - BOX_OVERHEAD)

_Static_assert(crypto_box_NONCEBYTES == DERP_NONCE_LEN, "nonce size");
_Static_assert(crypto_box_PUBLICKEYBYTES == DERP_KEY_LEN, "key size");
_Static_assert(DERP_SEAL_OVERHEAD == DERP_NONCE_LEN + BOX_OVERHEAD, "seal overhead");
_Static_assert(JSON_MAX >= DERP_MESH_KEY_MAX + 6 * DERP_APP_NAME_MAX + 128, "ClientInfo JSON room");

/* ---- ServerKey ---- */

size_t derp_server_key_payload(uint8_t out[DERP_SERVER_KEY_PAYLOAD_LEN], const derp_key *server_pub) {
  memcpy(out, DERP_MAGIC, DERP_MAGIC_LEN);
  memcpy(out + DERP_MAGIC_LEN, server_pub->b, DERP_KEY_LEN);
  return DERP_SERVER_KEY_PAYLOAD_LEN;
}

int derp_server_key_parse(const uint8_t *p, size_t n, derp_key *server_pub) {
  if (p == NULL || n < DERP_SERVER_KEY_PAYLOAD_LEN) return -1;
  if (memcmp(p, DERP_MAGIC, DERP_MAGIC_LEN) != 0) return -1;
  memcpy(server_pub->b, p + DERP_MAGIC_LEN, DERP_KEY_LEN);
  return 0;
}

/* ---- sealing ---- */

/* Serialise obj compactly into buf; returns length or 0 on failure/overflow. */
static size_t dump_json(json_t *obj, char *buf, size_t cap) {
  if (obj == NULL) return 0;
  size_t n = json_dumpb(obj, buf, cap, JSON_COMPACT);
  json_decref(obj);
  return n > cap ? 0 : n;
}

/* nonce + box(msg) into out; returns bytes written or 0 if out is too small. */
static size_t seal_box(uint8_t *out, size_t cap, const void *msg, size_t mlen,
                       const derp_key *to, const derp_privkey *from) {
  if (cap < DERP_SEAL_OVERHEAD + mlen) return 0;
  randombytes_buf(out, DERP_NONCE_LEN);
  if (crypto_box_easy(out + DERP_NONCE_LEN, msg, mlen, out, to->b, from->b) != 0) return 0;
  return DERP_SEAL_OVERHEAD + mlen;
}

/* Build the ClientInfo JSON; optional fields are omitted when empty/false,
 * like Go's omitempty. NULL if a string is not valid UTF-8. */
static json_t *client_info_json(const struct derp_client_info *ci) {
  json_t *o = json_object();
  if (o == NULL) return NULL;
  int err = json_object_set_new(o, "version", json_integer(ci->version));
  if (ci->has_mesh_key) {
    size_t len = strnlen(ci->mesh_key, DERP_MESH_KEY_MAX);
    err |= json_object_set_new(o, "meshKey", json_stringn(ci->mesh_key, len));
  }
  if (ci->can_ack_pings) err |= json_object_set_new(o, "CanAckPings", json_true());
  if (ci->is_prober) err |= json_object_set_new(o, "IsProber", json_true());
  size_t alen = strnlen(ci->app_name, DERP_APP_NAME_MAX);
  if (alen > 0) err |= json_object_set_new(o, "AppName", json_stringn(ci->app_name, alen));
  if (err) {
    json_decref(o);
    return NULL;
  }
  return o;
}

size_t derp_client_info_seal(uint8_t *out, size_t cap, const derp_privkey *client_priv,
                             const derp_key *server_pub, const struct derp_client_info *ci) {
  char js[JSON_MAX];
  size_t jlen = dump_json(client_info_json(ci), js, sizeof js);
  if (jlen == 0 || cap < DERP_KEY_LEN) return 0;
  derp_key client_pub;
  derp_key_public(client_priv, &client_pub);
  size_t n = seal_box(out + DERP_KEY_LEN, cap - DERP_KEY_LEN, js, jlen, server_pub, client_priv);
  if (n == 0) return 0;
  memcpy(out, client_pub.b, DERP_KEY_LEN);
  return DERP_KEY_LEN + n;
}

static json_t *server_info_json(const struct derp_server_info *si) {
  json_t *o = json_object();
  if (o == NULL) return NULL;
  int err = json_object_set_new(o, "version", json_integer(si->version));
  if (si->token_bucket_bytes_per_second)
    err |= json_object_set_new(o, "TokenBucketBytesPerSecond",
                               json_integer(si->token_bucket_bytes_per_second));
  if (si->token_bucket_bytes_burst)
    err |= json_object_set_new(o, "TokenBucketBytesBurst",
                               json_integer(si->token_bucket_bytes_burst));
  if (err) {
    json_decref(o);
    return NULL;
  }
  return o;
}

size_t derp_server_info_seal(uint8_t *out, size_t cap, const derp_privkey *server_priv,
                             const derp_key *client_pub, const struct derp_server_info *si) {
  char js[JSON_MAX];
  size_t jlen = dump_json(server_info_json(si), js, sizeof js);
  if (jlen == 0) return 0;
  return seal_box(out, cap, js, jlen, client_pub, server_priv);
}

/* ---- opening ---- */

/* Open nonce+box at p (n bytes, already size-checked) into a fresh buffer
 * holding the plaintext; NULL if it does not authenticate or on no memory. */
static char *open_box(const uint8_t *p, size_t n, const derp_key *from, const derp_privkey *to,
                      size_t *mlen) {
  size_t clen = n - DERP_NONCE_LEN;
  *mlen = clen - BOX_OVERHEAD;
  char *m = malloc(*mlen + 1);
  if (m == NULL) return NULL;
  if (crypto_box_open_easy((unsigned char *)m, p + DERP_NONCE_LEN, clen, p, from->b, to->b) != 0) {
    free(m);
    return NULL;
  }
  return m;
}

/* Copy a JSON string into dst (cap includes NUL), cut at a UTF-8 character
 * boundary so a truncated name is still valid text. */
static void copy_truncated(char *dst, size_t cap, const json_t *s) {
  size_t n = json_string_length(s);
  const char *src = json_string_value(s);
  if (n >= cap) {
    n = cap - 1;
    while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80) n--;
  }
  memcpy(dst, src, n);
  dst[n] = '\0';
}

/* Field readers return NULL when the value was taken (or was null), else
 * the reason the whole JSON fails. */
static const char *get_bool(const json_t *v, bool *out) {
  if (json_is_null(v)) return NULL;
  if (!json_is_boolean(v)) return "json";
  *out = json_is_true(v);
  return NULL;
}

static const char *get_int(const json_t *v, json_int_t *out) {
  if (json_is_null(v)) return NULL;
  if (!json_is_integer(v)) return "json";
  *out = json_integer_value(v);
  return NULL;
}

static const char *get_int32(const json_t *v, int *out) {
  json_int_t x = *out;
  if (get_int(v, &x) || x < INT32_MIN || x > INT32_MAX) return "json";
  *out = (int)x;
  return NULL;
}

static const char *ci_field(struct derp_client_info *ci, const char *k, const json_t *v) {
  if (strcasecmp(k, "version") == 0) return get_int32(v, &ci->version);
  if (strcasecmp(k, "CanAckPings") == 0) return get_bool(v, &ci->can_ack_pings);
  if (strcasecmp(k, "IsProber") == 0) return get_bool(v, &ci->is_prober);
  if (json_is_null(v)) return NULL;
  if (strcasecmp(k, "meshKey") == 0) {
    if (!json_is_string(v)) return "json";
    /* Kept whole, as sent (derper compares the text exactly), up to derpd's
     * bound: a key cut short could never match, so a longer one fails.
     * (jansson refuses "\u0000": no NUL can hide inside.) */
    size_t len = json_string_length(v);
    if (len > DERP_MESH_KEY_MAX) return "mesh_key_too_long";
    ci->has_mesh_key = len > 0;
    copy_truncated(ci->mesh_key, sizeof ci->mesh_key, v);
  } else if (strcasecmp(k, "AppName") == 0) {
    if (!json_is_string(v)) return "json";
    copy_truncated(ci->app_name, sizeof ci->app_name, v);
  }
  return NULL; /* unknown keys are ignored */
}

static uint32_t clamp_u32(json_int_t v) {
  if (v < 0) return 0;
  if (v > (json_int_t)UINT32_MAX) return UINT32_MAX;
  return (uint32_t)v;
}

static const char *si_field(struct derp_server_info *si, const char *k, const json_t *v) {
  json_int_t x = 0;
  if (strcasecmp(k, "version") == 0) return get_int32(v, &si->version);
  if (strcasecmp(k, "TokenBucketBytesPerSecond") == 0) {
    if (get_int(v, &x)) return "json";
    si->token_bucket_bytes_per_second = clamp_u32(x);
  } else if (strcasecmp(k, "TokenBucketBytesBurst") == 0) {
    if (get_int(v, &x)) return "json";
    si->token_bucket_bytes_burst = clamp_u32(x);
  }
  return NULL;
}

typedef const char *(*field_fn)(void *dst, const char *k, const json_t *v);

/* Parse a JSON object and feed each member to fn. NULL, or why it fails:
 * "json" if it is not an object, else the first member's reason. */
static const char *parse_object(const char *m, size_t mlen, field_fn fn, void *dst) {
  json_t *root = json_loadb(m, mlen, 0, NULL);
  const char *why = root != NULL && json_is_object(root) ? NULL : "json";
  const char *k;
  json_t *v;
  if (why == NULL) {
    json_object_foreach(root, k, v) {
      if ((why = fn(dst, k, v)) != NULL) break;
    }
  }
  json_decref(root);
  return why;
}

static const char *ci_field_cb(void *dst, const char *k, const json_t *v) {
  return ci_field(dst, k, v);
}
static const char *si_field_cb(void *dst, const char *k, const json_t *v) {
  return si_field(dst, k, v);
}

/* Shared tail of both opens: size check, box, JSON. */
static int open_and_parse(const uint8_t *p, size_t n, size_t max, const derp_key *from,
                          const derp_privkey *to, field_fn fn, void *dst, const char **why) {
  const char *dummy;
  if (why == NULL) why = &dummy;
  if (n < DERP_SEAL_OVERHEAD) return *why = "short", -1;
  if (n > max) return *why = "too_long", -1;
  size_t mlen;
  char *m = open_box(p, n, from, to, &mlen);
  if (m == NULL) return *why = "box", -1;
  *why = parse_object(m, mlen, fn, dst);
  sodium_memzero(m, mlen);
  free(m);
  return *why ? -1 : 0;
}

/* Size checks shared by both ClientInfo opens; takes the client's key. */
static int client_info_head(const uint8_t *p, size_t n, derp_key *client_pub,
                            struct derp_client_info *ci, const char **why) {
  memset(ci, 0, sizeof *ci);
  if (p == NULL || n < CI_HEAD + BOX_OVERHEAD) return *why = "short", -1;
  if (n > DERP_MAX_CLIENT_INFO) return *why = "too_long", -1;
  memcpy(client_pub->b, p, DERP_KEY_LEN);
  return 0;
}

int derp_client_info_open(const uint8_t *p, size_t n, const derp_privkey *server_priv,
                          derp_key *client_pub, struct derp_client_info *ci, const char **why) {
  const char *dummy;
  if (why == NULL) why = &dummy;
  if (client_info_head(p, n, client_pub, ci, why) < 0) return -1;
  return open_and_parse(p + DERP_KEY_LEN, n - DERP_KEY_LEN, DERP_MAX_CLIENT_INFO, client_pub,
                        server_priv, ci_field_cb, ci, why);
}

int derp_server_info_open(const uint8_t *p, size_t n, const derp_privkey *client_priv,
                          const derp_key *server_pub, struct derp_server_info *si, const char **why) {
  memset(si, 0, sizeof *si);
  if (p == NULL) n = 0;
  return open_and_parse(p, n, SI_MAX_PAYLOAD, server_pub, client_priv, si_field_cb, si, why);
}

/* ---- server side with a precomputed key ---- */

int derp_client_info_open_k(const uint8_t *p, size_t n, const derp_privkey *server_priv,
                            derp_key *client_pub, struct derp_client_info *ci, derp_box_key *k,
                            const char **why) {
  const char *dummy;
  if (why == NULL) why = &dummy;
  if (client_info_head(p, n, client_pub, ci, why) < 0) return -1;
  if (crypto_box_beforenm(k->b, client_pub->b, server_priv->b) != 0) return *why = "box", -1;
  const uint8_t *nonce = p + DERP_KEY_LEN;
  size_t clen = n - CI_HEAD;
  size_t mlen = clen - BOX_OVERHEAD;
  char *m = malloc(mlen + 1);
  if (m == NULL) return *why = "nomem", -1;
  int rc = -1;
  if (crypto_box_open_easy_afternm((unsigned char *)m, nonce + DERP_NONCE_LEN, clen, nonce, k->b) != 0)
    *why = "box";
  else if ((*why = parse_object(m, mlen, ci_field_cb, ci)) == NULL)
    rc = 0;
  sodium_memzero(m, mlen);
  free(m);
  return rc;
}

size_t derp_server_info_seal_k(uint8_t *out, size_t cap, const derp_box_key *k,
                               const struct derp_server_info *si) {
  char js[JSON_MAX];
  size_t jlen = dump_json(server_info_json(si), js, sizeof js);
  if (jlen == 0 || cap < DERP_SEAL_OVERHEAD + jlen) return 0;
  randombytes_buf(out, DERP_NONCE_LEN);
  if (crypto_box_easy_afternm(out + DERP_NONCE_LEN, (const unsigned char *)js, jlen, out, k->b) != 0)
    return 0;
  return DERP_SEAL_OVERHEAD + jlen;
}
