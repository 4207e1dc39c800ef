/* SPDX-License-Identifier: ISC */
/*
 * What the files of libtgrunner-worker share and do not export (the
 * library exports tgw_* only).
 */
#ifndef TGW_PRIVATE_H
#define TGW_PRIVATE_H

struct tgw;

/* Set tgw_error() and print it once to stderr; returns -1. */
int	tgwi_seterr(struct tgw *, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));

#endif
