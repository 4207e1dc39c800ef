/* SPDX-License-Identifier: ISC */
/*
 * The wire between tgrunnerd and its workers: newline-delimited compact JSON
 * objects over a stream socket, each with a "type" member.  This header is
 * the one message-type table, the limits and the protocol version; the
 * daemon and the worker SDK both build from it.  Spec: proto/PROTOCOL.md.
 */
#ifndef TG_PROTO_H
#define TG_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define PROTO_VERSION		1
#define PROTO_MAX_FRAME		(1024 * 1024)	/* bytes, newline included */
#define PROTO_MIN_FRAME		64		/* least welcome.max_frame */
#define PROTO_MAX_SLOTS		1024		/* "slots" in hello */
#define PROTO_MAX_REF		128		/* bytes of a call's "ref" string */
#define PROTO_MAX_CALLS		100		/* "calls" attached to one done */

/* Who may send a frame. */
#define PROTO_W2D	0x1	/* worker -> daemon */
#define PROTO_D2W	0x2	/* daemon -> worker */

/*   name      wire name    direction */
#define PROTO_FRAMES(X)					\
	X(HELLO,    "hello",    PROTO_W2D)		\
	X(WELCOME,  "welcome",  PROTO_D2W)		\
	X(UPDATE,   "update",   PROTO_D2W)		\
	X(DONE,     "done",     PROTO_W2D)		\
	X(FAIL,     "fail",     PROTO_W2D)		\
	X(CALL,     "call",     PROTO_W2D)		\
	X(RESULT,   "result",   PROTO_D2W)		\
	X(CANCEL,   "cancel",   PROTO_D2W)		\
	X(SHUTDOWN, "shutdown", PROTO_D2W)

enum frame_type {
	FRAME_NONE = 0,
#define X(n, s, d)	FRAME_##n,
	PROTO_FRAMES(X)
#undef X
	FRAME_MAX
};

/*
 * A decoded frame.  Pointers point into root (json_t) or are owned by the
 * frame; frame_clear() releases everything.
 */
struct frame {
	enum frame_type	 type;
	json_t		*root;
	union {
		struct { int protocol; int slots; const char *name; } hello;
		struct { int protocol; int worker_id; json_t *bot;
			 int64_t max_frame;
			 const char *api_root, *api_token; } welcome;
						/* api_*: NULL if absent */
		struct { int64_t id; json_t *keys; int attempt;
			 int64_t deadline; json_t *update; } update;
		struct { int64_t id; json_t *calls; } done;	/* calls may be NULL */
		struct { int64_t id; const char *error; int retry; } fail;
		struct { int64_t id; json_t *ref; const char *method;
			 json_t *params; } call;		/* params may be NULL */
		struct { json_t *ref; int ok; json_t *result; int error_code;
			 const char *description; json_t *parameters;
			 int retry_after; } result;
		struct { int64_t id; const char *reason; } cancel;
		struct { int64_t deadline; } shutdown;
	} u;
};

/* Wire name of a type ("done"), NULL for an invalid value. */
const char	*proto_type_name(enum frame_type);
/* Type of a wire name, FRAME_NONE if unknown. */
enum frame_type	 proto_type_lookup(const char *name);
/* PROTO_W2D / PROTO_D2W mask of who may send it. */
unsigned	 proto_type_dir(enum frame_type);

/*
 * Decode one frame (the line without its newline, len bytes, not necessarily
 * NUL-terminated) that arrived from a peer sending in direction dir.  Strict:
 * unknown type, wrong direction, missing or mistyped member, out-of-range
 * number -> -1 and a one-line reason in err.  On success the frame owns a
 * json_t root (NULL for a done frame in the SDKs' exact spelling, decoded
 * without a parser); call frame_clear().
 */
int		 proto_decode(const char *line, size_t len, unsigned dir,
		    struct frame *f, char *err, size_t errlen);
void		 frame_clear(struct frame *f);

/*
 * Encode a frame as one compact JSON line with its trailing '\n'.  Returns a
 * malloc'd buffer (caller frees) and its length in *len, NULL on error.
 */
char		*proto_encode(const struct frame *f, size_t *len);

/*
 * The daemon's hot path: an "update" frame built around the raw Update JSON
 * text (already validated, compact) without re-parsing it.  keys[0..nkeys)
 * are escaped.  Returns malloc'd line with '\n', length in *len.
 */
char		*proto_encode_update(int64_t id, const char *const *keys, int nkeys,
		    int attempt, int64_t deadline_ms, const char *update_json,
		    size_t update_len, size_t *len);

#endif
