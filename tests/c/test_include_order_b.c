/* Ours first, then the official DLPack header: the official one must be skipped by its own
 * include guard, which dlbridge.h defines. Also compiled as C++17 (run.sh: g++ -x c++). */
#include "dlbridge.h"

#include <dlpack/dlpack.h>

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
    printf("include order b (dlbridge.h, then official): ok, dlbridge %s\n", dlb_version());
    return 0;
}
