/*
 * Remote slots: workers on other hosts, offered by tgrunner-relay over
 * NATS (proto/NATS.md).  Each relay session is one worker of the pool, a
 * connection type whose frames travel over a reliable link (natsbus.h);
 * its slots are what the relay's own workers can take, and change as they
 * come and go.  So the router keeps every rule for them: a key's updates
 * one at a time and in order, no head-of-line blocking, affinity and
 * max_pending.  Calls they make go through the daemon's API client.
 *
 * A relay is lost when it is silent for relay_timeout, or when its
 * connection to the NATS server is gone: its updates run elsewhere with
 * attempt + 1.  Each session has an epoch, carried in every message;
 * whatever a lost session still sends is ignored, and it is told so.
 * While the daemon's own connection is down nobody is lost: remote work
 * pauses, and resumes with what was owed resent.
 */
#ifndef TG_REMOTE_H
#define TG_REMOTE_H

#include <jansson.h>

struct conf;
struct evbuffer;
struct event_base;
struct pool;
struct remote;

/* Accept relays on conf's nats_url for p; NULL (logged) on error. */
struct remote	*remote_new(struct event_base *, struct pool *,
		    const struct conf *);
/* Ends every session (their workers are the pool's, freed with it). */
void		 remote_free(struct remote *);
/* For status: {"connected":..., "relays":N, ...}. */
json_t		*remote_status(const struct remote *);
void		 remote_metrics(const struct remote *, struct evbuffer *);

#endif
