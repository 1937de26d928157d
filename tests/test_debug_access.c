/* test_debug_access.c: who may read /debug/ (src/server/operations/debug_access.c):
 * CIDR parsing and matching, loopback, the Tailscale ranges, TS_ALLOW_DEBUG_IP,
 * --debug-allow, the debugkey query parameter against TS_DEBUG_KEY_PATH, and
 * X-Forwarded-For. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/operations/debug_access.h"

/* 16-byte form of a numeric address (IPv4 v4-mapped). */
static const uint8_t *A(const char *s) {
  static uint8_t ring[8][16];
  static int next;
  uint8_t *a = ring[next++ % 8];
  memset(a, 0, 16);
  if (inet_pton(AF_INET, s, a + 12) == 1) {
    a[10] = a[11] = 0xff;
    return a;
  }
  cr_assert_eq(inet_pton(AF_INET6, s, a), 1, "bad test address %s", s);
  return a;
}

static struct debug_cidr cidr(const char *s) {
  struct debug_cidr c;
  cr_assert_eq(debug_cidr_parse(s, strlen(s), &c), 0, "%s", s);
  return c;
}

Test(debug_cidr, parse) {
  struct debug_cidr c = cidr("10.1.2.3/8");
  cr_assert_eq(c.bits, 96 + 8);
  cr_assert_eq(memcmp(c.addr, A("10.0.0.0"), 16), 0, "host bits are cleared");
  c = cidr("192.0.2.7");
  cr_assert_eq(c.bits, 128);
  cr_assert_eq(memcmp(c.addr, A("192.0.2.7"), 16), 0);
  c = cidr("fd00::1/8");
  cr_assert_eq(c.bits, 8);
  cr_assert_eq(memcmp(c.addr, A("fd00::"), 16), 0);
  cr_assert_eq(cidr("2001:db8::1").bits, 128);
  cr_assert_eq(cidr("0.0.0.0/0").bits, 96);
  cr_assert_eq(cidr("::/0").bits, 0);
  static const char *bad[] = {"", "/8", "10.0.0.0/", "10.0.0.0/x", "10.0.0.0/33", "::/129", "1.2.3",
                              "10.0.0.0/8/8", "10.0.0.0/0008", "example.com", " 10.0.0.1", "10.0.0.0/-1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct debug_cidr x;
    cr_assert_eq(debug_cidr_parse(bad[i], strlen(bad[i]), &x), -1, "accepted \"%s\"", bad[i]);
  }
}

Test(debug_cidr, contains) {
  struct debug_cidr c = cidr("10.0.0.0/8");
  cr_assert(debug_cidr_contains(&c, A("10.255.1.2")));
  cr_assert(!debug_cidr_contains(&c, A("11.0.0.1")));
  c = cidr("10.213.0.0/30");
  cr_assert(debug_cidr_contains(&c, A("10.213.0.3")));
  cr_assert(!debug_cidr_contains(&c, A("10.213.0.4")));
  c = cidr("0.0.0.0/0");
  cr_assert(debug_cidr_contains(&c, A("203.0.113.9")));
  cr_assert(!debug_cidr_contains(&c, A("2001:db8::1")), "an IPv4 prefix holds no IPv6 peer");
  c = cidr("::/0");
  cr_assert(debug_cidr_contains(&c, A("2001:db8::1")));
  cr_assert(!debug_cidr_contains(&c, A("203.0.113.9")), "an IPv6 prefix holds no IPv4 peer");
  c = cidr("2001:db8:0:0:8000::/65");
  cr_assert(debug_cidr_contains(&c, A("2001:db8::8000:0:0:1")));
  cr_assert(!debug_cidr_contains(&c, A("2001:db8::7fff:0:0:1")));
}

static struct debug_access none;

static bool trusted(const struct debug_access *a, const char *ip) { return debug_addr_trusted(a, A(ip)); }

Test(debug_access, loopback) {
  cr_assert(trusted(&none, "127.0.0.1"));
  cr_assert(trusted(&none, "127.255.0.9"));
  cr_assert(trusted(&none, "::1"));
  cr_assert(!trusted(&none, "::2"));
  cr_assert(!trusted(&none, "128.0.0.1"));
  cr_assert(!trusted(&none, "::"));
  cr_assert(!trusted(&none, "0.0.0.0"));
}

Test(debug_access, tailscale_ranges) {
  cr_assert(trusted(&none, "100.64.0.1"));
  cr_assert(trusted(&none, "100.127.255.255"));
  cr_assert(trusted(&none, "100.101.102.103"));
  cr_assert(!trusted(&none, "100.63.255.255"));
  cr_assert(!trusted(&none, "100.128.0.0"));
  /* ChromeOS's VM block inside the CGNAT range is not Tailscale's. */
  cr_assert(!trusted(&none, "100.115.92.5"));
  cr_assert(!trusted(&none, "100.115.93.255"));
  cr_assert(trusted(&none, "100.115.94.1"));
  cr_assert(trusted(&none, "100.115.91.255"));
  cr_assert(trusted(&none, "fd7a:115c:a1e0::1"));
  cr_assert(trusted(&none, "fd7a:115c:a1e0:ffff:ffff:ffff:ffff:ffff"));
  cr_assert(!trusted(&none, "fd7a:115c:a1e1::1"));
  cr_assert(!trusted(&none, "fd7a:115c:a1df:ffff::1"));
  cr_assert(!trusted(&none, "192.0.2.1"));
  cr_assert(!trusted(&none, "2001:db8::1"));
}

Test(debug_access, ts_allow_debug_ip) {
  struct debug_access a = {0};
  char err[256];
  cr_assert_eq(debug_access_env(&a, "192.0.2.9", NULL, err, sizeof err), 0);
  cr_assert(trusted(&a, "192.0.2.9"));
  cr_assert(!trusted(&a, "192.0.2.10"));
  cr_assert_eq(debug_access_env(&a, "2001:db8::7", "", err, sizeof err), 0);
  cr_assert(trusted(&a, "2001:db8::7"));
  cr_assert(!trusted(&a, "192.0.2.9"));
  cr_assert_eq(debug_access_env(&a, "192.0.2.0/24", NULL, err, sizeof err), -1, "a CIDR is not an IP");
  cr_assert(strstr(err, "TS_ALLOW_DEBUG_IP"), "%s", err);
  cr_assert(!a.has_env_ip);
  cr_assert(!trusted(&a, "192.0.2.1"));
  cr_assert_eq(debug_access_env(&a, NULL, NULL, err, sizeof err), 0);
  cr_assert(!a.has_env_ip && !a.key_path[0]);
}

Test(debug_access, allow_flag) {
  struct debug_access a = {0};
  char err[256];
  cr_assert_eq(debug_allow_add(&a, "10.213.0.0/29, fd00:1::/32", err, sizeof err), 0, "%s", err);
  cr_assert_eq(debug_allow_add(&a, "198.51.100.4", err, sizeof err), 0, "%s", err);
  cr_assert_eq(a.nallow, 3);
  cr_assert(trusted(&a, "10.213.0.2"));
  cr_assert(!trusted(&a, "10.213.0.9"));
  cr_assert(trusted(&a, "fd00:1:ffff::1"));
  cr_assert(!trusted(&a, "fd00:2::1"));
  cr_assert(trusted(&a, "198.51.100.4"));
  cr_assert(!trusted(&a, "198.51.100.5"));
  cr_assert(trusted(&a, "127.0.0.1"), "the flag adds to derper's rules");
  cr_assert_eq(debug_allow_add(&a, "10.0.0.0/8,bogus", err, sizeof err), -1);
  cr_assert(strstr(err, "\"bogus\""), "%s", err);
}

/* ---- the request: X-Forwarded-For, debugkey ---- */

static char keyfile[64];

/* Each call replaces the last call's file (the tests unlink the final one). */
static void write_key(const char *contents) {
  if (keyfile[0]) unlink(keyfile);
  strcpy(keyfile, "/tmp/derpd-debugkey-XXXXXX");
  int fd = mkstemp(keyfile);
  cr_assert(fd >= 0);
  cr_assert_eq(write(fd, contents, strlen(contents)), (ssize_t)strlen(contents));
  close(fd);
}

static bool allowed(const struct debug_access *a, const char *ip, bool get, bool fwd, const char *query) {
  struct debug_request r = {.peer = A(ip), .get = get, .forwarded = fwd, .query = query,
                            .query_len = query ? strlen(query) : 0};
  return debug_access_allowed(a, &r);
}

Test(debug_access, x_forwarded_for_refused) {
  struct debug_access a = {0};
  cr_assert_eq(debug_allow_add(&a, "10.0.0.0/8", NULL, 0), 0);
  cr_assert(allowed(&a, "127.0.0.1", true, false, NULL));
  cr_assert(!allowed(&a, "127.0.0.1", true, true, NULL), "a proxy on loopback could relay anyone");
  cr_assert(!allowed(&a, "::1", true, true, NULL));
  cr_assert(!allowed(&a, "100.64.0.1", true, true, NULL));
  cr_assert(!allowed(&a, "10.1.1.1", true, true, NULL));
  cr_assert(allowed(&a, "10.1.1.1", false, false, NULL), "any method, from an allowed address");
  cr_assert(!allowed(&a, "192.0.2.1", true, false, NULL), "the world gets 403");
}

Test(debug_access, debugkey) {
  struct debug_access a = {0};
  write_key("  s3cret-key\n\n");
  cr_assert_eq(debug_access_env(&a, NULL, keyfile, NULL, 0), 0);
  cr_assert_str_eq(a.key_path, keyfile);
  cr_assert(allowed(&a, "192.0.2.1", true, false, "debugkey=s3cret-key"));
  cr_assert(allowed(&a, "192.0.2.1", true, false, "a=1&debugkey=s3cret%2Dkey&b"));
  cr_assert(allowed(&a, "192.0.2.1", true, true, "debugkey=s3cret-key"),
            "a valid key wins over X-Forwarded-For, as in derper");
  cr_assert(!allowed(&a, "192.0.2.1", false, false, "debugkey=s3cret-key"), "GET only");
  cr_assert(!allowed(&a, "192.0.2.1", true, false, "debugkey=s3cret-ke"));
  cr_assert(!allowed(&a, "192.0.2.1", true, false, "debugkey=s3cret-keyy"));
  cr_assert(!allowed(&a, "192.0.2.1", true, false, "debugkey=%20s3cret-key"));
  cr_assert(!allowed(&a, "192.0.2.1", true, false, "debugkey=s3cret%2"), "a cut escape is malformed");
  write_key("s3cret key\n");
  cr_assert_eq(debug_access_env(&a, NULL, keyfile, NULL, 0), 0);
  cr_assert(allowed(&a, "192.0.2.1", true, false, "debugkey=s3cret+key"), "'+' is a space in a query");
  write_key("  s3cret-key\n\n");
  cr_assert_eq(debug_access_env(&a, NULL, keyfile, NULL, 0), 0);
  cr_assert(!allowed(&a, "192.0.2.1", true, false, "debugkey="));
  cr_assert(!allowed(&a, "192.0.2.1", true, false, "debugkey"));
  cr_assert(!allowed(&a, "192.0.2.1", true, false, "debugkey=&debugkey=s3cret-key"), "the first value counts");
  cr_assert(!allowed(&a, "192.0.2.1", true, false, "DebugKey=s3cret-key"));
  cr_assert(!allowed(&a, "192.0.2.1", true, false, NULL));
  struct debug_request cut = {.peer = A("192.0.2.1"), .get = true, .query = "debugkey=s3cret-key",
                              .query_len = 19, .query_cut = true};
  cr_assert(!debug_access_allowed(&a, &cut), "a cut query proves nothing");
  /* The file is read at each request: a new key counts at once. */
  FILE *f = fopen(keyfile, "w");
  fputs("other\n", f);
  fclose(f);
  cr_assert(!allowed(&a, "192.0.2.1", true, false, "debugkey=s3cret-key"));
  cr_assert(allowed(&a, "192.0.2.1", true, false, "debugkey=other"));
  unlink(keyfile);
  cr_assert(!allowed(&a, "192.0.2.1", true, false, "debugkey=other"), "no file, no key");
  /* No TS_DEBUG_KEY_PATH: never. */
  struct debug_access b = {0};
  cr_assert(!allowed(&b, "192.0.2.1", true, false, "debugkey="));
  cr_assert(!allowed(&b, "192.0.2.1", true, false, "debugkey=x"));
}

Test(debug_access, debugkey_file_bounds) {
  char big[DEBUG_KEY_MAX + 2];
  memset(big, 'k', sizeof big - 1);
  big[sizeof big - 1] = 0;
  write_key(big);
  cr_assert(!debug_key_matches(keyfile, big, strlen(big)), "over DEBUG_KEY_MAX never matches");
  unlink(keyfile);
  big[DEBUG_KEY_MAX] = 0;
  write_key(big);
  cr_assert(debug_key_matches(keyfile, big, DEBUG_KEY_MAX));
  unlink(keyfile);
  write_key("\n\t \n");
  cr_assert(!debug_key_matches(keyfile, "", 0), "an empty key never matches");
  unlink(keyfile);
  /* A FIFO (or a device) at the path: refused at once, never a blocked
   * shard (the open would wait for a writer, the read for data). */
  cr_assert_eq(mkfifo(keyfile, 0600), 0);
  cr_assert(!debug_key_matches(keyfile, "k", 1), "a FIFO is not a key file");
  unlink(keyfile);
}

Test(debug_query, values) {
  char v[32];
  cr_assert_eq(debug_query_value("a=1&debugkey=x", 14, "debugkey", v, sizeof v), 1);
  cr_assert_str_eq(v, "x");
  const char *q = "debugkey=a;b&debugkey=c";
  cr_assert_eq(debug_query_value(q, strlen(q), "debugkey", v, sizeof v), 1, "a pair with ';' is skipped");
  cr_assert_str_eq(v, "c");
  q = "debugkey=%zz&debugkey=ok";
  cr_assert_eq(debug_query_value(q, strlen(q), "debugkey", v, sizeof v), 2, "a bad escape is skipped");
  cr_assert_str_eq(v, "ok");
  q = "debug%6bey=+a%2B+";
  cr_assert_eq(debug_query_value(q, strlen(q), "debugkey", v, sizeof v), 4);
  cr_assert_str_eq(v, " a+ ");
  q = "debugkey=x&debugkey=y";
  cr_assert_eq(debug_query_value(q, strlen(q), "debugkey", v, sizeof v), 1);
  cr_assert_str_eq(v, "x");
  cr_assert_eq(debug_query_value("debugkey", 8, "debugkey", v, sizeof v), 0);
  cr_assert_eq(debug_query_value("", 0, "debugkey", v, sizeof v), -1);
  cr_assert_eq(debug_query_value("debugkeys=1&x", 13, "debugkey", v, sizeof v), -1);
  cr_assert_eq(debug_query_value("debugkey=%4", 11, "debugkey", v, sizeof v), -1);
  q = "debugkey=0123456789012345678901234567890123456789";
  cr_assert_eq(debug_query_value(q, strlen(q), "debugkey", v, sizeof v), -1, "longer than out");
  cr_assert_eq(debug_query_value(q, 10, "debugkey", v, sizeof v), 1, "only n bytes are read");
  cr_assert_str_eq(v, "0");
}
