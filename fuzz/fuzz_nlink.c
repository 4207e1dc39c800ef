/*
 * Fuzz the receiving side of a NATS link (daemon/natsbus.c: nlink_input,
 * nlink_control), which takes the messages of the other host: a relay's
 * frames in the daemon, the daemon's in a relay.
 *
 * Input: byte 0 is the number of frames (1 to 16) and byte 1 the size of
 * a piece (1 to 256, larger where a frame would have more than 64); then two bytes of length per frame (the first
 * 0xffff: a frame one byte over PROTO_MAX_FRAME, sent in 64 KiB pieces).  The frames are
 * cut into numbered pieces as a sender does (Tg-Seq from 1, Tg-More on all
 * but a frame's last piece).  The rest of the input is a schedule, one
 * byte an event: the next piece, an arbitrary piece again (a duplicate or
 * one out of order), the next piece lost, a beat saying how many were
 * sent, or the sender going back to what the receiver has (a resend).  At
 * the end the sender resends everything from there, as it does until it
 * is acknowledged.
 *
 * Oracles (what the link promises, not a second implementation of it):
 *   - the frames handed on are the frames sent, whole, in order, each
 *     once: at every moment a prefix of them;
 *   - after the final resend, all of them, unless one was too long: then
 *     the link reports an error instead of it, once, and hands on
 *     nothing of it.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "natsbus.h"
#include "proto.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define FUZZ_MAX_FRAMES	16
#define FUZZ_BIG	(PROTO_MAX_FRAME + 1)

struct piece {
	size_t	 frame;			/* index of its frame */
	size_t	 off, len;
	int	 more;
};

static struct fuzz {
	char		*frames[FUZZ_MAX_FRAMES];
	size_t		 lens[FUZZ_MAX_FRAMES];
	size_t		 nframes;
	size_t		 handed;	/* frames handed on so far */
	int		 errors;
	size_t		 bad;		/* index of the too-long frame, or nframes */
} fz;

static struct event_base *base;

static void
fuzz_frame(void *arg, const char *data, size_t len)
{
	(void)arg;
	if (fz.errors > 0 || fz.handed >= fz.nframes || fz.handed >= fz.bad)
		abort();
	if (len != fz.lens[fz.handed] ||
	    memcmp(data, fz.frames[fz.handed], len) != 0)
		abort();
	fz.handed++;
}

static void
fuzz_error(void *arg, const char *why)
{
	(void)arg;
	(void)why;
	/* only for the too-long frame, once, when all before it were handed */
	if (fz.errors > 0 || fz.handed != fz.bad)
		abort();
	fz.errors++;
}

/* One message of piece i (sequence number i + 1) to the receiver. */
static void
fuzz_deliver(struct nlink *l, const struct piece *pc, size_t i)
{
	struct nbhdr h;
	const struct piece *p = &pc[i];
	char *copy;

	memset(&h, 0, sizeof(h));
	h.epoch = 1;
	h.seq = i + 1;
	h.more = p->more;
	/* a message of its own, as NATS gives (ASan sees reads past it) */
	if ((copy = malloc(p->len + 1)) == NULL)
		abort();
	memcpy(copy, fz.frames[p->frame] + p->off, p->len);
	nlink_input(l, copy, p->len, &h);
	free(copy);
}

static void
fuzz_beat(struct nlink *l, uint64_t sent)
{
	struct nbhdr h;

	memset(&h, 0, sizeof(h));
	h.epoch = 1;
	h.sent = sent;
	nlink_control(l, &h);
}

static size_t
fuzz_cut(struct piece *pc, size_t npc, size_t psize)
{
	size_t f, off, n = 0, step;

	for (f = 0; f < fz.nframes; f++) {
		step = fz.lens[f] > 65535 ? 65536 : psize;
		if (fz.lens[f] / step > 64)	/* 64 pieces a frame at most */
			step = fz.lens[f] / 64 + 1;
		off = 0;
		do {
			size_t len = fz.lens[f] - off < step ? fz.lens[f] - off :
			    step;

			if (n == npc)
				abort();
			pc[n].frame = f;
			pc[n].off = off;
			pc[n].len = len;
			pc[n].more = off + len < fz.lens[f];
			n++;
			off += len;
		} while (off < fz.lens[f]);
	}
	return n;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nlink l;
	struct piece *pc;
	size_t i, f, npc, next = 0, psize, maxpc = 0;

	if (size < 2)
		return 0;
	if (base == NULL && (base = event_base_new()) == NULL)
		abort();
	memset(&fz, 0, sizeof(fz));
	fz.nframes = data[0] % FUZZ_MAX_FRAMES + 1;
	psize = (size_t)data[1] + 1;
	data += 2;
	size -= 2;
	if (size < fz.nframes * 2)
		return 0;
	fz.bad = fz.nframes;
	for (f = 0; f < fz.nframes; f++) {
		size_t len = (size_t)data[2 * f] << 8 | data[2 * f + 1];

		/* one too-long frame at most: they are costly */
		if (len == 0xffff && fz.bad == fz.nframes) {
			len = FUZZ_BIG;
			fz.bad = f;
		}
		fz.lens[f] = len;
		if ((fz.frames[f] = malloc(len + 1)) == NULL)
			abort();
		if (len == FUZZ_BIG)	/* never handed on: no pattern needed */
			memset(fz.frames[f], 'x', len);
		else
			for (i = 0; i < len; i++)
				fz.frames[f][i] = (char)('a' + (f * 7 + i) % 26);
		maxpc += len / (len > 65535 ? 65536 : psize) + 1;	/* or fewer */
	}
	data += fz.nframes * 2;
	size -= fz.nframes * 2;
	if ((pc = calloc(maxpc, sizeof(*pc))) == NULL)
		abort();
	npc = fuzz_cut(pc, maxpc, psize);

	nlink_init(&l, NULL, base, "fuzz.frame", "fuzz.beat", 1, 1024);
	l.frame = fuzz_frame;
	l.error = fuzz_error;
	for (i = 0; i < size && fz.errors == 0; i++) {
		switch (data[i] % 5) {
		case 0:		/* the next one */
			if (next < npc)
				fuzz_deliver(&l, pc, next++);
			break;
		case 1:		/* any one again, or early */
			fuzz_deliver(&l, pc, (size_t)(data[i] / 5) % npc);
			break;
		case 2:		/* the next one lost */
			if (next < npc)
				next++;
			break;
		case 3:		/* a beat: sent so far */
			fuzz_beat(&l, next);
			break;
		case 4:		/* a resend from what the receiver has */
			next = (size_t)l.recvd;
			break;
		}
		/* the receiver takes nothing it was not given in order */
		if (l.recvd > npc)
			abort();
	}
	/* resent until acknowledged */
	for (next = (size_t)l.recvd; next < npc && fz.errors == 0; next++)
		fuzz_deliver(&l, pc, next);
	if (fz.bad < fz.nframes) {
		if (fz.errors != 1 || fz.handed != fz.bad)
			abort();
	} else if (fz.errors != 0 || fz.handed != fz.nframes ||
	    l.recvd != npc || l.part != NULL)
		abort();
	nlink_clear(&l);
	free(pc);
	for (f = 0; f < fz.nframes; f++)
		free(fz.frames[f]);
	return 0;
}
