/* fuzz_frame.c: libFuzzer target for the DERP frame reader (lib/frame.c).
 *
 * Input: byte 0 picks the direction and the per-connection skip/reject
 * masks, byte 1 the chunk size the rest is fed in (1..256 bytes, so frames
 * span inputs and the assembly buffer is used). Every frame returned must
 * lie within limits: a payload pointer for a non-empty payload, a length the
 * direction allows, a type not rejected. The reader is reset at the end, so
 * ASan sees any leak of the assembly buffer. */
#include "derp/frame.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  enum derp_frame_dir dir = (data[0] & 1) ? DERP_FROM_SERVER : DERP_FROM_CLIENT;
  struct derp_frame_reader r;
  derp_frame_reader_init(&r, dir);
  if (data[0] & 2) r.skip_types = 1u << DERP_FRAME_CLIENT_INFO;
  if (data[0] & 4) r.reject_types = 1u << DERP_FRAME_FORWARD_PACKET | 1u << DERP_FRAME_WATCH_CONNS;
  size_t chunk = (size_t)data[1] + 1;
  const uint8_t *p = data + 2;
  size_t left = size - 2;
  while (left > 0) {
    size_t n = left < chunk ? left : chunk;
    const uint8_t *in = p;
    size_t inlen = n;
    for (;;) {
      struct derp_frame f;
      enum derp_read_status st = derp_frame_read(&r, &in, &inlen, &f);
      if (st == DERP_READ_MORE) break;
      if (st != DERP_READ_FRAME) goto out; /* ERROR or NOMEM: the connection ends */
      FUZZ_CHECK(f.len == 0 || f.payload != NULL);
      FUZZ_CHECK(derp_frame_check(dir, f.type, f.len) == DERP_FRAME_DELIVER);
      FUZZ_CHECK(f.type >= 32 || !((r.reject_types | r.skip_types) & (1u << f.type)));
      /* Touch every payload byte: ASan checks the pointer and length. */
      volatile uint8_t sum = 0;
      for (uint32_t i = 0; i < f.len; i++) sum ^= f.payload[i];
      (void)sum;
    }
    FUZZ_CHECK(inlen == 0);
    p += n;
    left -= n;
  }
out:
  derp_frame_reader_reset(&r);
  return 0;
}
