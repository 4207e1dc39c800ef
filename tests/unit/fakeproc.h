/* SPDX-License-Identifier: ISC */
/*
 * tgrunner-fakeapi as a child process of a unit test (found through
 * $TG_BUILDDIR), listening on a free loopback port.
 */
#ifndef TG_FAKEPROC_H
#define TG_FAKEPROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * For a test's TEST_INIT and TEST_FINI (testmain.h): the temporary
 * directory (a mkdtemp template, made here) and curl's global state;
 * fakeproc_fini removes the directory with what the tests left in it.
 * They return -1 / the number of failures.
 */
int	fakeproc_init(char *tmpdir);
int	fakeproc_fini(const char *tmpdir);
/*
 * Start it with token; its base URL ("http://127.0.0.1:PORT") into url.
 * tmpdir holds its port file for a moment.  Returns its pid, or -1.
 */
pid_t	fakeproc_start(const char *tmpdir, const char *token, char *url,
	    size_t urlsz);
/* SIGTERM and wait; its exit status, or -1. */
int	fakeproc_stop(pid_t);
/* The bytes /_ctl/file makes for size and seed, as the fake makes them. */
void	fakeproc_bytes(unsigned char *out, size_t size, uint64_t seed);

#endif
