/*
 * The router: which queued update may run now.  Pure data structure, no I/O.
 *
 * Each session key has a FIFO of the unfinished jobs that carry it, in the
 * order they were added (update_id order).  A job is ready when it is at the
 * head of the FIFO of every one of its keys and is not running; a keyless
 * job is ready at once.  Ready jobs wait in one FIFO for a free slot.  A job
 * keeps its place at the head of its keys until router_finish(), so a retry
 * can never be overtaken by a later update of the same key.
 *
 * All operations are O(number of keys of the job): hash lookups and list
 * links, never a scan of the backlog.
 */
#ifndef TG_ROUTER_H
#define TG_ROUTER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "keys.h"
#include "rcstr.h"

struct rkey;

enum job_state { JOB_QUEUED, JOB_READY, JOB_RUNNING };

struct job {
	int64_t			 id;		/* update_id */
	struct rcstr		*text;		/* the Update object's JSON */
	int			 attempt;	/* 1 on first delivery */
	enum job_state		 state;
	int			 nkeys;
	struct rkey		*key[KEYS_MAX];	/* interned by the router */
	TAILQ_ENTRY(job)	 kq[KEYS_MAX];	/* place in each key's FIFO */
	TAILQ_ENTRY(job)	 rq;		/* place in the ready FIFO */
	void			*owner;		/* the caller's (e.g. worker running it) */
	int64_t			 deadline;	/* wall ms for the frame; 0: the pool's */
	void			*user;		/* the caller's (a relay's record) */
	uint64_t		 t_fetched;	/* monotonic µs, caller's */
	uint64_t		 t_started;
};

/* A new job with a copy of json[0..len), or sharing text.  attempt is 1. */
struct job	*job_new(int64_t id, const char *json, size_t len);
struct job	*job_new_shared(int64_t id, struct rcstr *text);
void		 job_free(struct job *);
/* The key strings of a job, for the wire: key i of job. */
const char	*job_key(const struct job *, int i);

struct router	*router_new(void);
/* Frees the router and every job it still holds. */
void		 router_free(struct router *);

/* Take ownership of job; keys are interned.  The job is queued or ready. */
void		 router_add(struct router *, struct job *, const struct keyset *);
/* Remove and return the oldest ready job, now JOB_RUNNING; NULL if none. */
struct job	*router_next(struct router *);
/*
 * The running job is finished (done, or given up): it leaves its keys and
 * the router; the caller owns it again (job_free).  Successors that became
 * ready are queued; the first of them is instead returned, already
 * JOB_RUNNING, so that the caller gives it to the same slot (affinity: a
 * busy key stays where it is until its queue is empty).  NULL if none.
 */
struct job	*router_finish(struct router *, struct job *);
/*
 * The running job must run again (worker died, failed with retry, timed
 * out).  It stays at the head of its keys and goes to the front of the
 * ready FIFO.  The caller bumps attempt.
 */
void		 router_retry(struct router *, struct job *);

size_t		 router_jobs(const struct router *);	/* queued + ready + running */
size_t		 router_ready(const struct router *);
size_t		 router_running(const struct router *);
size_t		 router_keys(const struct router *);	/* keys with unfinished jobs */

#endif
