/* A minimal check harness shared by the C conformance programs.
 *
 * CHECK never aborts: a failed check prints where it is and what it tested, and the program goes
 * on, so one run lists every broken rule. check_report() prints the closing "N passed, M failed"
 * line and gives the exit status. The counters are atomic because test_threads checks from
 * several threads at once. */
#ifndef DLB_TEST_CHECK_H
#define DLB_TEST_CHECK_H

#include <stdatomic.h>
#include <stdio.h>

static atomic_int check_passed;
static atomic_int check_failed;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (cond) {                                                                    \
            atomic_fetch_add(&check_passed, 1);                                        \
        } else {                                                                       \
            atomic_fetch_add(&check_failed, 1);                                        \
            printf("%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);            \
            fflush(stdout);                                                            \
        }                                                                              \
    } while (0)

/* Like CHECK(got == want) but prints both values: statuses and counts are easier to diagnose
 * when the report says what came back. Each side is evaluated exactly once. */
#define CHECK_EQ(got, want)                                                            \
    do {                                                                               \
        long long got_ = (long long)(got);                                             \
        long long want_ = (long long)(want);                                           \
        if (got_ == want_) {                                                           \
            atomic_fetch_add(&check_passed, 1);                                        \
        } else {                                                                       \
            atomic_fetch_add(&check_failed, 1);                                        \
            printf("%s:%d: CHECK failed: %s == %s (got %lld, want %lld)\n", __FILE__,  \
                   __LINE__, #got, #want, got_, want_);                                \
            fflush(stdout);                                                            \
        }                                                                              \
    } while (0)

static inline int check_report(void) {
    int failed = atomic_load(&check_failed);
    printf("%d passed, %d failed\n", atomic_load(&check_passed), failed);
    fflush(stdout);
    return failed == 0 ? 0 : 1;
}

#endif /* DLB_TEST_CHECK_H */
