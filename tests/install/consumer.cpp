// A C++ program built against an installed dlbridge through CMake's find_package
// (tests/install/CMakeLists.txt, run by tests/install/run.sh). It uses the C API.
#include <cstdio>
#include <cstring>

#include <dlbridge.h>

int main() {
    const int64_t shape[1] = {4};
    const DLDataType i32 = {kDLInt, 32, 1};
    const DLDevice cpu = {kDLCPU, 0};
    dlb_tensor *t = nullptr, *c = nullptr;
    if (dlb_tensor_zeros(shape, 1, i32, cpu, &t) != DLB_OK ||
        dlb_tensor_copy(t, &c) != DLB_OK) {
        std::fprintf(stderr, "dlbridge failed: %s\n", dlb_last_error());
        return 1;
    }
    const bool separate = !dlb_tensor_shares_memory(t, c);
    dlb_tensor_free(c);
    dlb_tensor_free(t);
    char version[64];
    std::snprintf(version, sizeof version, "%d.%d.%d", DLBRIDGE_VERSION_MAJOR,
                  DLBRIDGE_VERSION_MINOR, DLBRIDGE_VERSION_PATCH);
    if (!separate || std::strcmp(version, dlb_version()) != 0 ||
        std::strcmp(dlb_status_str(DLB_OK), "DLB_OK") != 0 || dlb_live_allocations() != 0) {
        std::fprintf(stderr, "unexpected result\n");
        return 1;
    }
    std::printf("OK (C++ through CMake, dlbridge %s)\n", dlb_version());
    return 0;
}
