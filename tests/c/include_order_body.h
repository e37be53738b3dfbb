/* The body shared by test_include_order_a.c and _b.c, which differ only in the order they
 * include dlbridge.h and the official dlpack/dlpack.h before this file. INCLUDE_ORDER names it. */
#include <stdbool.h>
#include <stdio.h>

int main(void) {
    const int64_t shape[1] = {4};
    DLDataType dtype = {kDLFloat, 32, 1};
    DLDevice device = {kDLCPU, 0};
    dlb_tensor *t = NULL;
    if (dlb_tensor_zeros(shape, 1, dtype, device, &t) != DLB_OK) {
        printf("FAIL: dlb_tensor_zeros: %s\n", dlb_last_error());
        return 1;
    }
    DLManagedTensorVersioned *mt = NULL;
    if (dlb_tensor_to_dlpack_versioned(t, false, &mt) != DLB_OK) {
        printf("FAIL: dlb_tensor_to_dlpack_versioned: %s\n", dlb_last_error());
        return 1;
    }
    mt->deleter(mt);
    dlb_tensor_free(t);
    printf("include order %s: ok, dlbridge %s\n", INCLUDE_ORDER, dlb_version());
    return 0;
}
