/*
 * The journal: an append-only file of checksummed records under state_dir,
 * rewritten (compacted) when history outweighs what is still unfinished.
 * The format is described exactly in proto/JOURNAL.md.
 *
 * The in-memory index (uthash, id -> entry) holds every unfinished update
 * with its JSON, because the daemon replays from it; a second index (seq
 * -> call, and a list in issue order) holds the owed calls, the outbox.
 * Both are what a compaction writes out, so compaction costs O(live), not
 * O(history).
 *
 * A damaged record does not end the journal: the loader reads on from the
 * next offset where a whole record checks (length, type, payload shape and
 * CRC), keeps everything valid it finds, reports what it skipped and keeps
 * the damaged file aside before rewriting it.
 */
#include "config.h"

#include <sys/file.h>
#include <sys/mman.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/vfs.h>

#include <linux/magic.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <jansson.h>
#include <uthash.h>
#include <zlib.h>

#include "deadletter.h"
#include "fileio.h"
#include "journal.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"
#include "xmalloc.h"

#define JOURNAL_FILE		"journal"
#define JOURNAL_TMP		"journal.tmp"
#define JOURNAL_LOCK		"journal.lock"
#define JOURNAL_DAMAGED		"journal.damaged"
#define JOURNAL_MAGIC		"TGRJ"
#define JOURNAL_VERSION		2
#define JOURNAL_VERSION_MIN	1	/* read, then rewritten as version 2 */
#define JOURNAL_HDR_LEN		8		/* magic[4] u32 version */
#define JOURNAL_REC_HDR		8		/* u32 length, u32 crc */
#define JOURNAL_REC_MAX		(16u * 1024 * 1024)	/* type + payload */
#define JOURNAL_COMPACT_MIN	(1024u * 1024)
#define JOURNAL_COMPACT_RATIO	4
#define JOURNAL_FLUSH		(64u * 1024)
#define JOURNAL_PREALLOC	(1024u * 1024)	/* zeros written ahead */
/* Telegram restarts ids after a week without updates; keep a day of margin. */
#define JOURNAL_ID_RESTART	(6 * 24 * 60 * 60)
#define JOURNAL_CALLS_MAX	10000	/* calls in one DONE_CALLS record */
#define JOURNAL_METHOD_MAX	64
/* Bytes checksummed while looking for a record after damage, at most. */
#define JOURNAL_RESYNC_BUDGET	(256ull * 1024 * 1024)
#define JOURNAL_DAMAGE_LOG_MAX	8	/* damaged regions logged one by one */

enum jrec_type {
	JREC_UPDATE = 1,	/* i64 id, JSON bytes */
	JREC_DONE = 2,		/* i64 id */
	JREC_REPLAY = 3,	/* i64 id, u32 attempt */
	JREC_MARK = 4,		/* i64 high-water id, i64 time of append */
	JREC_DONE_CALLS = 5,	/* i64 id, i64 time, JSON array of calls (v2) */
	JREC_CALL_DONE = 6,	/* u64 seq (v2) */
};

#define JREC_DONE_LEN		(1 + 8)
#define JREC_REPLAY_LEN		(1 + 8 + 4)
#define JREC_MARK_LEN		(1 + 8 + 8)
#define JREC_CALLS_HDR		(1 + 8 + 8)	/* before the JSON */
#define JREC_CALL_DONE_LEN	(1 + 8)
#define JREC_SIZE(len)		(JOURNAL_REC_HDR + (uint64_t)(len))

struct jentry {
	int64_t		 id;
	struct rcstr	*text;		/* the JSON, shared with its job */
	int		 attempt;	/* times it may have been started */
	int		 replay;	/* found at open, not replayed yet */
	UT_hash_handle	 hh;
};

/* An owed call: attached to a done update, not answered yet. */
struct jcall {
	uint64_t		 seq;
	int64_t			 update_id;
	int64_t			 t;		/* wall clock: owed since */
	char			*key;		/* NULL: unordered */
	char			*method;
	char			*params;	/* compact JSON */
	size_t			 plen;
	int			 replay;	/* found at open, not replayed yet */
	TAILQ_ENTRY(jcall)	 entry;		/* j->calls, by seq */
	UT_hash_handle		 hh;
};

TAILQ_HEAD(jcallq, jcall);

/* A growable output buffer; flushed to fd when it grows past JOURNAL_FLUSH. */
struct jbuf {
	uint8_t		*p;
	size_t		 len;
	size_t		 cap;
};

/* What loading found wrong with the file (damage in its middle). */
struct jdamage {
	int		 regions;	/* damaged runs with good records after */
	uint64_t	 skipped;	/* their bytes */
	uint64_t	 kept;		/* records read after the first one */
	uint64_t	 budget;	/* bytes left to checksum while resyncing */
	int		 have_mark;	/* the mark before the first damage */
	int64_t		 hw;
	int64_t		 last_append;
	uint64_t	 last_end;	/* where the last damaged run ended */
};

struct jsyncer;

struct journal {
	char		*dir;
	enum fsync_mode	 mode;
	int		 dirfd;		/* -1 in FSYNC_OFF mode */
	int		 fd;
	int		 lockfd;
	int		 broken;	/* a partial record may follow size */
	int		 stale;		/* a done mark could not be written */
	int		 version;	/* of the file as found at open */
	int		 rewrite;	/* found damaged or old: rewrite at open */
	const char	*used_before;	/* at open: a file saying so, or NULL */
	struct jentry	*entries;	/* uthash head */
	size_t		 npending;
	struct jcall	*callidx;	/* uthash head, by seq */
	struct jcallq	 calls;		/* the same, in issue order */
	size_t		 ncalls;
	uint64_t	 next_seq;
	uint64_t	 size;		/* bytes of good records on disk */
	uint64_t	 alloc;		/* file size: zeros from size to alloc */
	uint64_t	 ahead;		/* zeros to write ahead, 0 on tmpfs */
	uint64_t	 live;		/* bytes a compaction would write, at most */
	uint64_t	 compactions;
	uint64_t	 compact_retry;	/* after a failure, wait for it */
	int		 have_mark;
	int64_t		 hw;		/* high-water id of the latest batch */
	int64_t		 last_append;	/* wall-clock time of it */
	struct jbuf	 dones;		/* done marks not written yet */
	struct jsyncer	*syncer;	/* mode batch: fdatasync off the loop */
	int		 syncing;	/* a batch's sync is in flight */
};

/*
 * The sync thread.  fdatasync takes from a fraction of a millisecond to
 * tens of milliseconds; on the event loop it stalls every worker.  The loop
 * writes a batch, hands the fd to this thread and goes on; the thread
 * syncs and writes one byte to a pipe the loop watches.  Only the fd and
 * the outcome cross threads, under the mutex; the thread touches nothing
 * else of the journal.
 */
struct jsyncer {
	pthread_t	 thread;
	pthread_mutex_t	 mu;
	pthread_cond_t	 cv;
	int		 fd;		/* to sync; -1 when nothing is asked */
	int		 quit;
	int		 rc;		/* of the last sync, and its errno */
	int		 err;
	int		 pipe[2];	/* [0]: readable when a sync finished */
};

static void
jbuf_reserve(struct jbuf *b, size_t n)
{
	size_t cap;

	if (b->len + n <= b->cap)
		return;
	cap = b->cap ? b->cap : 4096;
	while (cap < b->len + n)
		cap *= 2;
	b->p = xreallocarray(b->p, cap, 1);
	b->cap = cap;
}

static void
put_u32(uint8_t *p, uint32_t v)
{
	p[0] = v & 0xff;
	p[1] = (v >> 8) & 0xff;
	p[2] = (v >> 16) & 0xff;
	p[3] = (v >> 24) & 0xff;
}

static void
put_u64(uint8_t *p, uint64_t v)
{
	put_u32(p, (uint32_t)v);
	put_u32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t
get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

static uint64_t
get_u64(const uint8_t *p)
{
	return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* Append one record: a, b are the payload's two parts (b may be empty). */
static void
jbuf_record(struct jbuf *b, enum jrec_type type, const void *a, size_t alen,
    const void *extra, size_t elen)
{
	uint32_t len = 1 + alen + elen;
	uint8_t *r;

	jbuf_reserve(b, JREC_SIZE(len));
	r = b->p + b->len;
	r[JOURNAL_REC_HDR] = type;
	memcpy(r + JOURNAL_REC_HDR + 1, a, alen);
	if (elen > 0)
		memcpy(r + JOURNAL_REC_HDR + 1 + alen, extra, elen);
	put_u32(r, len);
	put_u32(r + 4, crc32(0L, r + JOURNAL_REC_HDR, len));
	b->len += JREC_SIZE(len);
}

static void
jbuf_update(struct jbuf *b, int64_t id, const char *json, size_t len)
{
	uint8_t p[8];

	put_u64(p, (uint64_t)id);
	jbuf_record(b, JREC_UPDATE, p, sizeof(p), json, len);
}

static void
jbuf_done(struct jbuf *b, int64_t id)
{
	uint8_t p[8];

	put_u64(p, (uint64_t)id);
	jbuf_record(b, JREC_DONE, p, sizeof(p), NULL, 0);
}

static void
jbuf_replay(struct jbuf *b, int64_t id, int attempt)
{
	uint8_t p[12];

	put_u64(p, (uint64_t)id);
	put_u32(p + 8, (uint32_t)attempt);
	jbuf_record(b, JREC_REPLAY, p, sizeof(p), NULL, 0);
}

static void
jbuf_mark(struct jbuf *b, int64_t hw, int64_t when)
{
	uint8_t p[16];

	put_u64(p, (uint64_t)hw);
	put_u64(p + 8, (uint64_t)when);
	jbuf_record(b, JREC_MARK, p, sizeof(p), NULL, 0);
}

static void
jbuf_call_done(struct jbuf *b, uint64_t seq)
{
	uint8_t p[8];

	put_u64(p, seq);
	jbuf_record(b, JREC_CALL_DONE, p, sizeof(p), NULL, 0);
}

static void
jbuf_put(struct jbuf *b, const void *p, size_t n)
{
	jbuf_reserve(b, n);
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

/* s as a JSON string: keys are short, mostly [A-Za-z0-9:/_%~-]. */
static void
jbuf_put_jstring(struct jbuf *b, const char *s)
{
	char esc[8];

	jbuf_put(b, "\"", 1);
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\') {
			esc[0] = '\\';
			esc[1] = *s;
			jbuf_put(b, esc, 2);
		} else if ((unsigned char)*s < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", (unsigned char)*s);
			jbuf_put(b, esc, 6);
		} else
			jbuf_put(b, s, 1);
	}
	jbuf_put(b, "\"", 1);
}

/* {"seq":N,"key":"...","method":"...","params":{...}} */
static void
jbuf_put_call(struct jbuf *b, const struct jcall *c)
{
	char num[48];
	int n;

	n = snprintf(num, sizeof(num), "{\"seq\":%" PRIu64, c->seq);
	jbuf_put(b, num, (size_t)n);
	if (c->key != NULL) {
		jbuf_put(b, ",\"key\":", 7);
		jbuf_put_jstring(b, c->key);
	}
	jbuf_put(b, ",\"method\":\"", 11);
	jbuf_put(b, c->method, strlen(c->method));	/* [A-Za-z0-9_] */
	jbuf_put(b, "\",\"params\":", 11);
	jbuf_put(b, c->params, c->plen);
	jbuf_put(b, "}", 1);
}

/*
 * One DONE_CALLS record: update id done, and the n calls from c on (all of
 * that update, in issue order) owed since their first one's time.
 */
static void
jbuf_done_calls(struct jbuf *b, int64_t id, const struct jcall *c, size_t n)
{
	struct jbuf	 text = { NULL, 0, 0 };
	uint8_t		 hdr[16];
	size_t		 i;

	put_u64(hdr, (uint64_t)id);
	put_u64(hdr + 8, (uint64_t)c->t);
	jbuf_put(&text, "[", 1);
	for (i = 0; i < n; i++, c = TAILQ_NEXT(c, entry)) {
		if (i > 0)
			jbuf_put(&text, ",", 1);
		jbuf_put_call(&text, c);
	}
	jbuf_put(&text, "]", 1);
	jbuf_record(b, JREC_DONE_CALLS, hdr, sizeof(hdr), text.p, text.len);
	free(text.p);
}

/* What an entry costs in a compacted file. */
static uint64_t
jentry_bytes(const struct jentry *e)
{
	uint64_t n = JREC_SIZE(1 + 8 + e->text->len);

	if (e->attempt > 1)
		n += JREC_SIZE(JREC_REPLAY_LEN);
	return n;
}

static uint64_t
journal_base_bytes(const struct journal *j)
{
	return JOURNAL_HDR_LEN + (j->have_mark ? JREC_SIZE(JREC_MARK_LEN) : 0);
}

static void
journal_forget(struct journal *j, struct jentry *e)
{
	HASH_DEL(j->entries, e);
	j->live -= jentry_bytes(e);
	j->npending--;
	rcstr_unref(e->text);
	free(e);
}

/*
 * Insert or replace the entry for id (the JSON is copied).  A job holding
 * the replaced entry's text keeps its own reference.
 */
static struct jentry *
journal_remember(struct journal *j, int64_t id, const char *json, size_t len)
{
	struct jentry *e;

	HASH_FIND(hh, j->entries, &id, sizeof(id), e);
	if (e != NULL)
		journal_forget(j, e);
	e = xcalloc(1, sizeof(*e));
	e->text = rcstr_new(json, len);
	e->id = id;
	e->attempt = 1;
	HASH_ADD(hh, j->entries, id, sizeof(e->id), e);
	j->live += jentry_bytes(e);
	j->npending++;
	return e;
}

static void
journal_set_attempt(struct journal *j, struct jentry *e, int attempt)
{
	j->live -= jentry_bytes(e);
	e->attempt = attempt;
	j->live += jentry_bytes(e);
}

/*
 * What a call costs in a compacted file, at most: as if it had a record
 * of its own, its key escaped in full.
 */
static uint64_t
jcall_bytes(const struct jcall *c)
{
	return JREC_SIZE(JREC_CALLS_HDR + 2 + 64 + JOURNAL_METHOD_MAX +
	    (c->key != NULL ? 6 * strlen(c->key) : 0) + c->plen);
}

static struct jcall *
jcall_find(const struct journal *j, uint64_t seq)
{
	struct jcall *c;

	HASH_FIND(hh, j->callidx, &seq, sizeof(seq), c);
	return c;
}

/*
 * Index a call (key and method copied, params taken: a string the caller
 * allocated), keeping issue order.
 */
static struct jcall *
jcall_add(struct journal *j, uint64_t seq, int64_t id, int64_t t,
    const char *key, const char *method, char *params, size_t plen)
{
	struct jcall *c, *after;

	c = xcalloc(1, sizeof(*c));
	c->seq = seq;
	c->update_id = id;
	c->t = t;
	c->key = key != NULL ? xstrdup(key) : NULL;
	c->method = xstrdup(method);
	c->params = params;
	c->plen = plen;
	/* seqs only grow, so this is the tail but after a damaged file */
	after = TAILQ_LAST(&j->calls, jcallq);
	while (after != NULL && after->seq > seq)
		after = TAILQ_PREV(after, jcallq, entry);
	if (after == NULL)
		TAILQ_INSERT_HEAD(&j->calls, c, entry);
	else
		TAILQ_INSERT_AFTER(&j->calls, after, c, entry);
	HASH_ADD(hh, j->callidx, seq, sizeof(c->seq), c);
	j->ncalls++;
	j->live += jcall_bytes(c);
	if (seq >= j->next_seq)
		j->next_seq = seq + 1;
	return c;
}

static void
jcall_forget(struct journal *j, struct jcall *c)
{
	HASH_DEL(j->callidx, c);
	TAILQ_REMOVE(&j->calls, c, entry);
	j->ncalls--;
	j->live -= jcall_bytes(c);
	free(c->key);
	free(c->method);
	free(c->params);
	free(c);
}

static int
journal_sync(struct journal *j, int fd)
{
	if (fdatasync(fd) == -1) {
		log_err("%s: fdatasync %s/%s", __func__, j->dir,
		    JOURNAL_FILE);
		return -1;
	}
	return 0;
}


/*
 * Make room for len more bytes of records by writing zeros ahead of them.
 * Appending to a file changes its size and allocates blocks, so every
 * fdatasync must also commit the filesystem's metadata; overwriting zeros
 * already on disk does not, which halves the cost of a sync (measured on
 * ext4: 0.37 -> 0.2 ms, and half the CPU).  A run of zeros after the last
 * record reads as the end of the journal.  Without the space (disk full)
 * the records are simply appended.  On tmpfs a sync costs nothing and the
 * zeros would only take memory: nothing is written ahead there.
 */
static void
journal_reserve(struct journal *j, size_t len)
{
	static const uint8_t zeros[64 * 1024];
	uint64_t off, end;
	size_t n;

	if (j->size + len <= j->alloc || j->ahead == 0)
		return;
	end = j->size + len + j->ahead;
	/* alloc >= size always: zeros go after what the file holds */
	for (off = j->alloc; off < end; off += n) {
		n = end - off < sizeof(zeros) ? (size_t)(end - off) :
		    sizeof(zeros);
		if (fileio_write_all(j->fd, zeros, n, (int64_t)off) == -1) {
			/* keep what was there; the records extend the file */
			if (ftruncate(j->fd, (off_t)j->alloc) == -1)
				j->broken = 1;
			return;
		}
	}
	j->alloc = end;
}

/*
 * Cut the file back to its good prefix, so that the next record never
 * follows a partial one.  If even that fails, remember it and retry
 * before the next write.
 */
static int
journal_repair(struct journal *j)
{
	int saved = errno;

	if (ftruncate(j->fd, (off_t)j->size) == -1) {
		log_err("%s: truncate %s/%s to %" PRIu64, __func__,
		    j->dir, JOURNAL_FILE, j->size);
		j->broken = 1;
		errno = saved;
		return -1;
	}
	j->alloc = j->size;
	j->broken = 0;
	errno = saved;
	return 0;
}

/*
 * Write records at the end of the journal and, if sync, make them durable.
 * On failure the file is cut back to where it was, errno is kept.
 */
static int
journal_write(struct journal *j, const struct jbuf *b, int sync,
    const char *what)
{
	int saved;

	if (j->broken && journal_repair(j) == -1)
		return -1;
	journal_reserve(j, b->len);
	if (fileio_write_all(j->fd, b->p, b->len, (int64_t)j->size) == -1) {
		saved = errno;
		log_err("journal: %s: write %s/%s", what, j->dir, JOURNAL_FILE);
		journal_repair(j);
		errno = saved;
		return -1;
	}
	if (sync && journal_sync(j, j->fd) == -1) {
		/* the pages' fate is unknown: drop them, never confirm */
		journal_repair(j);
		return -1;
	}
	j->size += b->len;
	if (j->alloc < j->size)
		j->alloc = j->size;
	return 0;
}

/* --- the sync thread -------------------------------------------------------- */

static void *
jsyncer_main(void *arg)
{
	struct jsyncer *y = arg;
	int fd, rc, err;

	pthread_mutex_lock(&y->mu);
	for (;;) {
		while (y->fd == -1 && !y->quit)
			pthread_cond_wait(&y->cv, &y->mu);
		if (y->fd == -1)
			break;		/* quit, nothing left to sync */
		fd = y->fd;
		/* the loop does not close or replace fd while syncing */
		pthread_mutex_unlock(&y->mu);
		rc = fdatasync(fd);
		err = errno;
		pthread_mutex_lock(&y->mu);
		y->fd = -1;
		y->rc = rc;
		y->err = err;
		while (write(y->pipe[1], "s", 1) == -1 && errno == EINTR)
			;
	}
	pthread_mutex_unlock(&y->mu);
	return NULL;
}

static int
jsyncer_start(struct journal *j)
{
	struct jsyncer *y;
	sigset_t all, old;
	int saved;

	y = xcalloc(1, sizeof(*y));
	y->fd = -1;
	if (pipe2(y->pipe, O_CLOEXEC | O_NONBLOCK) == -1) {
		saved = errno;
		free(y);
		errno = saved;
		return -1;
	}
	pthread_mutex_init(&y->mu, NULL);
	pthread_cond_init(&y->cv, NULL);
	/* signals stay with the event loop's thread */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	saved = pthread_create(&y->thread, NULL, jsyncer_main, y);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (saved != 0) {
		close(y->pipe[0]);
		close(y->pipe[1]);
		pthread_mutex_destroy(&y->mu);
		pthread_cond_destroy(&y->cv);
		free(y);
		errno = saved;
		return -1;
	}
	j->syncer = y;
	return 0;
}

/* Sync j->fd on the thread; the pipe says when. */
static void
jsyncer_ask(struct journal *j)
{
	struct jsyncer *y = j->syncer;

	pthread_mutex_lock(&y->mu);
	y->fd = j->fd;
	pthread_cond_signal(&y->cv);
	pthread_mutex_unlock(&y->mu);
	j->syncing = 1;
}

/* The outcome of the finished sync: 0, or -1 logged. */
static int
jsync_outcome(struct journal *j)
{
	struct jsyncer *y = j->syncer;
	int rc, err;

	pthread_mutex_lock(&y->mu);
	rc = y->rc;
	err = y->err;
	pthread_mutex_unlock(&y->mu);
	if (rc == -1) {
		errno = err;
		log_err("journal: fdatasync %s/%s", j->dir, JOURNAL_FILE);
		return -1;
	}
	return 0;
}

/*
 * Let a sync in flight finish, then end the thread.  A failed sync leaves
 * the journal stale: journal_close() rewrites it from memory.
 */
static void
jsyncer_stop(struct journal *j)
{
	struct jsyncer *y = j->syncer;

	if (y == NULL)
		return;
	pthread_mutex_lock(&y->mu);
	y->quit = 1;
	pthread_cond_signal(&y->cv);
	pthread_mutex_unlock(&y->mu);
	pthread_join(y->thread, NULL);
	if (j->syncing && jsync_outcome(j) == -1)
		j->stale = 1;
	j->syncing = 0;
	close(y->pipe[0]);
	close(y->pipe[1]);
	pthread_mutex_destroy(&y->mu);
	pthread_cond_destroy(&y->cv);
	free(y);
	j->syncer = NULL;
}

static int
jbuf_write(int fd, struct jbuf *b)
{
	if (fileio_write_all(fd, b->p, b->len, -1) == -1)
		return -1;
	b->len = 0;
	return 0;
}

/* Write the owed calls, one record per run of calls of one update. */
static int
journal_dump_calls(struct journal *j, int fd, struct jbuf *b,
    uint64_t *bytes)
{
	struct jcall *c, *first;
	size_t n;

	for (c = TAILQ_FIRST(&j->calls); c != NULL;) {
		first = c;
		for (n = 0; c != NULL && c->update_id == first->update_id &&
		    n < JOURNAL_CALLS_MAX; n++)
			c = TAILQ_NEXT(c, entry);
		jbuf_done_calls(b, first->update_id, first, n);
		if (b->len >= JOURNAL_FLUSH) {
			*bytes += b->len;
			if (jbuf_write(fd, b) == -1)
				return -1;
		}
	}
	return 0;
}

/*
 * Write the header, the mark, every owed call and every unfinished update
 * to fd; *bytes is what was written.  The calls come first: their records
 * also mark their updates done, which must never apply to an update of
 * the same id fetched later (after Telegram restarted its ids).
 */
static int
journal_dump(struct journal *j, int fd, uint64_t *bytes)
{
	struct jbuf b = { NULL, 0, 0 };
	struct jentry *e, *tmp;
	int rc = -1;

	*bytes = 0;
	jbuf_reserve(&b, JOURNAL_HDR_LEN);
	memcpy(b.p, JOURNAL_MAGIC, 4);
	put_u32(b.p + 4, JOURNAL_VERSION);
	b.len = JOURNAL_HDR_LEN;
	if (j->have_mark)
		jbuf_mark(&b, j->hw, j->last_append);
	if (journal_dump_calls(j, fd, &b, bytes) == -1)
		goto out;
	HASH_ITER(hh, j->entries, e, tmp) {
		jbuf_update(&b, e->id, e->text->s, e->text->len);
		if (e->attempt > 1)
			jbuf_replay(&b, e->id, e->attempt);
		if (b.len >= JOURNAL_FLUSH) {
			*bytes += b.len;
			if (jbuf_write(fd, &b) == -1)
				goto out;
		}
	}
	*bytes += b.len;
	if (jbuf_write(fd, &b) == -1)
		goto out;
	rc = 0;
out:
	free(b.p);
	return rc;
}

/*
 * Write the live set to a new file and rename it over the journal.  The
 * rename is the commit point: killed before it, the old file is intact
 * (the stale temporary is removed at the next open); after it, the new
 * file is complete and synced.
 */
static int
journal_rewrite(struct journal *j)
{
	uint64_t bytes;
	int fd, saved;

	fd = openat(j->dirfd, JOURNAL_TMP,
	    O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd == -1) {
		saved = errno;
		log_err("%s: open %s/%s", __func__, j->dir, JOURNAL_TMP);
		errno = saved;
		return -1;
	}
	if (journal_dump(j, fd, &bytes) == -1 || fdatasync(fd) == -1) {
		saved = errno;
		log_err("%s: write %s/%s", __func__, j->dir, JOURNAL_TMP);
		goto fail;
	}
	if (renameat(j->dirfd, JOURNAL_TMP, j->dirfd, JOURNAL_FILE) == -1) {
		saved = errno;
		log_err("%s: rename %s/%s", __func__, j->dir, JOURNAL_TMP);
		goto fail;
	}
	/* the rename is done; a failed directory sync only risks power loss */
	if (fsync(j->dirfd) == -1)
		log_warn("%s: fsync %s", __func__, j->dir);
	if (j->fd != -1)
		close(j->fd);
	j->fd = fd;
	j->size = bytes;
	j->alloc = j->size;
	j->broken = 0;
	j->dones.len = 0;	/* the new file has no trace of those updates */
	return 0;
fail:
	close(fd);
	unlinkat(j->dirfd, JOURNAL_TMP, 0);
	errno = saved;
	return -1;
}

static void
journal_maybe_compact(struct journal *j)
{
	uint64_t limit;

	limit = JOURNAL_COMPACT_RATIO * (journal_base_bytes(j) + j->live);

	/* the sync thread may be using j->fd: after it reports */
	if (j->mode == FSYNC_OFF || j->syncing)
		return;
	if (limit < JOURNAL_COMPACT_MIN)
		limit = JOURNAL_COMPACT_MIN;
	/*
	 * A done mark that could not be written (disk full) leaves the file
	 * claiming an unfinished update: rewrite it from memory as soon as
	 * writing works again, or a clean restart would run it twice.
	 */
	if (j->size < j->compact_retry)	/* after a failure: wait for growth */
		return;
	if (!j->stale && j->size <= limit)
		return;
	if (journal_rewrite(j) == -1) {
		/* don't retry (and log) on every record: wait for growth */
		j->compact_retry = j->size + JOURNAL_COMPACT_MIN;
		return;
	}
	j->compact_retry = 0;
	j->stale = 0;
	j->compactions++;
	log_debug("journal: compacted %s to %" PRIu64 " bytes, %zu pending",
	    j->dir, j->size, j->npending);
}

static int
journal_method_ok(const char *m)
{
	size_t n;

	for (n = 0; m[n] != '\0'; n++)
		if (!isalnum((unsigned char)m[n]) && m[n] != '_')
			return 0;
	return n > 0 && n <= JOURNAL_METHOD_MAX;
}

/* A string member without NUL bytes, shorter than max: the string, or NULL. */
static const char *
journal_jstr(json_t *o, const char *name, size_t max)
{
	json_t *v = json_object_get(o, name);
	const char *s = json_string_value(v);

	if (s == NULL || strlen(s) != json_string_length(v) ||
	    strlen(s) >= max)
		return NULL;
	return s;
}

/* Is call e of a DONE_CALLS record well formed, its seq after prev? */
static int
journal_call_ok(const struct journal *j, json_t *e, uint64_t prev,
    uint64_t *seq)
{
	json_t *v = json_object_get(e, "seq");
	json_t *params = json_object_get(e, "params");

	if (!json_is_object(e) || !json_is_integer(v) ||
	    json_integer_value(v) < 1)
		return 0;
	*seq = (uint64_t)json_integer_value(v);
	if (*seq <= prev || jcall_find(j, *seq) != NULL)
		return 0;
	if (json_object_get(e, "key") != NULL &&
	    journal_jstr(e, "key", KEY_STRLEN) == NULL)
		return 0;
	if (journal_jstr(e, "method", JOURNAL_METHOD_MAX + 1) == NULL ||
	    !journal_method_ok(journal_jstr(e, "method", JOURNAL_METHOD_MAX +
	    1)))
		return 0;
	return params == NULL || json_is_object(params);
}

/* A DONE_CALLS record: check every call, then apply all of them. */
static int
journal_apply_calls(struct journal *j, const uint8_t *r, uint32_t len)
{
	int64_t id = (int64_t)get_u64(r + 1), t = (int64_t)get_u64(r + 9);
	json_t *a, *e, *params;
	struct jentry *u;
	struct jcall *c;
	uint64_t seq, prev = 0;
	char *text;
	size_t i;
	int rc = -1;

	a = json_loadb((const char *)r + JREC_CALLS_HDR, len - JREC_CALLS_HDR,
	    JSON_ALLOW_NUL, NULL);
	if (!json_is_array(a) || json_array_size(a) == 0 ||
	    json_array_size(a) > JOURNAL_CALLS_MAX)
		goto out;
	json_array_foreach(a, i, e) {
		if (!journal_call_ok(j, e, prev, &seq))
			goto out;
		prev = seq;
	}
	HASH_FIND(hh, j->entries, &id, sizeof(id), u);
	if (u != NULL)
		journal_forget(j, u);
	json_array_foreach(a, i, e) {
		params = json_object_get(e, "params");
		text = params != NULL ? json_dumps(params, JSON_COMPACT) :
		    xstrdup("{}");
		if (text == NULL)
			fatalx(EXIT_NOMEM, "%s: json_dumps", __func__);
		c = jcall_add(j, (uint64_t)json_integer_value(
		    json_object_get(e, "seq")), id, t, journal_jstr(e, "key",
		    KEY_STRLEN), journal_jstr(e, "method", JOURNAL_METHOD_MAX +
		    1), text, strlen(text));
		c->replay = 1;
	}
	rc = 0;
out:
	json_decref(a);
	return rc;
}

/* Apply one checksummed record at load time; -1 if it makes no sense. */
static int
journal_apply(struct journal *j, const uint8_t *r, uint32_t len)
{
	struct jentry *e;
	struct jcall *c;
	int64_t id;
	uint32_t attempt;

	if (len < 1 + 8)
		return -1;
	id = (int64_t)get_u64(r + 1);
	switch (r[0]) {
	case JREC_UPDATE:
		e = journal_remember(j, id, (const char *)r + 9, len - 9);
		e->replay = 1;
		return 0;
	case JREC_DONE:
		if (len != JREC_DONE_LEN)
			return -1;
		HASH_FIND(hh, j->entries, &id, sizeof(id), e);
		if (e != NULL)
			journal_forget(j, e);
		return 0;
	case JREC_REPLAY:
		if (len != JREC_REPLAY_LEN)
			return -1;
		attempt = get_u32(r + 9);
		if (attempt < 1 || attempt >= INT_MAX)
			return -1;
		HASH_FIND(hh, j->entries, &id, sizeof(id), e);
		if (e != NULL)
			journal_set_attempt(j, e, (int)attempt);
		return 0;
	case JREC_MARK:
		if (len != JREC_MARK_LEN)
			return -1;
		j->have_mark = 1;
		j->hw = id;
		j->last_append = (int64_t)get_u64(r + 9);
		return 0;
	case JREC_DONE_CALLS:
		if (j->version < 2 || len <= JREC_CALLS_HDR)
			return -1;
		return journal_apply_calls(j, r, len);
	case JREC_CALL_DONE:
		if (j->version < 2 || len != JREC_CALL_DONE_LEN)
			return -1;
		if ((c = jcall_find(j, (uint64_t)id)) != NULL)
			jcall_forget(j, c);
		/* never hand out a seq the file still names */
		if ((uint64_t)id >= j->next_seq && (uint64_t)id < UINT64_MAX)
			j->next_seq = (uint64_t)id + 1;
		return 0;
	default:
		return -1;
	}
}

/*
 * Could a record of type r[0] and length len (type + payload) start here?
 * Only what the daemon writes: the size each type has, and the first
 * byte of the JSON (an Update is an object, the calls an array).  Used to
 * pick candidates after damage, before their CRC is computed.
 */
static int
journal_plausible(const struct journal *j, const uint8_t *r, uint32_t len)
{
	switch (r[0]) {
	case JREC_UPDATE:
		return len > 9 && r[9] == '{';
	case JREC_DONE:
		return len == JREC_DONE_LEN;
	case JREC_REPLAY:
		return len == JREC_REPLAY_LEN;
	case JREC_MARK:
		return len == JREC_MARK_LEN;
	case JREC_DONE_CALLS:
		return j->version >= 2 && len > JREC_CALLS_HDR &&
		    r[JREC_CALLS_HDR] == '[';
	case JREC_CALL_DONE:
		return j->version >= 2 && len == JREC_CALL_DONE_LEN;
	default:
		return 0;
	}
}

/*
 * Is there a whole, checksummed record at off?  Its length in *len.  With
 * a budget (resynchronising), only plausible records are checksummed and
 * the bytes checksummed are counted: a hostile file cannot make the
 * search quadratic.
 */
static int
journal_record_at(const struct journal *j, const uint8_t *p, uint64_t size,
    uint64_t off, uint32_t *len, uint64_t *budget)
{
	uint32_t n;

	if (size - off < JOURNAL_REC_HDR + 1)
		return 0;
	n = get_u32(p + off);
	if (n < 1 || n > JOURNAL_REC_MAX || size - off - JOURNAL_REC_HDR < n)
		return 0;
	if (budget != NULL) {
		if (!journal_plausible(j, p + off + JOURNAL_REC_HDR, n) ||
		    *budget < n)
			return 0;
		*budget -= n;
	}
	if (crc32(0L, p + off + JOURNAL_REC_HDR, n) != get_u32(p + off + 4))
		return 0;
	*len = n;
	return 1;
}

/* The next offset after from where a record checks; size if none. */
static uint64_t
journal_resync(const struct journal *j, const uint8_t *p, uint64_t size,
    uint64_t from, struct jdamage *dm)
{
	uint64_t off;
	uint32_t len;

	for (off = from; off + JOURNAL_REC_HDR < size; off++)
		if (journal_record_at(j, p, size, off, &len, &dm->budget))
			return off;
	return size;
}

static const char *
journal_type_name(uint8_t t)
{
	static const char *const names[] = { "?", "UPDATE", "DONE", "REPLAY",
		"MARK", "DONE_CALLS", "CALL_DONE" };

	return t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

/*
 * What the damaged record at off was, as far as its header still says:
 * its type and the update (or call) it was about.  Unverified: the CRC
 * failed, so this may be damaged too.
 */
static void
journal_damage_what(const uint8_t *p, uint64_t size, uint64_t off, char *buf,
    size_t bufsz)
{
	uint32_t len;
	uint8_t type;

	snprintf(buf, bufsz, "its header is unreadable");
	if (size - off < JOURNAL_REC_HDR + 1 + 8)
		return;
	len = get_u32(p + off);
	type = p[off + JOURNAL_REC_HDR];
	if (len < 1 + 8 || len > JOURNAL_REC_MAX || type < JREC_UPDATE ||
	    type > JREC_CALL_DONE)
		return;
	if (type == JREC_MARK)
		snprintf(buf, bufsz, "type=MARK (unverified)");
	else if (type == JREC_CALL_DONE)
		snprintf(buf, bufsz, "type=CALL_DONE seq=%" PRIu64
		    " (unverified)", get_u64(p + off + JOURNAL_REC_HDR + 1));
	else
		snprintf(buf, bufsz, "type=%s update=%" PRId64 " (unverified)",
		    journal_type_name(type),
		    (int64_t)get_u64(p + off + JOURNAL_REC_HDR + 1));
}

/* A damaged run [off, next) with good records after it. */
static void
journal_note_damage(struct journal *j, struct jdamage *dm, const uint8_t *p,
    uint64_t size, uint64_t off, uint64_t next)
{
	char what[128];

	if (dm->regions == 0) {
		/* the marks after damage may cover updates lost in it */
		dm->have_mark = j->have_mark;
		dm->hw = j->hw;
		dm->last_append = j->last_append;
	}
	if (dm->regions > 0 && dm->last_end == off) {
		/* a record that checked but made no sense: the same run */
		dm->skipped += next - off;
		dm->last_end = next;
		return;
	}
	dm->regions++;
	dm->skipped += next - off;
	dm->last_end = next;
	if (dm->regions > JOURNAL_DAMAGE_LOG_MAX)
		return;
	journal_damage_what(p, size, off, what, sizeof(what));
	log_errx("journal: %s/%s: damaged record at offset %" PRIu64 ": "
	    "skipping %" PRIu64 " bytes to the next valid record at %" PRIu64
	    "; the damaged record: %s", j->dir, JOURNAL_FILE, off,
	    next - off, next, what);
}

/* Only zeros (space written ahead, see journal_reserve)? */
static int
journal_zeros(const uint8_t *p, uint64_t n)
{
	while (n > 0 && *p == 0) {
		p++;
		n--;
	}
	return n == 0;
}

/*
 * Read the records of the mapped journal p[0..size), reading on past
 * damage; returns the end of the last good record.  Damage in the middle
 * is counted in dm; what follows the last good record (a torn tail, or
 * zeros written ahead) is left to the caller.
 */
static uint64_t
journal_parse(struct journal *j, const uint8_t *p, uint64_t size,
    struct jdamage *dm)
{
	uint64_t off = JOURNAL_HDR_LEN, next;
	uint32_t len;

	dm->budget = JOURNAL_RESYNC_BUDGET;
	while (off < size) {
		if (journal_record_at(j, p, size, off, &len, NULL) &&
		    journal_apply(j, p + off + JOURNAL_REC_HDR, len) == 0) {
			off += JREC_SIZE(len);
			if (dm->regions > 0)
				dm->kept++;
			continue;
		}
		if (journal_zeros(p + off, size - off))
			break;
		if ((next = journal_resync(j, p, size, off + 1, dm)) == size)
			break;		/* nothing valid follows: a torn tail */
		journal_note_damage(j, dm, p, size, off, next);
		off = next;
	}
	if (dm->regions > 0) {
		j->have_mark = dm->have_mark;
		j->hw = dm->hw;
		j->last_append = dm->last_append;
	}
	return off;
}

/* The version of a journal we can read, or 0. */
static int
journal_header_version(const uint8_t *p, uint64_t size)
{
	uint32_t v;

	if (size < JOURNAL_HDR_LEN || memcmp(p, JOURNAL_MAGIC, 4) != 0)
		return 0;
	v = get_u32(p + 4);
	return v >= JOURNAL_VERSION_MIN && v <= JOURNAL_VERSION ? (int)v : 0;
}

/*
 * A free name "<base>.<time>" (".<time>.<n>" if taken) in the state
 * directory; never replaces an earlier casualty.
 */
static void
journal_aside_name(struct journal *j, const char *base, char *name,
    size_t namesz)
{
	struct stat st;
	int i;

	for (i = 0; i < 100; i++) {
		if (i == 0)
			snprintf(name, namesz, "%s.%lld", base,
			    (long long)time(NULL));
		else
			snprintf(name, namesz, "%s.%lld.%d", base,
			    (long long)time(NULL), i);
		if (fstatat(j->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == -1)
			break;
	}
}

/* Move a journal with a bad header aside; never refuse to start. */
static int
journal_set_aside(struct journal *j, char *err, size_t errlen)
{
	char name[64];

	journal_aside_name(j, JOURNAL_FILE ".corrupt", name, sizeof(name));
	if (renameat(j->dirfd, JOURNAL_FILE, j->dirfd, name) == -1) {
		snprintf(err, errlen, "rename %s/%s to %s: %s", j->dir,
		    JOURNAL_FILE, name, strerror(errno));
		return -1;
	}
	log_errx("journal: %s/%s has a bad header: moved to %s/%s, starting "
	    "with an empty journal; updates in it will not be replayed",
	    j->dir, JOURNAL_FILE, j->dir, name);
	return 0;
}

/*
 * Keep the damaged file as journal.damaged.<time> before it is rewritten:
 * a second name for it (the rewrite replaces "journal" only), or a copy
 * of p[0..size) where links are not possible.
 */
static int
journal_keep_damaged(struct journal *j, const uint8_t *p, uint64_t size,
    char *name, size_t namesz)
{
	int fd, saved;

	journal_aside_name(j, JOURNAL_DAMAGED, name, namesz);
	if (linkat(j->dirfd, JOURNAL_FILE, j->dirfd, name, 0) == 0)
		return 0;
	fd = openat(j->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC |
	    O_NOFOLLOW, 0600);
	if (fd == -1 || fileio_write_all(fd, p, size, 0) == -1 ||
	    fsync(fd) == -1) {
		saved = errno;
		log_err("journal: keep a copy of the damaged %s/%s as %s",
		    j->dir, JOURNAL_FILE, name);
		if (fd != -1) {
			close(fd);
			unlinkat(j->dirfd, name, 0);
		}
		errno = saved;
		return -1;
	}
	close(fd);
	return 0;
}

/* After damage in the middle: say what was kept, keep the file aside. */
static int
journal_damaged(struct journal *j, const uint8_t *p, uint64_t size,
    const struct jdamage *dm, char *err, size_t errlen)
{
	char name[64];

	if (journal_keep_damaged(j, p, size, name, sizeof(name)) == -1) {
		snprintf(err, errlen, "%s/%s is damaged and no copy of it can "
		    "be kept (see above): not rewriting it", j->dir,
		    JOURNAL_FILE);
		return -1;
	}
	log_errx("journal: %s/%s: %d damaged region(s), %" PRIu64 " bytes "
	    "skipped, %" PRIu64 " good records after them kept; the file "
	    "is kept as %s/%s and rewritten; an update whose record was in "
	    "the damage is lost if Telegram had been told it was stored",
	    j->dir, JOURNAL_FILE, dm->regions, dm->skipped, dm->kept, j->dir,
	    name);
	j->rewrite = 1;
	return 0;
}

/* The state directory says a journal was kept here before. */
static const char *
journal_used_before(const struct journal *j)
{
	static const char *const signs[] = { JOURNAL_LOCK, DEADLETTER_FILE,
		NULL };
	struct stat st;
	int i;

	for (i = 0; signs[i] != NULL; i++)
		if (fstatat(j->dirfd, signs[i], &st, AT_SYMLINK_NOFOLLOW) == 0)
			return signs[i];
	return NULL;
}

/* What the mapped file says: 0, 1 (set aside: none), -1 with err. */
static int
journal_read(struct journal *j, const uint8_t *p, uint64_t size, char *err,
    size_t errlen)
{
	struct jdamage dm;
	uint64_t good;

	memset(&dm, 0, sizeof(dm));
	if ((j->version = journal_header_version(p, size)) == 0)
		return journal_set_aside(j, err, errlen) == -1 ? -1 : 1;
	good = journal_parse(j, p, size, &dm);
	j->size = good;
	j->alloc = size;
	if (dm.regions > 0)
		return journal_damaged(j, p, size, &dm, err, errlen);
	if (good < size && !journal_zeros(p + good, size - good)) {
		char what[128];

		journal_damage_what(p, size, good, what, sizeof(what));
		j->alloc = good;
		log_warnx("journal: %s/%s: damaged or torn record at offset %"
		    PRIu64 ", no valid record after it: discarding %" PRIu64
		    " bytes to the end; the record: %s", j->dir, JOURNAL_FILE,
		    good, size - good, what);
		if (ftruncate(j->fd, (off_t)good) == -1) {
			snprintf(err, errlen, "truncate %s/%s: %s", j->dir,
			    JOURNAL_FILE, strerror(errno));
			return -1;
		}
	}
	if (j->version < JOURNAL_VERSION) {
		log_notice("journal: %s/%s is in format %d: rewriting it in "
		    "format %d", j->dir, JOURNAL_FILE, j->version,
		    JOURNAL_VERSION);
		j->rewrite = 1;
	}
	return 0;
}

/* Load the existing journal; 1 if there is none (or it was set aside). */
static int
journal_load(struct journal *j, char *err, size_t errlen)
{
	struct stat st;
	uint8_t *p;
	int rc;

	j->fd = openat(j->dirfd, JOURNAL_FILE, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (j->fd == -1 && errno == ENOENT) {
		if (j->used_before != NULL)
			log_warnx("journal: %s/%s is missing, but %s shows the "
			    "directory was used before: starting with an empty "
			    "journal; updates the last run had not finished "
			    "are lost unless Telegram sends them again",
			    j->dir, JOURNAL_FILE, j->used_before);
		return 1;
	}
	if (j->fd == -1 || fstat(j->fd, &st) == -1) {
		snprintf(err, errlen, "open %s/%s: %s%s", j->dir, JOURNAL_FILE,
		    strerror(errno), errno == ELOOP ? " (a symbolic link: "
		    "refused)" : "");
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s/%s is not a regular file", j->dir,
		    JOURNAL_FILE);
		return -1;
	}
	if (st.st_size == 0) {
		/* the journal is created whole (renamed into place): damage */
		log_warnx("journal: %s/%s is empty (0 bytes): starting with an "
		    "empty journal; updates the last run had not finished are "
		    "lost unless Telegram sends them again", j->dir,
		    JOURNAL_FILE);
		close(j->fd);
		j->fd = -1;
		return 1;
	}
	p = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, j->fd, 0);
	if (p == MAP_FAILED) {
		snprintf(err, errlen, "mmap %s/%s: %s", j->dir, JOURNAL_FILE,
		    strerror(errno));
		return -1;
	}
	rc = journal_read(j, p, (uint64_t)st.st_size, err, errlen);
	munmap(p, st.st_size);
	if (rc == 1) {
		close(j->fd);
		j->fd = -1;
	}
	return rc;
}

static int
journal_lock(struct journal *j, char *err, size_t errlen)
{
	char buf[32];
	ssize_t n;

	j->lockfd = openat(j->dirfd, JOURNAL_LOCK,
	    O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (j->lockfd == -1) {
		snprintf(err, errlen, "open %s/%s: %s", j->dir, JOURNAL_LOCK,
		    strerror(errno));
		return -1;
	}
	if (flock(j->lockfd, LOCK_EX | LOCK_NB) == -1) {
		if (errno != EWOULDBLOCK) {
			snprintf(err, errlen, "lock %s/%s: %s", j->dir,
			    JOURNAL_LOCK, strerror(errno));
			return -1;
		}
		n = pread(j->lockfd, buf, sizeof(buf) - 1, 0);
		buf[n > 0 ? n : 0] = '\0';
		buf[strcspn(buf, "\n")] = '\0';
		snprintf(err, errlen, "state_dir %s is in use by another "
		    "tgrunnerd (pid %s)", j->dir, buf[0] ? buf : "unknown");
		return -1;
	}
	/* the pid is only informative: the flock is the lock */
	n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (ftruncate(j->lockfd, 0) == -1 || pwrite(j->lockfd, buf, n, 0) != n)
		log_warn("journal: write %s/%s", j->dir, JOURNAL_LOCK);
	return 0;
}

/*
 * Another user who can write to the state directory can replace the
 * journal (or plant a link in it): refuse such a directory outright.
 */
static int
journal_check_dir(const struct journal *j, int fd, char *err, size_t errlen)
{
	struct stat st;

	if (fstat(fd, &st) == -1) {
		snprintf(err, errlen, "stat %s: %s", j->dir, strerror(errno));
		return -1;
	}
	if (st.st_uid != geteuid()) {
		snprintf(err, errlen, "state_dir %s is owned by uid %lu, not by "
		    "the user tgrunnerd runs as (uid %lu): refusing it",
		    j->dir, (unsigned long)st.st_uid, (unsigned long)geteuid());
		return -1;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(err, errlen, "state_dir %s has mode %04o: it is %s "
		    "writable, so others could replace the journal; refusing "
		    "it (chmod go-w %s)", j->dir,
		    (unsigned)(st.st_mode & 07777), (st.st_mode & S_IWOTH) ?
		    "world" : "group", j->dir);
		return -1;
	}
	return 0;
}

static int
journal_open_disk(struct journal *j, char *err, size_t errlen)
{
	struct statfs sfs;
	int rc;

	if (mkdir(j->dir, 0700) == -1 && errno != EEXIST) {
		snprintf(err, errlen, "mkdir %s: %s", j->dir, strerror(errno));
		return -1;
	}
	j->dirfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (j->dirfd == -1) {
		snprintf(err, errlen, "open %s: %s", j->dir, strerror(errno));
		return -1;
	}
	if (journal_check_dir(j, j->dirfd, err, errlen) == -1)
		return -1;
	/* a missing journal is told from a new one by what else is there */
	j->used_before = journal_used_before(j);
	if (journal_lock(j, err, errlen) == -1)
		return -1;
	j->ahead = fstatfs(j->dirfd, &sfs) == 0 &&
	    (sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC) ? 0 :
	    JOURNAL_PREALLOC;
	/* a compaction killed before its rename */
	if (unlinkat(j->dirfd, JOURNAL_TMP, 0) == -1 && errno != ENOENT)
		log_warn("journal: unlink %s/%s", j->dir, JOURNAL_TMP);
	if ((rc = journal_load(j, err, errlen)) == -1)
		return -1;
	j->version = JOURNAL_VERSION;
	if ((rc == 1 || j->rewrite) && journal_rewrite(j) == -1) {
		snprintf(err, errlen, "%s %s/%s: %s", rc == 1 ? "create" :
		    "rewrite", j->dir, JOURNAL_FILE, strerror(errno));
		return -1;
	}
	j->rewrite = 0;
	journal_maybe_compact(j);
	return 0;
}

/* FSYNC_OFF keeps nothing here, but dead letters are still written. */
static int
journal_check_off(struct journal *j, char *err, size_t errlen)
{
	int fd, rc;

	if ((fd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return 0;	/* created when the first dead letter needs it */
	rc = journal_check_dir(j, fd, err, errlen);
	close(fd);
	return rc;
}

/* The caller owns the result and frees it with journal_close(). */
struct journal *
journal_open(const char *dir, enum fsync_mode mode, char *err, size_t errlen)
{
	struct journal *j;

	j = xcalloc(1, sizeof(*j));
	j->dir = xstrdup(dir);
	j->mode = mode;
	j->dirfd = j->fd = j->lockfd = -1;
	j->version = JOURNAL_VERSION;
	j->next_seq = 1;
	TAILQ_INIT(&j->calls);
	if ((mode != FSYNC_OFF && journal_open_disk(j, err, errlen) == -1) ||
	    (mode == FSYNC_OFF && journal_check_off(j, err, errlen) == -1)) {
		journal_close(j);
		return NULL;
	}
	/* without the thread, batches are synced on the loop: slower, safe */
	if (mode == FSYNC_BATCH && jsyncer_start(j) == -1)
		log_warn("journal: no sync thread, syncing on the event loop");
	if (j->npending > 0)
		log_info("journal: %zu unfinished updates in %s", j->npending,
		    j->dir);
	if (j->ncalls > 0)
		log_info("journal: %zu calls owed in %s", j->ncalls, j->dir);
	return j;
}

void
journal_close(struct journal *j)
{
	struct jentry *e, *tmp;
	struct jcall *c;

	if (j == NULL)
		return;
	jsyncer_stop(j);
	if (journal_flush(j) == -1)
		log_errx("journal: %s: done marks could not be written",
		    j->dir);
	if (j->stale && journal_rewrite(j) == -1)
		log_errx("journal: %s: done marks were lost to write errors; "
		    "the next start runs those updates again", j->dir);
	HASH_ITER(hh, j->entries, e, tmp)
		journal_forget(j, e);
	while ((c = TAILQ_FIRST(&j->calls)) != NULL)
		jcall_forget(j, c);
	if (j->fd != -1)
		close(j->fd);
	if (j->lockfd != -1)
		close(j->lockfd);
	if (j->dirfd != -1)
		close(j->dirfd);
	free(j->dones.p);
	free(j->dir);
	free(j);
}

static int
jentry_cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Record the new attempt of every update found at open, then visit them
 * in id order.  Ids, not pointers, are collected: the callback may mark
 * updates done (e.g. dead-letter those past max_attempts).
 */
int
journal_replay(struct journal *j, void (*cb)(void *, int64_t, const char *,
    size_t, int), void *arg)
{
	struct jbuf b = { NULL, 0, 0 };
	struct jentry *e, *tmp;
	int64_t *ids;
	size_t i, n = 0;
	int rc = 0;

	ids = xcalloc(j->npending + 1, sizeof(*ids));
	HASH_ITER(hh, j->entries, e, tmp) {
		if (!e->replay)
			continue;
		e->replay = 0;
		if (e->attempt < INT_MAX - 1)
			journal_set_attempt(j, e, e->attempt + 1);
		if (j->mode != FSYNC_OFF)
			jbuf_replay(&b, e->id, e->attempt);
		ids[n++] = e->id;
	}
	if (b.len > 0 && journal_write(j, &b, 1, "replay") == -1)
		rc = -1;	/* deliver anyway; only the count is at risk */
	free(b.p);
	qsort(ids, n, sizeof(*ids), jentry_cmp);
	for (i = 0; i < n; i++) {
		HASH_FIND(hh, j->entries, &ids[i], sizeof(ids[i]), e);
		if (e != NULL)
			cb(arg, e->id, e->text->s, e->text->len, e->attempt);
	}
	free(ids);
	return rc;
}

/* Was the last batch appended too recently for Telegram to restart ids? */
static int
journal_recent(const struct journal *j, time_t now)
{
	/* never subtract the stored time: a damaged file holds anything */
	return j->last_append > (int64_t)now - JOURNAL_ID_RESTART;
}

static int
journal_is_dup(const struct journal *j, int64_t id, time_t now)
{
	struct jentry *e;

	HASH_FIND(hh, j->entries, &id, sizeof(id), e);
	if (e != NULL)
		return 1;
	return j->have_mark && id <= j->hw && journal_recent(j, now);
}

static int
jupdate_cmp(const void *a, const void *b)
{
	int64_t x = ((const struct jupdate *)a)->id;
	int64_t y = ((const struct jupdate *)b)->id;

	return x < y ? -1 : x > y;
}

void
journal_filter(struct journal *j, struct jupdate *u, size_t *n, time_t now)
{
	size_t i, k = 0;

	/* a broken API's order (poller.c says so): ids order updates */
	for (i = 1; i < *n; i++)
		if (u[i].id < u[i - 1].id) {
			qsort(u, *n, sizeof(*u), jupdate_cmp);
			break;
		}
	for (i = 0; i < *n; i++) {
		if (journal_is_dup(j, u[i].id, now) ||
		    (k > 0 && u[i].id == u[k - 1].id)) {
			log_debug("journal: update=%" PRId64 ": dropping a "
			    "duplicate", u[i].id);
			continue;
		}
		u[k++] = u[i];
	}
	*n = k;
}

/*
 * The high-water mark follows the latest batch, so that after Telegram
 * restarts its ids (lower ones) the next offset follows the new sequence.
 */
static int64_t
journal_batch_hw(const struct journal *j, const struct jupdate *u, size_t n,
    time_t now)
{
	int64_t max = u[0].id;
	size_t i;

	for (i = 1; i < n; i++)
		if (u[i].id > max)
			max = u[i].id;
	if (!j->have_mark || max > j->hw || !journal_recent(j, now))
		return max;
	return j->hw;
}

/*
 * Write a batch, preceded by the done marks waiting for the next write.
 * sync: fdatasync before returning.
 */
static int
journal_write_batch(struct journal *j, const struct jupdate *u, size_t n,
    time_t now, int64_t hw, int sync)
{
	struct jbuf b = { NULL, 0, 0 };
	size_t i;
	int had_dones = j->dones.len > 0;

	for (i = 0; i < n; i++) {
		if (u[i].len > JOURNAL_REC_MAX - 9) {
			log_errx("%s: update=%" PRId64 " bytes=%zu: too large",
			    __func__, u[i].id, u[i].len);
			errno = EFBIG;
			return -1;
		}
	}
	/* one write: the waiting done marks ride along */
	b = j->dones;
	j->dones = (struct jbuf){ NULL, 0, 0 };
	for (i = 0; i < n; i++)
		jbuf_update(&b, u[i].id, u[i].json, u[i].len);
	/* last: if torn off, the updates before it are still known */
	jbuf_mark(&b, hw, (int64_t)now);
	if (journal_write(j, &b, sync, "append") == -1) {
		if (had_dones)
			j->stale = 1;
		free(b.p);
		return -1;
	}
	/* keep the buffer for the next done marks, unless a big batch grew it */
	b.len = 0;
	if (b.cap > JOURNAL_FLUSH) {
		free(b.p);
		b = (struct jbuf){ NULL, 0, 0 };
	}
	j->dones = b;
	return 0;
}

static void
journal_accept(struct journal *j, const struct jupdate *u, size_t n,
    time_t now, int64_t hw)
{
	size_t i;

	for (i = 0; i < n; i++)
		journal_remember(j, u[i].id, u[i].json, u[i].len);
	j->have_mark = 1;
	j->hw = hw;
	j->last_append = now;
}

int
journal_append(struct journal *j, const struct jupdate *u, size_t n, time_t now)
{
	int64_t hw;

	if (n == 0)
		return 0;
	hw = journal_batch_hw(j, u, n, now);
	if (j->mode != FSYNC_OFF &&
	    journal_write_batch(j, u, n, now, hw, 1) == -1)
		return -1;
	journal_accept(j, u, n, now, hw);
	journal_maybe_compact(j);
	return 0;
}

int
journal_append_async(struct journal *j, const struct jupdate *u, size_t n,
    time_t now)
{
	int64_t hw;

	if (n == 0)
		return 0;
	if (j->mode != FSYNC_BATCH || j->syncer == NULL || j->syncing)
		return journal_append(j, u, n, now);
	hw = journal_batch_hw(j, u, n, now);
	if (journal_write_batch(j, u, n, now, hw, 0) == -1)
		return -1;
	journal_accept(j, u, n, now, hw);
	jsyncer_ask(j);
	return 1;
}

int
journal_sync_fd(const struct journal *j)
{
	return j->syncer != NULL ? j->syncer->pipe[0] : -1;
}

int
journal_sync_finish(struct journal *j)
{
	char c[16];

	while (read(j->syncer->pipe[0], c, sizeof(c)) > 0)
		;
	if (!j->syncing)
		return 0;	/* a spurious wake-up */
	j->syncing = 0;
	if (jsync_outcome(j) == -1)
		return journal_make_durable(j);
	journal_maybe_compact(j);
	return 0;
}

int
journal_make_durable(struct journal *j)
{
	if (j->mode == FSYNC_OFF)
		return 0;
	/*
	 * After a failed fdatasync the kernel may have dropped the dirty
	 * pages and the next fdatasync can report success anyway: trust only
	 * a new file written from memory and synced.
	 */
	if (journal_rewrite(j) == -1) {
		j->stale = 1;
		return -1;
	}
	j->stale = 0;
	j->compactions++;
	log_notice("journal: %s rewritten from memory after a failed sync",
	    j->dir);
	return 0;
}

int
journal_done(struct journal *j, int64_t id)
{
	struct jentry *e;

	HASH_FIND(hh, j->entries, &id, sizeof(id), e);
	if (e == NULL)
		return 0;
	/*
	 * Forgotten even if the record can't be written: the update is
	 * finished; at worst a crash replays it (at-least-once).
	 */
	journal_forget(j, e);
	if (j->mode != FSYNC_OFF)
		jbuf_done(&j->dones, id);
	return 0;
}

void
journal_done_calls(struct journal *j, int64_t id, const struct jcall_in *in,
    size_t n, time_t now, uint64_t *first)
{
	struct jcall *c, *head = NULL;
	struct jentry *e;
	size_t i, from;
	char *text;

	*first = j->next_seq;
	if (n == 0) {
		journal_done(j, id);
		return;
	}
	HASH_FIND(hh, j->entries, &id, sizeof(id), e);
	if (e != NULL)
		journal_forget(j, e);
	for (i = from = 0; i < n; i++) {
		text = in[i].params != NULL ? json_dumps(in[i].params,
		    JSON_COMPACT) : xstrdup("{}");
		if (text == NULL)
			fatalx(EXIT_NOMEM, "%s: json_dumps", __func__);
		c = jcall_add(j, j->next_seq, id, (int64_t)now, in[i].key,
		    in[i].method, text, strlen(text));
		if (i == from)
			head = c;
		/* more than a record may hold: the rest in the next one */
		if (j->mode != FSYNC_OFF && (i + 1 == n ||
		    i + 1 - from == JOURNAL_CALLS_MAX)) {
			jbuf_done_calls(&j->dones, id, head, i + 1 - from);
			from = i + 1;
		}
	}
}

void
journal_call_done(struct journal *j, uint64_t seq)
{
	struct jcall *c;

	if ((c = jcall_find(j, seq)) == NULL)
		return;
	jcall_forget(j, c);
	if (j->mode != FSYNC_OFF)
		jbuf_call_done(&j->dones, seq);
}

size_t
journal_calls_replay(struct journal *j, void (*cb)(void *,
    const struct jcall_out *), void *arg)
{
	struct jcall_out out;
	struct jcall *c;
	uint64_t *seqs;
	size_t i, n = 0;

	/* seqs, not pointers: the callback may finish a call at once */
	seqs = xcalloc(j->ncalls + 1, sizeof(*seqs));
	TAILQ_FOREACH(c, &j->calls, entry)
		if (c->replay) {
			c->replay = 0;
			seqs[n++] = c->seq;
		}
	for (i = 0; i < n; i++) {
		if ((c = jcall_find(j, seqs[i])) == NULL)
			continue;
		out.seq = c->seq;
		out.update_id = c->update_id;
		out.key = c->key;
		out.method = c->method;
		out.params = c->params;
		out.len = c->plen;
		cb(arg, &out);
	}
	free(seqs);
	return n;
}

size_t
journal_calls_owed(const struct journal *j)
{
	return j->ncalls;
}

int64_t
journal_calls_oldest(const struct journal *j)
{
	const struct jcall *c = TAILQ_FIRST(&j->calls);

	return c != NULL ? c->t : 0;
}

int
journal_flush(struct journal *j)
{
	int rc;

	if (j->dones.len == 0)
		return 0;
	rc = journal_write(j, &j->dones, j->mode == FSYNC_ALWAYS, "done");
	j->dones.len = 0;
	if (rc == -1)
		j->stale = 1;
	journal_maybe_compact(j);
	return rc;
}

int
journal_dirty(const struct journal *j)
{
	return j->dones.len > 0;
}

struct rcstr *
journal_text(const struct journal *j, int64_t id)
{
	struct jentry *e;

	HASH_FIND(hh, j->entries, &id, sizeof(id), e);
	return e != NULL ? e->text : NULL;
}

int64_t
journal_next_offset(const struct journal *j)
{
	if (!j->have_mark)
		return 0;
	return j->hw < INT64_MAX ? j->hw + 1 : INT64_MAX;
}

size_t
journal_pending(const struct journal *j)
{
	return j->npending;
}

uint64_t
journal_bytes(const struct journal *j)
{
	return j->mode == FSYNC_OFF ? 0 : j->size;
}

uint64_t
journal_compactions(const struct journal *j)
{
	return j->compactions;
}

int
journal_on_disk(const struct journal *j)
{
	return j->mode != FSYNC_OFF;
}

json_t *
journal_status(const struct journal *j)
{
	return json_pack("{s:I, s:I, s:I, s:b}",
	    "pending", (json_int_t)j->npending,
	    "bytes", (json_int_t)journal_bytes(j),
	    "compactions", (json_int_t)j->compactions,
	    "fsync", j->mode != FSYNC_OFF);
}

void
journal_metrics(const struct journal *j, struct evbuffer *out)
{
	metrics_gauge(out, "tgrunner_journal_bytes", "Size of the journal file.",
	    journal_bytes(j));
	metrics_gauge(out, "tgrunner_journal_pending",
	    "Unfinished updates in the journal.", j->npending);
}
