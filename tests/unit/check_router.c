/* SPDX-License-Identifier: ISC */
/*
 * The router: ordering, exclusion, readiness of multi-key jobs, retries,
 * affinity, and a randomized simulation checked against a model after
 * every step.
 */
#include "config.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <check.h>

#include "router.h"

/*
 * Check's ck_assert_*() records a checkpoint (a write to a pipe) on every
 * success; millions of them in the simulation cost minutes.  This one only
 * costs on failure.
 */
#define REQUIRE(c) do {							\
	if (!(c))							\
		ck_abort_msg("%s:%d: failed: %s", __FILE__, __LINE__, #c);	\
} while (0)

static struct keyset
ks_make(const char *a, const char *b, const char *c)
{
	struct keyset	 ks;
	const char	*v[3] = { a, b, c };
	int		 i;

	memset(&ks, 0, sizeof(ks));
	for (i = 0; i < 3; i++)
		if (v[i] != NULL)
			snprintf(ks.k[ks.n++], KEY_STRLEN, "%s", v[i]);
	return ks;
}

static struct job *
add(struct router *r, int64_t id, const char *a, const char *b, const char *c)
{
	struct keyset	 ks = ks_make(a, b, c);
	struct job	*job;
	char		 json[64];

	snprintf(json, sizeof(json), "{\"update_id\":%" PRId64 "}", id);
	job = job_new(id, json, strlen(json));
	ck_assert_ptr_nonnull(job);
	router_add(r, job, &ks);
	return job;
}

static void
finish_free(struct router *r, struct job *job, struct job *want_succ)
{
	struct job *succ = router_finish(r, job);

	ck_assert_ptr_eq(succ, want_succ);
	if (succ != NULL)
		ck_assert_int_eq(succ->state, JOB_RUNNING);
	job_free(job);
}

START_TEST(test_job_new)
{
	struct job *job = job_new(7, "{\"a\":1}xyz", 7);

	ck_assert_int_eq(job->id, 7);
	ck_assert_int_eq(job->attempt, 1);
	ck_assert_int_eq(job->state, JOB_QUEUED);
	ck_assert_uint_eq(job->text->len, 7);
	ck_assert_str_eq(job->text->s, "{\"a\":1}");
	ck_assert_ptr_null(job_key(job, 0));
	job_free(job);
	job_free(NULL);
	job = job_new(8, NULL, 0);
	ck_assert_str_eq(job->text->s, "");
	job_free(job);
}
END_TEST

START_TEST(test_single_key_order)
{
	struct router	*r = router_new();
	struct job	*j[5], *cur;
	int		 i;

	for (i = 0; i < 5; i++)
		j[i] = add(r, 100 + i, "chat:1", NULL, NULL);
	ck_assert_uint_eq(router_jobs(r), 5);
	ck_assert_uint_eq(router_ready(r), 1);
	ck_assert_uint_eq(router_keys(r), 1);
	cur = router_next(r);
	ck_assert_ptr_eq(cur, j[0]);
	ck_assert_ptr_null(router_next(r));
	for (i = 1; i < 5; i++) {
		ck_assert_int_eq(j[i]->state, JOB_QUEUED);
		finish_free(r, cur, j[i]);
		cur = j[i];
		ck_assert_uint_eq(router_running(r), 1);
		ck_assert_uint_eq(router_ready(r), 0);
	}
	finish_free(r, cur, NULL);
	ck_assert_uint_eq(router_jobs(r), 0);
	ck_assert_uint_eq(router_keys(r), 0);
	ck_assert_uint_eq(router_running(r), 0);
	router_free(r);
}
END_TEST

START_TEST(test_exclusion)
{
	struct router	*r = router_new();
	struct job	*a1, *a2, *b1;

	a1 = add(r, 1, "chat:1", NULL, NULL);
	b1 = add(r, 2, "chat:2", NULL, NULL);
	a2 = add(r, 3, "chat:1", NULL, NULL);
	ck_assert_ptr_eq(router_next(r), a1);
	ck_assert_ptr_eq(router_next(r), b1);
	ck_assert_ptr_null(router_next(r));	/* a2 must wait for a1 */
	ck_assert_int_eq(a2->state, JOB_QUEUED);
	finish_free(r, b1, NULL);
	ck_assert_ptr_null(router_next(r));
	finish_free(r, a1, a2);
	finish_free(r, a2, NULL);
	router_free(r);
}
END_TEST

START_TEST(test_different_keys_ready)
{
	struct router	*r = router_new();
	struct job	*j[4];
	int		 i;

	j[0] = add(r, 1, "chat:1", NULL, NULL);
	j[1] = add(r, 2, "chat:2", NULL, NULL);
	j[2] = add(r, 3, "user:1", NULL, NULL);
	j[3] = add(r, 4, "chat:1/user:1", NULL, NULL);
	ck_assert_uint_eq(router_ready(r), 4);
	ck_assert_uint_eq(router_keys(r), 4);
	for (i = 0; i < 4; i++) {
		ck_assert_int_eq(j[i]->state, JOB_READY);
		ck_assert_ptr_eq(router_next(r), j[i]);
	}
	ck_assert_uint_eq(router_running(r), 4);
	for (i = 3; i >= 0; i--)
		finish_free(r, j[i], NULL);
	ck_assert_uint_eq(router_keys(r), 0);
	router_free(r);
}
END_TEST

START_TEST(test_keyless)
{
	struct router	*r = router_new();
	struct job	*j1, *j2, *j3;

	j1 = add(r, 1, NULL, NULL, NULL);
	j2 = job_new(2, "{}", 2);
	router_add(r, j2, NULL);
	j3 = add(r, 3, NULL, NULL, NULL);
	ck_assert_uint_eq(router_ready(r), 3);
	ck_assert_uint_eq(router_keys(r), 0);
	ck_assert_ptr_eq(router_next(r), j1);
	ck_assert_ptr_eq(router_next(r), j2);
	ck_assert_ptr_eq(router_next(r), j3);
	ck_assert_int_eq(j2->nkeys, 0);
	finish_free(r, j2, NULL);
	router_retry(r, j3);
	ck_assert_ptr_eq(router_next(r), j3);
	finish_free(r, j1, NULL);
	finish_free(r, j3, NULL);
	ck_assert_uint_eq(router_jobs(r), 0);
	router_free(r);
}
END_TEST

START_TEST(test_affinity)
{
	struct router	*r = router_new();
	struct job	*a1, *a2, *b1, *c1;

	a1 = add(r, 1, "chat:1", NULL, NULL);
	a2 = add(r, 2, "chat:1", NULL, NULL);
	b1 = add(r, 3, "chat:2", NULL, NULL);
	c1 = add(r, 4, "chat:3", NULL, NULL);
	ck_assert_ptr_eq(router_next(r), a1);
	/* a2 goes to a1's slot at once, ahead of the older ready b1 and c1 */
	finish_free(r, a1, a2);
	ck_assert_uint_eq(router_ready(r), 2);
	ck_assert_uint_eq(router_running(r), 1);
	ck_assert_ptr_eq(router_next(r), b1);
	ck_assert_ptr_eq(router_next(r), c1);
	finish_free(r, a2, NULL);
	finish_free(r, b1, NULL);
	finish_free(r, c1, NULL);
	router_free(r);
}
END_TEST

START_TEST(test_multikey_waits)
{
	struct router	*r = router_new();
	struct job	*j1, *j2, *j3, *j4;

	j1 = add(r, 1, "a", NULL, NULL);
	j2 = add(r, 2, "b", NULL, NULL);
	j3 = add(r, 3, "a", "b", NULL);
	j4 = add(r, 4, "b", NULL, NULL);	/* behind j3 on b */
	ck_assert_uint_eq(router_ready(r), 2);
	ck_assert_ptr_eq(router_next(r), j1);
	ck_assert_ptr_eq(router_next(r), j2);
	finish_free(r, j1, NULL);	/* j3 still waits for b */
	ck_assert_int_eq(j3->state, JOB_QUEUED);
	ck_assert_ptr_null(router_next(r));
	finish_free(r, j2, j3);
	ck_assert_int_eq(j4->state, JOB_QUEUED);
	ck_assert_str_eq(job_key(j3, 0), "a");
	ck_assert_str_eq(job_key(j3, 1), "b");
	ck_assert_ptr_null(job_key(j3, 2));
	finish_free(r, j3, j4);
	ck_assert_uint_eq(router_keys(r), 1);
	finish_free(r, j4, NULL);
	ck_assert_uint_eq(router_keys(r), 0);
	router_free(r);
}
END_TEST

START_TEST(test_multikey_successors)
{
	struct router	*r = router_new();
	struct job	*j1, *j2, *j3, *j4;

	j1 = add(r, 1, "a", "b", "c");
	j2 = add(r, 2, "c", NULL, NULL);
	j3 = add(r, 3, "b", "a", NULL);	/* keys in another order: other kq slots */
	j4 = add(r, 4, "a", NULL, NULL);
	ck_assert_ptr_eq(router_next(r), j1);
	ck_assert_ptr_null(router_next(r));
	/* both j2 and j3 become ready: the oldest stays on the slot */
	finish_free(r, j1, j2);
	ck_assert_int_eq(j3->state, JOB_READY);
	ck_assert_uint_eq(router_ready(r), 1);
	ck_assert_ptr_eq(router_next(r), j3);
	finish_free(r, j3, j4);
	finish_free(r, j2, NULL);
	finish_free(r, j4, NULL);
	ck_assert_uint_eq(router_jobs(r), 0);
	ck_assert_uint_eq(router_keys(r), 0);
	router_free(r);
}
END_TEST

START_TEST(test_duplicate_keys)
{
	struct router	*r = router_new();
	struct job	*j1, *j2;

	j1 = add(r, 1, "a", "a", "b");
	j2 = add(r, 2, "b", "b", NULL);
	ck_assert_int_eq(j1->nkeys, 2);
	ck_assert_int_eq(j2->nkeys, 1);
	ck_assert_ptr_eq(router_next(r), j1);
	finish_free(r, j1, j2);
	ck_assert_ptr_null(job_key(j2, 1));
	finish_free(r, j2, NULL);
	ck_assert_uint_eq(router_keys(r), 0);
	router_free(r);
}
END_TEST

START_TEST(test_retry_keeps_order)
{
	struct router	*r = router_new();
	struct job	*a1, *a2, *b1;

	a1 = add(r, 1, "a", NULL, NULL);
	b1 = add(r, 2, "b", NULL, NULL);
	a2 = add(r, 3, "a", NULL, NULL);
	ck_assert_ptr_eq(router_next(r), a1);
	router_retry(r, a1);
	a1->attempt++;
	ck_assert_int_eq(a1->state, JOB_READY);
	ck_assert_uint_eq(router_running(r), 0);
	ck_assert_uint_eq(router_ready(r), 2);
	/* the retried job goes first, even before the older ready b1 */
	ck_assert_ptr_eq(router_next(r), a1);
	ck_assert_int_eq(a2->state, JOB_QUEUED);
	router_retry(r, a1);
	ck_assert_ptr_eq(router_next(r), a1);
	ck_assert_ptr_eq(router_next(r), b1);
	ck_assert_ptr_null(router_next(r));
	finish_free(r, a1, a2);
	finish_free(r, a2, NULL);
	finish_free(r, b1, NULL);
	router_free(r);
}
END_TEST

START_TEST(test_free_holds_jobs)
{
	struct router	*r = router_new();

	add(r, 1, "a", "b", NULL);
	add(r, 2, NULL, NULL, NULL);
	add(r, 3, "b", "c", NULL);
	add(r, 4, "c", "a", NULL);
	add(r, 5, "d", NULL, NULL);
	add(r, 6, "a", NULL, NULL);
	router_next(r);		/* 1 running */
	router_next(r);		/* 2 running, keyless */
	ck_assert_uint_eq(router_running(r), 2);
	ck_assert_uint_eq(router_ready(r), 1);
	ck_assert_uint_eq(router_jobs(r), 6);
	router_free(r);		/* ASan/valgrind: no leak */
	router_free(NULL);
}
END_TEST

START_TEST(test_head_of_line)
{
	struct router	*r = router_new();
	struct job	*hot, *j, *succ;
	char		 name[32];
	int		 i, other = 0;

	for (i = 0; i < 10000; i++)
		add(r, i, "chat:hot", NULL, NULL);
	for (i = 0; i < 100; i++) {
		snprintf(name, sizeof(name), "chat:%d", i);
		add(r, 10000 + i, name, NULL, NULL);
	}
	REQUIRE((router_ready(r)) == (101));
	REQUIRE((router_keys(r)) == (101));
	hot = router_next(r);
	REQUIRE((hot->id) == (0));
	/* the hot key holds one slot; all the others run meanwhile */
	while ((j = router_next(r)) != NULL) {
		REQUIRE((j->id) == (10000 + other));
		other++;
		finish_free(r, j, NULL);
	}
	REQUIRE((other) == (100));
	for (i = 1; i < 10000; i++) {
		succ = router_finish(r, hot);
		job_free(hot);
		REQUIRE(succ != NULL);
		REQUIRE((succ->id) == (i));
		REQUIRE((router_ready(r)) == (0));
		hot = succ;
	}
	finish_free(r, hot, NULL);
	REQUIRE((router_jobs(r)) == (0));
	REQUIRE((router_keys(r)) == (0));
	router_free(r);
}
END_TEST

/* --- randomized simulation against a model ------------------------------ */

#define SIM_JOBS	100000
#define SIM_KEYS	1000
#define SIM_SLOTS_MAX	16

static uint64_t sim_rng;

static uint64_t
rnd(void)
{
	sim_rng ^= sim_rng >> 12;
	sim_rng ^= sim_rng << 25;
	sim_rng ^= sim_rng >> 27;
	return sim_rng * 2685821657736338717ULL;
}

static uint32_t
rnd_below(uint32_t n)
{
	return (uint32_t)((rnd() >> 32) % n);
}

/* Skewed: key 0 is hot, low keys warm, the tail cold. */
static int
rnd_key(void)
{
	double u = (double)(rnd() >> 11) / 9007199254740992.0;

	return (int)(SIM_KEYS * u * u * u);
}

/* The model of one key: its unfinished job ids, oldest first. */
struct mkey {
	int64_t	*ids;
	size_t	 head, tail, cap;
};

struct sim {
	struct router	*r;
	int		 slots;
	size_t		 cap;		/* backlog limit, like max_pending */
	struct job	*running[SIM_SLOTS_MAX];
	int		 nrunning;
	int		 nk[SIM_JOBS];
	int		 k[SIM_JOBS][3];
	unsigned char	 finished[SIM_JOBS];
	struct job	*live[SIM_JOBS];	/* unfinished jobs, any order */
	int		 livepos[SIM_JOBS];	/* by id: index in live */
	int		 nlive;
	int64_t		 last_start[SIM_KEYS];
	struct mkey	 mk[SIM_KEYS];
	unsigned	 seen[SIM_KEYS];
	unsigned	 epoch;
	int64_t		 added, nfinished, retries, succs;
	size_t		 cnt[3];
};

static void
mkey_push(struct mkey *m, int64_t id)
{
	if (m->tail == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 16;
		m->ids = realloc(m->ids, m->cap * sizeof(*m->ids));
		ck_assert_ptr_nonnull(m->ids);
	}
	m->ids[m->tail++] = id;
}

static int
sim_keyidx(const char *name)
{
	return atoi(name + 1);
}

static void
sim_add(struct sim *s)
{
	struct keyset	 ks;
	struct job	*job;
	int64_t		 id = s->added++;
	int		 i, j, n, kk;

	memset(&ks, 0, sizeof(ks));
	n = 1 + (int)rnd_below(3);
	s->nk[id] = 0;
	for (i = 0; i < n; i++) {
		kk = rnd_key();
		snprintf(ks.k[ks.n++], KEY_STRLEN, "k%d", kk);	/* duplicates too */
		for (j = 0; j < s->nk[id]; j++)
			if (s->k[id][j] == kk)
				break;
		if (j == s->nk[id]) {
			s->k[id][s->nk[id]++] = kk;
			mkey_push(&s->mk[kk], id);
		}
	}
	job = job_new(id, "{}", 2);
	REQUIRE(job != NULL);
	s->livepos[id] = s->nlive;
	s->live[s->nlive++] = job;
	router_add(s->r, job, &ks);
	REQUIRE((job->nkeys) == (s->nk[id]));
}

/* A job started: every key must be in order, retries repeat the same id. */
static void
sim_started(struct sim *s, struct job *job)
{
	int i, kk;

	REQUIRE((job->state) == (JOB_RUNNING));
	for (i = 0; i < s->nk[job->id]; i++) {
		kk = s->k[job->id][i];
		REQUIRE((s->last_start[kk]) <= (job->id));
		if (s->last_start[kk] == job->id)
			REQUIRE((job->attempt) > (1));
		s->last_start[kk] = job->id;
	}
}

static void
sim_finish(struct sim *s, int slot)
{
	struct job	*job = s->running[slot], *succ;
	struct mkey	*m;
	int		 i;

	for (i = 0; i < s->nk[job->id]; i++) {
		m = &s->mk[s->k[job->id][i]];
		REQUIRE((m->head) < (m->tail));
		REQUIRE((m->ids[m->head]) == (job->id));
		m->head++;
	}
	REQUIRE((s->finished[job->id]) == (0));
	s->finished[job->id] = 1;
	s->nfinished++;
	s->live[s->livepos[job->id]] = s->live[--s->nlive];
	s->livepos[s->live[s->livepos[job->id]]->id] = s->livepos[job->id];
	succ = router_finish(s->r, job);
	REQUIRE((job->nkeys) == (0));
	if (succ != NULL) {
		/* affinity: the successor carries one of the finished job's keys */
		int shared = 0, a, b;

		for (a = 0; a < s->nk[job->id]; a++)
			for (b = 0; b < s->nk[succ->id]; b++)
				shared |= s->k[job->id][a] == s->k[succ->id][b];
		REQUIRE(shared);
		sim_started(s, succ);
		s->running[slot] = succ;
		s->succs++;
	} else
		s->running[slot] = s->running[--s->nrunning];
	job_free(job);
}

static void
sim_retry(struct sim *s, int slot)
{
	struct job *job = s->running[slot];

	router_retry(s->r, job);
	job->attempt++;
	s->retries++;
	s->running[slot] = s->running[--s->nrunning];
	REQUIRE((job->state) == (JOB_READY));
}

/* Brute force: visit every unfinished job and recompute what the router should say. */
static void
sim_recount(struct sim *s, struct job *job)
{
	int		 i, kk, head = 1;

	REQUIRE((job->id) < (s->added));
	REQUIRE((s->finished[job->id]) == (0));
	REQUIRE((job->nkeys) == (s->nk[job->id]));
	for (i = 0; i < job->nkeys; i++) {
		kk = sim_keyidx(job_key(job, i));
		REQUIRE((kk) == (s->k[job->id][i]));
		s->seen[kk] = s->epoch;
		head &= s->mk[kk].ids[s->mk[kk].head] == job->id;
	}
	/* ready or running exactly when first in line for every key */
	REQUIRE((job->state != JOB_QUEUED) == (head));
	s->cnt[job->state]++;
}

static void
sim_check(struct sim *s)
{
	size_t	nkeys = 0;
	int	i, j, kk;

	s->epoch++;
	memset(s->cnt, 0, sizeof(s->cnt));
	for (i = 0; i < s->nlive; i++)
		sim_recount(s, s->live[i]);
	for (i = 0; i < SIM_KEYS; i++)
		nkeys += s->seen[i] == s->epoch;
	REQUIRE((router_keys(s->r)) == (nkeys));
	REQUIRE((router_jobs(s->r)) == ((size_t)(s->added - s->nfinished)));
	REQUIRE((router_jobs(s->r)) == (s->cnt[0] + s->cnt[1] + s->cnt[2]));
	REQUIRE((router_ready(s->r)) == (s->cnt[JOB_READY]));
	REQUIRE((router_running(s->r)) == (s->cnt[JOB_RUNNING]));
	REQUIRE((router_running(s->r)) == ((size_t)s->nrunning));
	/* no two running jobs share a key */
	s->epoch++;
	for (i = 0; i < s->nrunning; i++) {
		for (j = 0; j < s->running[i]->nkeys; j++) {
			kk = s->k[s->running[i]->id][j];
			REQUIRE((s->seen[kk]) != (s->epoch));
			s->seen[kk] = s->epoch;
		}
	}
	/* no deadlock, hence no cycle among multi-key jobs */
	if (router_jobs(s->r) > 0)
		REQUIRE((router_ready(s->r) + router_running(s->r)) > (0));
}

static void
sim_step(struct sim *s)
{
	struct job	*job;
	uint32_t	 dice = rnd_below(100);
	int		 slot;

	if (dice < 45 && s->added < SIM_JOBS && router_jobs(s->r) < s->cap) {
		sim_add(s);
		return;
	}
	if (dice < 75 && s->nrunning < s->slots &&
	    (job = router_next(s->r)) != NULL) {
		sim_started(s, job);
		s->running[s->nrunning++] = job;
		return;
	}
	if (s->nrunning > 0) {
		slot = (int)rnd_below((uint32_t)s->nrunning);
		if (rnd_below(100) < 5 && s->running[slot]->attempt < 4)
			sim_retry(s, slot);
		else
			sim_finish(s, slot);
		return;
	}
	if (s->nrunning < s->slots && (job = router_next(s->r)) != NULL) {
		sim_started(s, job);
		s->running[s->nrunning++] = job;
	} else if (s->added < SIM_JOBS)
		sim_add(s);
}

START_TEST(test_random_simulation)
{
	struct sim	*s;
	const char	*env = getenv("TG_SEED");
	uint64_t	 seed;
	int64_t		 steps = 0, i;

	seed = env != NULL ? strtoull(env, NULL, 0) : 0x5eed0000ULL + 2 * (uint64_t)_i + 1;
	sim_rng = seed != 0 ? seed : 1;
	s = calloc(1, sizeof(*s));
	ck_assert_ptr_nonnull(s);
	s->r = router_new();
	s->slots = 1 + (int)rnd_below(SIM_SLOTS_MAX);
	s->cap = 1 + rnd_below(300);
	for (i = 0; i < SIM_KEYS; i++)
		s->last_start[i] = -1;
	while (s->nfinished < SIM_JOBS) {
		sim_step(s);
		sim_check(s);
		REQUIRE((++steps) < (20 * (int64_t)SIM_JOBS));
	}
	for (i = 0; i < SIM_JOBS; i++)
		REQUIRE((s->finished[i]) == (1));
	REQUIRE((router_jobs(s->r)) == (0));
	REQUIRE((router_keys(s->r)) == (0));
	printf("router sim: seed=%#" PRIx64 " slots=%d cap=%zu steps=%" PRId64
	    " retries=%" PRId64 " successors=%" PRId64 "\n", seed, s->slots, s->cap,
	    steps, s->retries, s->succs);
	router_free(s->r);
	for (i = 0; i < SIM_KEYS; i++)
		free(s->mk[i].ids);
	free(s);
}
END_TEST

/* --- measurement -------------------------------------------------------- */

#define BENCH_CYCLES	1000000
#define BENCH_POOL	4096

START_TEST(test_bench)
{
	struct router	*r = router_new();
	static struct keyset ks[1024];
	struct job	*pool[BENCH_POOL], *cur = NULL, *succ;
	struct timespec	 t0, t1;
	int		 i, npool = 0;
	double		 ns;

	for (i = 0; i < 1024; i++) {
		ks[i].n = 1;
		snprintf(ks[i].k[0], KEY_STRLEN, "chat:%d", -1000000 - i * 7);
	}
	for (i = 0; i < BENCH_POOL; i++)
		pool[npool++] = job_new(i, "{}", 2);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < BENCH_CYCLES; i++) {
		struct job *job = pool[--npool];

		job->id = i;
		router_add(r, job, &ks[(i * 37) % 1024]);
		if (cur == NULL)
			cur = router_next(r);
		succ = router_finish(r, cur);
		pool[npool++] = cur;
		cur = succ;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
	printf("router bench: %d add/next/finish cycles, %.1f ns/cycle\n",
	    BENCH_CYCLES, ns / BENCH_CYCLES);
	ck_assert_uint_eq(router_jobs(r), 0);
	for (i = 0; i < npool; i++)
		job_free(pool[i]);
	router_free(r);
}
END_TEST

static Suite *
router_suite(void)
{
	Suite	*s = suite_create("router");
	TCase	*tc = tcase_create("router");
	TCase	*slow = tcase_create("simulation");

	tcase_add_test(tc, test_job_new);
	tcase_add_test(tc, test_single_key_order);
	tcase_add_test(tc, test_exclusion);
	tcase_add_test(tc, test_different_keys_ready);
	tcase_add_test(tc, test_keyless);
	tcase_add_test(tc, test_affinity);
	tcase_add_test(tc, test_multikey_waits);
	tcase_add_test(tc, test_multikey_successors);
	tcase_add_test(tc, test_duplicate_keys);
	tcase_add_test(tc, test_retry_keeps_order);
	tcase_add_test(tc, test_free_holds_jobs);
	tcase_add_test(tc, test_head_of_line);
	suite_add_tcase(s, tc);
	tcase_set_timeout(slow, 300);
	tcase_add_loop_test(slow, test_random_simulation, 0, 2);
	tcase_add_test(slow, test_bench);
	suite_add_tcase(s, slow);
	return s;
}

#define TEST_SUITE	router_suite
#include "testmain.h"
