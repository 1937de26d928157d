/* test_config.c: command-line parsing (src/server/config.c): Go flag syntax,
 * booleans, durations, validation errors, the -dev default port, and help. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/acme/acme_config.h"
#include "server/config.h"
#include "server/protocol/http.h"
#include "server/region/region.h"
#include "server/transport/ktls.h"

static char err[512];

/* Parse a NULL-terminated argument list (argv[0] is added). */
static int parse_v(struct config *c, const char *const *args, FILE *out) {
  char *argv[32];
  int argc = 0;
  argv[argc++] = (char *)"derpd";
  for (; *args; args++) argv[argc++] = (char *)*args;
  argv[argc] = NULL;
  config_defaults(c);
  return config_parse(c, argc, argv, out ? out : stdout, err, sizeof err);
}
#define PARSE(c, ...) parse_v((c), (const char *const[]){__VA_ARGS__, NULL}, NULL)

static void expect_err(const char *want_substr, const char *const *args) {
  struct config c;
  cr_assert_eq(parse_v(&c, args, NULL), -1, "args[0]=%s", args[0]);
  cr_assert(strstr(err, want_substr), "err \"%s\" lacks \"%s\"", err, want_substr);
}
#define ERR(want, ...) expect_err((want), (const char *const[]){__VA_ARGS__, NULL})

/* For a command line on the default port (443) in a test about other flags:
 * TLS there without -certmode is letsencrypt, as in derper, which refuses the
 * placeholder -hostname; manual keeps such a line parseable. */
#define MANUAL "-certmode=manual"

Test(config, defaults) {
  struct config c;
  /* Bare `derpd` is refused (default_certmode_error): these are the defaults
   * as a line on the default port with -certmode manual sees them. */
  cr_assert_eq(PARSE(&c, MANUAL), 0, "%s", err);
  cr_assert_str_eq(c.listen_host, "");
  cr_assert_eq(c.listen_port, 443);
  cr_assert_str_eq(c.key_path, getuid() == 0 ? CONFIG_ROOT_KEY_PATH : ""); /* derper_defaults_key_and_socket */
  cr_assert(!c.dev);
  cr_assert_str_eq(c.hostname, "derp.example.com");
  cr_assert_eq(c.tcp_write_timeout_ms, 2000);
  cr_assert_eq(c.handshake_timeout_ms, 10000);
  cr_assert_eq(c.keepalive_ms, 60000);
  cr_assert_eq(c.shards, 0);
  cr_assert_eq(c.max_conns, 0);
  cr_assert_eq(c.recv_bufs, 256);
  cr_assert_eq(c.recv_buf_size, 16384);
  cr_assert_eq(c.queue_depth, 0); /* auto */
  cr_assert_eq(c.verbose, 0);
  cr_assert_eq(c.ktls_mode, KTLS_AUTO);
  cr_assert(c.stun);
  cr_assert_eq(c.stun_port, 3478);
  cr_assert(!c.stun_generic);
  cr_assert(isinf(c.accept_limit) && c.accept_limit > 0);
  cr_assert_eq(c.accept_burst, INT64_MAX);
  cr_assert_eq(c.tcp_keepalive_ms, 600000);
  cr_assert_eq(c.tcp_user_timeout_ms, 15000);
}

Test(config, all_syntaxes) {
  static const char *const forms[][4] = {
      {MANUAL, "-shards", "3", NULL}, {MANUAL, "--shards", "3", NULL}, {MANUAL, "-shards=3", NULL, NULL},
      {MANUAL, "--shards=3", NULL, NULL},
  };
  for (size_t i = 0; i < 4; i++) {
    struct config c;
    cr_assert_eq(parse_v(&c, forms[i], NULL), 0, "%s: %s", forms[i][1], err);
    cr_assert_eq(c.shards, 3);
  }
}

Test(config, every_flag) {
  struct config c;
  cr_assert_eq(PARSE(&c, "-a", "127.0.0.1:8443", "-c", "/tmp/k.json", "-hostname=derp1.example.net",
                     "-tcp-write-timeout", "500ms", "--handshake-timeout=3s", "--keepalive-interval", "1m30s",
                     "--shards", "4", "--max-conns=1000", "--recv-bufs", "64", "--recv-buf-size", "4096",
                     "--queue-depth", "1024", "-v", "--verbose"), 0, "%s", err);
  cr_assert_str_eq(c.listen_host, "127.0.0.1");
  cr_assert_eq(c.listen_port, 8443);
  cr_assert_str_eq(c.key_path, "/tmp/k.json");
  cr_assert_str_eq(c.hostname, "derp1.example.net");
  cr_assert_eq(c.tcp_write_timeout_ms, 500);
  cr_assert_eq(c.handshake_timeout_ms, 3000);
  cr_assert_eq(c.keepalive_ms, 90000);
  cr_assert_eq(c.shards, 4);
  cr_assert_eq(c.max_conns, 1000);
  cr_assert_eq(c.recv_bufs, 64);
  cr_assert_eq(c.recv_buf_size, 4096);
  cr_assert_eq(c.queue_depth, 1024);
  cr_assert_eq(c.verbose, 2);
}

Test(config, debug_allow) {
  struct config c;
  cr_assert_eq(PARSE(&c, MANUAL, "--debug-allow", "10.0.0.0/8, 192.0.2.7", "-debug-allow=fd00::/8"), 0, "%s", err);
  cr_assert_str_eq(c.debug_allow, "10.0.0.0/8, 192.0.2.7,fd00::/8");
  cr_assert_eq(PARSE(&c, "-dev"), 0);
  cr_assert_str_eq(c.debug_allow, "");
  ERR("invalid value \"10.0.0.0/33\" for flag -debug-allow", "--debug-allow", "10.0.0.0/33");
  ERR("is not a CIDR", "--debug-allow", "");
  ERR("is not a CIDR", "--debug-allow", "10.0.0.0/8,,fd00::/8");
  ERR("is not a CIDR", "--debug-allow", "example.com");
  ERR("flag needs an argument: -debug-allow", "--debug-allow");
  /* At most DEBUG_ALLOW_MAX entries, however they are split over flags. */
  char twenty[400] = "10.0.0.1";
  for (int i = 1; i < 20; i++) strcat(twenty, ",10.0.0.1");
  cr_assert_eq(PARSE(&c, MANUAL, "--debug-allow", twenty, "--debug-allow", "10.0.0.0/8,10.0.0.0/8"), 0, "%s", err);
  ERR("more than 32 CIDRs", "--debug-allow", twenty, "--debug-allow", twenty);
}

Test(config, metrics_listen) {
  struct config c;
  cr_assert_eq(PARSE(&c, "-dev"), 0);
  cr_assert_eq(c.metrics_port, -1, "no metrics listener by default");
  cr_assert_eq(PARSE(&c, MANUAL, "--metrics-listen", "10.0.0.5:9100"), 0, "%s", err);
  cr_assert_str_eq(c.metrics_host, "10.0.0.5");
  cr_assert_eq(c.metrics_port, 9100);
  cr_assert_eq(c.listen_port, 443, "-a is untouched");
  cr_assert_eq(PARSE(&c, "-metrics-listen=[fd00::5]:0", "-a", ":8080"), 0, "%s", err);
  cr_assert_str_eq(c.metrics_host, "fd00::5");
  cr_assert_eq(c.metrics_port, 0);
  cr_assert_eq(c.listen_port, 8080);
  cr_assert_eq(PARSE(&c, "-dev", "--metrics-listen", ":9100"), 0, "%s", err);
  cr_assert_str_eq(c.metrics_host, "");
  cr_assert_eq(c.listen_port, 3340, "--metrics-listen is not -a: -dev keeps its port");
  /* Go's Listen: a service name, and an empty port (0). */
  cr_assert_eq(PARSE(&c, MANUAL, "-a", ":https"), 0, "%s", err);
  cr_assert_eq(c.listen_port, 443);
  cr_assert(c.tls, "port 443 by name is TLS too");
  cr_assert_eq(PARSE(&c, "-dev", "-a", "127.0.0.1:http"), 0, "%s", err);
  cr_assert_eq(c.listen_port, 80);
  cr_assert_eq(PARSE(&c, "-dev", "-a", "127.0.0.1:"), 0, "%s", err);
  cr_assert_eq(c.listen_port, 0);
  ERR("or a service name", "-a", ":no-such-service");
  ERR("missing port in address", "--metrics-listen", "10.0.0.5");
  ERR("port must be a number", "--metrics-listen", "10.0.0.5:99999");
  ERR("too many colons", "--metrics-listen", "fd00::5:9100");
  ERR("flag needs an argument: -metrics-listen", "--metrics-listen");
}

Test(config, value_may_look_like_flag) {
  struct config c;
  /* Go takes the next argument as the value whatever it looks like. */
  cr_assert_eq(PARSE(&c, MANUAL, "-c", "-dev"), 0, "%s", err);
  cr_assert_str_eq(c.key_path, "-dev");
  cr_assert(!c.dev);
  cr_assert_eq(PARSE(&c, MANUAL, "-hostname="), 0);
  cr_assert_str_eq(c.hostname, "");
}

Test(config, bool_forms) {
  static const struct { const char *arg; bool want; } t[] = {
      {"-dev", true}, {"--dev", true}, {"-dev=true", true}, {"-dev=1", true}, {"-dev=T", true},
      {"-dev=TRUE", true}, {"-dev=false", false}, {"-dev=0", false}, {"--dev=f", false},
      {"-dev=False", false},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    struct config c;
    cr_assert_eq(PARSE(&c, MANUAL, t[i].arg), 0, "%s: %s", t[i].arg, err);
    cr_assert_eq(c.dev, t[i].want, "%s", t[i].arg);
  }
  ERR("invalid boolean value \"yes\" for -dev", "-dev=yes");
  /* A bool takes no separate value: "false" is then a stray argument. */
  ERR("unexpected argument \"false\": a boolean flag takes its value after '=': -dev=false", "-dev", "false");
  ERR("unexpected argument \"0\": a boolean flag takes its value after '=': -stun=0", "--stun", "0");
  ERR("unexpected argument \"x\": derpd takes flags only", "-dev", "x"); /* not a boolean's value */
  ERR("unexpected argument \"false\": derpd takes flags only", "-v", "false"); /* a count, not a boolean */
}

Test(config, verbose_counts) {
  struct config c;
  cr_assert_eq(PARSE(&c, MANUAL, "-v", "-v", "--verbose", "-v=true"), 0);
  cr_assert_eq(c.verbose, 4);
  cr_assert_eq(PARSE(&c, MANUAL, "-v", "-v=false"), 0);
  cr_assert_eq(c.verbose, 0);
}

Test(config, dev_default_port) {
  struct config c;
  cr_assert_eq(PARSE(&c, "-dev"), 0);
  cr_assert_eq(c.listen_port, 3340);
  cr_assert_str_eq(c.listen_host, "");
  cr_assert_eq(PARSE(&c, "-dev", "-a", ":8080"), 0);
  cr_assert_eq(c.listen_port, 8080);
  cr_assert_eq(PARSE(&c, MANUAL, "-a=:443", "-dev"), 0); /* explicit, even if equal to the default */
  cr_assert_eq(c.listen_port, 443);
  cr_assert_eq(PARSE(&c, MANUAL, "-dev=false"), 0);
  cr_assert_eq(c.listen_port, 443);
}

Test(config, addresses) {
  static const struct { const char *a; const char *host; int port; } ok[] = {
      {":443", "", 443}, {"0.0.0.0:80", "0.0.0.0", 80}, {"[::1]:3340", "::1", 3340},
      {"[::]:0", "::", 0}, {"localhost:65535", "localhost", 65535},
      /* as Go's Listen: no port is 0, a service name its port */
      {":", "", 0}, {":http", "", 80}, {"[::1]:https", "::1", 443}, {"localhost:HTTPS", "localhost", 443},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    struct config c;
    cr_assert_eq(PARSE(&c, MANUAL, "-a", ok[i].a, "-http-port=-1"), 0, "%s: %s", ok[i].a, err);
    cr_assert_str_eq(c.listen_host, ok[i].host);
    cr_assert_eq(c.listen_port, ok[i].port);
  }
  static const char *bad[] = {"443", "::1:443", "[::1]", "[::1]443", ":65536", ":htp", ":-1",
                              "host:1234567"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char want[64];
    snprintf(want, sizeof want, "invalid value \"%s\" for flag -a", bad[i]);
    ERR(want, "-a", bad[i]);
  }
}

Test(config, durations) {
  static const struct { const char *s; int64_t ms; } t[] = {
      {"0", 0}, {"0s", 0}, {"+5s", 5000}, {"2s", 2000}, {"500ms", 500}, {"1.5s", 1500},
      {"1m30s", 90000}, {"1h2m3.5s", 3723500}, {"1.5h", 5400000}, {".5s", 500}, {"5.s", 5000},
      {"1000us", 1}, {"1000\xc2\xb5s", 1}, {"1000\xce\xbcs", 1}, {"2000000ns", 2},
      {"1ns", 1}, {"1.5ms", 2}, /* rounded up: nonzero never becomes 0 */
      {"3m", 180000}, {"1h1h", 7200000}, {"2562047h", 9223369200000LL},
      {"0.000000001s", 1}, {"1.0000000000000000000001s", 1000},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    cr_assert_eq(config_parse_duration_ms(t[i].s), t[i].ms, "%s -> %lld", t[i].s,
                 (long long)config_parse_duration_ms(t[i].s));
  static const char *bad[] = {"", "5", "-1s", "-0", "s", ".s", ".", "1x", "1S", "1 s", " 1s", "1s ",
                              "1.2.3s", "1hh", "2562048h", "9223372036854775808ns",
                              "99999999999999999999s", "1e3s", "+", "1s-2s"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    cr_assert_eq(config_parse_duration_ms(bad[i]), -1, "\"%s\" accepted", bad[i]);
  cr_assert_eq(config_parse_duration_ms(NULL), -1);
}

Test(config, duration_flags) {
  struct config c;
  cr_assert_eq(PARSE(&c, MANUAL, "-tcp-write-timeout=0"), 0);
  cr_assert_eq(c.tcp_write_timeout_ms, 0);
  ERR("invalid value \"0\" for flag -handshake-timeout: must be positive", "--handshake-timeout", "0");
  ERR("invalid value \"0s\" for flag -keepalive-interval", "--keepalive-interval=0s");
  ERR("invalid value \"2\" for flag -tcp-write-timeout", "-tcp-write-timeout", "2");
  ERR("invalid value \"25h\" for flag -tcp-write-timeout", "-tcp-write-timeout", "25h");
  ERR("invalid value \"-1s\" for flag -tcp-user-timeout: must not be negative", "-tcp-user-timeout", "-1s");
  ERR("-http-port 8443 is -a's port: the port-80 helper needs one of its own (-1 for none)", "-a", ":8443",
      "-certmode", "manual", "-http-port", "8443");
}

Test(config, batch_flags) {
  struct config c;
  cr_assert_eq(PARSE(&c, "-dev"), 0);
  cr_assert_eq(c.batch_wait_us, 100);
  cr_assert_eq(c.batch_events, 32);
  cr_assert_eq(PARSE(&c, "-dev", "--batch-wait=250us", "--batch-events", "1"), 0, "%s", err);
  cr_assert_eq(c.batch_wait_us, 250);
  cr_assert_eq(c.batch_events, 1);
  cr_assert_eq(PARSE(&c, "-dev", "--batch-wait=1.5ms"), 0, "%s", err);
  cr_assert_eq(c.batch_wait_us, 1500);
  cr_assert_eq(PARSE(&c, "-dev", "--batch-wait=1ns"), 0, "%s", err); /* rounded up, never to 0 */
  cr_assert_eq(c.batch_wait_us, 1);
  cr_assert_eq(PARSE(&c, "-dev", "--batch-wait=0"), 0, "%s", err); /* wake per event */
  cr_assert_eq(c.batch_wait_us, 0);
  cr_assert_eq(PARSE(&c, "-dev", "--batch-wait=1s", "--batch-events=4096"), 0, "%s", err);
  cr_assert_eq(c.batch_wait_us, 1000000);
  ERR("invalid value \"1001ms\" for flag -batch-wait: must be at most 1s", "--batch-wait=1001ms");
  ERR("invalid value \"50\" for flag -batch-wait: want a duration like 50us", "--batch-wait=50");
  ERR("invalid value \"0\" for flag -batch-events", "--batch-events=0");
  ERR("invalid value \"4097\" for flag -batch-events", "--batch-events=4097");
}

Test(config, int_ranges) {
  struct config c;
  cr_assert_eq(PARSE(&c, MANUAL, "--recv-bufs=1", "--queue-depth=64", "--recv-buf-size=1024", "--shards=0x10"), 0,
               "%s", err);
  cr_assert_eq(c.recv_bufs, 1);
  cr_assert_eq(c.shards, 16);
  cr_assert_eq(PARSE(&c, MANUAL, "--recv-bufs=32768", "--queue-depth=1048576", "--recv-buf-size=1048576"), 0);
  ERR("invalid value \"x\" for flag -shards: parse error", "--shards", "x");
  ERR("invalid value \"-1\" for flag -shards", "--shards=-1");
  ERR("invalid value \"\" for flag -shards", "--shards=");
  ERR("invalid value \" 3\" for flag -shards", "--shards= 3");
  ERR("invalid value \"3\" for flag -recv-bufs: must be a power of two", "--recv-bufs=3");
  ERR("invalid value \"0\" for flag -recv-bufs", "--recv-bufs=0");
  ERR("invalid value \"65536\" for flag -recv-bufs", "--recv-bufs=65536");
  ERR("invalid value \"1023\" for flag -recv-buf-size", "--recv-buf-size=1023");
  ERR("invalid value \"1048577\" for flag -recv-buf-size", "--recv-buf-size=1048577");
  cr_assert_eq(PARSE(&c, MANUAL, "--queue-depth=0"), 0, "%s", err); /* 0 = auto */
  cr_assert_eq(c.queue_depth, 0);
  ERR("invalid value \"32\" for flag -queue-depth", "--queue-depth=32");
  ERR("invalid value \"-1\" for flag -queue-depth", "--queue-depth=-1");
  ERR("invalid value \"100\" for flag -queue-depth", "--queue-depth=100");
  ERR("invalid value \"99999999999999999999\" for flag -max-conns", "--max-conns=99999999999999999999");
}

Test(config, syntax_errors) {
  ERR("flag provided but not defined: -x", "-x");
  ERR("flag provided but not defined: -stun-portx", "--stun-portx");
  ERR("flag needs an argument: -c", "-c");
  ERR("flag needs an argument: -shards", "-v", "--shards");
  ERR("bad flag syntax: ---dev", "---dev");
  ERR("bad flag syntax: -=1", "-=1");
  ERR("unexpected argument \"serve\"", "serve");
  ERR("unexpected argument \"-\"", "-");
  ERR("unexpected argument \"x\"", "-dev", "x", "-v");
  ERR("unexpected argument \"-dev\"", "--", "-dev");
  ERR("too long", "-hostname", "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh"
                               "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh"
                               "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh");
}

Test(config, double_dash_ends_flags) {
  struct config c;
  cr_assert_eq(PARSE(&c, "-dev", "--"), 0);
  cr_assert(c.dev);
}

/* derper's -version: a bool read once every flag is parsed; it prints the
 * version (meson's project version) and derpd exits 0. */
Test(config, version) {
  static const char *const forms[][4] = {{"-version", NULL, NULL}, {"--version", "-dev", NULL},
                                         {"-version=true", "-certmode", "bogus"}};
  for (size_t i = 0; i < 3; i++) {
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    struct config c;
    cr_assert_eq(parse_v(&c, forms[i], out), 1, "%s: %s", forms[i][0], err);
    fclose(out);
    cr_assert_str_eq(buf, DERPD_VERSION "\n");
    free(buf);
  }
  struct config c;
  cr_assert_eq(PARSE(&c, "-version=false", "-dev"), 0);
  ERR("flag provided but not defined: -bogus", "-version", "-bogus"); /* Go parses first */
}

Test(config, derp_and_home) {
  struct config c;
  cr_assert_eq(PARSE(&c, "-dev"), 0);
  cr_assert(c.derp);
  cr_assert_eq(c.home_mode, HTTP_HOME_DEFAULT);
  cr_assert_str_eq(c.home, "");
  cr_assert_eq(PARSE(&c, MANUAL, "-derp=false", "-home", "blank"), 0, "%s", err);
  cr_assert(!c.derp);
  cr_assert_eq(c.home_mode, HTTP_HOME_BLANK);
  cr_assert_eq(PARSE(&c, MANUAL, "-home=https://example.com/derp?x=1"), 0, "%s", err);
  cr_assert_eq(c.home_mode, HTTP_HOME_REDIRECT);
  cr_assert_str_eq(c.home, "https://example.com/derp?x=1");
  cr_assert_eq(PARSE(&c, MANUAL, "-home", "http://x"), 0, "%s", err);
  cr_assert_eq(c.home_mode, HTTP_HOME_REDIRECT);
  /* Go's url.Parse: the scheme in any case, opaque or not. */
  cr_assert_eq(PARSE(&c, MANUAL, "-home", "HTTPS://Example.com/"), 0, "%s", err);
  cr_assert_eq(c.home_mode, HTTP_HOME_REDIRECT);
  cr_assert_eq(PARSE(&c, MANUAL, "-home", "https:x"), 0, "%s", err);
  cr_assert_eq(c.home_mode, HTTP_HOME_REDIRECT);
  ERR("for flag -home: want \"blank\"", "-home", "Blank");
  ERR("for flag -home: want \"blank\"", "-home", "ftp://example.com/");
  ERR("for flag -home: want \"blank\"", "-home", "example.com");
  ERR("control character", "-home", "https://a/\r\nSet-Cookie: x");
  ERR("invalid boolean value \"no\" for -derp", "-derp=no");
}

/* derper v1.82's setec flags: the URL is refused (derpd cannot fetch the
 * mesh key from setec), the other two are accepted with a note. */
Test(config, setec_flags) {
  struct config c;
  cr_assert_eq(PARSE(&c, "-dev"), 0);
  cr_assert_str_eq(c.notes, "");
  cr_assert_eq(PARSE(&c, MANUAL, "-secrets-path-prefix", "prod/derp"), 0);
  cr_assert_str_eq(c.notes, "");
  cr_assert_eq(PARSE(&c, MANUAL, "-secrets-path-prefix", "x", "-secrets-cache-dir=/tmp/s"), 0, "%s", err);
  cr_assert(strstr(c.notes, "no effect"), "%s", c.notes);
  ERR("-secrets-url (a setec server for the mesh key) is not supported", "-secrets-url", "https://setec");
}

Test(config, help) {
  static const char *forms[] = {"-h", "-help", "--help", "--h"};
  for (size_t i = 0; i < 4; i++) {
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    struct config c;
    cr_assert_eq(parse_v(&c, (const char *const[]){"-dev", forms[i], "-bogus", NULL}, out), 1, "%s", forms[i]);
    fclose(out);
    cr_assert(strstr(buf, "Usage: derpd"));
    free(buf);
  }
}

/* config_usage's text into *buf (malloc'd). */
static void usage_text(char **buf) {
  size_t len = 0;
  *buf = NULL;
  FILE *out = open_memstream(buf, &len);
  config_usage(out, "derpd");
  fclose(out);
}

Test(config, usage_mentions_every_flag) {
  char *buf;
  usage_text(&buf);
  static const char *needles[] = {
      "-a string", "\":443\"", "\":3340\"", "-c string", "-dev", "-hostname", "derp.example.com",
      "-tcp-write-timeout", "2s", "-handshake-timeout", "10s", "-keepalive-interval", "1m0s",
      "-shards", "-max-conns", "-recv-bufs", "256", "-recv-buf-size", "16384", "-queue-depth", "4096", "65536/(shards-1)",
      "-verbose", "-certmode", "-certdir", "-http-port", "selfsigned", "STUN", "-mesh-psk-file",
      "-mesh-with", "derp-mesh.key", "name[:port]/dialaddr", "http://host:port",
      "-ktls string", "auto", "require", "-debug-allow string", "TS_ALLOW_DEBUG_IP",
      "TS_DEBUG_KEY_PATH", "X-Forwarded-For", "-metrics-listen string",
      "-stun\n", "-stun-port int", "3478", "-stun-generic", "-accept-connection-limit float", "+Inf",
      "-accept-connection-burst int", "9223372036854775807", "-tcp-keepalive-time duration", "10m0s",
      "-tcp-user-timeout duration", "15s", "-rate-config string", "PerClientRateLimitBytesPerSec",
      "-version\n", "-derp\n", "-home string", "blank", "-secrets-url", "-secrets-path-prefix", "-secrets-cache-dir",
      "letsencrypt", "-acme-directory string", "https://acme-v02.api.letsencrypt.org/directory",
      "-acme-ca-file string", "acme_account+key", "gcp", "https://dv.acme-v02.api.pki.goog/directory",
      "-acme-email string", "-acme-eab-kid string", "-acme-eab-key string", "-acme-ip-certs", "-ace",
  };
  for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++)
    cr_assert(strstr(buf, needles[i]), "usage lacks %s", needles[i]);
  free(buf);
}

Test(config, usage_lists_stun_as_supported) {
  char *buf;
  usage_text(&buf);
  /* With -certmode letsencrypt in, nothing is left to list as unsupported. */
  const char *nys = strstr(buf, "Not yet supported");
  cr_assert(!nys || !strstr(nys, "STUN"), "usage still lists STUN as not supported");
  cr_assert(!nys || !strstr(nys, "-stun"));
  cr_assert(!nys || !strstr(nys, "letsencrypt"), "usage still lists letsencrypt as not supported");
  free(buf);
}

Test(config, stun_flags) {
  struct config c;
  cr_assert_eq(PARSE(&c, MANUAL, "-stun=false", "-stun-port", "3479", "--stun-generic"), 0, "%s", err);
  cr_assert(!c.stun);
  cr_assert_eq(c.stun_port, 3479);
  cr_assert(c.stun_generic);
  cr_assert_eq(PARSE(&c, MANUAL, "-stun", "-stun-port=0", "-stun-generic=false"), 0, "%s", err);
  cr_assert(c.stun);
  cr_assert_eq(c.stun_port, 0);
  cr_assert(!c.stun_generic);
  ERR("invalid value \"65536\" for flag -stun-port", "-stun-port=65536");
  ERR("invalid value \"-1\" for flag -stun-port", "-stun-port", "-1");
  ERR("invalid boolean value \"maybe\" for -stun", "-stun=maybe");
}

Test(config, rate_config_flag) {
  struct config c;
  cr_assert_eq(PARSE(&c, MANUAL), 0, "%s", err);
  cr_assert_eq(c.rate_config[0], 0, "no -rate-config: no limit");
  cr_assert_eq(PARSE(&c, MANUAL, "-rate-config", "/etc/derper/rate.json"), 0, "%s", err);
  cr_assert_str_eq(c.rate_config, "/etc/derper/rate.json");
  cr_assert_eq(PARSE(&c, MANUAL, "--rate-config=/r.json"), 0, "%s", err);
  cr_assert_str_eq(c.rate_config, "/r.json");
}

Test(config, accept_limit_flags) {
  struct config c;
  cr_assert_eq(PARSE(&c, MANUAL, "-accept-connection-limit", "5", "-accept-connection-burst=10"), 0, "%s", err);
  cr_assert_eq(c.accept_limit, 5.0);
  cr_assert_eq(c.accept_burst, 10);
  static const struct { const char *v; double want; } ok[] = {
      {"2.5", 2.5}, {"1e3", 1000}, {"0", 0}, {"0.001", 0.001}, {".5", 0.5},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    cr_assert_eq(PARSE(&c, MANUAL, "-accept-connection-limit", ok[i].v), 0, "%s: %s", ok[i].v, err);
    cr_assert_eq(c.accept_limit, ok[i].want, "%s", ok[i].v);
  }
  static const char *const inf[] = {"inf", "+Inf", "Infinity", "+INF"};
  for (size_t i = 0; i < sizeof inf / sizeof inf[0]; i++) {
    cr_assert_eq(PARSE(&c, MANUAL, "-accept-connection-limit=5", "-accept-connection-limit", inf[i]), 0, "%s", inf[i]);
    cr_assert(isinf(c.accept_limit) && c.accept_limit > 0, "%s", inf[i]);
  }
  ERR("invalid value \"-1\" for flag -accept-connection-limit: must be 0 or more", "-accept-connection-limit=-1");
  ERR("invalid value \"-Inf\" for flag -accept-connection-limit", "-accept-connection-limit=-Inf");
  ERR("invalid value \"NaN\" for flag -accept-connection-limit: parse error", "-accept-connection-limit=NaN");
  ERR("invalid value \"x\" for flag -accept-connection-limit: parse error", "-accept-connection-limit", "x");
  ERR("invalid value \" 5\" for flag -accept-connection-limit", "-accept-connection-limit= 5");
  ERR("invalid value \"5/s\" for flag -accept-connection-limit", "-accept-connection-limit=5/s");
  ERR("invalid value \"1e999\" for flag -accept-connection-limit", "-accept-connection-limit=1e999");
  ERR("invalid value \"\" for flag -accept-connection-limit", "-accept-connection-limit=");
  cr_assert_eq(PARSE(&c, MANUAL, "-accept-connection-burst=0"), 0, "%s", err);
  cr_assert_eq(c.accept_burst, 0);
  cr_assert_eq(PARSE(&c, MANUAL, "-accept-connection-burst=9223372036854775807"), 0, "%s", err);
  cr_assert_eq(c.accept_burst, INT64_MAX);
  ERR("invalid value \"-1\" for flag -accept-connection-burst", "-accept-connection-burst=-1");
  ERR("invalid value \"9223372036854775808\" for flag -accept-connection-burst",
      "-accept-connection-burst=9223372036854775808");
  ERR("invalid value \"1.5\" for flag -accept-connection-burst: parse error", "-accept-connection-burst=1.5");
}

Test(config, tcp_socket_flags) {
  struct config c;
  cr_assert_eq(PARSE(&c, MANUAL, "-tcp-keepalive-time", "30s", "-tcp-user-timeout=1m"), 0, "%s", err);
  cr_assert_eq(c.tcp_keepalive_ms, 30000);
  cr_assert_eq(c.tcp_user_timeout_ms, 60000);
  /* As in Go: 0 is the default idle time (15 s), negative turns keepalive off. */
  cr_assert_eq(PARSE(&c, MANUAL, "-tcp-keepalive-time=0", "-tcp-user-timeout=0"), 0, "%s", err);
  cr_assert_eq(c.tcp_keepalive_ms, 0);
  cr_assert_eq(c.tcp_user_timeout_ms, 0);
  cr_assert_eq(PARSE(&c, MANUAL, "-tcp-keepalive-time=-1s"), 0, "%s", err);
  cr_assert_eq(c.tcp_keepalive_ms, -1);
  cr_assert_eq(PARSE(&c, MANUAL, "-tcp-keepalive-time", "-0s"), 0, "%s", err);
  cr_assert_eq(c.tcp_keepalive_ms, 0);
  cr_assert_eq(PARSE(&c, MANUAL, "-tcp-keepalive-time=9h6m7s"), 0, "%s", err);
  ERR("-tcp-keepalive-time: must be at most 32767s", MANUAL, "-tcp-keepalive-time=9h6m8s");
  ERR("invalid value \"-x\" for flag -tcp-keepalive-time", "-tcp-keepalive-time=-x");
  ERR("invalid value \"10\" for flag -tcp-keepalive-time", "-tcp-keepalive-time=10");
  ERR("invalid value \"-1s\" for flag -tcp-user-timeout", "-tcp-user-timeout=-1s");
  ERR("invalid value \"25h\" for flag -tcp-user-timeout", "-tcp-user-timeout=25h");
}

Test(config, tls_rules) {
  struct config c;
  /* As derper v1.78: TLS on port 443 (the default), with -certmode
   * letsencrypt unless another is given; plain HTTP on other ports. */
  cr_assert_eq(PARSE(&c, "-c", "/tmp/k.json", "-hostname", "derp1.example.net"), 0, "%s", err);
  cr_assert(c.tls);
  cr_assert_str_eq(c.certmode, "letsencrypt");
  cr_assert(c.certmode_defaulted, "letsencrypt came from the default: derpd says so at start");
  cr_assert_eq(c.http_port, 80);
  cr_assert_eq(PARSE(&c, "-a", "10.0.0.1:443", "-hostname", "derp1.example.net"), 0, "%s", err);
  cr_assert(c.tls);
  cr_assert_str_eq(c.certmode, "letsencrypt");
  cr_assert_eq(PARSE(&c, "-c", "/tmp/k.json", "-certmode", "manual"), 0, "%s", err);
  cr_assert(c.tls);
  cr_assert_str_eq(c.certmode, "manual");
  cr_assert(!c.certmode_defaulted);
  cr_assert_eq(PARSE(&c, "-dev"), 0);
  cr_assert(!c.tls);
  cr_assert_str_eq(c.certmode, "");
  cr_assert_eq(PARSE(&c, "-a", ":8080", "-c", "/tmp/k.json"), 0, "%s", err);
  cr_assert(!c.tls, "no -certmode, not 443: plain HTTP, as derper");
  cr_assert_str_eq(c.certmode, "");
  cr_assert_eq(PARSE(&c, "-dev", "-a", ":443", "-hostname", "derp1.example.net"), 0, "%s", err);
  cr_assert(c.tls, "derpd's -dev keeps an explicit -a");
  cr_assert_str_eq(c.certmode, "letsencrypt");
  cr_assert_eq(PARSE(&c, "-a", ":8443", "-certmode", "selfsigned", "-certdir", "/tmp/certs",
                     "-http-port", "-1"), 0);
  cr_assert(c.tls);
  cr_assert_str_eq(c.certmode, "selfsigned");
  cr_assert_str_eq(c.certdir, "/tmp/certs");
  cr_assert_eq(c.http_port, -1);
  cr_assert_eq(PARSE(&c, "-dev", "-certmode=manual", "-http-port=8080"), 0);
  cr_assert(c.tls);
  cr_assert_eq(c.http_port, 8080);
  ERR("invalid value \"acme\" for flag -certmode: want manual, selfsigned, letsencrypt or gcp", "-certmode",
      "acme");
  ERR("invalid value \"-2\" for flag -http-port", "-http-port", "-2");
  ERR("invalid value \"65536\" for flag -http-port", "-http-port", "65536");
}

/* Without -certmode, port 443 means letsencrypt (derper's default), so a
 * line that left -hostname at a placeholder is refused at start with what to
 * do instead: a real -hostname, -certmode manual, or plain HTTP. */
Test(config, default_certmode_error) {
  struct config c;
  static const char *const lines[][5] = {
      {NULL}, /* bare `derpd` */
      {"-c", "/tmp/k.json", NULL},
      {"-a", "0.0.0.0:443", "-certdir", "/etc/derpd/certs", NULL},
      {"-dev=false", "-hostname", "derp.tailscale.com", NULL}, /* derper's own default name */
  };
  for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
    cr_assert_eq(parse_v(&c, lines[i], NULL), -1, "line %zu", i);
    static const char *const want[] = {
        "TLS on port 443 without -certmode is -certmode letsencrypt (derper's default)",
        "set -hostname to this server's DNS name",
        "-certmode manual with -certdir holding <hostname>.crt and .key",
        "serve plain HTTP (-dev, or -a on a port other than 443)",
    };
    for (size_t j = 0; j < sizeof want / sizeof want[0]; j++)
      cr_assert(strstr(err, want[j]), "line %zu: \"%s\" lacks \"%s\"", i, err, want[j]);
    cr_assert(strlen(err) < sizeof err - 1, "line %zu: the message fills the buffer", i);
  }
  ERR("\"derp.example.com\" is derpd's placeholder default", "-c", "/tmp/k.json");
  ERR("\"derp.tailscale.com\" is derper's default", "-hostname", "derp.tailscale.com");
  /* An address needs a mode that takes one. */
  ERR("TLS on port 443 without -certmode is -certmode letsencrypt (derper's default), and -hostname "
      "\"203.0.113.7\" is an IP address: give -acme-ip-certs for Let's Encrypt certificates for this server's "
      "addresses, or use -certmode manual or selfsigned; or serve plain HTTP", "-hostname", "203.0.113.7");
  /* An explicit letsencrypt is TLS on any port: -dev would not turn it off,
   * so the message does not offer it. */
  ERR("-certmode letsencrypt needs -hostname", "-dev", "-certmode", "letsencrypt");
  cr_assert(!strstr(err, "-dev"), "%s", err);
  cr_assert(strstr(err, "-certmode manual with -certdir"), "%s", err);
  /* Each way out parses. */
  cr_assert_eq(PARSE(&c, "-hostname", "derp1.example.net"), 0, "%s", err);
  cr_assert(c.tls);
  cr_assert_str_eq(c.certmode, "letsencrypt");
  cr_assert_eq(PARSE(&c, "-certmode", "manual", "-certdir", "/etc/derpd/certs"), 0, "%s", err);
  cr_assert_str_eq(c.certmode, "manual");
  cr_assert_eq(PARSE(&c, "-hostname", "203.0.113.7", "-certmode", "selfsigned"), 0, "%s", err);
  cr_assert_str_eq(c.certmode, "selfsigned");
  cr_assert_eq(PARSE(&c, "-dev"), 0, "%s", err);
  cr_assert(!c.tls);
  cr_assert_eq(PARSE(&c, "-a", ":8080"), 0, "%s", err);
  cr_assert(!c.tls);
}

/* -certmode letsencrypt (the default on port 443, as derper's): a DNS
 * -hostname and an https directory; TLS on any port when given. */
Test(config, letsencrypt) {
  struct config c;
  cr_assert_eq(PARSE(&c, "-c", "/tmp/k.json", "-hostname", "derp1.example.net"), 0, "%s", err);
  cr_assert_str_eq(c.certmode, "letsencrypt", "derper's default");
  cr_assert_str_eq(c.acme_directory, "https://acme-v02.api.letsencrypt.org/directory");
  cr_assert_str_eq(c.acme_ca_file, "");
  cr_assert_eq(PARSE(&c, "-a", ":8443", "-certmode", "letsencrypt", "-hostname", "derp.example.net",
                     "--acme-directory", "https://127.0.0.1:14000/dir", "--acme-ca-file=/tmp/ca.pem"), 0, "%s", err);
  cr_assert(c.tls);
  cr_assert_str_eq(c.certmode, "letsencrypt");
  cr_assert_str_eq(c.acme_directory, "https://127.0.0.1:14000/dir");
  cr_assert_str_eq(c.acme_ca_file, "/tmp/ca.pem");
  ERR("-certmode letsencrypt needs -hostname", "-certmode", "letsencrypt");
  ERR("\"derp.tailscale.com\" is derper's default", "-certmode", "letsencrypt", "-hostname",
      "derp.tailscale.com");
  ERR("-certmode letsencrypt needs -hostname", "-a", ":8443", "-certmode", "letsencrypt", "-hostname",
      "DERP.Example.COM");
  ERR("is an IP address: give -acme-ip-certs", "-certmode", "letsencrypt", "-hostname", "10.0.0.1");
  ERR("is not a DNS name", "-certmode", "letsencrypt", "-hostname", "localhost");
  ERR("is not a DNS name", "-certmode", "letsencrypt", "-hostname", "[::1]");
  ERR("want an https:// URL", "-certmode", "letsencrypt", "-hostname", "derp.example.net",
      "--acme-directory", "http://ca.example/dir");
  /* Names: letters, digits, inner hyphens; a dot; a TLD that is not all digits. */
  cr_assert(acme_dns_name_ok("derp.example.net"));
  cr_assert(acme_dns_name_ok("a-1.b2.io"));
  cr_assert(!acme_dns_name_ok("-a.example.net"));
  cr_assert(!acme_dns_name_ok("a-.example.net"));
  cr_assert(!acme_dns_name_ok("a..example.net"));
  cr_assert(!acme_dns_name_ok(".example.net"));
  cr_assert(!acme_dns_name_ok("example.net."));
  cr_assert(!acme_dns_name_ok("ex_ample.net"));
  cr_assert(!acme_dns_name_ok("1.2.3.4"));
  cr_assert(!acme_dns_name_ok(""));
}

/* derper v1.94's -certmode gcp and its ACME account flags: Google Trust
 * Services' directory unless --acme-directory says otherwise; External
 * Account Binding and a contact, both required by gcp, usable with
 * letsencrypt; v1.90's -ace refused by name. */
#define GCP "-certmode", "gcp", "-hostname", "derp.example.net"
#define EAB "-acme-eab-kid", "kid-1", "-acme-eab-key"
Test(config, acme_account_and_gcp) {
  struct config c;
  cr_assert_eq(PARSE(&c, GCP, EAB, "4OHi4-Tl5ufo6err7O3u7_Dx8vP09fb3-Pn6-_z9_v8", "-acme-email", "ops@example.net"),
               0, "%s", err);
  cr_assert(c.tls && config_acme(&c));
  cr_assert_str_eq(c.acme_directory, "https://dv.acme-v02.api.pki.goog/directory");
  cr_assert_str_eq(c.acme_eab_kid, "kid-1");
  cr_assert_str_eq(c.acme_email, "ops@example.net");
  cr_assert_eq(PARSE(&c, GCP, "--acme-directory", "https://127.0.0.1:14000/dir", EAB,
                     "4OHi4+Tl5ufo6err7O3u7/Dx8vP09fb3+Pn6+/z9/v8=", "-acme-email=ops@example.net"), 0, "%s", err);
  cr_assert_str_eq(c.acme_directory, "https://127.0.0.1:14000/dir", "an explicit directory wins");
  ERR("-certmode gcp needs -acme-eab-kid and -acme-eab-key", GCP, "-acme-email", "a@b.c");
  ERR("-certmode gcp needs -acme-eab-kid and -acme-eab-key", GCP, "-acme-eab-kid", "k", "-acme-email", "a@b.c");
  ERR("-certmode gcp needs -acme-email", GCP, EAB, "AAAA");
  ERR("-certmode gcp needs -hostname to be a DNS name, not an IP address", "-certmode", "gcp", "-hostname",
      "10.0.0.1", EAB, "AAAA", "-acme-email", "a@b.c");
  ERR("-certmode gcp needs -hostname", "-certmode", "gcp", EAB, "AAAA", "-acme-email", "a@b.c");
  ERR("-acme-eab-key: not base64url or base64", GCP, EAB, "not base64!", "-acme-email", "a@b.c");
  ERR("-acme-eab-key: not base64url or base64", GCP, EAB, "4OHi4-Tl5ufo6err7O3u7/Dx8vP09fb3+Pn6+/z9/v8=",
      "-acme-email", "a@b.c"); /* the two alphabets mixed */
  ERR("-acme-eab-key: not base64url or base64", GCP, EAB, "AB+", "-acme-email", "a@b.c"); /* std, unpadded */
  /* letsencrypt takes them too (a CA behind --acme-directory may want EAB). */
  cr_assert_eq(PARSE(&c, "-certmode", "letsencrypt", "-hostname", "derp.example.net", "-acme-email", "x@y.z"), 0,
               "%s", err);
  cr_assert_str_eq(c.acme_directory, "https://acme-v02.api.letsencrypt.org/directory");
  cr_assert_str_eq(c.notes, "");
  ERR("-acme-eab-kid and -acme-eab-key go together", "-certmode", "letsencrypt", "-hostname", "derp.example.net",
      "-acme-eab-key", "AAAA");
  static const char *const bad_mail[] = {"nobody", "@example.net", "a@", "a@b@c", "a b@c.d", "a@b.c,d@e.f"};
  for (size_t i = 0; i < sizeof bad_mail / sizeof bad_mail[0]; i++)
    ERR("want one address, name@domain", "-certmode", "letsencrypt", "-hostname", "derp.example.net",
        "-acme-email", bad_mail[i]);
  /* Outside ACME they change nothing, and the start-up log says so. */
  cr_assert_eq(PARSE(&c, MANUAL, "-acme-email", "x@y.z"), 0, "%s", err);
  cr_assert(strstr(c.notes, "-acme-email and -acme-eab-* have no effect"), "%s", c.notes);
  ERR("-ace (derper v1.90's experimental embedded ACE server) is not supported", "-ace=true");
  cr_assert_eq(PARSE(&c, MANUAL, "-acme-ip-certs=false", "-ace=false"), 0, "%s", err);
}

/* derper v1.102's -acme-ip-certs: with letsencrypt only (given or the port
 * 443 default), and http-01's port; an IP -hostname makes an IP-only
 * server, a DNS one serves both. */
Test(config, acme_ip_certs) {
  struct config c;
  cr_assert_eq(PARSE(&c, "-acme-ip-certs", "-hostname", "203.0.113.7", "-c", "/tmp/k.json"), 0, "%s", err);
  cr_assert(c.acme_ip_certs && c.tls && config_acme(&c));
  cr_assert_str_eq(c.certmode, "letsencrypt");
  cr_assert_eq(PARSE(&c, "-certmode", "letsencrypt", "-acme-ip-certs", "-hostname", "2001:db8::7", "-a", ":8443"),
               0, "%s", err);
  cr_assert_eq(PARSE(&c, "-certmode", "letsencrypt", "-acme-ip-certs", "-hostname", "derp.example.net"), 0, "%s",
               err);
  ERR("-acme-ip-certs needs -certmode letsencrypt", "-certmode", "manual", "-acme-ip-certs");
  ERR("-acme-ip-certs needs -certmode letsencrypt", "-certmode", "gcp", "-acme-ip-certs", "-hostname",
      "derp.example.net", EAB, "AAAA", "-acme-email", "a@b.c");
  ERR("-acme-ip-certs needs -certmode letsencrypt (TLS)", "-dev", "-acme-ip-certs");
  ERR("-acme-ip-certs needs -http-port", "-acme-ip-certs", "-hostname", "203.0.113.7", "-http-port", "-1");
}

Test(config, eab_key_decode) {
  uint8_t k[ACME_EAB_KEY_MAX];
  cr_assert_eq(acme_eab_key_decode("4OHi4-Tl5ufo6err7O3u7_Dx8vP09fb3-Pn6-_z9_v8", k, sizeof k), 32);
  for (int i = 0; i < 32; i++) cr_assert_eq(k[i], 0xe0 + i);
  cr_assert_eq(acme_eab_key_decode("4OHi4+Tl5ufo6err7O3u7/Dx8vP09fb3+Pn6+/z9/v8=", k, sizeof k), 32);
  for (int i = 0; i < 32; i++) cr_assert_eq(k[i], 0xe0 + i);
  cr_assert_eq(acme_eab_key_decode("", k, sizeof k), 0);
  cr_assert_eq(acme_eab_key_decode("AAAA", k, 2), 0, "longer than the buffer");
  cr_assert_eq(acme_eab_key_decode("AAAA", k, 3), 3);
}

Test(config, ktls) {
  struct config c;
  cr_assert_eq(PARSE(&c, MANUAL, "--ktls=off"), 0, "%s", err); /* port 443: TLS */
  cr_assert_eq(c.ktls_mode, KTLS_OFF);
  cr_assert_eq(PARSE(&c, MANUAL, "-ktls", "auto"), 0, "%s", err);
  cr_assert_eq(c.ktls_mode, KTLS_AUTO);
  cr_assert_eq(PARSE(&c, "--ktls", "require", "-certmode", "selfsigned", "-a", ":8443"), 0, "%s", err);
  cr_assert_eq(c.ktls_mode, KTLS_REQUIRE);
  cr_assert(c.tls);
  /* Without TLS, off and auto mean nothing and are fine; require is a mistake. */
  cr_assert_eq(PARSE(&c, "-dev", "--ktls=auto"), 0, "%s", err);
  cr_assert_eq(PARSE(&c, "-dev", "--ktls=off"), 0, "%s", err);
  ERR("--ktls=require needs TLS", "-dev", "--ktls=require");
  ERR("invalid value \"on\" for flag -ktls: want auto, off or require", "--ktls=on");
  ERR("invalid value \"\" for flag -ktls", "--ktls=");
  ERR("flag needs an argument: -ktls", "--ktls");
}

/* Ring depths: full up to 16 shards; beyond, a shard's inbound slots are
 * capped, with floors; an explicit --queue-depth sets the data depth. */
Test(config, ring_depths) {
  uint32_t d, c;
  config_ring_depths(1, 0, &d, &c);
  cr_assert(d == 4096 && c == 1024);
  config_ring_depths(16, 0, &d, &c);
  cr_assert(d == 4096 && c == 1024);
  config_ring_depths(17, 0, &d, &c); /* 65536/16 = 4096, 16384/16 = 1024 */
  cr_assert(d == 4096 && c == 1024, "%u %u", d, c);
  config_ring_depths(32, 0, &d, &c); /* 65536/31 -> 2048, 16384/31 -> 512 */
  cr_assert(d == 2048 && c == 512, "%u %u", d, c);
  config_ring_depths(64, 0, &d, &c); /* 1040 -> 1024, 260 -> 256 */
  cr_assert(d == 1024 && c == 256, "%u %u", d, c);
  config_ring_depths(1024, 0, &d, &c); /* floors */
  cr_assert(d == 1024 && c == 256, "%u %u", d, c);
  config_ring_depths(64, 65536, &d, &c);
  cr_assert(d == 65536 && c == 256, "%u %u", d, c);
  for (int n = 1; n <= 1024; n++) {
    config_ring_depths(n, 0, &d, &c);
    cr_assert(d && !(d & (d - 1)) && c && !(c & (c - 1)), "n %d: %u %u", n, d, c);
  }
}

/* ---- region flags ---------------------------------------------------------- */

Test(config, mesh_flags) {
  struct config c;
  config_defaults(&c);
  char why[256];
  char *argv[] = {"derpd", "-mesh-psk-file", "/k/mesh.key", "--mesh-with=a.example:8443,b.example", MANUAL, NULL};
  cr_assert_eq(config_parse(&c, 5, argv, NULL, why, sizeof why), 0, "%s", why);
  cr_assert_str_eq(c.mesh_psk_file, "/k/mesh.key");
  cr_assert_str_eq(c.mesh_with, "a.example:8443,b.example");
}

Test(config, mesh_with_forms) {
  struct mesh_entry e[8];
  int n = -1;
  char why[256] = "";
  cr_assert_eq(mesh_with_parse(" derp1.example.com, derp2.example.com:8443 ,derp3/10.0.0.3,"
                               "derp4.example/10.0.0.4:444,http://127.0.0.1:3340,https://[::1]:9443/derp,[fd00::5],"
                               "derp8.example:8443/10.0.0.8",
                               e, 8, &n, why, sizeof why), 0, "%s", why);
  cr_assert_eq(n, 8);
  cr_assert(e[0].tls && e[0].port == 443 && !strcmp(e[0].name, "derp1.example.com") && !strcmp(e[0].dial, "derp1.example.com"));
  cr_assert(e[1].tls && e[1].port == 8443 && !strcmp(e[1].name, "derp2.example.com"));
  cr_assert(e[2].tls && e[2].port == 443 && !strcmp(e[2].name, "derp3") && !strcmp(e[2].dial, "10.0.0.3"));
  cr_assert(e[3].port == 444 && !strcmp(e[3].name, "derp4.example") && !strcmp(e[3].dial, "10.0.0.4"));
  cr_assert(!e[4].tls && e[4].port == 3340 && !strcmp(e[4].dial, "127.0.0.1"));
  cr_assert(e[5].tls && e[5].port == 9443 && !strcmp(e[5].dial, "::1"));
  cr_assert(e[6].tls && e[6].port == 443 && !strcmp(e[6].dial, "fd00::5"));
  /* derper's name:port/dialhost: the name's port, dialled on dialhost. */
  cr_assert(e[7].tls && e[7].port == 8443 && !strcmp(e[7].name, "derp8.example") && !strcmp(e[7].dial, "10.0.0.8"));
  cr_assert_str_eq(e[1].label, "derp2.example.com:8443");
  /* A bare IPv6 dial address, as derper's net.JoinHostPort takes it. */
  cr_assert_eq(mesh_with_parse("derp9.example/fd00::9,derp10.example:8443/::1,derp11/[fd00::11]:444", e, 8, &n, why,
                               sizeof why), 0, "%s", why);
  cr_assert_eq(n, 3);
  cr_assert(e[0].port == 443 && !strcmp(e[0].name, "derp9.example") && !strcmp(e[0].dial, "fd00::9"));
  cr_assert(e[1].port == 8443 && !strcmp(e[1].dial, "::1"));
  cr_assert(e[2].port == 444 && !strcmp(e[2].dial, "fd00::11"));
  cr_assert_eq(mesh_with_parse("", e, 8, &n, why, sizeof why), 0);
  cr_assert_eq(n, 0);
  /* The same entry twice is dialled once (its metrics would repeat); the
   * same node written two ways is two entries, as in derper. */
  cr_assert_eq(mesh_with_parse("a.example,b.example,a.example,a.example:443,b.example", e, 8, &n, why, sizeof why), 0);
  cr_assert_eq(n, 5);
  cr_assert_eq(mesh_with_drop_repeats(e, n), 3);
  cr_assert_str_eq(e[0].label, "a.example");
  cr_assert_str_eq(e[1].label, "b.example");
  cr_assert_str_eq(e[2].label, "a.example:443");
}

Test(config, mesh_with_rejects) {
  struct mesh_entry e[2];
  int n;
  char why[256];
  static const char *bad[] = {"host:0", "host:99999", "host:x", "::1", "/10.0.0.1", "a b",
                              "http://", "h\"q", "[::1", "a,b,c", "name:x/10.0.0.1", "name:/10.0.0.1",
                              "fd00::1/name", "name/:443", "a/b/c", "name//10.0.0.1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    why[0] = 0;
    cr_assert_eq(mesh_with_parse(bad[i], e, 2, &n, why, sizeof why), -1, "accepted %s", bad[i]);
    cr_assert(strlen(why) > 0, "no reason for %s", bad[i]);
  }
}

/* derper's defaults for what a command line leaves out: as root, the key
 * file /var/lib/derper/derper.key (not with -dev, whose key is ephemeral,
 * nor over an explicit -c); an empty -socket is tailscaled's default. */
Test(config, derper_defaults_key_and_socket) {
  struct config c;
  cr_assert_eq(PARSE(&c, "-a", ":8080"), 0, "%s", err);
  if (getuid() == 0) {
    cr_assert_str_eq(c.key_path, CONFIG_ROOT_KEY_PATH);
    cr_assert(c.key_path_default);
  } else {
    cr_assert_str_eq(c.key_path, "");
  }
  cr_assert_eq(PARSE(&c, "-a", ":8080", "-dev"), 0, "%s", err);
  cr_assert_str_eq(c.key_path, "");
  cr_assert_eq(PARSE(&c, "-a", ":8080", "-c", "/tmp/k.key"), 0, "%s", err);
  cr_assert_str_eq(c.key_path, "/tmp/k.key");
  cr_assert_eq(PARSE(&c, "-a", ":8080", "-verify-clients", "-socket="), 0, "%s", err);
  cr_assert_str_eq(c.tailscaled_socket, CONFIG_TAILSCALED_SOCKET);
  cr_assert_eq(PARSE(&c, "-a", ":8080", "-socket", "/run/ts.sock"), 0, "%s", err);
  cr_assert_str_eq(c.tailscaled_socket, "/run/ts.sock");
}
