/* derp/key.h: Curve25519 keys as DERP names them.
 *
 * Public keys print as "nodekey:<64 lowercase hex>", private keys as
 * "privkey:<64 hex>"; the key file is derper's JSON {"PrivateKey": "privkey:..."}.
 * Call derp_init() once before anything else in libderp (it initialises libsodium). */
#ifndef DERP_KEY_H
#define DERP_KEY_H

#include <stddef.h>
#include <stdint.h>

#define DERP_KEY_LEN 32
#define DERP_KEY_HEXLEN 64
/* "nodekey:" or "privkey:" + 64 hex + NUL */
#define DERP_KEY_STRLEN (8 + DERP_KEY_HEXLEN + 1)

typedef struct derp_key { uint8_t b[DERP_KEY_LEN]; } derp_key;         /* public */
typedef struct derp_privkey { uint8_t b[DERP_KEY_LEN]; } derp_privkey; /* private */

/* 0 on success, -1 if libsodium cannot initialise. Idempotent, thread-safe. */
int derp_init(void);

void derp_key_generate(derp_privkey *priv, derp_key *pub);
void derp_key_public(const derp_privkey *priv, derp_key *pub);
int derp_key_equal(const derp_key *a, const derp_key *b);
int derp_key_is_zero(const derp_key *k);

/* Parse "nodekey:<hex>" (or bare 64 hex). 0 on success, -1 on malformed input. */
int derp_key_parse(const char *s, derp_key *out);
/* Parse "privkey:<hex>" (or bare 64 hex). */
int derp_privkey_parse(const char *s, derp_privkey *out);

/* Write "nodekey:<hex>" / "privkey:<hex>" into out (DERP_KEY_STRLEN bytes). */
void derp_key_format(const derp_key *k, char out[DERP_KEY_STRLEN]);
void derp_privkey_format(const derp_privkey *k, char out[DERP_KEY_STRLEN]);
/* 64 lowercase hex + NUL. */
void derp_key_hex(const derp_key *k, char out[DERP_KEY_HEXLEN + 1]);
/* Short form for logs: "[abcde]" style is derper's; we print the first 8 hex chars. */
void derp_key_short(const derp_key *k, char out[9]);

/* Load derper's key file, or create it (mode 0600; missing parent
 * directories are made 0755, as derper's MkdirAll) if it is missing. *created tells which. 0 on success; -1 with errno / msg on failure
 * (msg gets a human-readable reason, may be NULL). */
int derp_keyfile_load_or_create(const char *path, derp_privkey *out, int *created,
                                char *msg, size_t msglen);
/* Write a key file atomically with mode 0600. */
int derp_keyfile_write(const char *path, const derp_privkey *k);
/* Write len bytes to path atomically: a fresh temp file beside it (O_EXCL,
 * created 0600, then given `mode`), fsync, rename over path, fsync of the
 * directory. 0, or -1 with errno (the temp file removed). */
int derp_file_write_atomic(const char *path, unsigned mode, const void *buf, size_t len);
/* mkdir -p: the missing directories above dir 0755, dir itself `mode`;
 * those that exist are left as they are. 0, or -1 with errno. */
int derp_mkdir_p(const char *dir, unsigned mode);

#endif
