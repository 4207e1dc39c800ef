/* SPDX-License-Identifier: ISC */
/*
 * File downloads through the daemon's Bot API endpoint (tgrunner-protocol(7),
 * "The Bot API endpoint"): getFile, then GET /file/bot<credential>/<path>.
 *
 * The endpoint is the daemon's own, on loopback or a Unix socket, so a
 * minimal HTTP/1.1 client does: one request per connection ("Connection:
 * close"), a response with Content-Length, chunked or ended by the close,
 * headers bounded, and no more than TGW_DL_IDLE_MS without a byte.  That
 * keeps the library free of an HTTP dependency.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netdb.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "tgrunner-worker.h"
#include "tgw-private.h"

#define TGW_DL_IDLE_MS		60000	/* without a byte: give up */
#define TGW_DL_HEAD_MAX		16384	/* status line and headers */
#define TGW_DL_JSON_MAX		65536	/* getFile's answer, an error body */
#define TGW_DL_URL_MAX		4096

/* One response being read. */
struct dl {
	struct tgw	*w;
	int		 fd;
	char		 buf[16384];
	size_t		 off, len;
	long		 status;
	int64_t		 length;	/* -1: not given */
	int		 chunked;
};

/* Where a body goes: a file descriptor, or memory. */
struct dl_sink {
	int		 fd;		/* -1: memory */
	char		*mem;
	size_t		 len, cap;
	int64_t		 max;		/* 0: no bound */
	int64_t		 total;
};

/* ---- connecting ---------------------------------------------------------- */

static int
dl_connect_unix(struct tgw *w, const char *path)
{
	struct sockaddr_un sun;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path))
		return tgwi_seterr(w, "api_root %s: path too long", path);
	strcpy(sun.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return tgwi_seterr(w, "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		tgwi_seterr(w, "connect %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* "http://127.0.0.1:41234" or "http://[::1]:41234": host and port. */
static int
dl_split(const char *root, char *host, size_t hostsz, char *port,
    size_t portsz)
{
	const char *h, *end, *colon;

	if (strncmp(root, "http://", 7) != 0)
		return -1;
	h = root + 7;
	if (*h == '[') {
		if ((end = strchr(h, ']')) == NULL || end[1] != ':')
			return -1;
		colon = end + 1;
		h++;
	} else {
		if ((colon = strchr(h, ':')) == NULL)
			return -1;
		end = colon;
	}
	if ((size_t)(end - h) >= hostsz || strlen(colon + 1) >= portsz ||
	    colon[1] == '\0' || strchr(colon + 1, '/') != NULL)
		return -1;
	memcpy(host, h, (size_t)(end - h));
	host[end - h] = '\0';
	strcpy(port, colon + 1);
	return 0;
}

static int
dl_connect_tcp(struct tgw *w, const char *root)
{
	struct addrinfo	 hints, *res, *ai;
	char		 host[256], port[16];
	int		 fd = -1, rc;

	if (dl_split(root, host, sizeof(host), port, sizeof(port)) == -1)
		return tgwi_seterr(w, "api_root %s: expected http://host:port "
		    "or unix:/path", root);
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0)
		return tgwi_seterr(w, "api_root %s: %s", root,
		    gai_strerror(rc));
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
		    ai->ai_protocol);
		if (fd != -1 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (fd != -1)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd == -1)
		return tgwi_seterr(w, "connect %s: %s", root, strerror(errno));
	return fd;
}

/* ---- one request, one response ----------------------------------------- */

static int
dl_send_all(struct dl *d, const char *p, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = send(d->fd, p, len, MSG_NOSIGNAL);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return tgwi_seterr(d->w, "send to the Bot API endpoint: "
			    "%s", strerror(errno));
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* More bytes into d->buf: 1 read some, 0 end of stream, -1 error. */
static int
dl_fill(struct dl *d)
{
	struct pollfd	pfd = { d->fd, POLLIN, 0 };
	ssize_t		n;
	int		rc;

	if (d->off > 0) {
		memmove(d->buf, d->buf + d->off, d->len - d->off);
		d->len -= d->off;
		d->off = 0;
	}
	if (d->len == sizeof(d->buf))
		return tgwi_seterr(d->w, "Bot API endpoint: header too long");
	while ((rc = poll(&pfd, 1, TGW_DL_IDLE_MS)) == -1 && errno == EINTR)
		;
	if (rc == 0)
		return tgwi_seterr(d->w, "Bot API endpoint: no data for %d s",
		    TGW_DL_IDLE_MS / 1000);
	do
		n = read(d->fd, d->buf + d->len, sizeof(d->buf) - d->len);
	while (n == -1 && errno == EINTR);
	if (n == -1)
		return tgwi_seterr(d->w, "read from the Bot API endpoint: %s",
		    strerror(errno));
	d->len += (size_t)n;
	return n > 0 ? 1 : 0;
}

/* The next line (without CRLF) into line; -1 if none comes. */
static int
dl_line(struct dl *d, char *line, size_t linesz)
{
	char	*eol;
	size_t	 n;
	int	 rc;

	while ((eol = memchr(d->buf + d->off, '\n', d->len - d->off)) == NULL)
		if ((rc = dl_fill(d)) <= 0)
			return rc == 0 ? tgwi_seterr(d->w, "Bot API endpoint "
			    "closed the connection early") : -1;
	n = (size_t)(eol - (d->buf + d->off));
	if (n > 0 && eol[-1] == '\r')
		n--;
	if (n >= linesz)
		return tgwi_seterr(d->w, "Bot API endpoint: line too long");
	memcpy(line, d->buf + d->off, n);
	line[n] = '\0';
	d->off = (size_t)(eol + 1 - d->buf);
	return 0;
}

static int
dl_head(struct dl *d)
{
	char	line[1024], *v;
	size_t	total = 0;

	if (dl_line(d, line, sizeof(line)) == -1)
		return -1;
	if (strncmp(line, "HTTP/1.", 7) != 0 || strlen(line) < 12 ||
	    !isdigit((unsigned char)line[9]))
		return tgwi_seterr(d->w, "Bot API endpoint: not HTTP");
	d->status = strtol(line + 9, NULL, 10);
	d->length = -1;
	for (;;) {
		if (dl_line(d, line, sizeof(line)) == -1)
			return -1;
		if (line[0] == '\0')
			return 0;
		if ((total += strlen(line)) > TGW_DL_HEAD_MAX ||
		    (v = strchr(line, ':')) == NULL)
			return tgwi_seterr(d->w, "Bot API endpoint: bad "
			    "headers");
		*v++ = '\0';
		while (*v == ' ' || *v == '\t')
			v++;
		if (strcasecmp(line, "Content-Length") == 0)
			d->length = strtoll(v, NULL, 10);
		else if (strcasecmp(line, "Transfer-Encoding") == 0 &&
		    strcasecmp(v, "chunked") == 0)
			d->chunked = 1;
	}
}

static int
dl_sink_put(struct dl *d, struct dl_sink *s, const char *p, size_t n)
{
	size_t	 cap;
	char	*m;
	ssize_t	 k;

	if (s->max > 0 && (int64_t)n > s->max - s->total)
		return tgwi_seterr(d->w, "the file has more than %" PRId64
		    " bytes", s->max);
	s->total += (int64_t)n;
	if (s->fd == -1) {
		if (s->len + n + 1 > s->cap) {
			for (cap = s->cap ? s->cap : 4096; cap < s->len + n + 1;
			    cap *= 2)
				;
			if ((m = realloc(s->mem, cap)) == NULL)
				return tgwi_seterr(d->w, "out of memory");
			s->mem = m;
			s->cap = cap;
		}
		memcpy(s->mem + s->len, p, n);
		s->len += n;
		s->mem[s->len] = '\0';
		return 0;
	}
	while (n > 0) {
		if ((k = write(s->fd, p, n)) == -1 && errno == EINTR)
			continue;
		if (k <= 0)
			return tgwi_seterr(d->w, "write: %s", strerror(errno));
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* n bytes of body (n < 0: up to the end of the stream). */
static int
dl_copy(struct dl *d, struct dl_sink *s, int64_t n)
{
	size_t	avail;
	int	rc;

	while (n != 0) {
		if (d->off == d->len) {
			if ((rc = dl_fill(d)) == -1)
				return -1;
			if (rc == 0)
				return n < 0 ? 0 : tgwi_seterr(d->w, "Bot API "
				    "endpoint: the body was cut short");
		}
		avail = d->len - d->off;
		if (n > 0 && (int64_t)avail > n)
			avail = (size_t)n;
		if (dl_sink_put(d, s, d->buf + d->off, avail) == -1)
			return -1;
		d->off += avail;
		if (n > 0)
			n -= (int64_t)avail;
	}
	return 0;
}

static int
dl_chunked(struct dl *d, struct dl_sink *s)
{
	char		line[128];
	long long	size;
	char		*end;

	for (;;) {
		if (dl_line(d, line, sizeof(line)) == -1)
			return -1;
		size = strtoll(line, &end, 16);
		if (end == line || size < 0)
			return tgwi_seterr(d->w, "Bot API endpoint: bad chunk");
		if (size == 0)
			return 0;	/* trailers: the connection closes */
		if (dl_copy(d, s, size) == -1 ||
		    dl_line(d, line, sizeof(line)) == -1)
			return -1;
	}
}

static int
dl_body(struct dl *d, struct dl_sink *s)
{
	if (d->chunked)
		return dl_chunked(d, s);
	if (d->length >= 0) {
		if (s->max > 0 && d->length > s->max)
			return tgwi_seterr(d->w, "the file has %" PRId64
			    " bytes, more than %" PRId64, d->length, s->max);
		return dl_copy(d, s, d->length);
	}
	return dl_copy(d, s, -1);
}

/*
 * GET target from the endpoint; the status in *status; the body goes to s,
 * or to err (when not NULL) if the status is not 200.
 */
static int
dl_get(struct tgw *w, const char *target, struct dl_sink *s,
    struct dl_sink *err, long *status)
{
	const char	*root = tgw_api_root(w);
	struct dl	*d;
	char		 req[TGW_DL_URL_MAX + 128];
	int		 fd, rc = -1, n;

	if (root == NULL)
		return tgwi_seterr(w, "no Bot API endpoint: the daemon sent no "
		    "api_root and TGRUNNER_API_ROOT is not set");
	fd = strncmp(root, "unix:", 5) == 0 ? dl_connect_unix(w, root + 5) :
	    dl_connect_tcp(w, root);
	if (fd == -1)
		return -1;
	if ((d = calloc(1, sizeof(*d))) == NULL) {
		close(fd);
		return tgwi_seterr(w, "out of memory");
	}
	d->w = w;
	d->fd = fd;
	n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: tgrunner\r\n"
	    "User-Agent: tgrunner-worker\r\nConnection: close\r\n\r\n", target);
	if (n > 0 && (size_t)n < sizeof(req) && dl_send_all(d, req,
	    (size_t)n) == 0 && dl_head(d) == 0 && dl_body(d,
	    d->status != 200 && err != NULL ? err : s) == 0) {
		*status = d->status;
		rc = 0;
	}
	explicit_bzero(req, sizeof(req));
	close(fd);
	free(d);
	return rc;
}

/* ---- getFile and the file ----------------------------------------------- */

/* Percent-encode s into out; '/' kept when keep_slash. */
static int
dl_pct(const char *s, int keep_slash, char *out, size_t outsz)
{
	size_t n = 0;

	for (; *s != '\0'; s++) {
		if (n + 4 >= outsz)
			return -1;
		if (isalnum((unsigned char)*s) || strchr("-._~", *s) != NULL ||
		    (keep_slash && *s == '/'))
			out[n++] = *s;
		else
			n += (size_t)snprintf(out + n, outsz - n, "%%%02X",
			    (unsigned char)*s);
	}
	out[n] = '\0';
	return 0;
}

/* A Bot API error body: its description, for tgw_error(). */
static int
dl_api_error(struct tgw *w, const char *what, long status, const char *body)
{
	json_t		*j = json_loads(body ? body : "", 0, NULL);
	const char	*desc = json_string_value(json_object_get(j,
			    "description"));
	int		 rc;

	rc = tgwi_seterr(w, "%s: %ld %s", what, status, desc != NULL ? desc :
	    "(no description)");
	json_decref(j);
	return rc;
}

static int
dl_file_path(struct tgw *w, const char *file_id, char *path, size_t pathsz)
{
	struct dl_sink	 s = { -1, NULL, 0, 0, TGW_DL_JSON_MAX, 0 };
	char		 id[1024], target[TGW_DL_URL_MAX];
	json_t		*j = NULL;
	const char	*fp;
	long		 status = 0;
	int		 rc = -1;

	if (dl_pct(file_id, 0, id, sizeof(id)) == -1)
		return tgwi_seterr(w, "file_id too long");
	snprintf(target, sizeof(target), "/bot%s/getFile?file_id=%s",
	    tgw_api_token(w), id);
	if (dl_get(w, target, &s, NULL, &status) == -1)
		goto out;
	j = json_loads(s.mem ? s.mem : "", 0, NULL);
	if (status != 200 || !json_is_true(json_object_get(j, "ok"))) {
		dl_api_error(w, "getFile", status, s.mem);
		goto out;
	}
	fp = json_string_value(json_object_get(json_object_get(j, "result"),
	    "file_path"));
	if (fp == NULL || strlen(fp) >= pathsz) {
		tgwi_seterr(w, "getFile: no usable file_path in the answer");
		goto out;
	}
	strcpy(path, fp);
	rc = 0;
out:
	explicit_bzero(target, sizeof(target));
	json_decref(j);
	free(s.mem);
	return rc;
}

/* getFile, then the file into s. */
static int
dl_fetch(struct tgw *w, const char *file_id, struct dl_sink *s)
{
	char		 path[1024], enc[3 * sizeof(path)];
	char		 target[TGW_DL_URL_MAX];
	struct dl_sink	 err = { -1, NULL, 0, 0, TGW_DL_JSON_MAX, 0 };
	long		 status = 0;
	int		 rc = -1;

	if (tgw_api_token(w) == NULL)
		return tgwi_seterr(w, "no Bot API endpoint: the daemon sent no "
		    "api_token and TGRUNNER_API_TOKEN is not set");
	if (dl_file_path(w, file_id, path, sizeof(path)) == -1 ||
	    dl_pct(path, 1, enc, sizeof(enc)) == -1)
		return -1;
	if ((size_t)snprintf(target, sizeof(target), "/file/bot%s/%s",
	    tgw_api_token(w), enc) >= sizeof(target))
		return tgwi_seterr(w, "file_path too long");
	/* an error answer is small JSON, kept apart from the file */
	if (dl_get(w, target, s, &err, &status) == 0) {
		if (status == 200)
			rc = 0;
		else
			dl_api_error(w, "download", status, err.mem);
	}
	explicit_bzero(target, sizeof(target));
	free(err.mem);
	return rc;
}

int
tgw_download_mem(struct tgw *w, const char *file_id, int64_t max_size,
    void **data, size_t *len)
{
	struct dl_sink s = { -1, NULL, 0, 0, max_size, 0 };

	*data = NULL;
	*len = 0;
	if (dl_fetch(w, file_id, &s) == -1) {
		free(s.mem);
		return -1;
	}
	if (s.mem == NULL && (s.mem = calloc(1, 1)) == NULL)
		return tgwi_seterr(w, "out of memory");
	*data = s.mem;
	*len = s.len;
	return 0;
}

int
tgw_download(struct tgw *w, const char *file_id, const char *path,
    int64_t max_size)
{
	struct dl_sink	s = { -1, NULL, 0, 0, max_size, 0 };
	int		rc;

	if ((s.fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0666)) == -1)
		return tgwi_seterr(w, "%s: %s", path, strerror(errno));
	rc = dl_fetch(w, file_id, &s);
	if (close(s.fd) == -1 && rc == 0)
		rc = tgwi_seterr(w, "%s: %s", path, strerror(errno));
	if (rc == -1)
		unlink(path);
	return rc;
}
