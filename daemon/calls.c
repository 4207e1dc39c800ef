/* SPDX-License-Identifier: ISC */
/*
 * Workers' Bot API calls (calls.h).
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include <jansson.h>

#include "api.h"
#include "calls.h"
#include "conf.h"
#include "log.h"
#include "policy.h"
#include "pool.h"
#include "router.h"
#include "workerapi.h"
#include "xmalloc.h"

struct call_ctx {
	const struct calls	*calls;
	int			 worker_id;
	int			 getfile;
	json_t			*ref;
};

const char *
calls_key(const struct job *job)
{
	return job != NULL && job->nkeys > 0 ? job_key(job, 0) : NULL;
}

int
calls_policy(const struct calls *c, int worker_id, const char *method,
    json_t *params, int *code, char *desc, size_t descsz)
{
	/* one policy (policy.h) for call frames and endpoint requests alike */
	return policy_workerapi(c->policy, worker_id, method, params, code,
	    desc, descsz);
}

static void
calls_result(void *arg, const struct api_result *r)
{
	struct call_ctx		*cc = arg;
	const struct calls	*c = cc->calls;
	json_t			*result = r->result, *copy = NULL;

	/* a local server's file_path holds the token: the worker's is relative */
	if (r->ok && cc->getfile && c->conf->local_files_dir != NULL &&
	    result != NULL) {
		copy = json_deep_copy(result);
		if (copy != NULL && workerapi_fix_file_path(
		    c->conf->local_files_dir, c->token, copy))
			result = copy;
	}
	pool_result(c->pool, cc->worker_id, cc->ref, r->ok, result,
	    r->error_code, r->description ? r->description : "(no description)",
	    r->parameters, r->retry_after);
	json_decref(copy);
	json_decref(cc->ref);
	free(cc);
}

/* Past a fair-queue bound: Telegram's own answer to a flood, in advance. */
static void
calls_bounded(struct pool *pool, int worker_id, json_t *ref, int bound,
    const char *key)
{
	char	 desc[256];
	json_t	*params;

	snprintf(desc, sizeof(desc), "Too Many Requests: retry after %d "
	    "(tgrunner: %s)", API_BOUND_RETRY_AFTER, bound == API_BOUND_KEY ?
	    "too many calls queued for this chat, max_calls_per_key" :
	    "too many calls queued by this worker, max_calls_per_worker");
	if ((params = json_pack("{s:i}", "retry_after",
	    API_BOUND_RETRY_AFTER)) == NULL)
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	log_debug("worker=%d key=%s: call refused: %s", worker_id,
	    key != NULL ? key : "-", desc);
	pool_result(pool, worker_id, ref, 0, NULL, 429, desc, params,
	    API_BOUND_RETRY_AFTER);
	json_decref(params);
}

void
calls_frame(const struct calls *c, int worker_id, json_t *ref,
    const struct job *job, const char *method, json_t *params)
{
	struct api_from	 from = { .worker = worker_id };
	struct call_ctx	*cc;
	char		 desc[POLICY_DESC_MAX];
	int		 code, bound;

	if (calls_policy(c, worker_id, method, params, &code, desc,
	    sizeof(desc)) == -1) {
		pool_result(c->pool, worker_id, ref, 0, NULL, code, desc, NULL,
		    0);
		return;
	}
	if ((bound = api_bounded(c->api, calls_key(job), worker_id)) != 0) {
		calls_bounded(c->pool, worker_id, ref, bound, calls_key(job));
		return;
	}
	cc = xcalloc(1, sizeof(*cc));
	cc->calls = c;
	cc->worker_id = worker_id;
	cc->getfile = method != NULL && strcasecmp(method, "getFile") == 0;
	cc->ref = json_incref(ref);
	from.update = job != NULL ? job->id : 0;
	if (api_call_from(c->api, &from, calls_key(job), method, params, 0,
	    calls_result, cc) == -1) {
		pool_result(c->pool, worker_id, ref, 0, NULL, 503,
		    "call queue full", NULL, 0);
		json_decref(cc->ref);
		free(cc);
	}
}
