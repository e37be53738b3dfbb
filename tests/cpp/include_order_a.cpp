// The official DLPack header first, then dlbridge.hpp (whose dlbridge.h then skips its own
// DLPack declarations).
#include <dlpack/dlpack.h>

#include "dlbridge.hpp"

#define INCLUDE_ORDER "a (official dlpack.h, then dlbridge.hpp)"
#include "include_order_body.hpp"
