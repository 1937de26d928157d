/* client_internal.h: what the blocking DERP client's two files share
 * (client.c: connect, upgrade, handshake, frames, the API; client_io.c: byte
 * reads with deadlines and whole writes, plain, through a wrapped stream, or
 * inside WebSocket frames). Not part of derp/client.h. */
#ifndef DERP_CLIENT_INTERNAL_H
#define DERP_CLIENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "derp/client.h"
#include "derp/frame.h"
#include "lib/wsframe.h"

#define RBUF_CAP (128 * 1024)
#define HTTP_HEAD_MAX 8192
#define DEFAULT_TIMEOUT_MS 10000

struct derp_client {
  int fd;
  derp_privkey priv;
  derp_key pub;
  derp_key server_key;
  struct derp_server_info si;
  struct derp_frame_reader rd;
  uint8_t *rbuf;   /* receive buffer; [rpos, rend) not yet given to the reader */
  size_t rpos, rend;
  struct derp_client_stream st; /* opts->wrap_stream's stream (TLS), if any */
  bool has_stream;
  int http_status;  /* status of the upgrade response; 0 = none read (fast start) */
  /* WebSocket mode. */
  bool ws, ws_closed;
  uint32_t ws_frame_max;
  struct ws_decoder wd;
  uint8_t *wbuf;   /* framed, masked copy of one write */
  size_t wcap;
};

int64_t cl_now_ms(void);
int cl_ms_left(int64_t deadline);            /* -1 deadline = forever (-1) */
const char *cl_io_why(int r);                /* why a read returned r <= 0 */
void cl_seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int cl_writev_all(struct derp_client *c, struct iovec *iov, int cnt);
int cl_write_all(struct derp_client *c, const void *p, size_t n);
/* More bytes into rbuf[rend..cap): 1 = some, 0 = timeout, -1 = EOF (EPIPE) or error. */
int cl_fill(struct derp_client *c, size_t cap, int64_t deadline);
/* WebSocket: unwrap the n raw bytes at rbuf[rend..) in place (rend advanced
 * past the message bytes). 0, or -1 (errno EPROTO: a bad frame). */
int cl_ws_unwrap(struct derp_client *c, size_t n);
int cl_ws_send_frame(struct derp_client *c, uint8_t op, const void *p, size_t n);
/* The DERP stream's writes: as they are, or inside a WebSocket message. */
int cl_send_iov(struct derp_client *c, struct iovec *iov, int cnt);

#endif
