/* SPDX-License-Identifier: ISC */
/*
 * GET /metrics in the Prometheus text format (version 0.0.4).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "log.h"
#include "metrics.h"
#include "xmalloc.h"

/* 1 ms .. 60 s; the last bucket is +Inf */
static const double hist_bounds[HIST_BUCKETS - 1] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60
};

struct metrics {
	struct evhttp	*http;
	metrics_fn	 fn;
	void		*arg;
};

static void
metrics_sample(struct evbuffer *out, const char *name, const char *type,
    const char *help, double v)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n",
	    name, help, name, type, name, v);
}

void
metrics_counter(struct evbuffer *out, const char *name, const char *help,
    double v)
{
	metrics_sample(out, name, "counter", help, v);
}

void
metrics_gauge(struct evbuffer *out, const char *name, const char *help,
    double v)
{
	metrics_sample(out, name, "gauge", help, v);
}

void
hist_observe(struct hist *h, double s)
{
	int i;

	for (i = 0; i < HIST_BUCKETS - 1 && s > hist_bounds[i]; i++)
		;
	h->bucket[i]++;
	h->count++;
	h->sum += s;
}

void
hist_write(const struct hist *h, struct evbuffer *out, const char *name,
    const char *help)
{
	uint64_t cum = 0;
	int i;

	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name,
	    help, name);
	for (i = 0; i < HIST_BUCKETS - 1; i++) {
		cum += h->bucket[i];
		evbuffer_add_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name,
		    hist_bounds[i], (unsigned long long)cum);
	}
	cum += h->bucket[HIST_BUCKETS - 1];
	evbuffer_add_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n"
	    "%s_count %llu\n", name, (unsigned long long)cum, name, h->sum,
	    name, (unsigned long long)h->count);
}

static void
metrics_request(struct evhttp_request *req, void *arg)
{
	struct metrics *m = arg;
	struct evbuffer *out;
	const char *path = evhttp_request_get_uri(req);

	/* evhttp answers other methods than GET and HEAD with 501 itself */
	if (strcmp(path, "/metrics") != 0 && strncmp(path, "/metrics?", 9) != 0) {
		evhttp_send_error(req, HTTP_NOTFOUND, "try /metrics");
		return;
	}
	if ((out = evbuffer_new()) == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	m->fn(m->arg, out);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, HTTP_OK, "OK", out);
	evbuffer_free(out);
}

/* "host:port" -> host, port; host may be [v6]. */
static int
split_hostport(const char *s, char *host, size_t hlen, unsigned *port)
{
	const char *colon = strrchr(s, ':');
	size_t n;
	char *end;
	unsigned long p;

	if (colon == NULL)
		return -1;
	n = (size_t)(colon - s);
	if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
		s++;
		n -= 2;
	}
	if (n == 0 || n >= hlen)
		return -1;
	memcpy(host, s, n);
	host[n] = '\0';
	p = strtoul(colon + 1, &end, 10);
	if (*end != '\0' || p > 65535)
		return -1;
	*port = (unsigned)p;
	return 0;
}

struct metrics *
metrics_new(struct event_base *base, const char *listen, metrics_fn fn,
    void *arg)
{
	struct metrics *m;
	char host[256];
	unsigned port;

	if (split_hostport(listen, host, sizeof(host), &port) == -1) {
		log_errx("metrics_listen %s: expected host:port", listen);
		return NULL;
	}
	/* loopback unless metrics_public: conf.c has checked it */
	m = xcalloc(1, sizeof(*m));
	m->fn = fn;
	m->arg = arg;
	if ((m->http = evhttp_new(base)) == NULL ||
	    evhttp_bind_socket(m->http, host, (ev_uint16_t)port) == -1) {
		log_errx("metrics_listen %s: cannot listen", listen);
		metrics_free(m);
		return NULL;
	}
	evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_gencb(m->http, metrics_request, m);
	return m;
}

void
metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	if (m->http != NULL)
		evhttp_free(m->http);
	free(m);
}
