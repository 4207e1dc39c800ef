/* SPDX-License-Identifier: ISC */
/*
 * One worker of the pool, and what a connection type implements.
 *
 * Every worker speaks the same protocol (proto/PROTOCOL.md) and goes
 * through the same states; how its frames travel and how it is made to go
 * away is its connection type's: a spawned child on a socketpair
 * (child.c), a peer on the listen socket (listener.c), and whatever comes
 * next (frames over NATS from a relay) without a change to the pool.
 *
 * A connection type:
 *   - creates the worker with pool_worker_new(), giving its ops and its
 *     own state (conn);
 *   - says in ops->api_local whether the worker's process runs on this
 *     host: only such a worker can reach the daemon's Bot API endpoint on
 *     loopback, and gets a credential for it (pool_worker_api(), at the
 *     latest in its welcome);
 *   - hands every frame the peer sends to worker_input(), and reports a
 *     connection that closed with worker_closed();
 *   - once nothing more can be sent to the peer (its connection closed),
 *     calls pool_worker_unreachable(): the deadlines of its updates stop,
 *     as it can no longer be told to cancel;
 *   - once no process can still work on the worker's updates (a child
 *     reaped, a peer disconnected, a relay declared lost), calls
 *     pool_worker_gone(): its updates are given back and it is freed.
 *     Never from inside its own ops: from the loop.
 * Socket types share the framing of struct wsock below.
 */
#ifndef TG_WORKER_H
#define TG_WORKER_H

#include <sys/queue.h>
#include <sys/types.h>

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

struct bufferevent;
struct conf;
struct event;
struct event_base;
struct frame;
struct pool;
struct pool_stats;
struct run;
struct worker;

#define WORKER_API_TOKEN_MAX	128	/* a credential with its NUL */

enum worker_state {
	W_STARTING,		/* connected, waiting for hello */
	W_READY,		/* taking updates */
	W_DRAINING,		/* no new updates; shutdown once idle */
	W_KILLING,		/* told to go (signal, disconnect), waiting */
	W_DEAD			/* gone, about to be freed */
};

/*
 * The connection type's side of a worker.  sig says how hard a worker is
 * made to go: 0 it is leaving by itself (give it kill_grace), SIGTERM
 * (then SIGKILL after kill_grace), SIGKILL now.  A type without signals
 * (a peer) disconnects in every case.
 */
struct worker_ops {
	const char	*kind;		/* for logs */
	/*
	 * Its process runs on this host (a child, a peer on a Unix socket):
	 * it is given the Bot API endpoint.  0 for a process elsewhere,
	 * which could not reach loopback (its welcome has no api_root).
	 */
	int		 api_local;
	/* Queue one encoded frame (ends with '\n').  0, or -1 (not sent). */
	int		(*send)(struct worker *, const char *line, size_t len);
	/* Stop talking to it, and make it go. */
	void		(*close)(struct worker *, int sig);
	/* Make it go, but still take what it sends (a late done counts). */
	void		(*terminate)(struct worker *, int sig);
	/* Could it still be working on an update? */
	int		(*alive)(const struct worker *);
	/* Add its members to its status object ("external": ...). */
	void		(*describe)(const struct worker *, json_t *);
	/* Release conn (the worker is being freed; kill what is left). */
	void		(*free)(struct worker *);
};

struct worker {
	struct pool		*pool;
	const struct worker_ops	*ops;
	void			*conn;		/* the connection type's */
	int			 id;
	pid_t			 pid;		/* the peer's, for logs; 0 unknown/reaped */
	enum worker_state	 state;
	int			 spawned;	/* started by the pool: counts for `workers` */
	unsigned		 gen;		/* the pool's generation when it joined */
	int			 slots;
	int			 busy;
	int			 avail;		/* on the pool's list of free slots */
	int			 throttled;	/* held back: no new updates */
	uint64_t		 served;
	uint64_t		 limit;		/* recycle after this many, 0 = never */
	struct event		*exit_timer;	/* shutdown sent: the deadline to go */
	time_t			 started;
	int			 hello;		/* said hello: not an early death */
	int64_t			 shutdown_at;	/* draining: deadline for shutdown */
	int			 shutdown_sent;
	int			 retired;	/* the pool asked it to go */
	int64_t			 grace;		/* ms from cancel to terminate; 0: kill_grace */
	int			 complaints;	/* frames tolerated, not obeyed */
	char			 cut[192];	/* why the daemon cut it off */
	const char		*api_root;	/* the Bot API endpoint, or NULL */
	char			 api_token[WORKER_API_TOKEN_MAX]; /* its credential */
	struct event		*hello_timer;
	TAILQ_HEAD(, run)	 runs;		/* its jobs */
	TAILQ_ENTRY(worker)	 entry;		/* the pool's workers */
	TAILQ_ENTRY(worker)	 aentry;	/* the pool's free slots */
};

/* --- for connection types (pool.c) --------------------------------------- */

/*
 * A new worker in state W_STARTING, owning conn through ops->free; its
 * hello_timeout runs.  NULL when the pool is shutting down (conn is then
 * still the caller's).
 */
struct worker	*pool_worker_new(struct pool *, const struct worker_ops *,
		    void *conn, pid_t pid);
/*
 * Nothing can still work on w's updates: each is reported failed (retry)
 * with why (or "timed out" if it was), and w is freed.  how: WORKER_CRASHED
 * counts it as a crash, WORKER_EARLY as a death before hello (towards
 * giving up on worker_command).  The caller then calls pool_capacity().
 */
#define WORKER_CRASHED	0x1
#define WORKER_EARLY	0x2
#define WORKER_UNSTARTED 0x4	/* never ran (its start failed): not counted */
void		 pool_worker_gone(struct worker *, const char *why, int how);
/*
 * Nothing more can be sent to w: the deadlines of what it holds stop (no
 * cancel it could not hear, no timeout reported for a worker cut off);
 * its updates come back with pool_worker_gone().
 */
void		 pool_worker_unreachable(struct worker *);
/*
 * Give w the Bot API endpoint (pool_ops api_grant), once: w->api_root and
 * w->api_token are set from now on, or stay empty when w's process is not
 * on this host (api_local) or there is no endpoint.  Before a child's
 * environment is built, or at hello.
 */
void		 pool_worker_api(struct worker *);
/* Tell the pool's user that slots may have appeared. */
void		 pool_capacity(struct pool *);
struct event_base *pool_base(const struct pool *);
const struct conf *pool_conf(const struct pool *);
struct pool_stats *pool_counters(struct pool *);
/* Still taking workers (not shutting down)? */
int		 pool_accepting(const struct pool *);

/* --- what frames mean to the pool (pool.c), for worker.c ----------------- */

/* w's free slots changed from before (a state or busy change). */
void		 pool_slots_changed(struct worker *, int before);
/* w said hello and was welcomed: it takes updates now. */
void		 pool_worker_ready(struct worker *);
json_t		*pool_bot(const struct pool *);
/*
 * done / fail / call for job id: 0, or -1 if w does not hold id (nothing
 * happened: what the worker is told is the protocol's business).
 */
int		 pool_run_done(struct worker *, int64_t id, json_t *calls);
int		 pool_run_failed(struct worker *, int64_t id, const char *why,
		    int retry);
int		 pool_run_call(struct worker *, int64_t id, json_t *ref,
		    const char *method, json_t *params);

/* --- the protocol (worker.c) --------------------------------------------- */

const char	*worker_state_str(enum worker_state);
int		 worker_free_slots(const struct worker *);
/* One place where states change: the pool's free slots follow. */
void		 worker_set_state(struct worker *, enum worker_state);
/* A frame from the peer (decoded, with its limits checked). */
void		 worker_input(struct worker *, struct frame *);
/* The peer closed its end, or the connection failed. */
void		 worker_closed(struct worker *);
/*
 * Cut w off for breaking the protocol (logged, counted, remembered in
 * w->cut); before hello, that is a refused hello.
 */
void		 worker_protocol_error(struct worker *, const char *why);
int		 worker_send_frame(struct worker *, const struct frame *);
/*
 * w sent what (a done, a call, ...) for update id, which it does not hold:
 * tolerated, not obeyed (outcome says what became of it); logged the first
 * few times per worker only.
 */
void		 worker_complain(struct worker *, const char *what, int64_t id,
		    const char *outcome);
/*
 * No more updates for w; shutdown once it holds none.  deadline: when it
 * must be gone (wall ms), or 0 for shutdown_timeout after the shutdown.
 */
void		 worker_drain(struct worker *, int64_t deadline);
/* The type's close and terminate (see struct worker_ops). */
void		 worker_close(struct worker *, int sig);
void		 worker_terminate(struct worker *, int sig);

/*
 * Newline-delimited frames over a stream socket, for the socket types: a
 * bufferevent whose input is cut into frames (each at most
 * PROTO_MAX_FRAME) for worker_input(), closes reported to worker_closed().
 */
struct wsock {
	struct worker		*w;
	struct bufferevent	*bev;		/* NULL once closed */
};

/* Frames on fd (non-blocking, owned from now on) for w. */
void		 wsock_open(struct wsock *, struct worker *, int fd);
int		 wsock_send(struct wsock *, const char *line, size_t len);
/*
 * Read and handle what the socket still holds (the peer has exited, or a
 * write to it failed); a starting or ready worker goes to W_KILLING.
 */
void		 wsock_drain(struct wsock *);
void		 wsock_close(struct wsock *);

#endif
