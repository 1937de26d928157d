/* fuzz_wsframe.c: libFuzzer target for the WebSocket frame decoder
 * (lib/wsframe.c), the layer a browser client's bytes meet first.
 *
 * Input: byte 0 says whether frames must be masked (server side) and byte 1
 * the chunk size (1..256). Every DATA event must point inside the chunk it
 * came from; control payloads fit their bound; after CLOSE or ERROR the
 * decoder takes no more input. */
#include <string.h>

#include "fuzz.h"
#include "lib/wsframe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  struct ws_decoder d;
  ws_decoder_init(&d, data[0] & 1);
  size_t chunk = (size_t)data[1] + 1;
  uint8_t *copy = malloc(size); /* the decoder unmasks in place */
  if (!copy) return 0;
  memcpy(copy, data + 2, size - 2);
  uint8_t *p = copy;
  size_t left = size - 2;
  bool ended = false;
  while (left > 0 && !ended) {
    size_t n = left < chunk ? left : chunk;
    uint8_t *in = p, *lo = p, *hi = p + n;
    size_t inlen = n;
    for (;;) {
      struct ws_event ev;
      enum ws_event_type t = ws_decode(&d, &in, &inlen, &ev);
      FUZZ_CHECK(in >= lo && in + inlen == hi);
      if (t == WS_EV_MORE) break;
      if (t == WS_EV_DATA) FUZZ_CHECK(ev.len == 0 || (ev.data >= lo && ev.data + ev.len <= hi));
      if (t == WS_EV_PING || t == WS_EV_PONG) FUZZ_CHECK(ev.len <= WS_CTRL_MAX);
      if (t == WS_EV_CLOSE || t == WS_EV_ERROR) {
        FUZZ_CHECK(t != WS_EV_ERROR || ev.why != NULL);
        ended = true;
        break;
      }
    }
    p += n;
    left -= n;
  }
  free(copy);
  return 0;
}
