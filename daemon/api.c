/*
 * Bot API calls for workers.  Each session key has a FIFO of calls of which
 * only the head runs; the heads of all keys (and unkeyed calls) wait in one
 * runnable FIFO for one of API_MAX_INFLIGHT request slots.  A 429 keeps the
 * head of its key in place for retry_after seconds, so nothing behind it in
 * that key overtakes it.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <jansson.h>
#include <uthash.h>

#include "api.h"
#include "conf.h"
#include "http.h"
#include "log.h"

#define API_HTTP_TIMEOUT_MS	60000
#define API_RETRY_AFTER_MAX	3600

struct akey;

struct acall {
	struct api		*api;
	struct akey		*key;		/* NULL: unordered */
	char			 method[65];
	char			*body;
	size_t			 len;
	api_cb			 cb;
	void			*arg;
	int			 tries;
	int			 failed;	/* could not start: report */
	struct http_req		*req;
	struct event		*retry;
	TAILQ_ENTRY(acall)	 kentry;	/* key->calls */
	TAILQ_ENTRY(acall)	 rentry;	/* api->runnable */
};

struct akey {
	char			*name;
	TAILQ_HEAD(, acall)	 calls;		/* head is running or runnable */
	UT_hash_handle		 hh;
};

struct api {
	struct event_base	*base;
	struct http		*http;
	const struct conf	*conf;
	char			*prefix;	/* api_url/bot<token>/ */
	struct akey		*keys;
	TAILQ_HEAD(, acall)	 runnable;
	TAILQ_HEAD(, acall)	 waiting;	/* in a retry pause */
	size_t			 queued;
	size_t			 inflight;
	struct api_stats	 stats;
};

static void	api_pump(struct api *);

static int
method_valid(const char *m)
{
	size_t n = 0;

	for (; m[n] != '\0'; n++)
		if (!isalnum((unsigned char)m[n]) && m[n] != '_')
			return 0;
	return n > 0 && n <= 64;
}

/* Calls that change nothing may be repeated after a network error. */
static int
method_idempotent(const char *m)
{
	return strncmp(m, "get", 3) == 0;
}

struct api *
api_new(struct event_base *base, struct http *http, const struct conf *conf,
    const char *token)
{
	struct api *a;
	size_t n;

	if ((a = calloc(1, sizeof(*a))) == NULL)
		return NULL;
	a->base = base;
	a->http = http;
	a->conf = conf;
	n = strlen(conf->api_url);
	while (n > 0 && conf->api_url[n - 1] == '/')
		n--;
	if (asprintf(&a->prefix, "%.*s/bot%s/", (int)n, conf->api_url,
	    token) == -1) {
		free(a);
		return NULL;
	}
	TAILQ_INIT(&a->runnable);
	TAILQ_INIT(&a->waiting);
	return a;
}

static void
acall_free(struct acall *c)
{
	if (c->req != NULL)
		http_cancel(c->req);
	if (c->retry != NULL)
		event_free(c->retry);
	free(c->body);
	free(c);
}

void
api_free(struct api *a)
{
	struct akey *k, *tk;
	struct acall *c;

	if (a == NULL)
		return;
	/* unkeyed calls live only on these two lists; keyed ones go with their key */
	while ((c = TAILQ_FIRST(&a->runnable)) != NULL) {
		TAILQ_REMOVE(&a->runnable, c, rentry);
		if (c->key == NULL)
			acall_free(c);
	}
	while ((c = TAILQ_FIRST(&a->waiting)) != NULL) {
		TAILQ_REMOVE(&a->waiting, c, rentry);
		if (c->key == NULL)
			acall_free(c);
	}
	HASH_ITER(hh, a->keys, k, tk) {
		while ((c = TAILQ_FIRST(&k->calls)) != NULL) {
			TAILQ_REMOVE(&k->calls, c, kentry);
			acall_free(c);
		}
		HASH_DEL(a->keys, k);
		free(k->name);
		free(k);
	}
	free(a->prefix);
	free(a);
}

/* The call is finished: its key's next call becomes runnable. */
static void
api_release(struct api *a, struct acall *c)
{
	struct akey *k = c->key;
	struct acall *next;

	a->queued--;
	if (k != NULL) {
		TAILQ_REMOVE(&k->calls, c, kentry);
		if ((next = TAILQ_FIRST(&k->calls)) != NULL)
			TAILQ_INSERT_TAIL(&a->runnable, next, rentry);
		else {
			HASH_DEL(a->keys, k);
			free(k->name);
			free(k);
		}
	}
	c->req = NULL;
	acall_free(c);
}

static void
api_deliver(struct api *a, struct acall *c, const struct api_result *r)
{
	if (r->ok)
		a->stats.ok++;
	else
		a->stats.errors++;
	c->cb(c->arg, r);
	api_release(a, c);
	api_pump(a);
}

static void
api_retry_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct acall *c = arg;
	struct api *a = c->api;

	TAILQ_REMOVE(&a->waiting, c, rentry);
	if (c->failed) {
		struct api_result r = { .ok = 0, .error_code = 599,
		    .description = "cannot start the HTTP request" };

		api_deliver(a, c, &r);
		return;
	}
	/* the head of its key again: ahead of everything else */
	TAILQ_INSERT_HEAD(&a->runnable, c, rentry);
	api_pump(a);
}

static void
api_schedule_retry(struct api *a, struct acall *c, int64_t ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

	a->stats.retries++;
	if (c->retry == NULL)
		c->retry = evtimer_new(a->base, api_retry_cb, c);
	TAILQ_INSERT_TAIL(&a->waiting, c, rentry);
	evtimer_add(c->retry, &tv);
}

static void
api_done(void *arg, const struct http_response *resp)
{
	struct acall *c = arg;
	struct api *a = c->api;
	struct api_result r = { .ok = 0 };
	json_t *root, *params;
	int retry_after;

	c->req = NULL;
	a->inflight--;
	root = resp->status > 0 ? json_loadb(resp->body, resp->len, 0, NULL) : NULL;
	if (json_is_object(root) && json_is_boolean(json_object_get(root, "ok"))) {
		r.ok = json_is_true(json_object_get(root, "ok"));
		r.result = json_object_get(root, "result");
		r.error_code = (int)json_integer_value(json_object_get(root,
		    "error_code"));
		r.description = json_string_value(json_object_get(root,
		    "description"));
		params = json_object_get(root, "parameters");
		r.parameters = json_is_object(params) ? params : NULL;
		retry_after = (int)json_integer_value(json_object_get(params,
		    "retry_after"));
		r.retry_after = retry_after;
		if (!r.ok && r.error_code == 429 && c->tries <= API_MAX_RETRIES) {
			if (retry_after < 1 || retry_after > API_RETRY_AFTER_MAX)
				retry_after = 1;
			log_info("call %s: 429, retrying in %d s", c->method,
			    retry_after);
			api_schedule_retry(a, c, (int64_t)retry_after * 1000);
			json_decref(root);
			api_pump(a);
			return;
		}
	} else {
		/* transport error, HTML error page, truncated body */
		r.error_code = resp->status >= 500 ? (int)resp->status : 599;
		r.description = resp->curl_code != 0 ? resp->error :
		    "Bad Gateway: the Bot API answered something that is not JSON";
		if (method_idempotent(c->method) && c->tries <= API_MAX_RETRIES) {
			api_schedule_retry(a, c, 500LL << c->tries);
			json_decref(root);
			api_pump(a);
			return;
		}
	}
	api_deliver(a, c, &r);
	json_decref(root);
}

static void
api_start(struct api *a, struct acall *c)
{
	char url[1024];

	snprintf(url, sizeof(url), "%s%s", a->prefix, c->method);
	c->tries++;
	c->req = http_post(a->http, url, "application/json", c->body, c->len,
	    API_HTTP_TIMEOUT_MS, api_done, c);
	if (c->req == NULL) {
		/* reported from the loop, never from inside api_call() */
		c->failed = c->tries > API_MAX_RETRIES;
		api_schedule_retry(a, c, c->failed ? 0 : 100);
		return;
	}
	a->inflight++;
}

static void
api_pump(struct api *a)
{
	struct acall *c;

	while (a->inflight < API_MAX_INFLIGHT &&
	    (c = TAILQ_FIRST(&a->runnable)) != NULL) {
		TAILQ_REMOVE(&a->runnable, c, rentry);
		api_start(a, c);
	}
}

int
api_call(struct api *a, const char *key, const char *method, json_t *params,
    api_cb cb, void *arg)
{
	struct acall *c;
	struct akey *k = NULL;

	if (!method_valid(method) || a->queued >= API_MAX_QUEUED) {
		a->stats.rejected++;
		return -1;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return -1;
	c->api = a;
	snprintf(c->method, sizeof(c->method), "%s", method);
	c->body = params != NULL ? json_dumps(params, JSON_COMPACT) :
	    strdup("{}");
	if (c->body == NULL) {
		free(c);
		return -1;
	}
	c->len = strlen(c->body);
	c->cb = cb;
	c->arg = arg;
	if (key != NULL) {
		HASH_FIND_STR(a->keys, key, k);
		if (k == NULL) {
			if ((k = calloc(1, sizeof(*k))) == NULL ||
			    (k->name = strdup(key)) == NULL) {
				free(k);
				acall_free(c);
				return -1;
			}
			TAILQ_INIT(&k->calls);
			HASH_ADD_KEYPTR(hh, a->keys, k->name, strlen(k->name), k);
		}
		c->key = k;
		TAILQ_INSERT_TAIL(&k->calls, c, kentry);
	}
	a->queued++;
	a->stats.calls++;
	if (k == NULL || TAILQ_FIRST(&k->calls) == c)
		TAILQ_INSERT_TAIL(&a->runnable, c, rentry);
	api_pump(a);
	return 0;
}

size_t
api_queued(const struct api *a)
{
	return a->queued;
}

size_t
api_inflight(const struct api *a)
{
	return a->inflight;
}

const struct api_stats *
api_stats(const struct api *a)
{
	return &a->stats;
}
