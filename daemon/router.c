/* SPDX-License-Identifier: ISC */
/*
 * The router: per-key FIFOs of unfinished jobs and one ready FIFO.
 *
 * A job is linked into the FIFO of each of its keys through kq[i], i being
 * the key's index in that job.  The same key may sit at different indexes
 * in neighbouring jobs, so the <sys/queue.h> TAILQ_REMOVE macro, which
 * assumes one field name for every element, cannot unlink from these
 * lists; router_kq_remove() does it by hand.  Insertion at the tail and
 * TAILQ_FIRST only touch the element itself and the head, so the macros
 * are fine there.
 *
 * Every job is in exactly one of: a key FIFO only (QUEUED), the ready FIFO
 * (READY), the running list (RUNNING); READY and RUNNING jobs with keys are
 * also the heads of their key FIFOs.  Keyless running jobs are reachable
 * only through the running list, which is why it exists.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#include "log.h"
#include "router.h"
#include "xmalloc.h"

TAILQ_HEAD(jobq, job);

struct rkey {
	UT_hash_handle	 hh;
	struct jobq	 fifo;		/* unfinished jobs, add order */
	size_t		 count;
	char		 name[];
};

struct router {
	struct rkey	*keys;		/* uthash head */
	struct jobq	 ready;		/* via job.rq */
	struct jobq	 running;	/* via job.rq */
	size_t		 njobs;
	size_t		 nready;
	size_t		 nrunning;
	size_t		 nkeys;
};

/*
 * The caller owns the job until router_add().  The job takes a reference
 * to text (the update's JSON).
 */
struct job *
job_new_shared(int64_t id, struct rcstr *text)
{
	struct job *job = xcalloc(1, sizeof(*job));

	job->text = rcstr_ref(text);
	job->id = id;
	job->attempt = 1;
	job->state = JOB_QUEUED;
	return job;
}

/* As job_new_shared(), with a private copy of json[0..len). */
struct job *
job_new(int64_t id, const char *json, size_t len)
{
	struct rcstr *text = rcstr_new(json, len);
	struct job *job;

	job = job_new_shared(id, text);
	rcstr_unref(text);
	return job;
}

void
job_free(struct job *job)
{
	if (job == NULL)
		return;
	rcstr_unref(job->text);
	free(job);
}

/* Valid while the job is in the router; NULL once it has left it. */
const char *
job_key(const struct job *job, int i)
{
	if (i < 0 || i >= job->nkeys || job->key[i] == NULL)
		return NULL;
	return job->key[i]->name;
}

/* The caller owns the router: router_free(). */
struct router *
router_new(void)
{
	struct router *r = xcalloc(1, sizeof(*r));

	TAILQ_INIT(&r->ready);
	TAILQ_INIT(&r->running);
	return r;
}

/* Index of key k in job: the kq[] entry that links job into k's FIFO. */
static int
router_kidx(const struct job *job, const struct rkey *k)
{
	int i;

	for (i = 0; i < job->nkeys; i++)
		if (job->key[i] == k)
			return i;
	fatalx(EXIT_SOFTWARE, "%s: job %lld not in key %s", __func__,
	    (long long)job->id, k->name);
}

static void
router_kq_remove(struct rkey *k, struct job *job, int i)
{
	struct job *next = job->kq[i].tqe_next;

	if (next != NULL)
		next->kq[router_kidx(next, k)].tqe_prev = job->kq[i].tqe_prev;
	else
		k->fifo.tqh_last = job->kq[i].tqe_prev;
	*job->kq[i].tqe_prev = next;
	k->count--;
}

static struct rkey *
router_intern(struct router *r, const char *name)
{
	struct rkey	*k;
	size_t		 len;

	len = strnlen(name, KEY_STRLEN - 1);
	HASH_FIND(hh, r->keys, name, len, k);
	if (k != NULL)
		return k;
	k = xcalloc(1, sizeof(*k) + len + 1);
	memcpy(k->name, name, len);
	TAILQ_INIT(&k->fifo);
	HASH_ADD_KEYPTR(hh, r->keys, k->name, len, k);
	r->nkeys++;
	return k;
}

static void
router_key_drop(struct router *r, struct rkey *k)
{
	HASH_DELETE(hh, r->keys, k);
	r->nkeys--;
	free(k);
}

static int
router_is_head(const struct job *job)
{
	int i;

	for (i = 0; i < job->nkeys; i++)
		if (TAILQ_FIRST(&job->key[i]->fifo) != job)
			return 0;
	return 1;
}

static void
router_make_ready(struct router *r, struct job *job)
{
	job->state = JOB_READY;
	TAILQ_INSERT_TAIL(&r->ready, job, rq);
	r->nready++;
}

static void
router_start(struct router *r, struct job *job)
{
	job->state = JOB_RUNNING;
	TAILQ_INSERT_TAIL(&r->running, job, rq);
	r->nrunning++;
}

void
router_add(struct router *r, struct job *job, const struct keyset *ks)
{
	struct rkey	*k;
	int		 i, j;

	job->nkeys = 0;
	job->state = JOB_QUEUED;
	for (i = 0; ks != NULL && i < ks->n && i < KEYS_MAX; i++) {
		k = router_intern(r, ks->k[i]);
		for (j = 0; j < job->nkeys; j++)
			if (job->key[j] == k)
				break;
		if (j < job->nkeys)
			continue;	/* a duplicate would link twice */
		job->key[job->nkeys] = k;
		TAILQ_INSERT_TAIL(&k->fifo, job, kq[job->nkeys]);
		k->count++;
		job->nkeys++;
	}
	r->njobs++;
	if (router_is_head(job))
		router_make_ready(r, job);
}

/* The job stays the router's until router_finish() hands it back. */
struct job *
router_next(struct router *r)
{
	struct job *job;

	if ((job = TAILQ_FIRST(&r->ready)) == NULL)
		return NULL;
	TAILQ_REMOVE(&r->ready, job, rq);
	r->nready--;
	router_start(r, job);
	return job;
}

/*
 * Leave every key; the new heads that thereby became ready are collected
 * in succ[] (at most one per key), oldest first.
 */
static int
router_leave_keys(struct router *r, struct job *job,
    struct job *succ[KEYS_MAX])
{
	struct rkey	*k;
	struct job	*h;
	int		 i, j, n = 0;

	for (i = 0; i < job->nkeys; i++) {
		k = job->key[i];
		router_kq_remove(k, job, i);
		job->key[i] = NULL;
		if ((h = TAILQ_FIRST(&k->fifo)) == NULL) {
			router_key_drop(r, k);
			continue;
		}
		if (h->state != JOB_QUEUED || !router_is_head(h))
			continue;
		h->state = JOB_READY;	/* so that a shared successor counts once */
		for (j = n++; j > 0 && succ[j - 1]->id > h->id; j--)
			succ[j] = succ[j - 1];
		succ[j] = h;
	}
	job->nkeys = 0;
	return n;
}

/* Hands job back to the caller; a returned successor stays the router's. */
struct job *
router_finish(struct router *r, struct job *job)
{
	struct job	*succ[KEYS_MAX];
	int		 i, n;

	if (job->state != JOB_RUNNING)
		fatalx(EXIT_SOFTWARE, "%s: job %lld is not running", __func__,
		    (long long)job->id);
	TAILQ_REMOVE(&r->running, job, rq);
	r->nrunning--;
	r->njobs--;
	n = router_leave_keys(r, job, succ);
	job->state = JOB_QUEUED;
	if (n == 0)
		return NULL;
	for (i = 1; i < n; i++) {
		TAILQ_INSERT_TAIL(&r->ready, succ[i], rq);
		r->nready++;
	}
	router_start(r, succ[0]);
	return succ[0];
}

void
router_retry(struct router *r, struct job *job)
{
	if (job->state != JOB_RUNNING)
		fatalx(EXIT_SOFTWARE, "%s: job %lld is not running", __func__,
		    (long long)job->id);
	TAILQ_REMOVE(&r->running, job, rq);
	r->nrunning--;
	job->state = JOB_READY;
	TAILQ_INSERT_HEAD(&r->ready, job, rq);
	r->nready++;
}

size_t
router_jobs(const struct router *r)
{
	return r->njobs;
}

size_t
router_ready(const struct router *r)
{
	return r->nready;
}

size_t
router_running(const struct router *r)
{
	return r->nrunning;
}

size_t
router_keys(const struct router *r)
{
	return r->nkeys;
}


/* Unlink a job from all its keys, wherever it sits in their FIFOs. */
static void
router_unlink(struct router *r, struct job *job)
{
	struct rkey	*k;
	int		 i;

	for (i = 0; i < job->nkeys; i++) {
		k = job->key[i];
		router_kq_remove(k, job, i);
		if (TAILQ_EMPTY(&k->fifo))
			router_key_drop(r, k);
	}
	job->nkeys = 0;
}

void
router_free(struct router *r)
{
	struct job	*job;
	struct rkey	*k;

	if (r == NULL)
		return;
	while ((job = TAILQ_FIRST(&r->running)) != NULL) {
		TAILQ_REMOVE(&r->running, job, rq);
		router_unlink(r, job);
		job_free(job);
	}
	while ((job = TAILQ_FIRST(&r->ready)) != NULL) {
		TAILQ_REMOVE(&r->ready, job, rq);
		router_unlink(r, job);
		job_free(job);
	}
	while ((k = r->keys) != NULL) {
		job = TAILQ_FIRST(&k->fifo);
		router_unlink(r, job);	/* drops k with its last job */
		job_free(job);
	}
	free(r);
}
