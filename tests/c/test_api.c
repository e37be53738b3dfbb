/* Conformance of every function in the dlbridge C contract (reference: docs/c-api.md).
 *
 * Each test_* function is one block; it records dlb_live_allocations() when it starts and checks
 * the count is back there when it ends, so a leak is pinned to the block that caused it.
 * Run under valgrind and AddressSanitizer by tests/c/run.sh: many checks (reading an export after
 * every handle is gone, writing every byte of an `empty` tensor) only bite there. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dlbridge.h"

#include "check.h"

/* Out-parameters are pre-loaded with this, so a check can tell "set to NULL" from "untouched". */
#define POISON ((void *)(uintptr_t)0x1)

static const DLDevice CPU = {kDLCPU, 0};

static DLDataType dtype(int code, int bits, int lanes) {
    DLDataType d;
    d.code = (uint8_t)code;
    d.bits = (uint8_t)bits;
    d.lanes = (uint16_t)lanes;
    return d;
}

static DLDevice device(int type, int id) {
    DLDevice d;
    d.device_type = (DLDeviceType)type;
    d.device_id = id;
    return d;
}

#define F16 dtype(kDLFloat, 16, 1)
#define BF16 dtype(kDLBfloat, 16, 1)
#define F32 dtype(kDLFloat, 32, 1)
#define F64 dtype(kDLFloat, 64, 1)
#define I8 dtype(kDLInt, 8, 1)
#define I32 dtype(kDLInt, 32, 1)
#define I64 dtype(kDLInt, 64, 1)
#define U8 dtype(kDLUInt, 8, 1)
#define U16 dtype(kDLUInt, 16, 1)
#define BOOL dtype(kDLBool, 8, 1)
#define C64 dtype(kDLComplex, 64, 1)
#define C128 dtype(kDLComplex, 128, 1)

#define COUNT(a) ((int32_t)(sizeof(a) / sizeof((a)[0])))

/* The thread's last error must explain a failure. Call right after the failing call: the message
 * is only valid until this thread's next dlb_ call. */
static bool error_message_set(void) {
    const char *m = dlb_last_error();
    return m != NULL && m[0] != '\0';
}

/* A refused call: the status, *out reset to NULL, and a message. */
#define CHECK_FAILS(want, out, call)                                                   \
    do {                                                                               \
        (out) = POISON;                                                                \
        CHECK_EQ((call), (want));                                                      \
        CHECK((out) == NULL);                                                          \
        CHECK(error_message_set());                                                    \
    } while (0)

#define CHECK_LIVE(start) CHECK_EQ(dlb_live_allocations(), (start))

/* A pointer a successful call handed back (guards follow-up checks so that one failure does not
 * crash the whole run). */
#define VALID(p) ((p) != NULL && (void *)(p) != POISON)

static int64_t numel(const DLTensor *d) {
    int64_t n = 1;
    for (int32_t i = 0; i < d->ndim; i++) n *= d->shape[i];
    return n;
}

static size_t elem_size(DLDataType d) { return (size_t)(d.bits * d.lanes + 7) / 8; }

/* Strides (in elements) of a compact row-major tensor of this shape. */
static void row_major_strides(const int64_t *shape, int32_t ndim, int64_t *strides) {
    int64_t s = 1;
    for (int32_t i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i];
    }
}

/* True when the exported/borrowed DLTensor has canonical row-major strides. Zero-size tensors
 * are skipped: no element is ever addressed, so any strides describe them. */
static bool is_row_major(const DLTensor *d) {
    if (d->ndim > 0 && (d->shape == NULL || d->strides == NULL)) return false;
    if (numel(d) == 0) return true;
    int64_t want[64];
    row_major_strides(d->shape, d->ndim, want);
    for (int32_t i = 0; i < d->ndim; i++)
        if (d->strides[i] != want[i]) return false;
    return true;
}

static bool shape_is(const DLTensor *d, const int64_t *shape, int32_t ndim) {
    if (d->ndim != ndim) return false;
    for (int32_t i = 0; i < ndim; i++)
        if (d->shape[i] != shape[i]) return false;
    return true;
}

static bool strides_are(const DLTensor *d, const int64_t *strides, int32_t ndim) {
    if (d->ndim != ndim || (ndim > 0 && d->strides == NULL)) return false;
    for (int32_t i = 0; i < ndim; i++)
        if (d->strides[i] != strides[i]) return false;
    return true;
}

static bool dtype_is(DLDataType got, DLDataType want) {
    return got.code == want.code && got.bits == want.bits && got.lanes == want.lanes;
}

/* Address of the element at flat row-major position `flat`, following the tensor's strides
 * (NULL strides = row-major) and byte_offset. */
static const char *element_at(const DLTensor *d, int64_t flat) {
    int64_t strides[64];
    if (d->strides != NULL)
        memcpy(strides, d->strides, sizeof(int64_t) * (size_t)d->ndim);
    else
        row_major_strides(d->shape, d->ndim, strides);
    int64_t offset = 0;
    for (int32_t i = d->ndim - 1; i >= 0; i--) {
        int64_t idx = flat % d->shape[i];
        flat /= d->shape[i];
        offset += idx * strides[i];
    }
    return (const char *)d->data + d->byte_offset + offset * (int64_t)elem_size(d->dtype);
}

/* The tensor's elements in logical row-major order equal `want` (element type given by size). */
static bool values_are(const DLTensor *d, const void *want, int64_t n) {
    if (numel(d) != n) return false;
    size_t es = elem_size(d->dtype);
    for (int64_t i = 0; i < n; i++)
        if (memcmp(element_at(d, i), (const char *)want + (size_t)i * es, es) != 0) return false;
    return true;
}

static bool tensor_values_are(const dlb_tensor *t, const void *want, int64_t n) {
    return values_are(dlb_tensor_dltensor(t), want, n);
}

static void *data_of(const dlb_tensor *t) { return dlb_tensor_dltensor(t)->data; }

static void *writable(dlb_tensor *t) {
    void *p = POISON;
    CHECK_EQ(dlb_tensor_data_mut(t, &p), DLB_OK);
    return p;
}

/* A new compact tensor holding `vals` (row-major). */
static dlb_tensor *make(DLDataType d, const int64_t *shape, int32_t ndim, const void *vals) {
    dlb_tensor *t = POISON;
    CHECK_EQ(dlb_tensor_zeros(shape, ndim, d, CPU, &t), DLB_OK);
    if (!VALID(t)) {
        printf("fatal: dlb_tensor_zeros failed: %s\n", dlb_last_error());
        exit(2);
    }
    int64_t n = 1;
    for (int32_t i = 0; i < ndim; i++) n *= shape[i];
    if (n > 0) memcpy(writable(t), vals, (size_t)n * elem_size(d));
    return t;
}

/* float32 tensor holding 0, 1, 2, ... */
static dlb_tensor *iota_f32(const int64_t *shape, int32_t ndim) {
    float vals[64];
    for (int i = 0; i < 64; i++) vals[i] = (float)i;
    return make(F32, shape, ndim, vals);
}

/* Counts calls of a from_data release callback and frees the wrapped buffer, so valgrind/ASan see
 * any later access to it. */
typedef struct {
    atomic_int calls;
    void *buf;
} release_ctx;

static void release_cb(void *ctx) {
    release_ctx *r = ctx;
    free(r->buf);
    r->buf = NULL;
    atomic_fetch_add(&r->calls, 1);
}

static void release_init(release_ctx *r, void *buf) {
    atomic_init(&r->calls, 0);
    r->buf = buf;
}

/* A buffer of n floats holding 0, 1, 2, ... */
static float *float_buffer(int n) {
    float *b = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int i = 0; i < n; i++) b[i] = (float)i;
    return b;
}

/* ------------------------------------------------------------------------------------------- */

static bool version_shape_ok(const char *v) {
    /* Three dot-separated non-empty runs of digits, nothing else. */
    for (int part = 0; part < 3; part++) {
        if (*v < '0' || *v > '9') return false;
        while (*v >= '0' && *v <= '9') v++;
        if (part < 2) {
            if (*v != '.') return false;
            v++;
        }
    }
    return *v == '\0';
}

static void test_basics(void) {
    int64_t live0 = dlb_live_allocations();
    CHECK(live0 >= 0);

    const char *v = dlb_version();
    CHECK(v != NULL);
    if (v != NULL) {
        CHECK(version_shape_ok(v));
        CHECK(dlb_version() == v); /* static string, same every time */
    }
    CHECK(dlb_last_error() != NULL);

    /* After a failure the message is non-empty, and it stays a valid string afterwards. */
    dlb_tensor *t = POISON;
    CHECK_EQ(dlb_tensor_alias(NULL, &t), DLB_ERR_INVALID_ARGUMENT);
    CHECK(error_message_set());
    CHECK(dlb_last_error() != NULL);

    CHECK(dlb_cuda_device_count() >= 0); /* 0 without a driver; tests/cuda.rs covers CUDA */
    CHECK_LIVE(live0);
}

/* empty and zeros over many shapes and dtypes. */
static void test_create(void) {
    int64_t live0 = dlb_live_allocations();
    static const struct {
        int32_t ndim;
        int64_t shape[3];
    } shapes[] = {
        {0, {0}}, {1, {5}}, {2, {2, 3}}, {3, {2, 3, 4}}, {1, {0}}, {3, {3, 0, 2}}, {2, {1, 7}},
    };
    const DLDataType dtypes[] = {F32, F64, I8, U16, I64, BOOL, F16, BF16, C64, C128};

    for (int s = 0; s < COUNT(shapes); s++) {
        for (int k = 0; k < COUNT(dtypes); k++) {
            for (int zeros = 0; zeros < 2; zeros++) {
                int32_t ndim = shapes[s].ndim;
                int64_t shape[3];
                memcpy(shape, shapes[s].shape, sizeof shape);
                /* 0-d: shape may be NULL. */
                const int64_t *shape_arg = ndim == 0 ? NULL : shape;
                dlb_tensor *t = POISON;
                dlb_status st = zeros ? dlb_tensor_zeros(shape_arg, ndim, dtypes[k], CPU, &t)
                                      : dlb_tensor_empty(shape_arg, ndim, dtypes[k], CPU, &t);
                CHECK_EQ(st, DLB_OK);
                if (st != DLB_OK) {
                    printf("  (shape case %d, dtype case %d, zeros=%d: %s)\n", s, k, zeros,
                           dlb_last_error());
                    continue;
                }
                /* The tensor keeps its own copy of the shape. */
                shape[0] = 99;
                const DLTensor *d = dlb_tensor_dltensor(t);
                CHECK(d != NULL);
                CHECK(shape_is(d, shapes[s].shape, ndim));
                CHECK(ndim == 0 || (d->shape != NULL && d->strides != NULL));
                CHECK(is_row_major(d));
                CHECK_EQ(d->byte_offset, 0);
                CHECK(dtype_is(d->dtype, dtypes[k]));
                CHECK_EQ(d->device.device_type, kDLCPU);
                CHECK_EQ(d->device.device_id, 0);
                CHECK(dlb_tensor_is_contiguous(t));
                CHECK(!dlb_tensor_is_read_only(t));

                int64_t n = numel(d);
                size_t nbytes = (size_t)n * elem_size(dtypes[k]);
                if (n > 0) {
                    CHECK(d->data != NULL);
                    CHECK_EQ((uintptr_t)d->data % 256, 0);
                    void *p = writable(t);
                    CHECK(p == d->data);
                    if (zeros) {
                        bool all_zero = true;
                        for (size_t i = 0; i < nbytes; i++)
                            if (((const unsigned char *)d->data)[i] != 0) all_zero = false;
                        CHECK(all_zero);
                    }
                    /* Touch every byte: valgrind/ASan catch an allocation that is too small. */
                    memset(p, 0xab, nbytes);
                }
                dlb_tensor_free(t);
            }
        }
    }

    /* Two allocations never share memory. */
    int64_t shape[1] = {4};
    dlb_tensor *a = POISON, *b = POISON;
    CHECK_EQ(dlb_tensor_empty(shape, 1, F32, CPU, &a), DLB_OK);
    CHECK_EQ(dlb_tensor_empty(shape, 1, F32, CPU, &b), DLB_OK);
    CHECK_EQ(dlb_live_allocations(), live0 + 2);
    CHECK(!dlb_tensor_shares_memory(a, b));
    CHECK(dlb_tensor_shares_memory(a, a));
    dlb_tensor_free(a);
    dlb_tensor_free(b);
    CHECK_LIVE(live0);
}

static void test_alias_copy(void) {
    int64_t live0 = dlb_live_allocations();
    const int64_t shape[2] = {2, 3};
    const float vals[6] = {0, 1, 2, 3, 4, 5};
    dlb_tensor *t = iota_f32(shape, 2);

    /* alias: same memory, writes through one seen through the other. */
    dlb_tensor *a = POISON;
    CHECK_EQ(dlb_tensor_alias(t, &a), DLB_OK);
    CHECK_EQ(dlb_live_allocations(), live0 + 1); /* an alias is not a new buffer */
    CHECK(data_of(a) == data_of(t));
    CHECK(shape_is(dlb_tensor_dltensor(a), shape, 2));
    CHECK(dtype_is(dlb_tensor_dltensor(a)->dtype, F32));
    CHECK(dlb_tensor_shares_memory(t, a));
    CHECK(dlb_tensor_shares_memory(a, t));
    ((float *)writable(a))[4] = 42.0f;
    CHECK(((const float *)data_of(t))[4] == 42.0f);
    ((float *)writable(t))[4] = 4.0f;
    CHECK(((const float *)data_of(a))[4] == 4.0f);

    /* copy: new row-major memory, independent. */
    dlb_tensor *c = POISON;
    CHECK_EQ(dlb_tensor_copy(t, &c), DLB_OK);
    CHECK_EQ(dlb_live_allocations(), live0 + 2);
    CHECK(data_of(c) != data_of(t));
    CHECK(!dlb_tensor_shares_memory(t, c));
    CHECK(tensor_values_are(c, vals, 6));
    CHECK(is_row_major(dlb_tensor_dltensor(c)));
    CHECK(dlb_tensor_is_contiguous(c));
    CHECK(!dlb_tensor_is_read_only(c));
    CHECK_EQ((uintptr_t)data_of(c) % 256, 0);
    ((float *)writable(c))[0] = -1.0f;
    CHECK(((const float *)data_of(t))[0] == 0.0f);
    ((float *)writable(t))[1] = -7.0f;
    CHECK(((const float *)data_of(c))[1] == 1.0f);

    /* The alias keeps the memory alive after the original handle is gone. */
    dlb_tensor_free(t);
    CHECK_EQ(dlb_live_allocations(), live0 + 2);
    CHECK(((const float *)data_of(a))[1] == -7.0f);
    dlb_tensor *aa = POISON;
    CHECK_EQ(dlb_tensor_alias(a, &aa), DLB_OK);
    dlb_tensor_free(a);
    CHECK(((const float *)data_of(aa))[5] == 5.0f);
    dlb_tensor_free(aa);
    CHECK_EQ(dlb_live_allocations(), live0 + 1);
    dlb_tensor_free(c);

    /* shares_memory is about the byte ranges the two tensors span. */
    t = iota_f32(shape, 2);
    const int64_t row_shape[1] = {3}, two[1] = {2};
    const int64_t col_strides[1] = {3};
    dlb_tensor *row0 = POISON, *row1 = POISON, *mid = POISON, *col0 = POISON, *col1 = POISON;
    CHECK_EQ(dlb_tensor_view(t, row_shape, NULL, 1, 0, &row0), DLB_OK);
    CHECK_EQ(dlb_tensor_view(t, row_shape, NULL, 1, 3, &row1), DLB_OK);
    CHECK_EQ(dlb_tensor_view(t, two, NULL, 1, 2, &mid), DLB_OK); /* elements 2, 3 */
    CHECK_EQ(dlb_tensor_view(t, two, col_strides, 1, 0, &col0), DLB_OK);
    CHECK_EQ(dlb_tensor_view(t, two, col_strides, 1, 1, &col1), DLB_OK);
    CHECK(!dlb_tensor_shares_memory(row0, row1)); /* [0,12) and [12,24): disjoint */
    CHECK(dlb_tensor_shares_memory(row0, mid));
    CHECK(dlb_tensor_shares_memory(row1, mid));
    CHECK(dlb_tensor_shares_memory(t, row1));
    /* Columns 0 and 1 interleave: their spans [0,16) and [4,20) overlap. */
    CHECK(dlb_tensor_shares_memory(col0, col1));
    dlb_tensor_free(row0);
    dlb_tensor_free(row1);
    dlb_tensor_free(mid);
    dlb_tensor_free(col0);
    dlb_tensor_free(col1);
    dlb_tensor_free(t);
    CHECK_LIVE(live0);
}

/* One successful view case: the view's borrowed DLTensor, its values, and a copy and a cast of
 * it (both must come out row-major with the same values). */
static void check_view(dlb_tensor *base, const int64_t *shape, const int64_t *strides,
                       int32_t ndim, int64_t offset, const float *want, bool contiguous) {
    int64_t n = 1;
    for (int32_t i = 0; i < ndim; i++) n *= shape[i];
    dlb_tensor *v = POISON;
    CHECK_EQ(dlb_tensor_view(base, shape, strides, ndim, offset, &v), DLB_OK);
    if (!VALID(v)) {
        printf("  (view with offset %lld failed: %s)\n", (long long)offset, dlb_last_error());
        return;
    }
    const DLTensor *d = dlb_tensor_dltensor(v);
    CHECK(shape_is(d, shape, ndim));
    if (strides != NULL)
        CHECK(strides_are(d, strides, ndim));
    else
        CHECK(is_row_major(d));
    CHECK_EQ(d->byte_offset, 0);
    CHECK(dtype_is(d->dtype, F32));
    /* data points at the first element */
    CHECK(d->data == (const char *)data_of(base) + offset * 4);
    CHECK(values_are(d, want, n));
    CHECK(dlb_tensor_is_contiguous(v) == contiguous);
    if (n > 0) CHECK(dlb_tensor_shares_memory(v, base));

    dlb_tensor *c = POISON;
    CHECK_EQ(dlb_tensor_copy(v, &c), DLB_OK);
    if (VALID(c)) {
        CHECK(is_row_major(dlb_tensor_dltensor(c)));
        CHECK(shape_is(dlb_tensor_dltensor(c), shape, ndim));
        CHECK(tensor_values_are(c, want, n));
        CHECK(!dlb_tensor_shares_memory(c, base));
        dlb_tensor_free(c);
    }
    double want64[64];
    for (int64_t i = 0; i < n; i++) want64[i] = want[i];
    dlb_tensor *c64 = POISON;
    CHECK_EQ(dlb_tensor_cast(v, F64, &c64), DLB_OK);
    if (VALID(c64)) {
        CHECK(is_row_major(dlb_tensor_dltensor(c64)));
        CHECK(tensor_values_are(c64, want64, n));
        dlb_tensor_free(c64);
    }
    dlb_tensor_free(v);
}

static void test_views(void) {
    int64_t live0 = dlb_live_allocations();
    const int64_t shape[2] = {2, 3};
    dlb_tensor *t = iota_f32(shape, 2); /* [[0,1,2],[3,4,5]] */

    {   /* transpose */
        const int64_t s[2] = {3, 2}, st[2] = {1, 3};
        const float w[6] = {0, 3, 1, 4, 2, 5};
        check_view(t, s, st, 2, 0, w, false);
    }
    {   /* reversed, 1-d */
        const int64_t s[1] = {3}, st[1] = {-1};
        const float w[3] = {2, 1, 0};
        check_view(t, s, st, 1, 2, w, false);
    }
    {   /* reversed in both dimensions */
        const int64_t s[2] = {2, 3}, st[2] = {-3, -1};
        const float w[6] = {5, 4, 3, 2, 1, 0};
        check_view(t, s, st, 2, 5, w, false);
    }
    {   /* slice [:, 1:3] */
        const int64_t s[2] = {2, 2}, st[2] = {3, 1};
        const float w[4] = {1, 2, 4, 5};
        check_view(t, s, st, 2, 1, w, false);
    }
    {   /* second row, strides NULL = row-major */
        const int64_t s[2] = {1, 3};
        const float w[3] = {3, 4, 5};
        check_view(t, s, NULL, 2, 3, w, true);
    }
    {   /* broadcast the second row with a zero stride */
        const int64_t s[2] = {4, 3}, st[2] = {0, 1};
        const float w[12] = {3, 4, 5, 3, 4, 5, 3, 4, 5, 3, 4, 5};
        check_view(t, s, st, 2, 3, w, false);
    }
    {   /* 0-d view of one element */
        const float w[1] = {4};
        check_view(t, NULL, NULL, 0, 4, w, true);
    }
    {   /* the whole buffer, flat: the last element touches the end exactly */
        const int64_t s[1] = {6};
        const float w[6] = {0, 1, 2, 3, 4, 5};
        check_view(t, s, NULL, 1, 0, w, true);
    }
    {   /* zero-size view */
        const int64_t s[1] = {0};
        check_view(t, s, NULL, 1, 0, NULL, true);
    }

    /* Zero strides may repeat one element many times. */
    {
        const int64_t s[1] = {1000}, st[1] = {0};
        dlb_tensor *v = POISON;
        CHECK_EQ(dlb_tensor_view(t, s, st, 1, 5, &v), DLB_OK);
        if (VALID(v)) {
            const DLTensor *d = dlb_tensor_dltensor(v);
            bool all5 = true;
            for (int64_t i = 0; i < 1000; i++)
                if (*(const float *)element_at(d, i) != 5.0f) all5 = false;
            CHECK(all5);
            dlb_tensor_free(v);
        }
    }

    /* Writes through a view land in the base. */
    {
        const int64_t s[2] = {2, 2}, st[2] = {3, 1};
        dlb_tensor *v = POISON;
        CHECK_EQ(dlb_tensor_view(t, s, st, 2, 1, &v), DLB_OK);
        if (VALID(v)) {
            float *p = writable(v);
            CHECK(p == (float *)data_of(t) + 1);
            p[4] = 100.0f; /* element (1,1) of the view: 1*3 + 1 past its start = base element 5 */
            CHECK(((const float *)data_of(t))[5] == 100.0f);
            p[4] = 5.0f;
            dlb_tensor_free(v);
        }
    }

    /* A view of a view: offsets are relative to that view's first element, and the reachable
     * memory is still the whole of the original buffer. */
    {
        const int64_t s3[1] = {3}, neg[1] = {-1}, s2[1] = {2}, s1[1] = {1};
        dlb_tensor *v1 = POISON, *v2 = POISON;
        CHECK_EQ(dlb_tensor_view(t, s3, neg, 1, 2, &v1), DLB_OK); /* base elements 2,1,0 */
        if (VALID(v1)) {
            CHECK_EQ(dlb_tensor_view(v1, s2, NULL, 1, 1, &v2), DLB_OK); /* base 3,4 */
            if (VALID(v2)) {
                const float w[2] = {3, 4};
                CHECK(tensor_values_are(v2, w, 2));
                dlb_tensor_free(v2);
            }
            CHECK_EQ(dlb_tensor_view(v1, s1, NULL, 1, 3, &v2), DLB_OK); /* base 5 */
            dlb_tensor_free(v2);
            CHECK_EQ(dlb_tensor_view(v1, s1, NULL, 1, -2, &v2), DLB_OK); /* base 0 */
            if (VALID(v2)) {
                CHECK(*(const float *)data_of(v2) == 0.0f);
                dlb_tensor_free(v2);
            }
            CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v2, dlb_tensor_view(v1, s1, NULL, 1, -3, &v2));
            CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v2, dlb_tensor_view(v1, s1, NULL, 1, 4, &v2));
            dlb_tensor_free(v1);
        }
    }

    /* Out of bounds, each refused with a message and *out = NULL. */
    {
        dlb_tensor *v;
        const int64_t s7[1] = {7}, s1[1] = {1}, s2[1] = {2}, s3[1] = {3};
        const int64_t neg1[1] = {-1}, six[1] = {6}, big[1] = {INT64_MAX}, small[1] = {INT64_MIN};
        const int64_t s23[2] = {2, 3};
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(t, s7, NULL, 1, 0, &v));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(t, s23, NULL, 2, 1, &v));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(t, s1, NULL, 1, 6, &v));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(t, s1, NULL, 1, -1, &v));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(t, s1, NULL, 1, INT64_MIN, &v));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(t, s1, NULL, 1, INT64_MAX, &v));
        /* negative stride walking off the front: elements 1, 0, -1 */
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(t, s3, neg1, 1, 1, &v));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(t, s2, six, 1, 0, &v));
        /* strides whose products overflow must not wrap around into bounds */
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(t, s2, big, 1, 0, &v));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(t, s2, small, 1, 5, &v));

        /* negative extent, ndim out of range, NULL shape */
        const int64_t negshape[1] = {-1}, negshape2[2] = {2, -1}, st11[2] = {1, 1};
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(t, negshape, NULL, 1, 0, &v));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(t, negshape2, st11, 2, 0, &v));
        int64_t ones[65];
        for (int i = 0; i < 65; i++) ones[i] = 1;
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(t, ones, NULL, 65, 0, &v));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(t, ones, NULL, -1, 0, &v));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(t, NULL, NULL, 1, 0, &v));
        /* 64 dimensions of extent 1 are fine */
        CHECK_EQ(dlb_tensor_view(t, ones, NULL, 64, 0, &v), DLB_OK);
        dlb_tensor_free(v);
    }
    dlb_tensor_free(t);

    /* Reach is the bytes asked for, not the rounded-up (256-byte) allocation. */
    {
        const int64_t s3[1] = {3}, s4[1] = {4};
        dlb_tensor *small = iota_f32(s3, 1), *v;
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(small, s4, NULL, 1, 0, &v));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(small, NULL, NULL, 0, 3, &v));
        dlb_tensor_free(small);
    }

    /* A 0-d base reaches exactly one element. */
    {
        const int64_t s1[1] = {1}, s2[1] = {2};
        const float one[1] = {7};
        dlb_tensor *scalar = make(F32, NULL, 0, one), *v;
        CHECK_EQ(dlb_tensor_view(scalar, s1, NULL, 1, 0, &v), DLB_OK);
        if (VALID(v)) {
            CHECK(tensor_values_are(v, one, 1));
            dlb_tensor_free(v);
        }
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(scalar, s2, NULL, 1, 0, &v));
        dlb_tensor_free(scalar);
    }
    CHECK_LIVE(live0);
}

/* cast src (holding n values of type `from`) to `to` and compare with `want`. */
static void check_cast(DLDataType from, const void *src, DLDataType to, const void *want,
                       int64_t n) {
    const int64_t shape[1] = {n};
    dlb_tensor *t = make(from, shape, 1, src), *c = POISON;
    CHECK_EQ(dlb_tensor_cast(t, to, &c), DLB_OK);
    if (VALID(c)) {
        const DLTensor *d = dlb_tensor_dltensor(c);
        CHECK(dtype_is(d->dtype, to));
        CHECK(shape_is(d, shape, 1));
        CHECK(is_row_major(d));
        CHECK(memcmp(d->data, want, (size_t)n * elem_size(to)) == 0);
        CHECK(!dlb_tensor_shares_memory(c, t));
        CHECK(!dlb_tensor_is_read_only(c));
        dlb_tensor_free(c);
    } else {
        printf("  (cast %d/%d -> %d/%d failed: %s)\n", from.code, from.bits, to.code, to.bits,
               dlb_last_error());
    }
    dlb_tensor_free(t);
}

static void test_cast(void) {
    int64_t live0 = dlb_live_allocations();
    {
        const float a[4] = {1.5f, -2.0f, 3.25f, 0.0f};
        const double w[4] = {1.5, -2.0, 3.25, 0.0};
        check_cast(F32, a, F64, w, 4);
        check_cast(F32, a, F32, a, 4); /* same dtype: a plain copy */
    }
    {
        const int32_t a[4] = {-3, 0, 7, 100000};
        const float w[4] = {-3.0f, 0.0f, 7.0f, 100000.0f};
        check_cast(I32, a, F32, w, 4);
    }
    {
        const double a[4] = {1.0, -2.0, 100.0, -128.0};
        const int8_t w[4] = {1, -2, 100, -128};
        check_cast(F64, a, I8, w, 4);
    }
    {
        const int64_t a[2] = {-5, INT64_C(1) << 40};
        const double w[2] = {-5.0, 1099511627776.0};
        check_cast(I64, a, F64, w, 2);
    }
    {
        const uint8_t a[3] = {0, 200, 255};
        const int32_t w[3] = {0, 200, 255};
        check_cast(U8, a, I32, w, 3);
    }
    {   /* float -> bool: non-zero is true; -0.0 is zero */
        const float a[4] = {0.0f, 1.5f, -0.0f, -3.0f};
        const uint8_t w[4] = {0, 1, 0, 1};
        check_cast(F32, a, BOOL, w, 4);
    }
    {   /* bool -> int and float */
        const uint8_t a[3] = {1, 0, 1};
        const int32_t wi[3] = {1, 0, 1};
        const float wf[3] = {1.0f, 0.0f, 1.0f};
        check_cast(BOOL, a, I32, wi, 3);
        check_cast(BOOL, a, F32, wf, 3);
    }
    {   /* half precision, with exactly representable values */
        const float a[3] = {1.0f, -2.5f, 0.5f};
        const double ad[3] = {1.0, -2.5, 0.5};
        const uint16_t h[3] = {0x3C00, 0xC100, 0x3800};
        const uint16_t bf[3] = {0x3F80, 0xC020, 0x3F00};
        check_cast(F32, a, F16, h, 3);
        check_cast(F32, a, BF16, bf, 3);
        check_cast(F64, ad, F16, h, 3);
        check_cast(F16, h, F32, a, 3);
        check_cast(BF16, bf, F32, a, 3);
        check_cast(BF16, bf, F64, ad, 3);
        check_cast(F16, h, BF16, bf, 3);
    }
    {   /* real -> complex fills the imaginary part with zero */
        const float a[2] = {1.5f, -2.0f};
        const float w[4] = {1.5f, 0.0f, -2.0f, 0.0f};
        const double w128[4] = {1.5, 0.0, -2.0, 0.0};
        check_cast(F32, a, C64, w, 2);
        check_cast(C64, w, C128, w128, 2);
    }
    {   /* 0-d */
        const float a[1] = {2.5f};
        const double w[1] = {2.5};
        dlb_tensor *t = make(F32, NULL, 0, a), *c = POISON;
        CHECK_EQ(dlb_tensor_cast(t, F64, &c), DLB_OK);
        if (VALID(c)) {
            CHECK_EQ(dlb_tensor_dltensor(c)->ndim, 0);
            CHECK(tensor_values_are(c, w, 1));
            dlb_tensor_free(c);
        }
        dlb_tensor_free(t);
    }
    {   /* refusals */
        const int64_t shape[1] = {2};
        const float z[4] = {1, 2, 3, 4};
        dlb_tensor *c64 = make(C64, shape, 1, z), *c128 = POISON, *f = make(F32, shape, 1, z);
        CHECK_EQ(dlb_tensor_zeros(shape, 1, C128, CPU, &c128), DLB_OK);
        dlb_tensor *out;
        CHECK_FAILS(DLB_ERR_UNSUPPORTED, out, dlb_tensor_cast(c64, F32, &out));
        CHECK_FAILS(DLB_ERR_UNSUPPORTED, out, dlb_tensor_cast(c64, I32, &out));
        CHECK_FAILS(DLB_ERR_UNSUPPORTED, out, dlb_tensor_cast(c128, F64, &out));
        /* float8 is a valid DLPack type, but not one cast converts */
        CHECK_FAILS(DLB_ERR_UNSUPPORTED, out, dlb_tensor_cast(f, dtype(kDLFloat8_e4m3fn, 8, 1), &out));
        /* not a dtype at all */
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_cast(f, dtype(99, 32, 1), &out));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_cast(f, dtype(kDLFloat, 32, 0), &out));
        dlb_tensor_free(c64);
        dlb_tensor_free(c128);
        dlb_tensor_free(f);
    }
    CHECK_LIVE(live0);
}

/* Wrapping caller memory; the release callback runs exactly once, after the last user. */
static void test_from_data(void) {
    int64_t live0 = dlb_live_allocations();
    const int64_t shape[2] = {2, 3};
    release_ctx r;

    /* Release after the export deleter, which runs after every dlb_tensor_free. */
    {
        float *buf = float_buffer(6);
        release_init(&r, buf);
        dlb_tensor *t = POISON, *a = POISON, *v = POISON;
        CHECK_EQ(dlb_tensor_from_data(buf, shape, NULL, 2, F32, CPU, false, release_cb, &r, &t),
                 DLB_OK);
        CHECK_EQ(dlb_live_allocations(), live0 + 1);
        const DLTensor *d = dlb_tensor_dltensor(t);
        CHECK(d->data == buf);
        CHECK(is_row_major(d));
        CHECK_EQ(d->byte_offset, 0);
        CHECK(!dlb_tensor_is_read_only(t));
        CHECK(writable(t) == buf);
        const int64_t row[1] = {3};
        CHECK_EQ(dlb_tensor_alias(t, &a), DLB_OK);
        CHECK_EQ(dlb_tensor_view(t, row, NULL, 1, 3, &v), DLB_OK);
        DLManagedTensorVersioned *ev = POISON;
        DLManagedTensor *el = POISON;
        CHECK_EQ(dlb_tensor_to_dlpack_versioned(t, false, &ev), DLB_OK);
        CHECK_EQ(dlb_tensor_to_dlpack(v, &el), DLB_OK);
        dlb_tensor_free(t);
        dlb_tensor_free(a);
        dlb_tensor_free(v);
        CHECK_EQ(atomic_load(&r.calls), 0);
        CHECK_EQ(dlb_live_allocations(), live0 + 1);
        const float w3[3] = {3, 4, 5};
        CHECK(values_are(&el->dl_tensor, w3, 3)); /* still readable */
        el->deleter(el);
        CHECK_EQ(atomic_load(&r.calls), 0);
        CHECK(((const float *)ev->dl_tensor.data)[5] == 5.0f);
        ev->deleter(ev);
        CHECK_EQ(atomic_load(&r.calls), 1);
        CHECK_LIVE(live0);
    }

    /* Release after the last dlb_tensor_free, the export having gone first. */
    {
        float *buf = float_buffer(6);
        release_init(&r, buf);
        dlb_tensor *t = POISON, *a = POISON;
        CHECK_EQ(dlb_tensor_from_data(buf, shape, NULL, 2, F32, CPU, false, release_cb, &r, &t),
                 DLB_OK);
        DLManagedTensorVersioned *ev = POISON;
        CHECK_EQ(dlb_tensor_to_dlpack_versioned(t, false, &ev), DLB_OK);
        ev->deleter(ev);
        CHECK_EQ(dlb_tensor_alias(t, &a), DLB_OK);
        dlb_tensor_free(t);
        CHECK_EQ(atomic_load(&r.calls), 0);
        dlb_tensor_free(a);
        CHECK_EQ(atomic_load(&r.calls), 1);
        CHECK_LIVE(live0);
    }

    /* A copy does not hold the wrapped memory. */
    {
        float *buf = float_buffer(6);
        release_init(&r, buf);
        dlb_tensor *t = POISON, *c = POISON;
        CHECK_EQ(dlb_tensor_from_data(buf, shape, NULL, 2, F32, CPU, false, release_cb, &r, &t),
                 DLB_OK);
        CHECK_EQ(dlb_tensor_copy(t, &c), DLB_OK);
        dlb_tensor_free(t);
        CHECK_EQ(atomic_load(&r.calls), 1);
        const float w[6] = {0, 1, 2, 3, 4, 5};
        CHECK(tensor_values_are(c, w, 6));
        dlb_tensor_free(c);
        CHECK_LIVE(live0);
    }

    /* Caller-given strides: column-major 2x3. */
    {
        float *buf = float_buffer(6);
        release_init(&r, buf);
        const int64_t colmajor[2] = {1, 2};
        dlb_tensor *t = POISON, *c = POISON;
        CHECK_EQ(dlb_tensor_from_data(buf, shape, colmajor, 2, F32, CPU, false, release_cb, &r,
                                      &t),
                 DLB_OK);
        CHECK(strides_are(dlb_tensor_dltensor(t), colmajor, 2));
        CHECK(!dlb_tensor_is_contiguous(t));
        CHECK_EQ(dlb_tensor_copy(t, &c), DLB_OK);
        const float w[6] = {0, 2, 4, 1, 3, 5};
        CHECK(tensor_values_are(c, w, 6));
        CHECK(is_row_major(dlb_tensor_dltensor(c)));
        dlb_tensor_free(c);
        dlb_tensor_free(t);
        CHECK_EQ(atomic_load(&r.calls), 1);
    }

    /* Negative strides: data points at the first element, the reach extends backwards. */
    {
        float *buf = float_buffer(3);
        release_init(&r, buf);
        const int64_t s3[1] = {3}, neg[1] = {-1}, s1[1] = {1};
        dlb_tensor *t = POISON, *v = POISON;
        CHECK_EQ(dlb_tensor_from_data(buf + 2, s3, neg, 1, F32, CPU, false, release_cb, &r, &t),
                 DLB_OK);
        const float w[3] = {2, 1, 0};
        CHECK(tensor_values_are(t, w, 3));
        CHECK_EQ(dlb_tensor_view(t, s1, NULL, 1, -2, &v), DLB_OK); /* buf[0] */
        if (VALID(v)) {
            CHECK(data_of(v) == buf);
            dlb_tensor_free(v);
        }
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(t, s1, NULL, 1, 1, &v));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(t, s1, NULL, 1, -3, &v));
        dlb_tensor_free(t);
        CHECK_EQ(atomic_load(&r.calls), 1);
    }

    /* 0-d, shape NULL. */
    {
        float *buf = float_buffer(1);
        buf[0] = 9.0f;
        release_init(&r, buf);
        dlb_tensor *t = POISON;
        CHECK_EQ(dlb_tensor_from_data(buf, NULL, NULL, 0, F32, CPU, false, release_cb, &r, &t),
                 DLB_OK);
        const float w[1] = {9};
        CHECK_EQ(dlb_tensor_dltensor(t)->ndim, 0);
        CHECK(tensor_values_are(t, w, 1));
        dlb_tensor_free(t);
        CHECK_EQ(atomic_load(&r.calls), 1);
    }

    /* Zero elements with data NULL is allowed, and release still runs once. */
    {
        release_init(&r, NULL);
        const int64_t zero[1] = {0};
        dlb_tensor *t = POISON;
        CHECK_EQ(dlb_tensor_from_data(NULL, zero, NULL, 1, F32, CPU, false, release_cb, &r, &t),
                 DLB_OK);
        dlb_tensor_free(t);
        CHECK_EQ(atomic_load(&r.calls), 1);
    }

    /* release may be NULL. */
    {
        float *buf = float_buffer(6);
        dlb_tensor *t = POISON;
        CHECK_EQ(dlb_tensor_from_data(buf, shape, NULL, 2, F32, CPU, false, NULL, NULL, &t),
                 DLB_OK);
        CHECK_EQ(dlb_live_allocations(), live0 + 1);
        dlb_tensor_free(t);
        CHECK_LIVE(live0);
        free(buf);
    }

    /* Failures never call release and never count an allocation. */
    {
        float *buf = float_buffer(6);
        release_init(&r, NULL); /* the callback must not free buf here */
        dlb_tensor *t;
        const int64_t negshape[2] = {2, -3};
        int64_t ones[65];
        for (int i = 0; i < 65; i++) ones[i] = 1;
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, t,
                    dlb_tensor_from_data(buf, negshape, NULL, 2, F32, CPU, false, release_cb, &r,
                                         &t));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, t,
                    dlb_tensor_from_data(NULL, shape, NULL, 2, F32, CPU, false, release_cb, &r, &t));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, t,
                    dlb_tensor_from_data(buf, ones, NULL, 65, F32, CPU, false, release_cb, &r, &t));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, t,
                    dlb_tensor_from_data(buf, ones, NULL, -1, F32, CPU, false, release_cb, &r, &t));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, t,
                    dlb_tensor_from_data(buf, NULL, NULL, 2, F32, CPU, false, release_cb, &r, &t));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, t,
                    dlb_tensor_from_data(buf, shape, NULL, 2, dtype(99, 32, 1), CPU, false,
                                         release_cb, &r, &t));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, t,
                    dlb_tensor_from_data(buf, shape, NULL, 2, dtype(kDLFloat, 32, 0), CPU, false,
                                         release_cb, &r, &t));
        CHECK_EQ(dlb_tensor_from_data(buf, shape, NULL, 2, F32, CPU, false, release_cb, &r, NULL),
                 DLB_ERR_INVALID_ARGUMENT);
        CHECK_EQ(atomic_load(&r.calls), 0);
        CHECK_LIVE(live0);
        free(buf);
    }
    CHECK_LIVE(live0);
}

static void test_read_only(void) {
    int64_t live0 = dlb_live_allocations();
    const int64_t shape[2] = {2, 3};
    const float w[6] = {0, 1, 2, 3, 4, 5};
    release_ctx r;
    float *buf = float_buffer(6);
    release_init(&r, buf);
    dlb_tensor *t = POISON;
    CHECK_EQ(dlb_tensor_from_data(buf, shape, NULL, 2, F32, CPU, true, release_cb, &r, &t),
             DLB_OK);
    CHECK(dlb_tensor_is_read_only(t));
    void *p;
    CHECK_FAILS(DLB_ERR_READ_ONLY, p, dlb_tensor_data_mut(t, &p));
    DLManagedTensor *el;
    CHECK_FAILS(DLB_ERR_READ_ONLY, el, dlb_tensor_to_dlpack(t, &el));

    /* Versioned export without copy shares and says READ_ONLY. */
    DLManagedTensorVersioned *ev = POISON;
    CHECK_EQ(dlb_tensor_to_dlpack_versioned(t, false, &ev), DLB_OK);
    if (VALID(ev)) {
        CHECK(ev->flags & DLPACK_FLAG_BITMASK_READ_ONLY);
        CHECK(!(ev->flags & DLPACK_FLAG_BITMASK_IS_COPIED));
        CHECK(ev->dl_tensor.data == buf);
    }
    /* With copy: fresh writable memory. */
    DLManagedTensorVersioned *ec = POISON;
    CHECK_EQ(dlb_tensor_to_dlpack_versioned(t, true, &ec), DLB_OK);
    if (VALID(ec)) {
        CHECK(ec->flags & DLPACK_FLAG_BITMASK_IS_COPIED);
        CHECK(!(ec->flags & DLPACK_FLAG_BITMASK_READ_ONLY));
        CHECK(ec->dl_tensor.data != buf);
        CHECK(values_are(&ec->dl_tensor, w, 6));
        ((float *)ec->dl_tensor.data)[0] = 1.0f; /* ours to write */
        ec->deleter(ec);
    }

    /* alias and view stay read-only; copy, cast and to_device give writable memory. */
    dlb_tensor *a = POISON, *v = POISON, *c = POISON, *k = POISON, *dv = POISON;
    const int64_t row[1] = {3};
    CHECK_EQ(dlb_tensor_alias(t, &a), DLB_OK);
    CHECK_EQ(dlb_tensor_view(t, row, NULL, 1, 3, &v), DLB_OK);
    CHECK(dlb_tensor_is_read_only(a));
    CHECK(dlb_tensor_is_read_only(v));
    CHECK_FAILS(DLB_ERR_READ_ONLY, p, dlb_tensor_data_mut(a, &p));
    CHECK_FAILS(DLB_ERR_READ_ONLY, p, dlb_tensor_data_mut(v, &p));
    CHECK_FAILS(DLB_ERR_READ_ONLY, el, dlb_tensor_to_dlpack(v, &el));
    CHECK_EQ(dlb_tensor_copy(t, &c), DLB_OK);
    CHECK_EQ(dlb_tensor_cast(v, F64, &k), DLB_OK);
    CHECK_EQ(dlb_tensor_to_device(t, CPU, &dv), DLB_OK);
    dlb_tensor *writables[3] = {c, k, dv};
    for (int i = 0; i < 3; i++) {
        if (!VALID(writables[i])) continue;
        CHECK(!dlb_tensor_is_read_only(writables[i]));
        p = POISON;
        CHECK_EQ(dlb_tensor_data_mut(writables[i], &p), DLB_OK);
        CHECK(p != NULL && p != POISON && p != buf);
        CHECK(!dlb_tensor_shares_memory(writables[i], t));
    }
    if (VALID(c)) CHECK(tensor_values_are(c, w, 6));

    /* Re-importing the read-only export gives a read-only tensor. */
    dlb_tensor *back = POISON;
    if (VALID(ev)) CHECK_EQ(dlb_tensor_from_dlpack_versioned(ev, &back), DLB_OK);
    if (VALID(back)) {
        CHECK(dlb_tensor_is_read_only(back));
        CHECK_FAILS(DLB_ERR_READ_ONLY, p, dlb_tensor_data_mut(back, &p));
        CHECK(data_of(back) == buf);
    }

    dlb_tensor_free(t);
    dlb_tensor_free(a);
    dlb_tensor_free(v);
    dlb_tensor_free(c);
    dlb_tensor_free(k);
    dlb_tensor_free(dv);
    CHECK_EQ(atomic_load(&r.calls), 0);
    dlb_tensor_free(back);
    CHECK_EQ(atomic_load(&r.calls), 1);
    CHECK_LIVE(live0);
}

static void check_versioned_header(const DLManagedTensorVersioned *m) {
    CHECK_EQ(m->version.major, 1);
    CHECK_EQ(m->version.minor, 3);
    CHECK(m->deleter != NULL);
    CHECK_EQ(m->dl_tensor.byte_offset, 0);
    CHECK(m->dl_tensor.ndim == 0 || m->dl_tensor.strides != NULL);
}

static void *call_versioned_deleter(void *arg) {
    DLManagedTensorVersioned *m = arg;
    m->deleter(m);
    return NULL;
}

static void *call_legacy_deleter(void *arg) {
    DLManagedTensor *m = arg;
    m->deleter(m);
    return NULL;
}

static void test_exports(void) {
    int64_t live0 = dlb_live_allocations();
    const int64_t shape[2] = {2, 3}, rm[2] = {3, 1};
    const float w[6] = {0, 1, 2, 3, 4, 5};
    dlb_tensor *t = iota_f32(shape, 2);
    float *td = data_of(t);

    /* Versioned, shared. */
    DLManagedTensorVersioned *ev = POISON;
    CHECK_EQ(dlb_tensor_to_dlpack_versioned(t, false, &ev), DLB_OK);
    if (VALID(ev)) {
        check_versioned_header(ev);
        CHECK(!(ev->flags & DLPACK_FLAG_BITMASK_READ_ONLY));
        CHECK(!(ev->flags & DLPACK_FLAG_BITMASK_IS_COPIED));
        CHECK(ev->dl_tensor.data == td);
        CHECK(shape_is(&ev->dl_tensor, shape, 2));
        CHECK(strides_are(&ev->dl_tensor, rm, 2));
        CHECK(dtype_is(ev->dl_tensor.dtype, F32));
        CHECK_EQ(ev->dl_tensor.device.device_type, kDLCPU);
        CHECK_EQ(ev->dl_tensor.device.device_id, 0);
        ((float *)writable(t))[1] = 7.0f;
        CHECK(((const float *)ev->dl_tensor.data)[1] == 7.0f);
        ((float *)ev->dl_tensor.data)[2] = 8.0f;
        CHECK(td[2] == 8.0f);
        td[1] = 1.0f;
        td[2] = 2.0f;
        ev->deleter(ev);
    }

    /* Versioned, copied. */
    DLManagedTensorVersioned *ec = POISON;
    CHECK_EQ(dlb_tensor_to_dlpack_versioned(t, true, &ec), DLB_OK);
    if (VALID(ec)) {
        check_versioned_header(ec);
        CHECK(ec->flags & DLPACK_FLAG_BITMASK_IS_COPIED);
        CHECK(!(ec->flags & DLPACK_FLAG_BITMASK_READ_ONLY));
        CHECK(ec->dl_tensor.data != td);
        CHECK(strides_are(&ec->dl_tensor, rm, 2));
        CHECK(values_are(&ec->dl_tensor, w, 6));
        td[0] = 50.0f;
        CHECK(((const float *)ec->dl_tensor.data)[0] == 0.0f);
        td[0] = 0.0f;
        ec->deleter(ec);
    }

    /* Legacy, shared. */
    DLManagedTensor *el = POISON;
    CHECK_EQ(dlb_tensor_to_dlpack(t, &el), DLB_OK);
    if (VALID(el)) {
        CHECK(el->deleter != NULL);
        CHECK_EQ(el->dl_tensor.byte_offset, 0);
        CHECK(el->dl_tensor.data == td);
        CHECK(shape_is(&el->dl_tensor, shape, 2));
        CHECK(strides_are(&el->dl_tensor, rm, 2));
        CHECK(dtype_is(el->dl_tensor.dtype, F32));
        ((float *)el->dl_tensor.data)[3] = 30.0f;
        CHECK(td[3] == 30.0f);
        td[3] = 3.0f;
        el->deleter(el);
    }

    /* Exports of views: data points at the view's first element, byte_offset stays 0. */
    {
        const int64_t s3[1] = {3}, neg[1] = {-1}, ts[2] = {3, 2}, tst[2] = {1, 3};
        const float wt[6] = {0, 3, 1, 4, 2, 5};
        dlb_tensor *rev = POISON, *tr = POISON;
        CHECK_EQ(dlb_tensor_view(t, s3, neg, 1, 4, &rev), DLB_OK); /* 4, 3, 2 */
        CHECK_EQ(dlb_tensor_view(t, ts, tst, 2, 0, &tr), DLB_OK);
        DLManagedTensorVersioned *m = POISON;
        CHECK_EQ(dlb_tensor_to_dlpack_versioned(rev, false, &m), DLB_OK);
        if (VALID(m)) {
            check_versioned_header(m);
            CHECK(m->dl_tensor.data == td + 4);
            CHECK(strides_are(&m->dl_tensor, neg, 1));
            const float wr[3] = {4, 3, 2};
            CHECK(values_are(&m->dl_tensor, wr, 3));
            m->deleter(m);
        }
        DLManagedTensor *l = POISON;
        CHECK_EQ(dlb_tensor_to_dlpack(rev, &l), DLB_OK);
        if (VALID(l)) {
            CHECK_EQ(l->dl_tensor.byte_offset, 0);
            CHECK(l->dl_tensor.data == td + 4);
            CHECK(strides_are(&l->dl_tensor, neg, 1));
            l->deleter(l);
        }
        CHECK_EQ(dlb_tensor_to_dlpack_versioned(tr, false, &m), DLB_OK);
        if (VALID(m)) {
            CHECK(m->dl_tensor.data == td);
            CHECK(strides_are(&m->dl_tensor, tst, 2));
            CHECK(values_are(&m->dl_tensor, wt, 6));
            m->deleter(m);
        }
        /* A copied export of a strided view is row-major. */
        CHECK_EQ(dlb_tensor_to_dlpack_versioned(tr, true, &m), DLB_OK);
        if (VALID(m)) {
            const int64_t trm[2] = {2, 1};
            CHECK(m->flags & DLPACK_FLAG_BITMASK_IS_COPIED);
            CHECK(strides_are(&m->dl_tensor, trm, 2));
            CHECK(shape_is(&m->dl_tensor, ts, 2));
            CHECK(values_are(&m->dl_tensor, wt, 6));
            m->deleter(m);
        }
        dlb_tensor_free(rev);
        dlb_tensor_free(tr);
    }

    /* 0-d and zero-size exports. */
    {
        const float one[1] = {6};
        const int64_t zero[1] = {0};
        dlb_tensor *s = make(F32, NULL, 0, one), *z = POISON;
        CHECK_EQ(dlb_tensor_zeros(zero, 1, F32, CPU, &z), DLB_OK);
        DLManagedTensorVersioned *m = POISON;
        CHECK_EQ(dlb_tensor_to_dlpack_versioned(s, false, &m), DLB_OK);
        if (VALID(m)) {
            check_versioned_header(m);
            CHECK_EQ(m->dl_tensor.ndim, 0);
            CHECK(values_are(&m->dl_tensor, one, 1));
            m->deleter(m);
        }
        CHECK_EQ(dlb_tensor_to_dlpack_versioned(z, false, &m), DLB_OK);
        if (VALID(m)) {
            check_versioned_header(m);
            CHECK(shape_is(&m->dl_tensor, zero, 1));
            m->deleter(m);
        }
        DLManagedTensor *l = POISON;
        CHECK_EQ(dlb_tensor_to_dlpack(z, &l), DLB_OK);
        if (VALID(l)) l->deleter(l);
        dlb_tensor_free(s);
        dlb_tensor_free(z);
    }
    dlb_tensor_free(t);
    CHECK_LIVE(live0);

    /* Exports keep the memory alive after every handle is gone. */
    {
        const int64_t s4[1] = {4};
        const float w4[4] = {0, 1, 2, 3};
        dlb_tensor *u = iota_f32(s4, 1);
        DLManagedTensorVersioned *m = POISON;
        DLManagedTensor *l = POISON;
        CHECK_EQ(dlb_tensor_to_dlpack_versioned(u, false, &m), DLB_OK);
        CHECK_EQ(dlb_tensor_to_dlpack(u, &l), DLB_OK);
        dlb_tensor_free(u);
        CHECK_EQ(dlb_live_allocations(), live0 + 1);
        if (VALID(m)) {
            CHECK(values_are(&m->dl_tensor, w4, 4));
            m->deleter(m);
        }
        CHECK_EQ(dlb_live_allocations(), live0 + 1);
        if (VALID(l)) {
            CHECK(values_are(&l->dl_tensor, w4, 4));
            l->deleter(l);
        }
        CHECK_LIVE(live0);
    }

    /* Deleters called from another thread, after the tensor is gone: release runs once. */
    {
        release_ctx r;
        float *buf = float_buffer(6);
        release_init(&r, buf);
        dlb_tensor *u = POISON;
        CHECK_EQ(dlb_tensor_from_data(buf, shape, NULL, 2, F32, CPU, false, release_cb, &r, &u),
                 DLB_OK);
        DLManagedTensorVersioned *m = POISON;
        DLManagedTensor *l = POISON;
        CHECK_EQ(dlb_tensor_to_dlpack_versioned(u, false, &m), DLB_OK);
        CHECK_EQ(dlb_tensor_to_dlpack(u, &l), DLB_OK);
        dlb_tensor_free(u);
        pthread_t th;
        if (VALID(m)) {
            CHECK_EQ(pthread_create(&th, NULL, call_versioned_deleter, m), 0);
            CHECK_EQ(pthread_join(th, NULL), 0);
        }
        CHECK_EQ(atomic_load(&r.calls), 0);
        if (VALID(l)) {
            CHECK_EQ(pthread_create(&th, NULL, call_legacy_deleter, l), 0);
            CHECK_EQ(pthread_join(th, NULL), 0);
        }
        CHECK_EQ(atomic_load(&r.calls), 1);
        CHECK_LIVE(live0);
    }
    CHECK_LIVE(live0);
}

/* ---- imports: managed tensors built by hand, as a foreign producer would ---- */

/* One foreign tensor. The deleter frees the buffer and the struct (as DLPack requires) and
 * counts. Both managed structs are filled; a test hands out one of them. */
typedef struct {
    DLManagedTensorVersioned v;
    DLManagedTensor l;
    int64_t shape[70];
    int64_t strides[70];
    float *buf;
} foreign;

static atomic_int foreign_deleted;

static void foreign_destroy(foreign *f) {
    free(f->buf);
    free(f);
    atomic_fetch_add(&foreign_deleted, 1);
}
static void foreign_deleter_v(DLManagedTensorVersioned *self) { foreign_destroy(self->manager_ctx); }
static void foreign_deleter_l(DLManagedTensor *self) { foreign_destroy(self->manager_ctx); }

/* A valid 2x3 float32 tensor holding 0..5 with row-major strides, DLPack 1.3, CPU.
 * Tests break one field at a time. */
static foreign *foreign_new(void) {
    foreign *f = calloc(1, sizeof *f);
    f->buf = float_buffer(8);
    f->shape[0] = 2;
    f->shape[1] = 3;
    for (int i = 2; i < 70; i++) f->shape[i] = 1;
    f->strides[0] = 3;
    f->strides[1] = 1;
    for (int i = 2; i < 70; i++) f->strides[i] = 1;
    DLTensor d;
    memset(&d, 0, sizeof d);
    d.data = f->buf;
    d.device = CPU;
    d.ndim = 2;
    d.dtype = F32;
    d.shape = f->shape;
    d.strides = f->strides;
    d.byte_offset = 0;
    f->v.version.major = 1;
    f->v.version.minor = 3;
    f->v.manager_ctx = f;
    f->v.deleter = foreign_deleter_v;
    f->v.flags = 0;
    f->v.dl_tensor = d;
    f->l.dl_tensor = d;
    f->l.manager_ctx = f;
    f->l.deleter = foreign_deleter_l;
    return f;
}

/* Import must refuse: status, message, *out NULL, and the deleter already ran exactly once. */
static void refuse_v(foreign *f, dlb_status want, int line) {
    int before = atomic_load(&foreign_deleted);
    dlb_tensor *t = POISON;
    dlb_status st = dlb_tensor_from_dlpack_versioned(&f->v, &t);
    if (st != want) printf("  (versioned import case at line %d)\n", line);
    CHECK_EQ(st, want);
    CHECK(t == NULL);
    CHECK(error_message_set());
    CHECK_EQ(atomic_load(&foreign_deleted) - before, 1);
    if (st == DLB_OK && VALID(t)) dlb_tensor_free(t);
}

static void refuse_l(foreign *f, dlb_status want, int line) {
    int before = atomic_load(&foreign_deleted);
    dlb_tensor *t = POISON;
    dlb_status st = dlb_tensor_from_dlpack(&f->l, &t);
    if (st != want) printf("  (legacy import case at line %d)\n", line);
    CHECK_EQ(st, want);
    CHECK(t == NULL);
    CHECK(error_message_set());
    CHECK_EQ(atomic_load(&foreign_deleted) - before, 1);
    if (st == DLB_OK && VALID(t)) dlb_tensor_free(t);
}

/* Apply one corruption to both managed structs of a fresh foreign tensor. */
#define BOTH(f, field_assignment)                                                      \
    do {                                                                               \
        DLTensor *d_ = &(f)->v.dl_tensor;                                              \
        field_assignment;                                                              \
        d_ = &(f)->l.dl_tensor;                                                        \
        field_assignment;                                                              \
    } while (0)

static void test_imports(void) {
    int64_t live0 = dlb_live_allocations();
    const float w[6] = {0, 1, 2, 3, 4, 5};
    const int64_t shape[2] = {2, 3};

    /* Versioned success: shares memory; the deleter waits for the last handle and re-export. */
    {
        foreign *f = foreign_new();
        float *buf = f->buf;
        int before = atomic_load(&foreign_deleted);
        dlb_tensor *t = POISON, *a = POISON;
        CHECK_EQ(dlb_tensor_from_dlpack_versioned(&f->v, &t), DLB_OK);
        if (VALID(t)) {
            CHECK_EQ(dlb_live_allocations(), live0 + 1);
            CHECK(data_of(t) == buf);
            CHECK(shape_is(dlb_tensor_dltensor(t), shape, 2));
            CHECK(tensor_values_are(t, w, 6));
            CHECK(!dlb_tensor_is_read_only(t));
            ((float *)writable(t))[2] = 20.0f;
            CHECK(buf[2] == 20.0f);
            CHECK_EQ(dlb_tensor_alias(t, &a), DLB_OK);
            DLManagedTensorVersioned *m = POISON;
            DLManagedTensor *l = POISON;
            CHECK_EQ(dlb_tensor_to_dlpack_versioned(a, false, &m), DLB_OK);
            CHECK_EQ(dlb_tensor_to_dlpack(t, &l), DLB_OK);
            dlb_tensor_free(t);
            dlb_tensor_free(a);
            CHECK_EQ(atomic_load(&foreign_deleted) - before, 0);
            if (VALID(m)) {
                CHECK(((const float *)m->dl_tensor.data)[2] == 20.0f);
                m->deleter(m);
            }
            CHECK_EQ(atomic_load(&foreign_deleted) - before, 0);
            if (VALID(l)) l->deleter(l);
            CHECK_EQ(atomic_load(&foreign_deleted) - before, 1);
        }
        CHECK_LIVE(live0);
    }

    /* Legacy success, NULL strides (row-major), the deleter runs once on free. */
    {
        foreign *f = foreign_new();
        f->l.dl_tensor.strides = NULL;
        int before = atomic_load(&foreign_deleted);
        dlb_tensor *t = POISON;
        CHECK_EQ(dlb_tensor_from_dlpack(&f->l, &t), DLB_OK);
        if (VALID(t)) {
            const DLTensor *d = dlb_tensor_dltensor(t);
            CHECK(d->strides != NULL);
            CHECK(is_row_major(d));
            CHECK(tensor_values_are(t, w, 6));
            CHECK_EQ(dlb_live_allocations(), live0 + 1);
            dlb_tensor_free(t);
        }
        CHECK_EQ(atomic_load(&foreign_deleted) - before, 1);
        CHECK_LIVE(live0);
    }

    /* NULL strides from versioned producers older than 1.2 are accepted. */
    for (uint32_t minor = 0; minor < 2; minor++) {
        foreign *f = foreign_new();
        f->v.version.minor = minor;
        f->v.dl_tensor.strides = NULL;
        int before = atomic_load(&foreign_deleted);
        dlb_tensor *t = POISON;
        CHECK_EQ(dlb_tensor_from_dlpack_versioned(&f->v, &t), DLB_OK);
        if (VALID(t)) {
            CHECK(is_row_major(dlb_tensor_dltensor(t)));
            CHECK(tensor_values_are(t, w, 6));
            dlb_tensor_free(t);
        }
        CHECK_EQ(atomic_load(&foreign_deleted) - before, 1);
    }

    /* byte_offset is honoured: the first element is at data + byte_offset. */
    {
        foreign *f = foreign_new();
        const int64_t s3[1] = {3}, s4[1] = {4};
        f->shape[0] = 3;
        f->strides[0] = 1;
        BOTH(f, (d_->ndim = 1, d_->byte_offset = 2 * sizeof(float)));
        float *buf = f->buf;
        dlb_tensor *t = POISON, *v = POISON;
        CHECK_EQ(dlb_tensor_from_dlpack_versioned(&f->v, &t), DLB_OK);
        if (VALID(t)) {
            const DLTensor *d = dlb_tensor_dltensor(t);
            const float w3[3] = {2, 3, 4};
            CHECK(d->data == buf + 2);
            CHECK_EQ(d->byte_offset, 0);
            CHECK(shape_is(d, s3, 1));
            CHECK(tensor_values_are(t, w3, 3));
            /* The reach of imported memory is what the tensor spans: 3 elements. */
            CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(t, s4, NULL, 1, 0, &v));
            CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, v, dlb_tensor_view(t, NULL, NULL, 0, -1, &v));
            /* An export folds the offset into data. */
            DLManagedTensorVersioned *m = POISON;
            CHECK_EQ(dlb_tensor_to_dlpack_versioned(t, false, &m), DLB_OK);
            if (VALID(m)) {
                CHECK(m->dl_tensor.data == buf + 2);
                CHECK_EQ(m->dl_tensor.byte_offset, 0);
                m->deleter(m);
            }
            dlb_tensor_free(t);
        }
        /* Same through the legacy struct. */
        f = foreign_new();
        f->shape[0] = 3;
        f->strides[0] = 1;
        BOTH(f, (d_->ndim = 1, d_->byte_offset = 2 * sizeof(float)));
        buf = f->buf;
        CHECK_EQ(dlb_tensor_from_dlpack(&f->l, &t), DLB_OK);
        if (VALID(t)) {
            CHECK(data_of(t) == buf + 2);
            dlb_tensor_free(t);
        }
        CHECK_LIVE(live0);
    }

    /* 0-d with shape and strides NULL (versioned 1.3), and zero-size with data NULL. */
    {
        foreign *f = foreign_new();
        f->buf[0] = 11.0f;
        BOTH(f, (d_->ndim = 0, d_->shape = NULL, d_->strides = NULL));
        dlb_tensor *t = POISON;
        CHECK_EQ(dlb_tensor_from_dlpack_versioned(&f->v, &t), DLB_OK);
        if (VALID(t)) {
            const float one[1] = {11};
            CHECK_EQ(dlb_tensor_dltensor(t)->ndim, 0);
            CHECK(tensor_values_are(t, one, 1));
            dlb_tensor_free(t);
        }
        f = foreign_new();
        f->shape[0] = 0;
        BOTH(f, d_->data = NULL);
        CHECK_EQ(dlb_tensor_from_dlpack_versioned(&f->v, &t), DLB_OK);
        if (VALID(t)) {
            CHECK_EQ(dlb_tensor_dltensor(t)->shape[0], 0);
            dlb_tensor_free(t);
        }
        CHECK_LIVE(live0);
    }

    /* The READ_ONLY flag imports as a read-only tensor. */
    {
        foreign *f = foreign_new();
        f->v.flags = DLPACK_FLAG_BITMASK_READ_ONLY;
        dlb_tensor *t = POISON;
        CHECK_EQ(dlb_tensor_from_dlpack_versioned(&f->v, &t), DLB_OK);
        if (VALID(t)) {
            void *p;
            DLManagedTensor *l;
            CHECK(dlb_tensor_is_read_only(t));
            CHECK_FAILS(DLB_ERR_READ_ONLY, p, dlb_tensor_data_mut(t, &p));
            CHECK_FAILS(DLB_ERR_READ_ONLY, l, dlb_tensor_to_dlpack(t, &l));
            DLManagedTensorVersioned *m = POISON;
            CHECK_EQ(dlb_tensor_to_dlpack_versioned(t, false, &m), DLB_OK);
            if (VALID(m)) {
                CHECK(m->flags & DLPACK_FLAG_BITMASK_READ_ONLY);
                m->deleter(m);
            }
            dlb_tensor_free(t);
        }
        CHECK_LIVE(live0);
    }

    /* Refusals. Each consumes the managed tensor: its deleter has run when the call returns. */
    {
        foreign *f;
        f = foreign_new(); f->v.version.major = 2;              refuse_v(f, DLB_ERR_VERSION, __LINE__);
        f = foreign_new(); f->v.version.major = 0;              refuse_v(f, DLB_ERR_VERSION, __LINE__);
        /* NULL strides with ndim > 0 are not allowed from 1.2 on. */
        f = foreign_new(); f->v.version.minor = 2; f->v.dl_tensor.strides = NULL;
        refuse_v(f, DLB_ERR_INVALID_ARGUMENT, __LINE__);
        f = foreign_new(); f->v.dl_tensor.strides = NULL;       refuse_v(f, DLB_ERR_INVALID_ARGUMENT, __LINE__);

        /* Broken fields, through both structs. */
        for (int legacy = 0; legacy < 2; legacy++) {
            void (*refuse)(foreign *, dlb_status, int) = legacy ? refuse_l : refuse_v;
            f = foreign_new(); BOTH(f, d_->ndim = 65);               refuse(f, DLB_ERR_INVALID_ARGUMENT, __LINE__);
            f = foreign_new(); BOTH(f, d_->ndim = -1);               refuse(f, DLB_ERR_INVALID_ARGUMENT, __LINE__);
            f = foreign_new(); BOTH(f, d_->shape = NULL);            refuse(f, DLB_ERR_INVALID_ARGUMENT, __LINE__);
            f = foreign_new(); BOTH(f, d_->data = NULL);             refuse(f, DLB_ERR_INVALID_ARGUMENT, __LINE__);
            f = foreign_new(); f->shape[1] = -3;                     refuse(f, DLB_ERR_INVALID_ARGUMENT, __LINE__);
            f = foreign_new(); BOTH(f, d_->dtype.lanes = 0);         refuse(f, DLB_ERR_INVALID_ARGUMENT, __LINE__);
            f = foreign_new(); BOTH(f, d_->dtype.bits = 0);          refuse(f, DLB_ERR_INVALID_ARGUMENT, __LINE__);
            f = foreign_new(); BOTH(f, d_->dtype.code = 99);         refuse(f, DLB_ERR_INVALID_ARGUMENT, __LINE__);
            f = foreign_new(); BOTH(f, d_->device.device_type = (DLDeviceType)99);
            refuse(f, DLB_ERR_INVALID_ARGUMENT, __LINE__);
            f = foreign_new(); BOTH(f, d_->device.device_id = -1);   refuse(f, DLB_ERR_INVALID_ARGUMENT, __LINE__);
            /* 2^62 * 8 elements of 8 bytes: the byte size overflows 64 bits. */
            f = foreign_new(); f->shape[0] = INT64_C(1) << 62; f->shape[1] = 8;
            f->strides[0] = 8;
            BOTH(f, d_->dtype = F64);                                refuse(f, DLB_ERR_INVALID_ARGUMENT, __LINE__);
        }
        CHECK_LIVE(live0);
    }

    /* mt == NULL. */
    {
        dlb_tensor *t;
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, t, dlb_tensor_from_dlpack_versioned(NULL, &t));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, t, dlb_tensor_from_dlpack(NULL, &t));
    }

    /* out == NULL still consumes mt. */
    {
        foreign *f = foreign_new();
        int before = atomic_load(&foreign_deleted);
        CHECK_EQ(dlb_tensor_from_dlpack_versioned(&f->v, NULL), DLB_ERR_INVALID_ARGUMENT);
        CHECK_EQ(atomic_load(&foreign_deleted) - before, 1);
        f = foreign_new();
        CHECK_EQ(dlb_tensor_from_dlpack(&f->l, NULL), DLB_ERR_INVALID_ARGUMENT);
        CHECK_EQ(atomic_load(&foreign_deleted) - before, 2);
        CHECK_LIVE(live0);
    }

    /* A NULL deleter is tolerated, on success and on failure (the caller frees its memory). */
    {
        foreign *f = foreign_new();
        f->v.deleter = NULL;
        f->l.deleter = NULL;
        dlb_tensor *t = POISON;
        CHECK_EQ(dlb_tensor_from_dlpack_versioned(&f->v, &t), DLB_OK);
        if (VALID(t)) CHECK(tensor_values_are(t, w, 6));
        dlb_tensor_free(t);
        CHECK_EQ(dlb_tensor_from_dlpack(&f->l, &t), DLB_OK);
        dlb_tensor_free(t);
        f->v.dl_tensor.dtype.code = 99;
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, t, dlb_tensor_from_dlpack_versioned(&f->v, &t));
        f->v.version.major = 2;
        CHECK_FAILS(DLB_ERR_VERSION, t, dlb_tensor_from_dlpack_versioned(&f->v, &t));
        free(f->buf);
        free(f);
        CHECK_LIVE(live0);
    }
    CHECK_LIVE(live0);
}

/* dlb -> DLPack -> dlb keeps sharing and does not count a new allocation. */
static void test_roundtrip(void) {
    int64_t live0 = dlb_live_allocations();
    const int64_t shape[2] = {2, 3};
    dlb_tensor *t = iota_f32(shape, 2);
    CHECK_EQ(dlb_live_allocations(), live0 + 1);

    DLManagedTensorVersioned *m = POISON;
    dlb_tensor *back = POISON;
    CHECK_EQ(dlb_tensor_to_dlpack_versioned(t, false, &m), DLB_OK);
    if (VALID(m)) CHECK_EQ(dlb_tensor_from_dlpack_versioned(m, &back), DLB_OK);
    if (VALID(back)) {
        CHECK_EQ(dlb_live_allocations(), live0 + 1);
        CHECK(data_of(back) == data_of(t));
        CHECK(dlb_tensor_shares_memory(t, back));
        ((float *)writable(back))[5] = 55.0f;
        CHECK(((const float *)data_of(t))[5] == 55.0f);
        /* ... and again through the legacy struct, from the re-imported tensor. */
        DLManagedTensor *l = POISON;
        dlb_tensor *back2 = POISON;
        CHECK_EQ(dlb_tensor_to_dlpack(back, &l), DLB_OK);
        if (VALID(l)) CHECK_EQ(dlb_tensor_from_dlpack(l, &back2), DLB_OK);
        CHECK_EQ(dlb_live_allocations(), live0 + 1);
        if (VALID(back2)) {
            CHECK(data_of(back2) == data_of(t));
            dlb_tensor_free(t);
            dlb_tensor_free(back);
            CHECK_EQ(dlb_live_allocations(), live0 + 1);
            CHECK(((const float *)data_of(back2))[5] == 55.0f);
            dlb_tensor_free(back2);
            t = NULL;
            back = NULL;
        }
    }
    dlb_tensor_free(t);
    dlb_tensor_free(back);

    /* A view survives the round trip as a view. */
    {
        const int64_t s3[1] = {3}, neg[1] = {-1};
        const float wr[3] = {4, 3, 2};
        dlb_tensor *u = iota_f32(shape, 2), *v = POISON, *r = POISON;
        CHECK_EQ(dlb_tensor_view(u, s3, neg, 1, 4, &v), DLB_OK);
        CHECK_EQ(dlb_tensor_to_dlpack_versioned(v, false, &m), DLB_OK);
        if (VALID(m)) CHECK_EQ(dlb_tensor_from_dlpack_versioned(m, &r), DLB_OK);
        if (VALID(r)) {
            CHECK(tensor_values_are(r, wr, 3));
            CHECK(data_of(r) == (float *)data_of(u) + 4);
            CHECK_EQ(dlb_live_allocations(), live0 + 1);
            dlb_tensor_free(r);
        }
        dlb_tensor_free(v);
        dlb_tensor_free(u);
    }
    CHECK_LIVE(live0);
}

/* NULL arguments, bad dtypes, sizes that overflow or cannot be allocated. */
static void test_null_and_bad_args(void) {
    int64_t live0 = dlb_live_allocations();
    const int64_t shape[2] = {2, 3};
    dlb_tensor *t = iota_f32(shape, 2);
    dlb_tensor *out;
    void *p;
    DLManagedTensorVersioned *mv;
    DLManagedTensor *ml;

    /* NULL handle */
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_alias(NULL, &out));
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_view(NULL, shape, NULL, 2, 0, &out));
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_copy(NULL, &out));
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_cast(NULL, F64, &out));
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_to_device(NULL, CPU, &out));
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, p, dlb_tensor_data_mut(NULL, &p));
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, mv, dlb_tensor_to_dlpack_versioned(NULL, false, &mv));
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, mv, dlb_tensor_to_dlpack_versioned(NULL, true, &mv));
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, ml, dlb_tensor_to_dlpack(NULL, &ml));

    /* NULL out */
    CHECK_EQ(dlb_tensor_empty(shape, 2, F32, CPU, NULL), DLB_ERR_INVALID_ARGUMENT);
    CHECK_EQ(dlb_tensor_zeros(shape, 2, F32, CPU, NULL), DLB_ERR_INVALID_ARGUMENT);
    CHECK_EQ(dlb_tensor_alias(t, NULL), DLB_ERR_INVALID_ARGUMENT);
    CHECK_EQ(dlb_tensor_view(t, shape, NULL, 2, 0, NULL), DLB_ERR_INVALID_ARGUMENT);
    CHECK_EQ(dlb_tensor_copy(t, NULL), DLB_ERR_INVALID_ARGUMENT);
    CHECK_EQ(dlb_tensor_cast(t, F64, NULL), DLB_ERR_INVALID_ARGUMENT);
    CHECK_EQ(dlb_tensor_to_device(t, CPU, NULL), DLB_ERR_INVALID_ARGUMENT);
    CHECK_EQ(dlb_tensor_data_mut(t, NULL), DLB_ERR_INVALID_ARGUMENT);
    CHECK_EQ(dlb_tensor_to_dlpack_versioned(t, false, NULL), DLB_ERR_INVALID_ARGUMENT);
    CHECK_EQ(dlb_tensor_to_dlpack(t, NULL), DLB_ERR_INVALID_ARGUMENT);
    CHECK(error_message_set());

    /* NULL shape with ndim > 0 */
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_empty(NULL, 2, F32, CPU, &out));
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_zeros(NULL, 1, F32, CPU, &out));

    /* Inspection with NULL must not crash. */
    CHECK(dlb_tensor_dltensor(NULL) == NULL);
    CHECK(!dlb_tensor_shares_memory(NULL, t));
    CHECK(!dlb_tensor_shares_memory(t, NULL));
    (void)dlb_tensor_is_read_only(NULL);
    (void)dlb_tensor_is_contiguous(NULL);
    dlb_tensor_free(NULL);

    /* ndim out of range, negative extents */
    int64_t ones[65];
    for (int i = 0; i < 65; i++) ones[i] = 1;
    const int64_t neg[2] = {2, -1};
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_empty(ones, 65, F32, CPU, &out));
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_zeros(ones, -1, F32, CPU, &out));
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_empty(neg, 2, F32, CPU, &out));
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_zeros(neg, 2, F32, CPU, &out));
    CHECK_EQ(dlb_tensor_empty(ones, 64, F32, CPU, &out), DLB_OK);
    dlb_tensor_free(out);

    /* Bad dtypes */
    const DLDataType bad[] = {dtype(kDLFloat, 32, 0), dtype(99, 32, 1), dtype(kDLFloat, 7, 1),
                              dtype(kDLInt, 0, 1)};
    for (int i = 0; i < COUNT(bad); i++) {
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_empty(shape, 2, bad[i], CPU, &out));
        CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_zeros(shape, 2, bad[i], CPU, &out));
    }

    /* Element count or byte size overflowing 64 bits */
    const int64_t huge[2] = {INT64_C(1) << 62, INT64_C(1) << 62};
    const int64_t bytes_overflow[2] = {INT64_C(1) << 62, 8};
    const int64_t bytes_overflow1[1] = {INT64_C(1) << 61}; /* * 8 bytes = 2^64 */
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_empty(huge, 2, F32, CPU, &out));
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_zeros(huge, 2, F32, CPU, &out));
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_empty(bytes_overflow, 2, F64, CPU, &out));
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_empty(bytes_overflow1, 1, F64, CPU, &out));
    /* A zero extent makes the count 0 whatever the others are. */
    const int64_t zero_huge[3] = {INT64_C(1) << 62, 0, INT64_C(1) << 62};
    CHECK_EQ(dlb_tensor_empty(zero_huge, 3, F32, CPU, &out), DLB_OK);
    dlb_tensor_free(out);

    /* A valid size no machine can allocate: 2^45 float32 = 128 TiB, more than the whole
     * 47-bit x86-64 user address space, so it fails even with memory overcommit. */
    const int64_t too_big[1] = {INT64_C(1) << 45};
    CHECK_FAILS(DLB_ERR_OUT_OF_MEMORY, out, dlb_tensor_empty(too_big, 1, F32, CPU, &out));
    CHECK_FAILS(DLB_ERR_OUT_OF_MEMORY, out, dlb_tensor_zeros(too_big, 1, F32, CPU, &out));
    /* ... and the library keeps working afterwards. */
    dlb_tensor *c = POISON;
    CHECK_EQ(dlb_tensor_copy(t, &c), DLB_OK);
    const float w[6] = {0, 1, 2, 3, 4, 5};
    if (VALID(c)) {
        CHECK(tensor_values_are(c, w, 6));
        dlb_tensor_free(c);
    }
    dlb_tensor_free(t);
    CHECK_LIVE(live0);
}

static void test_devices(void) {
    int64_t live0 = dlb_live_allocations();
    const int64_t shape[2] = {2, 3};
    const float w[6] = {0, 1, 2, 3, 4, 5};
    dlb_tensor *t = iota_f32(shape, 2), *out;

    /* to CPU: always a copy */
    dlb_tensor *c = POISON;
    CHECK_EQ(dlb_tensor_to_device(t, CPU, &c), DLB_OK);
    if (VALID(c)) {
        CHECK(!dlb_tensor_shares_memory(t, c));
        CHECK(data_of(c) != data_of(t));
        CHECK(tensor_values_are(c, w, 6));
        CHECK_EQ(dlb_tensor_dltensor(c)->device.device_type, kDLCPU);
        dlb_tensor_free(c);
    }

    /* Without a CUDA driver its devices give DLB_ERR_DEVICE (with one, tests/cuda.rs covers
     * them); devices we never handle give DLB_ERR_UNSUPPORTED; a device type that does not
     * exist is a bad argument. */
    if (dlb_cuda_device_count() == 0) {
        CHECK_FAILS(DLB_ERR_DEVICE, out, dlb_tensor_to_device(t, device(kDLCUDA, 0), &out));
        CHECK_FAILS(DLB_ERR_DEVICE, out, dlb_tensor_to_device(t, device(kDLCUDAHost, 0), &out));
        CHECK_FAILS(DLB_ERR_DEVICE, out, dlb_tensor_empty(shape, 2, F32, device(kDLCUDA, 0), &out));
        CHECK_FAILS(DLB_ERR_DEVICE, out, dlb_tensor_zeros(shape, 2, F32, device(kDLCUDA, 0), &out));
    }
    CHECK_FAILS(DLB_ERR_UNSUPPORTED, out, dlb_tensor_to_device(t, device(kDLVulkan, 0), &out));
    CHECK_FAILS(DLB_ERR_UNSUPPORTED, out, dlb_tensor_to_device(t, device(kDLMetal, 0), &out));
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_to_device(t, device(99, 0), &out));

    CHECK_FAILS(DLB_ERR_UNSUPPORTED, out, dlb_tensor_empty(shape, 2, F32, device(kDLVulkan, 0), &out));
    CHECK_FAILS(DLB_ERR_INVALID_ARGUMENT, out, dlb_tensor_empty(shape, 2, F32, device(99, 0), &out));

    dlb_tensor_free(t);
    CHECK_LIVE(live0);
}

/* The header's version macros name the same version as the library's dlb_version(). */
static void test_version_macros(void) {
    char expected[64];
    snprintf(expected, sizeof expected, "%d.%d.%d", DLBRIDGE_VERSION_MAJOR, DLBRIDGE_VERSION_MINOR,
             DLBRIDGE_VERSION_PATCH);
    CHECK(strcmp(dlb_version(), expected) == 0);
#if DLBRIDGE_VERSION_MAJOR < 0 || DLBRIDGE_VERSION_MINOR < 0 || DLBRIDGE_VERSION_PATCH < 0
#error "the version macros must be usable in #if"
#endif
}

/* dlb_status_str: every status by name, anything else "unknown dlb_status"; never NULL. */
static void test_status_str(void) {
    static const struct {
        int32_t status;
        const char *name;
    } names[] = {
        {DLB_OK, "DLB_OK"},
        {DLB_ERR_INVALID_ARGUMENT, "DLB_ERR_INVALID_ARGUMENT"},
        {DLB_ERR_UNSUPPORTED, "DLB_ERR_UNSUPPORTED"},
        {DLB_ERR_OUT_OF_MEMORY, "DLB_ERR_OUT_OF_MEMORY"},
        {DLB_ERR_DEVICE, "DLB_ERR_DEVICE"},
        {DLB_ERR_READ_ONLY, "DLB_ERR_READ_ONLY"},
        {DLB_ERR_VERSION, "DLB_ERR_VERSION"},
        {DLB_ERR_PANIC, "DLB_ERR_PANIC"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *s = dlb_status_str(names[i].status);
        CHECK(s != NULL);
        if (s != NULL) CHECK(strcmp(s, names[i].name) == 0);
        CHECK(dlb_status_str(names[i].status) == s); /* static string */
    }
    const int32_t unknown[] = {-1, 8, 1000, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *s = dlb_status_str(unknown[i]);
        CHECK(s != NULL);
        if (s != NULL) CHECK(strcmp(s, "unknown dlb_status") == 0);
    }
}

int main(void) {
    int64_t live0 = dlb_live_allocations();
    test_basics();
    test_version_macros();
    test_status_str();
    test_create();
    test_alias_copy();
    test_views();
    test_cast();
    test_from_data();
    test_read_only();
    test_exports();
    test_imports();
    test_roundtrip();
    test_null_and_bad_args();
    test_devices();
    CHECK_LIVE(live0);
    CHECK_EQ(live0, 0); /* nothing else in this process allocates through dlbridge */
    return check_report();
}
