/* A tour of dlbridge's C API, one step at a time.
 *
 * Each step prints a heading and what it shows: whether two tensors share memory, whether a
 * copy is independent, who frees what and when. Every status is checked; any surprise (an
 * unexpected status or a claim that does not hold) prints dlb_last_error() and exits 1.
 *
 * Build and run from the repository root after `cargo build --release`:
 *   gcc -std=c11 -Wall -Wextra -Werror -pedantic -Iinclude examples/c/tour.c \
 *       -Ltarget/release -ldlbridge -Wl,-rpath,$PWD/target/release -o tour && ./tour
 * or simply: examples/c/run.sh
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlbridge.h"

/* ---- checking -------------------------------------------------------------------------- */

static const char *status_name(dlb_status st) {
  switch (st) {
  case DLB_OK: return "DLB_OK";
  case DLB_ERR_INVALID_ARGUMENT: return "DLB_ERR_INVALID_ARGUMENT";
  case DLB_ERR_UNSUPPORTED: return "DLB_ERR_UNSUPPORTED";
  case DLB_ERR_OUT_OF_MEMORY: return "DLB_ERR_OUT_OF_MEMORY";
  case DLB_ERR_DEVICE: return "DLB_ERR_DEVICE";
  case DLB_ERR_READ_ONLY: return "DLB_ERR_READ_ONLY";
  case DLB_ERR_VERSION: return "DLB_ERR_VERSION";
  case DLB_ERR_PANIC: return "DLB_ERR_PANIC";
  }
  return "unknown status";
}

/* Runs a dlbridge call that must succeed. */
#define CHECK(call)                                                                            \
  do {                                                                                         \
    dlb_status st_ = (call);                                                                   \
    if (st_ != DLB_OK) {                                                                       \
      fprintf(stderr, "tour.c:%d: %s returned %s (%d): %s\n", __LINE__, #call,                \
              status_name(st_), (int)st_, dlb_last_error());                                   \
      exit(1);                                                                                 \
    }                                                                                          \
  } while (0)

/* A claim the tour makes; if it does not hold, the tour stops rather than print a lie. */
#define EXPECT(cond)                                                                           \
  do {                                                                                         \
    if (!(cond)) {                                                                             \
      fprintf(stderr, "tour.c:%d: expected %s (last error: \"%s\")\n", __LINE__, #cond,        \
              dlb_last_error());                                                               \
      exit(1);                                                                                 \
    }                                                                                          \
  } while (0)

/* ---- printing -------------------------------------------------------------------------- */

static void heading(int n, const char *text) { printf("\n%d. %s\n", n, text); }

/* One result line: a label column, then the value. */
#ifdef __GNUC__
__attribute__((format(printf, 2, 3)))
#endif
static void result(const char *label, const char *fmt, ...) {
  va_list ap;
  printf("   %-24s", label);
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  putchar('\n');
}

static const char *yes_no(bool b) { return b ? "yes" : "no"; }

static const char *dtype_name(DLDataType dt) {
  if (dt.lanes != 1) return "vector";
  if (dt.code == kDLFloat && dt.bits == 32) return "float32";
  if (dt.code == kDLFloat && dt.bits == 64) return "float64";
  return "other";
}

/* "float64 (code 2, bits 64)": the name and the raw DLDataType fields. */
static const char *dtype_text(DLDataType dt) {
  static char buf[64];
  snprintf(buf, sizeof buf, "%s (code %u, bits %u)", dtype_name(dt), (unsigned)dt.code,
           (unsigned)dt.bits);
  return buf;
}

/* "0x2 (IS_COPIED)" */
static const char *flags_text(uint64_t flags) {
  static char buf[96];
  const bool read_only = flags & DLPACK_FLAG_BITMASK_READ_ONLY;
  const bool copied = flags & DLPACK_FLAG_BITMASK_IS_COPIED;
  snprintf(buf, sizeof buf, "0x%" PRIx64 " (%s%s%s%s)", flags, flags == 0 ? "none" : "",
           read_only ? "READ_ONLY" : "", read_only && copied ? " | " : "",
           copied ? "IS_COPIED" : "");
  return buf;
}

/* Element [i][j] of a 2-D float32 or float64 DLTensor, read through its strides (in elements)
 * from its first element at data + byte_offset. */
static double at(const DLTensor *dl, int64_t i, int64_t j) {
  const char *first = (const char *)dl->data + dl->byte_offset;
  int64_t k = i * dl->strides[0] + j * dl->strides[1];
  if (dl->dtype.bits == 64) return ((const double *)(const void *)first)[k];
  return ((const float *)(const void *)first)[k];
}

/* "[[0, 1, 2], [3, 4, 5]]" */
static const char *values(const DLTensor *dl) {
  static char buf[256];
  size_t n = 0;
  n += (size_t)snprintf(buf + n, sizeof buf - n, "[");
  for (int64_t i = 0; i < dl->shape[0]; i++) {
    n += (size_t)snprintf(buf + n, sizeof buf - n, "%s[", i ? ", " : "");
    for (int64_t j = 0; j < dl->shape[1]; j++)
      n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%g", j ? ", " : "", at(dl, i, j));
    n += (size_t)snprintf(buf + n, sizeof buf - n, "]");
  }
  snprintf(buf + n, sizeof buf - n, "]");
  return buf;
}

static const char *tensor_values(const dlb_tensor *t) { return values(dlb_tensor_dltensor(t)); }

/* Writable float32 element [i][j] of t, through dlb_tensor_data_mut and t's strides. */
static float *f32_mut(dlb_tensor *t, int64_t i, int64_t j) {
  void *first = NULL;
  CHECK(dlb_tensor_data_mut(t, &first));
  const DLTensor *dl = dlb_tensor_dltensor(t);
  return (float *)first + i * dl->strides[0] + j * dl->strides[1];
}

/* ---- a foreign producer ---------------------------------------------------------------- */

/* What another library would hand us: a malloc'd float64 buffer inside a
 * DLManagedTensorVersioned whose deleter frees both and counts its calls. */
struct foreign {
  DLManagedTensorVersioned mt;
  int64_t shape[2];
  int64_t strides[2];
};

static int foreign_deleter_calls = 0;

static void foreign_deleter(DLManagedTensorVersioned *self) {
  struct foreign *f = self->manager_ctx;
  foreign_deleter_calls++;
  free(f->mt.dl_tensor.data);
  free(f);
}

static DLManagedTensorVersioned *make_foreign(void) {
  struct foreign *f = calloc(1, sizeof *f);
  double *data = malloc(4 * sizeof *data);
  if (f == NULL || data == NULL) {
    fprintf(stderr, "tour.c: out of memory\n");
    exit(1);
  }
  for (int k = 0; k < 4; k++) data[k] = 1.5 + k;
  f->shape[0] = 2, f->shape[1] = 2;
  f->strides[0] = 2, f->strides[1] = 1;
  f->mt.version.major = DLPACK_MAJOR_VERSION;
  f->mt.version.minor = DLPACK_MINOR_VERSION;
  f->mt.manager_ctx = f;
  f->mt.deleter = foreign_deleter;
  f->mt.flags = 0;
  f->mt.dl_tensor.data = data;
  f->mt.dl_tensor.device.device_type = kDLCPU;
  f->mt.dl_tensor.device.device_id = 0;
  f->mt.dl_tensor.ndim = 2;
  f->mt.dl_tensor.dtype.code = kDLFloat;
  f->mt.dl_tensor.dtype.bits = 64;
  f->mt.dl_tensor.dtype.lanes = 1;
  f->mt.dl_tensor.shape = f->shape;
  f->mt.dl_tensor.strides = f->strides;
  f->mt.dl_tensor.byte_offset = 0;
  return &f->mt;
}

/* ---- the tour -------------------------------------------------------------------------- */

int main(void) {
  const DLDevice cpu = {kDLCPU, 0};
  const DLDataType f32 = {kDLFloat, 32, 1};
  const DLDataType f64 = {kDLFloat, 64, 1};
  const int64_t shape[2] = {2, 3};

  printf("dlbridge %s: a tour of the C API (DLPack %d.%d)\n", dlb_version(),
         DLPACK_MAJOR_VERSION, DLPACK_MINOR_VERSION);

  /* 1. Creation. */
  heading(1, "Create a float32 2x3 tensor (dlb_tensor_zeros), fill it (dlb_tensor_data_mut)");
  dlb_tensor *a = NULL;
  CHECK(dlb_tensor_zeros(shape, 2, f32, cpu, &a));
  result("a after zeros:", "%s", tensor_values(a));
  for (int64_t i = 0; i < 2; i++)
    for (int64_t j = 0; j < 3; j++) *f32_mut(a, i, j) = (float)(3 * i + j);
  result("a after filling:", "%s", tensor_values(a));
  const DLTensor *da = dlb_tensor_dltensor(a);
  result("dtype:", "%s", dtype_text(da->dtype));
  result("shape, strides:", "%" PRId64 "x%" PRId64 ", (%" PRId64 ", %" PRId64 ") elements",
         da->shape[0], da->shape[1], da->strides[0], da->strides[1]);

  /* 2. An alias is a second handle on the same memory. */
  heading(2, "Alias it (dlb_tensor_alias, like torch.from_numpy), write b[0][0] = 100");
  dlb_tensor *b = NULL;
  CHECK(dlb_tensor_alias(a, &b));
  result("a before:", "%s", tensor_values(a));
  *f32_mut(b, 0, 0) = 100.0f;
  result("a after:", "%s", tensor_values(a));
  EXPECT(at(dlb_tensor_dltensor(a), 0, 0) == 100.0 && dlb_tensor_shares_memory(a, b));
  result("shares memory:", "yes");

  /* 3. A view reinterprets the same memory with other shape and strides. */
  heading(3, "Transpose by strides (dlb_tensor_view 3x2, strides (1, 3)), write t[2][0] = 200");
  dlb_tensor *t = NULL;
  const int64_t t_shape[2] = {3, 2}, t_strides[2] = {1, 3};
  CHECK(dlb_tensor_view(a, t_shape, t_strides, 2, 0, &t));
  result("t:", "%s", tensor_values(t));
  result("contiguous:", "%s", yes_no(dlb_tensor_is_contiguous(t)));
  result("a before:", "%s", tensor_values(a));
  *f32_mut(t, 2, 0) = 200.0f; /* t[2][0] is a[0][2] */
  result("a after:", "%s", tensor_values(a));
  EXPECT(at(dlb_tensor_dltensor(a), 0, 2) == 200.0 && dlb_tensor_shares_memory(a, t));
  result("shares memory:", "yes");

  /* 4. A copy owns new memory. */
  heading(4, "Copy it (dlb_tensor_copy, like torch.tensor()), write c[0][0] = -1");
  dlb_tensor *c = NULL;
  CHECK(dlb_tensor_copy(a, &c));
  *f32_mut(c, 0, 0) = -1.0f;
  result("c:", "%s", tensor_values(c));
  result("a:", "%s", tensor_values(a));
  EXPECT(at(dlb_tensor_dltensor(a), 0, 0) == 100.0 && !dlb_tensor_shares_memory(a, c));
  result("independent copy:", "yes");
  dlb_tensor_free(c);

  /* 5. DLPack export: what another framework would receive. */
  heading(5, "Export through DLPack (dlb_tensor_to_dlpack_versioned), then write a[1][2] = 7");
  DLManagedTensorVersioned *shared = NULL, *copied = NULL;
  CHECK(dlb_tensor_to_dlpack_versioned(a, false, &shared));
  CHECK(dlb_tensor_to_dlpack_versioned(a, true, &copied));
  result("DLPack version:", "%u.%u", (unsigned)shared->version.major,
         (unsigned)shared->version.minor);
  result("copy=false flags:", "%s", flags_text(shared->flags));
  result("copy=true flags:", "%s", flags_text(copied->flags));
  EXPECT(shared->flags == 0 && copied->flags == DLPACK_FLAG_BITMASK_IS_COPIED);
  *f32_mut(a, 1, 2) = 7.0f;
  result("a:", "%s", tensor_values(a));
  result("copy=false export:", "%s", values(&shared->dl_tensor));
  result("copy=true export:", "%s", values(&copied->dl_tensor));
  EXPECT(at(&shared->dl_tensor, 1, 2) == 7.0 && at(&copied->dl_tensor, 1, 2) == 5.0);
  result("copy=false shares:", "yes");
  result("copy=true independent:", "yes");
  copied->deleter(copied); /* the receiver owns an export and calls its deleter once */

  /* 6. An export holds its own reference to the memory. */
  heading(6, "Free every dlbridge handle (a, b, t): the copy=false export keeps the memory");
  result("live allocations:", "%" PRId64 " (before the frees)", dlb_live_allocations());
  dlb_tensor_free(a);
  dlb_tensor_free(b);
  dlb_tensor_free(t);
  result("live allocations:", "%" PRId64 " (after the frees)", dlb_live_allocations());
  EXPECT(dlb_live_allocations() == 1);
  result("export still reads:", "%s", values(&shared->dl_tensor));
  shared->deleter(shared);
  result("live allocations:", "%" PRId64 " (after the export's deleter)",
         dlb_live_allocations());
  EXPECT(dlb_live_allocations() == 0);

  /* 7. Importing takes ownership of a foreign tensor, without copying. */
  heading(7, "Import a foreign float64 DLManagedTensorVersioned with a counting deleter");
  DLManagedTensorVersioned *foreign = make_foreign();
  void *foreign_data = foreign->dl_tensor.data;
  dlb_tensor *f = NULL, *g = NULL, *row = NULL;
  const int64_t row_shape[2] = {1, 2};
  CHECK(dlb_tensor_from_dlpack_versioned(foreign, &f)); /* f now owns `foreign` */
  CHECK(dlb_tensor_alias(f, &g));
  CHECK(dlb_tensor_view(f, row_shape, NULL, 2, 2, &row)); /* row 1 of f */
  result("f (imported):", "%s, %s", tensor_values(f), dtype_text(dlb_tensor_dltensor(f)->dtype));
  EXPECT(dlb_tensor_dltensor(f)->data == foreign_data);
  result("shares memory:", "yes (same data pointer)");
  dlb_tensor_free(f);
  result("free(f):", "deleter calls = %d", foreign_deleter_calls);
  dlb_tensor_free(g);
  result("free(g, an alias):", "deleter calls = %d", foreign_deleter_calls);
  EXPECT(foreign_deleter_calls == 0);
  dlb_tensor_free(row);
  result("free(row, a view):", "deleter calls = %d (the last handle is gone)",
         foreign_deleter_calls);
  EXPECT(foreign_deleter_calls == 1);

  /* 8. Sharing and copying never change the element type; only a cast does. */
  heading(8, "float64 stays float64 through export, import and copy; dlb_tensor_cast changes it");
  dlb_tensor *d = NULL, *back = NULL, *dc = NULL, *d32 = NULL;
  DLManagedTensorVersioned *exported = NULL;
  CHECK(dlb_tensor_zeros(shape, 2, f64, cpu, &d));
  void *d_first = NULL;
  CHECK(dlb_tensor_data_mut(d, &d_first));
  *(double *)d_first = 0.1;
  result("created:", "%s, d[0][0] = %.17g", dtype_text(dlb_tensor_dltensor(d)->dtype),
         at(dlb_tensor_dltensor(d), 0, 0));
  CHECK(dlb_tensor_to_dlpack_versioned(d, false, &exported));
  result("exported:", "%s", dtype_text(exported->dl_tensor.dtype));
  CHECK(dlb_tensor_from_dlpack_versioned(exported, &back)); /* `back` owns `exported` */
  result("imported back:", "%s", dtype_text(dlb_tensor_dltensor(back)->dtype));
  CHECK(dlb_tensor_copy(back, &dc));
  result("copied:", "%s, d[0][0] = %.17g", dtype_text(dlb_tensor_dltensor(dc)->dtype),
         at(dlb_tensor_dltensor(dc), 0, 0));
  EXPECT(dlb_tensor_dltensor(back)->dtype.bits == 64 && dlb_tensor_dltensor(dc)->dtype.bits == 64);
  CHECK(dlb_tensor_cast(d, f32, &d32));
  result("cast to float32:", "%s, d[0][0] = %.17g", dtype_text(dlb_tensor_dltensor(d32)->dtype),
         at(dlb_tensor_dltensor(d32), 0, 0));
  EXPECT(dlb_tensor_dltensor(d32)->dtype.bits == 32);
  dlb_tensor_free(d);
  dlb_tensor_free(back);
  dlb_tensor_free(dc);
  dlb_tensor_free(d32);

  /* 9. Read-only memory stays read-only. */
  heading(9, "Wrap memory read-only (dlb_tensor_from_data, read_only=true), ask to write it");
  static float constants[2][3] = {{1, 2, 3}, {4, 5, 6}};
  dlb_tensor *ro = NULL;
  CHECK(dlb_tensor_from_data(constants, shape, NULL, 2, f32, cpu, true, NULL, NULL, &ro));
  void *ro_first = &ro; /* any non-NULL value: a failed call must reset it */
  dlb_status st = dlb_tensor_data_mut(ro, &ro_first);
  char message[256];
  snprintf(message, sizeof message, "%s", dlb_last_error()); /* valid until the next dlb_ call */
  result("dlb_tensor_data_mut:", "%s (%d)", status_name(st), (int)st);
  result("dlb_last_error():", "\"%s\"", message);
  EXPECT(st == DLB_ERR_READ_ONLY && ro_first == NULL && dlb_tensor_is_read_only(ro));
  DLManagedTensorVersioned *ro_export = NULL;
  CHECK(dlb_tensor_to_dlpack_versioned(ro, false, &ro_export));
  result("export flags:", "%s", flags_text(ro_export->flags));
  EXPECT(ro_export->flags & DLPACK_FLAG_BITMASK_READ_ONLY);
  ro_export->deleter(ro_export);
  dlb_tensor_free(ro);

  /* 10. Nothing left behind. */
  heading(10, "Everything freed: dlbridge keeps no memory alive");
  int64_t live = dlb_live_allocations();
  result("dlb_live_allocations():", "%" PRId64, live);
  EXPECT(live == 0);
  return 0;
}
