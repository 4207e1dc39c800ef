/* SPDX-License-Identifier: ISC */
/*
 * multipart/form-data: split a body at its boundary delimiters and read
 * each part's Content-Disposition (name, filename, filename*) and
 * Content-Type.  The body is untrusted: every search is bounded by the
 * body's end, header blocks and names by fixed limits, and anything the
 * grammar does not allow is an error rather than a guess.  A part's data
 * is never copied: it is a slice of the body.
 */
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "multipart.h"
#include "xmalloc.h"

#define MP_DELIM_MAX	(4 + MULTIPART_BOUNDARY_MAX)	/* "\r\n--" boundary */

/* The parts found so far and where an error goes. */
struct mp {
	struct multipart	*m;
	size_t			 cap;
	char			*err;
	size_t			 errsz;
};

/* What a part's header block says. */
struct mp_head {
	char	name[MULTIPART_NAME_MAX + 1];
	char	filename[MULTIPART_NAME_MAX + 1];
	char	ctype[MULTIPART_CTYPE_MAX + 1];
	int	has_disp, has_name, has_filename, has_star, has_ctype;
};

static int
mp_fail(struct mp *mp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
mp_fail(struct mp *mp, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(mp->err, mp->errsz, fmt, ap);
	va_end(ap);
	return -1;
}

/* RFC 2046 bchars, without the final space. */
static int
mp_boundary_ok(const char *b, size_t n)
{
	size_t i;

	if (n == 0 || n > MULTIPART_BOUNDARY_MAX || b[n - 1] == ' ')
		return 0;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)b[i]) &&
		    strchr("'()+_,-./:=? ", b[i]) == NULL)
			return 0;
	return 1;
}

static int
mp_ws(char c)
{
	return c == ' ' || c == '\t';
}

static const char *
mp_skip_ws(const char *p, const char *end)
{
	while (p < end && mp_ws(*p))
		p++;
	return p;
}

/* An RFC 7230 token character. */
static int
mp_tchar(char c)
{
	return isalnum((unsigned char)c) || strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/*
 * One parameter value at *pp: a quoted-string (backslash escapes) or a
 * token.  Decoded into out (outsz bytes with the NUL); -1 if malformed or
 * too long.
 */
static int
mp_value(const char **pp, const char *end, char *out, size_t outsz)
{
	const char	*p = *pp;
	size_t		 n = 0;

	if (p < end && *p == '"') {
		for (p++; p < end && *p != '"'; p++) {
			if (*p == '\\' && ++p == end)
				return -1;
			if (n + 1 >= outsz)
				return -1;
			out[n++] = *p;
		}
		if (p == end)
			return -1;
		p++;
	} else {
		for (; p < end && mp_tchar(*p); p++) {
			if (n + 1 >= outsz)
				return -1;
			out[n++] = *p;
		}
		if (n == 0)
			return -1;
	}
	out[n] = '\0';
	*pp = p;
	return 0;
}

static int
mp_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/*
 * RFC 5987 ext-value "utf-8'lang'percent%20encoded" in place.  Returns 1
 * if decoded, 0 for another charset (ignored, as RFC 7578 allows), -1 if
 * malformed.
 */
static int
mp_ext_value(char *s)
{
	char	*q1, *q2, *in, *out;
	int	 hi, lo;

	if ((q1 = strchr(s, '\'')) == NULL || (q2 = strchr(q1 + 1, '\'')) ==
	    NULL)
		return -1;
	if (q1 - s != 5 || strncasecmp(s, "utf-8", 5) != 0)
		return 0;
	for (in = q2 + 1, out = s; *in != '\0'; in++) {
		if (*in != '%') {
			*out++ = *in;
			continue;
		}
		if ((hi = mp_hex(in[1])) == -1 || (lo = mp_hex(in[2])) == -1)
			return -1;
		/* decoded controls (NUL above all) would not survive a header */
		if ((hi << 4 | lo) < 0x20 || (hi << 4 | lo) == 0x7f)
			return -1;
		*out++ = (char)(hi << 4 | lo);
		in += 2;
	}
	*out = '\0';
	return 1;
}

/* Names go back into headers: no control characters (NUL included). */
static int
mp_label_ok(const char *s, size_t len)
{
	size_t i;

	if (strlen(s) != len)
		return 0;
	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}

/* One "; key=value" of a Content-Disposition into h. */
static int
mp_disp_param(struct mp_head *h, const char *key, size_t klen, char *val,
    size_t vlen)
{
	int rc;

	if (klen == 4 && strncasecmp(key, "name", 4) == 0) {
		if (h->has_name || !mp_label_ok(val, vlen))
			return -1;
		memcpy(h->name, val, vlen + 1);
		h->has_name = 1;
	} else if (klen == 8 && strncasecmp(key, "filename", 8) == 0) {
		if (h->has_filename && !h->has_star)
			return -1;
		if (!h->has_star)
			memcpy(h->filename, val, vlen + 1);
		h->has_filename = 1;
	} else if (klen == 9 && strncasecmp(key, "filename*", 9) == 0) {
		if (h->has_star || (rc = mp_ext_value(val)) == -1)
			return -1;
		if (rc == 1) {
			memcpy(h->filename, val, strlen(val) + 1);
			h->has_star = h->has_filename = 1;
		}
	}
	/* other parameters: ignored */
	return 0;
}

/* "form-data; name=...; filename=..." (the header's value). */
static int
mp_disposition(struct mp_head *h, const char *p, const char *end)
{
	char		 val[MULTIPART_NAME_MAX + 1];
	const char	*key;
	size_t		 klen;

	if (h->has_disp || end - p < 9 || strncasecmp(p, "form-data", 9) != 0)
		return -1;
	h->has_disp = 1;
	for (p += 9;;) {
		p = mp_skip_ws(p, end);
		if (p == end)
			break;
		if (*p++ != ';')
			return -1;
		p = mp_skip_ws(p, end);
		for (key = p; p < end && mp_tchar(*p); p++)
			;
		klen = (size_t)(p - key);
		p = mp_skip_ws(p, end);
		if (klen == 0 || p == end || *p++ != '=')
			return -1;
		p = mp_skip_ws(p, end);
		if (mp_value(&p, end, val, sizeof(val)) == -1 ||
		    mp_disp_param(h, key, klen, val, strlen(val)) == -1)
			return -1;
	}
	if (h->has_filename && !mp_label_ok(h->filename, strlen(h->filename)))
		return -1;
	return h->has_name && h->name[0] != '\0' ? 0 : -1;
}

/* Printable ASCII, blanks trimmed at both ends. */
static int
mp_ctype(struct mp_head *h, const char *p, const char *end)
{
	const char *q;

	while (end > p && mp_ws(end[-1]))
		end--;
	if (h->has_ctype || end == p ||
	    (size_t)(end - p) > MULTIPART_CTYPE_MAX)
		return -1;
	for (q = p; q < end; q++)
		if (*q < 0x20 || *q > 0x7e)
			return -1;
	memcpy(h->ctype, p, (size_t)(end - p));
	h->ctype[end - p] = '\0';
	h->has_ctype = 1;
	return 0;
}

/* One header line [p, end), without its CRLF. */
static int
mp_header_line(struct mp *mp, struct mp_head *h, const char *p,
    const char *end, size_t idx)
{
	const char *colon, *v;
	size_t n;

	if (p == end || mp_ws(*p) || (colon = memchr(p, ':', (size_t)(end -
	    p))) == NULL || memchr(p, '\0', (size_t)(end - p)) != NULL)
		return mp_fail(mp, "part %zu: malformed header line", idx + 1);
	n = (size_t)(colon - p);
	v = mp_skip_ws(colon + 1, end);
	if (n == 19 && strncasecmp(p, "Content-Disposition", n) == 0) {
		if (mp_disposition(h, v, end) == -1)
			return mp_fail(mp, "part %zu: bad Content-Disposition "
			    "(form-data with a name expected)", idx + 1);
	} else if (n == 12 && strncasecmp(p, "Content-Type", n) == 0) {
		if (mp_ctype(h, v, end) == -1)
			return mp_fail(mp, "part %zu: bad Content-Type",
			    idx + 1);
	}
	return 0;
}

/* The header block [p, end): CRLF-separated lines. */
static int
mp_headers(struct mp *mp, struct mp_head *h, const char *p, const char *end,
    size_t idx)
{
	const char *eol;

	memset(h, 0, sizeof(*h));
	while (p < end) {
		eol = memmem(p, (size_t)(end - p), "\r\n", 2);
		if (eol == NULL)
			eol = end;
		if (mp_header_line(mp, h, p, eol, idx) == -1)
			return -1;
		p = eol + 2;
	}
	if (!h->has_disp)
		return mp_fail(mp, "part %zu: no Content-Disposition", idx + 1);
	return 0;
}

static void
mp_add(struct mp *mp, const struct mp_head *h, const char *data, size_t len)
{
	struct multipart	*m = mp->m;
	struct multipart_part	*pt;

	if (m->n == mp->cap) {
		mp->cap = mp->cap ? mp->cap * 2 : 8;
		m->parts = xreallocarray(m->parts, mp->cap, sizeof(*pt));
	}
	pt = &m->parts[m->n++];
	memset(pt, 0, sizeof(*pt));
	pt->data = data;
	pt->len = len;
	pt->name = xstrdup(h->name);
	if (h->has_filename)
		pt->filename = xstrdup(h->filename);
	if (h->has_ctype)
		pt->ctype = xstrdup(h->ctype);
}

/*
 * One part that starts at p (just after its boundary line's CRLF); its
 * data ends at the next delimiter, after which *next points.
 */
static int
mp_part(struct mp *mp, const char *p, const char *end, const char *delim,
    size_t dlen, const char **next)
{
	struct mp_head	 h;
	const char	*hend, *data, *stop;
	size_t		 idx = mp->m->n, room;

	if (idx == MULTIPART_MAX_PARTS)
		return mp_fail(mp, "more than %d parts", MULTIPART_MAX_PARTS);
	if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') {
		hend = p;		/* no header at all */
		data = p + 2;
	} else {
		room = (size_t)(end - p);
		if (room > MULTIPART_HEADER_MAX + 4)
			room = MULTIPART_HEADER_MAX + 4;
		if ((hend = memmem(p, room, "\r\n\r\n", 4)) == NULL)
			return mp_fail(mp, "part %zu: %s", idx + 1,
			    room < (size_t)(end - p) ? "header block too large" :
			    "no end of headers");
		data = hend + 4;
	}
	if (mp_headers(mp, &h, p, hend, idx) == -1)
		return -1;
	if ((stop = memmem(data, (size_t)(end - data), delim, dlen)) == NULL)
		return mp_fail(mp, "part %zu: the body ends inside it", idx + 1);
	mp_add(mp, &h, data, (size_t)(stop - data));
	*next = stop + dlen;
	return 0;
}

/*
 * After a delimiter: "--" ends the body (the epilogue is ignored), else
 * optional blanks and CRLF start the next part.  1: the end, 0: a part
 * follows at *pp, -1: malformed.
 */
static int
mp_after_delim(struct mp *mp, const char **pp, const char *end)
{
	const char *p = *pp;

	if (end - p >= 2 && p[0] == '-' && p[1] == '-')
		return 1;
	p = mp_skip_ws(p, end);
	if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
		return mp_fail(mp, "malformed boundary line after part %zu",
		    mp->m->n);
	*pp = p + 2;
	return 0;
}

struct multipart *
multipart_parse(const char *body, size_t len, const char *boundary,
    char *err, size_t errsz)
{
	char		 delim[MP_DELIM_MAX + 1];
	struct mp	 mp = { NULL, 0, err, errsz };
	const char	*p, *end = body + len;
	size_t		 blen = strlen(boundary), dlen;
	int		 rc;

	if (!mp_boundary_ok(boundary, blen)) {
		snprintf(err, errsz, "bad boundary");
		return NULL;
	}
	mp.m = xcalloc(1, sizeof(*mp.m));
	dlen = (size_t)snprintf(delim, sizeof(delim), "\r\n--%s", boundary);
	/* the first delimiter may open the body, without its CRLF */
	if (len >= dlen - 2 && memcmp(body, delim + 2, dlen - 2) == 0)
		p = body + dlen - 2;
	else if ((p = memmem(body, len, delim, dlen)) != NULL)
		p += dlen;
	else {
		mp_fail(&mp, "no boundary delimiter in the body");
		goto fail;
	}
	while ((rc = mp_after_delim(&mp, &p, end)) == 0)
		if (mp_part(&mp, p, end, delim, dlen, &p) == -1)
			goto fail;
	if (rc == 1)
		return mp.m;
fail:
	multipart_free(mp.m);
	return NULL;
}

void
multipart_free(struct multipart *m)
{
	size_t i;

	if (m == NULL)
		return;
	for (i = 0; i < m->n; i++) {
		free(m->parts[i].name);
		free(m->parts[i].filename);
		free(m->parts[i].ctype);
	}
	free(m->parts);
	free(m);
}

int
multipart_boundary(const char *ctype, char *out, size_t outsz)
{
	char		 val[MULTIPART_BOUNDARY_MAX + 1];
	const char	*p = ctype, *end = ctype + strlen(ctype), *key;
	size_t		 klen;

	if (end - p < 19 || strncasecmp(p, "multipart/form-data", 19) != 0)
		return -1;
	for (p += 19;;) {
		p = mp_skip_ws(p, end);
		if (p == end || *p++ != ';')
			return -1;
		p = mp_skip_ws(p, end);
		for (key = p; p < end && mp_tchar(*p); p++)
			;
		klen = (size_t)(p - key);
		if (klen == 0 || p == end || *p++ != '=' ||
		    mp_value(&p, end, val, sizeof(val)) == -1)
			return -1;
		if (klen == 8 && strncasecmp(key, "boundary", 8) == 0)
			break;
	}
	if (!mp_boundary_ok(val, strlen(val)) || strlen(val) >= outsz)
		return -1;
	memcpy(out, val, strlen(val) + 1);
	return 0;
}

/* --- encoding (tests, and the fuzz target's oracle) ----------------------- */

struct mp_buf {
	char	*p;
	size_t	 len, cap;
};

static void
mp_put(struct mp_buf *b, const void *s, size_t n)
{
	size_t	 cap;

	if (b->len + n + 1 > b->cap) {
		for (cap = b->cap ? b->cap : 256; cap < b->len + n + 1; cap *= 2)
			;
		b->p = xreallocarray(b->p, cap, 1);
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void
mp_puts(struct mp_buf *b, const char *s)
{
	mp_put(b, s, strlen(s));
}

static void
mp_put_quoted(struct mp_buf *b, const char *s)
{
	mp_puts(b, "\"");
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			mp_puts(b, "\\");
		mp_put(b, s, 1);
	}
	mp_puts(b, "\"");
}

static int
mp_encodable(const struct multipart_part *pt, const char *delim, size_t dlen)
{
	if (pt->name == NULL || *pt->name == '\0' ||
	    !mp_label_ok(pt->name, strlen(pt->name)) ||
	    (pt->filename != NULL && !mp_label_ok(pt->filename,
	    strlen(pt->filename))) || (pt->ctype != NULL &&
	    !mp_label_ok(pt->ctype, strlen(pt->ctype))))
		return 0;
	return memmem(pt->data, pt->len, delim, dlen) == NULL;
}

char *
multipart_encode(const struct multipart_part *parts, size_t n,
    const char *boundary, size_t *len)
{
	char		 delim[MP_DELIM_MAX + 1];
	struct mp_buf	 b = { NULL, 0, 0 };
	size_t		 i, dlen;

	if (!mp_boundary_ok(boundary, strlen(boundary)))
		return NULL;
	dlen = (size_t)snprintf(delim, sizeof(delim), "\r\n--%s", boundary);
	for (i = 0; i < n; i++) {
		if (!mp_encodable(&parts[i], delim, dlen)) {
			free(b.p);
			return NULL;
		}
		mp_puts(&b, i == 0 ? delim + 2 : delim);
		mp_puts(&b, "\r\nContent-Disposition: form-data; name=");
		mp_put_quoted(&b, parts[i].name);
		if (parts[i].filename != NULL) {
			mp_puts(&b, "; filename=");
			mp_put_quoted(&b, parts[i].filename);
		}
		if (parts[i].ctype != NULL) {
			mp_puts(&b, "\r\nContent-Type: ");
			mp_puts(&b, parts[i].ctype);
		}
		mp_puts(&b, "\r\n\r\n");
		mp_put(&b, parts[i].data, parts[i].len);
	}
	mp_puts(&b, n == 0 ? delim + 2 : delim);
	mp_puts(&b, "--\r\n");
	*len = b.len;
	return b.p;
}
