/*
 * Unit tests of the journal: durability across reopenings, replay order and
 * attempt counting, compaction, damage handling (reading on past damage in
 * the middle), the outbox of calls attached to done updates, the format
 * of the previous version, dedup, the lock and the state directory's
 * checks.
 */
#include "config.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>

#include <linux/magic.h>

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <zlib.h>

#include "journal.h"
#include "log.h"

#define T0	1700000000		/* a wall-clock time for `now` */
#define DAY	(24 * 60 * 60)
#define NREC	4096

struct seen {
	size_t	 n;
	int64_t	 ids[NREC];
	int	 attempts[NREC];
	char	 json[NREC][64];
	int64_t	 kill_id;		/* journal_done() it from the callback */
	struct journal *j;
};

static char	 tmpdir[256];

static void
setup(void)
{
	strcpy(tmpdir, "/tmp/check_journal.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	log_set_level(LOG_LVL_ERR - 1);		/* damage is expected here */
}

static void
teardown(void)
{
	struct dirent *d;
	char path[512];
	DIR *dp;

	if ((dp = opendir(tmpdir)) == NULL)
		return;
	while ((d = readdir(dp)) != NULL) {
		if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", tmpdir, d->d_name);
		unlink(path);
	}
	closedir(dp);
	rmdir(tmpdir);
}

static char *
jpath(const char *name)
{
	static char path[512];

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	return path;
}

static struct journal *
jopen(enum fsync_mode mode)
{
	char err[256] = "";
	struct journal *j;

	j = journal_open(tmpdir, mode, err, sizeof(err));
	ck_assert_msg(j != NULL, "journal_open: %s", err);
	return j;
}

/* Append the updates ids[0..n) with a JSON text derived from each id. */
static int
append_ids(struct journal *j, const int64_t *ids, size_t n, time_t now)
{
	static char texts[NREC][64];
	struct jupdate u[NREC];
	size_t i;

	for (i = 0; i < n; i++) {
		snprintf(texts[i], sizeof(texts[i]), "{\"update_id\":%" PRId64 "}",
		    ids[i]);
		u[i].id = ids[i];
		u[i].json = texts[i];
		u[i].len = strlen(texts[i]);
	}
	return journal_append(j, u, n, now);
}

static void
append1(struct journal *j, int64_t id, time_t now)
{
	ck_assert_int_eq(append_ids(j, &id, 1, now), 0);
}

static void
collect(void *arg, int64_t id, const char *json, size_t len, int attempt)
{
	struct seen *s = arg;

	ck_assert_uint_lt(s->n, NREC);
	ck_assert_uint_eq(strlen(json), len);
	s->ids[s->n] = id;
	s->attempts[s->n] = attempt;
	snprintf(s->json[s->n], sizeof(s->json[0]), "%s", json);
	s->n++;
	if (id == s->kill_id)
		ck_assert_int_eq(journal_done(s->j, id), 0);
}

static void
replay(struct journal *j, struct seen *s)
{
	memset(s, 0, sizeof(*s));
	s->kill_id = -1;
	s->j = j;
	ck_assert_int_eq(journal_replay(j, collect, s), 0);
}

static off_t
file_size(const char *name)
{
	struct stat st;

	if (stat(jpath(name), &st) == -1)
		return -1;
	return st.st_size;
}

/* The file holds the journal's records, then zeros written ahead only. */
static void
assert_file_holds(uint64_t bytes)
{
	char buf[4096];
	off_t size = file_size("journal"), off;
	ssize_t n, i;
	int fd;

	ck_assert_int_ge(size, (off_t)bytes);
	ck_assert_int_ne(fd = open(jpath("journal"), O_RDONLY), -1);
	for (off = (off_t)bytes; off < size; off += n) {
		ck_assert_int_gt(n = pread(fd, buf, sizeof(buf), off), 0);
		for (i = 0; i < n; i++)
			ck_assert_int_eq(buf[i], 0);
	}
	close(fd);
}

static size_t
read_file(const char *name, char *buf, size_t size)
{
	ssize_t n;
	int fd;

	ck_assert_int_ne(fd = open(jpath(name), O_RDONLY), -1);
	ck_assert_int_ge(n = read(fd, buf, size), 0);
	close(fd);
	return n;
}

static void
write_file(const char *name, const void *buf, size_t len)
{
	int fd;

	fd = open(jpath(name), O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ne(fd, -1);
	ck_assert_int_eq(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

static int
dir_entries(void)
{
	struct dirent *d;
	DIR *dp;
	int n = 0;

	ck_assert_ptr_nonnull(dp = opendir(tmpdir));
	while ((d = readdir(dp)) != NULL)
		if (strcmp(d->d_name, ".") && strcmp(d->d_name, ".."))
			n++;
	closedir(dp);
	return n;
}

START_TEST(test_append_reopen)
{
	int64_t ids[] = { 10, 11, 12 };
	struct journal *j;
	struct seen s;

	j = jopen(FSYNC_BATCH);
	ck_assert_int_eq(journal_next_offset(j), 0);
	ck_assert_int_eq(append_ids(j, ids, 3, T0), 0);
	ck_assert_uint_eq(journal_pending(j), 3);
	ck_assert_int_eq(journal_next_offset(j), 13);
	assert_file_holds(journal_bytes(j));
	journal_close(j);

	j = jopen(FSYNC_BATCH);
	ck_assert_uint_eq(journal_pending(j), 3);
	ck_assert_int_eq(journal_next_offset(j), 13);
	replay(j, &s);
	ck_assert_uint_eq(s.n, 3);
	ck_assert_int_eq(s.ids[0], 10);
	ck_assert_int_eq(s.ids[2], 12);
	ck_assert_str_eq(s.json[1], "{\"update_id\":11}");
	ck_assert_int_eq(s.attempts[0], 2);
	/* replay visits only what was found at open */
	replay(j, &s);
	ck_assert_uint_eq(s.n, 0);
	journal_close(j);
}
END_TEST

START_TEST(test_done_reopen)
{
	int64_t ids[] = { 10, 11, 12 };
	struct journal *j;
	struct seen s;

	j = jopen(FSYNC_BATCH);
	ck_assert_int_eq(append_ids(j, ids, 3, T0), 0);
	ck_assert_int_eq(journal_done(j, 11), 0);
	ck_assert_int_eq(journal_done(j, 11), 0);	/* twice: harmless */
	ck_assert_int_eq(journal_done(j, 999), 0);	/* unknown: harmless */
	ck_assert_uint_eq(journal_pending(j), 2);
	journal_close(j);

	j = jopen(FSYNC_ALWAYS);
	ck_assert_uint_eq(journal_pending(j), 2);
	ck_assert_int_eq(journal_next_offset(j), 13);
	replay(j, &s);
	ck_assert_uint_eq(s.n, 2);
	ck_assert_int_eq(s.ids[0], 10);
	ck_assert_int_eq(s.ids[1], 12);
	journal_close(j);
}
END_TEST

/*
 * A child appends 1..3, marks some done, maybe flushes, and is SIGKILLed.
 * how: 0 flush, 1 no flush, 2 a further append carries the marks, 3 an
 * async append (batch written, sync maybe in flight) after a flush.
 */
static struct journal *
killed_child(int how)
{
	struct journal *j;
	int status;
	pid_t pid;

	ck_assert_int_ne(pid = fork(), -1);
	if (pid == 0) {
		int64_t ids[] = { 1, 2 }, more[] = { 3 };
		struct jupdate u = { 3, "{\"update_id\":3}", 15 };
		char err[256];

		j = journal_open(tmpdir, FSYNC_BATCH, err, sizeof(err));
		if (j == NULL || append_ids(j, ids, 2, T0) == -1 ||
		    journal_done(j, 1) == -1)
			_exit(1);
		if (how == 0 && journal_flush(j) == -1)
			_exit(1);
		if (how == 2 && append_ids(j, more, 1, T0) == -1)
			_exit(1);
		if (how == 3 && (journal_flush(j) == -1 ||
		    journal_append_async(j, &u, 1, T0) != 1))
			_exit(1);
		kill(getpid(), SIGKILL);
		_exit(2);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	return jopen(FSYNC_BATCH);
}

/* Flushed done marks are plain write()s: a SIGKILLed process keeps them. */
START_TEST(test_done_survives_kill)
{
	struct journal *j = killed_child(0);

	ck_assert_uint_eq(journal_pending(j), 1);
	ck_assert_int_eq(journal_next_offset(j), 3);
	journal_close(j);
}
END_TEST

/* Marks wait for journal_flush(): killed before it, the update runs again. */
START_TEST(test_done_unflushed_replayed)
{
	struct journal *j = killed_child(1);

	ck_assert_uint_eq(journal_pending(j), 2);
	journal_close(j);
}
END_TEST

/* The next append writes the waiting marks along with its batch. */
START_TEST(test_done_rides_with_append)
{
	struct journal *j = killed_child(2);
	struct seen s;

	ck_assert_uint_eq(journal_pending(j), 2);	/* 2 and 3 */
	ck_assert_int_eq(journal_next_offset(j), 4);
	replay(j, &s);
	ck_assert_uint_eq(s.n, 2);
	ck_assert_int_eq(s.ids[0], 2);
	ck_assert_int_eq(s.ids[1], 3);
	journal_close(j);
}
END_TEST

/* An async batch is in the file as soon as the call returns. */
START_TEST(test_async_survives_kill)
{
	struct journal *j = killed_child(3);

	ck_assert_uint_eq(journal_pending(j), 2);	/* 2 and 3 */
	ck_assert_int_eq(journal_next_offset(j), 4);
	journal_close(j);
}
END_TEST

static void
wait_synced(struct journal *j)
{
	struct pollfd pfd = { journal_sync_fd(j), POLLIN, 0 };

	ck_assert_int_ne(pfd.fd, -1);
	ck_assert_int_eq(poll(&pfd, 1, 10000), 1);
	ck_assert_int_eq(journal_sync_finish(j), 0);
}

/* Mode batch: the sync runs on the thread and is reported on the fd. */
START_TEST(test_append_async)
{
	int64_t ids[] = { 10, 11 };
	struct jupdate u[2];
	char a[64], b[64];
	struct journal *j;
	struct rcstr *t;
	int i;

	j = jopen(FSYNC_BATCH);
	for (i = 0; i < 2; i++) {
		snprintf(i ? b : a, sizeof(a), "{\"update_id\":%d}",
		    (int)ids[i]);
		u[i].id = ids[i];
		u[i].json = i ? b : a;
		u[i].len = strlen(u[i].json);
	}
	ck_assert_int_eq(journal_append_async(j, u, 2, T0), 1);
	/* accepted at once: known, deduplicated, text shared */
	ck_assert_uint_eq(journal_pending(j), 2);
	ck_assert_int_eq(journal_next_offset(j), 12);
	ck_assert_ptr_nonnull(t = journal_text(j, 11));
	ck_assert_str_eq(t->s, "{\"update_id\":11}");
	rcstr_ref(t);
	/* done while the sync runs: the mark waits, the text lives on */
	ck_assert_int_eq(journal_done(j, 11), 0);
	ck_assert(journal_dirty(j));
	ck_assert_ptr_null(journal_text(j, 11));
	ck_assert_str_eq(t->s, "{\"update_id\":11}");
	rcstr_unref(t);
	wait_synced(j);
	ck_assert_int_eq(journal_flush(j), 0);
	ck_assert(!journal_dirty(j));
	/* a second batch after the first is durable */
	u[0].id = 12;
	ck_assert_int_eq(journal_append_async(j, u, 1, T0), 1);
	journal_close(j);		/* waits for the sync */
	j = jopen(FSYNC_BATCH);
	ck_assert_uint_eq(journal_pending(j), 2);	/* 10 and 12 */
	ck_assert_int_eq(journal_next_offset(j), 13);
	journal_close(j);
}
END_TEST

/* Other modes have no thread: async is the plain append. */
START_TEST(test_append_async_other_modes)
{
	struct jupdate u = { 1, "{}", 2 };
	struct journal *j;

	j = jopen(FSYNC_ALWAYS);
	ck_assert_int_eq(journal_sync_fd(j), -1);
	ck_assert_int_eq(journal_append_async(j, &u, 1, T0), 0);
	journal_close(j);
	j = jopen(FSYNC_OFF);
	ck_assert_int_eq(journal_sync_fd(j), -1);
	u.id = 2;
	ck_assert_int_eq(journal_append_async(j, &u, 1, T0), 0);
	ck_assert_int_eq(journal_make_durable(j), 0);
	journal_close(j);
}
END_TEST

/* journal_make_durable() writes a new file from memory. */
START_TEST(test_make_durable)
{
	int64_t ids[] = { 1, 2, 3 };
	struct journal *j;

	j = jopen(FSYNC_BATCH);
	ck_assert_int_eq(append_ids(j, ids, 3, T0), 0);
	ck_assert_int_eq(journal_done(j, 2), 0);
	ck_assert_int_eq(journal_make_durable(j), 0);
	ck_assert(!journal_dirty(j));	/* the rewrite covers the mark */
	ck_assert_int_eq(journal_bytes(j), file_size("journal"));
	journal_close(j);
	j = jopen(FSYNC_BATCH);
	ck_assert_uint_eq(journal_pending(j), 2);
	ck_assert_int_eq(journal_next_offset(j), 4);
	journal_close(j);
}
END_TEST

/* Zeros written ahead of the records read as a clean end, not damage. */
START_TEST(test_prealloc)
{
	int64_t ids[] = { 1, 2, 3 }, more[] = { 4 };
	struct journal *j;
	uint64_t bytes;
	off_t size;
	int fd;
	char c;

	struct statfs sfs;

	j = jopen(FSYNC_BATCH);
	ck_assert_int_eq(append_ids(j, ids, 3, T0), 0);
	bytes = journal_bytes(j);
	size = file_size("journal");
	ck_assert_int_eq(statfs(tmpdir, &sfs), 0);
	if (sfs.f_type == TMPFS_MAGIC) {
		/* nothing written ahead where syncs are free */
		ck_assert_int_eq(size, (off_t)bytes);
		journal_close(j);
		return;
	}
	/* the space ahead is there, and holds zeros */
	ck_assert_int_ge(size, (off_t)bytes + 1024 * 1024);
	ck_assert_int_ne(fd = open(jpath("journal"), O_RDONLY), -1);
	ck_assert_int_eq(pread(fd, &c, 1, size - 1), 1);
	ck_assert_int_eq(c, 0);
	close(fd);
	journal_close(j);

	j = jopen(FSYNC_BATCH);
	ck_assert_uint_eq(journal_pending(j), 3);
	ck_assert_uint_eq(journal_bytes(j), bytes);
	ck_assert_int_eq(file_size("journal"), size);	/* kept, not cut */
	ck_assert_int_eq(append_ids(j, more, 1, T0), 0);
	ck_assert_int_eq(file_size("journal"), size);	/* written in place */
	bytes = journal_bytes(j);
	journal_close(j);

	/* a stray byte past the zeros is damage: cut back to the records */
	ck_assert_int_ne(fd = open(jpath("journal"), O_WRONLY), -1);
	ck_assert_int_eq(pwrite(fd, "x", 1, size - 1), 1);
	close(fd);
	j = jopen(FSYNC_BATCH);
	ck_assert_uint_eq(journal_pending(j), 4);
	ck_assert_uint_eq(journal_bytes(j), bytes);
	ck_assert_int_eq(file_size("journal"), (off_t)bytes);
	journal_close(j);
}
END_TEST

START_TEST(test_replay_attempts)
{
	int64_t ids[] = { 30, 10, 20 };
	struct journal *j;
	struct seen s;

	j = jopen(FSYNC_BATCH);
	ck_assert_int_eq(append_ids(j, ids, 3, T0), 0);
	journal_close(j);

	/* run 2: everything is replayed a first time */
	j = jopen(FSYNC_BATCH);
	replay(j, &s);
	ck_assert_uint_eq(s.n, 3);
	ck_assert_int_eq(s.ids[0], 10);
	ck_assert_int_eq(s.ids[1], 20);
	ck_assert_int_eq(s.ids[2], 30);
	ck_assert_int_eq(s.attempts[0], 2);
	ck_assert_int_eq(s.attempts[2], 2);
	append1(j, 40, T0 + 1);
	ck_assert_int_eq(journal_done(j, 20), 0);
	journal_close(j);

	/* run 3: the crash loop is counted */
	j = jopen(FSYNC_BATCH);
	replay(j, &s);
	ck_assert_uint_eq(s.n, 3);
	ck_assert_int_eq(s.ids[0], 10);
	ck_assert_int_eq(s.attempts[0], 3);
	ck_assert_int_eq(s.ids[1], 30);
	ck_assert_int_eq(s.attempts[1], 3);
	ck_assert_int_eq(s.ids[2], 40);
	ck_assert_int_eq(s.attempts[2], 2);
	journal_close(j);

	/* run 4 never replays: no attempt was started */
	j = jopen(FSYNC_BATCH);
	journal_close(j);

	/* run 5: the callback dead-letters 30 while being visited */
	j = jopen(FSYNC_BATCH);
	memset(&s, 0, sizeof(s));
	s.kill_id = 30;
	s.j = j;
	ck_assert_int_eq(journal_replay(j, collect, &s), 0);
	ck_assert_uint_eq(s.n, 3);
	ck_assert_int_eq(s.attempts[0], 4);
	ck_assert_int_eq(s.attempts[1], 4);
	ck_assert_int_eq(s.attempts[2], 3);
	ck_assert_uint_eq(journal_pending(j), 2);
	journal_close(j);

	j = jopen(FSYNC_BATCH);
	replay(j, &s);
	ck_assert_uint_eq(s.n, 2);
	ck_assert_int_eq(s.ids[0], 10);
	ck_assert_int_eq(s.attempts[0], 5);
	ck_assert_int_eq(s.ids[1], 40);
	ck_assert_int_eq(s.attempts[1], 4);
	journal_close(j);
}
END_TEST

START_TEST(test_compaction)
{
	static char big[NREC][700];
	struct jupdate u[100];
	uint64_t before = 0, shrunk_from = 0, shrunk_to = 0;
	struct journal *j;
	struct seen s;
	int64_t id, live[] = { 7, 1500, 2001, 2998, 2999 };
	size_t i, k;

	j = jopen(FSYNC_BATCH);
	for (id = 0; id < 3000; id += 100) {
		for (i = 0; i < 100; i++) {
			snprintf(big[id + i], sizeof(big[0]),
			    "{\"update_id\":%" PRId64 ",\"pad\":\"%600s\"}",
			    id + (int64_t)i, "x");
			u[i].id = id + i;
			u[i].json = big[id + i];
			u[i].len = strlen(big[id + i]);
		}
		ck_assert_int_eq(journal_append(j, u, 100, T0), 0);
	}
	/* 3000 live updates: no reason to compact yet */
	ck_assert_uint_eq(journal_compactions(j), 0);
	ck_assert_uint_gt(journal_bytes(j), 1536 * 1024);
	for (id = 0; id < 3000; id++) {
		for (k = 0; k < 5; k++)
			if (live[k] == id)
				break;
		if (k < 5)
			continue;
		before = journal_bytes(j);
		ck_assert_int_eq(journal_done(j, id), 0);
		ck_assert_int_eq(journal_flush(j), 0);
		if (shrunk_from == 0 && journal_compactions(j) == 1) {
			shrunk_from = before;
			shrunk_to = journal_bytes(j);
		}
	}
	ck_assert_uint_ge(journal_compactions(j), 1);
	ck_assert_uint_lt(shrunk_to, shrunk_from / 2);
	ck_assert_uint_le(journal_bytes(j), 1024 * 1024);
	assert_file_holds(journal_bytes(j));
	ck_assert_int_eq(file_size("journal.tmp"), -1);
	ck_assert_uint_eq(journal_pending(j), 5);
	journal_close(j);

	j = jopen(FSYNC_BATCH);
	ck_assert_uint_eq(journal_pending(j), 5);
	ck_assert_int_eq(journal_next_offset(j), 3000);
	replay(j, &s);
	ck_assert_uint_eq(s.n, 5);
	for (k = 0; k < 5; k++) {
		ck_assert_int_eq(s.ids[k], live[k]);
		ck_assert_int_eq(strncmp(s.json[k], big[live[k]], 40), 0);
	}
	journal_close(j);
}
END_TEST

/* A compaction carries the attempt counts and the high-water mark. */
START_TEST(test_compaction_keeps_state)
{
	static char pad[200 * 1024];
	struct jupdate u;
	struct journal *j;
	struct seen s;
	int64_t id;

	j = jopen(FSYNC_BATCH);
	append1(j, 5, T0);
	journal_close(j);
	j = jopen(FSYNC_BATCH);
	replay(j, &s);				/* 5 is at attempt 2 */
	memset(pad, 'x', sizeof(pad) - 1);
	u.json = pad;
	u.len = sizeof(pad) - 1;
	for (id = 6; journal_compactions(j) == 0; id++) {
		ck_assert_int_lt(id, 100);
		u.id = id;
		ck_assert_int_eq(journal_append(j, &u, 1, T0 + id), 0);
		ck_assert_int_eq(journal_done(j, id), 0);
		ck_assert_int_eq(journal_flush(j), 0);
	}
	journal_close(j);
	j = jopen(FSYNC_BATCH);
	ck_assert_int_eq(journal_next_offset(j), id);
	replay(j, &s);
	ck_assert_uint_eq(s.n, 1);
	ck_assert_int_eq(s.ids[0], 5);
	ck_assert_int_eq(s.attempts[0], 3);
	journal_close(j);
}
END_TEST

START_TEST(test_torn_tail)
{
	int64_t first[] = { 1, 2 }, second[] = { 3 };
	static char orig[4096];
	uint64_t size1, size2, mark, cut;
	struct journal *j;
	struct seen s;
	size_t len;

	j = jopen(FSYNC_BATCH);
	ck_assert_int_eq(append_ids(j, first, 2, T0), 0);
	size1 = journal_bytes(j);
	ck_assert_int_eq(append_ids(j, second, 1, T0), 0);
	size2 = journal_bytes(j);
	journal_close(j);
	len = read_file("journal", orig, sizeof(orig));
	ck_assert_uint_ge(len, size2);		/* zeros written ahead follow */
	assert_file_holds(size2);
	mark = size2 - (8 + 1 + 16);		/* the batch's MARK record */

	for (cut = size1; cut < size2; cut++) {
		write_file("journal", orig, cut);
		j = jopen(FSYNC_BATCH);
		if (cut < mark) {
			/* update 3 torn: the first batch is all there is */
			ck_assert_uint_eq(journal_pending(j), 2);
			ck_assert_int_eq(journal_bytes(j), size1);
		} else {
			/* only the mark torn: 3 is known, 3 is refetched */
			ck_assert_uint_eq(journal_pending(j), 3);
			ck_assert_int_eq(journal_bytes(j), mark);
		}
		ck_assert_int_eq(journal_next_offset(j), 3);
		ck_assert_int_eq(file_size("journal"), journal_bytes(j));
		/* new appends follow good data */
		append1(j, 50, T0);
		journal_close(j);

		j = jopen(FSYNC_BATCH);
		replay(j, &s);
		ck_assert_uint_eq(s.n, cut < mark ? 3 : 4);
		ck_assert_int_eq(s.ids[s.n - 1], 50);
		ck_assert_int_eq(journal_next_offset(j), 51);
		journal_close(j);
	}
}
END_TEST

static int
count_prefix(const char *prefix)
{
	struct dirent *d;
	DIR *dp;
	int n = 0;

	ck_assert_ptr_nonnull(dp = opendir(tmpdir));
	while ((d = readdir(dp)) != NULL)
		if (strncmp(d->d_name, prefix, strlen(prefix)) == 0)
			n++;
	closedir(dp);
	return n;
}

/* The name of the (only) file whose name starts with prefix. */
static const char *
find_prefix(const char *prefix)
{
	static char name[256];
	struct dirent *d;
	DIR *dp;

	name[0] = '\0';
	ck_assert_ptr_nonnull(dp = opendir(tmpdir));
	while ((d = readdir(dp)) != NULL)
		if (strncmp(d->d_name, prefix, strlen(prefix)) == 0)
			snprintf(name, sizeof(name), "%s", d->d_name);
	closedir(dp);
	return name;
}

/* stderr into a file while the journal logs: what did it say? */
static int	capture_saved = -1;

static void
capture_begin(void)
{
	int fd;

	fflush(stderr);
	ck_assert_int_ne(capture_saved = dup(2), -1);
	fd = open(jpath("stderr.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ne(fd, -1);
	ck_assert_int_eq(dup2(fd, 2), 2);
	close(fd);
	log_set_level(LOG_LVL_INFO);
}

static const char *
capture_end(void)
{
	static char out[16384];
	size_t n;

	fflush(stderr);
	log_set_level(LOG_LVL_ERR - 1);
	ck_assert_int_eq(dup2(capture_saved, 2), 2);
	close(capture_saved);
	n = read_file("stderr.txt", out, sizeof(out) - 1);
	out[n] = '\0';
	unlink(jpath("stderr.txt"));
	return out;
}

/*
 * A flipped byte in the middle: the records after it are read on, the
 * damage is reported (offset, bytes, the update it hit), the file kept
 * aside as it was and rewritten, and the high-water mark is the one
 * before the damage, so Telegram may send again what the damage hid.
 */
START_TEST(test_crc_middle)
{
	static char buf[4096], kept[4096];
	uint64_t size1;
	struct journal *j;
	struct seen s;
	const char *log;
	size_t len;

	j = jopen(FSYNC_BATCH);
	append1(j, 1, T0);
	size1 = journal_bytes(j);
	append1(j, 2, T0);
	append1(j, 3, T0);
	journal_close(j);

	len = read_file("journal", buf, sizeof(buf));
	buf[size1 + 8 + 1 + 8 + 3] ^= 0x20;	/* inside update 2's JSON */
	write_file("journal", buf, len);
	capture_begin();
	j = jopen(FSYNC_BATCH);
	log = capture_end();
	ck_assert_uint_eq(journal_pending(j), 2);
	ck_assert_int_eq(journal_next_offset(j), 2);
	replay(j, &s);
	ck_assert_uint_eq(s.n, 2);
	ck_assert_int_eq(s.ids[0], 1);
	ck_assert_int_eq(s.ids[1], 3);
	ck_assert_msg(strstr(log, "<3>") != NULL, "not an error: %s", log);
	ck_assert_msg(strstr(log, "type=UPDATE update=2") != NULL, "%s", log);
	ck_assert_msg(strstr(log, "damaged record at offset") != NULL, "%s",
	    log);
	/* the damaged file is kept as it was found */
	ck_assert_int_eq(count_prefix("journal.damaged."), 1);
	ck_assert_uint_eq(read_file(find_prefix("journal.damaged."), kept,
	    sizeof(kept)), len);
	ck_assert_int_eq(memcmp(kept, buf, len), 0);
	journal_close(j);

	/* rewritten: clean now, nothing to report, nothing set aside again */
	capture_begin();
	j = jopen(FSYNC_BATCH);
	log = capture_end();
	ck_assert_msg(strstr(log, "damaged") == NULL, "%s", log);
	ck_assert_uint_eq(journal_pending(j), 2);
	ck_assert_int_eq(count_prefix("journal.damaged."), 1);
	journal_close(j);
}
END_TEST

/* An impossible length is damage too; what follows is still read. */
START_TEST(test_bad_length_middle)
{
	static char buf[4096];
	uint64_t size1;
	struct journal *j;
	size_t len;

	j = jopen(FSYNC_BATCH);
	append1(j, 1, T0);
	size1 = journal_bytes(j);
	append1(j, 2, T0);
	append1(j, 3, T0);
	ck_assert_int_eq(journal_done(j, 1), 0);
	ck_assert_int_eq(journal_flush(j), 0);
	journal_close(j);
	len = read_file("journal", buf, sizeof(buf));
	memset(buf + size1, 0xff, 4);
	write_file("journal", buf, len);
	j = jopen(FSYNC_BATCH);
	/* 2's record is gone; 1's done mark after it still counts */
	ck_assert_uint_eq(journal_pending(j), 1);
	ck_assert_ptr_null(journal_text(j, 1));
	ck_assert_ptr_nonnull(journal_text(j, 3));
	journal_close(j);
}
END_TEST

/*
 * The case: a flipped bit in the 5th of 30 records.  Only that
 * update is lost; the 25 after it are all there.
 */
START_TEST(test_damage_fifth_of_thirty)
{
	static char buf[16384];
	uint64_t off[31];
	struct journal *j;
	struct seen s;
	int64_t id;
	size_t len, i;

	j = jopen(FSYNC_BATCH);
	for (id = 1; id <= 30; id++) {
		off[id - 1] = journal_bytes(j);
		append1(j, 100 + id, T0);
	}
	journal_close(j);
	len = read_file("journal", buf, sizeof(buf));
	buf[off[4] + 20] ^= 0x04;		/* one bit, record 5 */
	write_file("journal", buf, len);
	j = jopen(FSYNC_BATCH);
	replay(j, &s);
	ck_assert_uint_eq(s.n, 29);
	for (i = 0; i < s.n; i++)
		ck_assert_int_eq(s.ids[i], i < 4 ? 101 + (int64_t)i :
		    102 + (int64_t)i);
	/* the mark before the damage: 105 may come again from Telegram */
	ck_assert_int_eq(journal_next_offset(j), 105);
	journal_close(j);
}
END_TEST

/* A record written by the daemon, as the test writes it (JOURNAL.md). */
static size_t
rec(char *out, int type, const void *payload, size_t plen)
{
	uint8_t *p = (uint8_t *)out;
	uint32_t len = (uint32_t)(1 + plen), crc;
	int i;

	p[8] = (uint8_t)type;
	memcpy(p + 9, payload, plen);
	crc = (uint32_t)crc32(0L, p + 8, len);
	for (i = 0; i < 4; i++) {
		p[i] = (uint8_t)(len >> (8 * i));
		p[4 + i] = (uint8_t)(crc >> (8 * i));
	}
	return 8 + len;
}

static size_t
rec_id(char *out, int type, int64_t id, const char *text)
{
	char payload[512];
	size_t n = text != NULL ? strlen(text) : 0;
	int i;

	for (i = 0; i < 8; i++)
		payload[i] = (char)((uint64_t)id >> (8 * i));
	if (n > 0)
		memcpy(payload + 8, text, n);
	return rec(out, type, payload, 8 + n);
}

/* A file of the previous format is read, then rewritten in the current one. */
START_TEST(test_format1_upgraded)
{
	static char buf[4096];
	struct journal *j;
	struct seen s;
	size_t n = 0;
	char mark[16];
	int i;

	memcpy(buf, "TGRJ\x01\0\0\0", 8);
	n = 8;
	n += rec_id(buf + n, 1, 7, "{\"update_id\":7}");
	n += rec_id(buf + n, 1, 8, "{\"update_id\":8}");
	for (i = 0; i < 8; i++) {
		mark[i] = (char)((uint64_t)8 >> (8 * i));
		mark[8 + i] = (char)((uint64_t)T0 >> (8 * i));
	}
	n += rec(buf + n, 4, mark, 16);
	n += rec_id(buf + n, 2, 7, NULL);
	write_file("journal", buf, n);
	j = jopen(FSYNC_BATCH);
	ck_assert_uint_eq(journal_pending(j), 1);
	ck_assert_int_eq(journal_next_offset(j), 9);
	journal_close(j);
	ck_assert_uint_ge(read_file("journal", buf, sizeof(buf)), 8);
	ck_assert_int_eq(memcmp(buf, "TGRJ\x02\0\0\0", 8), 0);
	j = jopen(FSYNC_BATCH);
	replay(j, &s);
	ck_assert_uint_eq(s.n, 1);
	ck_assert_int_eq(s.ids[0], 8);
	ck_assert_str_eq(s.json[0], "{\"update_id\":8}");
	journal_close(j);

	/* version 1 has no calls: such a record in it is damage, not calls */
	memcpy(buf, "TGRJ\x01\0\0\0", 8);
	n = 8;
	n += rec_id(buf + n, 1, 7, "{\"update_id\":7}");
	n += rec_id(buf + n, 5, 7, "\0\0\0\0\0\0\0\0[{\"seq\":1,\"method\":"
	    "\"getMe\"}]");
	n += rec_id(buf + n, 1, 9, "{\"update_id\":9}");
	write_file("journal", buf, n);
	j = jopen(FSYNC_BATCH);
	ck_assert_uint_eq(journal_pending(j), 2);
	ck_assert_uint_eq(journal_calls_owed(j), 0);
	journal_close(j);
}
END_TEST

struct calls_seen {
	size_t		n;
	uint64_t	seq[16];
	int64_t		update[16];
	char		key[16][64];
	char		method[16][64];
	char		params[16][256];
	struct journal	*finish;	/* journal_call_done() each at once */
};

static void
collect_call(void *arg, const struct jcall_out *c)
{
	struct calls_seen *cs = arg;

	ck_assert_uint_lt(cs->n, 16);
	ck_assert_uint_eq(strlen(c->params), c->len);
	cs->seq[cs->n] = c->seq;
	cs->update[cs->n] = c->update_id;
	snprintf(cs->key[cs->n], 64, "%s", c->key != NULL ? c->key : "-");
	snprintf(cs->method[cs->n], 64, "%s", c->method);
	snprintf(cs->params[cs->n], 256, "%s", c->params);
	cs->n++;
	if (cs->finish != NULL)
		journal_call_done(cs->finish, c->seq);
}

static size_t
replay_calls(struct journal *j, struct calls_seen *cs, int finish)
{
	memset(cs, 0, sizeof(*cs));
	cs->finish = finish ? j : NULL;
	return journal_calls_replay(j, collect_call, cs);
}

/* Three calls attached to update 5's done, with their keys. */
static uint64_t
owe_three(struct journal *j, int64_t id)
{
	json_t *p[3];
	struct jcall_in in[3];
	uint64_t first;
	int i;

	p[0] = json_pack("{s:i, s:s}", "chat_id", 42, "text", "one \"1\"");
	p[1] = json_pack("{s:i, s:s}", "chat_id", 42, "text", "two\n");
	p[2] = NULL;
	in[0] = (struct jcall_in){ "chat:42", "sendMessage", p[0] };
	in[1] = (struct jcall_in){ "chat:42", "sendMessage", p[1] };
	in[2] = (struct jcall_in){ NULL, "getMe", p[2] };
	journal_done_calls(j, id, in, 3, T0, &first);
	for (i = 0; i < 3; i++)
		json_decref(p[i]);
	return first;
}

START_TEST(test_calls_roundtrip)
{
	struct calls_seen cs;
	struct journal *j;
	uint64_t first;

	j = jopen(FSYNC_BATCH);
	append1(j, 5, T0);
	append1(j, 6, T0);
	first = owe_three(j, 5);
	ck_assert_uint_eq(first, 1);
	ck_assert_uint_eq(journal_calls_owed(j), 3);
	ck_assert_int_eq(journal_calls_oldest(j), T0);
	ck_assert_uint_eq(journal_pending(j), 1);	/* 5 is done */
	ck_assert(journal_dirty(j));
	/* found at open only: nothing to replay in the run that owes them */
	ck_assert_uint_eq(replay_calls(j, &cs, 0), 0);
	journal_close(j);

	j = jopen(FSYNC_BATCH);
	ck_assert_uint_eq(journal_pending(j), 1);
	ck_assert_ptr_null(journal_text(j, 5));
	ck_assert_uint_eq(replay_calls(j, &cs, 0), 3);
	ck_assert_uint_eq(cs.seq[0], 1);
	ck_assert_uint_eq(cs.seq[2], 3);
	ck_assert_int_eq(cs.update[1], 5);
	ck_assert_str_eq(cs.key[0], "chat:42");
	ck_assert_str_eq(cs.key[2], "-");
	ck_assert_str_eq(cs.method[1], "sendMessage");
	ck_assert_str_eq(cs.params[0],
	    "{\"chat_id\":42,\"text\":\"one \\\"1\\\"\"}");
	ck_assert_str_eq(cs.params[1], "{\"chat_id\":42,\"text\":\"two\\n\"}");
	ck_assert_str_eq(cs.params[2], "{}");
	ck_assert_uint_eq(replay_calls(j, &cs, 0), 0);	/* once */
	/* the second call answered: owed no more, across a reopening */
	journal_call_done(j, 2);
	journal_call_done(j, 2);			/* twice: harmless */
	journal_call_done(j, 99);			/* unknown: harmless */
	ck_assert_uint_eq(journal_calls_owed(j), 2);
	ck_assert_int_eq(journal_flush(j), 0);
	journal_close(j);

	j = jopen(FSYNC_BATCH);
	ck_assert_uint_eq(replay_calls(j, &cs, 1), 2);
	ck_assert_uint_eq(cs.seq[0], 1);
	ck_assert_uint_eq(cs.seq[1], 3);
	ck_assert_uint_eq(journal_calls_owed(j), 0);
	/* seqs are never handed out twice, even once all are answered */
	first = owe_three(j, 6);
	ck_assert_uint_eq(first, 4);
	journal_close(j);
	j = jopen(FSYNC_BATCH);
	ck_assert_uint_eq(replay_calls(j, &cs, 0), 3);
	ck_assert_uint_eq(cs.seq[0], 4);
	ck_assert_uint_eq(journal_pending(j), 0);
	journal_close(j);
}
END_TEST

/* A SIGKILLed process keeps its written records: calls and answers. */
START_TEST(test_calls_survive_kill)
{
	struct calls_seen cs;
	struct journal *j;
	int status;
	pid_t pid;

	ck_assert_int_ne(pid = fork(), -1);
	if (pid == 0) {
		char err[256];

		if ((j = journal_open(tmpdir, FSYNC_BATCH, err,
		    sizeof(err))) == NULL)
			_exit(1);
		append1(j, 5, T0);
		owe_three(j, 5);
		if (journal_flush(j) == -1)
			_exit(1);
		journal_call_done(j, 1);
		if (journal_flush(j) == -1)
			_exit(1);
		journal_call_done(j, 2);	/* not flushed: owed still */
		kill(getpid(), SIGKILL);
		_exit(2);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	j = jopen(FSYNC_BATCH);
	ck_assert_uint_eq(journal_pending(j), 0);
	ck_assert_uint_eq(replay_calls(j, &cs, 0), 2);
	ck_assert_uint_eq(cs.seq[0], 2);
	ck_assert_uint_eq(cs.seq[1], 3);
	journal_close(j);
}
END_TEST

/* Compactions keep the owed calls, in order, with their updates done. */
START_TEST(test_calls_compaction)
{
	static char pad[200 * 1024];
	struct calls_seen cs;
	struct jupdate u;
	struct journal *j;
	int64_t id;

	j = jopen(FSYNC_BATCH);
	append1(j, 5, T0);
	append1(j, 6, T0);
	owe_three(j, 5);
	journal_call_done(j, 2);
	ck_assert_int_eq(journal_flush(j), 0);
	memset(pad, 'x', sizeof(pad) - 1);
	u.json = pad;
	u.len = sizeof(pad) - 1;
	for (id = 7; journal_compactions(j) == 0; id++) {
		ck_assert_int_lt(id, 100);
		u.id = id;
		ck_assert_int_eq(journal_append(j, &u, 1, T0), 0);
		ck_assert_int_eq(journal_done(j, id), 0);
		ck_assert_int_eq(journal_flush(j), 0);
	}
	/* the live set: two calls and update 6 */
	ck_assert_int_eq(journal_make_durable(j), 0);
	ck_assert_uint_lt(journal_bytes(j), 1024);
	assert_file_holds(journal_bytes(j));
	journal_close(j);
	j = jopen(FSYNC_BATCH);
	ck_assert_uint_eq(journal_pending(j), 1);
	ck_assert_ptr_nonnull(journal_text(j, 6));
	ck_assert_uint_eq(replay_calls(j, &cs, 0), 2);
	ck_assert_uint_eq(cs.seq[0], 1);
	ck_assert_uint_eq(cs.seq[1], 3);
	ck_assert_str_eq(cs.key[0], "chat:42");
	ck_assert_str_eq(cs.params[0],
	    "{\"chat_id\":42,\"text\":\"one \\\"1\\\"\"}");
	journal_close(j);
}
END_TEST

/* Without a file the outbox is counted, and gone with the process. */
START_TEST(test_calls_fsync_off)
{
	struct calls_seen cs;
	struct journal *j;

	j = jopen(FSYNC_OFF);
	append1(j, 5, T0);
	owe_three(j, 5);
	ck_assert_uint_eq(journal_calls_owed(j), 3);
	ck_assert(!journal_dirty(j));
	journal_call_done(j, 1);
	ck_assert_uint_eq(journal_calls_owed(j), 2);
	journal_close(j);
	j = jopen(FSYNC_OFF);
	ck_assert_uint_eq(replay_calls(j, &cs, 0), 0);
	ck_assert_int_eq(dir_entries(), 0);
	journal_close(j);
}
END_TEST

/* Calls whose record is damaged are lost; those after it are kept. */
START_TEST(test_calls_damaged)
{
	static char buf[8192];
	struct calls_seen cs;
	struct journal *j;
	uint64_t off;
	size_t len;

	j = jopen(FSYNC_BATCH);
	append1(j, 5, T0);
	append1(j, 6, T0);
	ck_assert_int_eq(journal_flush(j), 0);
	off = journal_bytes(j);
	owe_three(j, 5);
	ck_assert_int_eq(journal_flush(j), 0);
	owe_three(j, 6);
	ck_assert_int_eq(journal_flush(j), 0);
	journal_close(j);
	len = read_file("journal", buf, sizeof(buf));
	buf[off + 40] ^= 1;
	write_file("journal", buf, len);
	capture_begin();
	j = jopen(FSYNC_BATCH);
	ck_assert_msg(strstr(capture_end(), "type=DONE_CALLS update=5") !=
	    NULL, "the log does not name the update");
	/* 5's done mark went with its calls: it runs again */
	ck_assert_uint_eq(journal_pending(j), 1);
	ck_assert_ptr_nonnull(journal_text(j, 5));
	ck_assert_uint_eq(replay_calls(j, &cs, 0), 3);
	ck_assert_uint_eq(cs.seq[0], 4);
	ck_assert_int_eq(cs.update[0], 6);
	journal_close(j);
}
END_TEST

/* Records that check but make no sense are damage, never applied. */
START_TEST(test_calls_bad_records)
{
	static const char *const bad[] = {
		"[]",
		"[{\"seq\":0,\"method\":\"getMe\"}]",
		"[{\"seq\":1,\"method\":\"get Me\"}]",
		"[{\"seq\":1}]",
		"[{\"seq\":1,\"method\":\"getMe\",\"params\":[]}]",
		"[{\"seq\":1,\"method\":\"getMe\",\"key\":7}]",
		"[{\"seq\":2,\"method\":\"getMe\"},{\"seq\":2,\"method\":"
		    "\"getMe\"}]",
		"[{\"seq\":1,\"method\":\"getMe\"",
		"{\"seq\":1,\"method\":\"getMe\"}",
		NULL
	};
	static char buf[4096];
	char payload[512];
	struct journal *j;
	size_t n;
	int i;

	for (i = 0; bad[i] != NULL; i++) {
		memcpy(buf, "TGRJ\x02\0\0\0", 8);
		n = 8;
		n += rec_id(buf + n, 1, 7, "{\"update_id\":7}");
		memset(payload, 0, 8);
		snprintf(payload + 8, sizeof(payload) - 8, "%s", bad[i]);
		n += rec_id(buf + n, 5, 7, payload);
		n += rec_id(buf + n, 1, 8, "{\"update_id\":8}");
		write_file("journal", buf, n);
		j = jopen(FSYNC_BATCH);
		ck_assert_msg(journal_pending(j) == 2, "%s", bad[i]);
		ck_assert_msg(journal_calls_owed(j) == 0, "%s", bad[i]);
		journal_close(j);
		unlink(jpath(find_prefix("journal.damaged.")));
	}
}
END_TEST

static int
make_durable_rewrites(struct journal *j)
{
	return journal_make_durable(j);
}

/* Nothing in state_dir is followed through a symbolic link. */
START_TEST(test_symlinks_refused)
{
	static const char *const names[] = { "journal", "journal.lock", NULL };
	struct journal *j;
	char err[256], real[512];
	int i;

	j = jopen(FSYNC_BATCH);
	append1(j, 1, T0);
	journal_close(j);
	for (i = 0; names[i] != NULL; i++) {
		snprintf(real, sizeof(real), "%s", jpath("real"));
		ck_assert_int_eq(rename(jpath(names[i]), real), 0);
		ck_assert_msg(symlink("real", jpath(names[i])) == 0, "%s: %s",
		    names[i], strerror(errno));
		err[0] = '\0';
		j = journal_open(tmpdir, FSYNC_BATCH, err, sizeof(err));
		ck_assert_msg(j == NULL, "%s followed", names[i]);
		ck_assert_msg(strstr(err, names[i]) != NULL, "%s", err);
		ck_assert_int_eq(unlink(jpath(names[i])), 0);
		ck_assert_int_eq(rename(real, jpath(names[i])), 0);
	}
	/* a stale temporary file that is a link is removed, not followed */
	write_file("victim", "keep", 4);
	ck_assert_int_eq(symlink("victim", jpath("journal.tmp")), 0);
	j = jopen(FSYNC_BATCH);
	ck_assert_uint_eq(journal_pending(j), 1);
	ck_assert_int_eq(make_durable_rewrites(j), 0);
	journal_close(j);
	ck_assert_int_eq(file_size("victim"), 4);
	ck_assert_int_eq(file_size("journal.tmp"), -1);
}
END_TEST

/* A state_dir that others may write to is refused, naming its mode. */
START_TEST(test_dir_mode_refused)
{
	static const mode_t modes[] = { 0770, 0702, 0777, 01777 };
	struct journal *j;
	char err[256], want[32];
	size_t i;

	for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		ck_assert_int_eq(chmod(tmpdir, modes[i]), 0);
		ck_assert_ptr_null(j = journal_open(tmpdir, FSYNC_BATCH, err,
		    sizeof(err)));
		snprintf(want, sizeof(want), "mode %04o", (unsigned)modes[i]);
		ck_assert_msg(strstr(err, want) != NULL, "%s", err);
		ck_assert_ptr_null(journal_open(tmpdir, FSYNC_OFF, err,
		    sizeof(err)));
	}
	ck_assert_int_eq(chmod(tmpdir, 0750), 0);
	j = jopen(FSYNC_BATCH);
	journal_close(j);
	ck_assert_int_eq(chmod(tmpdir, 0700), 0);
}
END_TEST

/* A journal that is gone while the directory was in use: said so. */
START_TEST(test_missing_journal_warns)
{
	struct journal *j;
	const char *log;

	capture_begin();
	j = jopen(FSYNC_BATCH);		/* a new directory: nothing to say */
	append1(j, 1, T0);
	journal_close(j);
	log = capture_end();
	ck_assert_msg(strstr(log, "missing") == NULL, "%s", log);

	unlink(jpath("journal"));
	capture_begin();
	j = jopen(FSYNC_BATCH);
	log = capture_end();
	ck_assert_msg(strstr(log, "<4>") != NULL && strstr(log,
	    "journal is missing, but journal.lock shows") != NULL, "%s", log);
	ck_assert_uint_eq(journal_pending(j), 0);
	journal_close(j);

	write_file("journal", "", 0);
	capture_begin();
	j = jopen(FSYNC_BATCH);
	log = capture_end();
	ck_assert_msg(strstr(log, "<4>") != NULL && strstr(log,
	    "is empty (0 bytes)") != NULL, "%s", log);
	journal_close(j);

	/* dead letters say so too */
	unlink(jpath("journal"));
	unlink(jpath("journal.lock"));
	write_file("dead-letters.jsonl", "", 0);
	capture_begin();
	j = jopen(FSYNC_BATCH);
	log = capture_end();
	ck_assert_msg(strstr(log, "dead-letters.jsonl shows") != NULL, "%s",
	    log);
	journal_close(j);
}
END_TEST

/* Ids out of order in a batch are kept, in order; repeats are dropped. */
START_TEST(test_filter_disorder)
{
	struct jupdate u[5] = {
		{ 12, "{}", 2 }, { 10, "{}", 2 }, { 12, "{}", 2 },
		{ 11, "{}", 2 }, { 9, "{}", 2 }
	};
	struct journal *j;
	size_t n = 5;

	j = jopen(FSYNC_BATCH);
	append1(j, 9, T0);
	journal_filter(j, u, &n, T0);
	ck_assert_uint_eq(n, 3);
	ck_assert_int_eq(u[0].id, 10);
	ck_assert_int_eq(u[1].id, 11);
	ck_assert_int_eq(u[2].id, 12);
	journal_close(j);
}
END_TEST

static int
count_corrupt(void)
{
	struct dirent *d;
	DIR *dp;
	int n = 0;

	ck_assert_ptr_nonnull(dp = opendir(tmpdir));
	while ((d = readdir(dp)) != NULL)
		if (strncmp(d->d_name, "journal.corrupt.", 16) == 0)
			n++;
	closedir(dp);
	return n;
}

START_TEST(test_bad_header)
{
	static const char junk[] = "this is not a journal at all";
	static const char future[] = "TGRJ\x09\0\0\0";
	struct journal *j;

	write_file("journal", junk, sizeof(junk));
	j = jopen(FSYNC_BATCH);
	ck_assert_uint_eq(journal_pending(j), 0);
	ck_assert_int_eq(journal_next_offset(j), 0);
	ck_assert_int_eq(count_corrupt(), 1);
	append1(j, 1, T0);
	journal_close(j);
	j = jopen(FSYNC_BATCH);
	ck_assert_uint_eq(journal_pending(j), 1);
	journal_close(j);

	/* an unknown version is set aside too (never parsed as ours) */
	write_file("journal", future, sizeof(future) - 1);
	j = jopen(FSYNC_BATCH);
	ck_assert_uint_eq(journal_pending(j), 0);
	ck_assert_int_eq(count_corrupt(), 2);
	journal_close(j);

	/* an empty file (killed at creation) is simply a new journal */
	write_file("journal", "", 0);
	j = jopen(FSYNC_BATCH);
	ck_assert_int_eq(count_corrupt(), 2);
	journal_close(j);
}
END_TEST

START_TEST(test_stale_tmp)
{
	struct journal *j;

	j = jopen(FSYNC_BATCH);
	append1(j, 1, T0);
	journal_close(j);
	write_file("journal.tmp", "half a compaction", 17);
	j = jopen(FSYNC_BATCH);
	ck_assert_int_eq(file_size("journal.tmp"), -1);
	ck_assert_uint_eq(journal_pending(j), 1);
	journal_close(j);
}
END_TEST

static size_t
filter_ids(struct journal *j, const int64_t *ids, size_t n, time_t now,
    int64_t *out)
{
	struct jupdate u[16];
	size_t i;

	for (i = 0; i < n; i++) {
		u[i].id = ids[i];
		u[i].json = "{}";
		u[i].len = 2;
	}
	journal_filter(j, u, &n, now);
	for (i = 0; i < n; i++)
		out[i] = u[i].id;
	return n;
}

START_TEST(test_dedup)
{
	int64_t ids[] = { 100, 101, 102 }, resent[] = { 101, 102, 103, 104 };
	int64_t again[] = { 101 }, out[16];
	struct journal *j;

	j = jopen(FSYNC_BATCH);
	ck_assert_int_eq(append_ids(j, ids, 3, T0), 0);
	ck_assert_uint_eq(filter_ids(j, resent, 4, T0 + 60, out), 2);
	ck_assert_int_eq(out[0], 103);
	ck_assert_int_eq(out[1], 104);
	/* done, but still <= the high-water mark: still a duplicate */
	ck_assert_int_eq(journal_done(j, 101), 0);
	ck_assert_uint_eq(filter_ids(j, again, 1, T0 + 60, out), 0);
	journal_close(j);

	j = jopen(FSYNC_BATCH);
	ck_assert_uint_eq(filter_ids(j, resent, 4, T0 + 60, out), 2);
	ck_assert_uint_eq(filter_ids(j, again, 1, T0 + 60, out), 0);
	ck_assert_int_eq(journal_next_offset(j), 103);
	journal_close(j);
}
END_TEST

START_TEST(test_id_restart)
{
	int64_t old[] = { 1000, 1001 }, fresh[] = { 5, 6 }, out[16];
	int64_t live[] = { 1001 };
	struct journal *j;

	j = jopen(FSYNC_BATCH);
	ck_assert_int_eq(append_ids(j, old, 2, T0), 0);
	ck_assert_int_eq(journal_done(j, 1000), 0);
	/* within 6 days low ids are resends */
	ck_assert_uint_eq(filter_ids(j, fresh, 2, T0 + 5 * DAY, out), 0);
	journal_close(j);

	j = jopen(FSYNC_BATCH);
	/* a week later Telegram restarted its ids: keep them */
	ck_assert_uint_eq(filter_ids(j, fresh, 2, T0 + 7 * DAY, out), 2);
	ck_assert_int_eq(out[0], 5);
	ck_assert_int_eq(out[1], 6);
	/* but an id still unfinished in the journal is never taken twice */
	ck_assert_uint_eq(filter_ids(j, live, 1, T0 + 7 * DAY, out), 0);
	ck_assert_int_eq(append_ids(j, fresh, 2, T0 + 7 * DAY), 0);
	ck_assert_int_eq(journal_next_offset(j), 7);
	ck_assert_uint_eq(filter_ids(j, fresh, 2, T0 + 7 * DAY + 1, out), 0);
	journal_close(j);

	j = jopen(FSYNC_BATCH);
	ck_assert_int_eq(journal_next_offset(j), 7);
	ck_assert_uint_eq(journal_pending(j), 3);
	ck_assert_uint_eq(filter_ids(j, fresh, 2, T0 + 7 * DAY + 1, out), 0);
	journal_close(j);
}
END_TEST

START_TEST(test_fsync_off)
{
	int64_t ids[] = { 1, 2, 3 }, out[16];
	struct journal *j;
	struct seen s;

	j = jopen(FSYNC_OFF);
	ck_assert_int_eq(append_ids(j, ids, 3, T0), 0);
	ck_assert_int_eq(journal_done(j, 2), 0);
	ck_assert_uint_eq(journal_pending(j), 2);
	ck_assert_int_eq(journal_next_offset(j), 4);
	ck_assert_uint_eq(filter_ids(j, ids, 3, T0, out), 0);
	ck_assert_uint_eq(journal_bytes(j), 0);
	replay(j, &s);
	ck_assert_uint_eq(s.n, 0);
	ck_assert_int_eq(dir_entries(), 0);
	journal_close(j);
	ck_assert_int_eq(dir_entries(), 0);
	j = jopen(FSYNC_OFF);
	ck_assert_uint_eq(journal_pending(j), 0);
	journal_close(j);
}
END_TEST

/*
 * A full disk: RLIMIT_FSIZE with SIGXFSZ ignored makes writes past the
 * limit fail with EFBIG, as root too (root ignores a read-only mode).
 */
START_TEST(test_append_full)
{
	static char pad[4096];
	struct rlimit rl, saved;
	struct jupdate u;
	struct journal *j;
	uint64_t good;
	struct seen s;
	int rc, err;

	j = jopen(FSYNC_BATCH);
	append1(j, 1, T0);
	good = journal_bytes(j);
	memset(pad, 'y', sizeof(pad) - 1);
	u.id = 2;
	u.json = pad;
	u.len = sizeof(pad) - 1;

	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
	signal(SIGXFSZ, SIG_IGN);
	rl = saved;
	rl.rlim_cur = good + 100;	/* a part of the record fits */
	/* no ck_assert under the limit: Check itself writes files */
	rc = -2;
	err = 0;
	if (setrlimit(RLIMIT_FSIZE, &rl) == 0) {
		rc = journal_append(j, &u, 1, T0);
		err = errno;
		if (setrlimit(RLIMIT_FSIZE, &saved) == -1)
			abort();
	}
	ck_assert_int_eq(rc, -1);
	ck_assert_int_eq(err, EFBIG);
	ck_assert_int_eq(journal_bytes(j), good);
	ck_assert_int_eq(file_size("journal"), good);	/* no half record */
	ck_assert_uint_eq(journal_pending(j), 1);
	ck_assert_int_eq(journal_next_offset(j), 2);

	u.id = 3;
	ck_assert_int_eq(journal_append(j, &u, 1, T0), 0);
	journal_close(j);
	j = jopen(FSYNC_BATCH);
	replay(j, &s);
	ck_assert_uint_eq(s.n, 2);
	ck_assert_int_eq(s.ids[0], 1);
	ck_assert_int_eq(s.ids[1], 3);
	journal_close(j);
}
END_TEST

START_TEST(test_lock)
{
	struct journal *j, *j2;
	char err[256] = "", want[128];

	j = jopen(FSYNC_BATCH);
	j2 = journal_open(tmpdir, FSYNC_BATCH, err, sizeof(err));
	ck_assert_ptr_null(j2);
	snprintf(want, sizeof(want), "is in use by another tgrunnerd (pid %ld)",
	    (long)getpid());
	ck_assert_msg(strstr(err, want) != NULL, "err: %s", err);
	ck_assert_ptr_nonnull(strstr(err, tmpdir));
	journal_close(j);
	j2 = jopen(FSYNC_BATCH);
	journal_close(j2);
}
END_TEST

START_TEST(test_open_missing_dir)
{
	struct journal *j;
	char sub[300], err[256];

	snprintf(sub, sizeof(sub), "%s/state", tmpdir);
	ck_assert_ptr_nonnull(j = journal_open(sub, FSYNC_BATCH, err,
	    sizeof(err)));
	append1(j, 1, T0);
	journal_close(j);
	ck_assert_ptr_nonnull(j = journal_open(sub, FSYNC_BATCH, err,
	    sizeof(err)));
	ck_assert_uint_eq(journal_pending(j), 1);
	journal_close(j);
	unlink(jpath("state/journal"));
	unlink(jpath("state/journal.lock"));
	ck_assert_int_eq(rmdir(sub), 0);

	snprintf(sub, sizeof(sub), "%s/no/such/dir", tmpdir);
	ck_assert_ptr_null(journal_open(sub, FSYNC_BATCH, err, sizeof(err)));
}
END_TEST

static Suite *
journal_suite(void)
{
	Suite *s = suite_create("journal");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_append_reopen);
	tcase_add_test(tc, test_done_reopen);
	tcase_add_test(tc, test_done_survives_kill);
	tcase_add_test(tc, test_done_unflushed_replayed);
	tcase_add_test(tc, test_done_rides_with_append);
	tcase_add_test(tc, test_async_survives_kill);
	tcase_add_test(tc, test_append_async);
	tcase_add_test(tc, test_append_async_other_modes);
	tcase_add_test(tc, test_make_durable);
	tcase_add_test(tc, test_prealloc);
	tcase_add_test(tc, test_replay_attempts);
	tcase_add_test(tc, test_compaction);
	tcase_add_test(tc, test_compaction_keeps_state);
	tcase_add_test(tc, test_torn_tail);
	tcase_add_test(tc, test_crc_middle);
	tcase_add_test(tc, test_bad_length_middle);
	tcase_add_test(tc, test_damage_fifth_of_thirty);
	tcase_add_test(tc, test_format1_upgraded);
	tcase_add_test(tc, test_calls_roundtrip);
	tcase_add_test(tc, test_calls_survive_kill);
	tcase_add_test(tc, test_calls_compaction);
	tcase_add_test(tc, test_calls_fsync_off);
	tcase_add_test(tc, test_calls_damaged);
	tcase_add_test(tc, test_calls_bad_records);
	tcase_add_test(tc, test_symlinks_refused);
	tcase_add_test(tc, test_dir_mode_refused);
	tcase_add_test(tc, test_missing_journal_warns);
	tcase_add_test(tc, test_filter_disorder);
	tcase_add_test(tc, test_bad_header);
	tcase_add_test(tc, test_stale_tmp);
	tcase_add_test(tc, test_dedup);
	tcase_add_test(tc, test_id_restart);
	tcase_add_test(tc, test_fsync_off);
	tcase_add_test(tc, test_append_full);
	tcase_add_test(tc, test_lock);
	tcase_add_test(tc, test_open_missing_dir);
	suite_add_tcase(s, tc);
	return s;
}

#define TEST_SUITE	journal_suite
#include "testmain.h"
