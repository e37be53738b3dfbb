/* Ours first, then the official DLPack header: the official one must be skipped by its own
 * include guard, which dlbridge.h defines. Also compiled as C++17 (run.sh: g++ -x c++). */
#include "dlbridge.h"

#include <dlpack/dlpack.h>

#define INCLUDE_ORDER "b (dlbridge.h, then official)"
#include "include_order_body.h"
