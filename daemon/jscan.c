/* SPDX-License-Identifier: ISC */
/*
 * A JSON scanner that builds nothing: see jscan.h for what it promises.
 *
 * The checker is strict where jansson is (UTF-8, escapes, surrogate
 * pairs, integer range, trailing bytes) and stricter where matching
 * jansson exactly is not worth it (\u0000, long or out-of-range reals,
 * deep nesting): those texts go to jansson.  fuzz/fuzz_updates.c holds
 * the two to that: whatever this accepts, jansson must accept as equal.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "jscan.h"
#include "xmalloc.h"

static const char *
ws(const char *p, const char *e)
{
	while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

static int
hex4(const char *p, const char *e, unsigned *out)
{
	unsigned v = 0;
	int i;

	if (e - p < 4)
		return -1;
	for (i = 0; i < 4; i++) {
		v <<= 4;
		if (p[i] >= '0' && p[i] <= '9')
			v |= (unsigned)(p[i] - '0');
		else if (p[i] >= 'a' && p[i] <= 'f')
			v |= (unsigned)(p[i] - 'a' + 10);
		else if (p[i] >= 'A' && p[i] <= 'F')
			v |= (unsigned)(p[i] - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

/* --- the checker ------------------------------------------------------------ */

/* One well-formed UTF-8 sequence of 2-4 bytes (RFC 3629); past it or NULL. */
static const char *
check_utf8(const char *p, const char *e)
{
	const unsigned char *s = (const unsigned char *)p;
	unsigned char lo = 0x80, hi = 0xbf;
	int n;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 1;
	else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		n = 2;
		if (s[0] == 0xe0)
			lo = 0xa0;		/* overlong */
		if (s[0] == 0xed)
			hi = 0x9f;		/* surrogates */
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		n = 3;
		if (s[0] == 0xf0)
			lo = 0x90;		/* overlong */
		if (s[0] == 0xf4)
			hi = 0x8f;		/* past U+10FFFF */
	} else
		return NULL;
	if (e - p <= n || s[1] < lo || s[1] > hi)
		return NULL;
	if ((n >= 2 && (s[2] & 0xc0) != 0x80) ||
	    (n == 3 && (s[3] & 0xc0) != 0x80))
		return NULL;
	return p + 1 + n;
}

/* A \u escape at p (after the backslash): past it, pairs whole, or NULL. */
static const char *
check_uescape(const char *p, const char *e)
{
	unsigned cp, lo;

	if (hex4(p + 1, e, &cp) == -1 || cp == 0)	/* jansson: no NUL */
		return NULL;
	p += 5;
	if (cp >= 0xdc00 && cp <= 0xdfff)
		return NULL;			/* a lone low surrogate */
	if (cp < 0xd800 || cp > 0xdbff)
		return p;
	if (e - p < 6 || p[0] != '\\' || p[1] != 'u' ||
	    hex4(p + 2, e, &lo) == -1 || lo < 0xdc00 || lo > 0xdfff)
		return NULL;
	return p + 6;
}

static const char *
check_string(const char *p, const char *e)
{
	unsigned char c;

	for (p++; p < e;) {
		/* the common bytes first, in a tight loop */
		while (p < e && (unsigned char)*p >= 0x20 &&
		    (unsigned char)*p < 0x80 && *p != '"' && *p != '\\')
			p++;
		if (p == e)
			break;
		c = (unsigned char)*p;
		if (c == '"')
			return p + 1;
		if (c < 0x20)
			return NULL;
		if (c < 0x80 && c != '\\') {
			p++;
			continue;
		}
		if (c >= 0x80) {
			if ((p = check_utf8(p, e)) == NULL)
				return NULL;
			continue;
		}
		if (++p == e)
			return NULL;
		if (*p == 'u') {
			if ((p = check_uescape(p, e)) == NULL)
				return NULL;
		} else if (strchr("\"\\/bfnrt", *p) != NULL && *p != '\0')
			p++;
		else
			return NULL;
	}
	return NULL;
}

static const char *
digits(const char *p, const char *e)
{
	while (p < e && *p >= '0' && *p <= '9')
		p++;
	return p;
}

/*
 * [p, e) is an optional '-' and digits that fit int64 (jansson refuses
 * the whole text otherwise): 0 with the value, or -1.
 */
static int
read_int64(const char *p, const char *e, int64_t *out)
{
	uint64_t x = 0, lim = (uint64_t)INT64_MAX;
	int neg = 0;

	if (p < e && *p == '-') {
		neg = 1;
		lim++;
		p++;
	}
	if (p == e)
		return -1;
	for (; p < e; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		/* below 10^17 one more digit cannot overflow: no division */
		if (x >= 100000000000000000ULL &&
		    x > (lim - (uint64_t)(*p - '0')) / 10)
			return -1;
		x = x * 10 + (uint64_t)(*p - '0');
	}
	if (neg)
		*out = x == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)x;
	else
		*out = (int64_t)x;
	return 0;
}

static const char *
check_number(const char *p, const char *e)
{
	const char *s = p, *q;
	char buf[64];
	int64_t x;
	double d;
	int real = 0;

	if (p < e && *p == '-')
		p++;
	if (p < e && *p == '0')
		p++;
	else if (p < e && *p >= '1' && *p <= '9')
		p = digits(p, e);
	else
		return NULL;
	if (p < e && *p == '.') {
		q = digits(p + 1, e);
		if (q == p + 1)
			return NULL;
		p = q;
		real = 1;
	}
	if (p < e && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < e && (*p == '+' || *p == '-'))
			p++;
		q = digits(p, e);
		if (q == p)
			return NULL;
		p = q;
		real = 1;
	}
	if (!real)
		return read_int64(s, p, &x) == 0 ? p : NULL;
	/* leave long or out-of-range reals to jansson */
	if ((size_t)(p - s) >= sizeof(buf))
		return NULL;
	memcpy(buf, s, (size_t)(p - s));
	buf[p - s] = '\0';
	errno = 0;
	d = strtod(buf, NULL);
	(void)d;
	return errno == 0 ? p : NULL;
}

static const char *
check_literal(const char *p, const char *e, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(e - p) < n || memcmp(p, word, n) != 0)
		return NULL;
	return p + n;
}

static const char *check_value(const char *, const char *, int);

static const char *
check_container(const char *p, const char *e, int depth, char close)
{
	if (depth > JSCAN_DEPTH_MAX)
		return NULL;
	p = ws(p + 1, e);
	if (p < e && *p == close)
		return p + 1;
	for (;;) {
		if (close == '}') {
			if (p >= e || *p != '"' ||
			    (p = check_string(p, e)) == NULL)
				return NULL;
			p = ws(p, e);
			if (p >= e || *p != ':')
				return NULL;
			p = ws(p + 1, e);
		}
		if ((p = check_value(p, e, depth + 1)) == NULL)
			return NULL;
		p = ws(p, e);
		if (p < e && *p == ',') {
			p = ws(p + 1, e);
			continue;
		}
		return p < e && *p == close ? p + 1 : NULL;
	}
}

static const char *
check_value(const char *p, const char *e, int depth)
{
	if (p >= e)
		return NULL;
	switch (*p) {
	case '{':
		return check_container(p, e, depth, '}');
	case '[':
		return check_container(p, e, depth, ']');
	case '"':
		return check_string(p, e);
	case 't':
		return check_literal(p, e, "true");
	case 'f':
		return check_literal(p, e, "false");
	case 'n':
		return check_literal(p, e, "null");
	default:
		return check_number(p, e);
	}
}

int
jscan_check(const char *p, size_t len)
{
	const char *e = p + len;

	p = ws(p, e);
	if ((p = check_value(p, e, 1)) == NULL)
		return 0;
	return ws(p, e) == e;
}

struct jspan
jscan_span(const char *p, size_t len)
{
	struct jspan v = { p, p + len };

	v.p = ws(v.p, v.e);
	while (v.e > v.p && (v.e[-1] == ' ' || v.e[-1] == '\t' ||
	    v.e[-1] == '\n' || v.e[-1] == '\r'))
		v.e--;
	return v;
}

/* --- lookups ---------------------------------------------------------------- */

/* Past the string at p (its opening quote), or NULL. */
static const char *
skip_string(const char *p, const char *e)
{
	for (p++; p < e; p++) {
		if (*p == '"')
			return p + 1;
		if (*p == '\\' && ++p == e)
			return NULL;
	}
	return NULL;
}

/* Bytes that matter while skipping a container: quotes and brackets. */
static const unsigned char skip_special[256] = {
	['"'] = 1, ['{'] = 1, ['}'] = 1, ['['] = 1, [']'] = 1,
};

static int
is_delim(char c)
{
	return c == ',' || c == ']' || c == '}' || c == ' ' || c == '\t' ||
	    c == '\n' || c == '\r';
}

/* Past the value at p, or NULL; brackets are counted, not matched. */
static const char *
skip_value(const char *p, const char *e)
{
	int depth = 0;

	if (p >= e)
		return NULL;
	if (*p == '"')
		return skip_string(p, e);
	if (*p != '{' && *p != '[') {
		while (p < e && !is_delim(*p))
			p++;
		return p;
	}
	while (p < e) {
		/* most bytes are none of these: keep the loop tight */
		while (p < e && !skip_special[(unsigned char)*p])
			p++;
		if (p == e)
			break;
		switch (*p) {
		case '"':
			if ((p = skip_string(p, e)) == NULL)
				return NULL;
			continue;
		case '{':
		case '[':
			depth++;
			break;
		default:
			if (--depth == 0)
				return p + 1;
		}
		p++;
	}
	return NULL;
}

int
jscan_kind(struct jspan v)
{
	if (v.p >= v.e)
		return 0;
	switch (*v.p) {
	case '{': case '[': case '"':
		return *v.p;
	case 't': case 'f':
		return *v.p;
	case 'n':
		return 'l';
	default:
		return 'n';
	}
}

char *
jscan_decode(struct jspan v, char *sbuf, size_t size, size_t *len)
{
	/* decoded, a string is never longer than its text */
	size_t cap = v.e > v.p ? (size_t)(v.e - v.p) : 0;
	char *buf = sbuf;

	if (jscan_kind(v) != '"')
		return NULL;
	if (cap > size) {
		buf = xmalloc(cap);
		size = cap;
	}
	if (jscan_string(v, buf, size, len) == -1) {
		if (buf != sbuf)
			free(buf);
		return NULL;
	}
	return buf;
}

int
jscan_name_is(struct jspan s, const char *name)
{
	char sbuf[256], *buf;
	size_t n;
	int is;

	if (s.e - s.p < 2)
		return 0;
	n = (size_t)(s.e - s.p) - 2;
	if (memchr(s.p + 1, '\\', n) == NULL)
		return n == strlen(name) && memcmp(s.p + 1, name, n) == 0;
	if ((buf = jscan_decode(s, sbuf, sizeof(sbuf), &n)) == NULL)
		return 0;
	is = n == strlen(name) && memcmp(buf, name, n) == 0;
	if (buf != sbuf)
		free(buf);
	return is;
}

int
jscan_next_member(struct jspan v, const char **it, struct jspan *name,
    struct jspan *value)
{
	const char *p = *it, *e = v.e;

	if (p == NULL) {
		if (v.p >= e || *v.p != '{')
			return 0;
		p = ws(v.p + 1, e);
	}
	if (p >= e || *p != '"')
		return 0;
	name->p = p;
	if ((name->e = p = skip_string(p, e)) == NULL)
		return 0;
	p = ws(p, e);
	if (p >= e || *p != ':')
		return 0;
	value->p = p = ws(p + 1, e);
	if ((value->e = p = skip_value(p, e)) == NULL || p == value->p)
		return 0;
	p = ws(p, e);
	if (p < e && *p == ',')
		p = ws(p + 1, e);
	else
		p = e;			/* the end, or a surprise: stop */
	*it = p;
	return 1;
}

int
jscan_member(struct jspan v, const char *name, struct jspan *out)
{
	struct jspan k, val;
	const char *it = NULL;
	int found = 0;

	/* the last duplicate wins, as in jansson: scan them all */
	while (jscan_next_member(v, &it, &k, &val))
		if (jscan_name_is(k, name)) {
			*out = val;
			found = 1;
		}
	return found ? 0 : -1;
}

uint32_t
jscan_pick(struct jspan v, const char *const *names, int n, struct jspan *out)
{
	struct jspan k, val;
	const char *it = NULL;
	size_t len[32], klen;
	uint32_t found = 0;
	int i, esc;

	if (n > 32)
		n = 32;
	for (i = 0; i < n; i++)
		len[i] = strlen(names[i]);
	while (jscan_next_member(v, &it, &k, &val)) {
		klen = (size_t)(k.e - k.p) - 2;
		esc = memchr(k.p + 1, '\\', klen) != NULL;
		for (i = 0; i < n; i++) {
			if (esc ? !jscan_name_is(k, names[i]) :
			    klen != len[i] || memcmp(k.p + 1, names[i], klen))
				continue;
			out[i] = val;	/* the last duplicate wins */
			found |= (uint32_t)1 << i;
			break;
		}
	}
	return found;
}

int
jscan_path(struct jspan v, const char *path, struct jspan *out)
{
	char name[64];
	const char *dot;
	size_t len;

	while (*path != '\0') {
		dot = strchr(path, '.');
		len = dot != NULL ? (size_t)(dot - path) : strlen(path);
		if (len >= sizeof(name))
			return -1;
		memcpy(name, path, len);
		name[len] = '\0';
		if (jscan_member(v, name, &v) == -1)
			return -1;
		path += len;
		if (*path == '.')
			path++;
	}
	*out = v;
	return 0;
}

int
jscan_int(struct jspan v, int64_t *out)
{
	return read_int64(v.p, v.e, out);
}

/* Append code point cp as UTF-8; -1 if it does not fit. */
static int
put_utf8(char *buf, size_t size, size_t *o, unsigned cp)
{
	char t[4];
	size_t n;

	if (cp < 0x80) {
		t[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		t[0] = (char)(0xc0 | cp >> 6);
		t[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		t[0] = (char)(0xe0 | cp >> 12);
		t[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		t[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		t[0] = (char)(0xf0 | cp >> 18);
		t[1] = (char)(0x80 | (cp >> 12 & 0x3f));
		t[2] = (char)(0x80 | (cp >> 6 & 0x3f));
		t[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	if (*o + n >= size)
		return -1;
	memcpy(buf + *o, t, n);
	*o += n;
	return 0;
}

int
jscan_string(struct jspan v, char *buf, size_t size, size_t *len)
{
	static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
	const char *p = v.p, *e = v.e, *x;
	unsigned cp, lo;
	size_t o = 0;

	if (size == 0 || e - p < 2 || *p != '"' || e[-1] != '"')
		return -1;
	for (p++, e--; p < e; p++) {
		if (*p != '\\') {
			if (o + 1 >= size)
				return -1;
			buf[o++] = *p;
			continue;
		}
		if (++p == e)
			return -1;
		if (*p != 'u') {
			if ((x = memchr(from, *p, sizeof(from) - 1)) == NULL ||
			    o + 1 >= size)
				return -1;
			buf[o++] = to[x - from];
			continue;
		}
		if (hex4(p + 1, e, &cp) == -1)
			return -1;
		p += 4;
		if (cp >= 0xd800 && cp <= 0xdbff) {
			if (e - p < 7 || p[1] != '\\' || p[2] != 'u' ||
			    hex4(p + 3, e, &lo) == -1 || lo < 0xdc00 ||
			    lo > 0xdfff)
				return -1;
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			p += 6;
		}
		if (put_utf8(buf, size, &o, cp) == -1)
			return -1;
	}
	buf[o] = '\0';
	*len = o;
	return 0;
}

int
jscan_next(struct jspan v, const char **it, struct jspan *elem)
{
	const char *p = *it, *q;

	if (p == NULL) {
		if (v.p >= v.e || *v.p != '[')
			return 0;
		p = ws(v.p + 1, v.e);
	}
	if (p >= v.e || *p == ']')
		return 0;
	if ((q = skip_value(p, v.e)) == NULL || q == p)
		return 0;
	elem->p = p;
	elem->e = q;
	p = ws(q, v.e);
	if (p < v.e && *p == ',')
		p = ws(p + 1, v.e);
	else
		p = v.e;		/* the end, or a surprise: stop */
	*it = p;
	return 1;
}
