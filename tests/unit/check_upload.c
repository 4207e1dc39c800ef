/* SPDX-License-Identifier: ISC */
/*
 * Unit tests of daemon/upload.c: base64, the path rules, opening beneath
 * upload_dir without symbolic links (with openat2 and with the openat walk
 * used where the kernel lacks it), and how a call's params are laid out as
 * multipart parts.  The end-to-end path (curl, the fake Bot API, retries)
 * is tests/scenario/test_uploads.py.
 */
#include "config.h"

#include <sys/stat.h>
#include <sys/types.h>

#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "http.h"
#include "upload.h"

static char	 tmp[PATH_MAX];
static int	 dirfd_ = -1;

static void
put(const char *rel, const char *data, size_t len)
{
	char	path[PATH_MAX * 2];
	FILE	*fp;

	snprintf(path, sizeof(path), "%s/%s", tmp, rel);
	ck_assert_ptr_nonnull(fp = fopen(path, "w"));
	ck_assert_uint_eq(fwrite(data, 1, len, fp), len);
	fclose(fp);
}

static void
at(int (*fn)(const char *, const char *), const char *a, const char *b)
{
	char p1[PATH_MAX * 2], p2[PATH_MAX * 2];

	snprintf(p1, sizeof(p1), "%s", a);
	snprintf(p2, sizeof(p2), "%s/%s", tmp, b);
	ck_assert_int_eq(fn(p1, p2), 0);
}

static int
mkdir_(const char *unused, const char *p)
{
	(void)unused;
	return mkdir(p, 0700);
}

static int
mkfifo_(const char *unused, const char *p)
{
	(void)unused;
	return mkfifo(p, 0600);
}

/*
 * tmp/up: photo.jpg (10 bytes), a/b/c.txt, big (101 bytes), dir/, fifo,
 * link -> /etc/passwd, inner -> photo.jpg, ldir -> a; tmp/secret.
 */
static void
setup(void)
{
	char buf[101], up[PATH_MAX + 8];

	snprintf(tmp, sizeof(tmp), "/tmp/check_upload.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmp));
	at(mkdir_, "", "up");
	at(mkdir_, "", "up/a");
	at(mkdir_, "", "up/a/b");
	at(mkdir_, "", "up/dir");
	at(mkfifo_, "", "up/fifo");
	put("up/photo.jpg", "0123456789", 10);
	put("up/a/b/c.txt", "abc", 3);
	memset(buf, 'x', sizeof(buf));
	put("up/big", buf, sizeof(buf));
	put("secret", "secret", 6);
	at(symlink, "/etc/passwd", "up/link");
	at(symlink, "photo.jpg", "up/inner");
	at(symlink, "a", "up/ldir");
	at(symlink, "../secret", "up/out");
	snprintf(up, sizeof(up), "%s/up", tmp);
	ck_assert_int_ne(dirfd_ = upload_dir_open(up), -1);
	upload_force_walk(0);
}

static void
teardown(void)
{
	char cmd[PATH_MAX + 16];

	close(dirfd_);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	ck_assert_int_eq(system(cmd), 0);
}

/* --- base64 ------------------------------------------------------------- */

static void
b64_is(const char *in, const char *want, size_t wlen)
{
	unsigned char	out[64];
	size_t		bad = 99;
	ssize_t		n;

	n = upload_b64_decode(in, strlen(in), out, &bad);
	ck_assert_msg(n == (ssize_t)wlen, "'%s': %zd bytes", in, n);
	ck_assert(memcmp(out, want, wlen) == 0);
}

START_TEST(test_b64)
{
	b64_is("", "", 0);
	b64_is("Zg==", "f", 1);
	b64_is("Zm8=", "fo", 2);
	b64_is("Zm9v", "foo", 3);
	b64_is("Zm9vYg==", "foob", 4);
	b64_is("Zm9vYmE=", "fooba", 5);
	b64_is("Zm9vYmFy", "foobar", 6);
	b64_is("Zm9vYg", "foob", 4);		/* padding optional */
	b64_is("Zm9vYmE", "fooba", 5);
	b64_is("AP8A/w+/", "\0\377\0\377\017\277", 6);
}
END_TEST

START_TEST(test_b64_reject)
{
	static const struct {
		const char	*in;
		size_t		 bad;
	} bad[] = {
		{ "Z", 0 }, { "Zm9vY", 4 }, { "Zg=", 2 }, { "Zg===", 2 },
		{ "=", 0 }, { "==", 0 }, { "Zh==", 1 }, { "Zm9=", 2 },
		{ "Zm 9v", 2 }, { "Zm9v\n", 4 }, { "Zm-_", 2 }, { "Z=g=", 1 },
		{ "Zm9v====", 4 }, { NULL, 0 }
	};
	unsigned char	out[64];
	size_t		i, at_;

	for (i = 0; bad[i].in != NULL; i++) {
		at_ = 99;
		ck_assert_msg(upload_b64_decode(bad[i].in, strlen(bad[i].in),
		    out, &at_) == -1, "'%s' accepted", bad[i].in);
		ck_assert_msg(at_ == bad[i].bad, "'%s': bad at %zu, not %zu",
		    bad[i].in, at_, bad[i].bad);
	}
}
END_TEST

/* --- opening files ------------------------------------------------------- */

static void
open_ok(const char *rel, int64_t want)
{
	char	err[256] = "";
	int64_t	size = -1;
	int	fd;

	fd = upload_open(dirfd_, rel, 100, &size, err, sizeof(err));
	ck_assert_msg(fd != -1, "%s: %s", rel, err);
	ck_assert_int_eq(size, want);
	ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	close(fd);
}

static void
open_bad(const char *rel, const char *why)
{
	char	err[256] = "";
	int64_t	size = -1;

	ck_assert_msg(upload_open(dirfd_, rel, 100, &size, err,
	    sizeof(err)) == -1, "%s opened", rel);
	ck_assert_msg(strstr(err, why) != NULL, "%s: '%s' lacks '%s'", rel,
	    err, why);
}

static void
open_cases(void)
{
	open_ok("photo.jpg", 10);
	open_ok("./photo.jpg", 10);
	open_ok("a/b/c.txt", 3);
	open_ok("a//b/./c.txt", 3);
	open_bad("", "empty");
	open_bad("/etc/passwd", "relative");
	open_bad("..", "\"..\"");
	open_bad("../secret", "\"..\"");
	open_bad("a/../photo.jpg", "\"..\"");
	open_bad("a/b/..", "\"..\"");
	open_bad("photo\n.jpg", "control");
	open_bad("link", "symbolic");
	open_bad("inner", "symbolic");
	open_bad("out", "symbolic");
	open_bad("ldir/b/c.txt", "symbolic");
	open_bad("a/b/../../link", "\"..\"");
	open_bad("dir", "not a regular file");
	open_bad("dir/", "not a regular file");
	open_bad("fifo", "not a regular file");
	open_bad("big", "upload_max_size");
	open_bad("nothere", "no such file");
	open_bad("photo.jpg/x", "not a directory");
}

START_TEST(test_open_openat2)
{
	open_cases();
}
END_TEST

START_TEST(test_open_walk)
{
	upload_force_walk(1);
	open_cases();
}
END_TEST

/* --- params to parts ----------------------------------------------------- */

static const struct http_part *
part(const struct upload *u, const char *name)
{
	const struct http_part	*p;
	size_t			 i, n;

	p = upload_parts(u, &n);
	for (i = 0; i < n; i++)
		if (strcmp(p[i].name, name) == 0)
			return &p[i];
	ck_abort_msg("no part %s", name);
	return NULL;
}

static void
text_is(const struct upload *u, const char *name, const char *want)
{
	const struct http_part *p = part(u, name);

	ck_assert_ptr_null(p->filename);
	ck_assert_uint_eq(p->len, strlen(want));
	ck_assert_msg(memcmp(p->data, want, p->len) == 0, "%s: '%.*s'",
	    name, (int)p->len, p->data);
}

static void
file_is(const struct upload *u, const char *name, const char *want,
    const char *filename, const char *ctype)
{
	const struct http_part	*p = part(u, name);
	char			 buf[64];

	ck_assert_str_eq(p->filename, filename);
	if (ctype == NULL)
		ck_assert_ptr_null(p->ctype);
	else
		ck_assert_str_eq(p->ctype, ctype);
	ck_assert_uint_eq(p->len, strlen(want));
	if (p->data != NULL)
		ck_assert(memcmp(p->data, want, p->len) == 0);
	else {
		/* read at offset 0, whatever was read before */
		ck_assert_int_eq(pread(p->fd, buf, sizeof(buf), 0),
		    (ssize_t)p->len);
		ck_assert(memcmp(buf, want, p->len) == 0);
	}
}

static struct upload *
prepare(const char *json, int dir)
{
	struct upload	*u = NULL;
	char		 err[UPLOAD_ERR_MAX] = "";
	json_t		*params = json_loads(json, 0, NULL);

	ck_assert_ptr_nonnull(params);
	ck_assert_msg(upload_prepare(params, dir, 100, &u, err,
	    sizeof(err)) == 1, "%s: %s", json, err);
	json_decref(params);	/* the upload owns copies */
	return u;
}

static void
refused(const char *json, int dir, const char *why)
{
	struct upload	*u = NULL;
	char		 err[UPLOAD_ERR_MAX] = "";
	json_t		*params = json_loads(json, 0, NULL);

	ck_assert_ptr_nonnull(params);
	ck_assert_int_eq(upload_prepare(params, dir, 100, &u, err,
	    sizeof(err)), -1);
	ck_assert_ptr_null(u);
	ck_assert_msg(strncmp(err, "tgrunner: ", 10) == 0 &&
	    strstr(err, why) != NULL, "%s: '%s' lacks '%s'", json, err, why);
	json_decref(params);
}

START_TEST(test_layout)
{
	struct upload	*u;
	size_t		 n;

	u = prepare("{\"chat_id\":-100,\"caption\":\"a \\\"b\\\"\","
	    "\"disable_notification\":true,\"x\":null,\"f\":1.5,"
	    "\"photo\":{\"@file\":\"a/b/c.txt\"},"
	    "\"reply_markup\":{\"inline_keyboard\":[]}}", dirfd_);
	upload_parts(u, &n);
	ck_assert_uint_eq(n, 7);
	text_is(u, "chat_id", "-100");
	text_is(u, "caption", "a \"b\"");
	text_is(u, "disable_notification", "true");
	text_is(u, "x", "null");
	text_is(u, "f", "1.5");
	text_is(u, "reply_markup", "{\"inline_keyboard\":[]}");
	file_is(u, "photo", "abc", "c.txt", NULL);
	ck_assert_int_eq(upload_size(u), 3);
	upload_free(u);
}
END_TEST

START_TEST(test_attach)
{
	struct upload	*u;
	size_t		 n;

	/* a parameter already called tgfile0 is skipped */
	u = prepare("{\"tgfile0\":\"x\",\"media\":["
	    "{\"type\":\"photo\",\"media\":{\"@data\":\"aGk=\","
	    "\"filename\":\"hi.png\",\"content_type\":\"image/png\"}},"
	    "{\"type\":\"video\",\"media\":{\"@file\":\"photo.jpg\"},"
	    "\"thumbnail\":{\"@data\":\"dA\"}},"
	    "{\"type\":\"photo\",\"media\":\"file_id\"}]}", dirfd_);
	upload_parts(u, &n);
	ck_assert_uint_eq(n, 5);
	text_is(u, "tgfile0", "x");
	text_is(u, "media", "[{\"type\":\"photo\",\"media\":"
	    "\"attach://tgfile1\"},{\"type\":\"video\",\"media\":"
	    "\"attach://tgfile2\",\"thumbnail\":\"attach://tgfile3\"},"
	    "{\"type\":\"photo\",\"media\":\"file_id\"}]");
	file_is(u, "tgfile1", "hi", "hi.png", "image/png");
	file_is(u, "tgfile2", "0123456789", "photo.jpg", NULL);
	file_is(u, "tgfile3", "t", "file", NULL);
	ck_assert_int_eq(upload_size(u), 13);
	upload_free(u);
}
END_TEST

START_TEST(test_no_files)
{
	static const char *const plain[] = {
		"{}", "{\"chat_id\":1,\"text\":\"{\\\"@file\\\":\\\"x\\\"}\"}",
		"{\"a\":{\"b\":[1,{\"@filex\":1}]}}", "{\"@file\":\"x\"}", NULL
	};
	struct upload	*u = (struct upload *)1;
	char		 err[UPLOAD_ERR_MAX];
	json_t		*params;
	int		 i;

	for (i = 0; plain[i] != NULL; i++) {
		params = json_loads(plain[i], 0, NULL);
		ck_assert_int_eq(upload_prepare(params, dirfd_, 100, &u, err,
		    sizeof(err)), 0);
		ck_assert_ptr_null(u);
		json_decref(params);
	}
	ck_assert(!upload_wanted("{\"text\":\"{\\\"@file\\\":1}\"}"));
	ck_assert(upload_wanted("{\"p\":{\"@file\":\"x\"}}"));
	ck_assert(upload_wanted("{\"p\":[{\"@data\":\"\"}]}"));
}
END_TEST

START_TEST(test_refused)
{
	char	deep[512];
	int	i, n = 0;

	refused("{\"photo\":{\"@file\":\"photo.jpg\"}}", -1,
	    "photo: file references are refused: upload_dir is not set");
	refused("{\"photo\":{\"@file\":\"link\"}}", dirfd_, "symbolic");
	refused("{\"m\":[{\"media\":{\"@file\":\"fifo\"}}]}", dirfd_,
	    "m[0].media: \"fifo\" is not a regular file");
	refused("{\"photo\":{\"@data\":\"!!\"}}", -1, "not valid base64");
	refused("{\"photo\":{\"@data\":\"aGk=\",\"@file\":\"x\"}}", -1,
	    "both");
	refused("{\"photo\":{\"@data\":\"aGk=\",\"x\":1}}", -1,
	    "unknown member");
	refused("{\"photo\":{\"@data\":1}}", -1, "must be a string");
	refused("{\"photo\":{\"@data\":\"aGk=\",\"filename\":\"\"}}", -1,
	    "filename");
	refused("{\"photo\":{\"@data\":\"aGk=\",\"content_type\":\"a\\nb\"}}",
	    -1, "content_type");
	refused("{\"bad name\":1,\"photo\":{\"@data\":\"aGk=\"}}", -1,
	    "parameter name");
	n = snprintf(deep, sizeof(deep), "{\"p\":");
	for (i = 0; i < 40; i++)
		n += snprintf(deep + n, sizeof(deep) - n, "[");
	n += snprintf(deep + n, sizeof(deep) - n, "{\"@data\":\"\"}");
	for (i = 0; i < 40; i++)
		n += snprintf(deep + n, sizeof(deep) - n, "]");
	snprintf(deep + n, sizeof(deep) - n, "}");
	refused(deep, -1, "nested too deeply");
}
END_TEST

START_TEST(test_too_many_files)
{
	char	buf[4096];
	int	i, n;

	n = snprintf(buf, sizeof(buf), "{\"media\":[");
	for (i = 0; i <= UPLOAD_MAX_FILES; i++)
		n += snprintf(buf + n, sizeof(buf) - n, "%s{\"@data\":\"\"}",
		    i > 0 ? "," : "");
	snprintf(buf + n, sizeof(buf) - n, "]}");
	refused(buf, -1, "more than");
}
END_TEST

/* Files held open by waiting calls are capped, all calls together. */
START_TEST(test_open_files_capped)
{
	struct upload	*held[300];
	int		 i, n = 0;

	/* 5 files per call: the cap (256) is reached within 52 calls */
	for (i = 0; i < 300; i++) {
		struct upload	*u = NULL;
		char		 err[UPLOAD_ERR_MAX] = "";
		json_t		*params = json_loads("{\"media\":["
		    "{\"@file\":\"photo.jpg\"},{\"@file\":\"photo.jpg\"},"
		    "{\"@file\":\"photo.jpg\"},{\"@file\":\"photo.jpg\"},"
		    "{\"@file\":\"photo.jpg\"}]}", 0, NULL);

		if (upload_prepare(params, dirfd_, 100, &u, err,
		    sizeof(err)) == -1) {
			ck_assert_ptr_nonnull(strstr(err, "try again later"));
			json_decref(params);
			break;
		}
		held[n++] = u;
		json_decref(params);
	}
	ck_assert_int_eq(n, 51);		/* 255 open, the 52nd refused */
	/* freeing a call gives its files back */
	upload_free(held[--n]);
	upload_free(prepare("{\"photo\":{\"@file\":\"photo.jpg\"}}", dirfd_));
	while (n > 0)
		upload_free(held[--n]);
}
END_TEST

static Suite *
upload_suite(void)
{
	Suite	*s = suite_create("upload");
	TCase	*tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_b64);
	tcase_add_test(tc, test_b64_reject);
	tcase_add_test(tc, test_open_openat2);
	tcase_add_test(tc, test_open_walk);
	tcase_add_test(tc, test_layout);
	tcase_add_test(tc, test_attach);
	tcase_add_test(tc, test_no_files);
	tcase_add_test(tc, test_refused);
	tcase_add_test(tc, test_too_many_files);
	tcase_add_test(tc, test_open_files_capped);
	suite_add_tcase(s, tc);
	return s;
}

#define TEST_SUITE	upload_suite
#include "testmain.h"
