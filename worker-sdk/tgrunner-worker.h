/* SPDX-License-Identifier: ISC */
/*
 * libtgrunner-worker: the C SDK for tgrunner worker processes.
 *
 * A worker speaks newline-delimited JSON with tgrunnerd over a Unix stream
 * socket (see tgrunner-protocol(7)).  This library does the framing, the
 * hello/welcome handshake, slot accounting and output buffering.  Two styles:
 *
 *  - blocking, one update at a time: tgw_run() calls your handler for every
 *    update and answers done/fail from its return value;
 *  - non-blocking, many slots, for your own poll()/libevent loop: tgw_open(),
 *    watch tgw_fd() for reading (and for writing while tgw_want_write()),
 *    call tgw_process() when readable, answer with tgw_done()/tgw_fail().
 *
 * Ownership: json_t arguments named "stolen" are taken over by the library
 * (even on error); json_t pointers handed to callbacks are borrowed and valid
 * until the callback returns (json_incref() them to keep them).
 * The library prints its errors once to stderr, prefixed "tgrunner-worker:".
 */
#ifndef TGRUNNER_WORKER_H
#define TGRUNNER_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

struct tgw;		/* one connection to the daemon */
struct tgw_ctx;		/* one update being handled (blocking style) */

struct tgw_config {
	int		 fd;		/* connected socket; <= 0: see below */
	const char	*socket_path;	/* used if fd <= 0 and no $TGRUNNER_FD */
	int		 slots;		/* updates at once, 1..1024 (0: 1) */
	const char	*name;		/* sent in hello, may be NULL */
};
/*
 * Where the connection comes from, first match wins: cfg->fd > 0;
 * $TGRUNNER_FD (set by tgrunnerd for the workers it spawns);
 * cfg->socket_path; $TGRUNNER_SOCKET (the daemon's "listen" socket).
 * cfg may be NULL for all defaults.
 */

/* ---- blocking style ------------------------------------------------------ */

enum tgw_status {
	TGW_DONE = 0,	/* handled: send done with the calls attached */
	TGW_FAIL,	/* failed for good: fail {retry:false}, dead-lettered */
	TGW_RETRY	/* failed, try again later: fail {retry:true} */
};

typedef enum tgw_status (*tgw_handler_fn)(struct tgw_ctx *ctx,
    const json_t *update, void *arg);

/*
 * Connect, say hello (one slot), then call handler for every update until
 * the daemon sends shutdown (after which the running update is finished) or
 * closes the socket.  Returns 0 then, -1 on error (protocol or I/O).
 */
int		 tgw_run(const struct tgw_config *cfg, tgw_handler_fn handler,
		    void *arg);

/* The update being handled. */
int64_t		 tgw_ctx_id(const struct tgw_ctx *);
int		 tgw_ctx_attempt(const struct tgw_ctx *);
int64_t		 tgw_ctx_deadline(const struct tgw_ctx *);	/* unix ms */
const json_t	*tgw_ctx_keys(const struct tgw_ctx *);	/* array of strings */
struct tgw	*tgw_ctx_conn(struct tgw_ctx *);

/* Attach a Bot API call to the coming done frame; params stolen (or NULL). */
int		 tgw_ctx_add_call(struct tgw_ctx *, const char *method,
		    json_t *params);
/* Attach sendMessage {chat_id: the update's chat, text} to the done frame. */
int		 tgw_reply_text(struct tgw_ctx *, const char *text);
/* The error text sent with fail (default "handler failed"). */
void		 tgw_ctx_set_error(struct tgw_ctx *, const char *error);

/*
 * Run a Bot API method now and wait for its result (params stolen, may be
 * NULL).  Frames that arrive meanwhile are kept for later.  Returns 0 and
 * *result (caller owns) on success; on a Bot API error returns its
 * error_code (> 0, e.g. 429) and *result = {"error_code","description",
 * "parameters","retry_after"}; -1 on a connection error (*result NULL).
 * result may be NULL if the caller does not want it.
 */
int		 tgw_call(struct tgw_ctx *, const char *method, json_t *params,
		    json_t **result);

/*
 * Has the daemon cancelled this update (its deadline passed) or gone away?
 * Never blocks.  A cancelled handler should return TGW_RETRY soon.
 */
int		 tgw_cancelled(struct tgw_ctx *);
/* Sleep up to ms milliseconds; returns 1 early if cancelled, else 0. */
int		 tgw_sleep(struct tgw_ctx *, int ms);

/* ---- non-blocking style --------------------------------------------------- */

enum tgw_event_type {
	TGW_EV_UPDATE,		/* id, attempt, deadline, keys, update */
	TGW_EV_CANCEL,		/* id, reason: stop it, answer fail (or done) */
	TGW_EV_RESULT,		/* ref, ok, result | error_code, description... */
	TGW_EV_SHUTDOWN		/* deadline: finish running updates, then exit */
};

struct tgw_event {
	enum tgw_event_type	 type;
	int64_t			 id;
	int			 attempt;
	int64_t			 deadline;	/* unix ms, 0 if none */
	const json_t		*keys;
	const json_t		*update;
	const char		*reason;
	const json_t		*ref;
	int			 ok;
	const json_t		*result;
	int			 error_code;
	const char		*description;
	const json_t		*parameters;	/* may be NULL */
	int			 retry_after;
};

typedef void (*tgw_event_fn)(struct tgw *, const struct tgw_event *,
    void *arg);

/*
 * Connect, send hello, wait for welcome.  Returns NULL on error (printed).
 * The socket is switched to non-blocking mode.  Free with tgw_close().
 */
struct tgw	*tgw_open(const struct tgw_config *cfg);
/* Close the socket and free everything.  Not from inside a callback. */
void		 tgw_close(struct tgw *);

int		 tgw_fd(const struct tgw *);
int		 tgw_worker_id(const struct tgw *);
const json_t	*tgw_bot(const struct tgw *);	/* getMe User object */
int		 tgw_slots(const struct tgw *);
int		 tgw_busy(const struct tgw *);	/* updates held, unanswered */
int		 tgw_shutting_down(const struct tgw *);
/* Last error, "" if none. */
const char	*tgw_error(const struct tgw *);

/*
 * Read what the socket has and call cb for every complete frame.  Returns
 * 0 if the connection is still up, 1 if the daemon closed it (orderly end),
 * -1 on error (bad frame, I/O error): close it then.
 */
int		 tgw_process(struct tgw *, tgw_event_fn cb, void *arg);

/*
 * Answer an update this worker holds.  calls (stolen, may be NULL) is an
 * array of {"method","params"} run by the daemon after the update is done.
 * The frame is queued and written as far as the socket takes it.  Returns
 * 0, or -1 (id not held, invalid calls, frame too large, I/O error).  A
 * done that cannot be sent as built (invalid calls, or longer than the
 * daemon's max_frame) fails with errno EMSGSIZE and nothing sent: the
 * update is still held, answer it with tgw_fail(..., retry 0) (PROTOCOL.md
 * section 5).
 */
int		 tgw_done(struct tgw *, int64_t id, json_t *calls);
int		 tgw_fail(struct tgw *, int64_t id, const char *error,
		    int retry);
/* Send a call frame; the answer comes as TGW_EV_RESULT with the same ref
 * (stolen: a json string or integer).  id: the update it belongs to or 0. */
int		 tgw_send_call(struct tgw *, int64_t id, json_t *ref,
		    const char *method, json_t *params);

/* Is output pending?  Then watch tgw_fd() for writability too. */
int		 tgw_want_write(const struct tgw *);
/* Write what the socket takes: 0 all written, 1 some left, -1 error. */
int		 tgw_flush(struct tgw *);

/* ---- the Bot API endpoint and downloads ------------------------------------ */

/*
 * The daemon's Bot API endpoint for this worker (tgrunner-protocol(7)):
 * welcome's api_root ("http://127.0.0.1:41234" or "unix:/path") and
 * api_token (a credential used where a bot token goes), else
 * $TGRUNNER_API_ROOT and $TGRUNNER_API_TOKEN; NULL when there is none.
 * Any HTTP Bot API client can use them.  Valid until tgw_close().
 */
const char	*tgw_api_root(const struct tgw *);
const char	*tgw_api_token(const struct tgw *);
/*
 * Download the file of file_id (a photo's, a document's, from an update)
 * through that endpoint: getFile, then the file.  Blocks (at most a minute
 * without progress).  max_size bounds the file, 0 for none but the
 * daemon's download_max_size.  tgw_download writes it to path (created or
 * truncated; removed again on error); tgw_download_mem returns it in
 * *data (malloc'd, with a NUL after the *len bytes; the caller frees it).
 * Returns 0, or -1 with tgw_error() set: no endpoint, the Bot API's error
 * (e.g. "getFile: 400 Bad Request: invalid file_id"), too large, I/O.
 */
int		 tgw_download(struct tgw *, const char *file_id,
		    const char *path, int64_t max_size);
int		 tgw_download_mem(struct tgw *, const char *file_id,
		    int64_t max_size, void **data, size_t *len);

/* ---- helpers on Update objects -------------------------------------------- */

/* "message", "callback_query", ...: the member that is not update_id. */
const char	*tgw_update_type(const json_t *update);
/* The chat the update belongs to; 0 if found, -1 if it has none. */
int		 tgw_update_chat_id(const json_t *update, int64_t *chat_id);
/* message text (or caption) of message-like updates, else NULL. */
const char	*tgw_update_text(const json_t *update);

#ifdef __cplusplus
}
#endif

#endif
