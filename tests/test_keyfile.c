/* test_keyfile.c: key text forms, derper's JSON key file, and the mesh
 * pre-shared key file (derp/meshkey.h). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <errno.h>

#include "derp/hex.h"
#include "derp/key.h"
#include "derp/meshkey.h"

static char dir[64];

static void setup(void) {
  cr_assert_eq(derp_init(), 0);
  cr_assert_eq(derp_init(), 0, "idempotent");
  strcpy(dir, "/tmp/derpkeyXXXXXX");
  cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
}

TestSuite(keyfile, .init = setup, .fini = teardown);
TestSuite(key, .init = setup, .fini = teardown);
TestSuite(meshkey, .init = setup, .fini = teardown);

static void path_in(char *out, size_t cap, const char *name) {
  snprintf(out, cap, "%s/%s", dir, name);
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  fputs(text, f);
  fclose(f);
}

Test(keyfile, create_then_load) {
  char path[128], msg[256];
  path_in(path, sizeof path, "derper.key");
  derp_privkey a, b;
  int created = -1;
  cr_assert_eq(derp_keyfile_load_or_create(path, &a, &created, msg, sizeof msg), 0, "%s", msg);
  cr_assert_eq(created, 1);
  struct stat st;
  cr_assert_eq(stat(path, &st), 0);
  cr_assert_eq(st.st_mode & 0777, 0600);
  cr_assert_eq(derp_keyfile_load_or_create(path, &b, &created, msg, sizeof msg), 0, "%s", msg);
  cr_assert_eq(created, 0);
  cr_assert_eq(memcmp(a.b, b.b, 32), 0);
  /* Only the key file is left behind: no temp files. */
  char tmpglob[160];
  snprintf(tmpglob, sizeof tmpglob, "ls '%s' | wc -l | grep -qx 1", dir);
  cr_assert_eq(system(tmpglob), 0);
}

Test(keyfile, written_in_derper_format) {
  char path[128], text[256] = {0}, want[DERP_KEY_STRLEN];
  path_in(path, sizeof path, "k.json");
  derp_privkey k;
  derp_key pub;
  derp_key_generate(&k, &pub);
  cr_assert_eq(derp_keyfile_write(path, &k), 0);
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f);
  cr_assert_gt(fread(text, 1, sizeof text - 1, f), 0);
  fclose(f);
  derp_privkey_format(&k, want);
  cr_assert_not_null(strstr(text, "\"PrivateKey\": \""));
  cr_assert_not_null(strstr(text, want));
}

Test(keyfile, loads_existing_derper_file_with_extra_fields) {
  char path[128], msg[256];
  path_in(path, sizeof path, "derper.json");
  write_text(path, "{\"PrivateKey\": \"privkey:00112233445566778899AABBCCDDEEFF"
                   "00112233445566778899aabbccddeeff\", \"Other\": [1, 2]}\n");
  derp_privkey k;
  int created = -1;
  cr_assert_eq(derp_keyfile_load_or_create(path, &k, &created, msg, sizeof msg), 0, "%s", msg);
  cr_assert_eq(created, 0);
  cr_assert_eq(k.b[0], 0x00);
  cr_assert_eq(k.b[10], 0xAA);
  cr_assert_eq(k.b[31], 0xFF);
}

static void expect_error(const char *content, const char *needle) {
  char path[128], msg[256] = {0};
  path_in(path, sizeof path, "bad.json");
  write_text(path, content);
  derp_privkey k;
  int created = -1;
  cr_assert_eq(derp_keyfile_load_or_create(path, &k, &created, msg, sizeof msg), -1, "%s", content);
  cr_assert_eq(created, 0);
  cr_assert_not_null(strstr(msg, needle), "msg '%s' lacks '%s'", msg, needle);
  cr_assert_not_null(strstr(msg, path), "msg names the file");
}

Test(keyfile, garbage_errors_with_message) {
  expect_error("this is not json", "not valid JSON");
  expect_error("", "not valid JSON");
  expect_error("[\"PrivateKey\"]", "not valid JSON");
  expect_error("{\"Other\": 1}", "missing PrivateKey");
  expect_error("{\"PrivateKey\": \"privkey:1234\"}", "PrivateKey");
  expect_error("{\"PrivateKey\": 7}", "PrivateKey");
}

static mode_t current_umask(void) {
  mode_t m = umask(0);
  umask(m);
  return m;
}

/* derper makes the key file's directory (MkdirAll), so /var/lib/derper/
 * need not exist before the first start. */
Test(keyfile, missing_directory_made) {
  char path[128], sub[128], msg[256] = {0};
  path_in(sub, sizeof sub, "nodir/sub");
  path_in(path, sizeof path, "nodir/sub/key");
  derp_privkey k, k2;
  int created = -1;
  cr_assert_eq(derp_keyfile_load_or_create(path, &k, &created, msg, sizeof msg), 0, "%s", msg);
  cr_assert_eq(created, 1);
  struct stat st;
  cr_assert_eq(stat(sub, &st), 0);
  cr_assert(S_ISDIR(st.st_mode));
  cr_assert_eq(st.st_mode & 0777, 0755 & ~current_umask());
  cr_assert_eq(derp_keyfile_load_or_create(path, &k2, &created, msg, sizeof msg), 0, "%s", msg);
  cr_assert_eq(created, 0);
  cr_assert_eq(memcmp(&k, &k2, sizeof k), 0);
  unlink(path);
  rmdir(sub);
  path_in(sub, sizeof sub, "nodir");
  rmdir(sub);
}

/* A directory that cannot be made (a file is in the way) is an error. */
Test(keyfile, unmakeable_directory_fails) {
  char path[128], file[128], msg[256] = {0};
  path_in(file, sizeof file, "afile");
  FILE *f = fopen(file, "w");
  cr_assert(f);
  fclose(f);
  path_in(path, sizeof path, "afile/key");
  derp_privkey k;
  int created = -1;
  cr_assert_eq(derp_keyfile_load_or_create(path, &k, &created, msg, sizeof msg), -1);
  cr_assert_neq(msg[0], '\0');
  cr_assert_eq(created, 0);
  unlink(file);
}

/* An empty path is mkdir("")'s ENOENT (it read past the string). */
Test(keyfile, mkdir_p_empty_path) {
  errno = 0;
  cr_assert_eq(derp_mkdir_p("", 0700), -1);
  cr_assert_eq(errno, ENOENT);
}

Test(key, format_parse_round_trip) {
  derp_privkey priv, priv2;
  derp_key pub, pub2, derived;
  derp_key_generate(&priv, &pub);
  derp_key_public(&priv, &derived);
  cr_assert(derp_key_equal(&pub, &derived));
  char s[DERP_KEY_STRLEN];
  derp_key_format(&pub, s);
  cr_assert_eq(strncmp(s, "nodekey:", 8), 0);
  cr_assert_eq(strlen(s), 72);
  cr_assert_eq(derp_key_parse(s, &pub2), 0);
  cr_assert(derp_key_equal(&pub, &pub2));
  cr_assert_eq(derp_key_parse(s + 8, &pub2), 0, "bare hex is accepted");
  derp_privkey_format(&priv, s);
  cr_assert_eq(strncmp(s, "privkey:", 8), 0);
  cr_assert_eq(derp_privkey_parse(s, &priv2), 0);
  cr_assert_eq(memcmp(priv.b, priv2.b, 32), 0);
}

Test(key, hex_forms) {
  derp_key k;
  for (int i = 0; i < 32; i++) k.b[i] = (uint8_t)(0xA0 + i);
  char hex[65], sh[9];
  derp_key_hex(&k, hex);
  cr_assert_str_eq(hex, "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf");
  derp_key_short(&k, sh);
  cr_assert_str_eq(sh, "a0a1a2a3");
  derp_key up;
  cr_assert_eq(derp_key_parse("nodekey:A0A1A2A3A4A5A6A7A8A9AAABACADAEAFB0B1B2B3B4B5B6B7B8B9BABBBCBDBEBF",
                              &up), 0);
  cr_assert(derp_key_equal(&k, &up));
}

Test(key, bad_input_rejected) {
  derp_key k;
  derp_privkey p;
  memset(k.b, 0x55, 32);
  const char *good = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  char buf[128];
  cr_assert_eq(derp_key_parse("", &k), -1);
  cr_assert_eq(derp_key_parse("nodekey:", &k), -1);
  snprintf(buf, sizeof buf, "nodekey:%.63s", good);
  cr_assert_eq(derp_key_parse(buf, &k), -1, "63 digits");
  snprintf(buf, sizeof buf, "nodekey:%s0", good);
  cr_assert_eq(derp_key_parse(buf, &k), -1, "65 digits");
  snprintf(buf, sizeof buf, "nodekey:%.62sg0", good);
  cr_assert_eq(derp_key_parse(buf, &k), -1, "non-hex digit");
  snprintf(buf, sizeof buf, "privkey:%s", good);
  cr_assert_eq(derp_key_parse(buf, &k), -1, "private prefix on a public key");
  snprintf(buf, sizeof buf, "nodekey:%s", good);
  cr_assert_eq(derp_privkey_parse(buf, &p), -1, "public prefix on a private key");
  cr_assert_eq(k.b[0], 0x55, "failed parse leaves the key alone");
  cr_assert(derp_key_is_zero(&(derp_key){{0}}));
  cr_assert_not(derp_key_is_zero(&k));
  for (int i = 0; i < DERP_KEY_LEN; i++) {
    derp_key one = {{0}};
    one.b[i] = 0x80;
    cr_assert_not(derp_key_is_zero(&one), "byte %d ignored", i);
  }
}

Test(key, hex_codec) {
  uint8_t b[5] = {0x00, 0x9f, 0xa0, 0xff, 0x5c}, back[5];
  char s[11];
  derp_hex_encode(b, sizeof b, s);
  cr_assert_str_eq(s, "009fa0ff5c");
  cr_assert_eq(derp_hex_decode("009FA0fF5c", sizeof back, back), 0);
  cr_assert(memcmp(b, back, sizeof b) == 0, "upper and lower case decode alike");
  cr_assert_eq(derp_hex_decode("009fa0ff5", sizeof back, back), -1, "short string read past NUL");
  cr_assert_eq(derp_hex_decode("009fa0ff5g", sizeof back, back), -1, "non-hex digit accepted");
  cr_assert_eq(derp_hex_decode(" 09fa0ff5c", sizeof back, back), -1, "space accepted");
  cr_assert_eq(derp_hex_decode("", 0, back), 0, "zero bytes is fine");
}

/* ---- mesh key ---- */

static const char hex64[] =
    "0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789abcdef";

static int mk_parse(const char *text, char *out, size_t cap, const char **why) {
  return derp_mesh_key_parse(text, strlen(text), out, cap, why);
}

Test(meshkey, trims_and_keeps_the_text) {
  char out[DERP_MESH_KEY_MAX + 1], in[256];
  const char *why = "unset";
  snprintf(in, sizeof in, " \t\r\n%s\n\n", hex64);
  cr_assert_eq(mk_parse(in, out, sizeof out, &why), 0);
  cr_assert_null(why);
  cr_assert_str_eq(out, hex64, "kept as written, upper case included");
  /* Unicode white space too, as Go's strings.TrimSpace: a no-break space
   * (U+00A0), U+2028, U+3000, U+0085; a lone lead byte is not space. */
  snprintf(in, sizeof in, "\xc2\xa0\xe3\x80\x80%s\xe2\x80\xa8\xc2\x85 ", hex64);
  cr_assert_eq(mk_parse(in, out, sizeof out, &why), 0, "%s", why);
  cr_assert_str_eq(out, hex64);
  snprintf(in, sizeof in, "%s\xc2", hex64);
  cr_assert_eq(mk_parse(in, out, sizeof out, &why), -1);
  snprintf(in, sizeof in, "%s\xe2\x80\x8b", hex64); /* U+200B: not space in Go */
  cr_assert_eq(mk_parse(in, out, sizeof out, &why), -1);
  cr_assert_eq(mk_parse(hex64, out, 65, NULL), 0, "cap of exactly len + 1");
  cr_assert_eq(mk_parse(hex64, out, 64, &why), -1);
  cr_assert_str_eq(why, "output buffer too small");
  /* Longer keys, up to the bound, as derper takes them. */
  char big[DERP_MESH_KEY_MAX + 2];
  memset(big, 'f', DERP_MESH_KEY_MAX);
  big[DERP_MESH_KEY_MAX] = '\0';
  cr_assert_eq(mk_parse(big, out, sizeof out, &why), 0);
  cr_assert_eq(strlen(out), DERP_MESH_KEY_MAX);
  big[DERP_MESH_KEY_MAX] = 'f';
  big[DERP_MESH_KEY_MAX + 1] = '\0';
  cr_assert_eq(mk_parse(big, out, sizeof out, &why), -1);
  cr_assert_str_eq(why, "more than 512 hex digits");
}

Test(meshkey, rejects_what_derper_rejects) {
  char out[DERP_MESH_KEY_MAX + 1];
  const char *why = NULL;
  struct { const char *text, *why; } bad[] = {
      {"", "empty"},
      {" \n\t ", "empty"},
      {"abc", "fewer than 64 hex digits"},
      {"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde", "fewer than 64 hex digits"},
      {"0123456789abcdef0123456789abcdef 0123456789abcdef0123456789abcdef", "not hex"},
      {"0x0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "not hex"},
      {"g123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "not hex"},
      {"\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"", "not hex"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    why = NULL;
    cr_assert_eq(mk_parse(bad[i].text, out, sizeof out, &why), -1, "%s", bad[i].text);
    cr_assert_not_null(why);
    cr_assert(strncmp(why, bad[i].why, strlen(bad[i].why)) == 0, "%s: %s", bad[i].text, why);
  }
  /* A NUL inside the text is not hex; n, not the NUL, ends the input. */
  char withnul[80];
  memcpy(withnul, hex64, 64);
  withnul[10] = '\0';
  cr_assert_eq(derp_mesh_key_parse(withnul, 64, out, sizeof out, &why), -1);
  cr_assert(strncmp(why, "not hex", 7) == 0);
  cr_assert_eq(derp_mesh_key_parse(NULL, 0, out, sizeof out, &why), -1);
  cr_assert_str_eq(why, "empty");
}

Test(meshkey, load_from_file) {
  char path[128], out[DERP_MESH_KEY_MAX + 1], msg[256], text[128];
  path_in(path, sizeof path, "mesh.key");
  snprintf(text, sizeof text, "%s\n", hex64);
  write_text(path, text);
  cr_assert_eq(derp_mesh_key_load(path, out, sizeof out, msg, sizeof msg), 0, "%s", msg);
  cr_assert_str_eq(out, hex64);
  write_text(path, "not a key\n");
  cr_assert_eq(derp_mesh_key_load(path, out, sizeof out, msg, sizeof msg), -1);
  cr_assert_not_null(strstr(msg, "mesh.key: not hex"), "%s", msg);
  path_in(path, sizeof path, "missing.key");
  cr_assert_eq(derp_mesh_key_load(path, out, sizeof out, msg, sizeof msg), -1);
  cr_assert_not_null(strstr(msg, "missing.key: No such file"), "%s", msg);
  /* A large file is refused before it is parsed. */
  path_in(path, sizeof path, "big.key");
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  for (int i = 0; i < 64 * 1024 + 1; i++) fputc('a', f);
  fclose(f);
  cr_assert_eq(derp_mesh_key_load(path, out, sizeof out, msg, sizeof msg), -1);
  cr_assert_not_null(strstr(msg, "larger than 64 KiB"), "%s", msg);
  cr_assert_eq(derp_mesh_key_load(path, out, sizeof out, NULL, 0), -1, "msg may be NULL");
}

Test(meshkey, equal_is_exact) {
  char other[80];
  strcpy(other, hex64);
  cr_assert(derp_mesh_key_equal(hex64, other));
  other[63] ^= 1;
  cr_assert_not(derp_mesh_key_equal(hex64, other));
  other[63] ^= 1;
  other[10] = 'a'; /* hex64[10] is 'a' already: still equal */
  cr_assert(derp_mesh_key_equal(hex64, other));
  other[32] = 'a'; /* 'A' in hex64: case counts, as in derper */
  cr_assert_not(derp_mesh_key_equal(hex64, other));
  cr_assert_not(derp_mesh_key_equal(hex64, "0123456789abcdef"), "lengths differ");
  cr_assert_not(derp_mesh_key_equal("", ""), "no key, no mesh");
  cr_assert_not(derp_mesh_key_equal(NULL, hex64));
  cr_assert_not(derp_mesh_key_equal(hex64, NULL));
}
