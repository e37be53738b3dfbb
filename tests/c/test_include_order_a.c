/* The official DLPack header first, then ours: ours must skip its DLPack declarations and work
 * with the official types. Also compiled as C++17 (run.sh: g++ -x c++). */
#include <dlpack/dlpack.h>

#include "dlbridge.h"

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
    printf("include order a (official, then dlbridge.h): ok, dlbridge %s\n", dlb_version());
    return 0;
}
