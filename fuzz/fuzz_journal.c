/*
 * Fuzz the journal loader: the input is written as the journal file of a
 * fresh state directory, which is then opened, replayed, appended to and
 * closed.  A damaged journal must never crash the daemon or leak.
 */
#include "config.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>

#include "journal.h"
#include "log.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static char	 fuzz_dir[256];

static void
fuzz_clean(void)
{
	struct dirent *d;
	DIR *dp;

	if ((dp = opendir(fuzz_dir)) == NULL)
		abort();
	while ((d = readdir(dp)) != NULL)
		if (strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0)
			unlinkat(dirfd(dp), d->d_name, 0);
	closedir(dp);
}

static void
fuzz_atexit(void)
{
	fuzz_clean();
	rmdir(fuzz_dir);
}

/* tmpfs when there is one: the journal fsyncs every batch */
static void
fuzz_init(void)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

	snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/fuzz_journal.XXXXXX", base);
	if (mkdtemp(fuzz_dir) == NULL) {
		perror("mkdtemp");
		abort();
	}
	log_set_level(LOG_LVL_ERR - 1);
	atexit(fuzz_atexit);
}

static void
fuzz_visit(void *arg, int64_t id, const char *json, size_t len, int attempt)
{
	size_t *sum = arg;

	/* touch every byte: ASan checks the length is right */
	if (strlen(json) > len || attempt < 2)
		abort();
	*sum += len + (size_t)id;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char json[] = "{\"update_id\":1}";
	struct jupdate u = { 0, json, sizeof(json) - 1 };
	struct journal *j;
	char path[300], err[256];
	size_t sum = 0, n = 1;
	int fd;

	if (fuzz_dir[0] == '\0')
		fuzz_init();
	snprintf(path, sizeof(path), "%s/journal", fuzz_dir);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) == -1 ||
	    write(fd, data, size) != (ssize_t)size)
		abort();
	close(fd);
	if ((j = journal_open(fuzz_dir, FSYNC_BATCH, err, sizeof(err))) == NULL)
		abort();		/* a bad file must never refuse a start */
	journal_replay(j, fuzz_visit, &sum);
	u.id = journal_next_offset(j);
	journal_filter(j, &u, &n, 1700000000);
	if (n == 1 && journal_append(j, &u, 1, 1700000000) == -1)
		abort();
	journal_done(j, u.id);
	journal_flush(j);
	journal_close(j);
	fuzz_clean();
	return 0;
}
