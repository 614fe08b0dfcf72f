#include <zlib.h>

// zlib's init entry points are macros (they pass the version and the stream size);
// these inline functions give Swift something to call.
static inline int obd_inflateInit2(z_streamp strm, int windowBits) {
    return inflateInit2(strm, windowBits);
}
