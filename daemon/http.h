/*
 * HTTP client on the daemon's event loop: libcurl multi driven by
 * curl_multi_socket_action with libevent socket and timer callbacks.
 * Keep-alive connections are reused.  URLs hold the bot token: nothing here
 * logs a URL, and curl's error text is redacted (log_redact) before use.
 */
#ifndef TG_HTTP_H
#define TG_HTTP_H

#include <stddef.h>

struct event_base;
struct http;
struct http_req;

struct http_response {
	long		 status;	/* HTTP status, 0 if no response */
	const char	*body;		/* NUL-terminated, may be empty */
	size_t		 len;
	int		 curl_code;	/* CURLE_OK or the transport error */
	const char	*error;		/* redacted transport error text, or "" */
};

/* Called once per request, never from inside http_post(); the request is gone after. */
typedef void (*http_cb)(void *arg, const struct http_response *);

struct http	*http_new(struct event_base *, long max_connections);
/* Cancels every request still running (without calling their callbacks). */
void		 http_free(struct http *);
/*
 * POST body (len bytes, copied) with the given Content-Type to url; the
 * whole exchange must finish within timeout_ms.  Returns a handle usable with
 * http_cancel() until the callback runs, or NULL on immediate failure.
 */
struct http_req	*http_post(struct http *, const char *url, const char *ctype,
		    const char *body, size_t len, long timeout_ms, http_cb, void *arg);
void		 http_cancel(struct http_req *);
size_t		 http_running(const struct http *);

#endif
