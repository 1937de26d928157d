/* bootstrap_dns.h: derper's /bootstrap-dns (a client's DNS fallback when its
 * own resolver fails), with -bootstrap-dns-names and
 * -unpublished-bootstrap-dns-names.
 *
 * A thread of its own resolves the names (getaddrinfo; TXT records through
 * libresolv) at start and every 10 minutes, off the shards, and publishes the
 * result under a mutex: the published names as one JSON map, ready to send,
 * and the unpublished ones, answered one at a time to a request that names
 * one (?q=NAME), and then only to the share of clients the name's TXT
 * percentage lets in (derper's remoteAddrMatchesPercent: a fixed answer per
 * client address). A shard answering a request holds the mutex only to copy
 * the answer out; the thread holds it only to swap in a new result. The
 * bodies are byte for byte derper's (encoding/json's MarshalIndent with a
 * tab, net.IP's text form). */
#ifndef DERPD_BOOTSTRAP_DNS_H
#define DERPD_BOOTSTRAP_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct stats;

#define BDNS_IP_MAX 46     /* an address as text, NUL included (INET6_ADDRSTRLEN) */
#define BDNS_TXT_MAX 256   /* a TXT record as derpd keeps it (longer: cut, so not a percentage) */
#define BDNS_ADDRS_MAX 64  /* addresses kept per name */
#define BDNS_TXTS_MAX 16   /* TXT records read per name */
#define BDNS_QUERIED_MAX 500 /* derper forgets the names asked for past this many */

/* How names are looked up; tests give their own. Each returns how many it
 * wrote (at most max), or -1 with a reason in why. */
struct bdns_lookup {
  /* The addresses of name, as Go's net.IP prints them. */
  int (*ip)(void *ctx, const char *name, char (*ips)[BDNS_IP_MAX], int max, char *why, size_t whylen);
  /* The TXT records of name, each record's strings joined (Go's LookupTXT). */
  int (*txt)(void *ctx, const char *name, char (*recs)[BDNS_TXT_MAX], int max, char *why, size_t whylen);
  void *ctx;
};

struct bootstrap_dns;

/* The lists as the flags give them (comma-separated; NULL or "" for none).
 * lookup: NULL for the system's (getaddrinfo, res_nquery). NULL if out of memory. */
struct bootstrap_dns *bootstrap_dns_new(const char *published, const char *unpublished,
                                        const struct bdns_lookup *lookup);
/* Resolve both lists now and publish the result (what the thread does every
 * 10 minutes); a name that fails is logged and left out, as in derper. */
void bootstrap_dns_refresh(struct bootstrap_dns *b);
/* The thread: nothing to do (and no thread) without names. 0 or -1. */
int bootstrap_dns_start(struct bootstrap_dns *b);
/* Stops the thread (waiting at most 2 s: a lookup may hang) and frees b. */
void bootstrap_dns_free(struct bootstrap_dns *b);

/* derper's handleBootstrapDNS for a client at peer (16 bytes, v4 mapped),
 * with the request's raw query string (query_cut: derpd kept only its
 * start; its q then counts as absent). Counts in st (the calling shard's).
 * Returns the body, malloc'd, or NULL for an empty one (*len 0) or when out
 * of memory (*len SIZE_MAX). */
char *bootstrap_dns_answer(struct bootstrap_dns *b, struct stats *st, const uint8_t peer[16],
                           const char *query, size_t query_len, bool query_cut, size_t *len);
/* How many names requests have asked for (derper's queried_domains). */
int64_t bootstrap_dns_queried(struct bootstrap_dns *b);

/* ---- Pieces, exposed for tests ---- */

/* Go's math/rand/v2 PCG(seed1, seed2), its first Float64. */
double bdns_pcg_float64(uint64_t seed1, uint64_t seed2);
/* remoteAddrMatchesPercent: percent in [0, 1]; draw, uniform in [0, 1), is
 * used for a loopback peer only (derper: rand.Float64() < 0.5). */
bool bdns_percent_match(const uint8_t peer[16], double percent, double draw);
/* An address as Go's net.IP String() writes it (v4 mapped: dotted; v6: RFC
 * 5952). family AF_INET (4 bytes) or AF_INET6 (16). */
void bdns_ip_string(int family, const uint8_t *addr, char out[BDNS_IP_MAX]);

#endif
