/*
 * The worker pool: spawns and supervises worker processes (prefork), speaks
 * the protocol with them over a socketpair (fd 3 in the child), hands them
 * jobs and reports back what became of each job.  Jobs are owned by the
 * router; the pool only borrows a job while it runs (job->owner is the
 * pool's record of it).
 */
#ifndef TG_WORKER_H
#define TG_WORKER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

struct event_base;
struct evbuffer;
struct conf;
struct job;
struct pool;
struct worker;

struct pool_ops {
	/* The worker finished the job; calls (may be NULL) is borrowed. */
	void	(*done)(void *arg, struct job *, struct worker *, json_t *calls);
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
};

struct pool_stats {
	uint64_t	spawned, exited, crashed, protocol_errors, timeouts,
			recycled;
};

struct pool	*pool_new(struct event_base *, const struct conf *,
		    const struct pool_ops *, void *arg);
void		 pool_free(struct pool *);
/* bot: the getMe object sent in welcome (a reference is taken). */
void		 pool_start(struct pool *, json_t *bot);
/*
 * Accept external workers on a Unix socket at path (mode 0660; peers
 * checked with SO_PEERCRED against conf->listen_allow).  0 or -1 (logged).
 */
int		 pool_listen(struct pool *, const char *path);
/*
 * The configuration changed (already validated): grow or shrink the pool;
 * with replace (a new worker_command), every worker is told to finish what
 * it holds and exit, and a new one is started in its place at once.
 */
void		 pool_reconfigure(struct pool *, const struct conf *, int replace);
/*
 * Give job to a worker with a free slot, preferring w (may be NULL).
 * Returns 0, or -1 when no slot is free.
 */
int		 pool_dispatch(struct pool *, struct job *, struct worker *w);
size_t		 pool_free_slots(const struct pool *);
size_t		 pool_running(const struct pool *);	/* jobs in workers */
/*
 * Answer a worker's call frame.  The worker may be gone by now (then the
 * result is dropped): workers are named by id, never by pointer, here.
 */
void		 pool_result(struct pool *, int worker_id, json_t *ref, int ok,
		    json_t *result, int error_code, const char *description,
		    json_t *parameters, int retry_after);
/* Send shutdown to every worker; spawn no more. */
void		 pool_shutdown(struct pool *, int64_t deadline_ms);
/* Wall-clock ms (CLOCK_REALTIME): the unit of deadlines on the wire. */
int64_t		 wall_ms(void);
/* SIGKILL every worker (shutdown deadline passed). */
void		 pool_kill(struct pool *);
/* Number of worker processes still alive. */
size_t		 pool_alive(const struct pool *);
/* Reap exited children (SIGCHLD). */
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
