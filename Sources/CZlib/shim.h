#include <zlib.h>

// zlib's init entry points are macros (they pass the version and the stream size);
// these inline functions give Swift something to call.
static inline int obd_inflateInit2(z_streamp strm, int windowBits) {
    return inflateInit2(strm, windowBits);
}

static inline int obd_deflateInit2(z_streamp strm, int level, int windowBits) {
    return deflateInit2(strm, level, Z_DEFLATED, windowBits, 8, Z_DEFAULT_STRATEGY);
}
