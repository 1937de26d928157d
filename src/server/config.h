/* config.h: command-line flags, with derper's names and Go's flag syntax.
 *
 * "-flag", "--flag", "-flag=value", "-flag value"; booleans take no separate
 * value ("-dev", "-dev=false"). Durations are Go's ("2s", "500ms", "1m30s").
 * Parsing only: no files are opened and nothing is started here. */
#ifndef DERPD_CONFIG_H
#define DERPD_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Let's Encrypt's production directory (--acme-directory's default). */
#define CONFIG_ACME_DIRECTORY_DEFAULT "https://acme-v02.api.letsencrypt.org/directory"
/* Google Trust Services' ACME directory: -certmode gcp's default (derper's). */
#define CONFIG_ACME_DIRECTORY_GCP "https://dv.acme-v02.api.pki.goog/directory"
/* derper's defaults: the key file when root gives no -c, tailscaled's socket. */
#define CONFIG_ROOT_KEY_PATH "/var/lib/derper/derper.key"
#define CONFIG_TAILSCALED_SOCKET "/var/run/tailscale/tailscaled.sock"

struct config {
  char listen_host[256];     /* -a host part; "" = all addresses */
  uint16_t listen_port;      /* -a port part */
  char key_path[1024];       /* -c; "" = ephemeral key (dev) */
  bool dev;                  /* -dev: plain HTTP on :3340, ephemeral key unless -c */
  char hostname[256];        /* -hostname (default derp.example.com; derper's: derp.tailscale.com) */
  int64_t tcp_write_timeout_ms;    /* -tcp-write-timeout, default 2s, 0 = none */
  int64_t handshake_timeout_ms;    /* --handshake-timeout, default 10s */
  int64_t keepalive_ms;            /* --keepalive-interval, default 60s (+ up to 5s jitter) */
  int shards;                /* --shards, 0 = online CPUs */
  int max_conns;             /* --max-conns, per process, default derived from RLIMIT_NOFILE */
  int recv_bufs;             /* --recv-bufs per shard, default 256 (power of two) */
  int recv_buf_size;         /* --recv-buf-size bytes, default 16384 */
  int queue_depth;           /* --queue-depth: packets per inter-shard data ring (power of 2); 0 = auto */
  int64_t batch_wait_us;     /* --batch-wait: a busy shard's sleep gathers events this long
                                (core/shard.c); 0 = wake on every event */
  int batch_events;          /* --batch-events: ... or until this many have completed */
  int verbose;               /* -v / --verbose, may repeat */
  char debug_allow[1024];    /* --debug-allow: CIDRs that may read /debug/, comma-separated
                                (repeats append); checked by operations/debug_access.c */
  char metrics_host[256];    /* --metrics-listen host part ("" = all addresses) */
  int metrics_port;          /* --metrics-listen port: a plain-HTTP listener for /debug/
                                only; -1 = none (default) */
  /* TLS: on when the port is 443 or -certmode is given (derper: 443 or manual). */
  bool certmode_defaulted;    /* letsencrypt because port 443 came without -certmode */
  char certmode[16];         /* -certmode: "manual", "selfsigned", "letsencrypt" or "gcp"
                                (both ACME, src/server/acme/); not given: "letsencrypt"
                                with TLS, as derper's default, else "" */
  char certdir[1024];        /* -certdir: <certdir>/<hostname>.crt and .key */
  char acme_directory[1024]; /* --acme-directory: the ACME server's directory URL */
  char acme_ca_file[1024];   /* --acme-ca-file: roots for the ACME server ("" = system's) */
  char acme_email[256];      /* -acme-email: the ACME account's contact ("" = none) */
  char acme_eab_kid[256];    /* -acme-eab-kid: External Account Binding key ID ("" = no EAB) */
  char acme_eab_key[256];    /* -acme-eab-key: its HMAC key, base64 or base64url */
  int http_port;             /* -http-port: port-80 helper when serving TLS; -1 = off */
  int ktls_mode;             /* --ktls: enum ktls_mode (ktls.h), default auto */
  /* Region (derper's flags). */
  char mesh_psk_file[1024];  /* -mesh-psk-file (default: derper's paths, if present); "" = no key */
  char mesh_with[8192];      /* -mesh-with: comma-separated nodes (region/mesh_config.c) */
  int mesh_max_remote;       /* -mesh-max-remote-keys: keys learned from mesh peers, at most */
  /* Admission (derper's flags; admission/). */
  char verify_client_url[2048];     /* -verify-client-url: admission controller; "" = none */
  bool verify_client_url_fail_open; /* -verify-client-url-fail-open (default true) */
  bool verify_clients;              /* -verify-clients: ask the local tailscaled */
  char tailscaled_socket[1024];     /* -socket: tailscaled's LocalAPI socket */
  int admission_workers;            /* --admission-workers: checks at once (default 32) */
  int admission_queue;              /* --admission-queue: checks waiting for a worker (default 4096) */
  /* STUN (derper's flags; stun/stun_server.c), bound to -a's host. */
  bool stun;                 /* -stun, default true */
  int stun_port;             /* -stun-port, default 3478; 0 = any free port */
  bool stun_generic;         /* --stun-generic: plain RFC 5389 requests too (default false) */
  /* Accepted connections (derper's flags). */
  double accept_limit;       /* -accept-connection-limit, per second; INFINITY = none (default) */
  int64_t accept_burst;      /* -accept-connection-burst, default INT64_MAX (Go's MaxInt) */
  int64_t tcp_keepalive_ms;  /* -tcp-keepalive-time, default 10m; 0 = Go's 15s; < 0 = off */
  int64_t tcp_user_timeout_ms; /* -tcp-user-timeout, default 15s; 0 = the kernel's default */
  char rate_config[1024];    /* -rate-config (derper v1.98): per-client receive rate limit,
                                JSON; "" = none; reread on SIGHUP (core/recv_limit.h) */
  /* derper's other flags. */
  bool version;              /* -version: print the version and exit */
  bool derp;                 /* -derp (default true); false: /derp answers 404 */
  char home[1024];           /* -home: "", "blank" or an http(s) URL (derper v1.82) */
  int home_mode;             /* derived: enum http_home (protocol/http.h) */
  char bootstrap_dns[4096];  /* -bootstrap-dns-names: comma-separated, served at /bootstrap-dns */
  char unpublished_dns[4096]; /* -unpublished-bootstrap-dns-names: name[/txt-name], comma-separated */
  char secrets_url[1024];    /* -secrets-url (derper v1.82, setec): refused when set */
  char secrets_prefix[256];  /* -secrets-path-prefix: accepted, no effect */
  char secrets_cache[1024];  /* -secrets-cache-dir: accepted, no effect */
  bool acme_ip_certs;        /* -acme-ip-certs (derper v1.102): certificates for our addresses */
  bool ace;                  /* -ace (derper v1.90, experimental): refused */
  bool key_path_default;     /* derived: no -c, so derper's default as root */
  char notes[512];           /* derived: flags accepted with no effect, for main.c to log */
  bool tls;                  /* derived by config_parse */
};

/* Fill defaults. */
void config_defaults(struct config *c);
/* 0 = run; 1 = help was printed to out (exit 0); -1 = error written to err
 * (exit 2). */
int config_parse(struct config *c, int argc, char **argv, FILE *out, char *err, size_t errlen);
void config_usage(FILE *out, const char *prog);
/* Whether certificates come from an ACME CA: -certmode letsencrypt or gcp. */
bool config_acme(const struct config *c);
/* s is an IPv4 or IPv6 address literal (a -hostname, an SNI, an ACME
 * identifier), not a DNS name. */
bool config_ip_literal(const char *s);
/* Parse a Go duration ("300ms", "1.5h", "2m3s") into milliseconds; -1 on error. */
int64_t config_parse_duration_ms(const char *s);
/* Depths of the rings between each ordered pair of n shards: *data for the
 * data ring (queue_depth if > 0, else auto), *ctrl for the control and the
 * handoff ring. Powers of two. */
void config_ring_depths(int n, int queue_depth, uint32_t *data, uint32_t *ctrl);

#endif
