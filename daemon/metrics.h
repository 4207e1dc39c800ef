/* SPDX-License-Identifier: ISC */
/*
 * Prometheus text exposition on metrics_listen (GET /metrics), served by
 * libevent's evhttp on the daemon's loop.  Each module writes its own
 * numbers; this file owns the HTTP side, the sample format and the
 * histogram type.
 */
#ifndef TG_METRICS_H
#define TG_METRICS_H

#include <stdint.h>

struct event_base;
struct evbuffer;
struct metrics;

/* Seconds-valued histogram with fixed buckets (see metrics.c). */
#define HIST_BUCKETS	14
struct hist {
	uint64_t	count;
	double		sum;
	uint64_t	bucket[HIST_BUCKETS];	/* non-cumulative */
};

/*
 * One sample without labels, with its HELP and TYPE lines.  Each module
 * renders its own families with these (pool_metrics, api_metrics, ...);
 * the daemon assembles them.
 */
void	metrics_counter(struct evbuffer *, const char *name, const char *help,
	    double v);
void	metrics_gauge(struct evbuffer *, const char *name, const char *help,
	    double v);

void	hist_observe(struct hist *, double seconds);
/* Append a histogram in text format: name{labels}_bucket... */
void	hist_write(const struct hist *, struct evbuffer *, const char *name,
	    const char *help);

/* Append the whole exposition to out. */
typedef void (*metrics_fn)(void *arg, struct evbuffer *out);

/*
 * Listen on "host:port" (checked by the configuration: loopback unless
 * metrics_public).
 * Returns NULL with a logged reason.
 */
struct metrics	*metrics_new(struct event_base *, const char *listen,
		    metrics_fn, void *arg);
void		 metrics_free(struct metrics *);

#endif
