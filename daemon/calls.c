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

/* The key whose order a job's calls keep: its first. */
static const char *
calls_key(const struct job *job)
{
	return job != NULL && job->nkeys > 0 ? job_key(job, 0) : NULL;
}

int
calls_policy(const struct calls *c, int worker_id, const char *method,
    json_t *params, int *code, char *desc, size_t descsz)
{
	/*
	 * Every method goes to Telegram for now.  The method policy of #12
	 * (methods reserved for the daemon, worker_methods_allow/deny) is
	 * decided here, for call frames and endpoint requests alike.
	 */
	(void)c;
	(void)worker_id;
	(void)method;
	(void)params;
	(void)code;
	(void)desc;
	(void)descsz;
	return 0;
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

void
calls_frame(const struct calls *c, int worker_id, json_t *ref,
    const struct job *job, const char *method, json_t *params)
{
	struct call_ctx	*cc;
	char		 desc[WORKERAPI_DESC_MAX];
	int		 code;

	if (calls_policy(c, worker_id, method, params, &code, desc,
	    sizeof(desc)) == -1) {
		pool_result(c->pool, worker_id, ref, 0, NULL, code, desc, NULL,
		    0);
		return;
	}
	cc = xcalloc(1, sizeof(*cc));
	cc->calls = c;
	cc->worker_id = worker_id;
	cc->getfile = method != NULL && strcasecmp(method, "getFile") == 0;
	cc->ref = json_incref(ref);
	if (api_call(c->api, calls_key(job), method, params, 0, calls_result,
	    cc) == -1) {
		pool_result(c->pool, worker_id, ref, 0, NULL, 503,
		    "call queue full", NULL, 0);
		json_decref(cc->ref);
		free(cc);
	}
}

/* A call attached to done finished: nobody waits, only errors are worth a line. */
static void
calls_done_result(void *arg, const struct api_result *r)
{
	if (!r->ok)
		log_warnx("update=%lld: attached call failed: %d %s",
		    (long long)(intptr_t)arg, r->error_code,
		    r->description ? r->description : "");
}

void
calls_after_done(struct api *api, const struct job *job, json_t *calls)
{
	const char *method;
	json_t *c;
	size_t i;

	json_array_foreach(calls, i, c) {
		method = json_string_value(json_object_get(c, "method"));
		/* owed since the update is done: never refused for room */
		if (api_call(api, calls_key(job), method, json_object_get(c,
		    "params"), API_NOLIMIT, calls_done_result,
		    (void *)(intptr_t)job->id) == -1)
			log_errx("update=%lld call=%zu method=%s: attached call "
			    "dropped: not a method name", (long long)job->id,
			    i, method != NULL ? method : "?");
	}
}
