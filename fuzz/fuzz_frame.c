/* SPDX-License-Identifier: ISC */
/*
 * libFuzzer target for the frame codec: the first byte picks the direction
 * the line arrives from, the rest is the line.  Whatever decodes must encode
 * again, and the encoding must decode to the same type: the daemon and the
 * SDK rely on never sending what the peer would refuse.
 */
#include "config.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_round_trip(const struct frame *f)
{
	struct frame g;
	size_t len;
	char *line;

	/* Re-encoding drops unknown members and whitespace: never longer. */
	if ((line = proto_encode(f, &len)) == NULL)
		abort();
	if (len == 0 || line[len - 1] != '\n' ||
	    memchr(line, '\n', len - 1) != NULL)
		abort();
	if (proto_decode(line, len - 1, proto_type_dir(f->type), &g,
	    NULL, 0) == -1 || g.type != f->type)
		abort();
	frame_clear(&g);
	free(line);
}

/* A done frame decoded without jansson means what the full path says. */
static void
fuzz_done_fast(const struct frame *f)
{
	struct frame g;
	char line[128];
	int n;

	n = snprintf(line, sizeof(line), "{\"type\": \"done\", \"id\": %"
	    PRId64 "}", f->u.done.id);
	if (proto_decode(line, (size_t)n, PROTO_W2D, &g, NULL, 0) == -1 ||
	    g.type != FRAME_DONE || g.root == NULL ||
	    g.u.done.id != f->u.done.id || g.u.done.calls != NULL)
		abort();
	frame_clear(&g);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct frame f;
	char err[256];
	unsigned dir;

	if (size < 1)
		return 0;
	dir = data[0] & (PROTO_W2D | PROTO_D2W);
	if (proto_decode((const char *)data + 1, size - 1, dir, &f, err,
	    sizeof(err)) == 0) {
		if (f.type == FRAME_NONE)
			abort();
		if (f.root == NULL) {
			if (f.type != FRAME_DONE)
				abort();
			fuzz_done_fast(&f);
		}
		fuzz_round_trip(&f);
		frame_clear(&f);
	}
	return 0;
}
