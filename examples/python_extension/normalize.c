/*
 * A C extension that works on dlbridge tensors handed over from Python (examples/python_extension/
 * run.py builds and drives it).
 *
 *   dlb_status normalize_unit_max(const dlb_tensor *in, dlb_tensor **out);
 *
 * makes a new tensor in C: a copy of `in` scaled so that its largest absolute value is 1 (a
 * tensor of zeros stays zeros). float32 stays float32; every other real dtype becomes float64.
 * `in` is borrowed (any layout, read-only data included: it is only read); on success the caller
 * owns *out and releases it with dlb_tensor_free (from Python: dlbridge.Tensor.from_handle takes
 * it over). On failure *out is NULL and the status says why: DLB_ERR_UNSUPPORTED for data that is
 * not in host memory or is complex, or the status of the dlbridge call that failed (whose message
 * is then in dlb_last_error()).
 *
 * It uses only the C API, so it must be linked against the very library the Python package
 * loaded: `python -m dlbridge --includes --libs` gives the flags (see docs/python.md).
 */
#include <dlbridge.h>

#include <math.h>
#include <stddef.h>

static int is_host(DLDevice device) {
    return device.device_type == kDLCPU || device.device_type == kDLCUDAHost;
}

dlb_status normalize_unit_max(const dlb_tensor *in, dlb_tensor **out) {
    if (out == NULL) {
        return DLB_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    const DLTensor *dl = dlb_tensor_dltensor(in);
    if (dl == NULL) {
        return DLB_ERR_INVALID_ARGUMENT;
    }
    if (!is_host(dl->device) || dl->dtype.code == kDLComplex) {
        return DLB_ERR_UNSUPPORTED;
    }
    int single = dl->dtype.code == kDLFloat && dl->dtype.bits == 32 && dl->dtype.lanes == 1;
    int dbl = dl->dtype.code == kDLFloat && dl->dtype.bits == 64 && dl->dtype.lanes == 1;

    /* New memory, row-major and writable: a copy when the dtype is already right, else a
     * converting copy to float64. */
    dlb_tensor *result = NULL;
    dlb_status status;
    if (single || dbl) {
        status = dlb_tensor_copy(in, &result);
    } else {
        DLDataType f64 = {kDLFloat, 64, 1};
        status = dlb_tensor_cast(in, f64, &result);
    }
    if (status != DLB_OK) {
        return status;
    }

    void *data = NULL;
    status = dlb_tensor_data_mut(result, &data);
    if (status != DLB_OK) {
        dlb_tensor_free(result);
        return status;
    }
    const DLTensor *r = dlb_tensor_dltensor(result);
    int64_t n = 1;
    for (int32_t i = 0; i < r->ndim; i++) {
        n *= r->shape[i];
    }
    if (n > 0) {
        if (single) {
            float *x = data;
            float peak = 0.0f;
            for (int64_t i = 0; i < n; i++) {
                peak = fmaxf(peak, fabsf(x[i]));
            }
            if (peak > 0.0f) {
                for (int64_t i = 0; i < n; i++) {
                    x[i] /= peak;
                }
            }
        } else {
            double *x = data;
            double peak = 0.0;
            for (int64_t i = 0; i < n; i++) {
                peak = fmax(peak, fabs(x[i]));
            }
            if (peak > 0.0) {
                for (int64_t i = 0; i < n; i++) {
                    x[i] /= peak;
                }
            }
        }
    }
    *out = result;
    return DLB_OK;
}
