/* SPDX-License-Identifier: ISC */
/*
 * The frame codec shared by tgrunnerd and the worker SDK.  Everything that
 * crosses the worker socket is decoded here, once, into a struct frame; a
 * frame that does not match the table exactly is refused, so the rest of
 * the code can trust what it gets.  Spec: proto/PROTOCOL.md.
 */
#include "config.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

#define PROTO_MAX_METHOD	64	/* bytes of a Bot API method name */
#define PROTO_MAX_NAME		256	/* bytes of hello's "name" */
#define PROTO_MAX_API		512	/* bytes of welcome's api_root, api_token */

static const struct {
	const char	*name;
	unsigned	 dir;
} proto_types[FRAME_MAX] = {
	[FRAME_NONE] = { NULL, 0 },
#define X(n, s, d)	[FRAME_##n] = { s, d },
	PROTO_FRAMES(X)
#undef X
};

/* Decoding context: the object being read and where to report. */
struct pdec {
	json_t	*obj;
	char	*err;
	size_t	 errlen;
};

const char *
proto_type_name(enum frame_type t)
{
	if ((int)t <= FRAME_NONE || t >= FRAME_MAX)
		return NULL;
	return proto_types[t].name;
}

enum frame_type
proto_type_lookup(const char *name)
{
	int t;

	if (name == NULL)
		return FRAME_NONE;
	for (t = FRAME_NONE + 1; t < FRAME_MAX; t++)
		if (strcmp(proto_types[t].name, name) == 0)
			return t;
	return FRAME_NONE;
}

unsigned
proto_type_dir(enum frame_type t)
{
	if ((int)t <= FRAME_NONE || t >= FRAME_MAX)
		return 0;
	return proto_types[t].dir;
}

static int
pdec_fail(struct pdec *d, const char *fmt, ...)
{
	va_list ap;

	if (d->err != NULL && d->errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(d->err, d->errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/*
 * Member key, if it has the JSON type want (JSON_TRUE stands for either
 * boolean): 1 with *out set; 0 when absent and opt; else -1 with the
 * error, "missing member" or "is not <what>".
 */
static int
pdec_member(struct pdec *d, const char *key, int opt, json_type want,
    const char *what, json_t **out)
{
	json_t *v = json_object_get(d->obj, key);

	if (v == NULL)
		return opt ? 0 : pdec_fail(d, "missing member \"%s\"", key);
	if (json_typeof(v) != want &&
	    !(want == JSON_TRUE && json_typeof(v) == JSON_FALSE))
		return pdec_fail(d, "\"%s\" is not %s", key, what);
	*out = v;
	return 1;
}

/* An integer member within [min, max]; absent is an error unless opt. */
static int
pdec_int(struct pdec *d, const char *key, int opt, int64_t min, int64_t max,
    int64_t *out)
{
	json_t *v = NULL;
	int r;

	if ((r = pdec_member(d, key, opt, JSON_INTEGER, "an integer", &v)) < 1)
		return r;
	if (json_integer_value(v) < min || json_integer_value(v) > max)
		return pdec_fail(d, "\"%s\" out of range", key);
	*out = json_integer_value(v);
	return 0;
}

/* Same as pdec_int() for members stored in an int. */
static int
pdec_int32(struct pdec *d, const char *key, int opt, int64_t min, int64_t max,
    int *out)
{
	int64_t v = *out;

	if (pdec_int(d, key, opt, min, max, &v) == -1)
		return -1;
	*out = (int)v;
	return 0;
}

static int
pdec_string(struct pdec *d, const char *key, int opt, size_t maxlen,
    const char **out)
{
	json_t *v = NULL;
	int r;

	if ((r = pdec_member(d, key, opt, JSON_STRING, "a string", &v)) < 1)
		return r;
	if (maxlen > 0 && json_string_length(v) > maxlen)
		return pdec_fail(d, "\"%s\" too long", key);
	*out = json_string_value(v);
	return 0;
}

static int
pdec_bool(struct pdec *d, const char *key, int opt, int *out)
{
	json_t *v = NULL;
	int r;

	if ((r = pdec_member(d, key, opt, JSON_TRUE, "a boolean", &v)) < 1)
		return r;
	*out = json_is_true(v);
	return 0;
}

static int
pdec_object(struct pdec *d, const char *key, int opt, json_t **out)
{
	return pdec_member(d, key, opt, JSON_OBJECT, "an object", out) < 0 ?
	    -1 : 0;
}

/* Bot API method names: 1..64 of [A-Za-z0-9_]. */
static int
proto_method_ok(const char *m)
{
	size_t i;

	for (i = 0; m[i] != '\0'; i++) {
		if (i >= PROTO_MAX_METHOD)
			return 0;
		if (!((m[i] >= 'a' && m[i] <= 'z') || (m[i] >= 'A' &&
		    m[i] <= 'Z') || (m[i] >= '0' && m[i] <= '9') ||
		    m[i] == '_'))
			return 0;
	}
	return i > 0;
}

static int
pdec_method(struct pdec *d, json_t *obj, const char **out)
{
	struct pdec sub = { obj, d->err, d->errlen };

	if (pdec_string(&sub, "method", 0, 0, out) == -1)
		return -1;
	if (!proto_method_ok(*out))
		return pdec_fail(d, "bad method name");
	return 0;
}

/* A call's "ref": a string of at most PROTO_MAX_REF bytes or an integer. */
static int
pdec_ref(struct pdec *d, json_t **out)
{
	json_t *v = json_object_get(d->obj, "ref");

	if (v == NULL)
		return pdec_fail(d, "missing member \"ref\"");
	if (json_is_string(v)) {
		if (json_string_length(v) > PROTO_MAX_REF)
			return pdec_fail(d, "\"ref\" too long");
	} else if (!json_is_integer(v))
		return pdec_fail(d, "\"ref\" is neither string nor integer");
	*out = v;
	return 0;
}

static int
pdec_id(struct pdec *d, int64_t *out)
{
	return pdec_int(d, "id", 0, 0, INT64_MAX, out);
}

static int
pdec_hello(struct pdec *d, struct frame *f)
{
	f->u.hello.name = NULL;
	if (pdec_int32(d, "protocol", 0, 1, INT_MAX, &f->u.hello.protocol) ||
	    pdec_int32(d, "slots", 0, 1, PROTO_MAX_SLOTS, &f->u.hello.slots) ||
	    pdec_string(d, "name", 1, PROTO_MAX_NAME, &f->u.hello.name))
		return -1;
	return 0;
}

static int
pdec_welcome(struct pdec *d, struct frame *f)
{
	if (pdec_int32(d, "protocol", 0, 1, INT_MAX,
	    &f->u.welcome.protocol) ||
	    pdec_int32(d, "worker_id", 0, 0, INT_MAX,
	    &f->u.welcome.worker_id) ||
	    pdec_object(d, "bot", 0, &f->u.welcome.bot) ||
	    pdec_int(d, "max_frame", 0, PROTO_MIN_FRAME, PROTO_MAX_FRAME,
	    &f->u.welcome.max_frame) ||
	    pdec_string(d, "api_root", 1, PROTO_MAX_API,
	    &f->u.welcome.api_root) ||
	    pdec_string(d, "api_token", 1, PROTO_MAX_API,
	    &f->u.welcome.api_token))
		return -1;
	/* the one is no use without the other */
	if ((f->u.welcome.api_root == NULL) != (f->u.welcome.api_token == NULL))
		return pdec_fail(d, "api_root and api_token come together");
	return 0;
}

static int
pdec_update(struct pdec *d, struct frame *f)
{
	json_t *keys, *k;
	size_t i;

	if (pdec_id(d, &f->u.update.id) ||
	    pdec_int32(d, "attempt", 0, 1, INT_MAX, &f->u.update.attempt) ||
	    pdec_int(d, "deadline", 0, 0, INT64_MAX, &f->u.update.deadline) ||
	    pdec_object(d, "update", 0, &f->u.update.update))
		return -1;
	if ((keys = json_object_get(d->obj, "keys")) == NULL)
		return pdec_fail(d, "missing member \"keys\"");
	if (!json_is_array(keys))
		return pdec_fail(d, "\"keys\" is not an array");
	json_array_foreach(keys, i, k)
		if (!json_is_string(k))
			return pdec_fail(d, "\"keys\" holds a non-string");
	f->u.update.keys = keys;
	return 0;
}

static int
pdec_calls(struct pdec *d, json_t *calls)
{
	struct pdec sub = *d;
	json_t *c, *params;
	const char *m;
	size_t i;

	if (!json_is_array(calls))
		return pdec_fail(d, "\"calls\" is not an array");
	if (json_array_size(calls) > PROTO_MAX_CALLS)
		return pdec_fail(d, "more than %d calls", PROTO_MAX_CALLS);
	json_array_foreach(calls, i, c) {
		if (!json_is_object(c))
			return pdec_fail(d, "calls[%zu] is not an object", i);
		if (pdec_method(d, c, &m) == -1)
			return -1;
		sub.obj = c;
		if (pdec_object(&sub, "params", 1, &params) == -1)
			return -1;
	}
	return 0;
}

static int
pdec_done(struct pdec *d, struct frame *f)
{
	json_t *calls;

	if (pdec_id(d, &f->u.done.id) == -1)
		return -1;
	calls = json_object_get(d->obj, "calls");
	if (calls != NULL && pdec_calls(d, calls) == -1)
		return -1;
	f->u.done.calls = calls;
	return 0;
}

static int
pdec_fail_frame(struct pdec *d, struct frame *f)
{
	f->u.fail.retry = 0;
	if (pdec_id(d, &f->u.fail.id) ||
	    pdec_string(d, "error", 0, 0, &f->u.fail.error) ||
	    pdec_bool(d, "retry", 1, &f->u.fail.retry))
		return -1;
	return 0;
}

static int
pdec_call(struct pdec *d, struct frame *f)
{
	f->u.call.params = NULL;
	if (pdec_id(d, &f->u.call.id) ||
	    pdec_ref(d, &f->u.call.ref) ||
	    pdec_method(d, d->obj, &f->u.call.method) ||
	    pdec_object(d, "params", 1, &f->u.call.params))
		return -1;
	return 0;
}

static int
pdec_result(struct pdec *d, struct frame *f)
{
	f->u.result.retry_after = 0;
	if (pdec_ref(d, &f->u.result.ref) ||
	    pdec_bool(d, "ok", 0, &f->u.result.ok))
		return -1;
	if (f->u.result.ok) {
		f->u.result.result = json_object_get(d->obj, "result");
		if (f->u.result.result == NULL)
			return pdec_fail(d, "missing member \"result\"");
		return 0;
	}
	if (pdec_int32(d, "error_code", 0, INT_MIN, INT_MAX,
	    &f->u.result.error_code) ||
	    pdec_string(d, "description", 0, 0, &f->u.result.description) ||
	    pdec_object(d, "parameters", 1, &f->u.result.parameters) ||
	    pdec_int32(d, "retry_after", 1, 0, INT_MAX,
	    &f->u.result.retry_after))
		return -1;
	return 0;
}

static int
pdec_cancel(struct pdec *d, struct frame *f)
{
	f->u.cancel.reason = NULL;
	if (pdec_id(d, &f->u.cancel.id) ||
	    pdec_string(d, "reason", 1, 0, &f->u.cancel.reason))
		return -1;
	return 0;
}

static int
pdec_shutdown(struct pdec *d, struct frame *f)
{
	f->u.shutdown.deadline = 0;
	return pdec_int(d, "deadline", 1, 0, INT64_MAX,
	    &f->u.shutdown.deadline);
}

static int
pdec_dispatch(struct pdec *d, struct frame *f)
{
	switch (f->type) {
	case FRAME_HELLO:
		return pdec_hello(d, f);
	case FRAME_WELCOME:
		return pdec_welcome(d, f);
	case FRAME_UPDATE:
		return pdec_update(d, f);
	case FRAME_DONE:
		return pdec_done(d, f);
	case FRAME_FAIL:
		return pdec_fail_frame(d, f);
	case FRAME_CALL:
		return pdec_call(d, f);
	case FRAME_RESULT:
		return pdec_result(d, f);
	case FRAME_CANCEL:
		return pdec_cancel(d, f);
	case FRAME_SHUTDOWN:
		return pdec_shutdown(d, f);
	default:
		return pdec_fail(d, "unknown frame type");
	}
}

/* Parse the line into a JSON object; NUL and newline bytes never belong. */
static json_t *
proto_parse(struct pdec *d, const char *line, size_t len)
{
	json_error_t jerr;
	json_t *root;

	if (len >= PROTO_MAX_FRAME) {
		pdec_fail(d, "frame longer than %d bytes", PROTO_MAX_FRAME);
		return NULL;
	}
	if (memchr(line, '\0', len) != NULL) {
		pdec_fail(d, "NUL byte in frame");
		return NULL;
	}
	if (memchr(line, '\n', len) != NULL) {
		pdec_fail(d, "newline inside frame");
		return NULL;
	}
	root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL && json_error_code(&jerr) ==
	    json_error_numeric_overflow) {
		/* a ref or a chat_id of 2^64: say which rule it breaks */
		pdec_fail(d, "number out of range (integers must fit in 64 "
		    "bits, reals must be finite): %s", jerr.text);
		return NULL;
	}
	if (root == NULL) {
		pdec_fail(d, "malformed JSON: %s", jerr.text);
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		pdec_fail(d, "frame is not a JSON object");
		return NULL;
	}
	return root;
}

/*
 * The frame a worker sends most, in the exact spelling every SDK produces:
 * {"type":"done","id":N}.  Decoded without jansson (a third of the
 * daemon's cost per update otherwise); any other spelling takes the full
 * path and means the same.
 */
static int
proto_decode_done_fast(const char *line, size_t len, struct frame *f)
{
	static const char head[] = "{\"type\":\"done\",\"id\":";
	const size_t hlen = sizeof(head) - 1;
	uint64_t id = 0;
	size_t i;

	/* 1 to 18 digits (always in range), no leading zero, then '}' */
	if (len < hlen + 2 || len > hlen + 19 || line[len - 1] != '}' ||
	    memcmp(line, head, hlen) != 0 ||
	    (line[hlen] == '0' && len != hlen + 2))
		return -1;
	for (i = hlen; i < len - 1; i++) {
		if (line[i] < '0' || line[i] > '9')
			return -1;
		id = id * 10 + (uint64_t)(line[i] - '0');
	}
	f->type = FRAME_DONE;
	f->u.done.id = (int64_t)id;
	return 0;
}

int
proto_decode(const char *line, size_t len, unsigned dir, struct frame *f,
    char *err, size_t errlen)
{
	struct pdec d = { NULL, err, errlen };
	const char *type;
	json_t *root;

	memset(f, 0, sizeof(*f));
	if (line == NULL)
		return pdec_fail(&d, "no frame");
	if ((dir & proto_type_dir(FRAME_DONE)) != 0 &&
	    proto_decode_done_fast(line, len, f) == 0)
		return 0;
	if ((root = proto_parse(&d, line, len)) == NULL)
		return -1;
	d.obj = root;
	type = json_string_value(json_object_get(root, "type"));
	if (type == NULL) {
		json_decref(root);
		return pdec_fail(&d, "missing or mistyped member \"type\"");
	}
	f->type = proto_type_lookup(type);
	if (f->type == FRAME_NONE || (proto_type_dir(f->type) & dir) == 0) {
		/* type points into root: report before letting it go. */
		if (f->type == FRAME_NONE)
			pdec_fail(&d, "unknown frame type \"%.32s\"", type);
		else
			pdec_fail(&d, "%s frame of the wrong direction", type);
		json_decref(root);
		memset(f, 0, sizeof(*f));
		return -1;
	}
	if (pdec_dispatch(&d, f) == -1) {
		json_decref(root);
		memset(f, 0, sizeof(*f));
		return -1;
	}
	f->root = root;
	return 0;
}

void
frame_clear(struct frame *f)
{
	if (f == NULL)
		return;
	json_decref(f->root);
	memset(f, 0, sizeof(*f));
}

/*
 * Encoding: build a JSON object from the struct, dump it compact, and run
 * the result through proto_decode() so that nothing we send could be
 * refused by the peer (a frame too long, too many calls, a bad method).
 */
static int
penc_set(json_t *o, const char *key, json_t *v)
{
	if (v == NULL)
		return -1;
	return json_object_set_new(o, key, v);
}

/* Borrowed json_t: the frame keeps its reference. */
static int
penc_ref(json_t *o, const char *key, json_t *v)
{
	if (v == NULL)
		return -1;
	return json_object_set(o, key, v);
}

static int
penc_str(json_t *o, const char *key, const char *s)
{
	if (s == NULL)
		return -1;
	return penc_set(o, key, json_string(s));
}

static int
penc_int(json_t *o, const char *key, int64_t v)
{
	return penc_set(o, key, json_integer(v));
}

static int
penc_result(json_t *o, const struct frame *f)
{
	if (penc_ref(o, "ref", f->u.result.ref) ||
	    penc_set(o, "ok", json_boolean(f->u.result.ok)))
		return -1;
	if (f->u.result.ok)
		return penc_set(o, "result", f->u.result.result ?
		    json_incref(f->u.result.result) : json_null());
	if (penc_int(o, "error_code", f->u.result.error_code) ||
	    penc_str(o, "description", f->u.result.description))
		return -1;
	if (f->u.result.parameters &&
	    penc_ref(o, "parameters", f->u.result.parameters))
		return -1;
	if (f->u.result.retry_after > 0 &&
	    penc_int(o, "retry_after", f->u.result.retry_after))
		return -1;
	return 0;
}

static int
penc_body(json_t *o, const struct frame *f)
{
	switch (f->type) {
	case FRAME_HELLO:
		return penc_int(o, "protocol", f->u.hello.protocol) ||
		    penc_int(o, "slots", f->u.hello.slots) ||
		    (f->u.hello.name && penc_str(o, "name", f->u.hello.name));
	case FRAME_WELCOME:
		return penc_int(o, "protocol", f->u.welcome.protocol) ||
		    penc_int(o, "worker_id", f->u.welcome.worker_id) ||
		    penc_ref(o, "bot", f->u.welcome.bot) ||
		    penc_int(o, "max_frame", f->u.welcome.max_frame) ||
		    (f->u.welcome.api_root && penc_str(o, "api_root",
		    f->u.welcome.api_root)) || (f->u.welcome.api_token &&
		    penc_str(o, "api_token", f->u.welcome.api_token));
	case FRAME_UPDATE:
		return penc_int(o, "id", f->u.update.id) ||
		    penc_ref(o, "keys", f->u.update.keys) ||
		    penc_int(o, "attempt", f->u.update.attempt) ||
		    penc_int(o, "deadline", f->u.update.deadline) ||
		    penc_ref(o, "update", f->u.update.update);
	case FRAME_DONE:
		return penc_int(o, "id", f->u.done.id) ||
		    (f->u.done.calls && penc_ref(o, "calls", f->u.done.calls));
	case FRAME_FAIL:
		return penc_int(o, "id", f->u.fail.id) ||
		    penc_str(o, "error", f->u.fail.error) ||
		    (f->u.fail.retry && penc_set(o, "retry", json_true()));
	case FRAME_CALL:
		return penc_int(o, "id", f->u.call.id) ||
		    penc_ref(o, "ref", f->u.call.ref) ||
		    penc_str(o, "method", f->u.call.method) ||
		    (f->u.call.params &&
		    penc_ref(o, "params", f->u.call.params));
	case FRAME_RESULT:
		return penc_result(o, f);
	case FRAME_CANCEL:
		return penc_int(o, "id", f->u.cancel.id) ||
		    (f->u.cancel.reason &&
		    penc_str(o, "reason", f->u.cancel.reason));
	case FRAME_SHUTDOWN:
		return f->u.shutdown.deadline > 0 &&
		    penc_int(o, "deadline", f->u.shutdown.deadline);
	default:
		return -1;
	}
}

/* Check an encoded line (with its newline) the way the peer will. */
static int
penc_check(const struct frame *f, const char *buf, size_t len)
{
	struct frame chk;

	if (proto_decode(buf, len - 1, proto_type_dir(f->type), &chk,
	    NULL, 0) == -1)
		return -1;
	frame_clear(&chk);
	return 0;
}

char *
proto_encode(const struct frame *f, size_t *len)
{
	json_t *o;
	char *buf, *line;
	size_t n;

	if (f == NULL || proto_type_name(f->type) == NULL)
		return NULL;
	if ((o = json_object()) == NULL)
		return NULL;
	if (penc_str(o, "type", proto_type_name(f->type)) ||
	    penc_body(o, f)) {
		json_decref(o);
		return NULL;
	}
	buf = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (buf == NULL)
		return NULL;
	n = strlen(buf);
	if (n + 1 > PROTO_MAX_FRAME || (line = realloc(buf, n + 2)) == NULL) {
		free(buf);
		return NULL;
	}
	line[n++] = '\n';
	line[n] = '\0';
	if (penc_check(f, line, n) == -1) {
		free(line);
		return NULL;
	}
	*len = n;
	return line;
}

/* Append s as a JSON string literal; returns bytes written or 0 if no room. */
static size_t
penc_quote(char *dst, size_t room, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p;
	size_t n = 0;

	if (room < 2)
		return 0;
	dst[n++] = '"';
	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if (room - n < 8)
			return 0;
		if (*p == '"' || *p == '\\') {
			dst[n++] = '\\';
			dst[n++] = *p;
		} else if (*p < 0x20 || *p == 0x7f) {
			memcpy(dst + n, "\\u00", 4);
			dst[n + 4] = hex[*p >> 4];
			dst[n + 5] = hex[*p & 0xf];
			n += 6;
		} else
			dst[n++] = *p;
	}
	dst[n++] = '"';
	return n;
}

/* The part before the update: {"type":"update",...,"update": */
static size_t
penc_update_head(char *buf, size_t room, int64_t id,
    const char *const *keys, int nkeys, int attempt, int64_t deadline_ms)
{
	size_t n, q;
	int i, r;

	r = snprintf(buf, room, "{\"type\":\"update\",\"id\":%" PRId64
	    ",\"keys\":[", id);
	if (r < 0 || (size_t)r >= room)
		return 0;
	n = r;
	for (i = 0; i < nkeys; i++) {
		if (i > 0 && n < room)
			buf[n++] = ',';
		if ((q = penc_quote(buf + n, room - n, keys[i])) == 0)
			return 0;
		n += q;
	}
	r = snprintf(buf + n, room - n, "],\"attempt\":%d,\"deadline\":%"
	    PRId64 ",\"update\":", attempt, deadline_ms);
	if (r < 0 || (size_t)r >= room - n)
		return 0;
	return n + r;
}

char *
proto_encode_update(int64_t id, const char *const *keys, int nkeys,
    int attempt, int64_t deadline_ms, const char *update_json,
    size_t update_len, size_t *len)
{
	char *buf;
	size_t n, room;
	int i;

	if (id < 0 || attempt < 1 || deadline_ms < 0 || nkeys < 0 ||
	    update_json == NULL || update_len == 0 ||
	    update_len >= PROTO_MAX_FRAME ||
	    memchr(update_json, '\n', update_len) != NULL ||
	    memchr(update_json, '\0', update_len) != NULL)
		return NULL;
	/* Worst case of the head: every key byte escaped as \u00XX. */
	room = 160;
	for (i = 0; i < nkeys; i++)
		room += 6 * strlen(keys[i]) + 3;
	if ((buf = malloc(room + update_len + 3)) == NULL)
		return NULL;
	n = penc_update_head(buf, room, id, keys, nkeys, attempt,
	    deadline_ms);
	/* Room for the update, '}', '\n' within the frame limit. */
	if (n == 0 || n + update_len + 2 > PROTO_MAX_FRAME) {
		free(buf);
		return NULL;
	}
	memcpy(buf + n, update_json, update_len);
	n += update_len;
	buf[n++] = '}';
	buf[n++] = '\n';
	buf[n] = '\0';
	*len = n;
	return buf;
}
