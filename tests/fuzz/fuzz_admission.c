/* fuzz_admission.c: libFuzzer target for admission's parsers
 * (server/admission/wire.c): the admission controller's answer, read as
 * Go's encoding/json reads it, the -verify-client-url parser, and a redirect's
 * Location resolved against a fixed base.
 *
 * Input byte 0: 0 mod 4 or 2 mod 4 = an answer, 1 = a URL, 3 = a Location. Answers: byte 1 is the chunk
 * size (1..256); the reader is asked at every chunk boundary, as a worker
 * asks while bytes arrive. Once it has a verdict, more bytes never change it
 * (Go decodes the first value and stops), and at the end of the input it
 * always has one. URLs: an accepted URL has a host, a request-target that
 * starts with '/', and nothing a request line or a header cannot carry. */
#include <string.h>

#include "fuzz.h"
#include "server/admission/wire.h"

static void answer(const uint8_t *p, size_t n, size_t chunk) {
  enum adm_answer first = ADM_ANSWER_MORE;
  for (size_t at = 0;; at = at + chunk < n ? at + chunk : n) {
    const char *why = NULL;
    enum adm_answer a = adm_answer_read(p, at, false, &why);
    if (first != ADM_ANSWER_MORE) FUZZ_CHECK(a == first);
    else first = a;
    FUZZ_CHECK(a != ADM_ANSWER_BAD || why != NULL);
    if (at == n) break;
  }
  enum adm_answer end = adm_answer_read(p, n, true, NULL);
  FUZZ_CHECK(end != ADM_ANSWER_MORE);
  if (first != ADM_ANSWER_MORE) FUZZ_CHECK(end == first);
}

static bool clean(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s <= ' ' || *s == 0x7f) return false;
  return true;
}

static void url(const uint8_t *p, size_t n) {
  char s[4096];
  if (n >= sizeof s) n = sizeof s - 1;
  memcpy(s, p, n);
  s[n] = 0;
  struct adm_url u;
  char err[128];
  if (adm_url_parse(s, &u, err, sizeof err) < 0) {
    FUZZ_CHECK(err[0] != 0);
    return;
  }
  FUZZ_CHECK(u.host[0] && u.port != 0 && u.target[0] == '/');
  FUZZ_CHECK(clean(u.target) && clean(u.authority) && clean(u.basic));
  char req[8192];
  FUZZ_CHECK(adm_format_post(req, sizeof req, &u, "{}", 2) > 0);
}

/* Whatever the controller says in Location: a URL with a host and a target
 * that a request line can carry, the base's own when it stays on its host. */
static void location(const uint8_t *p, size_t n) {
  static struct adm_url base;
  char err[128];
  if (!base.host[0]) FUZZ_CHECK(adm_url_parse("http://u:p@ctl.example:8080/a/b/check?x=1", &base, err, sizeof err) == 0);
  char s[4096];
  if (n >= sizeof s) n = sizeof s - 1;
  memcpy(s, p, n);
  s[n] = 0;
  n = strlen(s); /* a header value holds no NUL */
  struct adm_url u;
  if (adm_url_resolve(&base, s, n, &u, err, sizeof err) < 0) {
    FUZZ_CHECK(err[0] != 0);
    return;
  }
  FUZZ_CHECK(u.host[0] && u.port != 0 && u.target[0] == '/' && strlen(u.target) < sizeof u.target);
  FUZZ_CHECK(clean(u.target) && clean(u.authority) && clean(u.basic));
  char path[sizeof u.target];
  size_t pl = strcspn(u.target, "?");
  memcpy(path, u.target, pl);
  strcpy(path + pl, "/"); /* so that a trailing "/.." shows as "/../" */
  FUZZ_CHECK(!strstr(path, "/../") && !strstr(path, "/./"));
  char req[8192];
  FUZZ_CHECK(adm_format_get(req, sizeof req, &u) > 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  if ((data[0] & 3) == 3) location(data + 1, size - 1);
  else if (data[0] & 1) url(data + 1, size - 1);
  else answer(data + 2, size - 2 > ADM_ANSWER_MAX ? ADM_ANSWER_MAX : size - 2, (size_t)data[1] + 1);
  return 0;
}
