/* A program built against an installed dlbridge (tests/install/run.sh): it includes the installed
 * header, links the installed library (through pkg-config, shared or static), creates a tensor,
 * views it, exports and re-imports it through DLPack, checks dlb_status_str and the version
 * macros, and prints OK. */
#include <stdio.h>
#include <string.h>

#include <dlbridge.h>

static int failures = 0;

#define CHECK(cond)                                                       \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s (%s)\n", __FILE__,   \
                    __LINE__, #cond, dlb_last_error());                   \
            failures++;                                                   \
        }                                                                 \
    } while (0)

int main(void) {
    char version[64];
    snprintf(version, sizeof version, "%d.%d.%d", DLBRIDGE_VERSION_MAJOR, DLBRIDGE_VERSION_MINOR,
             DLBRIDGE_VERSION_PATCH);
    CHECK(strcmp(dlb_version(), version) == 0);
    CHECK(strcmp(dlb_status_str(DLB_ERR_READ_ONLY), "DLB_ERR_READ_ONLY") == 0);
    CHECK(strcmp(dlb_status_str(-1), "unknown dlb_status") == 0);

    const int64_t shape[2] = {2, 3};
    const DLDataType f32 = {kDLFloat, 32, 1};
    const DLDevice cpu = {kDLCPU, 0};
    dlb_tensor *t = NULL, *view = NULL, *back = NULL;
    void *data = NULL;
    CHECK(dlb_tensor_zeros(shape, 2, f32, cpu, &t) == DLB_OK);
    CHECK(dlb_tensor_data_mut(t, &data) == DLB_OK);
    if (failures) return 1;
    for (int i = 0; i < 6; i++) ((float *)data)[i] = (float)i;

    /* The transpose, zero-copy: element [2][1] is t's [1][2] = 5. */
    const int64_t vshape[2] = {3, 2}, vstrides[2] = {1, 3};
    CHECK(dlb_tensor_view(t, vshape, vstrides, 2, 0, &view) == DLB_OK);
    CHECK(view != NULL && dlb_tensor_shares_memory(t, view));
    if (view != NULL) {
        const DLTensor *d = dlb_tensor_dltensor(view);
        CHECK(((const float *)d->data)[2 * d->strides[0] + 1 * d->strides[1]] == 5.0f);
    }

    /* Export the view through DLPack and import it back: still the same memory. */
    DLManagedTensorVersioned *mt = NULL;
    CHECK(dlb_tensor_to_dlpack_versioned(view, false, &mt) == DLB_OK);
    CHECK(dlb_tensor_from_dlpack_versioned(mt, &back) == DLB_OK);
    CHECK(back != NULL && dlb_tensor_shares_memory(t, back));

    dlb_tensor_free(back);
    dlb_tensor_free(view);
    dlb_tensor_free(t);
    CHECK(dlb_live_allocations() == 0);

    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("OK (C, dlbridge %s)\n", dlb_version());
    return 0;
}
