/* The official DLPack header first, then ours: ours must skip its DLPack declarations and work
 * with the official types. Also compiled as C++17 (run.sh: g++ -x c++). */
#include <dlpack/dlpack.h>

#include "dlbridge.h"

#define INCLUDE_ORDER "a (official, then dlbridge.h)"
#include "include_order_body.h"
