/* mini_test.h: a tiny test runner for test binaries that must not load
 * Criterion (Criterion pulls OpenSSL's libcrypto in through libgit2, whose
 * symbols clash with BoringSSL's).
 *
 * Offers the few Criterion assertion macros e2e_util.c uses (cr_assert,
 * cr_assert_eq, cr_assert_geq, cr_assert_not_null, cr_assert_fail) with the
 * same meaning: a failed assertion prints file:line and the message and
 * abandons the test (longjmp back to the runner). A test binary defines
 * MINI_TEST_MAIN in exactly one file before including this header, lists its
 * tests in a `struct mini_test[]` and calls mini_run(): it prints one line per
 * test and finally "N passed, M failed", and returns the exit status. */
#ifndef MINI_TEST_H
#define MINI_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void mini_fail(const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

#define cr_assert(cond, ...) \
  do { if (!(cond)) mini_fail(__FILE__, __LINE__, #cond, " " __VA_ARGS__); } while (0)
#define cr_assert_eq(a, b, ...) cr_assert((a) == (b), __VA_ARGS__)
#define cr_assert_neq(a, b, ...) cr_assert((a) != (b), __VA_ARGS__)
#define cr_assert_geq(a, b, ...) cr_assert((a) >= (b), __VA_ARGS__)
#define cr_assert_leq(a, b, ...) cr_assert((a) <= (b), __VA_ARGS__)
#define cr_assert_not_null(p, ...) cr_assert((p) != NULL, __VA_ARGS__)
#define cr_assert_fail(...) mini_fail(__FILE__, __LINE__, "fail", " " __VA_ARGS__)

struct mini_test {
  const char *name;
  void (*fn)(void);
};

/* Runs the test named filter exactly (NULL = all; a name that
 * matches none fails); teardown runs after each test, passed or failed, and
 * fails the test by returning nonzero. Returns 0 if all passed, else 1. */
int mini_run(const struct mini_test *tests, size_t n, const char *filter, int (*teardown)(void));

#ifdef MINI_TEST_MAIN
static jmp_buf mini_jmp;
static int mini_in_test;

void mini_fail(const char *file, int line, const char *expr, const char *fmt, ...) {
  fprintf(stderr, "  %s:%d: assertion failed: %s", file, line, expr);
  if (fmt && fmt[0] && fmt[1]) { /* fmt is " " + the caller's format */
    va_list ap;
    va_start(ap, fmt);
    fputc(':', stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
  }
  fputc('\n', stderr);
  if (mini_in_test) longjmp(mini_jmp, 1);
  _Exit(1);
}

/* Kept apart from the loop so that longjmp clobbers nothing it needs. */
static int mini_run_one(void (*fn)(void)) {
  mini_in_test = 1;
  if (setjmp(mini_jmp) != 0) {
    mini_in_test = 0;
    return 0;
  }
  fn();
  mini_in_test = 0;
  return 1;
}

int mini_run(const struct mini_test *tests, size_t n, const char *filter, int (*teardown)(void)) {
  int passed = 0, failed = 0;
  for (size_t i = 0; i < n; i++) {
    if (filter && strcmp(tests[i].name, filter) != 0) continue;
    fprintf(stderr, "[ RUN  ] %s\n", tests[i].name);
    int ok = mini_run_one(tests[i].fn);
    if (teardown && teardown() != 0) ok = 0;
    if (ok) passed++;
    else failed++;
    printf("[%s] %s\n", ok ? "  OK " : "FAIL ", tests[i].name);
    fflush(stdout);
  }
  printf("%d passed, %d failed\n", passed, failed);
  if (filter && passed + failed == 0) { /* a misspelt name in meson.build must not pass */
    printf("no test matches \"%s\"\n", filter);
    return 1;
  }
  return failed ? 1 : 0;
}
#endif

#endif
