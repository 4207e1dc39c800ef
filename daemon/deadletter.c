/*
 * Dead letters (deadletter.h): append-only JSON lines, fsynced one by one;
 * failed appends wait in memory, in order, and are tried again on a timer.
 * The file is only ever rewritten whole (temporary file, fsync, rename),
 * when an operator takes letters out of it.
 */
#include "config.h"

#include <sys/queue.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "deadletter.h"
#include "fileio.h"
#include "log.h"
#include "rcstr.h"
#include "timeutil.h"
#include "xmalloc.h"

#define DL_RETRY_MIN_MS		1000
#define DL_RETRY_MAX_MS		60000

/* One dead letter, before it reaches the file. */
struct letter {
	int64_t			 id;
	int			 attempts;
	char			*reason;
	time_t			 t;		/* when the update was given up on */
	struct rcstr		*text;		/* the update's JSON */
	TAILQ_ENTRY(letter)	 entry;
};

struct deadletter {
	struct event_base	*base;
	char			*dir;
	char			*path;
	deadletter_written_fn	 written;
	void			*arg;
	TAILQ_HEAD(, letter)	 pending;	/* oldest first */
	size_t			 npending;
	struct event		*timer;
	int64_t			 delay_ms;	/* the next retry's */
	int			 failures;	/* writes failed in a row */
};

static void	dl_retry(evutil_socket_t, short, void *);

struct deadletter *
deadletter_new(struct event_base *base, const char *state_dir,
    deadletter_written_fn written, void *arg)
{
	struct deadletter *dl = xcalloc(1, sizeof(*dl));

	dl->base = base;
	dl->dir = xstrdup(state_dir);
	xasprintf(&dl->path, "%s/%s", state_dir, DEADLETTER_FILE);
	dl->written = written;
	dl->arg = arg;
	TAILQ_INIT(&dl->pending);
	dl->timer = evtimer_new(base, dl_retry, dl);
	if (dl->timer == NULL)
		fatalx(EXIT_NOMEM, "%s: evtimer_new", __func__);
	return dl;
}

static void
letter_free(struct letter *l)
{
	rcstr_unref(l->text);
	free(l->reason);
	free(l);
}

void
deadletter_free(struct deadletter *dl)
{
	struct letter *l;

	if (dl == NULL)
		return;
	if (dl->npending > 0)
		log_warnx("dead letters: %zu not written; their updates stay in "
		    "the journal and are replayed at the next start",
		    dl->npending);
	while ((l = TAILQ_FIRST(&dl->pending)) != NULL) {
		TAILQ_REMOVE(&dl->pending, l, entry);
		letter_free(l);
	}
	event_free(dl->timer);
	free(dl->path);
	free(dl->dir);
	free(dl);
}

/* A JSON string of s; bytes that are not UTF-8 (a cut reason) become '?'. */
static json_t *
dl_string(const char *s)
{
	json_t	*j;
	char	*copy;
	size_t	 i;

	if ((j = json_string(s)) != NULL)
		return j;
	copy = xstrdup(s);
	for (i = 0; copy[i] != '\0'; i++)
		if ((unsigned char)copy[i] >= 0x80)
			copy[i] = '?';
	j = json_string(copy);
	free(copy);
	return j;
}

/* The letter as one line with its newline; the caller frees it. */
static char *
dl_line(const struct letter *l, size_t *len)
{
	json_t	*o, *u;
	char	*text, *line;

	/* an update that does not parse is still recorded, without its body */
	u = json_loadb(l->text->s, l->text->len, 0, NULL);
	o = json_pack("{s:I, s:i, s:o, s:I, s:o*}", "update_id",
	    (json_int_t)l->id, "attempts", l->attempts, "reason",
	    dl_string(l->reason), "t", (json_int_t)l->t, "update", u);
	if (o == NULL || (text = json_dumps(o, JSON_COMPACT)) == NULL)
		fatalx(EXIT_NOMEM, "%s: cannot format update=%lld", __func__,
		    (long long)l->id);
	json_decref(o);
	*len = (size_t)xasprintf(&line, "%s\n", text);
	free(text);
	return line;
}

/*
 * Append and fsync one letter.  A failed write leaves no partial line: the
 * file is cut back to its old size, so the next append starts a fresh line.
 */
static int
dl_append(struct deadletter *dl, const struct letter *l)
{
	struct stat	 st;
	size_t		 len;
	char		*line;
	int		 fd, saved;

	/* with journal_fsync = off nothing else created it */
	if (mkdir(dl->dir, 0700) == -1 && errno != EEXIST)
		goto fail;
	if ((fd = open(dl->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC |
	    O_NOFOLLOW, 0600)) == -1)
		goto fail;
	line = dl_line(l, &len);
	if (fstat(fd, &st) == -1 || fileio_write_all(fd, line, len, -1) == -1 ||
	    fsync(fd) == -1) {
		saved = errno;
		if (ftruncate(fd, st.st_size) == 0)
			(void)fsync(fd);
		close(fd);
		free(line);
		errno = saved;
		goto fail;
	}
	free(line);
	if (close(fd) == -1)
		goto fail;
	return 0;
fail:
	log_err("update=%lld: cannot write its dead letter to %s",
	    (long long)l->id, dl->path);
	return -1;
}

int
deadletter_write(struct deadletter *dl, int64_t id, int attempts,
    const char *reason, const struct rcstr *text)
{
	struct letter l = { .id = id, .attempts = attempts, .t = time(NULL) };

	l.reason = (char *)reason;
	l.text = (struct rcstr *)text;
	return dl_append(dl, &l);
}

static void
dl_arm(struct deadletter *dl)
{
	struct timeval tv = tv_ms(dl->delay_ms);

	evtimer_add(dl->timer, &tv);
	dl->delay_ms *= 2;
	if (dl->delay_ms > DL_RETRY_MAX_MS)
		dl->delay_ms = DL_RETRY_MAX_MS;
}

/* Write the waiting letters in order; stop at the first failure. */
static void
dl_retry(evutil_socket_t fd, short ev, void *arg)
{
	struct deadletter	*dl = arg;
	struct letter		*l;

	while ((l = TAILQ_FIRST(&dl->pending)) != NULL) {
		if (dl_append(dl, l) == -1) {
			dl->failures++;
			log_warnx("dead letters: %zu waiting; trying again in "
			    "%lld ms", dl->npending, (long long)dl->delay_ms);
			dl_arm(dl);
			return;
		}
		TAILQ_REMOVE(&dl->pending, l, entry);
		dl->npending--;
		log_notice("update=%lld attempts=%d: dead letter written to %s "
		    "after %d failed write(s)", (long long)l->id, l->attempts,
		    DEADLETTER_FILE, dl->failures);
		dl->written(dl->arg, l->id);
		letter_free(l);
	}
	dl->failures = 0;
}

int
deadletter_add(struct deadletter *dl, int64_t id, int attempts,
    const char *reason, struct rcstr *text)
{
	struct letter *l;

	if (dl->npending == 0) {
		if (deadletter_write(dl, id, attempts, reason, text) == 0) {
			log_errx("update=%lld attempts=%d: giving up: %s; "
			    "written to %s", (long long)id, attempts, reason,
			    DEADLETTER_FILE);
			return 0;
		}
		dl->failures = 1;
		dl->delay_ms = DL_RETRY_MIN_MS;
	}
	if (dl->npending >= DEADLETTER_PENDING_MAX) {
		log_errx("update=%lld attempts=%d: giving up: %s; %zu dead "
		    "letters already wait for the disk: it stays unfinished "
		    "in the journal until the next start", (long long)id,
		    attempts, reason, dl->npending);
		return -1;
	}
	l = xcalloc(1, sizeof(*l));
	l->id = id;
	l->attempts = attempts;
	l->reason = xstrdup(reason);
	l->t = time(NULL);
	l->text = rcstr_ref(text);
	TAILQ_INSERT_TAIL(&dl->pending, l, entry);
	dl->npending++;
	log_errx("update=%lld attempts=%d: giving up: %s; its dead letter "
	    "waits to be written (%zu waiting)", (long long)id, attempts,
	    reason, dl->npending);
	if (!evtimer_pending(dl->timer, NULL))
		dl_arm(dl);
	return 1;
}

size_t
deadletter_pending(const struct deadletter *dl)
{
	return dl->npending;
}

/* Every letter in the file, as it has them (malformed lines are skipped). */
static json_t *
dl_read(struct deadletter *dl)
{
	json_t	*all = json_array(), *o;
	char	*line = NULL;
	size_t	 cap = 0;
	FILE	*fp;
	int	 fd;

	if ((fd = open(dl->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) == -1 ||
	    (fp = fdopen(fd, "r")) == NULL) {
		if (errno != ENOENT)
			log_warn("dead letters: %s", dl->path);
		if (fd != -1)
			close(fd);
		return all;
	}
	while (getline(&line, &cap, fp) != -1)
		if ((o = json_loads(line, 0, NULL)) != NULL &&
		    json_is_integer(json_object_get(o, "update_id")))
			json_array_append_new(all, o);
		else
			json_decref(o);
	free(line);
	fclose(fp);
	return all;
}

/* Replace the file by the letters in keep: temporary file, fsync, rename. */
static int
dl_rewrite(struct deadletter *dl, json_t *keep)
{
	char	*tmp, *text;
	json_t	*o;
	size_t	 i;
	int	 fd, rc = 0;

	xasprintf(&tmp, "%s.tmp", dl->path);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC |
	    O_NOFOLLOW, 0600)) == -1) {
		rc = -1;
		goto out;
	}
	json_array_foreach(keep, i, o) {
		if ((text = json_dumps(o, JSON_COMPACT)) == NULL)
			fatalx(EXIT_NOMEM, "%s: json_dumps", __func__);
		if (fileio_write_all(fd, text, strlen(text), -1) == -1 ||
		    fileio_write_all(fd, "\n", 1, -1) == -1)
			rc = -1;
		free(text);
		if (rc == -1)
			break;
	}
	if (rc == -1 || fsync(fd) == -1) {
		close(fd);
		rc = -1;
	} else if (close(fd) == -1 || rename(tmp, dl->path) == -1)
		rc = -1;
out:
	if (rc == -1) {
		log_err("dead letters: cannot rewrite %s; the letters queued "
		    "again stay in it too", dl->path);
		unlink(tmp);
	}
	free(tmp);
	return rc;
}

json_t *
deadletter_list(struct deadletter *dl)
{
	json_t *all = dl_read(dl), *o;
	size_t i;

	json_array_foreach(all, i, o)
		json_object_del(o, "update");	/* the list stays small */
	return json_pack("{s:b, s:o}", "ok", 1, "dead_letters", all);
}

json_t *
deadletter_retry(struct deadletter *dl, const int64_t *want,
    deadletter_requeue_fn requeue, void *arg)
{
	json_t		*all = dl_read(dl), *keep = json_array(), *o, *r;
	char		*text;
	size_t		 i, n = 0, found = 0;
	int64_t		 id;

	json_array_foreach(all, i, o) {
		id = json_integer_value(json_object_get(o, "update_id"));
		if (want != NULL && id != *want) {
			json_array_append(keep, o);
			continue;
		}
		found++;
		text = json_dumps(json_object_get(o, "update"), JSON_COMPACT);
		if (text == NULL || requeue(arg, id, text, strlen(text)) == -1) {
			json_array_append(keep, o);
			free(text);
			continue;
		}
		log_notice("update=%lld: dead letter queued again",
		    (long long)id);
		free(text);
		n++;
	}
	if (n > 0)
		dl_rewrite(dl, keep);
	json_decref(all);
	json_decref(keep);
	if (want != NULL && found == 0)
		r = json_pack("{s:b, s:s, s:I}", "ok", 0, "error", "",
		    "requeued", (json_int_t)0);
	else if (n < found)
		r = json_pack("{s:b, s:s, s:I}", "ok", 0, "error", "",
		    "requeued", (json_int_t)n);
	else
		return json_pack("{s:b, s:I}", "ok", 1, "requeued",
		    (json_int_t)n);
	if (found == 0)
		json_object_set_new(r, "error", json_sprintf("no dead letter "
		    "with update_id %lld", (long long)*want));
	else
		json_object_set_new(r, "error", json_sprintf("%zu of %zu dead "
		    "letter(s) could not be queued again (the log says why); "
		    "they stay dead letters", found - n, found));
	return r;
}
