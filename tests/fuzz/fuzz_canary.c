/* fuzz_canary.c: a target with undefined behaviour on purpose (a signed
 * overflow on input "U..."), for harness_check.sh: it proves run.sh fails the
 * fuzz phase on a UBSan report, which UBSan alone would only print. */
#include "fuzz.h"

#include <limits.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0 || data[0] != 'U') return 0;
  volatile int big = INT_MAX;
  volatile int n = (int)size;
  volatile int sum = big + n; /* overflows: UBSan's signed-integer-overflow */
  (void)sum;
  return 0;
}
