/* SPDX-License-Identifier: ISC */
/*
 * multipart/form-data bodies (RFC 7578) as workers' HTTP clients send them
 * to the Bot API endpoint (workerapi.h).  The parser is pure: parts point
 * into the body, nothing is opened, nothing is logged, so the unit and fuzz
 * tests can drive it with any bytes.  Everything is bounded: the number of
 * parts, the size of each part's header block and of every name.
 */
#ifndef TG_MULTIPART_H
#define TG_MULTIPART_H

#include <stddef.h>

#define MULTIPART_MAX_PARTS	256
#define MULTIPART_BOUNDARY_MAX	70	/* RFC 2046 */
#define MULTIPART_HEADER_MAX	8192	/* bytes of one part's header block */
#define MULTIPART_NAME_MAX	255	/* bytes of a name or filename, decoded */
#define MULTIPART_CTYPE_MAX	255	/* bytes of a part's Content-Type */
#define MULTIPART_ERR_MAX	128

struct multipart_part {
	char		*name;		/* NUL-terminated, never empty */
	char		*filename;	/* NULL: a text field, not a file */
	char		*ctype;		/* NULL: the part had no Content-Type */
	const char	*data;		/* into the body given to the parser */
	size_t		 len;
};

struct multipart {
	struct multipart_part	*parts;
	size_t			 n;
};

/*
 * The boundary parameter of a Content-Type header value such as
 * "multipart/form-data; boundary=xyz" (quoted or not) into out, which has
 * room for MULTIPART_BOUNDARY_MAX + 1 bytes.  Returns 0, or -1 if the value
 * is not multipart/form-data or has no valid boundary.
 */
int		 multipart_boundary(const char *ctype, char *out, size_t outsz);
/*
 * Split body (len bytes, any content) at boundary.  Returns the parts in
 * body order (the caller frees them with multipart_free; their data point
 * into body, which must outlive them), or NULL with err filled with a
 * reason fit for a client ("part 3: no name").
 */
struct multipart *multipart_parse(const char *body, size_t len,
		    const char *boundary, char *err, size_t errsz);
void		 multipart_free(struct multipart *);
/*
 * The body that sends parts with boundary, malloc'd (caller frees), its
 * length in *len; NULL if a part cannot be written (its data holds the
 * delimiter, or a name a control character).  Names are quoted with
 * backslash escapes, so multipart_parse gives back the same parts.
 */
char		*multipart_encode(const struct multipart_part *parts, size_t n,
		    const char *boundary, size_t *len);

#endif
