/*
 * The method policy: which Bot API methods a worker may call through the
 * daemon.  One check for every way a worker's call arrives (call frames,
 * the calls attached to done, the workers' Bot API endpoint), so that no
 * path is more permissive than another.
 *
 * Reserved to the daemon, whatever the configuration: getUpdates,
 * setWebhook, deleteWebhook, logOut and close.  A worker that polls takes
 * (and confirms) other chats' updates away from the daemon; a webhook stops
 * polling; logOut and close end the bot's session with the Bot API server.
 * Telegram matches method names without regard to case, so does this.
 * Then worker_methods_deny refuses what it lists, and a non-empty
 * worker_methods_allow refuses what it does not list (least privilege).
 *
 * A refused call never reaches Telegram: it is answered as Telegram would,
 * error_code 403 and a description that names the rule ("tgrunner:
 * getUpdates is reserved for the daemon"), logged once per worker and
 * method, and counted for /metrics.
 */
#ifndef TG_POLICY_H
#define TG_POLICY_H

#include <stddef.h>

#include <jansson.h>

struct conf;
struct evbuffer;
struct policy;

#define POLICY_CODE		403
#define POLICY_DESC_MAX		192

/*
 * A policy reading conf at each check (borrowed, must outlive it: a
 * reload that swaps its lists applies to the next call).  Free with
 * policy_free().
 */
struct policy	*policy_new(const struct conf *);
void		 policy_free(struct policy *);
/*
 * May worker_id call method?  0, or -1 with *code (403) and desc filled
 * (what the worker is told).  The first refusal of a method for a worker
 * is logged, the rest only counted.
 */
int		 policy_check(struct policy *, int worker_id, const char *method,
		    int *code, char *desc, size_t descsz);
/*
 * policy_check() in the shape of workerapi_ops.policy, for the workers' Bot
 * API endpoint: arg is the struct policy, params are not looked at.
 */
int		 policy_workerapi(void *arg, int worker_id, const char *method,
		    json_t *params, int *code, char *desc, size_t descsz);
/*
 * The calls attached to a done frame (a JSON array, borrowed), without
 * those the policy refuses (logged with update): a new reference, the
 * same array when nothing was refused.
 */
json_t		*policy_filter_calls(struct policy *, int worker_id,
		    long long update, json_t *calls);
/* The worker is gone: forget which refusals were logged for it. */
void		 policy_forget(struct policy *, int worker_id);
/* Is method (any case) one of the reserved ones?  Its canonical name, or NULL. */
const char	*policy_reserved(const char *method);
/* For /metrics: tgrunner_worker_calls_refused_total. */
void		 policy_metrics(const struct policy *, struct evbuffer *);
/* Refusals so far, for status. */
unsigned long long policy_refused(const struct policy *);

#endif
