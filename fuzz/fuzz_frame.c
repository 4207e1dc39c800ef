/*
 * libFuzzer target for the frame codec: the first byte picks the direction
 * the line arrives from, the rest is the line.  Whatever decodes must encode
 * again, and the encoding must decode to the same type: the daemon and the
 * SDK rely on never sending what the peer would refuse.
 */
#include "config.h"

#include <stdint.h>
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
		if (f.type == FRAME_NONE || f.root == NULL)
			abort();
		fuzz_round_trip(&f);
		frame_clear(&f);
	}
	return 0;
}
