/* keyfile.c: derper's key file, {"PrivateKey": "privkey:<64 hex>"}.
 *
 * Owns loading the file (extra JSON fields are ignored, as derper does) and
 * creating it when missing. Writes are atomic: a 0600 temp file in the same
 * directory (mkstemp opens it O_EXCL), fsync, rename over the target, fsync
 * the directory, so a crash never leaves a half-written or world-readable key. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "derp/key.h"

/* A key file is tiny; anything bigger is not one of ours. */
#define KEYFILE_MAX (64 * 1024)

static void set_msg(char *msg, size_t msglen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_msg(char *msg, size_t msglen, const char *fmt, ...) {
  if (msg == NULL || msglen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, msglen, fmt, ap);
  va_end(ap);
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* fsync the directory holding path so the rename itself is durable. */
static void sync_parent_dir(const char *path) {
  char *copy = strdup(path);
  if (copy == NULL) return;
  int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(copy);
  if (dfd < 0) return;
  (void)fsync(dfd); /* best effort: the file itself is already synced */
  close(dfd);
}

int derp_file_write_atomic(const char *path, unsigned mode, const void *buf, size_t len) {
  size_t plen = strlen(path);
  char *tmp = malloc(plen + sizeof ".tmpXXXXXX");
  if (tmp == NULL) return -1;
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, ".tmpXXXXXX", sizeof ".tmpXXXXXX");
  int fd = mkostemp(tmp, O_CLOEXEC); /* O_EXCL, mode 0600 */
  int rc = -1, saved = 0;
  if (fd < 0) goto out;
  if (fchmod(fd, (mode_t)mode) < 0 || write_all(fd, buf, len) < 0 || fsync(fd) < 0) {
    saved = errno;
    close(fd);
    unlink(tmp);
    errno = saved;
    goto out;
  }
  if (close(fd) < 0 || rename(tmp, path) < 0) {
    saved = errno;
    unlink(tmp);
    errno = saved;
    goto out;
  }
  sync_parent_dir(path);
  rc = 0;
out:
  free(tmp);
  return rc;
}

int derp_mkdir_p(const char *dir, unsigned mode) {
  char p[4096];
  if (!dir[0]) { /* as mkdir(""): the loop below would start past the NUL */
    errno = ENOENT;
    return -1;
  }
  if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) {
    errno = ENAMETOOLONG;
    return -1;
  }
  for (char *s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = 0;
    if (mkdir(p, 0755) != 0 && errno != EEXIST) return -1;
    *s = '/';
  }
  return (mkdir(p, mode) != 0 && errno != EEXIST) ? -1 : 0;
}

int derp_keyfile_write(const char *path, const derp_privkey *k) {
  char text[DERP_KEY_STRLEN];
  char body[DERP_KEY_STRLEN + 32];
  derp_privkey_format(k, text);
  /* Same layout as derper's json.MarshalIndent(cfg, "", "\t"). */
  int blen = snprintf(body, sizeof body, "{\n\t\"PrivateKey\": \"%s\"\n}", text);
  sodium_memzero(text, sizeof text);
  int rc = derp_file_write_atomic(path, 0600, body, (size_t)blen);
  sodium_memzero(body, sizeof body);
  return rc;
}

/* Read up to KEYFILE_MAX bytes; returns length or -1 (errno set). */
static ssize_t read_file(int fd, char *buf, size_t cap) {
  size_t n = 0;
  while (n < cap) {
    ssize_t r = read(fd, buf + n, cap - n);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  return (ssize_t)n;
}

/* Parse the JSON text of a key file into *out. */
static int parse_keyfile(const char *path, const char *buf, size_t n, derp_privkey *out,
                         char *msg, size_t msglen) {
  json_t *root = json_loadb(buf, n, 0, NULL);
  int rc = -1;
  if (root == NULL || !json_is_object(root)) {
    set_msg(msg, msglen, "key file %s: not valid JSON", path);
    goto out;
  }
  json_t *pk = json_object_get(root, "PrivateKey");
  if (pk == NULL) {
    set_msg(msg, msglen, "key file %s: missing PrivateKey", path);
    goto out;
  }
  if (!json_is_string(pk) || derp_privkey_parse(json_string_value(pk), out) < 0) {
    set_msg(msg, msglen, "key file %s: PrivateKey is not \"privkey:<64 hex>\"", path);
    goto out;
  }
  rc = 0;
out:
  json_decref(root);
  if (rc < 0) errno = EINVAL;
  return rc;
}

static int load_existing(int fd, const char *path, derp_privkey *out, char *msg, size_t msglen) {
  char *buf = malloc(KEYFILE_MAX + 1);
  if (buf == NULL) {
    set_msg(msg, msglen, "key file %s: out of memory", path);
    return -1;
  }
  int rc = -1;
  ssize_t n = read_file(fd, buf, KEYFILE_MAX + 1);
  if (n < 0) {
    int e = errno;
    set_msg(msg, msglen, "key file %s: %s", path, strerror(e));
    errno = e;
  } else if (n > KEYFILE_MAX) {
    set_msg(msg, msglen, "key file %s: too large", path);
    errno = EFBIG;
  } else {
    rc = parse_keyfile(path, buf, (size_t)n, out, msg, msglen);
  }
  sodium_memzero(buf, KEYFILE_MAX + 1);
  free(buf);
  return rc;
}

static int create_new(const char *path, derp_privkey *out, char *msg, size_t msglen) {
  derp_key pub;
  derp_key_generate(out, &pub);
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash && slash != dir) *slash = 0;
  if ((slash && slash != dir && derp_mkdir_p(dir, 0755) < 0) || derp_keyfile_write(path, out) < 0) {
    int e = errno;
    set_msg(msg, msglen, "key file %s: cannot create: %s", path, strerror(e));
    sodium_memzero(out, sizeof *out);
    errno = e;
    return -1;
  }
  return 0;
}

int derp_keyfile_load_or_create(const char *path, derp_privkey *out, int *created,
                                char *msg, size_t msglen) {
  if (created != NULL) *created = 0;
  if (msg != NULL && msglen > 0) msg[0] = '\0';
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    if (e != ENOENT) {
      set_msg(msg, msglen, "key file %s: %s", path, strerror(e));
      errno = e;
      return -1;
    }
    if (create_new(path, out, msg, msglen) < 0) return -1;
    if (created != NULL) *created = 1;
    return 0;
  }
  int rc = load_existing(fd, path, out, msg, msglen);
  int e = errno;
  close(fd);
  errno = e;
  return rc;
}
