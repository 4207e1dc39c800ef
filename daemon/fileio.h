/* SPDX-License-Identifier: ISC */
/*
 * Whole writes to files: the journal and the dead letters never leave a
 * write half done without knowing it.
 */
#ifndef TG_FILEIO_H
#define TG_FILEIO_H

#include <stddef.h>
#include <stdint.h>

/*
 * Write all len bytes of p to fd: at offset off (pwrite), or at the file
 * position when off is negative (write).  EINTR is retried.  0, or -1
 * with errno from the write that failed (some bytes may be written).
 */
int	fileio_write_all(int fd, const void *p, size_t len, int64_t off);

#endif
