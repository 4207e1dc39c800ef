/*
 * The outbox (outbox.h).  An owed call goes through two queues of its own:
 * "unwritten" from the done frame until the end of the loop pass, when the
 * record that owes it has been written (outbox_flushed), then "sent" while
 * the API client has it.  The journal is the record; these lists only
 * carry the calls to the API client and let outbox_free() release them.
 */
#include "config.h"

#include <sys/queue.h>

#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "api.h"
#include "calls.h"
#include "durable.h"
#include "journal.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "router.h"
#include "xmalloc.h"

/* One owed call on its way to Telegram. */
struct ocall {
	struct outbox		*ob;
	uint64_t		 seq;
	int64_t			 update_id;
	char			*key;		/* NULL: unordered */
	char			*method;
	json_t			*params;	/* until handed to the API client */
	TAILQ_ENTRY(ocall)	 entry;
};

TAILQ_HEAD(ocallq, ocall);

struct outbox {
	struct api	*api;
	struct journal	*journal;
	struct durable	*durable;
	struct ocallq	 unwritten;	/* their record is not written yet */
	struct ocallq	 sent;		/* with the API client */
	uint64_t	 replayed;	/* queued again from the journal */
	uint64_t	 answered;	/* recorded as answered */
	uint64_t	 kept;		/* answered 401: owed still */
};

struct outbox *
outbox_new(struct api *api, struct journal *j, struct durable *du)
{
	struct outbox *ob = xcalloc(1, sizeof(*ob));

	ob->api = api;
	ob->journal = j;
	ob->durable = du;
	TAILQ_INIT(&ob->unwritten);
	TAILQ_INIT(&ob->sent);
	return ob;
}

static struct ocall *
ocall_new(struct outbox *ob, uint64_t seq, int64_t id, const char *key,
    const char *method, json_t *params)
{
	struct ocall *oc = xcalloc(1, sizeof(*oc));

	oc->ob = ob;
	oc->seq = seq;
	oc->update_id = id;
	oc->key = key != NULL ? xstrdup(key) : NULL;
	oc->method = xstrdup(method);
	oc->params = json_incref(params);
	return oc;
}

static void
ocall_free(struct ocall *oc)
{
	json_decref(oc->params);
	free(oc->key);
	free(oc->method);
	free(oc);
}

void
outbox_free(struct outbox *ob)
{
	struct ocall *oc;

	if (ob == NULL)
		return;
	while ((oc = TAILQ_FIRST(&ob->unwritten)) != NULL) {
		TAILQ_REMOVE(&ob->unwritten, oc, entry);
		ocall_free(oc);
	}
	while ((oc = TAILQ_FIRST(&ob->sent)) != NULL) {
		TAILQ_REMOVE(&ob->sent, oc, entry);
		ocall_free(oc);
	}
	free(ob);
}

/*
 * Telegram answered.  Every answer the API client gives is final (a 429
 * is retried inside it), but for 401: the token stopped working and the
 * daemon stops, so the call stays owed for the next start.
 */
static void
outbox_answered(void *arg, const struct api_result *r)
{
	struct ocall *oc = arg;
	struct outbox *ob = oc->ob;

	TAILQ_REMOVE(&ob->sent, oc, entry);
	if (!r->ok && r->error_code == 401) {
		log_errx("update=%lld seq=%" PRIu64 " method=%s: 401 %s; the "
		    "call stays owed in the journal", (long long)oc->update_id,
		    oc->seq, oc->method, r->description ? r->description : "");
		ob->kept++;
	} else {
		if (!r->ok)
			log_warnx("update=%lld seq=%" PRIu64 " method=%s: "
			    "attached call failed: %d %s",
			    (long long)oc->update_id, oc->seq, oc->method,
			    r->error_code, r->description ? r->description : "");
		journal_call_done(ob->journal, oc->seq);
		ob->answered++;
	}
	/* the answer is recorded at the end of the pass; then the slot frees */
	durable_dirty(ob->durable);
	ocall_free(oc);
}

/* Into the API client, behind the calls of its key. */
static void
outbox_send(struct outbox *ob, struct ocall *oc)
{
	int flags = API_NOLIMIT;

	if (journal_on_disk(ob->journal))
		flags |= API_HOLD;
	TAILQ_INSERT_TAIL(&ob->sent, oc, entry);
	if (api_call(ob->api, oc->key, oc->method, oc->params, flags,
	    outbox_answered, oc) == -1) {
		/* checked before it was journaled: cannot happen */
		log_errx("update=%lld seq=%" PRIu64 " method=%s: refused by "
		    "the API client; dropped", (long long)oc->update_id,
		    oc->seq, oc->method);
		TAILQ_REMOVE(&ob->sent, oc, entry);
		journal_call_done(ob->journal, oc->seq);
		ocall_free(oc);
		return;
	}
	/* serialised by api_call */
	json_decref(oc->params);
	oc->params = NULL;
}

/* A call of a done frame that cannot be made: said, and not owed. */
static int
outbox_call_ok(const struct job *job, size_t i, json_t *c)
{
	const char	*method = json_string_value(json_object_get(c, "method"));
	json_t		*params = json_object_get(c, "params");

	if (method != NULL && api_method_valid(method) &&
	    (params == NULL || json_is_object(params)))
		return 1;
	log_errx("update=%lld call=%zu method=%s: attached call dropped: not "
	    "a method name with an object of params", (long long)job->id, i,
	    method != NULL ? method : "?");
	return 0;
}

void
outbox_done(struct outbox *ob, const struct job *job, json_t *calls)
{
	const char	*key = calls_key(job);
	struct jcall_in	*in;
	struct ocall	*oc;
	uint64_t	 first;
	size_t		 i, n = 0;
	json_t		*c;

	if (json_array_size(calls) == 0) {
		journal_done(ob->journal, job->id);
		durable_dirty(ob->durable);
		return;
	}
	in = xcalloc(json_array_size(calls), sizeof(*in));
	json_array_foreach(calls, i, c) {
		if (!outbox_call_ok(job, i, c))
			continue;
		in[n].key = key;
		in[n].method = json_string_value(json_object_get(c, "method"));
		in[n].params = json_object_get(c, "params");
		n++;
	}
	/* the done mark and the calls: one record */
	journal_done_calls(ob->journal, job->id, in, n, time(NULL), &first);
	for (i = 0; i < n; i++) {
		oc = ocall_new(ob, first + i, job->id, key, in[i].method,
		    in[i].params);
		TAILQ_INSERT_TAIL(&ob->unwritten, oc, entry);
	}
	free(in);
	durable_dirty(ob->durable);
}

void
outbox_flushed(struct outbox *ob)
{
	struct ocall *oc;

	api_settle(ob->api);
	while ((oc = TAILQ_FIRST(&ob->unwritten)) != NULL) {
		TAILQ_REMOVE(&ob->unwritten, oc, entry);
		outbox_send(ob, oc);
	}
}

static void
outbox_replay_one(void *arg, const struct jcall_out *c)
{
	struct outbox *ob = arg;
	struct ocall *oc;
	json_t *params;

	params = json_loadb(c->params, c->len, JSON_ALLOW_NUL, NULL);
	if (!json_is_object(params)) {
		/* the journal checked it when it read the record */
		log_errx("update=%lld seq=%" PRIu64 ": owed call with bad "
		    "params; dropped", (long long)c->update_id, c->seq);
		journal_call_done(ob->journal, c->seq);
		json_decref(params);
		return;
	}
	oc = ocall_new(ob, c->seq, c->update_id, c->key, c->method, params);
	json_decref(params);
	outbox_send(ob, oc);
	ob->replayed++;
}

size_t
outbox_replay(struct outbox *ob)
{
	size_t n;

	n = journal_calls_replay(ob->journal, outbox_replay_one, ob);
	if (n > 0) {
		log_notice("replaying %zu call(s) owed from the journal, "
		    "before any new call of their keys", n);
		durable_dirty(ob->durable);
	}
	return n;
}

size_t
outbox_owed(const struct outbox *ob)
{
	return journal_calls_owed(ob->journal);
}

/* Seconds since the oldest owed call became owed; 0 if none. */
static int64_t
outbox_oldest_age(const struct outbox *ob)
{
	int64_t t = journal_calls_oldest(ob->journal), now = time(NULL);

	if (journal_calls_owed(ob->journal) == 0 || t > now)
		return 0;
	return now - t;
}

json_t *
outbox_status(const struct outbox *ob)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I}",
	    "owed", (json_int_t)outbox_owed(ob),
	    "oldest_age", (json_int_t)outbox_oldest_age(ob),
	    "replayed", (json_int_t)ob->replayed,
	    "answered", (json_int_t)ob->answered,
	    "kept", (json_int_t)ob->kept);
}

void
outbox_metrics(const struct outbox *ob, struct evbuffer *out)
{
	metrics_gauge(out, "tgrunner_outbox_owed", "Calls attached to done "
	    "that Telegram has not answered yet (kept in the journal).",
	    outbox_owed(ob));
	metrics_gauge(out, "tgrunner_outbox_oldest_seconds",
	    "Age of the oldest owed call.", (double)outbox_oldest_age(ob));
	metrics_counter(out, "tgrunner_outbox_replayed_total",
	    "Owed calls queued again from the journal at start.",
	    ob->replayed);
	metrics_counter(out, "tgrunner_outbox_answered_total",
	    "Owed calls whose answer was recorded.", ob->answered);
}
