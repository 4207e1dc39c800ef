/* SPDX-License-Identifier: ISC */
/*
 * A reference-counted, NUL-terminated byte string.  An update's JSON is
 * kept once: the journal's index and the job that runs it share it, so a
 * backlog of N updates costs one copy of each, not two.  Not thread-safe:
 * only the event loop touches it.
 */
#ifndef TG_RCSTR_H
#define TG_RCSTR_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "xmalloc.h"

struct rcstr {
	size_t		 len;		/* bytes before the NUL */
	unsigned	 ref;
	char		 s[];
};

/* A new string holding a copy of p[0..len), one reference. */
static inline struct rcstr *
rcstr_new(const char *p, size_t len)
{
	struct rcstr *r = xmalloc(sizeof(*r) + len + 1);

	if (len > 0)
		memcpy(r->s, p, len);
	r->s[len] = '\0';
	r->len = len;
	r->ref = 1;
	return r;
}

static inline struct rcstr *
rcstr_ref(struct rcstr *r)
{
	r->ref++;
	return r;
}

static inline void
rcstr_unref(struct rcstr *r)
{
	if (r != NULL && --r->ref == 0)
		free(r);
}

#endif
