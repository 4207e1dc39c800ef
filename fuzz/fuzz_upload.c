/* SPDX-License-Identifier: ISC */
/*
 * libFuzzer target for upload_prepare(): a worker's call params (untrusted)
 * laid out as multipart parts.  The first byte picks whether an upload_dir
 * is configured and how large a file may be; the rest is the params JSON.
 *
 * upload_dir is a fixed tree with files, a directory, a fifo and symbolic
 * links pointing inside and outside it.  Whatever the params say, every
 * file the daemon opens must be one of the regular files of that tree,
 * reached without a link; a refusal must say "tgrunner: ..."; and the
 * daemon's cheap filter (upload_wanted) must never miss a file object.
 */
#include "config.h"

#include <sys/stat.h>

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "http.h"
#include "upload.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static int	 dirfd_ = -2;
static struct stat regular[2];		/* the only files that may be opened */

static void
put(const char *dir, const char *name, const char *text)
{
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) == -1 ||
	    write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		abort();
	close(fd);
}

/* The tree stays for the process's life: libFuzzer has no teardown. */
static void
fuzz_init(void)
{
	char tmpl[] = "/tmp/fuzz_upload.XXXXXX", path[512];
	const char *dir;

	if ((dir = mkdtemp(tmpl)) == NULL)
		abort();
	snprintf(path, sizeof(path), "%s/up", dir);
	mkdir(path, 0700);
	put(path, "a.jpg", "0123456789");
	snprintf(path, sizeof(path), "%s/up/sub", dir);
	mkdir(path, 0700);
	put(path, "b.txt", "abc");
	put(dir, "secret", "outside upload_dir");
	snprintf(path, sizeof(path), "%s/up/out", dir);
	if (symlink("../secret", path) == -1)
		abort();
	snprintf(path, sizeof(path), "%s/up/in", dir);
	if (symlink("a.jpg", path) == -1)
		abort();
	snprintf(path, sizeof(path), "%s/up/fifo", dir);
	mkfifo(path, 0600);
	snprintf(path, sizeof(path), "%s/up/a.jpg", dir);
	stat(path, &regular[0]);
	snprintf(path, sizeof(path), "%s/up/sub/b.txt", dir);
	stat(path, &regular[1]);
	snprintf(path, sizeof(path), "%s/up", dir);
	if ((dirfd_ = upload_dir_open(path)) == -1)
		abort();
}

static void
fuzz_check_part(const struct http_part *p)
{
	struct stat st;
	size_t i;

	if (p->name == NULL || *p->name == '\0')
		__builtin_trap();
	if (p->fd == -1)
		return;
	if (fstat(p->fd, &st) == -1 || !S_ISREG(st.st_mode))
		__builtin_trap();
	for (i = 0; i < 2; i++)
		if (st.st_dev == regular[i].st_dev &&
		    st.st_ino == regular[i].st_ino)
			return;
	__builtin_trap();		/* a file it must never open */
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct http_part *parts;
	struct upload *u = NULL;
	char err[UPLOAD_ERR_MAX], *body;
	json_t *params;
	size_t i, n;
	int rc;

	if (dirfd_ == -2)
		fuzz_init();
	if (size < 1)
		return 0;
	params = json_loadb((const char *)data + 1, size - 1, 0, NULL);
	if (!json_is_object(params)) {
		json_decref(params);
		return 0;
	}
	rc = upload_prepare(params, data[0] & 1 ? dirfd_ : -1,
	    data[0] & 2 ? 5 : 1024, &u, err, sizeof(err));
	if (rc == -1 && (u != NULL || strncmp(err, "tgrunner: ", 10) != 0))
		__builtin_trap();
	if (rc == 0 && u != NULL)
		__builtin_trap();
	if (rc == 1) {
		if (u == NULL)
			__builtin_trap();
		/* the filter the daemon runs first must have let it through */
		if ((body = json_dumps(params, JSON_COMPACT)) == NULL)
			abort();
		if (!upload_wanted(body))
			__builtin_trap();
		free(body);
		parts = upload_parts(u, &n);
		for (i = 0; i < n; i++)
			fuzz_check_part(&parts[i]);
		if (upload_size(u) < 0)
			__builtin_trap();
	}
	upload_free(u);
	json_decref(params);
	return 0;
}
