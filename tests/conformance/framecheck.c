/* SPDX-License-Identifier: ISC */
/*
 * tgrunner-framecheck: the daemon's frame decoder (proto_decode) as a
 * filter, so that tools written in other languages judge frames with the
 * very code tgrunnerd and the C SDK run, not with a copy of its rules.
 *
 * Requests on standard input, one after another:
 *
 *	w2d|d2w LEN\n	then LEN bytes: the line without its '\n'
 *
 * One answer line per request on standard output (flushed):
 *
 *	ok TYPE		decodes (TYPE: "hello", "done", ...)
 *	bad REASON	refused, with proto_decode's reason
 *
 * A line too long for the protocol is read (up to FC_MAX_LEN bytes) and
 * refused by proto_decode like any other.  Exit status 0 at end of input,
 * 2 on a malformed request.  tgrunner-conformance uses it (--framecheck).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

#define FC_MAX_LEN	(2 * PROTO_MAX_FRAME)	/* read, then refused */

static int
fc_dir(const char *s, unsigned *dir)
{
	if (strcmp(s, "w2d") == 0)
		*dir = PROTO_W2D;
	else if (strcmp(s, "d2w") == 0)
		*dir = PROTO_D2W;
	else
		return -1;
	return 0;
}

/* The reason on one line: control bytes become '?'. */
static void
fc_answer(const char *verdict, const char *what)
{
	const unsigned char *p;

	fputs(verdict, stdout);
	putchar(' ');
	for (p = (const unsigned char *)what; *p != '\0'; p++)
		putchar(*p < 0x20 || *p == 0x7f ? '?' : *p);
	putchar('\n');
	fflush(stdout);
}

static void
fc_judge(const char *buf, size_t len, unsigned dir)
{
	struct frame f;
	char err[256];

	if (proto_decode(buf, len, dir, &f, err, sizeof(err)) == -1) {
		fc_answer("bad", err);
		return;
	}
	fc_answer("ok", proto_type_name(f.type));
	frame_clear(&f);
}

int
main(void)
{
	char head[64], dirname[8], *buf;
	unsigned long len;
	unsigned dir;

	if ((buf = malloc(FC_MAX_LEN)) == NULL) {
		perror("tgrunner-framecheck: malloc");
		return 1;
	}
	while (fgets(head, sizeof(head), stdin) != NULL) {
		if (sscanf(head, "%7s %lu", dirname, &len) != 2 ||
		    fc_dir(dirname, &dir) == -1 || len > FC_MAX_LEN) {
			fprintf(stderr, "tgrunner-framecheck: bad request "
			    "line\n");
			free(buf);
			return 2;
		}
		if (fread(buf, 1, len, stdin) != len) {
			fprintf(stderr, "tgrunner-framecheck: short frame\n");
			free(buf);
			return 2;
		}
		fc_judge(buf, len, dir);
	}
	free(buf);
	return 0;
}
