// libarchive: tar / pax / GNU tar streams, gzip and zstd filters (obd convert/apply).
#include <archive.h>
#include <archive_entry.h>
