/*
 * Bot API calls on behalf of workers, so that workers never need the token
 * or an HTTP client.  Calls that carry the same session key run one at a
 * time in the order issued (a chat's replies never overtake each other);
 * other keys' calls run in parallel, up to a bounded number in flight.
 */
#ifndef TG_API_H
#define TG_API_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct event_base;
struct http;
struct conf;
struct api;

#define API_MAX_INFLIGHT	32	/* concurrent HTTP requests */
#define API_MAX_QUEUED		10000	/* calls waiting, all keys together */
#define API_MAX_RETRIES		3	/* after 429 / transient errors */

struct api_result {
	int		 ok;
	json_t		*result;	/* ok: the "result" member (borrowed) */
	int		 error_code;	/* !ok: Telegram's, or 5xx/599 of ours */
	const char	*description;
	json_t		*parameters;	/* !ok: Telegram's "parameters" (borrowed) */
	int		 retry_after;
};

/* Called exactly once per accepted call, never from inside api_call(). */
typedef void (*api_cb)(void *arg, const struct api_result *);

struct api	*api_new(struct event_base *, struct http *, const struct conf *,
		    const char *token);
/* Drops queued calls without calling their callbacks. */
void		 api_free(struct api *);
/*
 * Queue method(params) behind the calls already queued for key (NULL: no
 * ordering).  params is borrowed (serialised at once).  Returns 0, or -1
 * when the queue is full or the method name is invalid (cb not called).
 */
int		 api_call(struct api *, const char *key, const char *method,
		    json_t *params, api_cb cb, void *arg);
size_t		 api_queued(const struct api *);
size_t		 api_inflight(const struct api *);

struct api_stats {
	uint64_t	calls, ok, errors, retries, rejected;
};
const struct api_stats *api_stats(const struct api *);

#endif
