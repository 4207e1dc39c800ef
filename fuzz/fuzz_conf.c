/*
 * Fuzz target of the configuration parser: the input becomes a file,
 * conf_load reads it, and conf_print formats whatever it accepted.
 * No crash, no leak, whatever the bytes.
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
static int	 fuzz_fd = -1;
static FILE	*fuzz_null;

static void
fuzz_cleanup(void)
{
	unlink(fuzz_path);
}

static void
fuzz_init(void)
{
	if ((fuzz_fd = mkstemp(fuzz_path)) == -1 ||
	    (fuzz_null = fopen("/dev/null", "w")) == NULL) {
		perror("fuzz_conf");
		abort();
	}
	atexit(fuzz_cleanup);
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
		conf_print(&c, fuzz_null);
	else if (err.msg[0] == '\0' || strlen(err.msg) >= sizeof(err.msg))
		abort();	/* every error must say what went wrong */
	conf_clear(&c);
	return 0;
}
