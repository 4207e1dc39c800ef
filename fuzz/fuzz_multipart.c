/* SPDX-License-Identifier: ISC */
/*
 * Fuzz the multipart/form-data parser of the worker API (daemon/multipart.c).
 * Input: the first line is a Content-Type header value (its boundary is
 * what the body is split at; "multipart/form-data; boundary=B" is used
 * when it has none), the rest is the body.  Oracles:
 *   - every part's data lies inside the body, parts in order, never
 *     overlapping, their names non-empty and free of control characters;
 *   - re-encoding the parts with the same boundary succeeds, and parsing
 *     that gives the same parts (names, filenames, types, bytes);
 *   - encoding is stable: the second encoding is byte for byte the first.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "multipart.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static int
fuzz_same_str(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static void
fuzz_check_inside(const struct multipart *m, const char *body, size_t len)
{
	const char	*prev = body;
	size_t		 i, j;

	if (m->n > MULTIPART_MAX_PARTS)
		abort();
	for (i = 0; i < m->n; i++) {
		const struct multipart_part *pt = &m->parts[i];

		if (pt->data < prev || pt->data > body + len ||
		    pt->len > (size_t)(body + len - pt->data))
			abort();
		prev = pt->data + pt->len;
		if (pt->name == NULL || pt->name[0] == '\0' ||
		    strlen(pt->name) > MULTIPART_NAME_MAX)
			abort();
		for (j = 0; pt->name[j] != '\0'; j++)
			if ((unsigned char)pt->name[j] < 0x20)
				abort();
		if (pt->filename != NULL &&
		    strlen(pt->filename) > MULTIPART_NAME_MAX)
			abort();
		if (pt->ctype != NULL && strlen(pt->ctype) > MULTIPART_CTYPE_MAX)
			abort();
	}
}

static void
fuzz_check_same(const struct multipart *a, const struct multipart *b)
{
	size_t i;

	if (a->n != b->n)
		abort();
	for (i = 0; i < a->n; i++) {
		if (strcmp(a->parts[i].name, b->parts[i].name) != 0 ||
		    !fuzz_same_str(a->parts[i].filename, b->parts[i].filename) ||
		    !fuzz_same_str(a->parts[i].ctype, b->parts[i].ctype) ||
		    a->parts[i].len != b->parts[i].len ||
		    memcmp(a->parts[i].data, b->parts[i].data,
		    a->parts[i].len) != 0)
			abort();
	}
}

static void
fuzz_round_trip(const struct multipart *m, const char *boundary)
{
	char			 err[MULTIPART_ERR_MAX];
	struct multipart	*m2;
	char			*enc, *enc2;
	size_t			 len, len2;

	if ((enc = multipart_encode(m->parts, m->n, boundary, &len)) == NULL)
		abort();
	if ((m2 = multipart_parse(enc, len, boundary, err, sizeof(err))) ==
	    NULL)
		abort();
	fuzz_check_inside(m2, enc, len);
	fuzz_check_same(m, m2);
	if ((enc2 = multipart_encode(m2->parts, m2->n, boundary, &len2)) ==
	    NULL || len2 != len || memcmp(enc, enc2, len) != 0)
		abort();
	free(enc2);
	multipart_free(m2);
	free(enc);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char			 ctype[512], boundary[MULTIPART_BOUNDARY_MAX + 1];
	char			 err[MULTIPART_ERR_MAX];
	const char		*body = (const char *)data, *nl;
	struct multipart	*m;
	size_t			 n;

	nl = memchr(data, '\n', size < sizeof(ctype) ? size : sizeof(ctype));
	if (nl == NULL)
		return 0;
	n = (size_t)(nl - body);
	memcpy(ctype, body, n);
	ctype[n] = '\0';
	if (multipart_boundary(ctype, boundary, sizeof(boundary)) == -1)
		strcpy(boundary, "B");
	else if (strlen(boundary) == 0 || strlen(boundary) >
	    MULTIPART_BOUNDARY_MAX)
		abort();
	body = nl + 1;
	size -= n + 1;
	if ((m = multipart_parse(body, size, boundary, err, sizeof(err))) ==
	    NULL) {
		if (err[0] == '\0' || strlen(err) >= sizeof(err))
			abort();
		return 0;
	}
	fuzz_check_inside(m, body, size);
	fuzz_round_trip(m, boundary);
	multipart_free(m);
	return 0;
}
