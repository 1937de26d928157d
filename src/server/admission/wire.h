/* wire.h: admission's pure parts (no I/O, no threads): the verifier URL, the
 * bytes of the two requests derper makes, and reading the admission
 * controller's answer the way derper's Go code reads it. Unit-tested
 * (tests/test_admission_wire.c) and fuzzed (tests/fuzz/fuzz_admission.c). */
#ifndef DERPD_ADMISSION_WIRE_H
#define DERPD_ADMISSION_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "derp/key.h"

/* derper reads at most this much of the controller's answer (io.LimitReader). */
#define ADM_ANSWER_MAX 4096
/* derper's per-request timeout for -verify-client-url. */
#define ADM_TIMEOUT_MS 5000
/* tailscale's LocalAPI: the Host every request names, and the capability
 * version derper v1.78 sends (tailcfg.CurrentCapabilityVersion). */
#define ADM_LOCALAPI_HOST "local-tailscaled.sock"
#define ADM_TAILSCALE_CAP 109

/* A parsed -verify-client-url: http or https only. */
struct adm_url {
  bool tls;
  char host[256];        /* name or IP literal, without brackets: dialled,
                            sent as SNI (names only) and verified */
  uint16_t port;         /* the URL's, else 80 / 443 */
  char authority[300];   /* Host header: the URL's host[:port], as written */
  char target[2048];     /* request-target: path and query ("/" if empty) */
  char basic[512];       /* base64 of "user:password" from the URL, or "" */
};

/* 0, or -1 with a reason in err. Fragments are dropped (Go does not send
 * them); bytes a request line cannot carry (spaces, controls) are refused. */
int adm_url_parse(const char *s, struct adm_url *u, char *err, size_t errlen);

/* Redirects as Go's http.Client follows them (derper posts with it): 301 and
 * 302 (the request was a POST) and 303 go on as GET without the body; 307
 * and 308 repeat the request, body and all; other statuses are the answer.
 * The ADM_REDIRECTS_MAX-th redirect is an error, "stopped after 10
 * redirects", after 10 requests, as Go's default CheckRedirect. */
#define ADM_REDIRECTS_MAX 10
enum adm_redirect { ADM_REDIRECT_NONE, ADM_REDIRECT_GET, ADM_REDIRECT_SAME };
enum adm_redirect adm_redirect_kind(int status);

/* The URL a Location value (loc[0..len)) names, resolved against base as Go's
 * url.ResolveReference does: absolute (http or https), scheme-relative
 * ("//host/p"), or a reference on base's host (the path merged with base's
 * and its dot segments removed; base's user:password kept, as Go keeps it).
 * 0, or -1 with a reason in err. */
int adm_url_resolve(const struct adm_url *base, const char *loc, size_t len, struct adm_url *out, char *err,
                    size_t errlen);

/* {"NodePublic":"nodekey:<hex>","Source":"<ip>"}, as Go's json.Marshal writes
 * tailcfg.DERPAdmitClientRequest. Bytes written (NUL-terminated), 0 if cap is
 * too small. */
size_t adm_format_body(char *out, size_t cap, const derp_key *k, const char *ip);
/* The whole POST to the controller: head and body. 0 if cap is too small. */
size_t adm_format_post(char *out, size_t cap, const struct adm_url *u, const char *body, size_t blen);
/* The GET a 301/302/303 turns the POST into (no body). 0 if cap is too small. */
size_t adm_format_get(char *out, size_t cap, const struct adm_url *u);
/* The LocalAPI request derper's WhoIsNodeKey makes: GET
 * /localapi/v0/whois?addr=nodekey%3A<hex>, Host local-tailscaled.sock. */
size_t adm_format_whois(char *out, size_t cap, const derp_key *k);

/* derper decodes the answer with json.NewDecoder(io.LimitReader(body, 4 KiB))
 * .Decode(&DERPAdmitClientResponse{Allow bool}); this reads it the same way:
 * the first JSON value of the body, whatever follows it ignored; the field
 * name matched without regard to ASCII case, the last one winning; null
 * leaves it false; any other type is an error, as is a syntax error or a
 * value that does not end within the 4 KiB. */
enum adm_answer {
  ADM_ANSWER_MORE,   /* the value has not ended yet (never when eof) */
  ADM_ANSWER_ALLOW,  /* an object whose Allow is true */
  ADM_ANSWER_DENY,   /* a well-formed answer that does not allow: Allow false
                        or absent, null, or not an object */
  ADM_ANSWER_BAD,    /* a syntax error, a wrong type for Allow, or the body
                        ended (eof) before the value did: why says which */
};
/* p[0..n): the body so far; eof: nothing more will be read (the body ended,
 * failed, or reached ADM_ANSWER_MAX). why: a static reason for BAD and DENY. */
enum adm_answer adm_answer_read(const uint8_t *p, size_t n, bool eof, const char **why);

#endif
