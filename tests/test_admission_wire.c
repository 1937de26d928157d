/* test_admission_wire.c: admission's pure parts (src/server/admission/wire.c)
 * and its flags: the verifier URL, the request bytes derper sends, and the
 * controller's answer read as Go's encoding/json reads it (each expectation
 * below is what json.NewDecoder(io.LimitReader(body, 4096)).Decode of
 * tailcfg.DERPAdmitClientResponse does with that body). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "derp/hex.h"
#include "server/admission/wire.h"
#include "server/config.h"

/* ---- URL ---- */

Test(admission_url, forms) {
  struct adm_url u;
  char err[128];
  cr_assert_eq(adm_url_parse("http://verifier.example/check", &u, err, sizeof err), 0, "%s", err);
  cr_assert(!u.tls);
  cr_assert_str_eq(u.host, "verifier.example");
  cr_assert_eq(u.port, 80);
  cr_assert_str_eq(u.authority, "verifier.example");
  cr_assert_str_eq(u.target, "/check");
  cr_assert_str_eq(u.basic, "");

  cr_assert_eq(adm_url_parse("HTTPS://10.0.0.1:8443", &u, err, sizeof err), 0, "%s", err);
  cr_assert(u.tls);
  cr_assert_str_eq(u.host, "10.0.0.1");
  cr_assert_eq(u.port, 8443);
  cr_assert_str_eq(u.authority, "10.0.0.1:8443");
  cr_assert_str_eq(u.target, "/");

  cr_assert_eq(adm_url_parse("https://[::1]:9000/a/b?x=1&y=%20#frag", &u, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(u.host, "::1");
  cr_assert_eq(u.port, 9000);
  cr_assert_str_eq(u.authority, "[::1]:9000");
  cr_assert_str_eq(u.target, "/a/b?x=1&y=%20");

  cr_assert_eq(adm_url_parse("http://host?q", &u, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(u.target, "/?q");
  cr_assert_eq(adm_url_parse("http://host:/p", &u, err, sizeof err), 0, "%s", err);
  cr_assert_eq(u.port, 80);
  cr_assert_str_eq(u.authority, "host");

  /* user:password becomes Basic auth (percent-decoded, as Go's url.User). */
  cr_assert_eq(adm_url_parse("https://al%40ice:p%3Ass@h.example/x", &u, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(u.host, "h.example");
  cr_assert_str_eq(u.authority, "h.example");
  cr_assert_str_eq(u.basic, "YWxAaWNlOnA6c3M="); /* base64("al@ice:p:ss") */
  /* In userinfo '+' is itself (a query's '+' is a space: test_debug_access). */
  cr_assert_eq(adm_url_parse("http://a+b:c@h/x", &u, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(u.basic, "YStiOmM="); /* base64("a+b:c") */
  /* A user without a password: Go's SetBasicAuth(user, "") sends "user:". */
  cr_assert_eq(adm_url_parse("http://user@h/x", &u, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(u.basic, "dXNlcjo="); /* base64("user:") */
  cr_assert_eq(adm_url_parse("http://us%3Aer@h/x", &u, err, sizeof err), 0, "%s", err);
  cr_assert_str_eq(u.basic, "dXM6ZXI6"); /* base64("us:er:"): an escaped ':' is the user's */
}

Test(admission_url, refused) {
  struct adm_url u;
  char err[128];
  /* A host longer than the copy kept of it (found by fuzz_admission). */
  char longurl[400] = "http://";
  memset(longurl + 7, 'a', 280); /* under the authority bound (300), over the host copy (256) */
  strcpy(longurl + 287, "/x");
  cr_assert_eq(adm_url_parse(longurl, &u, err, sizeof err), -1);
  cr_assert_str_eq(err, "host name too long");
  const char *bad[] = {"", "verifier.example/check", "ftp://h/", "http://", "http:///x", "http://h:0/",
                       "http://h:65536/", "http://h:8x/", "http://::1/", "http://[::1/", "http://[zz]/",
                       "http://h/a b", "http://h/\x01", "http://%zz@h/", "http://h\t/"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    cr_assert_eq(adm_url_parse(bad[i], &u, err, sizeof err), -1, "accepted \"%s\"", bad[i]);
}

/* ---- requests ---- */

static derp_key test_key(void) {
  derp_key k;
  for (int i = 0; i < 32; i++) k.b[i] = (uint8_t)(0xa0 + i);
  return k;
}

Test(admission_request, post) {
  derp_key k = test_key();
  char body[256], req[1024], hex[65];
  derp_hex_encode(k.b, 32, hex);
  size_t bl = adm_format_body(body, sizeof body, &k, "192.0.2.7");
  char want[256];
  snprintf(want, sizeof want, "{\"NodePublic\":\"nodekey:%s\",\"Source\":\"192.0.2.7\"}", hex);
  cr_assert_str_eq(body, want);
  cr_assert_eq(bl, strlen(want));
  struct adm_url u;
  char err[64];
  cr_assert_eq(adm_url_parse("https://u:p@v.example:444/check?x", &u, err, sizeof err), 0);
  size_t n = adm_format_post(req, sizeof req, &u, body, bl);
  char head[512];
  snprintf(head, sizeof head,
           "POST /check?x HTTP/1.1\r\nHost: v.example:444\r\nUser-Agent: derpd\r\n"
           "Content-Type: application/json\r\nContent-Length: %zu\r\nAuthorization: Basic dTpw\r\n\r\n",
           bl);
  cr_assert_eq(n, strlen(head) + bl);
  cr_assert_eq(memcmp(req, head, strlen(head)), 0, "%s", req);
  cr_assert_str_eq(req + strlen(head), body);
  cr_assert_eq(adm_format_post(req, 64, &u, body, bl), 0, "overflow not refused");
}

/* Go's redirect rules: which statuses, and Location resolved as
 * url.ResolveReference resolves it. */
Test(admission_redirect, kinds) {
  cr_assert_eq(adm_redirect_kind(301), ADM_REDIRECT_GET);
  cr_assert_eq(adm_redirect_kind(302), ADM_REDIRECT_GET);
  cr_assert_eq(adm_redirect_kind(303), ADM_REDIRECT_GET);
  cr_assert_eq(adm_redirect_kind(307), ADM_REDIRECT_SAME);
  cr_assert_eq(adm_redirect_kind(308), ADM_REDIRECT_SAME);
  int none[] = {200, 300, 304, 305, 306, 309, 404};
  for (size_t i = 0; i < sizeof none / sizeof none[0]; i++)
    cr_assert_eq(adm_redirect_kind(none[i]), ADM_REDIRECT_NONE, "%d", none[i]);
}

static const char *resolve(const struct adm_url *base, const char *loc, struct adm_url *out) {
  static char err[96];
  err[0] = 0;
  return adm_url_resolve(base, loc, strlen(loc), out, err, sizeof err) == 0 ? NULL : err;
}

Test(admission_redirect, resolve) {
  struct adm_url b, o;
  char err[64];
  cr_assert_eq(adm_url_parse("http://u:p@ctl.example:8080/a/b/check?x=1", &b, err, sizeof err), 0);
  static const struct { const char *loc, *target; } rel[] = {
      {"/next", "/next"},
      {"/next?y=2#frag", "/next?y=2"},
      {"other", "/a/b/other"},
      {"../up/./x", "/a/up/x"},
      {"../../../../top", "/top"},
      {"sub/", "/a/b/sub/"},
      {".", "/a/b/"},
      {"..", "/a/"},
      {"?q=3", "/a/b/check?q=3"},
      {"", "/a/b/check?x=1"},
      {"#only", "/a/b/check?x=1"},
  };
  for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
    const char *e = resolve(&b, rel[i].loc, &o);
    cr_assert_null(e, "%s: %s", rel[i].loc, e);
    cr_assert_str_eq(o.target, rel[i].target, "Location %s", rel[i].loc);
    cr_assert(!o.tls && o.port == 8080 && strcmp(o.host, "ctl.example") == 0, "%s: same host", rel[i].loc);
    cr_assert_str_eq(o.basic, b.basic, "%s: user:password kept on the same host", rel[i].loc);
  }
  cr_assert_null(resolve(&b, "https://other.example/v?z", &o));
  cr_assert(o.tls && o.port == 443 && strcmp(o.host, "other.example") == 0 && strcmp(o.target, "/v?z") == 0);
  cr_assert_str_eq(o.basic, "", "an absolute Location brings its own user:password, or none");
  cr_assert_str_eq(o.authority, "other.example");
  cr_assert_null(resolve(&b, "https://other.example/x/../y/./z?q=/../", &o));
  cr_assert_str_eq(o.target, "/y/z?q=/../", "dot segments of an absolute path go too; the query stays");
  cr_assert_null(resolve(&b, "//third.example:99/w", &o));
  cr_assert(!o.tls && o.port == 99 && strcmp(o.host, "third.example") == 0 && strcmp(o.target, "/w") == 0,
            "scheme-relative: base's scheme");
  cr_assert_not_null(resolve(&b, "ftp://x.example/", &o), "only http and https");
  cr_assert_not_null(resolve(&b, "/a b", &o), "a space cannot go in a request line");
  char longloc[3000];
  memset(longloc, 'a', sizeof longloc - 1);
  longloc[0] = '/';
  longloc[sizeof longloc - 1] = 0;
  cr_assert_not_null(resolve(&b, longloc, &o), "longer than a target holds");
  char req[512];
  cr_assert_null(resolve(&b, "/g?h", &o));
  size_t n = adm_format_get(req, sizeof req, &o);
  const char *want = "GET /g?h HTTP/1.1\r\nHost: ctl.example:8080\r\nUser-Agent: derpd\r\n"
                     "Authorization: Basic dTpw\r\n\r\n";
  cr_assert_str_eq(req, want);
  cr_assert_eq(n, strlen(want));
  cr_assert_eq(adm_format_get(req, 20, &o), 0, "overflow not refused");
}

Test(admission_request, whois) {
  derp_key k = test_key();
  char req[512], hex[65], want[512];
  derp_hex_encode(k.b, 32, hex);
  snprintf(want, sizeof want,
           "GET /localapi/v0/whois?addr=nodekey%%3A%s HTTP/1.1\r\nHost: local-tailscaled.sock\r\n"
           "User-Agent: derpd\r\nTailscale-Cap: 109\r\n\r\n", hex);
  cr_assert_eq(adm_format_whois(req, sizeof req, &k), strlen(want));
  cr_assert_str_eq(req, want);
}

/* ---- the answer ---- */

struct acase {
  const char *body;
  enum adm_answer want;
};

static const char *name(enum adm_answer a) {
  return a == ADM_ANSWER_ALLOW ? "ALLOW" : a == ADM_ANSWER_DENY ? "DENY" : a == ADM_ANSWER_BAD ? "BAD" : "MORE";
}

static void check(const struct acase *c, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const char *why = NULL;
    enum adm_answer a = adm_answer_read((const uint8_t *)c[i].body, strlen(c[i].body), true, &why);
    cr_assert_eq(a, c[i].want, "%s: got %s (%s), want %s", c[i].body, name(a), why ? why : "", name(c[i].want));
    if (a == ADM_ANSWER_BAD) cr_assert_not_null(why);
  }
}

Test(admission_answer, go_semantics) {
  static const struct acase cases[] = {
      {"{\"Allow\":true}", ADM_ANSWER_ALLOW},
      {" \r\n\t{ \"Allow\" : true } ", ADM_ANSWER_ALLOW},
      {"{\"Allow\":false}", ADM_ANSWER_DENY},
      {"{}", ADM_ANSWER_DENY},
      {"{\"allow\":true}", ADM_ANSWER_ALLOW},             /* case-insensitive field */
      {"{\"ALLOW\":true}", ADM_ANSWER_ALLOW},
      {"{\"\\u0041llow\":true}", ADM_ANSWER_ALLOW},       /* escapes in the key */
      {"{\"Allow\":true,\"Allow\":false}", ADM_ANSWER_DENY}, /* the last wins */
      {"{\"Allow\":false,\"allow\":true}", ADM_ANSWER_ALLOW},
      {"{\"Allow\":true,\"Allow\":null}", ADM_ANSWER_ALLOW}, /* null changes nothing */
      {"{\"Allow\":null}", ADM_ANSWER_DENY},
      {"null", ADM_ANSWER_DENY},
      {"{\"Allow\":true}garbage after", ADM_ANSWER_ALLOW}, /* Decode reads one value */
      {"{\"Allow\":true}{\"Allow\":false}", ADM_ANSWER_ALLOW},
      {"{\"Allowed\":true}", ADM_ANSWER_DENY},
      {"{\"x\":{\"Allow\":true},\"y\":[1,-2.5e+3,\"s\\n\",null,true,{}]}", ADM_ANSWER_DENY},
      {"{\"x\":{\"Allow\":false},\"Allow\":true}", ADM_ANSWER_ALLOW}, /* only the top level counts */
      {"{\"Allow\":\"true\"}", ADM_ANSWER_BAD},           /* wrong types are errors */
      {"{\"Allow\":1}", ADM_ANSWER_BAD},
      {"{\"Allow\":{}}", ADM_ANSWER_BAD},
      {"{\"Allow\":[true]}", ADM_ANSWER_BAD},
      {"{\"Allow\":true,\"Allow\":\"no\"}", ADM_ANSWER_BAD},
      {"true", ADM_ANSWER_BAD},
      {"[{\"Allow\":true}]", ADM_ANSWER_BAD},
      {"\"Allow\"", ADM_ANSWER_BAD},
      {"", ADM_ANSWER_BAD},                                /* io.EOF */
      {"   ", ADM_ANSWER_BAD},
      {"{\"Allow\":tru", ADM_ANSWER_BAD},                  /* unexpected EOF */
      {"{\"Allow\":true", ADM_ANSWER_BAD},
      {"{\"Allow\":true,}", ADM_ANSWER_BAD},               /* syntax errors */
      {"{Allow:true}", ADM_ANSWER_BAD},
      {"{'Allow':true}", ADM_ANSWER_BAD},
      {"{\"Allow\" true}", ADM_ANSWER_BAD},
      {"{\"Allow\":True}", ADM_ANSWER_BAD},
      {"{\"x\":01,\"Allow\":true}", ADM_ANSWER_BAD},
      {"{\"x\":1.,\"Allow\":true}", ADM_ANSWER_BAD},
      {"{\"x\":-,\"Allow\":true}", ADM_ANSWER_BAD},
      {"{\"x\":\"\\q\",\"Allow\":true}", ADM_ANSWER_BAD},
      {"{\"x\":\"\\u12g4\",\"Allow\":true}", ADM_ANSWER_BAD},
      {"{\"x\":\"a\tb\",\"Allow\":true}", ADM_ANSWER_BAD}, /* control byte in a string */
      {"{\"x\":[1,],\"Allow\":true}", ADM_ANSWER_BAD},
      {"{\"x\":[1}],\"Allow\":true}", ADM_ANSWER_BAD},
      {"\xef\xbb\xbf{\"Allow\":true}", ADM_ANSWER_BAD},    /* a BOM is not JSON */
      {"{\"x\":\"\xff\xfe\",\"Allow\":true}", ADM_ANSWER_ALLOW}, /* Go takes bad UTF-8 in strings */
      {"{\"x\":1e400,\"Allow\":true}", ADM_ANSWER_ALLOW},  /* a skipped field is only scanned */
  };
  check(cases, sizeof cases / sizeof cases[0]);
}

Test(admission_answer, incremental_and_limit) {
  const char *body = "{\"Allow\":true}";
  size_t n = strlen(body);
  /* Every prefix but the whole is MORE while more may come, BAD at EOF. */
  for (size_t i = 0; i < n; i++) {
    cr_assert_eq(adm_answer_read((const uint8_t *)body, i, false, NULL), ADM_ANSWER_MORE, "prefix %zu", i);
    cr_assert_eq(adm_answer_read((const uint8_t *)body, i, true, NULL), ADM_ANSWER_BAD, "prefix %zu at EOF", i);
  }
  cr_assert_eq(adm_answer_read((const uint8_t *)body, n, false, NULL), ADM_ANSWER_ALLOW);
  /* A number at a buffer's end is not yet over. */
  cr_assert_eq(adm_answer_read((const uint8_t *)"{\"x\":12", 7, false, NULL), ADM_ANSWER_MORE);
  /* 4 KiB of leading space: the value does not fit the limit. */
  static char big[ADM_ANSWER_MAX + 64];
  memset(big, ' ', sizeof big);
  memcpy(big + ADM_ANSWER_MAX - 4, "{\"Allow\":true}", 14);
  cr_assert_eq(adm_answer_read((const uint8_t *)big, ADM_ANSWER_MAX, true, NULL), ADM_ANSWER_BAD);
  /* Deep nesting within the limit is fine. */
  static char deep[ADM_ANSWER_MAX];
  size_t d = 0;
  d += (size_t)snprintf(deep, sizeof deep, "{\"x\":");
  for (int i = 0; i < 1500; i++) deep[d++] = '[';
  for (int i = 0; i < 1500; i++) deep[d++] = ']';
  d += (size_t)snprintf(deep + d, sizeof deep - d, ",\"Allow\":true}");
  cr_assert_eq(adm_answer_read((const uint8_t *)deep, d, true, NULL), ADM_ANSWER_ALLOW);
}

/* ---- flags ---- */

static int parse(struct config *c, const char *const *args, int n, char *err) {
  char *argv[16] = {"derpd"};
  for (int i = 0; i < n; i++) argv[i + 1] = (char *)args[i];
  config_defaults(c);
  return config_parse(c, n + 1, argv, stdout, err, 256);
}

Test(admission_flags, derper_names) {
  struct config c;
  char err[256];
  config_defaults(&c);
  cr_assert_str_eq(c.verify_client_url, "");
  cr_assert(c.verify_client_url_fail_open, "derper's default is fail-open");
  cr_assert(!c.verify_clients);
  cr_assert_str_eq(c.tailscaled_socket, "/var/run/tailscale/tailscaled.sock");
  const char *a[] = {"-dev", "-verify-client-url", "https://v.example/x", "-verify-client-url-fail-open=false",
                     "--verify-clients", "-socket=/run/ts.sock", "-admission-workers", "4", "--admission-queue=8"};
  cr_assert_eq(parse(&c, a, 9, err), 0, "%s", err);
  cr_assert_str_eq(c.verify_client_url, "https://v.example/x");
  cr_assert(!c.verify_client_url_fail_open);
  cr_assert(c.verify_clients);
  cr_assert_str_eq(c.tailscaled_socket, "/run/ts.sock");
  cr_assert_eq(c.admission_workers, 4);
  cr_assert_eq(c.admission_queue, 8);
  const char *b[] = {"-dev", "-verify-client-url=ftp://v/"};
  cr_assert_eq(parse(&c, b, 2, err), -1);
  cr_assert(strstr(err, "-verify-client-url") && strstr(err, "http or https"), "%s", err);
  const char *d[] = {"-dev", "-admission-workers", "0"};
  cr_assert_eq(parse(&c, d, 3, err), -1);
  /* An empty -socket is tailscaled's default, as in derper. */
  const char *e[] = {"-dev", "-verify-clients", "-socket", ""};
  cr_assert_eq(parse(&c, e, 4, err), 0, "%s", err);
  cr_assert_str_eq(c.tailscaled_socket, CONFIG_TAILSCALED_SOCKET);
}
