/* Layout of the DLPack declarations in dlbridge.h (and nothing else). */
#include "dlbridge.h"

#include "test_abi_list.h"

size_t abi_ours(const abi_entry **out) {
    (void)abi_code_name_exists;
    *out = ABI_TABLE;
    return sizeof ABI_TABLE / sizeof ABI_TABLE[0];
}
