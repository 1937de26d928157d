/* derp/handshake.h: ServerKey, ClientInfo and ServerInfo payloads.
 *
 * ClientInfo = client public key (32) + nonce (24) + crypto_box(JSON) sealed
 * from the client's private key to the server's public key. ServerInfo = nonce
 * (24) + crypto_box(JSON) from the server to the client. These functions build
 * and open the payloads (no frame header); libsodium does the crypto, jansson
 * the JSON. Unknown JSON fields are ignored, as Go's encoding/json does. */
#ifndef DERP_HANDSHAKE_H
#define DERP_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "derp/key.h"
#include "derp/meshkey.h"

#define DERP_SERVER_KEY_PAYLOAD_LEN (8 + DERP_KEY_LEN)
#define DERP_APP_NAME_MAX 64

struct derp_client_info {
  int version;                 /* protocol version the client speaks */
  bool has_mesh_key;           /* a non-empty "meshKey" was sent */
  /* "meshKey" as sent: 1..DERP_MESH_KEY_MAX characters of any text (not
   * checked for hex); compare it with derp_mesh_key_equal (derp/meshkey.h). */
  char mesh_key[DERP_MESH_KEY_MAX + 1];
  bool can_ack_pings;          /* "CanAckPings" */
  bool is_prober;              /* "IsProber" */
  char app_name[DERP_APP_NAME_MAX + 1]; /* "AppName", truncated */
};

struct derp_server_info {
  int version;                       /* always 2 from us */
  uint32_t token_bucket_bytes_per_second; /* 0 = absent */
  uint32_t token_bucket_bytes_burst;      /* 0 = absent */
};

/* ServerKey payload: magic + key. Parse accepts (and ignores) trailing bytes. */
size_t derp_server_key_payload(uint8_t out[DERP_SERVER_KEY_PAYLOAD_LEN], const derp_key *server_pub);
int derp_server_key_parse(const uint8_t *p, size_t n, derp_key *server_pub);

/* Seal a ClientInfo payload into out. Returns its length, 0 on error (cap too
 * small, JSON failure). The nonce is random. */
size_t derp_client_info_seal(uint8_t *out, size_t cap, const derp_privkey *client_priv,
                             const derp_key *server_pub, const struct derp_client_info *ci);
/* Open a ClientInfo payload with the server's private key. 0 on success; -1 with
 * a static reason in *why: "short", "too_long", "box" (will not open), "json"
 * (not an object, or a known field of the wrong type), "mesh_key_too_long"
 * (a meshKey over DERP_MESH_KEY_MAX characters). */
int derp_client_info_open(const uint8_t *p, size_t n, const derp_privkey *server_priv,
                          derp_key *client_pub, struct derp_client_info *ci, const char **why);

size_t derp_server_info_seal(uint8_t *out, size_t cap, const derp_privkey *server_priv,
                             const derp_key *client_pub, const struct derp_server_info *si);
int derp_server_info_open(const uint8_t *p, size_t n, const derp_privkey *client_priv,
                          const derp_key *server_pub, struct derp_server_info *si, const char **why);

/* The server's side of a handshake with one X25519, not two: open ClientInfo
 * and keep the shared key (crypto_box_beforenm), then seal ServerInfo with it.
 * Wipe the key (sodium_memzero) when done. */
typedef struct derp_box_key { uint8_t b[32]; } derp_box_key;
int derp_client_info_open_k(const uint8_t *p, size_t n, const derp_privkey *server_priv,
                            derp_key *client_pub, struct derp_client_info *ci, derp_box_key *k,
                            const char **why);
size_t derp_server_info_seal_k(uint8_t *out, size_t cap, const derp_box_key *k,
                               const struct derp_server_info *si);

/* Bytes needed for a sealed ClientInfo/ServerInfo payload around json_len bytes of JSON. */
#define DERP_SEAL_OVERHEAD (24 + 16)
/* Upper bound on what derp_client_info_seal / derp_server_info_seal write
 * (ClientInfo: room for the longest meshKey and an AppName of escapes). */
#define DERP_CLIENT_INFO_SEAL_MAX 2048
#define DERP_SERVER_INFO_SEAL_MAX 512

#endif
