/*
 * Workers' Bot API calls (calls.h).
 */
#include "config.h"

#include <stdlib.h>

#include <jansson.h>

#include "api.h"
#include "calls.h"
#include "log.h"
#include "pool.h"
#include "router.h"
#include "xmalloc.h"

struct call_ctx {
	struct pool	*pool;
	int		 worker_id;
	json_t		*ref;
};

const char *
calls_key(const struct job *job)
{
	return job != NULL && job->nkeys > 0 ? job_key(job, 0) : NULL;
}

static void
calls_result(void *arg, const struct api_result *r)
{
	struct call_ctx *cc = arg;

	pool_result(cc->pool, cc->worker_id, cc->ref, r->ok, r->result,
	    r->error_code, r->description ? r->description : "(no description)",
	    r->parameters, r->retry_after);
	json_decref(cc->ref);
	free(cc);
}

void
calls_frame(struct api *api, struct pool *pool, int worker_id, json_t *ref,
    const struct job *job, const char *method, json_t *params)
{
	struct call_ctx *cc = xcalloc(1, sizeof(*cc));

	cc->pool = pool;
	cc->worker_id = worker_id;
	cc->ref = json_incref(ref);
	if (api_call(api, calls_key(job), method, params, 0, calls_result,
	    cc) == -1) {
		pool_result(pool, worker_id, ref, 0, NULL, 503,
		    "call queue full", NULL, 0);
		json_decref(cc->ref);
		free(cc);
	}
}
