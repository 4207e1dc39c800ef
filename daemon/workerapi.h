/* SPDX-License-Identifier: ISC */
/*
 * The Bot API served to workers, so that bots written for an HTTP Bot API
 * client (grammY, Telegraf, python-telegram-bot, aiogram, curl) run as
 * workers unchanged, without the bot token.
 *
 * An HTTP server on loopback (worker_api_listen: "127.0.0.1:0", a
 * kernel-chosen port, or "unix:/path") answers what api.telegram.org
 * answers, for a per-worker credential in place of the token:
 *
 *   POST|GET /bot<credential>/<method>   JSON, urlencoded, multipart or
 *	query parameters; the call goes through api_call() (flood control,
 *	per-key order, api_max_queued) with the session key of the update it
 *	belongs to, and Telegram's answer comes back as Telegram sent it.
 *   GET /file/bot<credential>/<file_path>   the file, fetched from
 *	<api_url>/file/bot<token>/<file_path> and streamed (or read from a
 *	local Bot API server's local_files_dir), at most download_max_size.
 *
 * A credential is "<bot id>:w<worker id>-<32 hex digits>": 128 random bits
 * from getrandom(2), compared in constant time, valid from
 * workerapi_credential() until workerapi_revoke() (the worker's death).
 * The bot id in front keeps the shape of a token, which frameworks check.
 *
 * A call belongs to the update the daemon's held() hook names: the one
 * the X-Tgrunner-Update header names (refused with 400 if the worker does
 * not hold it, as a call frame for it is), else the one update the worker
 * holds; otherwise none (unordered, as a call frame with id 0, which the
 * header may also say).
 */
#ifndef TG_WORKERAPI_H
#define TG_WORKERAPI_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct api;
struct conf;
struct event_base;
struct evbuffer;
struct http;
struct workerapi;

#define WORKERAPI_SECRET_BYTES	16	/* 128 bits */
/* "<bot id>:w<worker id>-<hex>" with the NUL */
#define WORKERAPI_CRED_MAX	(20 + 3 + 10 + 1 + 2 * WORKERAPI_SECRET_BYTES + 1)
#define WORKERAPI_ROOT_MAX	128	/* "http://127.0.0.1:41234", "unix:/..." */
#define WORKERAPI_HDR_UPDATE	"X-Tgrunner-Update"
#define WORKERAPI_DESC_MAX	256

/* What the daemon tells the endpoint; arg is workerapi_new's. */
struct workerapi_ops {
	/*
	 * Which update a call of worker_id belongs to.  update_id: the
	 * X-Tgrunner-Update header's value (0: none), or -1 when there is no
	 * header.  Return 1 with *key set to the update's session key for
	 * api_call (NULL if it has none; valid until the loop runs again)
	 * and *update to its id when the worker holds update_id, or
	 * update_id is -1 and the worker holds exactly one update; -1 when
	 * update_id > 0 is not held (the request is refused with 400); 0
	 * otherwise (the call is unordered).
	 */
	int	(*held)(void *arg, int worker_id, int64_t update_id,
		    const char **key, int64_t *update);
	/*
	 * The method policy (#12): 0 lets worker_id call method(params);
	 * -1 refuses it with *code (4xx) and desc.  The daemon passes the
	 * one call frames pass (calls_policy, policy.h).  NULL: no policy,
	 * every method goes to Telegram.
	 */
	int	(*policy)(void *arg, int worker_id, const char *method,
		    json_t *params, int *code, char *desc, size_t descsz);
};

struct workerapi_stats {
	uint64_t	requests;	/* answered, whatever the answer */
	uint64_t	calls;		/* handed to api_call */
	uint64_t	calls_no_update; /* of those, belonging to no update */
	uint64_t	downloads;	/* files sent in full */
	uint64_t	download_bytes;
	uint64_t	download_pauses;	/* a slow client held a transfer */
	uint64_t	unauthorized;	/* 401 */
	uint64_t	refused;	/* 404, 413, 429, other 4xx of ours */
	uint64_t	conn_limited;	/* times a connection bound bit */
};

/*
 * A new endpoint on base, not listening yet.  api, http, conf and token
 * are borrowed and must outlive it; conf is read at each use, so a reload
 * that swaps the reloadable options in (download_max_size,
 * local_files_dir, upload_max_size, worker_api_max_connections,
 * worker_api_max_per_worker) applies to the next request, and
 * worker_api_timeout to the next connection; worker_api_listen needs a
 * restart.  The caller frees it with workerapi_free().
 */
struct workerapi *workerapi_new(struct event_base *, struct api *,
		    struct http *, const struct conf *, const char *token,
		    const struct workerapi_ops *, void *arg);
/* Closes every connection (their calls finish unanswered) and the socket. */
void		 workerapi_free(struct workerapi *);
/*
 * Listen on spec: "host:port" (loopback; port 0: a free one) or
 * "unix:/path" (mode 0660, a stale socket replaced).  0, or -1 (logged).
 */
int		 workerapi_listen(struct workerapi *, const char *spec);
/*
 * After a reload swapped the options in: the connection bound applies at
 * once (accepting stops or resumes), the timeout to new connections.
 */
void		 workerapi_reconfigure(struct workerapi *);
/* What a worker's client uses: "http://127.0.0.1:41234" or "unix:/path". */
const char	*workerapi_root(const struct workerapi *);
/*
 * A fresh credential for worker_id, replacing any it had, into out (at
 * least WORKERAPI_CRED_MAX bytes).  bot_id is the bot's getMe id.
 * Returns 0, or -1 (arguments out of range, or no randomness: logged).
 */
int		 workerapi_credential(struct workerapi *, int worker_id,
		    int64_t bot_id, char *out, size_t outsz);
/*
 * The worker is gone: its credential stops working at once, its idle
 * connections are closed, the others close after their answer.
 */
void		 workerapi_revoke(struct workerapi *, int worker_id);
size_t		 workerapi_connections(const struct workerapi *);
const struct workerapi_stats *workerapi_stats(const struct workerapi *);
/* For status: {"root":..., "connections":N, "requests":N, ...}. */
json_t		*workerapi_status(const struct workerapi *);
/* For /metrics: the tgrunner_worker_api_* families. */
void		 workerapi_metrics(const struct workerapi *, struct evbuffer *);

/*
 * For getFile results: a local Bot API server answers an absolute
 * file_path under <local_files_dir>/<token>/, which would show the token
 * to the worker.  Rewrites it (in result, a getFile File object) to the
 * part below that directory, which GET /file/ maps back.  Call frames'
 * results need the same.  Returns 1 if rewritten, else 0.
 */
int		 workerapi_fix_file_path(const char *local_files_dir,
		    const char *token, json_t *result);

#endif
