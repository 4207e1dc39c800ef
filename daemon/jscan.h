/* SPDX-License-Identifier: ISC */
/*
 * A JSON scanner that builds nothing.  The hot path of the daemon needs a
 * handful of members of each update (update_id and the ids its session
 * keys come from) and the update's bytes; parsing every update into a
 * tree costs most of the daemon's CPU.  jscan checks that a text is JSON
 * and then reads members straight from the bytes.
 *
 * jscan_check() accepts a subset of what jansson accepts, never more:
 * whatever it refuses (an unusual real, a \u0000, nesting past
 * JSCAN_DEPTH_MAX ...) the caller hands to jansson, whose verdict and
 * error message stand.  The lookups are safe on any input (they never read
 * past the span) but only meaningful on a checked text.  Member lookups
 * honour escaped names and, like jansson, let the last duplicate win.
 */
#ifndef TG_JSCAN_H
#define TG_JSCAN_H

#include <stddef.h>
#include <stdint.h>

#define JSCAN_DEPTH_MAX	64

/* The bytes of one JSON value: [p, e). */
struct jspan {
	const char	*p;
	const char	*e;
};

/* Is [p, p+len) one JSON value, surrounded by whitespace at most? */
int	jscan_check(const char *p, size_t len);
/* The span of the value, whitespace trimmed; p must be checked. */
struct jspan jscan_span(const char *p, size_t len);

/* The kind of a value: '{', '[', '"', 'n'umber, 't'rue, 'f'alse, 'l' null. */
int	jscan_kind(struct jspan);
/* The last member called name (NUL-terminated) of object v: 0, or -1. */
int	jscan_member(struct jspan v, const char *name, struct jspan *out);
/*
 * Several members of object v in one pass: out[i] for names[i] (n <= 32,
 * distinct names); returns the bit mask of those found.
 */
uint32_t jscan_pick(struct jspan v, const char *const *names, int n,
	    struct jspan *out);
/* Follow a dotted path of members ("" is v itself): 0, or -1. */
int	jscan_path(struct jspan v, const char *path, struct jspan *out);
/* An integer (no fraction, no exponent) that fits int64: 0, or -1. */
int	jscan_int(struct jspan v, int64_t *out);
/*
 * The decoded bytes of a string value into buf (NUL-terminated), its
 * length in *len: 0, or -1 if v is not a string or does not fit size.
 */
int	jscan_string(struct jspan v, char *buf, size_t size, size_t *len);
/*
 * The decoded bytes of string v, NUL-terminated, in sbuf when they fit
 * (size bytes) or else in a buffer the caller frees (the result is not
 * sbuf then); *len is their number.  NULL if v is not a string or there
 * is no memory.
 */
char	*jscan_decode(struct jspan v, char *sbuf, size_t size, size_t *len);
/*
 * Iterate over the members of object v: *it starts NULL; each call gives
 * the next member's name (the string, quotes included) and value: 1, or 0
 * at the end (or if v is not an object).
 */
int	jscan_next_member(struct jspan v, const char **it, struct jspan *name,
	    struct jspan *value);
/* Does the name span (a string, quotes included) decode to name? */
int	jscan_name_is(struct jspan s, const char *name);
/*
 * Iterate over an array: *it starts zeroed; each call gives the next
 * element: 1, or 0 at the end (or if v is not an array).
 */
int	jscan_next(struct jspan v, const char **it, struct jspan *elem);

#endif
