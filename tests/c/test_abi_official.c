/* Layout of the official DLPack header (build/official-dlpack/dlpack/dlpack.h, taken from the
 * PyTorch wheel by the Makefile; never copied into the repository). */
#include <dlpack/dlpack.h>

#include "test_abi_list.h"

size_t abi_official(const abi_entry **out) {
    (void)abi_code_name_exists;
    *out = ABI_TABLE;
    return sizeof ABI_TABLE / sizeof ABI_TABLE[0];
}
