/*
 * selftest.c -- checks the fake CUDA driver's own semantics (see README.md).
 *
 * Usage: selftest MODE, where MODE matches the environment run.sh sets:
 *   main      FAKE_CUDA_DEVICES=2 (or unset): everything
 *   initfail  FAKE_CUDA_INIT_RESULT=100
 *   nodev     FAKE_CUDA_DEVICES=0
 *   smallmem  FAKE_CUDA_DEVICE_MEMORY=4096
 * Exits 0 when every check passes, 1 otherwise.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The driver ABI, declared locally (no NVIDIA header). */
typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_opaque *CUcontext;
typedef struct CUstream_opaque *CUstream;
typedef struct CUevent_opaque *CUevent;
typedef unsigned long long CUdeviceptr;
typedef enum { MT_HOST = 1, MT_DEVICE = 2, MT_ARRAY = 3, MT_UNIFIED = 4 } CUmemorytype;
typedef struct {
    size_t srcXInBytes, srcY;
    CUmemorytype srcMemoryType;
    const void *srcHost;
    CUdeviceptr srcDevice;
    void *srcArray;
    size_t srcPitch;
    size_t dstXInBytes, dstY;
    CUmemorytype dstMemoryType;
    void *dstHost;
    CUdeviceptr dstDevice;
    void *dstArray;
    size_t dstPitch;
    size_t WidthInBytes, Height;
} CUDA_MEMCPY2D;
_Static_assert(sizeof(CUDA_MEMCPY2D) == 128, "CUDA_MEMCPY2D layout");

CUresult cuInit(unsigned);
CUresult cuDriverGetVersion(int *);
CUresult cuDeviceGetCount(int *);
CUresult cuDeviceGet(CUdevice *, int);
CUresult cuDeviceGetName(char *, int, CUdevice);
CUresult cuDevicePrimaryCtxRetain(CUcontext *, CUdevice);
CUresult cuCtxPushCurrent_v2(CUcontext);
CUresult cuCtxPopCurrent_v2(CUcontext *);
CUresult cuCtxSynchronize(void);
CUresult cuMemAlloc_v2(CUdeviceptr *, size_t);
CUresult cuMemFree_v2(CUdeviceptr);
CUresult cuMemHostAlloc(void **, size_t, unsigned);
CUresult cuMemFreeHost(void *);
CUresult cuMemsetD8Async(CUdeviceptr, unsigned char, size_t, CUstream);
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr, const void *, size_t, CUstream);
CUresult cuMemcpyDtoHAsync_v2(void *, CUdeviceptr, size_t, CUstream);
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr, CUdeviceptr, size_t, CUstream);
CUresult cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D *, CUstream);
CUresult cuMemcpyPeerAsync(CUdeviceptr, CUcontext, CUdeviceptr, CUcontext, size_t, CUstream);
CUresult cuStreamSynchronize(CUstream);
CUresult cuEventCreate(CUevent *, unsigned);
CUresult cuEventRecord(CUevent, CUstream);
CUresult cuEventSynchronize(CUevent);
CUresult cuEventDestroy_v2(CUevent);
CUresult cuGetErrorName(CUresult, const char **);
CUresult cuGetErrorString(CUresult, const char **);
typedef struct {
    char reserved[64];
} CUipcMemHandle;
CUresult cuIpcGetMemHandle(CUipcMemHandle *, CUdeviceptr);
CUresult cuIpcOpenMemHandle_v2(CUdeviceptr *, CUipcMemHandle, unsigned);
CUresult cuIpcCloseMemHandle(CUdeviceptr);
CUresult cuMemGetAddressRange_v2(CUdeviceptr *, size_t *, CUdeviceptr);

void fake_cuda_fail_allocs_after(long);
void fake_cuda_fail_copies_after(long);
long fake_cuda_live_device_allocations(void);
long fake_cuda_live_host_allocations(void);
long fake_cuda_live_events(void);
long fake_cuda_misuse_count(void);
const char *fake_cuda_last_misuse(void);
long fake_cuda_pending_ops(void);
long fake_cuda_call_count(const char *);
long fake_cuda_bytes_copied(int);
long fake_cuda_writecombined_allocations(void);
void fake_cuda_reset_counters(void);
int fake_cuda_read(CUdeviceptr, void *, size_t);
int fake_cuda_write(CUdeviceptr, const void *, size_t);
int fake_cuda_device_of(CUdeviceptr);

enum {
    OK_ = 0,
    E_VALUE = 1,
    E_OOM = 2,
    E_NOT_INIT = 3,
    E_NO_DEVICE = 100,
    E_DEVICE = 101,
    E_CONTEXT = 201,
    E_HANDLE = 400,
    E_ILLEGAL = 700
};
#define S_LEGACY ((CUstream)(uintptr_t)0x1)
#define S_PER_THREAD ((CUstream)(uintptr_t)0x2)
#define FAKE_BASE 0x0001000000000000ULL

static int g_checks, g_failed;

#define CHECK(cond)                                                                           \
    do {                                                                                      \
        g_checks++;                                                                           \
        if (!(cond)) {                                                                        \
            g_failed++;                                                                       \
            fprintf(stderr, "selftest FAIL %s:%d: %s (last misuse: \"%s\")\n", __FILE__,      \
                    __LINE__, #cond, fake_cuda_last_misuse());                                \
        }                                                                                     \
    } while (0)

#define EQ(a, b)                                                                              \
    do {                                                                                      \
        long long a_ = (long long)(a), b_ = (long long)(b);                                   \
        g_checks++;                                                                           \
        if (a_ != b_) {                                                                       \
            g_failed++;                                                                       \
            fprintf(stderr, "selftest FAIL %s:%d: %s == %lld, expected %s == %lld (last misuse: " \
                    "\"%s\")\n", __FILE__, __LINE__, #a, a_, #b, b_, fake_cuda_last_misuse()); \
        }                                                                                     \
    } while (0)

/* expr must return `code` without recording a misuse. */
#define CLEAN(expr, code)                                                                     \
    do {                                                                                      \
        long m0_ = fake_cuda_misuse_count();                                                  \
        EQ((expr), (code));                                                                   \
        EQ(fake_cuda_misuse_count(), m0_);                                                    \
    } while (0)
#define OK(expr) CLEAN(expr, OK_)

/* expr must return `code` and record exactly one misuse. */
#define MISUSE(expr, code)                                                                    \
    do {                                                                                      \
        long m0_ = fake_cuda_misuse_count();                                                  \
        EQ((expr), (code));                                                                   \
        EQ(fake_cuda_misuse_count(), m0_ + 1);                                                \
    } while (0)

static CUcontext g_ctx0, g_ctx1;
static const char *g_self; /* argv[0], for the IPC test's child */

static int all_bytes(const unsigned char *p, size_t n, unsigned char v) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != v)
            return 0;
    return 1;
}

static int dev_all(CUdeviceptr d, size_t n, unsigned char v) {
    unsigned char *buf = malloc(n);
    int ok = buf && fake_cuda_read(d, buf, n) == 0 && all_bytes(buf, n, v);
    free(buf);
    return ok;
}

/* ---------------------------------------------------------------------------------------- */

static void test_before_init(void) {
    int v = 0;
    const char *s = NULL;
    OK(cuDriverGetVersion(&v));
    EQ(v, 12080);
    OK(cuGetErrorName(2, &s));
    CHECK(s && strcmp(s, "CUDA_ERROR_OUT_OF_MEMORY") == 0);
    MISUSE(cuDeviceGetCount(&v), E_NOT_INIT);
    CUdeviceptr d;
    MISUSE(cuMemAlloc_v2(&d, 16), E_NOT_INIT);
    MISUSE(cuInit(1), E_VALUE);
    OK(cuInit(0));
    OK(cuInit(0)); /* idempotent */
}

static void test_devices(int expect) {
    int n = -1;
    OK(cuDeviceGetCount(&n));
    EQ(n, expect);
    CUdevice dev = -1;
    for (int i = 0; i < expect; i++) {
        OK(cuDeviceGet(&dev, i));
        EQ(dev, i);
    }
    CLEAN(cuDeviceGet(&dev, expect), E_DEVICE);
    CLEAN(cuDeviceGet(&dev, -1), E_DEVICE);
    char name[64];
    if (expect > 1) {
        OK(cuDeviceGetName(name, sizeof name, 1));
        CHECK(strcmp(name, "dlbridge fake CUDA device 1") == 0);
        OK(cuDeviceGetName(name, 9, 0));
        CHECK(strcmp(name, "dlbridge") == 0);
    }
    CLEAN(cuDeviceGetName(name, sizeof name, expect), E_DEVICE);
    MISUSE(cuDeviceGetName(NULL, 10, 0), E_VALUE);
    MISUSE(cuDeviceGetCount(NULL), E_VALUE);
}

static void test_contexts(void) {
    CUcontext c = NULL;
    CUdeviceptr d;
    MISUSE(cuCtxPopCurrent_v2(&c), E_CONTEXT);
    MISUSE(cuMemAlloc_v2(&d, 16), E_CONTEXT);
    MISUSE(cuCtxSynchronize(), E_CONTEXT);
    MISUSE(cuStreamSynchronize(NULL), E_CONTEXT);
    OK(cuDevicePrimaryCtxRetain(&g_ctx1, 1));
    OK(cuDevicePrimaryCtxRetain(&g_ctx0, 0));
    OK(cuDevicePrimaryCtxRetain(&c, 0));
    CHECK(c == g_ctx0);
    CHECK(g_ctx0 != g_ctx1 && g_ctx0 && g_ctx1);
    CLEAN(cuDevicePrimaryCtxRetain(&c, 2), E_DEVICE);
    MISUSE(cuCtxPushCurrent_v2((CUcontext)&c), E_CONTEXT);
    MISUSE(cuCtxPushCurrent_v2(NULL), E_CONTEXT);
    OK(cuCtxPushCurrent_v2(g_ctx0));
    OK(cuCtxPushCurrent_v2(g_ctx1));
    OK(cuCtxPopCurrent_v2(&c));
    CHECK(c == g_ctx1);
    OK(cuCtxPopCurrent_v2(&c));
    CHECK(c == g_ctx0);
    MISUSE(cuCtxPopCurrent_v2(NULL), E_CONTEXT);
}

static void test_round_trip(void) {
    enum { N = 1000 };
    unsigned char *h = NULL, *back = NULL;
    CUdeviceptr d1 = 0, d2 = 0;
    OK(cuCtxPushCurrent_v2(g_ctx0));
    long b0 = fake_cuda_bytes_copied(0), b1 = fake_cuda_bytes_copied(1),
         b2 = fake_cuda_bytes_copied(2);
    OK(cuMemHostAlloc((void **)&h, N, 0));
    OK(cuMemHostAlloc((void **)&back, N, 0));
    CHECK(((uintptr_t)h & 4095) == 0);
    CHECK(all_bytes(h, N, 0xA5)); /* garbage, not zeros */
    OK(cuMemAlloc_v2(&d1, N));
    OK(cuMemAlloc_v2(&d2, N));
    CHECK(d1 >= FAKE_BASE && d2 > d1);
    CHECK((d1 & 511) == 0 && (d2 & 511) == 0);
    CHECK(dev_all(d1, N, 0xA5));
    EQ(fake_cuda_device_of(d1), 0);
    EQ(fake_cuda_device_of(d1 + N - 1), 0);
    EQ(fake_cuda_device_of(d1 + N), -1);
    EQ(fake_cuda_live_device_allocations(), 2);
    EQ(fake_cuda_live_host_allocations(), 2);
    for (int i = 0; i < N; i++)
        h[i] = (unsigned char)(i * 7 + 3);
    OK(cuMemcpyHtoDAsync_v2(d1, h, N, NULL));
    OK(cuMemcpyDtoDAsync_v2(d2, d1, N, NULL));
    OK(cuMemcpyDtoHAsync_v2(back, d2, N, S_LEGACY));
    EQ(fake_cuda_pending_ops(), 3);
    CHECK(all_bytes(back, N, 0xA5)); /* nothing has moved yet */
    CHECK(dev_all(d2, N, 0xA5));
    OK(cuStreamSynchronize(S_LEGACY)); /* 0 and 0x1 are the same queue */
    EQ(fake_cuda_pending_ops(), 0);
    CHECK(memcmp(h, back, N) == 0);
    EQ(fake_cuda_bytes_copied(0) - b0, N);
    EQ(fake_cuda_bytes_copied(1) - b1, N);
    EQ(fake_cuda_bytes_copied(2) - b2, N);
    EQ(fake_cuda_bytes_copied(7), -1);

    /* memset, and the synchronous peeks */
    OK(cuMemsetD8Async(d1 + 10, 0x42, 20, NULL));
    CHECK(!dev_all(d1 + 10, 20, 0x42));
    OK(cuCtxSynchronize());
    CHECK(dev_all(d1 + 10, 20, 0x42));
    unsigned char x = 9;
    EQ(fake_cuda_write(d1 + N - 1, &x, 1), 0);
    EQ(fake_cuda_write(d1 + N - 1, &x, 2), -1);
    EQ(fake_cuda_read(d1 + N, &x, 1), -1);
    x = 0;
    EQ(fake_cuda_read(d1 + N - 1, &x, 1), 0);
    EQ(x, 9);

    /* zero-length copies are no-ops */
    OK(cuMemcpyHtoDAsync_v2(d1, h, 0, NULL));
    EQ(fake_cuda_pending_ops(), 0);

    OK(cuMemFree_v2(d1));
    OK(cuMemFree_v2(d2));
    OK(cuMemFreeHost(h));
    OK(cuMemFreeHost(back));
    EQ(fake_cuda_live_device_allocations(), 0);
    EQ(fake_cuda_live_host_allocations(), 0);
    /* addresses are never reused */
    CUdeviceptr d3;
    OK(cuMemAlloc_v2(&d3, N));
    CHECK(d3 > d2);
    OK(cuMemFree_v2(d3));
    OK(cuCtxPopCurrent_v2(NULL));
}

static void test_deferral(void) {
    enum { N = 256 };
    unsigned char *h;
    CUdeviceptr d;
    OK(cuCtxPushCurrent_v2(g_ctx0));
    OK(cuMemHostAlloc((void **)&h, N, 0));
    OK(cuMemAlloc_v2(&d, N));
    /* staging buffer overwritten before synchronisation: device sees the new contents */
    memset(h, 'A', N);
    OK(cuMemcpyHtoDAsync_v2(d, h, N, NULL));
    memset(h, 'B', N);
    OK(cuStreamSynchronize(NULL));
    CHECK(dev_all(d, N, 'B'));
    /* synchronised before overwriting: device sees the original */
    memset(h, 'A', N);
    OK(cuMemcpyHtoDAsync_v2(d, h, N, NULL));
    OK(cuStreamSynchronize(NULL));
    memset(h, 'B', N);
    CHECK(dev_all(d, N, 'A'));
    OK(cuMemFree_v2(d));
    OK(cuMemFreeHost(h));
    OK(cuCtxPopCurrent_v2(NULL));
}

static void test_2d(void) {
    /* Device image: 6 rows of pitch 64. Host image: 4 rows of pitch 16. Copy a 10x4 block from
     * host (x=2, y=0) to device (x=3, y=1), then back from device to a host buffer of pitch 12. */
    enum { DP = 64, DR = 6, HP = 16, HR = 4, W = 10, H = 4, BP = 12 };
    unsigned char host[HP * HR], back[BP * H], dimg[DP * DR];
    CUdeviceptr d;
    OK(cuCtxPushCurrent_v2(g_ctx0));
    OK(cuMemAlloc_v2(&d, DP * DR));
    OK(cuMemsetD8Async(d, 0, DP * DR, NULL));
    for (int i = 0; i < HP * HR; i++)
        host[i] = (unsigned char)(i + 1);
    memset(back, 0xEE, sizeof back);
    CUDA_MEMCPY2D c;
    memset(&c, 0, sizeof c);
    c.srcMemoryType = MT_HOST;
    c.srcHost = host;
    c.srcXInBytes = 2;
    c.srcPitch = HP;
    c.dstMemoryType = MT_DEVICE;
    c.dstDevice = d;
    c.dstXInBytes = 3;
    c.dstY = 1;
    c.dstPitch = DP;
    c.WidthInBytes = W;
    c.Height = H;
    OK(cuMemcpy2DAsync_v2(&c, NULL));
    CUDA_MEMCPY2D b;
    memset(&b, 0, sizeof b);
    b.srcMemoryType = MT_DEVICE;
    b.srcDevice = d;
    b.srcXInBytes = 3;
    b.srcY = 1;
    b.srcPitch = DP;
    b.dstMemoryType = MT_HOST;
    b.dstHost = back;
    b.dstPitch = BP;
    b.WidthInBytes = W;
    b.Height = H;
    OK(cuMemcpy2DAsync_v2(&b, NULL));
    EQ(fake_cuda_pending_ops(), 3);
    OK(cuStreamSynchronize(NULL));
    EQ(fake_cuda_read(d, dimg, sizeof dimg), 0);
    int good = 1;
    for (int y = 0; y < DR; y++)
        for (int x = 0; x < DP; x++) {
            int in = y >= 1 && y < 1 + H && x >= 3 && x < 3 + W;
            unsigned char want = in ? host[(y - 1) * HP + 2 + (x - 3)] : 0;
            good &= dimg[y * DP + x] == want;
        }
    CHECK(good);
    good = 1;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < BP; x++)
            good &= back[y * BP + x] == (x < W ? host[y * HP + 2 + x] : 0xEE);
    CHECK(good);

    /* argument errors */
    CUDA_MEMCPY2D e = c;
    e.dstPitch = W - 1;
    MISUSE(cuMemcpy2DAsync_v2(&e, NULL), E_VALUE);
    e = c;
    e.Height = 1;
    e.dstPitch = 0; /* pitch is irrelevant for a single row */
    OK(cuMemcpy2DAsync_v2(&e, NULL));
    e = c;
    e.srcMemoryType = MT_ARRAY;
    MISUSE(cuMemcpy2DAsync_v2(&e, NULL), E_VALUE);
    e = c;
    e.dstMemoryType = MT_UNIFIED;
    MISUSE(cuMemcpy2DAsync_v2(&e, NULL), E_VALUE);
    e = c;
    e.dstY = DR - H + 1; /* last row runs past the allocation */
    MISUSE(cuMemcpy2DAsync_v2(&e, NULL), E_VALUE);
    e = c;
    e.srcHost = (const void *)(uintptr_t)d; /* device pointer as host pointer */
    MISUSE(cuMemcpy2DAsync_v2(&e, NULL), E_VALUE);
    MISUSE(cuMemcpy2DAsync_v2(NULL, NULL), E_VALUE);
    e = c;
    e.WidthInBytes = 0;
    e.dstDevice = 0; /* nothing is copied, so nothing is checked */
    long p0 = fake_cuda_pending_ops();
    OK(cuMemcpy2DAsync_v2(&e, NULL));
    e = c;
    e.Height = 0;
    OK(cuMemcpy2DAsync_v2(&e, NULL));
    EQ(fake_cuda_pending_ops(), p0);
    OK(cuStreamSynchronize(NULL));
    OK(cuMemFree_v2(d));
    OK(cuCtxPopCurrent_v2(NULL));
}

static void test_events(void) {
    enum { N = 64 };
    unsigned char h[N];
    CUdeviceptr d;
    CUevent ev, never;
    OK(cuCtxPushCurrent_v2(g_ctx0));
    long e0 = fake_cuda_live_events();
    OK(cuEventCreate(&ev, 2 /* CU_EVENT_DISABLE_TIMING */));
    OK(cuEventCreate(&never, 0));
    EQ(fake_cuda_live_events(), e0 + 2);
    MISUSE(cuEventCreate(&ev, 0x100), E_VALUE);
    OK(cuMemAlloc_v2(&d, N));
    memset(h, 1, N);
    OK(cuMemcpyHtoDAsync_v2(d, h, N, NULL));
    OK(cuEventRecord(ev, NULL));
    OK(cuMemsetD8Async(d, 2, N, NULL));
    EQ(fake_cuda_pending_ops(), 2);
    OK(cuEventSynchronize(ev)); /* runs the queue up to the record point only */
    EQ(fake_cuda_pending_ops(), 1);
    CHECK(dev_all(d, N, 1));
    OK(cuEventSynchronize(never)); /* never recorded: success */
    EQ(fake_cuda_pending_ops(), 1);
    OK(cuStreamSynchronize(NULL));
    CHECK(dev_all(d, N, 2));
    /* an event recorded on the per-thread stream waits on that queue only */
    OK(cuMemsetD8Async(d, 3, N, NULL));
    OK(cuMemsetD8Async(d, 4, N, S_PER_THREAD));
    OK(cuEventRecord(ev, S_PER_THREAD));
    OK(cuEventSynchronize(ev));
    EQ(fake_cuda_pending_ops(), 1);
    CHECK(dev_all(d, N, 4));
    OK(cuStreamSynchronize(NULL));
    CHECK(dev_all(d, N, 3));
    /* events belong to the context they were created in */
    OK(cuCtxPushCurrent_v2(g_ctx1));
    MISUSE(cuEventRecord(ev, NULL), E_HANDLE);
    OK(cuCtxPopCurrent_v2(NULL));
    MISUSE(cuEventRecord(ev, (CUstream)(uintptr_t)0x1234), E_HANDLE);
    OK(cuEventDestroy_v2(ev));
    OK(cuEventDestroy_v2(never));
    EQ(fake_cuda_live_events(), e0);
    MISUSE(cuEventDestroy_v2(ev), E_HANDLE);
    MISUSE(cuEventSynchronize(ev), E_HANDLE);
    MISUSE(cuEventRecord(ev, NULL), E_HANDLE);
    MISUSE(cuEventDestroy_v2((CUevent)h), E_HANDLE);
    OK(cuMemFree_v2(d));
    OK(cuCtxPopCurrent_v2(NULL));
}

static void test_misuse(void) {
    enum { N = 128 };
    unsigned char *h, stack[N];
    CUdeviceptr d, d1;
    OK(cuCtxPushCurrent_v2(g_ctx0));
    OK(cuMemHostAlloc((void **)&h, N, 0));
    OK(cuMemAlloc_v2(&d, N));

    MISUSE(cuMemAlloc_v2(&d1, 0), E_VALUE);
    MISUSE(cuMemAlloc_v2(NULL, 8), E_VALUE);
    void *tmp = NULL;
    MISUSE(cuMemHostAlloc(&tmp, 0, 0), E_VALUE);
    MISUSE(cuMemHostAlloc(&tmp, 8, 0x80), E_VALUE);
    MISUSE(cuMemHostAlloc(NULL, 8, 0), E_VALUE);
    /* out of bounds, device side */
    MISUSE(cuMemcpyHtoDAsync_v2(d, h, N + 1, NULL), E_VALUE);
    MISUSE(cuMemcpyHtoDAsync_v2(d + 1, h, N, NULL), E_VALUE);
    MISUSE(cuMemsetD8Async(d + N, 0, 1, NULL), E_VALUE);
    MISUSE(cuMemcpyDtoDAsync_v2(d, d + 64, 65, NULL), E_VALUE);
    MISUSE(cuMemcpyDtoHAsync_v2(h, 0, 1, NULL), E_VALUE);
    /* out of bounds, pinned host side */
    MISUSE(cuMemcpyDtoHAsync_v2(h + 1, d, N, NULL), E_VALUE);
    /* device pointers where host pointers belong, and NULL host pointers */
    MISUSE(cuMemcpyHtoDAsync_v2(d, (const void *)(uintptr_t)d, 8, NULL), E_VALUE);
    MISUSE(cuMemcpyDtoHAsync_v2((void *)(uintptr_t)(d + 8), d, 8, NULL), E_VALUE);
    MISUSE(cuMemcpyDtoHAsync_v2(NULL, d, 8, NULL), E_VALUE);
    /* host pointers where device pointers belong */
    MISUSE(cuMemcpyHtoDAsync_v2((CUdeviceptr)(uintptr_t)stack, h, 8, NULL), E_VALUE);
    /* pageable host memory is fine */
    OK(cuMemcpyHtoDAsync_v2(d, stack, 8, NULL));
    /* unknown streams */
    MISUSE(cuMemsetD8Async(d, 0, 8, (CUstream)(uintptr_t)0x3), E_HANDLE);
    MISUSE(cuStreamSynchronize((CUstream)(uintptr_t)0x1000), E_HANDLE);
    OK(cuStreamSynchronize(NULL));
    EQ(fake_cuda_pending_ops(), 0);

    /* free while work is still queued: reported, then the work runs and the free succeeds */
    memset(h, 0x11, N);
    OK(cuMemcpyHtoDAsync_v2(d, h, N, NULL));
    OK(cuMemcpyDtoHAsync_v2(stack, d, N, NULL));
    MISUSE(cuMemFree_v2(d), OK_);
    CHECK(strstr(fake_cuda_last_misuse(), "queued") != NULL);
    EQ(fake_cuda_pending_ops(), 0);
    CHECK(all_bytes(stack, N, 0x11));
    OK(cuMemAlloc_v2(&d, N));
    OK(cuMemcpyHtoDAsync_v2(d, h, N, S_PER_THREAD));
    MISUSE(cuMemFreeHost(h), OK_);
    EQ(fake_cuda_pending_ops(), 0);
    EQ(fake_cuda_live_host_allocations(), 0);
    CHECK(dev_all(d, N, 0x11));

    /* use after free, double free, interior pointers, foreign pointers */
    OK(cuMemFree_v2(d));
    MISUSE(cuMemsetD8Async(d, 0, 1, NULL), E_VALUE);
    MISUSE(cuMemcpyDtoHAsync_v2(stack, d, 1, NULL), E_VALUE);
    MISUSE(cuMemFree_v2(d), E_VALUE);
    MISUSE(cuMemFree_v2(0), E_VALUE);
    OK(cuMemAlloc_v2(&d, N));
    MISUSE(cuMemFree_v2(d + 8), E_VALUE);
    MISUSE(cuMemFreeHost(stack), E_VALUE);
    MISUSE(cuMemFreeHost(h), E_VALUE); /* already freed above */
    OK(cuMemHostAlloc((void **)&h, N, 0));
    MISUSE(cuMemFreeHost(h + 1), E_VALUE);
    OK(cuCtxPushCurrent_v2(g_ctx1));
    OK(cuMemAlloc_v2(&d1, N));
    OK(cuCtxPopCurrent_v2(NULL));
    EQ(fake_cuda_device_of(d1), 1);
    MISUSE(cuMemFree_v2(d1), E_VALUE); /* device 1's memory while device 0 is current */
    /* ...but copies across devices are fine (unified addressing) */
    OK(cuMemcpyDtoDAsync_v2(d1, d, N, NULL));
    OK(cuStreamSynchronize(NULL));
    OK(cuCtxPushCurrent_v2(g_ctx1));
    OK(cuMemFree_v2(d1));
    OK(cuCtxPopCurrent_v2(NULL));
    OK(cuMemFree_v2(d));
    OK(cuMemFreeHost(h));

    /* NULL out-parameters */
    MISUSE(cuEventCreate(NULL, 0), E_VALUE);
    MISUSE(cuDevicePrimaryCtxRetain(NULL, 0), E_VALUE);
    MISUSE(cuDriverGetVersion(NULL), E_VALUE);
    MISUSE(cuGetErrorString(0, NULL), E_VALUE);
    OK(cuCtxPopCurrent_v2(NULL));
}

static void test_write_combined_and_counters(void) {
    void *p;
    OK(cuCtxPushCurrent_v2(g_ctx0));
    long wc = fake_cuda_writecombined_allocations();
    OK(cuMemHostAlloc(&p, 100, 1 | 2)); /* PORTABLE | DEVICEMAP */
    EQ(fake_cuda_writecombined_allocations(), wc);
    OK(cuMemFreeHost(p));
    OK(cuMemHostAlloc(&p, 100, 4)); /* WRITECOMBINED: allowed, but counted */
    EQ(fake_cuda_writecombined_allocations(), wc + 1);
    OK(cuMemFreeHost(p));
    OK(cuCtxPopCurrent_v2(NULL));

    CHECK(fake_cuda_call_count("cuMemHostAlloc") >= 2);
    EQ(fake_cuda_call_count("cuNoSuchThing"), -1);
    EQ(fake_cuda_call_count(NULL), -1);
    CHECK(fake_cuda_misuse_count() > 0);
    fake_cuda_reset_counters();
    EQ(fake_cuda_misuse_count(), 0);
    CHECK(strcmp(fake_cuda_last_misuse(), "") == 0);
    EQ(fake_cuda_call_count("cuMemHostAlloc"), 0);
    EQ(fake_cuda_call_count("cuInit"), 0);
    OK(cuInit(0));
    EQ(fake_cuda_call_count("cuInit"), 1);

    /* each misuse is printed to stderr with the documented prefix */
    char path[] = "/tmp/fake-cuda-selftest-XXXXXX";
    int fd = mkstemp(path), saved = dup(2);
    CHECK(fd >= 0 && saved >= 0);
    if (fd >= 0 && saved >= 0) {
        unsetenv("FAKE_CUDA_QUIET");
        fflush(stderr);
        dup2(fd, 2);
        CUcontext c;
        MISUSE(cuCtxPopCurrent_v2(&c), E_CONTEXT);
        fflush(stderr);
        dup2(saved, 2);
        setenv("FAKE_CUDA_QUIET", "1", 1);
        char buf[512] = {0};
        ssize_t got = pread(fd, buf, sizeof buf - 1, 0);
        CHECK(got > 0 && strncmp(buf, "fake-cuda misuse: cuCtxPopCurrent_v2: ", 38) == 0);
        CHECK(strncmp(fake_cuda_last_misuse(), "cuCtxPopCurrent_v2: ", 20) == 0);
    }
    if (fd >= 0) {
        close(fd);
        unlink(path);
    }
    if (saved >= 0)
        close(saved);
}

static void test_error_strings(void) {
    static const struct {
        int code;
        const char *name;
    } t[] = {{0, "CUDA_SUCCESS"},
             {1, "CUDA_ERROR_INVALID_VALUE"},
             {2, "CUDA_ERROR_OUT_OF_MEMORY"},
             {3, "CUDA_ERROR_NOT_INITIALIZED"},
             {4, "CUDA_ERROR_DEINITIALIZED"},
             {100, "CUDA_ERROR_NO_DEVICE"},
             {101, "CUDA_ERROR_INVALID_DEVICE"},
             {201, "CUDA_ERROR_INVALID_CONTEXT"},
             {400, "CUDA_ERROR_INVALID_HANDLE"},
             {700, "CUDA_ERROR_ILLEGAL_ADDRESS"}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        const char *s = NULL;
        OK(cuGetErrorName(t[i].code, &s));
        CHECK(s && strcmp(s, t[i].name) == 0);
        s = NULL;
        OK(cuGetErrorString(t[i].code, &s));
        CHECK(s && *s);
    }
    const char *s = NULL;
    OK(cuGetErrorString(2, &s));
    CHECK(s && strcmp(s, "out of memory") == 0);
    s = "x";
    CLEAN(cuGetErrorName(12345, &s), E_VALUE);
    CHECK(s == NULL);
    CLEAN(cuGetErrorString(-1, &s), E_VALUE);
}

static void test_failure_injection(void) {
    CUdeviceptr a, b, c;
    void *p;
    unsigned char h[16] = {0};
    OK(cuCtxPushCurrent_v2(g_ctx0));
    fake_cuda_fail_allocs_after(1);
    OK(cuMemAlloc_v2(&a, 16));
    CLEAN(cuMemAlloc_v2(&b, 16), E_OOM);
    CLEAN(cuMemHostAlloc(&p, 16, 0), E_OOM);
    EQ(fake_cuda_live_device_allocations(), 1);
    EQ(fake_cuda_live_host_allocations(), 0);
    fake_cuda_fail_allocs_after(-1);
    OK(cuMemAlloc_v2(&b, 16));
    fake_cuda_fail_allocs_after(0);
    CLEAN(cuMemAlloc_v2(&c, 16), E_OOM);
    fake_cuda_fail_allocs_after(-1);

    fake_cuda_fail_copies_after(2);
    OK(cuMemcpyHtoDAsync_v2(a, h, 16, NULL));
    OK(cuMemsetD8Async(b, 0, 16, NULL));
    CLEAN(cuMemcpyDtoDAsync_v2(b, a, 16, NULL), E_ILLEGAL);
    CLEAN(cuMemcpyDtoHAsync_v2(h, a, 16, NULL), E_ILLEGAL);
    CLEAN(cuMemsetD8Async(a, 0, 16, NULL), E_ILLEGAL);
    EQ(fake_cuda_pending_ops(), 2);
    /* argument errors still win over injected failures */
    MISUSE(cuMemsetD8Async(a, 0, 17, NULL), E_VALUE);
    fake_cuda_fail_copies_after(-1);
    OK(cuMemcpyDtoDAsync_v2(b, a, 16, NULL));
    OK(cuStreamSynchronize(NULL));

    /* capacity (default 1 GiB per device) */
    const char *cap_env = getenv("FAKE_CUDA_DEVICE_MEMORY");
    unsigned long long cap = cap_env ? strtoull(cap_env, NULL, 0) : 1ULL << 30;
    CLEAN(cuMemAlloc_v2(&c, cap + 1), E_OOM);
    CLEAN(cuMemAlloc_v2(&c, (size_t)-1), E_OOM);
    OK(cuMemFree_v2(a));
    OK(cuMemFree_v2(b));
    OK(cuCtxPopCurrent_v2(NULL));
}

static void test_peer_and_contexts(void) {
    enum { N = 300 };
    unsigned char h[N], back[N];
    CUdeviceptr a, b;
    OK(cuCtxPushCurrent_v2(g_ctx1));
    OK(cuMemAlloc_v2(&b, N));
    OK(cuCtxPopCurrent_v2(NULL));
    OK(cuCtxPushCurrent_v2(g_ctx0));
    OK(cuMemAlloc_v2(&a, N));
    EQ(fake_cuda_device_of(a), 0);
    EQ(fake_cuda_device_of(b), 1);
    for (int i = 0; i < N; i++)
        h[i] = (unsigned char)(i ^ 0x5A);
    long b2 = fake_cuda_bytes_copied(2);
    OK(cuMemcpyHtoDAsync_v2(a, h, N, NULL));
    OK(cuMemcpyPeerAsync(b, g_ctx1, a, g_ctx0, N, NULL));
    MISUSE(cuMemcpyPeerAsync(b, g_ctx0, a, g_ctx0, N, NULL), E_VALUE);
    MISUSE(cuMemcpyPeerAsync(b, g_ctx1, a, g_ctx1, N, NULL), E_VALUE);
    MISUSE(cuMemcpyPeerAsync(b, (CUcontext)h, a, g_ctx0, N, NULL), E_CONTEXT);
    MISUSE(cuMemcpyPeerAsync(b, g_ctx1, a, g_ctx0, N + 1, NULL), E_VALUE);
    /* queues belong to contexts: device 1's legacy stream does not run device 0's work */
    OK(cuCtxPushCurrent_v2(g_ctx1));
    OK(cuStreamSynchronize(NULL));
    OK(cuCtxSynchronize());
    EQ(fake_cuda_pending_ops(), 2);
    OK(cuCtxPopCurrent_v2(NULL));
    OK(cuCtxSynchronize());
    EQ(fake_cuda_pending_ops(), 0);
    EQ(fake_cuda_bytes_copied(2) - b2, N);
    EQ(fake_cuda_read(b, back, N), 0);
    CHECK(memcmp(back, h, N) == 0);
    OK(cuMemFree_v2(a));
    OK(cuCtxPushCurrent_v2(g_ctx1));
    OK(cuMemFree_v2(b));
    OK(cuCtxPopCurrent_v2(NULL));
    OK(cuCtxPopCurrent_v2(NULL));
}

/* ---------------------------------------------------------------------------------------- */

struct thread_arg {
    CUdeviceptr mine;   /* the second thread's destination */
    CUdeviceptr theirs; /* the main thread's destination (its op is queued on 0x2) */
    int leave_pending;  /* enqueue on 0x2 and exit without synchronising */
};

static void *second_thread(void *p) {
    struct thread_arg *t = p;
    unsigned char v = 0x77;
    /* no context on a fresh thread: this is how a deleter that forgot it is caught */
    MISUSE(cuStreamSynchronize(S_PER_THREAD), E_CONTEXT);
    MISUSE(cuMemFree_v2(t->mine), E_CONTEXT);
    OK(cuCtxPushCurrent_v2(g_ctx0));
    if (t->leave_pending) {
        OK(cuMemsetD8Async(t->mine, v, 32, S_PER_THREAD));
        OK(cuCtxPopCurrent_v2(NULL));
        return NULL;
    }
    OK(cuStreamSynchronize(S_PER_THREAD));
    OK(cuStreamSynchronize(NULL));
    EQ(fake_cuda_pending_ops(), 1); /* the main thread's op is untouched */
    CHECK(dev_all(t->theirs, 32, 0xA5));
    OK(cuMemsetD8Async(t->mine, v, 32, S_PER_THREAD));
    EQ(fake_cuda_pending_ops(), 2);
    OK(cuStreamSynchronize(S_PER_THREAD));
    EQ(fake_cuda_pending_ops(), 1);
    CHECK(dev_all(t->mine, 32, v));
    OK(cuCtxPopCurrent_v2(NULL));
    return NULL;
}

static void test_threads(void) {
    struct thread_arg t;
    pthread_t th;
    OK(cuCtxPushCurrent_v2(g_ctx0));
    OK(cuMemAlloc_v2(&t.mine, 32));
    OK(cuMemAlloc_v2(&t.theirs, 32));
    OK(cuMemsetD8Async(t.theirs, 0x33, 32, S_PER_THREAD));
    t.leave_pending = 0;
    CHECK(pthread_create(&th, NULL, second_thread, &t) == 0);
    pthread_join(th, NULL);
    EQ(fake_cuda_pending_ops(), 1);
    OK(cuStreamSynchronize(NULL)); /* the legacy stream is not this thread's 0x2 queue */
    EQ(fake_cuda_pending_ops(), 1);
    OK(cuStreamSynchronize(S_PER_THREAD));
    EQ(fake_cuda_pending_ops(), 0);
    CHECK(dev_all(t.theirs, 32, 0x33));
    /* cuCtxSynchronize runs other threads' per-thread queues, even after they exited */
    t.leave_pending = 1;
    CHECK(pthread_create(&th, NULL, second_thread, &t) == 0);
    pthread_join(th, NULL);
    EQ(fake_cuda_pending_ops(), 1);
    OK(cuStreamSynchronize(S_PER_THREAD));
    EQ(fake_cuda_pending_ops(), 1);
    OK(cuCtxSynchronize());
    EQ(fake_cuda_pending_ops(), 0);
    CHECK(dev_all(t.mine, 32, 0x77));
    OK(cuMemFree_v2(t.mine));
    OK(cuMemFree_v2(t.theirs));
    OK(cuCtxPopCurrent_v2(NULL));
}

/* IPC: an exported allocation opened in a forked child, written there, the write seen here. */
static void test_ipc(void) {
    enum { N = 300 };
    CUcontext c;
    OK(cuCtxPushCurrent_v2(g_ctx0));
    CUdeviceptr d = 0, base = 0, opened = 0;
    size_t size = 0;
    OK(cuMemAlloc_v2(&d, N));
    OK(cuMemsetD8Async(d, 0x5A, N, S_PER_THREAD));
    CUipcMemHandle h, h2;
    MISUSE(cuIpcGetMemHandle(NULL, d), E_VALUE);
    MISUSE(cuIpcGetMemHandle(&h, d + 1), E_VALUE);
    OK(cuIpcGetMemHandle(&h, d)); /* the queued memset moves with the backing */
    OK(cuIpcGetMemHandle(&h2, d));
    CHECK(memcmp(&h, &h2, sizeof h) == 0);
    OK(cuCtxSynchronize());
    CHECK(dev_all(d, N, 0x5A));
    OK(cuMemGetAddressRange_v2(&base, &size, d + 7));
    EQ(base, d);
    EQ(size, N);
    /* Not in the exporting process (the real driver refuses too), and not a misuse. */
    CLEAN(cuIpcOpenMemHandle_v2(&opened, h, 1), E_CONTEXT);
    CUipcMemHandle bad;
    memset(&bad, 0, sizeof bad);
    CLEAN(cuIpcOpenMemHandle_v2(&opened, bad, 1), E_HANDLE);
    MISUSE(cuIpcCloseMemHandle(d), E_VALUE);
    /* A new process (exec, so that it starts with a fresh fake and, under valgrind, runs
     * natively) opens the handle, checks and writes the memory, and closes it. */
    char hex[2 * sizeof h + 1];
    for (size_t i = 0; i < sizeof h; i++)
        snprintf(hex + 2 * i, 3, "%02x", (unsigned char)h.reserved[i]);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        execl(g_self, g_self, "ipc-child", hex, (char *)NULL);
        _exit(127);
    }
    int status = -1;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    unsigned char last = 0;
    EQ(fake_cuda_read(d + N - 1, &last, 1), 0);
    EQ(last, 0x70); /* the child's write */
    OK(cuMemFree_v2(d));
    OK(cuCtxPopCurrent_v2(&c));
}

/* The IPC test's child: argv[2] is the handle in hex. */
static void mode_ipc_child(const char *hex) {
    enum { N = 300 };
    CUipcMemHandle h;
    CHECK(strlen(hex) == 2 * sizeof h);
    for (size_t i = 0; i < sizeof h && hex[2 * i]; i++) {
        unsigned v = 0;
        sscanf(hex + 2 * i, "%2x", &v);
        h.reserved[i] = (char)v;
    }
    CUdevice dev;
    CUcontext ctx, c;
    OK(cuInit(0));
    OK(cuDeviceGet(&dev, 0));
    OK(cuDevicePrimaryCtxRetain(&ctx, dev));
    OK(cuCtxPushCurrent_v2(ctx));
    CUdeviceptr m = 0, base = 0;
    size_t size = 0;
    MISUSE(cuIpcOpenMemHandle_v2(&m, h, 0), E_VALUE); /* flags must be LAZY_ENABLE_PEER_ACCESS */
    OK(cuIpcOpenMemHandle_v2(&m, h, 1));
    EQ(fake_cuda_live_device_allocations(), 1);
    OK(cuMemGetAddressRange_v2(&base, &size, m + 5));
    EQ(base, m);
    EQ(size, N);
    CHECK(dev_all(m, N, 0x5A));
    MISUSE(cuMemFree_v2(m), E_VALUE); /* a mapping is closed, not freed */
    unsigned char v = 0x70;
    OK(cuMemcpyHtoDAsync_v2(m + N - 1, &v, 1, S_PER_THREAD));
    OK(cuCtxSynchronize());
    OK(cuIpcCloseMemHandle(m));
    MISUSE(cuIpcCloseMemHandle(m), E_VALUE);
    OK(cuCtxPopCurrent_v2(&c));
    EQ(fake_cuda_live_device_allocations(), 0);
}

static void test_all_released(void) {
    EQ(fake_cuda_live_device_allocations(), 0);
    EQ(fake_cuda_live_host_allocations(), 0);
    EQ(fake_cuda_live_events(), 0);
    EQ(fake_cuda_pending_ops(), 0);
}

/* ---------------------------------------------------------------------------------------- */

static void mode_main(void) {
    test_before_init();
    test_devices(2);
    test_contexts();
    test_round_trip();
    test_deferral();
    test_2d();
    test_events();
    test_misuse();
    test_failure_injection();
    test_peer_and_contexts();
    test_threads();
    test_error_strings();
    test_write_combined_and_counters();
    test_ipc();
    test_all_released();
}

static void mode_initfail(void) {
    int v = 0;
    const char *s = NULL;
    CLEAN(cuInit(0), E_NO_DEVICE);
    CLEAN(cuInit(0), E_NO_DEVICE);
    MISUSE(cuDeviceGetCount(&v), E_NOT_INIT);
    CUcontext c;
    MISUSE(cuDevicePrimaryCtxRetain(&c, 0), E_NOT_INIT);
    MISUSE(cuCtxPopCurrent_v2(&c), E_NOT_INIT);
    OK(cuDriverGetVersion(&v));
    EQ(v, 12080);
    OK(cuGetErrorName(E_NO_DEVICE, &s));
    CHECK(s && strcmp(s, "CUDA_ERROR_NO_DEVICE") == 0);
    EQ(fake_cuda_call_count("cuInit"), 2);
}

static void mode_nodev(void) {
    OK(cuInit(0));
    test_devices(0);
    CUcontext c;
    CLEAN(cuDevicePrimaryCtxRetain(&c, 0), E_DEVICE);
}

static void mode_smallmem(void) {
    CUcontext c0, c1;
    CUdeviceptr a, b, x;
    OK(cuInit(0));
    OK(cuDevicePrimaryCtxRetain(&c0, 0));
    OK(cuDevicePrimaryCtxRetain(&c1, 1));
    OK(cuCtxPushCurrent_v2(c0));
    OK(cuMemAlloc_v2(&a, 4000));
    CLEAN(cuMemAlloc_v2(&x, 97), E_OOM);
    OK(cuMemAlloc_v2(&b, 96));
    CLEAN(cuMemAlloc_v2(&x, 1), E_OOM);
    OK(cuCtxPushCurrent_v2(c1)); /* capacity is per device */
    OK(cuMemAlloc_v2(&x, 4096));
    OK(cuMemFree_v2(x));
    OK(cuCtxPopCurrent_v2(NULL));
    OK(cuMemFree_v2(b));
    OK(cuMemAlloc_v2(&b, 96));
    OK(cuMemFree_v2(a));
    OK(cuMemFree_v2(b));
    OK(cuCtxPopCurrent_v2(NULL));
    test_all_released();
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "main";
    g_self = argv[0];
    if (!getenv("FAKE_CUDA_VERBOSE"))
        setenv("FAKE_CUDA_QUIET", "1", 1); /* misuses are expected here; keep the log short */
    if (strcmp(mode, "main") == 0)
        mode_main();
    else if (strcmp(mode, "initfail") == 0)
        mode_initfail();
    else if (strcmp(mode, "nodev") == 0)
        mode_nodev();
    else if (strcmp(mode, "smallmem") == 0)
        mode_smallmem();
    else if (strcmp(mode, "ipc-child") == 0 && argc > 2)
        mode_ipc_child(argv[2]);
    else {
        fprintf(stderr, "usage: %s main|initfail|nodev|smallmem\n", argv[0]);
        return 2;
    }
    printf("fake-cuda selftest (%s): %d checks, %d failed, %ld misuses recorded\n", mode,
           g_checks, g_failed, fake_cuda_misuse_count());
    return g_failed ? 1 : 0;
}
