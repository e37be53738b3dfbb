// The body shared by include_order_a.cpp and include_order_b.cpp, which differ only in the order
// they include the official dlpack/dlpack.h and dlbridge.hpp before this file.
#include <cstdio>

int main() {
    try {
        dlbridge::Tensor t = dlbridge::Tensor::zeros({4}, dlbridge::dtype_of<float>());
        // The official header's types work with the wrapper.
        DLManagedTensorVersioned *raw = t.to_dlpack_versioned().release();
        dlbridge::Tensor back = dlbridge::Tensor::from_dlpack(raw);
        if (!back.shares_memory(t) || (DLPACK_FLAG_BITMASK_READ_ONLY) != 1) {
            std::printf("FAIL: include order %s\n", INCLUDE_ORDER);
            return 1;
        }
    } catch (const dlbridge::Error &e) {
        std::printf("FAIL: include order %s: %s\n", INCLUDE_ORDER, e.what());
        return 1;
    }
    std::printf("include order %s: ok, dlbridge %s\n", INCLUDE_ORDER, dlbridge::version());
    return 0;
}
