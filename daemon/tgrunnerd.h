/* SPDX-License-Identifier: ISC */
/*
 * tgrunnerd: the parent of everything.  One process, one libevent loop:
 * poller -> journal -> router -> worker pool, and back.
 */
#ifndef TG_TGRUNNERD_H
#define TG_TGRUNNERD_H

#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "calls.h"
#include "conf.h"
#include "metrics.h"

struct api;
struct control;
struct deadletter;
struct durable;
struct metrics;
struct outbox;
struct event;
struct event_base;
struct http;
struct journal;
struct listener;
struct policy;
struct poller;
struct pool;
struct remote;
struct tgd_held;
struct router;
struct workerapi;

/* Update types keys.c does not know, named in the log once each. */
#define TGD_TYPES_MAX		32
#define TGD_TYPE_NAME		64

/* Updates the journal could not hold, dead-lettered: never twice. */
#define TGD_OVERSIZE_RING	16

/* sysexits-style statuses besides EXIT_CONFIG (conf.h) and EXIT_BADTOKEN (poller.h) */
#define EXIT_STATE	73	/* EX_CANTCREAT: state_dir unusable */

enum tgd_state {
	TGD_STARTING,		/* getMe, replay */
	TGD_RUNNING,
	TGD_DRAINING,		/* operator asked to stop fetching; workers run on */
	TGD_STOPPING		/* SIGTERM: finishing in-flight work */
};

struct tgd_stats {
	uint64_t	fetched, dispatched, done, failed, retried, dead,
			duplicates, replayed;
};

struct tgd {
	struct event_base	*base;
	struct conf		 conf;
	char			*token;
	struct http		*http;
	struct api		*api;
	struct calls		 calls;		/* workers' calls, both ways */
	struct workerapi	*workerapi;	/* worker_api_listen, or NULL */
	struct control		*control;
	struct deadletter	*deadletter;
	struct metrics		*metrics;
	struct journal		*journal;
	struct durable		*durable;	/* the journal on the loop */
	struct outbox		*outbox;	/* calls attached to done */
	struct router		*router;
	struct poller		*poller;
	struct pool		*pool;
	struct listener		*listener;	/* `listen`: external workers */
	struct policy		*policy;	/* which methods workers may call */
	struct tgd_held		*held;		/* updates of keys past their bound */
	size_t			 nheld;
	struct remote		*remote;	/* `nats_url`: relays' slots */
	json_t			*bot;
	enum tgd_state		 state;
	time_t			 started;
	int			 exit_status;
	int			 deadline_passed;	/* shutdown_timeout */
	int			 force_exit;	/* and kill_grace after it */
	int			 outbox_replayed;	/* at the first ready */
	char			 types[TGD_TYPES_MAX][TGD_TYPE_NAME];
	size_t			 ntypes;
	int			 types_full;
	int64_t			 oversize[TGD_OVERSIZE_RING];
	size_t			 noversize;
	struct event		*ev_sig[6];
	struct event		*ev_shutdown;	/* shutdown_timeout */
	struct event		*ev_status;	/* periodic STATUS= / watchdog */
	struct tgd_stats	 stats;
	struct hist		 h_dispatch;
	struct hist		 h_handler;
};

/* tgrunnerd.c */
const char	*tgd_state_str(enum tgd_state);
/* Give ready jobs to free slots. */
void		 tgd_dispatch(struct tgd *);
/* Journal json[0..len) again as update id and queue it: 0, or -1. */
int		 tgd_requeue(void *d, int64_t id, const char *json, size_t len);
/* Re-read the configuration; the outcome as a control answer (new ref). */
json_t		*tgd_reload(struct tgd *);
/* Replace the workers one at a time; source names who asked (for the log). */
json_t		*tgd_restart_workers(struct tgd *, const char *source);

/* commands.c: the control socket's table, and /metrics */
struct evbuffer;
struct control_cmd;
extern const struct control_cmd tgd_commands[];
int		 tgd_control_state(void *d, const char **name);
void		 tgd_metrics(void *d, struct evbuffer *);

#endif
