// dlbridge.hpp first, then the official DLPack header (which its include guard then skips).
#include "dlbridge.hpp"

#include <dlpack/dlpack.h>

#define INCLUDE_ORDER "b (dlbridge.hpp, then official dlpack.h)"
#include "include_order_body.hpp"
