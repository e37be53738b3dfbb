/*
 * fake_cuda.c -- a fake CUDA driver (libcuda.so) for testing dlbridge on machines without a GPU.
 *
 * It implements, with host memory, exactly the driver entry points dlbridge calls, and it is
 * deliberately strict: device addresses are not host-dereferenceable and are never reused, every
 * asynchronous operation is deferred until the program synchronises, and every contract violation
 * ("misuse") is counted, remembered and printed to stderr. See README.md next to this file.
 *
 * This proves dlbridge's driver-API logic (contexts, streams, synchronisation, lifetimes, bounds);
 * it proves nothing about real GPUs.
 *
 * Written from scratch for dlbridge; the few driver ABI types below are declared from the
 * documented facts of the x86-64 Linux driver ABI (sizes, field order, enumerator values).
 *
 * Build: gcc -std=c11 -shared -fPIC -O1 -g -Wall -Wextra -Werror -pthread fake_cuda.c -o libcuda.so
 */
#define _POSIX_C_SOURCE 200809L

#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------------
 * Driver ABI types (declared here; no NVIDIA header is used).
 * ------------------------------------------------------------------------------------------- */

typedef int CUresult;
typedef int CUdevice;
typedef struct fake_ctx *CUcontext;
typedef struct fake_stream_tag *CUstream; /* never dereferenced: only 0, 0x1, 0x2 are valid */
typedef struct fake_event_tag *CUevent;   /* never dereferenced: looked up in a table */
typedef unsigned long long CUdeviceptr;

typedef enum {
    CU_MEMORYTYPE_HOST = 1,
    CU_MEMORYTYPE_DEVICE = 2,
    CU_MEMORYTYPE_ARRAY = 3,
    CU_MEMORYTYPE_UNIFIED = 4
} CUmemorytype;

typedef struct {
    size_t srcXInBytes;
    size_t srcY;
    CUmemorytype srcMemoryType;
    const void *srcHost;
    CUdeviceptr srcDevice;
    void *srcArray;
    size_t srcPitch;
    size_t dstXInBytes;
    size_t dstY;
    CUmemorytype dstMemoryType;
    void *dstHost;
    CUdeviceptr dstDevice;
    void *dstArray;
    size_t dstPitch;
    size_t WidthInBytes;
    size_t Height;
} CUDA_MEMCPY2D;

_Static_assert(sizeof(CUDA_MEMCPY2D) == 128, "CUDA_MEMCPY2D must be 128 bytes on x86-64");
_Static_assert(sizeof(CUdeviceptr) == 8, "CUdeviceptr must be 64-bit");
_Static_assert(sizeof(CUmemorytype) == 4, "CUmemorytype must be 4 bytes");

enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_DEINITIALIZED = 4,
    CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_ILLEGAL_ADDRESS = 700
};

enum {
    CU_MEMHOSTALLOC_PORTABLE = 1,
    CU_MEMHOSTALLOC_DEVICEMAP = 2,
    CU_MEMHOSTALLOC_WRITECOMBINED = 4,
    CU_EVENT_BLOCKING_SYNC = 1,
    CU_EVENT_DISABLE_TIMING = 2,
    CU_EVENT_INTERPROCESS = 4
};

#define EXPORT __attribute__((visibility("default")))

/* ---------------------------------------------------------------------------------------------
 * Configuration constants.
 * ------------------------------------------------------------------------------------------- */

#define FAKE_DRIVER_VERSION 12080
/* Device addresses: non-canonical on x86-64 (4-level paging), so a host dereference faults. */
#define FAKE_DEV_BASE 0x0001000000000000ULL
#define FAKE_DEV_END 0x0002000000000000ULL
/* Event handles: also non-canonical values, never reused. */
#define FAKE_EVT_BASE 0x0003000000000000ULL
#define FAKE_EVT_STEP 0x10ULL
#define DEV_ALIGN 512ULL
#define HOST_ALIGN 4096ULL
#define MAX_DEVICES 16
#define DEFAULT_DEVICES 2
#define DEFAULT_CAPACITY (1ULL << 30)
#define MAX_CTX_STACK 64
#define GARBAGE 0xA5
#define CTX_MAGIC 0xC7C7C7C7u

/* ---------------------------------------------------------------------------------------------
 * State. One global mutex protects everything except the per-thread context stack.
 * ------------------------------------------------------------------------------------------- */

struct fake_ctx {
    unsigned magic;
    int device;
    long retain;
};

struct dev_alloc {
    CUdeviceptr base;
    size_t size;
    int device;
    unsigned char *backing;
    /* IPC: an allocation exported with cuIpcGetMemHandle moves its backing into a named POSIX
     * shared-memory object (shm_name, unlinked when the allocation is freed); one opened from a
     * handle (ipc_opened) maps another process's object and is released by
     * cuIpcCloseMemHandle. Either way the backing is a shared mapping (munmap, not free). */
    char shm_name[40];
    int ipc_opened;
};

/* CUipcMemHandle: 64 opaque bytes. The fake's: a magic, the exporting process, the device, the
 * size and the shared-memory object's name. */
typedef struct {
    char reserved[64];
} CUipcMemHandle;

struct fake_ipc {
    char magic[8];
    uint32_t pid;
    int32_t device;
    uint64_t size;
    char name[40];
};
_Static_assert(sizeof(struct fake_ipc) == 64, "the fake's IPC handle fills CUipcMemHandle");
_Static_assert(sizeof(CUipcMemHandle) == 64, "CUipcMemHandle is 64 bytes");
#define FAKE_IPC_MAGIC "FAKEIPC1"
enum { CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS = 1 };

struct host_alloc {
    unsigned char *ptr;
    size_t size;
    unsigned flags;
};

struct fake_event {
    uintptr_t handle;
    unsigned flags;
    int device;
    int recorded;
    uint64_t qid;
    uint64_t seq; /* ops of queue qid with seq <= this precede the record point */
};

/* One side of a copy: host pointer or fake device address of the first touched byte. */
struct side {
    int mem; /* 0 (unused), CU_MEMORYTYPE_HOST or CU_MEMORYTYPE_DEVICE */
    uintptr_t start;
    size_t pitch;
};

enum op_kind { OP_MEMSET, OP_COPY };

struct op {
    struct op *next;
    uint64_t qid;
    uint64_t seq;
    int kind;
    struct side src, dst;
    size_t width, height;
    unsigned char value;
};

#define ENTRY_POINTS(X)                                                                       \
    X(cuInit)                                                                                 \
    X(cuDriverGetVersion)                                                                     \
    X(cuDeviceGetCount)                                                                       \
    X(cuDeviceGet)                                                                            \
    X(cuDeviceGetName)                                                                        \
    X(cuDevicePrimaryCtxRetain)                                                               \
    X(cuCtxPushCurrent_v2)                                                                    \
    X(cuCtxPopCurrent_v2)                                                                     \
    X(cuCtxSynchronize)                                                                       \
    X(cuMemAlloc_v2)                                                                          \
    X(cuMemFree_v2)                                                                           \
    X(cuMemHostAlloc)                                                                         \
    X(cuMemFreeHost)                                                                          \
    X(cuMemsetD8Async)                                                                        \
    X(cuMemcpyHtoDAsync_v2)                                                                   \
    X(cuMemcpyDtoHAsync_v2)                                                                   \
    X(cuMemcpyDtoDAsync_v2)                                                                   \
    X(cuMemcpy2DAsync_v2)                                                                     \
    X(cuMemcpyPeerAsync)                                                                      \
    X(cuStreamSynchronize)                                                                    \
    X(cuEventCreate)                                                                          \
    X(cuEventRecord)                                                                          \
    X(cuEventSynchronize)                                                                     \
    X(cuEventDestroy_v2)                                                                      \
    X(cuGetErrorName)                                                                         \
    X(cuGetErrorString)                                                                       \
    X(cuIpcGetMemHandle)                                                                      \
    X(cuIpcOpenMemHandle_v2)                                                                  \
    X(cuIpcCloseMemHandle)                                                                    \
    X(cuMemGetAddressRange_v2)

#define X_ENUM(name) IDX_##name,
enum { ENTRY_POINTS(X_ENUM) N_ENTRIES };
#undef X_ENUM
#define X_NAME(name) #name,
static const char *const g_entry_names[N_ENTRIES] = {ENTRY_POINTS(X_NAME)};
#undef X_NAME

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *g_cur_fn = "";
static long g_calls[N_ENTRIES];

static int g_init_state; /* 0 not yet, 1 initialised, 2 cuInit failed on purpose */
static int g_init_result;
static int g_ndevices;
static unsigned long long g_capacity = DEFAULT_CAPACITY;
static unsigned long long g_used[MAX_DEVICES];
static struct fake_ctx g_ctx[MAX_DEVICES];

static CUdeviceptr g_next_dev = FAKE_DEV_BASE;
static struct dev_alloc *g_dev; /* sorted by base (bases only grow) */
static size_t g_ndev_allocs, g_cap_dev;

static struct host_alloc *g_host;
static size_t g_nhost, g_cap_host;

static struct fake_event **g_evt;
static size_t g_nevt, g_cap_evt;
static uintptr_t g_next_evt = FAKE_EVT_BASE;

static struct op *g_ops_head, *g_ops_tail;
static long g_npending;
static uint64_t g_seq;
static uint64_t g_next_thread_qid;

static long g_alloc_budget = -1;
static long g_copy_budget = -1;

static long g_misuse;
static char g_last_misuse[640];
static long g_bytes[4]; /* HtoD, DtoH, DtoD (incl. peer), HtoH (2-D host-to-host) */
static long g_wc;

static _Thread_local struct fake_ctx *t_stack[MAX_CTX_STACK];
static _Thread_local int t_depth;
static _Thread_local uint64_t t_qid;

/* ---------------------------------------------------------------------------------------------
 * Helpers (all called with g_lock held).
 * ------------------------------------------------------------------------------------------- */

static void enter(int idx) {
    pthread_mutex_lock(&g_lock);
    g_calls[idx]++;
    g_cur_fn = g_entry_names[idx];
}

static void leave(void) {
    g_cur_fn = "";
    pthread_mutex_unlock(&g_lock);
}

static int env_flag(const char *name) {
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

__attribute__((format(printf, 2, 3))) static CUresult misuse(CUresult code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(g_last_misuse, sizeof g_last_misuse, "%s: %s", g_cur_fn, msg);
    g_misuse++;
    if (!env_flag("FAKE_CUDA_QUIET"))
        fprintf(stderr, "fake-cuda misuse: %s\n", g_last_misuse);
    if (env_flag("FAKE_CUDA_ABORT_ON_MISUSE"))
        abort();
    return code;
}

static CUresult need_init(void) {
    if (g_init_state == 1)
        return CUDA_SUCCESS;
    if (g_init_state == 2)
        return misuse(CUDA_ERROR_NOT_INITIALIZED, "called after cuInit failed (returned %d)",
                      g_init_result);
    return misuse(CUDA_ERROR_NOT_INITIALIZED, "called before a successful cuInit");
}

static CUresult need_ctx(struct fake_ctx **out) {
    CUresult r = need_init();
    if (r != CUDA_SUCCESS)
        return r;
    if (t_depth == 0)
        return misuse(CUDA_ERROR_INVALID_CONTEXT,
                      "no current context on this thread (missing cuCtxPushCurrent?)");
    *out = t_stack[t_depth - 1];
    return CUDA_SUCCESS;
}

static struct fake_ctx *ctx_lookup(CUcontext c) {
    for (int i = 0; i < g_ndevices; i++)
        if (c == &g_ctx[i])
            return &g_ctx[i];
    return NULL;
}

static int round_up(unsigned long long n, unsigned long long a, unsigned long long *out) {
    if (n > ~0ULL - (a - 1))
        return -1;
    *out = (n + a - 1) / a * a;
    return 0;
}

/* Index of the live device allocation containing addr, or -1. */
static long find_dev(CUdeviceptr addr) {
    size_t lo = 0, hi = g_ndev_allocs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (g_dev[mid].base <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return -1;
    const struct dev_alloc *d = &g_dev[lo - 1];
    return addr - d->base < d->size ? (long)(lo - 1) : -1;
}

/* Index of the pinned allocation containing p, or -1. */
static long find_host(uintptr_t p) {
    for (size_t i = 0; i < g_nhost; i++) {
        uintptr_t b = (uintptr_t)g_host[i].ptr;
        if (p >= b && p - b < g_host[i].size)
            return (long)i;
    }
    return -1;
}

static CUresult check_dev_range(CUdeviceptr addr, size_t len, const char *what) {
    long i = find_dev(addr);
    if (i < 0)
        return misuse(CUDA_ERROR_INVALID_VALUE,
                      "%s 0x%llx is not inside any live device allocation "
                      "(freed, never allocated, or a host pointer)",
                      what, addr);
    const struct dev_alloc *d = &g_dev[i];
    if (len > d->size - (size_t)(addr - d->base))
        return misuse(CUDA_ERROR_INVALID_VALUE,
                      "%s range [0x%llx, +%zu) overruns its allocation [0x%llx, +%zu) by %zu bytes",
                      what, addr, len, d->base, d->size,
                      len - (d->size - (size_t)(addr - d->base)));
    return CUDA_SUCCESS;
}

static CUresult check_host_range(uintptr_t p, size_t len, const char *what) {
    if (p == 0)
        return misuse(CUDA_ERROR_INVALID_VALUE, "%s is NULL", what);
    if (len > UINTPTR_MAX - p)
        return misuse(CUDA_ERROR_INVALID_VALUE, "%s range wraps around the address space", what);
    if (p < FAKE_DEV_END && p + len > FAKE_DEV_BASE)
        return misuse(CUDA_ERROR_INVALID_VALUE,
                      "%s %#lx lies in the fake device address range "
                      "(device pointer passed where a host pointer is expected)",
                      what, (unsigned long)p);
    long h = find_host(p);
    if (h >= 0) {
        const struct host_alloc *a = &g_host[h];
        size_t left = a->size - (size_t)(p - (uintptr_t)a->ptr);
        if (len > left)
            return misuse(CUDA_ERROR_INVALID_VALUE,
                          "%s range [%p, +%zu) overruns its pinned allocation [%p, +%zu) by %zu "
                          "bytes",
                          what, (void *)p, len, (void *)a->ptr, a->size, len - left);
    }
    return CUDA_SUCCESS;
}

/* Bytes spanned by `height` rows of `width` bytes, `pitch` apart; -1 on overflow. */
static int span_of(size_t pitch, size_t width, size_t height, size_t *out) {
    size_t rows = 0;
    if (height == 0 || width == 0) {
        *out = 0;
        return 0;
    }
    if (__builtin_mul_overflow(height - 1, pitch, &rows) ||
        __builtin_add_overflow(rows, width, out))
        return -1;
    return 0;
}

static CUresult check_side(const struct side *s, size_t width, size_t height, const char *what) {
    size_t span = 0;
    if (span_of(s->pitch, width, height, &span))
        return misuse(CUDA_ERROR_INVALID_VALUE, "%s: 2-D extent overflows", what);
    if (s->mem == CU_MEMORYTYPE_DEVICE)
        return check_dev_range((CUdeviceptr)s->start, span, what);
    return check_host_range(s->start, span, what);
}

static CUresult stream_key(const struct fake_ctx *c, CUstream s, uint64_t *key) {
    uintptr_t h = (uintptr_t)s;
    uint64_t base = (uint64_t)(c->device + 1) << 40;
    if (h == 0 || h == 1) {
        *key = base;
    } else if (h == 2) {
        if (t_qid == 0)
            t_qid = ++g_next_thread_qid;
        *key = base | t_qid;
    } else {
        return misuse(CUDA_ERROR_INVALID_HANDLE,
                      "unknown stream handle %p (only 0, CU_STREAM_LEGACY and "
                      "CU_STREAM_PER_THREAD exist here)",
                      (void *)s);
    }
    return CUDA_SUCCESS;
}

static int key_device(uint64_t key) {
    return (int)(key >> 40) - 1;
}

/* Real address of a side's first byte at execution time, or NULL if it went away. */
static unsigned char *resolve(const struct side *s, size_t span) {
    if (s->mem == CU_MEMORYTYPE_HOST)
        return (unsigned char *)s->start;
    long i = find_dev((CUdeviceptr)s->start);
    if (i < 0)
        return NULL;
    const struct dev_alloc *d = &g_dev[i];
    if (span > d->size - (size_t)(s->start - d->base))
        return NULL;
    return d->backing + (s->start - d->base);
}

static void exec_op(struct op *o) {
    size_t dspan = 0, sspan = 0;
    span_of(o->dst.pitch, o->width, o->height, &dspan);
    unsigned char *dp = resolve(&o->dst, dspan);
    if (!dp) {
        misuse(CUDA_SUCCESS, "internal: queued op's destination vanished before execution");
        return;
    }
    if (o->kind == OP_MEMSET) {
        memset(dp, o->value, o->width);
        return;
    }
    span_of(o->src.pitch, o->width, o->height, &sspan);
    const unsigned char *sp = resolve(&o->src, sspan);
    if (!sp) {
        misuse(CUDA_SUCCESS, "internal: queued op's source vanished before execution");
        return;
    }
    for (size_t y = 0; y < o->height; y++)
        memmove(dp + y * o->dst.pitch, sp + y * o->src.pitch, o->width);
    int kind;
    if (o->src.mem == CU_MEMORYTYPE_HOST)
        kind = o->dst.mem == CU_MEMORYTYPE_DEVICE ? 0 : 3;
    else
        kind = o->dst.mem == CU_MEMORYTYPE_HOST ? 1 : 2;
    g_bytes[kind] += (long)(o->width * o->height);
}

/* Run (in FIFO order) every pending op matching the filter. */
struct filter {
    int by_device; /* 1: every queue of `device`; 0: queue `qid` up to `max_seq` */
    int device;
    uint64_t qid;
    uint64_t max_seq;
};

static int matches(const struct op *o, const struct filter *f) {
    if (f->by_device)
        return key_device(o->qid) == f->device;
    return o->qid == f->qid && o->seq <= f->max_seq;
}

static void run_ops(const struct filter *f) {
    struct op *prev = NULL, *o = g_ops_head;
    while (o) {
        struct op *next = o->next;
        if (matches(o, f)) {
            exec_op(o);
            if (prev)
                prev->next = next;
            else
                g_ops_head = next;
            if (g_ops_tail == o)
                g_ops_tail = prev;
            free(o);
            g_npending--;
        } else {
            prev = o;
        }
        o = next;
    }
}

static int side_overlaps(const struct side *s, size_t w, size_t h, int mem, uintptr_t lo,
                         uintptr_t hi) {
    size_t span = 0;
    if (s->mem != mem)
        return 0;
    span_of(s->pitch, w, h, &span);
    return s->start < hi && s->start + span > lo;
}

static struct op *find_ref(int mem, uintptr_t lo, uintptr_t hi, long *count) {
    struct op *first = NULL;
    *count = 0;
    for (struct op *o = g_ops_head; o; o = o->next) {
        if (side_overlaps(&o->dst, o->width, o->height, mem, lo, hi) ||
            (o->kind == OP_COPY && side_overlaps(&o->src, o->width, o->height, mem, lo, hi))) {
            if (!first)
                first = o;
            ++*count;
        }
    }
    return first;
}

/* Before freeing [lo, hi): pending work that touches it is a misuse; run those queues. */
static void drain_refs(int mem, uintptr_t lo, uintptr_t hi, const char *what) {
    long n;
    struct op *o = find_ref(mem, lo, hi, &n);
    if (!o)
        return;
    misuse(CUDA_SUCCESS,
           "%s %#lx freed while %ld queued operation(s) still reference it "
           "(missing stream/event synchronisation before free)",
           what, (unsigned long)lo, n);
    while ((o = find_ref(mem, lo, hi, &n)) != NULL) {
        struct filter f = {0, 0, o->qid, UINT64_MAX};
        run_ops(&f);
    }
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 16;
    while (ncap < need)
        ncap *= 2;
    void *p = realloc(*arr, ncap * elem);
    if (!p)
        return -1;
    *arr = p;
    *cap = ncap;
    return 0;
}

/* Validate both sides, apply copy failure injection, then defer the op onto its queue. */
static CUresult submit(const struct fake_ctx *c, CUstream stream, int kind, const struct side *src,
                       const struct side *dst, size_t width, size_t height, unsigned char value) {
    uint64_t key = 0;
    CUresult r = stream_key(c, stream, &key);
    if (r != CUDA_SUCCESS)
        return r;
    int empty = width == 0 || height == 0;
    if (!empty) {
        if (kind == OP_COPY && (r = check_side(src, width, height, "source")) != CUDA_SUCCESS)
            return r;
        if ((r = check_side(dst, width, height, "destination")) != CUDA_SUCCESS)
            return r;
    }
    if (g_copy_budget == 0)
        return CUDA_ERROR_ILLEGAL_ADDRESS; /* injected failure: not a misuse */
    if (!empty) {
        struct op *o = calloc(1, sizeof *o);
        if (!o)
            return CUDA_ERROR_OUT_OF_MEMORY;
        o->qid = key;
        o->seq = ++g_seq;
        o->kind = kind;
        if (src)
            o->src = *src;
        o->dst = *dst;
        o->width = width;
        o->height = height;
        o->value = value;
        if (g_ops_tail)
            g_ops_tail->next = o;
        else
            g_ops_head = o;
        g_ops_tail = o;
        g_npending++;
    }
    if (g_copy_budget > 0)
        g_copy_budget--;
    return CUDA_SUCCESS;
}

static long find_event(CUevent e) {
    for (size_t i = 0; i < g_nevt; i++)
        if (g_evt[i]->handle == (uintptr_t)e)
            return (long)i;
    return -1;
}

static CUresult bad_event(CUevent e) {
    return misuse(CUDA_ERROR_INVALID_HANDLE,
                  "event %p is not a live event (destroyed, or never created)", (void *)e);
}

static long env_long(const char *name, long dflt, long lo, long hi) {
    const char *v = getenv(name);
    if (!v || !*v)
        return dflt;
    char *end;
    long x = strtol(v, &end, 0);
    if (*end || x < lo || x > hi) {
        fprintf(stderr, "fake-cuda: ignoring %s=%s (want %ld..%ld); using %ld\n", name, v, lo, hi,
                dflt);
        return dflt;
    }
    return x;
}

/* ---------------------------------------------------------------------------------------------
 * Entry point implementations (lock held).
 * ------------------------------------------------------------------------------------------- */

static CUresult do_init(unsigned flags) {
    if (flags != 0)
        return misuse(CUDA_ERROR_INVALID_VALUE, "flags must be 0 (got %u)", flags);
    if (g_init_state == 0) {
        g_init_result = (int)env_long("FAKE_CUDA_INIT_RESULT", 0, 0, 1000000);
        if (g_init_result != 0) {
            g_init_state = 2;
        } else {
            g_ndevices = (int)env_long("FAKE_CUDA_DEVICES", DEFAULT_DEVICES, 0, MAX_DEVICES);
            const char *m = getenv("FAKE_CUDA_DEVICE_MEMORY");
            if (m && *m) {
                char *end;
                unsigned long long x = strtoull(m, &end, 0);
                if (*end || m[0] == '-')
                    fprintf(stderr, "fake-cuda: ignoring FAKE_CUDA_DEVICE_MEMORY=%s\n", m);
                else
                    g_capacity = x;
            }
            for (int i = 0; i < g_ndevices; i++) {
                g_ctx[i].magic = CTX_MAGIC;
                g_ctx[i].device = i;
                g_ctx[i].retain = 0;
            }
            g_init_state = 1;
        }
    }
    return g_init_state == 1 ? CUDA_SUCCESS : g_init_result;
}

static CUresult do_device_get_count(int *count) {
    CUresult r = need_init();
    if (r)
        return r;
    if (!count)
        return misuse(CUDA_ERROR_INVALID_VALUE, "count pointer is NULL");
    *count = g_ndevices;
    return CUDA_SUCCESS;
}

static CUresult do_device_get(CUdevice *dev, int ordinal) {
    CUresult r = need_init();
    if (r)
        return r;
    if (!dev)
        return misuse(CUDA_ERROR_INVALID_VALUE, "device pointer is NULL");
    if (ordinal < 0 || ordinal >= g_ndevices)
        return CUDA_ERROR_INVALID_DEVICE;
    *dev = ordinal;
    return CUDA_SUCCESS;
}

static CUresult do_device_get_name(char *name, int len, CUdevice dev) {
    CUresult r = need_init();
    if (r)
        return r;
    if (!name || len <= 0)
        return misuse(CUDA_ERROR_INVALID_VALUE, "name buffer is NULL or len %d <= 0", len);
    if (dev < 0 || dev >= g_ndevices)
        return CUDA_ERROR_INVALID_DEVICE;
    snprintf(name, (size_t)len, "dlbridge fake CUDA device %d", dev);
    return CUDA_SUCCESS;
}

static CUresult do_primary_retain(CUcontext *pctx, CUdevice dev) {
    CUresult r = need_init();
    if (r)
        return r;
    if (!pctx)
        return misuse(CUDA_ERROR_INVALID_VALUE, "context pointer is NULL");
    if (dev < 0 || dev >= g_ndevices)
        return CUDA_ERROR_INVALID_DEVICE;
    g_ctx[dev].retain++;
    *pctx = &g_ctx[dev];
    return CUDA_SUCCESS;
}

static CUresult do_ctx_push(CUcontext ctx) {
    CUresult r = need_init();
    if (r)
        return r;
    struct fake_ctx *c = ctx_lookup(ctx);
    if (!c)
        return misuse(CUDA_ERROR_INVALID_CONTEXT, "%p is not a context", (void *)ctx);
    if (c->retain <= 0)
        return misuse(CUDA_ERROR_INVALID_CONTEXT,
                      "primary context of device %d pushed before cuDevicePrimaryCtxRetain",
                      c->device);
    if (t_depth == MAX_CTX_STACK)
        return misuse(CUDA_ERROR_INVALID_VALUE,
                      "context stack overflow (%d deep): unbalanced push/pop?", MAX_CTX_STACK);
    t_stack[t_depth++] = c;
    return CUDA_SUCCESS;
}

static CUresult do_ctx_pop(CUcontext *pctx) {
    CUresult r = need_init();
    if (r)
        return r;
    if (t_depth == 0)
        return misuse(CUDA_ERROR_INVALID_CONTEXT, "context stack of this thread is empty");
    struct fake_ctx *c = t_stack[--t_depth];
    t_stack[t_depth] = NULL;
    if (pctx)
        *pctx = c;
    return CUDA_SUCCESS;
}

static CUresult do_ctx_sync(void) {
    struct fake_ctx *c = NULL;
    CUresult r = need_ctx(&c);
    if (r)
        return r;
    struct filter f = {1, c->device, 0, 0};
    run_ops(&f);
    return CUDA_SUCCESS;
}

static CUresult do_mem_alloc(CUdeviceptr *dptr, size_t n) {
    struct fake_ctx *c = NULL;
    CUresult r = need_ctx(&c);
    if (r)
        return r;
    if (!dptr)
        return misuse(CUDA_ERROR_INVALID_VALUE, "result pointer is NULL");
    if (n == 0)
        return misuse(CUDA_ERROR_INVALID_VALUE, "size 0 allocation");
    if (g_alloc_budget == 0)
        return CUDA_ERROR_OUT_OF_MEMORY; /* injected */
    int dev = c->device;
    if (g_used[dev] > g_capacity || n > g_capacity - g_used[dev])
        return CUDA_ERROR_OUT_OF_MEMORY;
    unsigned long long rounded;
    if (round_up(n, DEV_ALIGN, &rounded) || rounded + DEV_ALIGN > FAKE_DEV_END - g_next_dev)
        return CUDA_ERROR_OUT_OF_MEMORY;
    if (grow((void **)&g_dev, &g_cap_dev, g_ndev_allocs + 1, sizeof *g_dev))
        return CUDA_ERROR_OUT_OF_MEMORY;
    unsigned char *backing = malloc(n);
    if (!backing)
        return CUDA_ERROR_OUT_OF_MEMORY;
    memset(backing, GARBAGE, n);
    struct dev_alloc *d = &g_dev[g_ndev_allocs++];
    d->base = g_next_dev;
    d->size = n;
    d->device = dev;
    d->backing = backing;
    d->shm_name[0] = '\0';
    d->ipc_opened = 0;
    g_next_dev += rounded + DEV_ALIGN; /* a guard gap, and addresses are never reused */
    g_used[dev] += n;
    if (g_alloc_budget > 0)
        g_alloc_budget--;
    *dptr = d->base;
    return CUDA_SUCCESS;
}

/* Gives a device allocation's backing back: free, or unmap (and unlink the exported name). */
static void release_backing(struct dev_alloc *d) {
    if (d->shm_name[0] || d->ipc_opened) {
        munmap(d->backing, d->size);
        if (d->shm_name[0] && !d->ipc_opened)
            shm_unlink(d->shm_name);
    } else {
        free(d->backing);
    }
}

static void remove_dev(long i) {
    memmove(&g_dev[i], &g_dev[i + 1], (g_ndev_allocs - (size_t)i - 1) * sizeof *g_dev);
    if (--g_ndev_allocs == 0) {
        free(g_dev);
        g_dev = NULL;
        g_cap_dev = 0;
    }
}

static CUresult do_mem_free(CUdeviceptr p) {
    struct fake_ctx *c = NULL;
    CUresult r = need_ctx(&c);
    if (r)
        return r;
    long i = find_dev(p);
    if (i < 0)
        return misuse(CUDA_ERROR_INVALID_VALUE,
                      "0x%llx is not a live device allocation (double free, or never allocated)",
                      p);
    struct dev_alloc *d = &g_dev[i];
    if (d->base != p)
        return misuse(CUDA_ERROR_INVALID_VALUE,
                      "0x%llx points into allocation 0x%llx but is not its start", p, d->base);
    if (d->device != c->device)
        return misuse(CUDA_ERROR_INVALID_VALUE,
                      "0x%llx belongs to device %d but device %d's context is current", p,
                      d->device, c->device);
    drain_refs(CU_MEMORYTYPE_DEVICE, (uintptr_t)d->base, (uintptr_t)(d->base + d->size),
               "device allocation");
    d = &g_dev[i]; /* unchanged by running ops, but re-read for clarity */
    if (d->ipc_opened)
        return misuse(CUDA_ERROR_INVALID_VALUE,
                      "0x%llx was opened with cuIpcOpenMemHandle: close it with cuIpcCloseMemHandle",
                      p);
    release_backing(d);
    g_used[d->device] -= d->size;
    remove_dev(i);
    return CUDA_SUCCESS;
}

static CUresult do_host_alloc(void **pp, size_t n, unsigned flags) {
    struct fake_ctx *c = NULL;
    CUresult r = need_ctx(&c);
    if (r)
        return r;
    if (!pp)
        return misuse(CUDA_ERROR_INVALID_VALUE, "result pointer is NULL");
    if (n == 0)
        return misuse(CUDA_ERROR_INVALID_VALUE, "size 0 allocation");
    if (flags & ~(unsigned)(CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP |
                            CU_MEMHOSTALLOC_WRITECOMBINED))
        return misuse(CUDA_ERROR_INVALID_VALUE, "unknown flags %#x", flags);
    if (g_alloc_budget == 0)
        return CUDA_ERROR_OUT_OF_MEMORY; /* injected */
    unsigned long long rounded;
    if (round_up(n, HOST_ALIGN, &rounded) || rounded > SIZE_MAX)
        return CUDA_ERROR_OUT_OF_MEMORY;
    if (grow((void **)&g_host, &g_cap_host, g_nhost + 1, sizeof *g_host))
        return CUDA_ERROR_OUT_OF_MEMORY;
    void *p;
    if (posix_memalign(&p, HOST_ALIGN, (size_t)rounded))
        return CUDA_ERROR_OUT_OF_MEMORY;
    memset(p, GARBAGE, (size_t)rounded);
    g_host[g_nhost].ptr = p;
    g_host[g_nhost].size = n;
    g_host[g_nhost].flags = flags;
    g_nhost++;
    if (flags & CU_MEMHOSTALLOC_WRITECOMBINED)
        g_wc++;
    if (g_alloc_budget > 0)
        g_alloc_budget--;
    *pp = p;
    return CUDA_SUCCESS;
}

static CUresult do_free_host(void *p) {
    struct fake_ctx *c = NULL;
    CUresult r = need_ctx(&c);
    if (r)
        return r;
    long i = find_host((uintptr_t)p);
    if (i < 0)
        return misuse(CUDA_ERROR_INVALID_VALUE,
                      "%p is not a live cuMemHostAlloc allocation (double free, or never "
                      "allocated by cuMemHostAlloc)",
                      p);
    if ((void *)g_host[i].ptr != p)
        return misuse(CUDA_ERROR_INVALID_VALUE, "%p points into pinned allocation %p but is not its start",
                      p, (void *)g_host[i].ptr);
    drain_refs(CU_MEMORYTYPE_HOST, (uintptr_t)p, (uintptr_t)p + g_host[i].size,
               "pinned host allocation");
    free(g_host[i].ptr);
    g_host[i] = g_host[--g_nhost];
    if (g_nhost == 0) {
        free(g_host);
        g_host = NULL;
        g_cap_host = 0;
    }
    return CUDA_SUCCESS;
}

static struct side dev_side(CUdeviceptr p, size_t pitch) {
    struct side s = {CU_MEMORYTYPE_DEVICE, (uintptr_t)p, pitch};
    return s;
}

static struct side host_side(const void *p, size_t pitch) {
    struct side s = {CU_MEMORYTYPE_HOST, (uintptr_t)p, pitch};
    return s;
}

static CUresult do_memset(CUdeviceptr dst, unsigned char v, size_t n, CUstream s) {
    struct fake_ctx *c = NULL;
    CUresult r = need_ctx(&c);
    if (r)
        return r;
    struct side d = dev_side(dst, n);
    return submit(c, s, OP_MEMSET, NULL, &d, n, 1, v);
}

static CUresult do_copy1d(struct side src, struct side dst, size_t n, CUstream s) {
    struct fake_ctx *c = NULL;
    CUresult r = need_ctx(&c);
    if (r)
        return r;
    return submit(c, s, OP_COPY, &src, &dst, n, 1, 0);
}

static CUresult side_2d(CUmemorytype type, const void *host, CUdeviceptr dev, size_t x, size_t y,
                        size_t pitch, const char *what, struct side *out) {
    uintptr_t base, off;
    if (type == CU_MEMORYTYPE_HOST) {
        if (!host)
            return misuse(CUDA_ERROR_INVALID_VALUE, "%s host pointer is NULL", what);
        base = (uintptr_t)host;
    } else {
        base = (uintptr_t)dev;
    }
    if (__builtin_mul_overflow(y, pitch, &off) || __builtin_add_overflow(off, x, &off) ||
        __builtin_add_overflow(base, off, &base))
        return misuse(CUDA_ERROR_INVALID_VALUE, "%s offset (X + Y*pitch) overflows", what);
    out->mem = (int)type;
    out->start = base;
    out->pitch = pitch;
    return CUDA_SUCCESS;
}

static CUresult do_copy2d(const CUDA_MEMCPY2D *p, CUstream s) {
    struct fake_ctx *c = NULL;
    CUresult r = need_ctx(&c);
    if (r)
        return r;
    if (!p)
        return misuse(CUDA_ERROR_INVALID_VALUE, "descriptor pointer is NULL");
    CUDA_MEMCPY2D d = *p;
    if ((d.srcMemoryType != CU_MEMORYTYPE_HOST && d.srcMemoryType != CU_MEMORYTYPE_DEVICE) ||
        (d.dstMemoryType != CU_MEMORYTYPE_HOST && d.dstMemoryType != CU_MEMORYTYPE_DEVICE))
        return misuse(CUDA_ERROR_INVALID_VALUE,
                      "unsupported memory type (src %d, dst %d; the fake supports HOST=1 and "
                      "DEVICE=2 only)",
                      (int)d.srcMemoryType, (int)d.dstMemoryType);
    if (d.Height > 1 && (d.srcPitch < d.WidthInBytes || d.dstPitch < d.WidthInBytes))
        return misuse(CUDA_ERROR_INVALID_VALUE,
                      "pitch smaller than WidthInBytes (srcPitch %zu, dstPitch %zu, width %zu, "
                      "height %zu)",
                      d.srcPitch, d.dstPitch, d.WidthInBytes, d.Height);
    struct side src = {0, 0, 0}, dst = {0, 0, 0};
    if (d.WidthInBytes && d.Height) {
        if ((r = side_2d(d.srcMemoryType, d.srcHost, d.srcDevice, d.srcXInBytes, d.srcY,
                         d.srcPitch, "source", &src)) != CUDA_SUCCESS)
            return r;
        if ((r = side_2d(d.dstMemoryType, d.dstHost, d.dstDevice, d.dstXInBytes, d.dstY,
                         d.dstPitch, "destination", &dst)) != CUDA_SUCCESS)
            return r;
    }
    return submit(c, s, OP_COPY, &src, &dst, d.WidthInBytes, d.Height, 0);
}

static CUresult do_copy_peer(CUdeviceptr dst, CUcontext dctx, CUdeviceptr src, CUcontext sctx,
                             size_t n, CUstream s) {
    struct fake_ctx *c = NULL;
    CUresult r = need_ctx(&c);
    if (r)
        return r;
    struct fake_ctx *dc = ctx_lookup(dctx), *sc = ctx_lookup(sctx);
    if (!dc || !sc)
        return misuse(CUDA_ERROR_INVALID_CONTEXT, "%s context %p is not a context",
                      dc ? "source" : "destination", dc ? (void *)sctx : (void *)dctx);
    if (n) {
        long di = find_dev(dst), si = find_dev(src);
        if (di >= 0 && g_dev[di].device != dc->device)
            return misuse(CUDA_ERROR_INVALID_VALUE,
                          "destination 0x%llx is on device %d, but dstCtx is device %d's", dst,
                          g_dev[di].device, dc->device);
        if (si >= 0 && g_dev[si].device != sc->device)
            return misuse(CUDA_ERROR_INVALID_VALUE,
                          "source 0x%llx is on device %d, but srcCtx is device %d's", src,
                          g_dev[si].device, sc->device);
    }
    return do_copy1d(dev_side(src, n), dev_side(dst, n), n, s);
}

static CUresult do_stream_sync(CUstream s) {
    struct fake_ctx *c = NULL;
    CUresult r = need_ctx(&c);
    if (r)
        return r;
    uint64_t key = 0;
    if ((r = stream_key(c, s, &key)) != CUDA_SUCCESS)
        return r;
    struct filter f = {0, 0, key, UINT64_MAX};
    run_ops(&f);
    return CUDA_SUCCESS;
}

static CUresult do_event_create(CUevent *pe, unsigned flags) {
    struct fake_ctx *c = NULL;
    CUresult r = need_ctx(&c);
    if (r)
        return r;
    if (!pe)
        return misuse(CUDA_ERROR_INVALID_VALUE, "result pointer is NULL");
    if (flags & ~(unsigned)(CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING |
                            CU_EVENT_INTERPROCESS))
        return misuse(CUDA_ERROR_INVALID_VALUE, "unknown flags %#x", flags);
    if (grow((void **)&g_evt, &g_cap_evt, g_nevt + 1, sizeof *g_evt))
        return CUDA_ERROR_OUT_OF_MEMORY;
    struct fake_event *e = calloc(1, sizeof *e);
    if (!e)
        return CUDA_ERROR_OUT_OF_MEMORY;
    e->handle = g_next_evt;
    g_next_evt += FAKE_EVT_STEP;
    e->flags = flags;
    e->device = c->device;
    g_evt[g_nevt++] = e;
    *pe = (CUevent)e->handle;
    return CUDA_SUCCESS;
}

static CUresult do_event_record(CUevent ev, CUstream s) {
    struct fake_ctx *c = NULL;
    CUresult r = need_ctx(&c);
    if (r)
        return r;
    long i = find_event(ev);
    if (i < 0)
        return bad_event(ev);
    struct fake_event *e = g_evt[i];
    if (e->device != c->device)
        return misuse(CUDA_ERROR_INVALID_HANDLE,
                      "event of device %d recorded while device %d's context is current",
                      e->device, c->device);
    uint64_t key = 0;
    if ((r = stream_key(c, s, &key)) != CUDA_SUCCESS)
        return r;
    e->recorded = 1;
    e->qid = key;
    e->seq = g_seq;
    return CUDA_SUCCESS;
}

static CUresult do_event_sync(CUevent ev) {
    struct fake_ctx *c = NULL;
    CUresult r = need_ctx(&c);
    if (r)
        return r;
    long i = find_event(ev);
    if (i < 0)
        return bad_event(ev);
    struct fake_event *e = g_evt[i];
    if (e->recorded) {
        struct filter f = {0, 0, e->qid, e->seq};
        run_ops(&f);
    }
    return CUDA_SUCCESS;
}

static CUresult do_event_destroy(CUevent ev) {
    struct fake_ctx *c = NULL;
    CUresult r = need_ctx(&c);
    if (r)
        return r;
    long i = find_event(ev);
    if (i < 0)
        return bad_event(ev);
    free(g_evt[i]);
    g_evt[i] = g_evt[--g_nevt];
    if (g_nevt == 0) {
        free(g_evt);
        g_evt = NULL;
        g_cap_evt = 0;
    }
    return CUDA_SUCCESS;
}

static int error_strings(CUresult e, const char **name, const char **text) {
    switch (e) {
#define E(code, n, t)                                                                         \
    case code:                                                                                \
        *name = n;                                                                            \
        *text = t;                                                                            \
        return 0;
        E(CUDA_SUCCESS, "CUDA_SUCCESS", "no error")
        E(CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument")
        E(CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory")
        E(CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error")
        E(CUDA_ERROR_DEINITIALIZED, "CUDA_ERROR_DEINITIALIZED", "driver shutting down")
        E(CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected")
        E(CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal")
        E(CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context")
        E(CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle")
        E(CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS",
          "an illegal memory access was encountered")
#undef E
    default:
        return -1;
    }
}

static CUresult do_error_str(CUresult e, const char **out, int want_name) {
    const char *name, *text;
    if (!out)
        return misuse(CUDA_ERROR_INVALID_VALUE, "result pointer is NULL");
    if (error_strings(e, &name, &text)) {
        *out = NULL;
        return CUDA_ERROR_INVALID_VALUE; /* unknown code: not a misuse */
    }
    *out = want_name ? name : text;
    return CUDA_SUCCESS;
}

/* ---------------------------------------------------------------------------------------------
 * IPC: device memory other processes open (the fake's memory is host memory, so it is moved into
 * a named shared-memory object when first exported).
 * ------------------------------------------------------------------------------------------- */

static unsigned long g_ipc_seq;

static CUresult do_ipc_get(CUipcMemHandle *out, CUdeviceptr p) {
    struct fake_ctx *c = NULL;
    CUresult r = need_ctx(&c);
    if (r)
        return r;
    if (!out)
        return misuse(CUDA_ERROR_INVALID_VALUE, "result pointer is NULL");
    long i = find_dev(p);
    if (i < 0 || g_dev[i].base != p)
        return misuse(CUDA_ERROR_INVALID_VALUE, "0x%llx is not the start of a live device allocation", p);
    struct dev_alloc *d = &g_dev[i];
    if (d->ipc_opened)
        return misuse(CUDA_ERROR_INVALID_VALUE, "0x%llx was itself opened from an IPC handle", p);
    if (!d->shm_name[0]) {
        char name[40] = {0};
        snprintf(name, sizeof name, "/fake-cuda-%ld-%lu", (long)getpid(), ++g_ipc_seq);
        int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd < 0)
            return CUDA_ERROR_OUT_OF_MEMORY;
        void *m = MAP_FAILED;
        if (ftruncate(fd, (off_t)d->size) == 0)
            m = mmap(NULL, d->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (m == MAP_FAILED) {
            shm_unlink(name);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        /* Queued work resolves the backing when it runs, so swapping it here is safe. */
        memcpy(m, d->backing, d->size);
        free(d->backing);
        d->backing = m;
        memcpy(d->shm_name, name, sizeof name);
    }
    struct fake_ipc h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, FAKE_IPC_MAGIC, 8);
    h.pid = (uint32_t)getpid();
    h.device = d->device;
    h.size = d->size;
    memcpy(h.name, d->shm_name, sizeof h.name);
    memcpy(out, &h, sizeof h);
    return CUDA_SUCCESS;
}

static CUresult do_ipc_open(CUdeviceptr *pdptr, CUipcMemHandle handle, unsigned flags) {
    struct fake_ctx *c = NULL;
    CUresult r = need_ctx(&c);
    if (r)
        return r;
    if (!pdptr)
        return misuse(CUDA_ERROR_INVALID_VALUE, "result pointer is NULL");
    if (flags != CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS)
        return misuse(CUDA_ERROR_INVALID_VALUE, "flags %u (only CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS)", flags);
    struct fake_ipc h;
    memcpy(&h, &handle, sizeof h);
    if (memcmp(h.magic, FAKE_IPC_MAGIC, 8) != 0 || h.name[sizeof h.name - 1] != '\0' || h.size == 0)
        return CUDA_ERROR_INVALID_HANDLE; /* garbage from outside: an answer, not a misuse */
    if (h.pid == (uint32_t)getpid())
        return CUDA_ERROR_INVALID_CONTEXT; /* the real driver refuses this too: not a misuse */
    if (h.device != c->device)
        return misuse(CUDA_ERROR_INVALID_VALUE, "the handle is device %d's memory, device %d's context is current",
                      h.device, c->device);
    int fd = shm_open(h.name, O_RDWR, 0);
    if (fd < 0)
        return CUDA_ERROR_INVALID_HANDLE; /* the exporter freed it (or never existed) */
    struct stat st;
    void *m = MAP_FAILED;
    if (fstat(fd, &st) == 0 && (uint64_t)st.st_size == h.size)
        m = mmap(NULL, h.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return CUDA_ERROR_INVALID_HANDLE;
    unsigned long long rounded;
    if (round_up(h.size, DEV_ALIGN, &rounded) || rounded + DEV_ALIGN > FAKE_DEV_END - g_next_dev ||
        grow((void **)&g_dev, &g_cap_dev, g_ndev_allocs + 1, sizeof *g_dev)) {
        munmap(m, h.size);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    struct dev_alloc *d = &g_dev[g_ndev_allocs++];
    d->base = g_next_dev;
    d->size = h.size;
    d->device = c->device;
    d->backing = m;
    memcpy(d->shm_name, h.name, sizeof d->shm_name);
    d->ipc_opened = 1;
    g_next_dev += rounded + DEV_ALIGN;
    *pdptr = d->base;
    return CUDA_SUCCESS;
}

static CUresult do_ipc_close(CUdeviceptr p) {
    struct fake_ctx *c = NULL;
    CUresult r = need_ctx(&c);
    if (r)
        return r;
    long i = find_dev(p);
    if (i < 0 || g_dev[i].base != p || !g_dev[i].ipc_opened)
        return misuse(CUDA_ERROR_INVALID_VALUE, "0x%llx is not a mapping from cuIpcOpenMemHandle", p);
    struct dev_alloc *d = &g_dev[i];
    drain_refs(CU_MEMORYTYPE_DEVICE, (uintptr_t)d->base, (uintptr_t)(d->base + d->size), "IPC mapping");
    d = &g_dev[i];
    release_backing(d);
    remove_dev(i);
    return CUDA_SUCCESS;
}

static CUresult do_address_range(CUdeviceptr *pbase, size_t *psize, CUdeviceptr p) {
    struct fake_ctx *c = NULL;
    CUresult r = need_ctx(&c);
    if (r)
        return r;
    long i = find_dev(p);
    if (i < 0)
        return misuse(CUDA_ERROR_INVALID_VALUE, "0x%llx is not inside a live device allocation", p);
    if (pbase)
        *pbase = g_dev[i].base;
    if (psize)
        *psize = g_dev[i].size;
    return CUDA_SUCCESS;
}

/* ---------------------------------------------------------------------------------------------
 * Exported driver entry points.
 * ------------------------------------------------------------------------------------------- */

#define WRAP(name, call)                                                                      \
    do {                                                                                      \
        enter(IDX_##name);                                                                    \
        CUresult r_ = (call);                                                                 \
        leave();                                                                              \
        return r_;                                                                            \
    } while (0)

EXPORT CUresult cuInit(unsigned flags) { WRAP(cuInit, do_init(flags)); }

EXPORT CUresult cuDriverGetVersion(int *version) {
    enter(IDX_cuDriverGetVersion);
    CUresult r = CUDA_SUCCESS;
    if (!version)
        r = misuse(CUDA_ERROR_INVALID_VALUE, "version pointer is NULL");
    else
        *version = FAKE_DRIVER_VERSION;
    leave();
    return r;
}

EXPORT CUresult cuDeviceGetCount(int *count) { WRAP(cuDeviceGetCount, do_device_get_count(count)); }

EXPORT CUresult cuDeviceGet(CUdevice *dev, int ordinal) {
    WRAP(cuDeviceGet, do_device_get(dev, ordinal));
}

EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice dev) {
    WRAP(cuDeviceGetName, do_device_get_name(name, len, dev));
}

EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev) {
    WRAP(cuDevicePrimaryCtxRetain, do_primary_retain(pctx, dev));
}

EXPORT CUresult cuCtxPushCurrent_v2(CUcontext ctx) { WRAP(cuCtxPushCurrent_v2, do_ctx_push(ctx)); }

EXPORT CUresult cuCtxPopCurrent_v2(CUcontext *pctx) { WRAP(cuCtxPopCurrent_v2, do_ctx_pop(pctx)); }

EXPORT CUresult cuCtxSynchronize(void) { WRAP(cuCtxSynchronize, do_ctx_sync()); }

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t n) {
    WRAP(cuMemAlloc_v2, do_mem_alloc(dptr, n));
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr p) { WRAP(cuMemFree_v2, do_mem_free(p)); }

EXPORT CUresult cuMemHostAlloc(void **pp, size_t n, unsigned flags) {
    WRAP(cuMemHostAlloc, do_host_alloc(pp, n, flags));
}

EXPORT CUresult cuMemFreeHost(void *p) { WRAP(cuMemFreeHost, do_free_host(p)); }

EXPORT CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, CUstream s) {
    WRAP(cuMemsetD8Async, do_memset(dst, v, n, s));
}

EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, CUstream s) {
    WRAP(cuMemcpyHtoDAsync_v2, do_copy1d(host_side(src, n), dev_side(dst, n), n, s));
}

EXPORT CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, CUstream s) {
    WRAP(cuMemcpyDtoHAsync_v2, do_copy1d(dev_side(src, n), host_side(dst, n), n, s));
}

EXPORT CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) {
    WRAP(cuMemcpyDtoDAsync_v2, do_copy1d(dev_side(src, n), dev_side(dst, n), n, s));
}

EXPORT CUresult cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D *p, CUstream s) {
    WRAP(cuMemcpy2DAsync_v2, do_copy2d(p, s));
}

EXPORT CUresult cuMemcpyPeerAsync(CUdeviceptr dst, CUcontext dctx, CUdeviceptr src, CUcontext sctx,
                                  size_t n, CUstream s) {
    WRAP(cuMemcpyPeerAsync, do_copy_peer(dst, dctx, src, sctx, n, s));
}

EXPORT CUresult cuStreamSynchronize(CUstream s) { WRAP(cuStreamSynchronize, do_stream_sync(s)); }

EXPORT CUresult cuEventCreate(CUevent *pe, unsigned flags) {
    WRAP(cuEventCreate, do_event_create(pe, flags));
}

EXPORT CUresult cuEventRecord(CUevent e, CUstream s) { WRAP(cuEventRecord, do_event_record(e, s)); }

EXPORT CUresult cuEventSynchronize(CUevent e) { WRAP(cuEventSynchronize, do_event_sync(e)); }

EXPORT CUresult cuEventDestroy_v2(CUevent e) { WRAP(cuEventDestroy_v2, do_event_destroy(e)); }

EXPORT CUresult cuGetErrorName(CUresult e, const char **s) {
    WRAP(cuGetErrorName, do_error_str(e, s, 1));
}

EXPORT CUresult cuGetErrorString(CUresult e, const char **s) {
    WRAP(cuGetErrorString, do_error_str(e, s, 0));
}

EXPORT CUresult cuIpcGetMemHandle(CUipcMemHandle *h, CUdeviceptr p) {
    WRAP(cuIpcGetMemHandle, do_ipc_get(h, p));
}

EXPORT CUresult cuIpcOpenMemHandle_v2(CUdeviceptr *p, CUipcMemHandle h, unsigned flags) {
    WRAP(cuIpcOpenMemHandle_v2, do_ipc_open(p, h, flags));
}

EXPORT CUresult cuIpcCloseMemHandle(CUdeviceptr p) { WRAP(cuIpcCloseMemHandle, do_ipc_close(p)); }

EXPORT CUresult cuMemGetAddressRange_v2(CUdeviceptr *base, size_t *size, CUdeviceptr p) {
    WRAP(cuMemGetAddressRange_v2, do_address_range(base, size, p));
}

/* ---------------------------------------------------------------------------------------------
 * Control and introspection (not part of the driver API).
 * ------------------------------------------------------------------------------------------- */

#define LOCKED_LONG(expr)                                                                     \
    do {                                                                                      \
        pthread_mutex_lock(&g_lock);                                                          \
        long v_ = (long)(expr);                                                               \
        pthread_mutex_unlock(&g_lock);                                                        \
        return v_;                                                                            \
    } while (0)

EXPORT void fake_cuda_fail_allocs_after(long n) {
    pthread_mutex_lock(&g_lock);
    g_alloc_budget = n < 0 ? -1 : n;
    pthread_mutex_unlock(&g_lock);
}

EXPORT void fake_cuda_fail_copies_after(long n) {
    pthread_mutex_lock(&g_lock);
    g_copy_budget = n < 0 ? -1 : n;
    pthread_mutex_unlock(&g_lock);
}

EXPORT long fake_cuda_live_device_allocations(void) { LOCKED_LONG(g_ndev_allocs); }
EXPORT long fake_cuda_live_host_allocations(void) { LOCKED_LONG(g_nhost); }
EXPORT long fake_cuda_live_events(void) { LOCKED_LONG(g_nevt); }
EXPORT long fake_cuda_misuse_count(void) { LOCKED_LONG(g_misuse); }
EXPORT long fake_cuda_pending_ops(void) { LOCKED_LONG(g_npending); }
EXPORT long fake_cuda_writecombined_allocations(void) { LOCKED_LONG(g_wc); }

EXPORT const char *fake_cuda_last_misuse(void) { return g_last_misuse; }

EXPORT long fake_cuda_call_count(const char *entry_point_name) {
    long v = -1;
    if (!entry_point_name)
        return -1;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < N_ENTRIES; i++)
        if (strcmp(entry_point_name, g_entry_names[i]) == 0)
            v = g_calls[i];
    pthread_mutex_unlock(&g_lock);
    return v;
}

EXPORT long fake_cuda_bytes_copied(int kind) {
    if (kind < 0 || kind > 3)
        return -1;
    LOCKED_LONG(g_bytes[kind]);
}

EXPORT void fake_cuda_reset_counters(void) {
    pthread_mutex_lock(&g_lock);
    g_misuse = 0;
    g_last_misuse[0] = '\0';
    memset(g_calls, 0, sizeof g_calls);
    pthread_mutex_unlock(&g_lock);
}

static int peek(CUdeviceptr dev, void *host, size_t n, int to_device) {
    int rc = -1;
    if (n == 0)
        return 0;
    if (!host)
        return -1;
    pthread_mutex_lock(&g_lock);
    long i = find_dev(dev);
    if (i >= 0 && n <= g_dev[i].size - (size_t)(dev - g_dev[i].base)) {
        unsigned char *b = g_dev[i].backing + (dev - g_dev[i].base);
        if (to_device)
            memcpy(b, host, n);
        else
            memcpy(host, b, n);
        rc = 0;
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

EXPORT int fake_cuda_read(CUdeviceptr src, void *dst, size_t n) { return peek(src, dst, n, 0); }

EXPORT int fake_cuda_write(CUdeviceptr dst, const void *src, size_t n) {
    return peek(dst, (void *)(uintptr_t)src, n, 1);
}

EXPORT int fake_cuda_device_of(CUdeviceptr p) {
    pthread_mutex_lock(&g_lock);
    long i = find_dev(p);
    int d = i < 0 ? -1 : g_dev[i].device;
    pthread_mutex_unlock(&g_lock);
    return d;
}
