/*
 * Configuration: /etc/tgrunner.conf, "key = value" lines, '#' comments.
 * One table in conf.c defines every option (name, type, bounds, default,
 * help); the parser, `tgrunnerd -n` and tgrunner.conf(5) follow from it.
 * (The file is conf.[ch] because autoconf owns config.h.)
 */
#ifndef TG_CONF_H
#define TG_CONF_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "flood.h"
#include "keys.h"

#define EXIT_CONFIG	78	/* EX_CONFIG from sysexits.h */

/* configure's directories (-D in Makefile.am) and the defaults from them */
#ifndef LOCALSTATEDIR
#define LOCALSTATEDIR	"/var"
#endif
#ifndef RUNSTATEDIR
#define RUNSTATEDIR	"/run"
#endif
#define CONF_STATE_DIR		LOCALSTATEDIR "/lib/tgrunner"
/* the daemon's control_socket and tgrunnerctl's socket, both */
#define CONF_CONTROL_SOCKET	RUNSTATEDIR "/tgrunner/control.sock"

enum fsync_mode { FSYNC_ALWAYS, FSYNC_BATCH, FSYNC_OFF };

/* The programs that read a configuration file (conf_unused). */
#define CONF_DAEMON	1		/* tgrunnerd */
#define CONF_RELAY	2		/* tgrunner-relay */

struct conf {
	char		*path;			/* file it was read from */
	uint64_t	 infile[2];		/* bit i: option i set in the file */

	/* Bot API */
	char		*api_url;		/* default https://api.telegram.org */
	char		*token_file;		/* NULL: $CREDENTIALS_DIRECTORY/token */
	int64_t		 poll_timeout;		/* ms; sent to Telegram in seconds */
	char		*allowed_updates;	/* compact JSON array text, NULL = Telegram's default */
	int		 delete_webhook;	/* bool */
	int		 drop_pending_updates;	/* bool */
	int64_t		 backoff_min;		/* ms, default 100 */
	int64_t		 backoff_max;		/* ms, default 30000 */

	/* Bot API calls of workers */
	int		 flood_control;		/* bool, default yes */
	struct flood_rate flood_global_rate;	/* default 30/s */
	struct flood_rate flood_chat_rate;	/* default 1/s */
	struct flood_rate flood_group_rate;	/* default 20/m */
	int64_t		 max_call_retries;	/* default 3 */
	int64_t		 api_max_inflight;	/* default 32 */
	int64_t		 api_max_queued;	/* default 20000 */
	int64_t		 max_calls_per_key;	/* default 1000 */
	int64_t		 max_calls_per_worker;	/* default 5000 */
	char		*worker_methods_allow;	/* method list; NULL = all */
	char		*worker_methods_deny;	/* method list; NULL = none */
	char		*upload_dir;		/* NULL: no file references */
	int64_t		 upload_max_size;	/* bytes, default 50M */

	/* state */
	char		*state_dir;		/* default /var/lib/tgrunner */
	enum fsync_mode	 journal_fsync;		/* default batch */

	/* routing */
	enum key_kind	 session_key[KEYS_MAX];	/* "none" = nkeys 0 */
	int		 session_key_n;
	int64_t		 max_pending;		/* default 10000 */

	/* workers */
	int64_t		 workers;		/* default 2 */
	char		*worker_command;	/* run with /bin/sh -c */
	char		*worker_user;		/* only when started as root */
	char		*worker_group;
	int64_t		 update_timeout;	/* ms, default 60000 */
	int64_t		 kill_grace;		/* ms, default 5000 */
	int64_t		 max_attempts;		/* default 3 */
	int64_t		 max_requests;		/* 0 = never recycle */
	int64_t		 hello_timeout;		/* ms a new worker has to say hello */
	char		*listen;		/* NULL = no listening socket */
	char		*listen_allow;		/* "uid:1000, gid:33" list; NULL = daemon's uid only */

	/* the Bot API endpoint for workers (workerapi.h) */
	char		*worker_api_listen;	/* "host:port", "unix:/path"; NULL = off */
	int64_t		 worker_api_max_connections;	/* all workers, default 256 */
	int64_t		 worker_api_max_per_worker;	/* default 32 */
	int64_t		 worker_api_timeout;	/* ms: idle or slow client, default 30s */
	int64_t		 download_max_size;	/* bytes, default 20M */
	char		*local_files_dir;	/* a local Bot API server's --dir */

	/* worker hosts over NATS (tgrunner-relay) */
	char		*nats_url;		/* NULL = no remote slots */
	char		*nats_subject;		/* subject prefix, default tgrunner */
	char		*nats_user;
	char		*nats_password_file;
	char		*nats_nkey;		/* public key U... */
	char		*nats_nkey_seed;	/* its seed file */
	char		*nats_creds;		/* .creds file (JWT + seed) */
	char		*nats_tls_ca;
	char		*nats_tls_cert;
	char		*nats_tls_key;
	int64_t		 relay_timeout;		/* ms of silence: relay lost */
	int64_t		 relay_max;		/* relays at once */
	int64_t		 relay_max_slots;	/* slots one relay may announce */
	char		*relay_name;		/* relay: NULL = host name */

	/* operation */
	char		*control_socket;	/* NULL = none */
	char		*metrics_listen;	/* NULL = off */
	int		 metrics_public;	/* bool: allow a non-loopback address */
	int64_t		 shutdown_timeout;	/* ms, default 30000 */
	int		 log_level;		/* LOG_LVL_* */

	/*
	 * Not options: what the file said that deserves a warning but is no
	 * error (an obsolete option), "file:line: text" lines; NULL: none.
	 */
	char		*warnings;
};

struct conf_error {
	char	 file[256];
	int	 line;			/* 0 = not tied to a line */
	char	 msg[512];		/* "option 'workers': expected ..." */
};

/* Fill c with the defaults of the table. */
void	 conf_defaults(struct conf *c);
/*
 * Read path into c (defaults first).  Returns 0, or -1 with err filled:
 * file, line and what was expected.  On error c is left freed/defaulted.
 */
int	 conf_load(const char *path, struct conf *c, struct conf_error *err);
/* Free the strings c owns; c may be reused. */
void	 conf_clear(struct conf *c);
/*
 * SIGHUP: every reloadable option (CF_RELOAD in the table) whose value
 * differs is moved from next into cur (next gets the old value: free it
 * with conf_clear).  applied lists those options, restart the others
 * whose value differs, which stay as they are until the next start:
 * "api_url,session_key", or "" for none.
 */
void	 conf_reload(struct conf *cur, struct conf *next, char *applied,
	    size_t appliedsz, char *restart, size_t restartsz);
/*
 * The options set in c's file that prog (CONF_DAEMON, CONF_RELAY) does not
 * read, as "api_url, state_dir" in buf (truncated with "..." if it is too
 * short); returns how many.  They are checked all the same.
 */
int	 conf_unused(const struct conf *c, int prog, char *buf, size_t bufsz);
/* Print every option of the table with its default and help (for -n -v / docs). */
void	 conf_dump_table(FILE *fp);
/* Print the effective configuration. */
void	 conf_print(const struct conf *c, FILE *fp);
/*
 * The per-key and per-worker bounds of queued calls that apply: the
 * options, but never more than a quarter of api_max_queued, so that one
 * key or one worker alone stays far from the half of the queue at which
 * every chat pauses.
 */
int64_t	 conf_calls_per_key(const struct conf *c);
int64_t	 conf_calls_per_worker(const struct conf *c);

#endif
