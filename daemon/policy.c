/*
 * The method policy (policy.h).
 *
 * The lists are read from the configuration's strings at each check: they
 * are short, a reload swaps them, and a scan with strncasecmp costs less
 * than the call it guards.  What was logged is remembered per worker in a
 * small table (at most POLICY_LOG_MAX methods each), so that a worker
 * trying one name after another cannot flood the log either.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <jansson.h>
#include <uthash.h>

#include "conf.h"
#include "log.h"
#include "metrics.h"
#include "policy.h"
#include "xmalloc.h"

#define POLICY_LOG_MAX		16	/* refused methods logged per worker */
#define POLICY_METHOD_MAX	64

/* Why a call was refused: the rows of the metric. */
enum policy_rule { RULE_RESERVED, RULE_DENY, RULE_ALLOW, RULE_COUNT };

static const char *const policy_rule_names[RULE_COUNT] = {
	"reserved", "worker_methods_deny", "worker_methods_allow"
};

/* Reserved to the daemon, as Telegram spells them (the metric's labels). */
static const char *const policy_reserved_names[] = {
	"getUpdates", "setWebhook", "deleteWebhook", "logOut", "close"
};
#define POLICY_NRESERVED \
	(sizeof(policy_reserved_names) / sizeof(policy_reserved_names[0]))

struct pworker {
	int		 id;
	int		 nlogged;
	char		 logged[POLICY_LOG_MAX][POLICY_METHOD_MAX + 1];
	UT_hash_handle	 hh;
};

struct policy {
	const struct conf	*conf;
	struct pworker		*workers;
	unsigned long long	 reserved[POLICY_NRESERVED];
	unsigned long long	 by_rule[RULE_COUNT];
};

struct policy *
policy_new(const struct conf *conf)
{
	struct policy *p = xcalloc(1, sizeof(*p));

	p->conf = conf;
	return p;
}

void
policy_free(struct policy *p)
{
	struct pworker *w, *tw;

	if (p == NULL)
		return;
	HASH_ITER(hh, p->workers, w, tw) {
		HASH_DEL(p->workers, w);
		free(w);
	}
	free(p);
}

static int
policy_reserved_index(const char *method)
{
	size_t i;

	for (i = 0; i < POLICY_NRESERVED; i++)
		if (strcasecmp(method, policy_reserved_names[i]) == 0)
			return (int)i;
	return -1;
}

const char *
policy_reserved(const char *method)
{
	int i = policy_reserved_index(method);

	return i == -1 ? NULL : policy_reserved_names[i];
}

/* Is method in list ("a, b c": commas and/or blanks), in any case? */
static int
policy_listed(const char *list, const char *method)
{
	size_t n, len = strlen(method);

	if (list == NULL)
		return 0;
	for (;;) {
		list += strspn(list, ", \t");
		if (*list == '\0')
			return 0;
		n = strcspn(list, ", \t");
		if (n == len && strncasecmp(list, method, n) == 0)
			return 1;
		list += n;
	}
}

/* Log the first refusal of method for worker_id (POLICY_LOG_MAX of them). */
static void
policy_log(struct policy *p, int worker_id, const char *method,
    const char *desc)
{
	struct pworker	*w;
	int		 i;

	HASH_FIND_INT(p->workers, &worker_id, w);
	if (w == NULL) {
		w = xcalloc(1, sizeof(*w));
		w->id = worker_id;
		HASH_ADD_INT(p->workers, id, w);
	}
	for (i = 0; i < w->nlogged && i < POLICY_LOG_MAX; i++)
		if (strcmp(w->logged[i], method) == 0)
			return;
	if (w->nlogged > POLICY_LOG_MAX)
		return;
	if (w->nlogged++ == POLICY_LOG_MAX) {
		log_warnx("worker=%d: more methods refused by the policy; not "
		    "logging them any more (see tgrunner_worker_calls_refused_"
		    "total)", worker_id);
		return;
	}
	snprintf(w->logged[w->nlogged - 1], sizeof(w->logged[0]), "%s",
	    method);
	log_warnx("worker=%d method=%s: call refused: %s (logged once per "
	    "worker and method)", worker_id, method, desc);
}

/* The rule that refuses method, with desc filled; -1: none does. */
static int
policy_rule(const struct policy *p, const char *method, int *reserved,
    char *desc, size_t descsz)
{
	const struct conf *c = p->conf;

	if ((*reserved = policy_reserved_index(method)) != -1) {
		snprintf(desc, descsz, "tgrunner: %s is reserved for the "
		    "daemon", policy_reserved_names[*reserved]);
		return RULE_RESERVED;
	}
	if (policy_listed(c->worker_methods_deny, method)) {
		snprintf(desc, descsz, "tgrunner: %s is refused by "
		    "worker_methods_deny", method);
		return RULE_DENY;
	}
	if (c->worker_methods_allow != NULL &&
	    !policy_listed(c->worker_methods_allow, method)) {
		snprintf(desc, descsz, "tgrunner: %s is not in "
		    "worker_methods_allow", method);
		return RULE_ALLOW;
	}
	return -1;
}

int
policy_check(struct policy *p, int worker_id, const char *method, int *code,
    char *desc, size_t descsz)
{
	char	 shown[POLICY_METHOD_MAX + 1];
	int	 rule, reserved;

	/* the callers let only [A-Za-z0-9_]{1,64} through; a log stays short */
	snprintf(shown, sizeof(shown), "%s", method);
	if ((rule = policy_rule(p, shown, &reserved, desc, descsz)) == -1)
		return 0;
	p->by_rule[rule]++;
	if (reserved != -1)
		p->reserved[reserved]++;
	*code = POLICY_CODE;
	policy_log(p, worker_id, shown, desc);
	return -1;
}

int
policy_workerapi(void *arg, int worker_id, const char *method,
    json_t *params, int *code, char *desc, size_t descsz)
{
	(void)params;
	return policy_check(arg, worker_id, method, code, desc, descsz);
}

json_t *
policy_filter_calls(struct policy *p, int worker_id, long long update,
    json_t *calls)
{
	char		 desc[POLICY_DESC_MAX] = "no method name";
	const char	*method;
	json_t		*out = NULL, *c;
	size_t		 i;
	int		 code;

	json_array_foreach(calls, i, c) {
		method = json_string_value(json_object_get(c, "method"));
		if (method != NULL && policy_check(p, worker_id, method, &code,
		    desc, sizeof(desc)) == 0) {
			if (out != NULL && json_array_append(out, c) == -1)
				fatalx(EXIT_NOMEM, "%s: out of memory",
				    __func__);
			continue;
		}
		/* logged once per worker and method by policy_check() */
		log_debug("update=%lld call=%zu method=%s: attached call not "
		    "made: %s", update, i, method != NULL ? method : "?", desc);
		if (out == NULL) {
			/* the calls before this one were allowed */
			if ((out = json_array()) == NULL)
				fatalx(EXIT_NOMEM, "%s: out of memory",
				    __func__);
			while (json_array_size(out) < i)
				json_array_append(out, json_array_get(calls,
				    json_array_size(out)));
		}
	}
	return out != NULL ? out : json_incref(calls);
}

void
policy_forget(struct policy *p, int worker_id)
{
	struct pworker *w;

	HASH_FIND_INT(p->workers, &worker_id, w);
	if (w != NULL) {
		HASH_DEL(p->workers, w);
		free(w);
	}
}

unsigned long long
policy_refused(const struct policy *p)
{
	unsigned long long n = 0;
	int i;

	for (i = 0; i < RULE_COUNT; i++)
		n += p->by_rule[i];
	return n;
}

void
policy_metrics(const struct policy *p, struct evbuffer *out)
{
	size_t i;

	evbuffer_add_printf(out, "# HELP tgrunner_worker_calls_refused_total "
	    "Workers' Bot API calls the method policy refused.\n# TYPE "
	    "tgrunner_worker_calls_refused_total counter\n");
	for (i = 0; i < POLICY_NRESERVED; i++)
		evbuffer_add_printf(out, "tgrunner_worker_calls_refused_total"
		    "{method=\"%s\",rule=\"reserved\"} %llu\n",
		    policy_reserved_names[i], p->reserved[i]);
	for (i = RULE_DENY; i < RULE_COUNT; i++)
		evbuffer_add_printf(out, "tgrunner_worker_calls_refused_total"
		    "{method=\"other\",rule=\"%s\"} %llu\n",
		    policy_rule_names[i], p->by_rule[i]);
}
