/* fuzz.h: what every libFuzzer target here shares: the entry point's
 * prototype and an invariant check that stays on in every build type. */
#ifndef DERP_FUZZ_H
#define DERP_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(x)                                                          \
  do {                                                                         \
    if (!(x)) {                                                                \
      fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #x); \
      abort();                                                                 \
    }                                                                          \
  } while (0)

#endif
