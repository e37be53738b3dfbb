/* Running out of memory for real: under an address-space limit (setrlimit(RLIMIT_AS), what
 * `ulimit -v` sets), dlbridge must answer DLB_ERR_OUT_OF_MEMORY with a message, never abort,
 * lose or corrupt nothing, and work again once memory is back.
 *
 * The limit is set a little above what the process uses after setting up. Then:
 *   1. a tensor far larger than the limit is refused;
 *   2. handles (aliases, rank-6 views whose shape lives on the heap, DLPack exports) are made
 *      until the handles themselves no longer fit: the small allocations fail too;
 *   3. while memory is exhausted, every other call answers a status (OK or OUT_OF_MEMORY);
 *   4. everything is freed: dlb_live_allocations() is back where it was, the shared tensor
 *      still holds its values, and every call works again, with the limit and without it.
 *
 * Runs plain only: AddressSanitizer reserves terabytes of shadow memory and valgrind replaces
 * the allocator, so neither can run under an address-space limit. */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "dlbridge.h"

#include "check.h"

#define HEADROOM (48L << 20) /* bytes of address space left to the test above its usage */
#define SLOTS (1L << 20)     /* room to record the handles made before memory runs out */

static const DLDevice CPU = {kDLCPU, 0};
static const DLDataType F32 = {kDLFloat, 32, 1};

/* The process's current address-space size, in bytes. */
static long address_space(void) {
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL || fscanf(f, "%ld", &pages) != 1) {
        printf("cannot read /proc/self/statm\n");
        exit(2);
    }
    fclose(f);
    return pages * sysconf(_SC_PAGESIZE);
}

static int is_status(dlb_status s) { return s == DLB_OK || s == DLB_ERR_OUT_OF_MEMORY; }

/* Checks the message of a failed call: set, and mentioning "memory" (or "allocat"). */
static void check_oom_message(void) {
    const char *m = dlb_last_error();
    CHECK(m != NULL && (strstr(m, "memory") != NULL || strstr(m, "allocat") != NULL));
}

/* The shared tensor's values: 0..15. */
static int holds_its_values(dlb_tensor *t) {
    const float *v = (const float *)dlb_tensor_dltensor(t)->data;
    for (int i = 0; i < 16; i++) {
        if (v[i] != (float)i) return 0;
    }
    return 1;
}

int main(void) {
    printf("test_oom: address-space limit of current usage + %ld MiB\n", HEADROOM >> 20);
    fflush(stdout);

    int64_t shape[2] = {4, 4};
    dlb_tensor *base = NULL;
    CHECK_EQ(dlb_tensor_empty(shape, 2, F32, CPU, &base), DLB_OK);
    float *v = (float *)dlb_tensor_dltensor(base)->data;
    for (int i = 0; i < 16; i++) v[i] = (float)i;
    int64_t live = dlb_live_allocations();

    dlb_tensor **handles = calloc(SLOTS, sizeof *handles);
    DLManagedTensorVersioned **exports = calloc(SLOTS, sizeof *exports);
    CHECK(handles != NULL && exports != NULL);
    if (handles == NULL || exports == NULL) return check_report();

    struct rlimit old;
    CHECK_EQ(getrlimit(RLIMIT_AS, &old), 0);
    struct rlimit tight = {(rlim_t)(address_space() + HEADROOM), old.rlim_max};
    CHECK_EQ(setrlimit(RLIMIT_AS, &tight), 0);

    /* 1. Far beyond the limit. */
    int64_t huge[1] = {1L << 30};
    dlb_tensor *big = base;
    CHECK_EQ(dlb_tensor_empty(huge, 1, F32, CPU, &big), DLB_ERR_OUT_OF_MEMORY);
    CHECK(big == NULL);
    check_oom_message();

    /* 2. Small allocations until they fail. */
    int64_t shape6[6] = {2, 1, 2, 1, 2, 2};
    long made = 0, exported = 0;
    dlb_status st = DLB_OK;
    while (st == DLB_OK && made < SLOTS && exported < SLOTS) {
        long step = made + exported;
        if (step % 3 == 0) {
            st = dlb_tensor_alias(base, &handles[made]);
            made += st == DLB_OK;
        } else if (step % 3 == 1) {
            st = dlb_tensor_view(base, shape6, NULL, 6, 0, &handles[made]);
            made += st == DLB_OK;
        } else {
            st = dlb_tensor_to_dlpack_versioned(base, false, &exports[exported]);
            exported += st == DLB_OK;
        }
    }
    CHECK_EQ(st, DLB_ERR_OUT_OF_MEMORY);
    CHECK(made > 1000);
    check_oom_message();

    /* 3. Exhausted: every call answers a status. */
    dlb_tensor *t = NULL;
    CHECK(is_status(dlb_tensor_copy(base, &t)));
    dlb_tensor_free(t);
    t = NULL;
    CHECK(is_status(dlb_tensor_cast(base, (DLDataType){kDLFloat, 64, 1}, &t)));
    dlb_tensor_free(t);
    t = NULL;
    CHECK(is_status(dlb_tensor_zeros(shape6, 6, F32, CPU, &t)));
    dlb_tensor_free(t);
    DLManagedTensorVersioned *mt = NULL;
    if (dlb_tensor_to_dlpack_versioned(base, true, &mt) == DLB_OK) mt->deleter(mt);
    int64_t bad[1] = {99};
    t = NULL;
    st = dlb_tensor_view(base, bad, NULL, 1, 0, &t);
    CHECK(st == DLB_ERR_INVALID_ARGUMENT || st == DLB_ERR_OUT_OF_MEMORY);
    CHECK(t == NULL && dlb_last_error()[0] != '\0');
    /* Re-importing an export needs a new handle: consumed either way. */
    if (exported > 0) {
        exported--;
        st = dlb_tensor_from_dlpack_versioned(exports[exported], &t);
        CHECK(is_status(st));
        if (st == DLB_OK) dlb_tensor_free(t);
    }

    /* 4. Everything back. */
    for (long i = 0; i < made; i++) dlb_tensor_free(handles[i]);
    for (long i = 0; i < exported; i++) exports[i]->deleter(exports[i]);
    CHECK_EQ(dlb_live_allocations(), live);
    CHECK(holds_its_values(base));

    t = NULL;
    CHECK_EQ(dlb_tensor_view(base, shape6, NULL, 6, 0, &t), DLB_OK);
    dlb_tensor *c = NULL;
    CHECK_EQ(dlb_tensor_copy(t, &c), DLB_OK);
    CHECK(c != NULL && ((const float *)dlb_tensor_dltensor(c)->data)[15] == 15.0f);
    dlb_tensor_free(c);
    dlb_tensor_free(t);

    CHECK_EQ(setrlimit(RLIMIT_AS, &old), 0);
    int64_t large[1] = {16L << 20}; /* 64 MiB: more than the headroom was */
    t = NULL;
    CHECK_EQ(dlb_tensor_zeros(large, 1, F32, CPU, &t), DLB_OK);
    dlb_tensor_free(t);
    dlb_tensor_free(base);
    free(handles);
    free(exports);
    printf("test_oom: %ld handles and %ld exports made before memory ran out\n", made, exported);
    return check_report();
}
