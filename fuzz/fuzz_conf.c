/* SPDX-License-Identifier: ISC */
/*
 * Fuzz target of the configuration parser: the input becomes a file,
 * conf_load reads it, and conf_print formats whatever it accepted.  No
 * crash, no leak, whatever the bytes; every refusal says why; and what
 * conf_print writes (`tgrunnerd -n -v`) loads again into the very same
 * configuration: printed a second time, it reads the same.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static char	 fuzz_path[] = "/tmp/fuzz_conf.XXXXXX";
static char	 fuzz_path2[] = "/tmp/fuzz_conf2.XXXXXX";
static int	 fuzz_fd = -1, fuzz_fd2 = -1;

static void
fuzz_cleanup(void)
{
	unlink(fuzz_path);
	unlink(fuzz_path2);
}

static void
fuzz_init(void)
{
	if ((fuzz_fd = mkstemp(fuzz_path)) == -1 ||
	    (fuzz_fd2 = mkstemp(fuzz_path2)) == -1) {
		perror("fuzz_conf");
		abort();
	}
	atexit(fuzz_cleanup);
}

/* conf_print's text, without its first line (which names the file). */
static char *
fuzz_print(const struct conf *c, size_t *len)
{
	char	*buf = NULL, *body;
	size_t	 n = 0;
	FILE	*fp;

	if ((fp = open_memstream(&buf, &n)) == NULL)
		abort();
	conf_print(c, fp);
	if (fclose(fp) != 0 || (body = strchr(buf, '\n')) == NULL)
		abort();
	*len = n - (size_t)(body - buf);
	memmove(buf, body, *len + 1);
	return buf;
}

static void
fuzz_round_trip(const struct conf *c)
{
	struct conf		 again;
	struct conf_error	 err;
	char			*first, *second;
	size_t			 n1, n2;

	first = fuzz_print(c, &n1);
	if (ftruncate(fuzz_fd2, 0) == -1 ||
	    pwrite(fuzz_fd2, first, n1, 0) != (ssize_t)n1)
		abort();
	if (conf_load(fuzz_path2, &again, &err) == -1)
		abort();	/* what it printed does not load */
	second = fuzz_print(&again, &n2);
	if (n1 != n2 || memcmp(first, second, n1) != 0)
		abort();	/* nor does it mean the same */
	conf_clear(&again);
	free(first);
	free(second);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf		c;
	struct conf_error	err;

	if (fuzz_fd == -1)
		fuzz_init();
	if (ftruncate(fuzz_fd, 0) == -1 ||
	    pwrite(fuzz_fd, data, size, 0) != (ssize_t)size)
		abort();
	if (conf_load(fuzz_path, &c, &err) == 0)
		fuzz_round_trip(&c);
	else if (err.msg[0] == '\0' || strlen(err.msg) >= sizeof(err.msg))
		abort();	/* every error must say what went wrong */
	conf_clear(&c);
	return 0;
}
