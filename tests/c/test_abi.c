/* Our DLPack declarations against the official header: every size, alignment, field offset,
 * field size, enumerator and macro value must be equal. The numbers come from two separately
 * compiled files (see test_abi.h); this one only compares them. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "test_abi.h"

int main(void) {
    const abi_entry *ours, *official;
    size_t n_ours = abi_ours(&ours);
    size_t n_official = abi_official(&official);
    CHECK_EQ(n_ours, n_official);
    size_t n = n_ours < n_official ? n_ours : n_official;
    for (size_t i = 0; i < n; i++) {
        /* Same list expanded twice, so the names line up. */
        CHECK(strcmp(ours[i].name, official[i].name) == 0);
        if (ours[i].value != official[i].value)
            printf("mismatch: %s: dlbridge.h %llu, official %llu\n", ours[i].name,
                   ours[i].value, official[i].value);
        CHECK(ours[i].value == official[i].value);
    }
    printf("compared %zu layout facts and values\n", n);
    return check_report();
}
