/*
 * The dead-letter store: what is written is what is listed, retry takes
 * letters out of the file and keeps the rest, a failed write leaves no
 * partial line and reports failure, and letters that could not be written
 * are retried in order on the loop until the disk takes them.
 */
#include "config.h"

#include <sys/resource.h>
#include <sys/stat.h>

#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "deadletter.h"
#include "rcstr.h"

static char			 dir[] = "/tmp/check_deadletter.XXXXXX";
static char			 path[512];
static struct event_base	*base;
static struct deadletter	*dl;
static int64_t			 written[2048];
static size_t			 nwritten;

static void
on_written(void *arg, int64_t id)
{
	(void)arg;
	ck_assert_uint_lt(nwritten, sizeof(written) / sizeof(written[0]));
	written[nwritten++] = id;
}

static void
setup(void)
{
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/%s", dir, DEADLETTER_FILE);
	base = event_base_new();
	dl = deadletter_new(base, dir, on_written, NULL);
	nwritten = 0;
}

static void
teardown(void)
{
	char cmd[600];

	deadletter_free(dl);
	event_base_free(base);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
	strcpy(dir, "/tmp/check_deadletter.XXXXXX");
}

static struct rcstr *
update(int64_t id)
{
	char json[128];
	int n;

	n = snprintf(json, sizeof(json), "{\"update_id\":%" PRId64 ","
	    "\"message\":{\"chat\":{\"id\":%" PRId64 "}}}", id, id % 7);
	return rcstr_new(json, (size_t)n);
}

static void
add(int64_t id, const char *why, int want)
{
	struct rcstr *t = update(id);

	ck_assert_int_eq(deadletter_add(dl, id, 3, why, t), want);
	rcstr_unref(t);
}

/* The file, one parsed object per line; every line must parse. */
static json_t *
file_lines(void)
{
	json_t	*a = json_array(), *o;
	char	*line = NULL;
	size_t	 cap = 0;
	FILE	*fp;

	if ((fp = fopen(path, "r")) == NULL)
		return a;
	while (getline(&line, &cap, fp) != -1) {
		o = json_loads(line, 0, NULL);
		ck_assert_msg(o != NULL, "bad line: %s", line);
		json_array_append_new(a, o);
	}
	free(line);
	fclose(fp);
	return a;
}

static int64_t
id_at(json_t *a, size_t i)
{
	return json_integer_value(json_object_get(json_array_get(a, i),
	    "update_id"));
}

START_TEST(test_write_and_list)
{
	json_t		*lines, *list, *dls;
	struct stat	 st;

	add(10, "worker failed it: boom", 0);
	add(11, "timed out", 0);
	ck_assert_uint_eq(deadletter_pending(dl), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	lines = file_lines();
	ck_assert_uint_eq(json_array_size(lines), 2);
	ck_assert_int_eq(id_at(lines, 0), 10);
	ck_assert_int_eq(id_at(lines, 1), 11);
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(
	    lines, 0), "reason")), "worker failed it: boom");
	ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(
	    lines, 0), "attempts")), 3);
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(
	    json_array_get(lines, 1), "update"), "update_id")), 11);
	json_decref(lines);

	list = deadletter_list(dl);
	ck_assert(json_is_true(json_object_get(list, "ok")));
	dls = json_object_get(list, "dead_letters");
	ck_assert_uint_eq(json_array_size(dls), 2);
	ck_assert_int_eq(id_at(dls, 1), 11);
	/* the listing leaves the bodies out */
	ck_assert_ptr_null(json_object_get(json_array_get(dls, 0), "update"));
	json_decref(list);
	ck_assert_uint_eq(nwritten, 0);	/* only for letters that waited */
}
END_TEST

START_TEST(test_reason_not_utf8)
{
	json_t *lines;

	/* a reason cut in the middle of a UTF-8 sequence is still recorded */
	add(5, "worker failed it: \xd0", 0);
	lines = file_lines();
	ck_assert_uint_eq(json_array_size(lines), 1);
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(
	    lines, 0), "reason")), "worker failed it: ?");
	json_decref(lines);
}
END_TEST

static int64_t	requeued[64];
static size_t	nrequeued;
static int64_t	refuse_id = -1;

static int
on_requeue(void *arg, int64_t id, const char *json, size_t len)
{
	json_t *u = json_loadb(json, len, 0, NULL);

	(void)arg;
	ck_assert_ptr_nonnull(u);
	ck_assert_int_eq(json_integer_value(json_object_get(u, "update_id")),
	    id);
	json_decref(u);
	if (id == refuse_id)
		return -1;
	requeued[nrequeued++] = id;
	return 0;
}

/*
 * A retry of which ("all" or an id): requeued, and ok or the error; the
 * error is kept in last_error.
 */
static char	last_error[256];

static int64_t
retry_as(const char *which, int want_ok)
{
	int64_t	 id;
	json_t	*r;
	int64_t	 n;

	if (strcmp(which, "all") == 0)
		r = deadletter_retry(dl, NULL, on_requeue, NULL);
	else {
		id = strtoll(which, NULL, 10);
		r = deadletter_retry(dl, &id, on_requeue, NULL);
	}
	ck_assert_int_eq(json_is_true(json_object_get(r, "ok")), want_ok);
	snprintf(last_error, sizeof(last_error), "%s",
	    want_ok ? "" : json_string_value(json_object_get(r, "error")));
	n = json_integer_value(json_object_get(r, "requeued"));
	json_decref(r);
	return n;
}

static int64_t
retry(const char *which)
{
	return retry_as(which, 1);
}

START_TEST(test_retry)
{
	json_t		*lines;
	struct stat	 st;
	FILE		*fp;

	add(1, "a", 0);
	add(2, "b", 0);
	add(3, "c", 0);
	/* a line that is not a letter is skipped, and dropped by a rewrite */
	ck_assert_ptr_nonnull(fp = fopen(path, "a"));
	fputs("not json\n{\"no_id\":1}\n", fp);
	fclose(fp);
	add(4, "d", 0);

	nrequeued = 0;
	/* an id that is not a dead letter is an error naming it */
	ck_assert_int_eq(retry_as("99", 0), 0);
	ck_assert_str_eq(last_error, "no dead letter with update_id 99");
	ck_assert_uint_eq(nrequeued, 0);
	ck_assert_int_eq(retry("2"), 1);
	ck_assert_uint_eq(nrequeued, 1);
	ck_assert_int_eq(requeued[0], 2);
	lines = file_lines();
	ck_assert_uint_eq(json_array_size(lines), 3);
	ck_assert_int_eq(id_at(lines, 0), 1);
	ck_assert_int_eq(id_at(lines, 1), 3);
	ck_assert_int_eq(id_at(lines, 2), 4);
	json_decref(lines);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	/* taken: a second retry of it says so */
	ck_assert_int_eq(retry_as("2", 0), 0);
	ck_assert_str_eq(last_error, "no dead letter with update_id 2");

	/* what the daemon cannot take stays, and the answer says so */
	refuse_id = 3;
	ck_assert_int_eq(retry_as("3", 0), 0);
	ck_assert_str_eq(last_error, "1 of 1 dead letter(s) could not be "
	    "queued again (the log says why); they stay dead letters");
	ck_assert_int_eq(retry_as("all", 0), 2);
	ck_assert_str_eq(last_error, "1 of 3 dead letter(s) could not be "
	    "queued again (the log says why); they stay dead letters");
	refuse_id = -1;
	lines = file_lines();
	ck_assert_uint_eq(json_array_size(lines), 1);
	ck_assert_int_eq(id_at(lines, 0), 3);
	json_decref(lines);
	ck_assert_int_eq(retry("all"), 1);
	lines = file_lines();
	ck_assert_uint_eq(json_array_size(lines), 0);
	json_decref(lines);
	/* all, with none left, is no error */
	ck_assert_int_eq(retry("all"), 0);
}
END_TEST

static struct rcstr *
big_update(int64_t id, size_t n)
{
	struct rcstr	*r;
	char		*json = malloc(n + 64);
	int		 k;

	k = snprintf(json, 64, "{\"update_id\":%" PRId64 ",\"message\":"
	    "{\"text\":\"", id);
	memset(json + k, 'x', n);
	memcpy(json + k + n, "\"}}", 3);
	r = rcstr_new(json, (size_t)k + n + 3);
	free(json);
	return r;
}

START_TEST(test_no_partial_line)
{
	struct rcstr	*big = big_update(1, 1 << 20);
	struct rlimit	 rl;
	struct stat	 st;
	json_t		*lines;

	/*
	 * The disk fills up in the middle of the second letter.  The file
	 * limit is well above the size of Check's own files.
	 */
	ck_assert_int_eq(deadletter_write(dl, 1, 1, "first", big), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &rl), 0);
	rl.rlim_cur = (rlim_t)st.st_size + 64;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
	errno = 0;
	ck_assert_int_eq(deadletter_write(dl, 2, 1, "second", big), -1);
	ck_assert_int_eq(errno, EFBIG);
	rl.rlim_cur = rl.rlim_max;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
	/* cut back: the next letter starts a line of its own */
	ck_assert_int_eq(deadletter_write(dl, 3, 1, "third", big), 0);
	lines = file_lines();
	ck_assert_uint_eq(json_array_size(lines), 2);
	ck_assert_int_eq(id_at(lines, 0), 1);
	ck_assert_int_eq(id_at(lines, 1), 3);
	json_decref(lines);
	rcstr_unref(big);
}
END_TEST

static void
stop_loop(evutil_socket_t fd, short ev, void *arg)
{
	event_base_loopbreak(arg);
}

/* Run the loop until n letters were written late, or 20 s passed. */
static void
run_until_written(size_t n)
{
	struct timeval	 tick = { 0, 50000 };
	struct event	*ev = event_new(base, -1, EV_PERSIST, stop_loop, base);
	int		 i;

	event_add(ev, &tick);
	for (i = 0; i < 400 && nwritten < n; i++)
		event_base_dispatch(base);
	event_free(ev);
}

START_TEST(test_failed_write_is_retried_in_order)
{
	json_t *lines;

	/* something that is not a file where the file must go */
	ck_assert_int_eq(mkdir(path, 0700), 0);
	add(7, "first", 1);
	add(8, "second", 1);
	ck_assert_uint_eq(deadletter_pending(dl), 2);
	ck_assert_uint_eq(nwritten, 0);
	/* nothing written means nothing to list */
	lines = file_lines();
	ck_assert_uint_eq(json_array_size(lines), 0);
	json_decref(lines);

	ck_assert_int_eq(rmdir(path), 0);
	run_until_written(2);
	ck_assert_uint_eq(nwritten, 2);
	ck_assert_int_eq(written[0], 7);
	ck_assert_int_eq(written[1], 8);
	ck_assert_uint_eq(deadletter_pending(dl), 0);
	lines = file_lines();
	ck_assert_uint_eq(json_array_size(lines), 2);
	ck_assert_int_eq(id_at(lines, 0), 7);
	ck_assert_int_eq(id_at(lines, 1), 8);
	json_decref(lines);
	/* the disk is back: the next one goes straight to the file */
	add(9, "third", 0);
	ck_assert_uint_eq(nwritten, 2);
}
END_TEST

/* A dead-letter file that is a symbolic link is never followed. */
START_TEST(test_symlink_refused)
{
	char target[600];
	struct rcstr *t = rcstr_new("{\"update_id\":7}", 15);
	struct stat st;
	json_t *list;

	snprintf(target, sizeof(target), "%s/elsewhere", dir);
	ck_assert_int_eq(symlink("elsewhere", path), 0);
	errno = 0;
	ck_assert_int_eq(deadletter_write(dl, 7, 1, "boom", t), -1);
	ck_assert_int_eq(errno, ELOOP);
	ck_assert_int_eq(stat(target, &st), -1);	/* nothing created */
	list = deadletter_list(dl);
	ck_assert_uint_eq(json_array_size(json_object_get(list,
	    "dead_letters")), 0);
	json_decref(list);
	rcstr_unref(t);
}
END_TEST

START_TEST(test_pending_bounded)
{
	int64_t i;

	ck_assert_int_eq(mkdir(path, 0700), 0);
	for (i = 0; i < DEADLETTER_PENDING_MAX; i++)
		add(i, "no disk", 1);
	add(i, "no disk", -1);
	ck_assert_uint_eq(deadletter_pending(dl), DEADLETTER_PENDING_MAX);
}
END_TEST

static Suite *
deadletter_suite(void)
{
	Suite	*s = suite_create("deadletter");
	TCase	*tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_write_and_list);
	tcase_add_test(tc, test_reason_not_utf8);
	tcase_add_test(tc, test_retry);
	tcase_add_test(tc, test_no_partial_line);
	tcase_add_test(tc, test_failed_write_is_retried_in_order);
	tcase_add_test(tc, test_pending_bounded);
	tcase_add_test(tc, test_symlink_refused);
	suite_add_tcase(s, tc);
	return s;
}

#define TEST_SUITE	deadletter_suite
#include "testmain.h"
