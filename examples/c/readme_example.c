#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "dlbridge.h"

static void check(dlb_status st, const char *what) {
  if (st != DLB_OK) {
    fprintf(stderr, "%s failed (status %d): %s\n", what, (int)st, dlb_last_error());
    exit(1);
  }
}

int main(void) {
  const int64_t shape[2] = {2, 3};
  const DLDataType f32 = {kDLFloat, 32, 1};
  const DLDevice cpu = {kDLCPU, 0};
  dlb_tensor *a = NULL, *b = NULL;
  void *pa = NULL, *pb = NULL;

  check(dlb_tensor_zeros(shape, 2, f32, cpu, &a), "dlb_tensor_zeros");
  check(dlb_tensor_data_mut(a, &pa), "dlb_tensor_data_mut");
  for (int i = 0; i < 6; i++) ((float *)pa)[i] = (float)i;

  /* An alias shares a's memory: a write through b is seen through a. */
  check(dlb_tensor_alias(a, &b), "dlb_tensor_alias");
  check(dlb_tensor_data_mut(b, &pb), "dlb_tensor_data_mut");
  ((float *)pb)[0] = 42.0f;
  printf("a[0][0] = %g, shares memory: %s\n", ((float *)pa)[0],
         dlb_tensor_shares_memory(a, b) ? "yes" : "no");

  /* Export without copying; the receiver owns the struct and calls its deleter once. */
  DLManagedTensorVersioned *mt = NULL;
  check(dlb_tensor_to_dlpack_versioned(a, false, &mt), "dlb_tensor_to_dlpack_versioned");
  printf("DLPack %u.%u export, ndim %d, first element %g\n", (unsigned)mt->version.major,
         (unsigned)mt->version.minor, (int)mt->dl_tensor.ndim, ((float *)mt->dl_tensor.data)[0]);

  dlb_tensor_free(a); /* the export still holds the memory... */
  dlb_tensor_free(b);
  mt->deleter(mt);    /* ...until its deleter runs */
  printf("live allocations: %lld\n", (long long)dlb_live_allocations());
  return 0;
}
