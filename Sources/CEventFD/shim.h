// eventfd and memfd_create from the C library (the Glibc Swift module leaves them out).
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sys/eventfd.h>
#include <sys/mman.h>

static inline int obd_eventfd(unsigned int initval, int flags) { return eventfd(initval, flags); }
static inline int obd_memfd_create(const char *name, unsigned int flags) { return memfd_create(name, flags); }
static inline int obd_efd_cloexec(void) { return EFD_CLOEXEC; }
static inline int obd_efd_nonblock(void) { return EFD_NONBLOCK; }
static inline unsigned int obd_mfd_cloexec(void) { return MFD_CLOEXEC; }
