/* Shared between the three translation units of the ABI test.
 *
 * Only one definition of the DLPack types can be active in a translation unit (whichever header
 * comes first wins the DLPACK_DLPACK_H_ guard), so ours and the official ones are measured in
 * separate files: test_abi_ours.c includes only dlbridge.h, test_abi_official.c only
 * <dlpack/dlpack.h>. Both expand the same list (test_abi_list.h) into a table of named numbers,
 * and test_abi.c compares the two tables entry by entry. */
#ifndef DLB_TEST_ABI_H
#define DLB_TEST_ABI_H

#include <stddef.h>

typedef struct {
    const char *name;
    unsigned long long value;
} abi_entry;

/* Each returns the number of entries and points *out at a static table. */
size_t abi_ours(const abi_entry **out);
size_t abi_official(const abi_entry **out);

#endif /* DLB_TEST_ABI_H */
