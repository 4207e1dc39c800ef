/*
 * Fuzz the journal loader, two ways, chosen by the input.
 *
 * An input that starts with "TGRJ" is written as the journal file of a
 * fresh state directory as it is, which is then opened, replayed,
 * appended to and closed: a damaged journal must never crash the daemon
 * or leak.
 *
 * Any other input drives a model: it chooses a list of records (updates,
 * done marks, replays, marks, done marks with calls, answered calls),
 * which this file writes as proto/JOURNAL.md says, with its own writer,
 * and then a damage (bits flipped, bytes overwritten or zeroed in a range,
 * or the file cut).  The oracle: what the loader keeps is exactly what the
 * records the damage did not touch say, applied in order: no intact record
 * is lost, not even one that follows the damage, and nothing is made up.
 * The high-water mark is the last intact one before the first damage (or
 * the last intact one).  A damage that happens to form a valid record
 * (the residual risk JOURNAL.md states) is recognised and not judged.
 */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <zlib.h>

#include "journal.h"
#include "log.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define MODEL_RECS	40
#define MODEL_IDS	24
#define MODEL_CALLS	(MODEL_RECS * 3)
#define FILE_MAX	(64 * 1024)

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
fuzz_write_journal(const uint8_t *data, size_t size)
{
	char path[300];
	int fd;

	snprintf(path, sizeof(path), "%s/journal", fuzz_dir);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) == -1 ||
	    write(fd, data, size) != (ssize_t)size)
		abort();
	close(fd);
}

/* Files in the state directory whose name starts with prefix. */
static int
fuzz_count(const char *prefix)
{
	struct dirent *d;
	DIR *dp;
	int n = 0;

	if ((dp = opendir(fuzz_dir)) == NULL)
		abort();
	while ((d = readdir(dp)) != NULL)
		if (strncmp(d->d_name, prefix, strlen(prefix)) == 0)
			n++;
	closedir(dp);
	return n;
}

static struct journal *
fuzz_open(void)
{
	struct journal *j;
	char err[256];

	if ((j = journal_open(fuzz_dir, FSYNC_BATCH, err, sizeof(err))) == NULL)
		abort();		/* a bad file must never refuse a start */
	return j;
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

/* The raw mode: any bytes as the journal file. */
static void
fuzz_raw(const uint8_t *data, size_t size)
{
	static const char json[] = "{\"update_id\":1}";
	struct jupdate u = { 0, json, sizeof(json) - 1 };
	struct journal *j;
	size_t sum = 0, n = 1;

	fuzz_write_journal(data, size);
	j = fuzz_open();
	journal_replay(j, fuzz_visit, &sum);
	u.id = journal_next_offset(j);
	journal_filter(j, &u, &n, 1700000000);
	if (n == 1 && journal_append(j, &u, 1, 1700000000) == -1)
		abort();
	journal_done(j, u.id);
	journal_flush(j);
	journal_close(j);
}

/* --- the model --------------------------------------------------------------- */

/* The input, read a byte at a time (zeros once it is used up). */
struct in {
	const uint8_t	*p;
	size_t		 n;
};

static unsigned
in_byte(struct in *in)
{
	if (in->n == 0)
		return 0;
	in->n--;
	return *in->p++;
}

static unsigned
in_u16(struct in *in)
{
	return in_byte(in) | in_byte(in) << 8;
}

enum { R_UPDATE = 1, R_DONE, R_REPLAY, R_MARK, R_CALLS, R_CALL_DONE };

struct mcall {
	uint64_t	seq;
	int64_t		update;
	char		key[32];	/* "" none */
	char		params[96];
};

struct mrec {
	int		type;
	int64_t		id;		/* update, mark's high-water, or seq */
	int64_t		num;		/* attempt, mark's time */
	char		json[128];	/* UPDATE */
	int		ncalls;		/* R_CALLS */
	struct mcall	calls[3];
	size_t		off, len;	/* in the file, header included */
	int		intact;
};

struct model {
	struct mrec	r[MODEL_RECS];
	int		n;
	uint64_t	seq;
	uint8_t		file[FILE_MAX];
	size_t		size;
};

static void
put32(uint8_t *p, uint32_t v)
{
	int i;

	for (i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void
put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

/* Append record r: its type, then payload[0..plen). */
static void
model_put(struct model *m, struct mrec *r, const uint8_t *payload,
    size_t plen)
{
	uint8_t *p = m->file + m->size;
	uint32_t len = (uint32_t)(1 + plen);

	p[8] = (uint8_t)r->type;
	memcpy(p + 9, payload, plen);
	put32(p, len);
	put32(p + 4, (uint32_t)crc32(0L, p + 8, len));
	r->off = m->size;
	r->len = 8 + len;
	m->size += r->len;
}

/* The payload: a, then b (if nb is 4 or 8 bytes of it), then text. */
static void
model_put3(struct model *m, struct mrec *r, int64_t a, int64_t b, int nb,
    const char *text)
{
	uint8_t payload[1100];
	size_t n = 8, tlen = text != NULL ? strlen(text) : 0;

	put64(payload, (uint64_t)a);
	if (nb == 4)
		put32(payload + 8, (uint32_t)b);
	else if (nb == 8)
		put64(payload + 8, (uint64_t)b);
	n += (size_t)nb;
	memcpy(payload + n, text, tlen);
	model_put(m, r, payload, n + tlen);
}

/* Letters and digits only: the loader's JSON round trip keeps them as is. */
static void
model_word(struct in *in, char *buf, size_t max)
{
	static const char abc[] = "abcdefghijklmnopqrstuvwxyz0123456789 ";
	size_t i, n = in_byte(in) % max;

	for (i = 0; i < n; i++)
		buf[i] = abc[in_byte(in) % (sizeof(abc) - 1)];
	buf[n] = '\0';
}

static void
model_calls(struct model *m, struct in *in, struct mrec *r, char *text,
    size_t textsz)
{
	char word[40];
	size_t n = 0;
	int i;

	r->ncalls = 1 + (int)(in_byte(in) % 3);
	n += (size_t)snprintf(text + n, textsz - n, "[");
	for (i = 0; i < r->ncalls; i++) {
		struct mcall *c = &r->calls[i];

		c->seq = ++m->seq;
		c->update = r->id;
		model_word(in, word, 20);
		snprintf(c->params, sizeof(c->params), "{\"chat_id\":%u,"
		    "\"text\":\"%s\"}", in_byte(in), word);
		if (in_byte(in) & 1)
			snprintf(c->key, sizeof(c->key), "chat:%u",
			    in_byte(in));
		else
			c->key[0] = '\0';
		n += (size_t)snprintf(text + n, textsz - n, "%s{\"seq\":%llu%s%s%s"
		    ",\"method\":\"sendMessage\",\"params\":%s}", i ? "," : "",
		    (unsigned long long)c->seq, c->key[0] ? ",\"key\":\"" : "",
		    c->key, c->key[0] ? "\"" : "", c->params);
	}
	snprintf(text + n, textsz - n, "]");
}

/* One record chosen by the input. */
static void
model_record(struct model *m, struct in *in)
{
	struct mrec *r = &m->r[m->n++];
	char text[1024], word[100];

	r->type = 1 + (int)(in_byte(in) % 6);
	r->id = 1 + (int64_t)(in_byte(in) % MODEL_IDS);
	switch (r->type) {
	case R_UPDATE:
		model_word(in, word, 90);
		snprintf(r->json, sizeof(r->json), "{\"update_id\":%lld,"
		    "\"t\":\"%s\"}", (long long)r->id, word);
		model_put3(m, r, r->id, 0, 0, r->json);
		break;
	case R_DONE:
		model_put3(m, r, r->id, 0, 0, NULL);
		break;
	case R_REPLAY:
		r->num = 1 + (int64_t)(in_byte(in) % 5);
		model_put3(m, r, r->id, r->num, 4, NULL);
		break;
	case R_MARK:
		r->id = (int64_t)in_u16(in);
		r->num = 1700000000 + (int64_t)in_byte(in);
		model_put3(m, r, r->id, r->num, 8, NULL);
		break;
	case R_CALLS:
		r->num = 1700000000;
		model_calls(m, in, r, text, sizeof(text));
		model_put3(m, r, r->id, r->num, 8, text);
		break;
	case R_CALL_DONE:
		/* mostly a call that was issued, sometimes one that was not */
		r->id = 1 + (int64_t)(in_byte(in) % (m->seq + 1));
		model_put3(m, r, r->id, 0, 0, NULL);
		break;
	}
}

/* The damage the input asks for, in a range of at most 64 bytes. */
static void
model_damage(struct model *m, struct in *in)
{
	size_t start, len, i;
	unsigned mode = in_byte(in) % 4, v;

	start = 8 + in_u16(in) % (m->size - 8);
	len = 1 + in_byte(in) % 64;
	if (start + len > m->size)
		len = m->size - start;
	switch (mode) {
	case 0:			/* bits flipped */
		for (i = start; i < start + len; i++)
			m->file[i] ^= (uint8_t)in_byte(in);
		break;
	case 1:			/* overwritten with one byte */
		v = in_byte(in);
		memset(m->file + start, (int)v, len);
		break;
	case 2:			/* a page that never reached the disk */
		memset(m->file + start, 0, len);
		break;
	default:		/* a torn tail */
		m->size = start;
		break;
	}
}

/* Did the damage leave record r as written? */
static int
model_intact(const struct model *m, const struct mrec *r,
    const uint8_t *orig, size_t osize)
{
	if (r->off + r->len > m->size)
		return 0;
	return memcmp(m->file + r->off, orig + r->off, r->len) == 0 &&
	    r->off + r->len <= osize;
}

/*
 * A checksummed record where no intact one starts, in or across the
 * damage: the damage made a record.  The loader cannot tell it from a
 * real one (JOURNAL.md's residual risk): not judged.
 */
static int
model_forged(const struct model *m)
{
	size_t off, k;
	uint32_t len;

	for (off = 8; off + 9 <= m->size; off++) {
		for (k = 0; k < (size_t)m->n; k++)
			if (m->r[k].intact && m->r[k].off == off)
				break;
		if (k < (size_t)m->n)
			continue;
		len = (uint32_t)m->file[off] | (uint32_t)m->file[off + 1] << 8 |
		    (uint32_t)m->file[off + 2] << 16 |
		    (uint32_t)m->file[off + 3] << 24;
		if (len < 1 || len > m->size - off - 8)
			continue;
		if (crc32(0L, m->file + off + 8, len) ==
		    ((uint32_t)m->file[off + 4] | (uint32_t)m->file[off + 5] << 8 |
		    (uint32_t)m->file[off + 6] << 16 |
		    (uint32_t)m->file[off + 7] << 24))
			return 1;
	}
	return 0;
}

/* What the intact records say, applied in order. */
struct expect {
	int		 pending[MODEL_IDS + 1];	/* index of its UPDATE, -1 */
	int		 attempt[MODEL_IDS + 1];
	const struct mcall *owed[MODEL_CALLS + 2];	/* by seq */
	int64_t		 hw;				/* -1: no mark */
};

static void
model_expect(const struct model *m, int middle, struct expect *e)
{
	const struct mrec *r;
	int i, k, before = 1;

	memset(e, 0, sizeof(*e));
	for (i = 0; i <= MODEL_IDS; i++)
		e->pending[i] = -1;
	e->hw = -1;
	for (i = 0; i < m->n; i++) {
		r = &m->r[i];
		if (!r->intact) {
			before = 0;	/* the first damaged record */
			continue;
		}
		switch (r->type) {
		case R_UPDATE:
			e->pending[r->id] = i;
			e->attempt[r->id] = 1;
			break;
		case R_DONE:
			e->pending[r->id] = -1;
			break;
		case R_REPLAY:
			if (e->pending[r->id] != -1)
				e->attempt[r->id] = (int)r->num;
			break;
		case R_MARK:
			/* after damage in the middle, the older mark stands */
			if (before || !middle)
				e->hw = r->id;
			break;
		case R_CALLS:
			e->pending[r->id] = -1;
			for (k = 0; k < r->ncalls; k++)
				e->owed[r->calls[k].seq] = &r->calls[k];
			break;
		case R_CALL_DONE:
			if ((uint64_t)r->id <= MODEL_CALLS + 1)
				e->owed[r->id] = NULL;
			break;
		}
	}
}

struct seen {
	const struct model	*m;
	const struct expect	*e;
	int			 updates, calls;
};

static void
seen_update(void *arg, int64_t id, const char *json, size_t len, int attempt)
{
	struct seen *s = arg;
	int i;

	if (id < 1 || id > MODEL_IDS || (i = s->e->pending[id]) == -1)
		abort();		/* made up, or a done mark lost */
	if (strlen(s->m->r[i].json) != len || memcmp(s->m->r[i].json, json,
	    len) != 0 || attempt != s->e->attempt[id] + 1)
		abort();
	s->updates++;
}

static void
seen_call(void *arg, const struct jcall_out *c)
{
	struct seen *s = arg;
	const struct mcall *mc;

	if (c->seq > MODEL_CALLS + 1 || (mc = s->e->owed[c->seq]) == NULL)
		abort();
	if (c->update_id != mc->update || strcmp(c->method, "sendMessage") ||
	    strcmp(c->key ? c->key : "", mc->key) || c->len !=
	    strlen(mc->params) || memcmp(c->params, mc->params, c->len))
		abort();
	s->calls++;
}

/* Everything expected was found, once. */
static void
model_check(struct journal *j, const struct model *m, const struct expect *e)
{
	struct seen s = { m, e, 0, 0 };
	int i, updates = 0, calls = 0;

	journal_replay(j, seen_update, &s);
	journal_calls_replay(j, seen_call, &s);
	for (i = 1; i <= MODEL_IDS; i++)
		updates += e->pending[i] != -1;
	for (i = 0; i <= MODEL_CALLS + 1; i++)
		calls += e->owed[i] != NULL;
	if (s.updates != updates || s.calls != calls ||
	    journal_pending(j) != (size_t)updates ||
	    journal_calls_owed(j) != (size_t)calls)
		abort();
	if (journal_next_offset(j) != (e->hw == -1 ? 0 : e->hw + 1))
		abort();
}

static void
fuzz_model(const uint8_t *data, size_t size)
{
	static struct model m;
	static uint8_t orig[FILE_MAX];
	struct in in = { data, size };
	struct expect e;
	struct journal *j;
	size_t osize, i, pending, owed;
	int n, middle = 0, k, damaged;

	memset(&m, 0, sizeof(m));
	memcpy(m.file, "TGRJ\x02\0\0\0", 8);
	m.size = 8;
	n = 1 + (int)(in_byte(&in) % MODEL_RECS);
	for (k = 0; k < n; k++)
		model_record(&m, &in);
	memcpy(orig, m.file, m.size);
	osize = m.size;
	model_damage(&m, &in);
	for (k = 0; k < m.n; k++)
		m.r[k].intact = model_intact(&m, &m.r[k], orig, osize);
	if (model_forged(&m))
		return;
	/* damage in the middle: an intact record follows a changed one */
	for (k = 0; k < m.n; k++)
		for (i = 0; i < (size_t)k; i++)
			if (m.r[k].intact && !m.r[i].intact)
				middle = 1;
	fuzz_write_journal(m.file, m.size);
	model_expect(&m, middle, &e);
	j = fuzz_open();
	model_check(j, &m, &e);
	pending = journal_pending(j);
	owed = journal_calls_owed(j);
	journal_close(j);
	/* as rewritten (or cut back): all of it again, nothing damaged now */
	damaged = fuzz_count("journal.damaged.");
	j = fuzz_open();
	if (journal_pending(j) != pending || journal_calls_owed(j) != owed ||
	    fuzz_count("journal.damaged.") != damaged || damaged != middle)
		abort();
	journal_close(j);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (fuzz_dir[0] == '\0')
		fuzz_init();
	if (size >= 4 && memcmp(data, "TGRJ", 4) == 0)
		fuzz_raw(data, size);
	else
		fuzz_model(data, size);
	fuzz_clean();
	return 0;
}
