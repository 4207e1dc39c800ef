/* SPDX-License-Identifier: ISC */
/*
 * The C worker SDK's Bot API endpoint members and downloads (tgw_api_root,
 * tgw_download, tgw_download_mem).  The test plays the daemon on a
 * socketpair, and tgrunner-fakeapi plays the endpoint: its welcome names
 * the fake as api_root with the fake's token as api_token, and the fake
 * serves getFile and the files (deterministic bytes the test makes too).
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "fakeproc.h"
#include "tgrunner-worker.h"

#define TOKEN	"123456:TEST-TOKEN"

static char	 tmpdir[] = "/tmp/check_sdk_download.XXXXXX";
static char	 fake_url[64];
static pid_t	 fake_pid = -1;
static int	 dfd = -1, wfd = -1;	/* daemon's and worker's ends */
static struct tgw *w;

static void
setup(void)
{
	int sv[2];

	unsetenv("TGRUNNER_API_ROOT");
	unsetenv("TGRUNNER_API_TOKEN");
	fake_pid = fakeproc_start(tmpdir, TOKEN, fake_url, sizeof(fake_url));
	ck_assert_msg(fake_pid > 0, "tgrunner-fakeapi did not start");
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	dfd = sv[0];
	wfd = sv[1];
	w = NULL;
}

static void
teardown(void)
{
	tgw_close(w);
	if (dfd >= 0)
		close(dfd);
	fakeproc_stop(fake_pid);
}

/* Open the worker after queueing welcome with these members (or none). */
static struct tgw *
open_with(const char *root, const char *token)
{
	struct tgw_config	 cfg = { .fd = wfd, .slots = 1, .name = "t" };
	char			 welcome[1024];
	int			 n;

	n = snprintf(welcome, sizeof(welcome), "{\"type\":\"welcome\","
	    "\"protocol\":1,\"worker_id\":7,\"bot\":{\"id\":123456,"
	    "\"is_bot\":true,\"first_name\":\"T\"},\"max_frame\":1048576");
	if (root != NULL)
		n += snprintf(welcome + n, sizeof(welcome) - n,
		    ",\"api_root\":\"%s\"", root);
	if (token != NULL)
		n += snprintf(welcome + n, sizeof(welcome) - n,
		    ",\"api_token\":\"%s\"", token);
	snprintf(welcome + n, sizeof(welcome) - n, "}\n");
	ck_assert_int_eq(write(dfd, welcome, strlen(welcome)),
	    (ssize_t)strlen(welcome));
	return tgw_open(&cfg);
}

/* A file at the fake: size bytes from seed 11, at path or the default. */
static void
fake_file(const char *id, size_t size, int chunked, const char *path)
{
	char		 body[512];
	CURL		*e = curl_easy_init();
	char		 url[128];
	long		 status = 0;
	FILE		*devnull = fopen("/dev/null", "w");

	snprintf(body, sizeof(body), "{\"file_id\":\"%s\",\"size\":%zu,"
	    "\"seed\":11,\"chunked\":%s%s%s%s}", id, size, chunked ? "true" :
	    "false", path ? ",\"file_path\":\"" : "", path ? path : "",
	    path ? "\"" : "");
	snprintf(url, sizeof(url), "%s/_ctl/file", fake_url);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, devnull);
	ck_assert_int_eq(curl_easy_perform(e), CURLE_OK);
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
	ck_assert_int_eq(status, 200);
	curl_easy_cleanup(e);
	fclose(devnull);
}

static void
same_bytes(const void *got, size_t len, size_t want)
{
	unsigned char *ref = malloc(want + 1);

	ck_assert_uint_eq(len, want);
	fakeproc_bytes(ref, want, 11);
	ck_assert_msg(memcmp(got, ref, want) == 0, "the bytes differ");
	free(ref);
}

START_TEST(test_welcome_members)
{
	ck_assert_ptr_nonnull(w = open_with("http://127.0.0.1:9",
	    "123456:w7-00"));
	ck_assert_str_eq(tgw_api_root(w), "http://127.0.0.1:9");
	ck_assert_str_eq(tgw_api_token(w), "123456:w7-00");
}
END_TEST

START_TEST(test_env_fallback)
{
	setenv("TGRUNNER_API_ROOT", "unix:/run/x.sock", 1);
	setenv("TGRUNNER_API_TOKEN", "1:w2-ab", 1);
	ck_assert_ptr_nonnull(w = open_with(NULL, NULL));
	ck_assert_str_eq(tgw_api_root(w), "unix:/run/x.sock");
	ck_assert_str_eq(tgw_api_token(w), "1:w2-ab");
}
END_TEST

START_TEST(test_no_endpoint)
{
	void	*data;
	size_t	 len;

	ck_assert_ptr_nonnull(w = open_with(NULL, NULL));
	ck_assert_ptr_null(tgw_api_root(w));
	ck_assert_ptr_null(tgw_api_token(w));
	ck_assert_int_eq(tgw_download_mem(w, "x", 0, &data, &len), -1);
	ck_assert_ptr_null(data);
	ck_assert(strstr(tgw_error(w), "no Bot API endpoint") != NULL);
}
END_TEST

START_TEST(test_root_without_token_refused)
{
	ck_assert_ptr_null(open_with("http://127.0.0.1:9", NULL));
}
END_TEST

START_TEST(test_download_mem)
{
	void	*data;
	size_t	 len;

	fake_file("A", 300001, 0, NULL);
	fake_file("B", 70000, 1, NULL);
	fake_file("C", 0, 0, NULL);
	fake_file("D", 4321, 0, "photos/a b/\xc3\xa9t\xc3\xa9.jpg");
	ck_assert_ptr_nonnull(w = open_with(fake_url, TOKEN));
	ck_assert_int_eq(tgw_download_mem(w, "A", 0, &data, &len), 0);
	same_bytes(data, len, 300001);
	ck_assert_int_eq(((char *)data)[len], '\0');
	free(data);
	ck_assert_int_eq(tgw_download_mem(w, "B", 70000, &data, &len), 0);
	same_bytes(data, len, 70000);
	free(data);
	ck_assert_int_eq(tgw_download_mem(w, "C", 0, &data, &len), 0);
	ck_assert_uint_eq(len, 0);
	free(data);
	ck_assert_int_eq(tgw_download_mem(w, "D", 0, &data, &len), 0);
	same_bytes(data, len, 4321);
	free(data);
}
END_TEST

START_TEST(test_download_file)
{
	char		 path[512];
	struct stat	 st;
	unsigned char	*buf;
	int		 fd;

	fake_file("A", 300001, 0, NULL);
	fake_file("B", 70000, 1, NULL);
	ck_assert_ptr_nonnull(w = open_with(fake_url, TOKEN));
	snprintf(path, sizeof(path), "%s/got.%d", tmpdir, getpid());
	ck_assert_int_eq(tgw_download(w, "A", path, 0), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	fd = open(path, O_RDONLY);
	ck_assert_int_eq(read(fd, buf, (size_t)st.st_size + 1), st.st_size);
	close(fd);
	same_bytes(buf, (size_t)st.st_size, 300001);
	free(buf);
	/* too big: known from Content-Length, and found on the way */
	ck_assert_int_eq(tgw_download(w, "A", path, 300000), -1);
	ck_assert(strstr(tgw_error(w), "more than 300000") != NULL);
	ck_assert_int_eq(stat(path, &st), -1);
	ck_assert_int_eq(tgw_download(w, "B", path, 69999), -1);
	ck_assert(strstr(tgw_error(w), "more than 69999") != NULL);
	ck_assert_int_eq(stat(path, &st), -1);
}
END_TEST

START_TEST(test_download_errors)
{
	void	*data;
	size_t	 len;
	char	 path[512];

	ck_assert_ptr_nonnull(w = open_with(fake_url, TOKEN));
	ck_assert_int_eq(tgw_download_mem(w, "nope", 0, &data, &len), -1);
	ck_assert_msg(strstr(tgw_error(w), "getFile: 400 Bad Request: invalid "
	    "file_id") != NULL, "%s", tgw_error(w));
	snprintf(path, sizeof(path), "%s/none/x", tmpdir);
	ck_assert_int_eq(tgw_download(w, "nope", path, 0), -1);
	ck_assert(strstr(tgw_error(w), "No such file") != NULL);
}
END_TEST

START_TEST(test_wrong_credential)
{
	void	*data;
	size_t	 len;

	ck_assert_ptr_nonnull(w = open_with(fake_url, "123456:WRONG"));
	ck_assert_int_eq(tgw_download_mem(w, "A", 0, &data, &len), -1);
	ck_assert_msg(strstr(tgw_error(w), "401 Unauthorized") != NULL, "%s",
	    tgw_error(w));
}
END_TEST

START_TEST(test_endpoint_gone)
{
	void	*data;
	size_t	 len;

	ck_assert_ptr_nonnull(w = open_with("http://127.0.0.1:1", TOKEN));
	ck_assert_int_eq(tgw_download_mem(w, "A", 0, &data, &len), -1);
	ck_assert(strstr(tgw_error(w), "connect") != NULL);
}
END_TEST

static Suite *
download_suite(void)
{
	Suite	*s = suite_create("sdk_download");
	TCase	*tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_welcome_members);
	tcase_add_test(tc, test_env_fallback);
	tcase_add_test(tc, test_no_endpoint);
	tcase_add_test(tc, test_root_without_token_refused);
	tcase_add_test(tc, test_download_mem);
	tcase_add_test(tc, test_download_file);
	tcase_add_test(tc, test_download_errors);
	tcase_add_test(tc, test_wrong_credential);
	tcase_add_test(tc, test_endpoint_gone);
	suite_add_tcase(s, tc);
	return s;
}

static int
download_test_init(void)
{
	return fakeproc_init(tmpdir);
}

static int
download_test_fini(void)
{
	return fakeproc_fini(tmpdir);
}

#define TEST_SUITE	download_suite
#define TEST_INIT	download_test_init
#define TEST_FINI	download_test_fini
#include "testmain.h"
