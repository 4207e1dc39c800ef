/* SPDX-License-Identifier: ISC */
/*
 * Workers' Bot API calls, between the pool and the API client.  A call
 * frame is answered by a result frame to the worker that sent it (named by
 * id: it may be gone by then, and the result is dropped).  Calls attached
 * to done are owed and go through the outbox (outbox.h), queued behind
 * earlier calls of the update's first key: the key itself is free at once,
 * its replies still leave in order.  Both run in the key's order with the
 * other calls (api.h), and with those of the Bot API endpoint
 * (workerapi.h), which share the method policy and the getFile rewrite
 * below.
 *
 * Every call first passes the method policy (policy.h): the calls attached
 * to done before they are journaled, so a refused one is never owed.  A
 * call frame (and an endpoint call) also passes the fair-queue bounds of
 * its key and worker (api_bounded), past which it is answered at once with
 * a 429 and retry_after.  The calls attached to done are owed: the bounds
 * never refuse them, they hold back the key's next updates instead
 * (tgrunnerd.c).
 */
#ifndef TG_CALLS_H
#define TG_CALLS_H

#include <stddef.h>

#include <jansson.h>

struct api;
struct conf;
struct job;
struct policy;
struct pool;

/* What workers' calls go through; all borrowed, the daemon's. */
struct calls {
	struct api		*api;
	struct pool		*pool;
	const struct conf	*conf;		/* read at each call (reload) */
	const char		*token;
	struct policy		*policy;
};

/*
 * A call frame from worker_id for job (NULL: outside any update).  ref,
 * method and params are borrowed.  Refused at once: 403 by the method
 * policy, 429 past a fair-queue bound, 503 when the call queue is full.
 */
void	calls_frame(const struct calls *, int worker_id, json_t *ref,
	    const struct job *, const char *method, json_t *params);
/*
 * The method policy, one for every way a worker calls (call frames, the
 * Bot API endpoint): 0 lets worker_id call method(params); -1 refuses it,
 * with an HTTP-like *code (4xx) and desc (a NUL-terminated description of
 * at most descsz bytes).
 */
int	calls_policy(const struct calls *, int worker_id, const char *method,
	    json_t *params, int *code, char *desc, size_t descsz);
/* The key whose order a job's calls keep (its first), or NULL. */
const char *calls_key(const struct job *);

#endif
