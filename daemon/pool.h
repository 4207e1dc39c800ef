/* SPDX-License-Identifier: ISC */
/*
 * The worker pool: a set of workers with slots, and the jobs running in
 * them.  It starts and supervises worker processes (prefork, `workers`
 * of worker_command), takes in workers that join by other ways (an
 * external listener, later remote workers), hands each job to a free
 * slot, times it out, and reports back what became of it.
 *
 * The pool is a library: it knows neither the router nor the daemon.  Its
 * user (tgrunnerd, tgrunner-relay) gives it a struct conf, an event base
 * and pool_ops, and decides what a finished job means.  Jobs are owned by
 * the caller; the pool only borrows a job while it runs (job->owner is the
 * pool's record of it).
 *
 * How a worker is reached is its connection type's business (worker.h):
 * a spawned child over a socketpair, a peer on the listen socket, ...
 * A job that was in a worker is reported failed only once no process can
 * still be working on it: re-dispatching earlier could run two updates of
 * one key at the same time.
 */
#ifndef TG_POOL_H
#define TG_POOL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct conf;
struct evbuffer;
struct event_base;
struct job;
struct pool;
struct worker;

struct pool_ops {
	/*
	 * The worker finished the job (the caller owns it again); calls
	 * (may be NULL) is borrowed.  w may take the job's successor at
	 * once: pool_dispatch(p, next, w) keeps a busy key on its slot.
	 */
	void	(*done)(void *arg, struct job *, struct worker *w, json_t *calls);
	/*
	 * The job did not complete: the worker failed it, timed out, or died.
	 * retry says whether the failure is worth another attempt.  Called
	 * only once no process can still be working on it.
	 */
	void	(*failed)(void *arg, struct job *, const char *why, int retry);
	/* Capacity appeared (a worker said hello, or a slot freed by a death). */
	void	(*capacity)(void *arg);
	/*
	 * A worker sent a call frame: answer with pool_result(worker_id, ...).
	 * job is the update the call belongs to, or NULL.  Borrowed arguments.
	 */
	void	(*call)(void *arg, int worker_id, json_t *ref, struct job *job,
		    const char *method, json_t *params);
	/*
	 * The Bot API endpoint for a worker whose process runs on this host
	 * (worker.h, api_local): a fresh credential for worker_id into cred
	 * (credsz bytes), and the endpoint's root as the return value
	 * (borrowed: it outlives the pool).  NULL when there is no endpoint or
	 * no credential (nothing written).  The credential is valid until
	 * api_revoke(worker_id).  Either hook may be NULL: no endpoint.
	 */
	const char *(*api_grant)(void *arg, int worker_id, char *cred,
		    size_t credsz);
	/* worker_id is being freed: its credential stops working now. */
	void	(*api_revoke)(void *arg, int worker_id);
	/*
	 * Optional (may be NULL): worker_id is gone for good, about to give
	 * back (failed) the jobs it held.  What the daemon keeps per worker
	 * (its calls, its policy log) can be let go.
	 */
	void	(*gone)(void *arg, int worker_id);
};

struct pool_stats {
	uint64_t	spawned, exited, crashed, protocol_errors, timeouts,
			recycled;
};

/*
 * A pool on base.  conf is read at each use (not copied: it must outlive
 * the pool, or be replaced with pool_reconfigure); ops and arg too.  No
 * worker starts before pool_start().  The caller frees it with pool_free(),
 * which kills the workers it started.
 */
struct pool	*pool_new(struct event_base *, const struct conf *,
		    const struct pool_ops *, void *arg);
void		 pool_free(struct pool *);
/* bot: the getMe object sent in welcome (a reference is taken). */
void		 pool_start(struct pool *, json_t *bot);
/*
 * The configuration changed (already validated): grow or shrink the pool;
 * with replace (a new worker_command), every worker is told to finish what
 * it holds and exit, and a new one is started in its place at once.
 */
void		 pool_reconfigure(struct pool *, const struct conf *, int replace);
/*
 * Can an update of len bytes of JSON with keys ks be framed for a worker
 * (PROTO_MAX_FRAME)?  One that cannot must never reach a worker: the
 * worker would have to refuse it, and so would the next.
 */
struct keyset;
int		 pool_update_fits(const char *json, size_t len,
		    const struct keyset *ks);
/*
 * Replace every worker the pool started, one at a time (restart-workers):
 * a new one is started, and only once it is welcomed does an old one
 * drain (it finishes what it holds, then is told to shut down); the next
 * starts when that one has left.  A replacement that does not come up
 * (dies or is refused before its welcome) stops the restart, and the old
 * workers run on.  Asked again during a restart, it starts over: every
 * worker running then is replaced.  Workers the pool did not start
 * (external, remote) are not restarted.  Returns how many are replaced.
 */
int		 pool_restart(struct pool *);
/*
 * For status: the restart in progress or the last one, {"state":
 * "running"|"done"|"stopped", "replaced", "total", "external", "why"?,
 * ...}; JSON null if none was ever asked for.  A new reference.
 */
json_t		*pool_restart_status(const struct pool *);
/*
 * Give job to a worker with a free slot, preferring w (may be NULL).
 * Returns 0, or -1 when no slot is free.
 */
int		 pool_dispatch(struct pool *, struct job *, struct worker *w);
/*
 * Cancel the running job now (the deadline came early, from elsewhere):
 * its worker is sent cancel, and made to go if it does not answer within
 * kill_grace.  Nothing happens if it is not running or was cancelled.
 */
void		 pool_cancel(struct pool *, struct job *, const char *reason);
size_t		 pool_free_slots(const struct pool *);
/*
 * Hold worker_id back (on) or let it take updates again (off): a worker
 * held back keeps what it runs but is given nothing new.  Unknown ids are
 * ignored.  Off calls the capacity op when slots appear.
 */
void		 pool_worker_throttle(struct pool *, int worker_id, int on);
size_t		 pool_running(const struct pool *);	/* jobs in workers */
/*
 * Answer a worker's call frame.  The worker may be gone by now (then the
 * result is dropped): workers are named by id, never by pointer, here.
 */
void		 pool_result(struct pool *, int worker_id, json_t *ref, int ok,
		    json_t *result, int error_code, const char *description,
		    json_t *parameters, int retry_after);
/*
 * Which update a Bot API call of worker_id belongs to, for the endpoint
 * (workerapi.h): update_id is the X-Tgrunner-Update header's id, 0 for
 * none (unordered, as a call frame's id 0), -1 when there is no header
 * (then the update the worker holds, if it holds exactly one).  Returns 1
 * with *key set to that update's first session key (NULL: it has none;
 * valid until the loop runs again) and *update (if not NULL) to its id, 0
 * when the call belongs to no update,
 * or -1 when update_id names an update the worker does not hold (a call
 * frame for it is refused too; complained about in the log, boundedly).
 */
int		 pool_held(struct pool *, int worker_id, int64_t update_id,
		    const char **key, int64_t *update);
/* Send shutdown to every worker; spawn no more, accept no more. */
void		 pool_shutdown(struct pool *, int64_t deadline_ms);
/* Make every worker go now (SIGKILL; a peer is disconnected). */
void		 pool_kill(struct pool *);
/* Workers that may still be working: processes alive, peers connected. */
size_t		 pool_alive(const struct pool *);
/* Reap exited children (SIGCHLD): waitpid(-1), the pool is their parent. */
void		 pool_reap(struct pool *);
const struct pool_stats *pool_stats(const struct pool *);
/* For status: {"spawned":N, "exited":N, ...}. */
json_t		*pool_status(const struct pool *);
/* For /metrics: the pool's families. */
void		 pool_metrics(const struct pool *, struct evbuffer *);
/* For status: a JSON array describing every worker. */
json_t		*pool_describe(const struct pool *);
/* Why spawning stopped (NULL while healthy). */
const char	*pool_problem(const struct pool *);

#endif
