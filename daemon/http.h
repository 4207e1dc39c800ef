/* SPDX-License-Identifier: ISC */
/*
 * HTTP client on the daemon's event loop: libcurl multi driven by
 * curl_multi_socket_action with libevent socket and timer callbacks.
 * Keep-alive connections are reused.  URLs hold the bot token: nothing here
 * logs a URL, and curl's error text is redacted (log_redact) before use.
 */
#ifndef TG_HTTP_H
#define TG_HTTP_H

#include <stddef.h>
#include <stdint.h>

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

/*
 * One part of a multipart/form-data body.  filename NULL: a text field of
 * data.  Otherwise a file part: its len bytes come from data, or when data
 * is NULL from fd with pread() from offset 0 (again on every retry or
 * rewind), so the fd must stay open while the request runs.
 */
struct http_part {
	const char	*name;
	const char	*data;
	size_t		 len;
	int		 fd;
	const char	*filename;
	const char	*ctype;		/* NULL: curl's guess from filename */
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
/*
 * POST a multipart/form-data body of nparts parts.  The parts and what
 * they point to are borrowed: they must stay valid until the callback has
 * run or http_cancel() returned.  Otherwise as http_post().
 */
struct http_req	*http_post_form(struct http *, const char *url,
		    const struct http_part *parts, size_t nparts,
		    long timeout_ms, http_cb, void *arg);
/*
 * A GET whose body is handed over as it arrives (a download relayed to a
 * client).  head: the status line and headers are in (length -1 when the
 * server sent no Content-Length, ctype NULL when no Content-Type); data:
 * the next bytes of the body.  Both run inside curl's callbacks, so they
 * must not start, cancel or free any request; they return 0 to go on or
 * -1 to abort the transfer, and data may return 1: "not taken, pause"
 * (the same bytes come again after http_resume).  done then runs once,
 * from the loop, as for http_post (its body is empty).
 */
struct http_stream_cb {
	int	(*head)(void *arg, long status, int64_t length,
		    const char *ctype);
	int	(*data)(void *arg, const char *p, size_t len);
	http_cb	 done;
};
struct http_req	*http_get_stream(struct http *, const char *url,
		    long timeout_ms, const struct http_stream_cb *, void *arg);
/* Go on with a paused stream.  Not from inside its head or data. */
void		 http_resume(struct http_req *);
void		 http_cancel(struct http_req *);
size_t		 http_running(const struct http *);

#endif
