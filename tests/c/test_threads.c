/* Many threads sharing two tensors at once: aliasing, viewing, exporting (versioned and legacy),
 * re-importing and freeing, with export deleters called from threads other than the one that
 * exported. The contract allows every read-only operation on one handle from several threads;
 * only free and data_mut need exclusive use, and no thread frees or writes the shared handles.
 *
 * At the end the foreign release callback and the foreign DLPack deleter must each have run
 * exactly once, and dlb_live_allocations() must be back where it started.
 *
 * Usage: test_threads [iterations per thread]   (default 2000) */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dlbridge.h"

#include "check.h"

#define THREADS 8
#define N 64            /* elements of each shared tensor: value i at index i */
#define MAILBOX_CAP 4096 /* exports waiting in a mailbox for another thread to delete them */

static const DLDevice CPU = {kDLCPU, 0};
static const DLDataType F32 = {kDLFloat, 32, 1};

static long iterations = 2000;

/* The two shared tensors: one wraps caller memory (from_data), one is an imported foreign
 * DLPack tensor. Only the main thread creates and frees them. */
static dlb_tensor *shared[2];

static atomic_int release_calls;
static atomic_int foreign_deleter_calls;
static atomic_long cross_thread_deletes;

/* All workers start together, so they really overlap. */
static pthread_barrier_t start_line;

static void release_cb(void *ctx) {
    free(ctx);
    atomic_fetch_add(&release_calls, 1);
}

typedef struct {
    DLManagedTensorVersioned mt;
    int64_t shape[1];
    int64_t strides[1];
    float data[N];
} foreign;

static void foreign_deleter(DLManagedTensorVersioned *self) {
    free(self->manager_ctx);
    atomic_fetch_add(&foreign_deleter_calls, 1);
}

/* An export on its way to another thread. */
typedef struct {
    bool versioned;
    void *mt;
} parcel;

/* One mailbox per thread: thread i posts into mailbox (i+1) % THREADS and empties its own, so
 * every deleter taken from a mailbox runs on a thread other than the exporter. */
static struct {
    pthread_mutex_t lock;
    parcel items[MAILBOX_CAP];
    int count;
} mailbox[THREADS];

static void delete_parcel(parcel p) {
    if (p.versioned) {
        DLManagedTensorVersioned *m = p.mt;
        m->deleter(m);
    } else {
        DLManagedTensor *m = p.mt;
        m->deleter(m);
    }
}

static void post(int to, parcel p) {
    pthread_mutex_lock(&mailbox[to].lock);
    bool full = mailbox[to].count == MAILBOX_CAP;
    if (!full) mailbox[to].items[mailbox[to].count++] = p;
    pthread_mutex_unlock(&mailbox[to].lock);
    if (full) delete_parcel(p); /* nobody has room: delete it here */
}

/* Delete everything waiting in a mailbox. Deleters run outside the lock, as a real consumer
 * would call them at arbitrary times. */
static void drain(int box) {
    static _Thread_local parcel local[MAILBOX_CAP];
    pthread_mutex_lock(&mailbox[box].lock);
    int n = mailbox[box].count;
    memcpy(local, mailbox[box].items, sizeof(parcel) * (size_t)n);
    mailbox[box].count = 0;
    pthread_mutex_unlock(&mailbox[box].lock);
    for (int i = 0; i < n; i++) delete_parcel(local[i]);
    atomic_fetch_add(&cross_thread_deletes, n);
}

/* The first element of a tensor, as a float. */
static float first(const dlb_tensor *t) {
    const DLTensor *d = dlb_tensor_dltensor(t);
    return *(const float *)((const char *)d->data + d->byte_offset);
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    pthread_barrier_wait(&start_line);
    for (long k = 0; k < iterations; k++) {
        dlb_tensor *base = shared[(k + id) % 2];
        dlb_tensor *a = NULL, *v = NULL, *r = NULL;

        CHECK_EQ(dlb_tensor_alias(base, &a), DLB_OK);
        if (a == NULL) continue;

        /* A view whose first element and stride vary with the iteration. */
        int64_t stride = (int64_t)(k % 3) - 1; /* -1, 0, 1 */
        int64_t offset = 8 + (k % 40);
        int64_t shape[1] = {8};
        int64_t strides[1] = {stride};
        CHECK_EQ(dlb_tensor_view(a, shape, strides, 1, offset, &v), DLB_OK);
        if (v != NULL) CHECK(first(v) == (float)offset);

        /* Export the view and import it again: the same memory, nothing new allocated. */
        DLManagedTensorVersioned *mv = NULL;
        CHECK_EQ(dlb_tensor_to_dlpack_versioned(v, false, &mv), DLB_OK);
        if (mv != NULL) {
            CHECK_EQ(dlb_tensor_from_dlpack_versioned(mv, &r), DLB_OK);
            if (r != NULL) CHECK(first(r) == (float)offset);
        }

        /* Exports handed to another thread, which calls their deleters later. */
        DLManagedTensor *ml = NULL;
        CHECK_EQ(dlb_tensor_to_dlpack(a, &ml), DLB_OK);
        if (ml != NULL) {
            parcel p = {false, ml};
            post((id + 1) % THREADS, p);
        }
        DLManagedTensorVersioned *mv2 = NULL;
        CHECK_EQ(dlb_tensor_to_dlpack_versioned(r != NULL ? r : base, k % 16 == 0, &mv2), DLB_OK);
        if (mv2 != NULL) {
            parcel p = {true, mv2};
            post((id + 3) % THREADS, p);
        }

        /* Now and then a copy and a cast, reading the shared memory. */
        if (k % 32 == 0 && v != NULL) {
            dlb_tensor *c = NULL;
            CHECK_EQ(dlb_tensor_cast(v, (DLDataType){kDLFloat, 64, 1}, &c), DLB_OK);
            if (c != NULL) CHECK(*(const double *)dlb_tensor_dltensor(c)->data == (double)offset);
            dlb_tensor_free(c);
        }

        /* Errors are per thread: a failure here leaves a message here. */
        if (k % 64 == 0) {
            dlb_tensor *bad = NULL;
            int64_t too_long[1] = {N + 1};
            CHECK_EQ(dlb_tensor_view(base, too_long, NULL, 1, 0, &bad), DLB_ERR_INVALID_ARGUMENT);
            const char *msg = dlb_last_error();
            CHECK(msg != NULL && msg[0] != '\0');
        }

        /* Free in an order that varies. */
        if (k % 2) {
            dlb_tensor_free(a);
            dlb_tensor_free(r);
            dlb_tensor_free(v);
        } else {
            dlb_tensor_free(v);
            dlb_tensor_free(a);
            dlb_tensor_free(r);
        }

        if (k % 4 == 3) drain(id);
    }
    drain(id);
    return NULL;
}

/* Deletes whatever waits in mailbox 0, on its own thread. */
static void *drainer(void *arg) {
    (void)arg;
    drain(0);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) iterations = strtol(argv[1], NULL, 10);
    int64_t live0 = dlb_live_allocations();

    /* Shared tensor 0: caller memory, released by callback. */
    float *buf = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) buf[i] = (float)i;
    int64_t shape[1] = {N};
    CHECK_EQ(dlb_tensor_from_data(buf, shape, NULL, 1, F32, CPU, false, release_cb, buf,
                                  &shared[0]),
             DLB_OK);

    /* Shared tensor 1: a foreign DLPack tensor. */
    foreign *f = calloc(1, sizeof *f);
    for (int i = 0; i < N; i++) f->data[i] = (float)i;
    f->shape[0] = N;
    f->strides[0] = 1;
    f->mt.version.major = 1;
    f->mt.version.minor = 3;
    f->mt.manager_ctx = f;
    f->mt.deleter = foreign_deleter;
    f->mt.dl_tensor.data = f->data;
    f->mt.dl_tensor.device = CPU;
    f->mt.dl_tensor.ndim = 1;
    f->mt.dl_tensor.dtype = F32;
    f->mt.dl_tensor.shape = f->shape;
    f->mt.dl_tensor.strides = f->strides;
    CHECK_EQ(dlb_tensor_from_dlpack_versioned(&f->mt, &shared[1]), DLB_OK);
    if (shared[0] == NULL || shared[1] == NULL) {
        printf("fatal: could not create the shared tensors: %s\n", dlb_last_error());
        return check_report() ? 1 : 2;
    }
    CHECK_EQ(dlb_live_allocations(), live0 + 2);

    for (int i = 0; i < THREADS; i++) pthread_mutex_init(&mailbox[i].lock, NULL);
    pthread_barrier_init(&start_line, NULL, THREADS);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        CHECK_EQ(pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i), 0);
    for (int i = 0; i < THREADS; i++) CHECK_EQ(pthread_join(th[i], NULL), 0);
    /* A thread that finished early may have received exports after its last drain. */
    for (int i = 0; i < THREADS; i++) drain(i);

    /* Still alive: nothing has released the shared memory yet. */
    CHECK_EQ(atomic_load(&release_calls), 0);
    CHECK_EQ(atomic_load(&foreign_deleter_calls), 0);
    CHECK_EQ(dlb_live_allocations(), live0 + 2);

    /* The last handles: export both, free the handles, delete the exports from other threads. */
    DLManagedTensorVersioned *last[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(dlb_tensor_to_dlpack_versioned(shared[i], false, &last[i]), DLB_OK);
        dlb_tensor_free(shared[i]);
    }
    CHECK_EQ(atomic_load(&release_calls), 0);
    CHECK_EQ(atomic_load(&foreign_deleter_calls), 0);
    for (int i = 0; i < 2; i++) {
        if (last[i] == NULL) continue;
        parcel p = {true, last[i]};
        post(0, p);
    }
    pthread_t closer;
    CHECK_EQ(pthread_create(&closer, NULL, drainer, NULL), 0);
    CHECK_EQ(pthread_join(closer, NULL), 0);

    CHECK_EQ(atomic_load(&release_calls), 1);
    CHECK_EQ(atomic_load(&foreign_deleter_calls), 1);
    CHECK_EQ(dlb_live_allocations(), live0);
    for (int i = 0; i < THREADS; i++) pthread_mutex_destroy(&mailbox[i].lock);
    pthread_barrier_destroy(&start_line);

    printf("%d threads x %ld iterations, %ld exports deleted on another thread\n", THREADS,
           iterations, atomic_load(&cross_thread_deletes));
    return check_report();
}
