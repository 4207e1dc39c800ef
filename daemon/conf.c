/* SPDX-License-Identifier: ISC */
/*
 * Configuration file: one table (conf_opts) drives the parser, the defaults,
 * conf_print, conf_dump_table and, through a unit test, tgrunner.conf(5) and
 * examples/tgrunner.conf.
 *
 * Lexing is libinih's (ini_parse_stream).  Debian's libinih is built without
 * INI_HANDLER_LINENO, so the handler is not told the line number; we feed
 * inih through our own reader, which hands it exactly one line per call and
 * counts them.  The reader also rejects what inih would silently accept but
 * we do not want: [sections], "name: value", NUL bytes and over-long lines
 * (inih would cut those into pieces).
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <sys/types.h>
#include <sys/un.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>
#include <jansson.h>

#include "conf.h"
#include "flood.h"
#include "keys.h"
#include "log.h"
#include "parse.h"
#include "policy.h"
#include "xmalloc.h"

#define CONF_LINE_MAX	4096	/* bytes of one line, without the newline */
#define CONF_FILE_MAX	(1 << 20)	/* bytes of a whole file */
#define CONF_METHOD_MAX	64	/* a Bot API method name */
#define CONF_ITEM_MAX	64	/* one item of a list value */
#define CONF_SHOW_MAX	60	/* bytes of a bad value quoted in an error */
#define CONF_NAME_MAX	64	/* longest name worth a "did you mean" */
#define CONF_SUGGEST	2	/* edit distance of a "did you mean" */

#define MSECS(x)	((int64_t)(x))
#define SECS(x)		((int64_t)(x) * 1000)
#define MINS(x)		((int64_t)(x) * 60 * 1000)
#define HOURS(x)	((int64_t)(x) * 3600 * 1000)

enum conf_type {
	CT_STRING,
	CT_PATH,
	CT_INT,
	CT_BOOL,
	CT_DURATION,	/* int64_t milliseconds */
	CT_SIZE,	/* int64_t bytes */
	CT_ENUM,	/* int */
	CT_KEYLIST,	/* session_key[] + session_key_n */
	CT_JSONLIST,	/* char *, compact JSON array of update types */
	CT_RATE		/* struct flood_rate: "30/s", "1/s burst 3" */
};

#define CF_OPTIONAL	0x01	/* empty value = unset (NULL) */
#define CF_SECONDS	0x02	/* duration in whole seconds */
#define CF_SOCKET	0x04	/* path must fit in sockaddr_un */
#define CF_RELOAD	0x08	/* a reload applies it; otherwise it needs a restart */
#define CF_DAEMON	0x10	/* read by tgrunnerd only */
#define CF_RELAY	0x20	/* read by tgrunner-relay only */

struct conf_enum {
	const char	*name;
	int		 value;
};

/* Enum options are stored through an int *. */
_Static_assert(sizeof(enum fsync_mode) == sizeof(int), "enum size");

/* Validates (and may shorten) a string value; fills why on error. */
struct conf_check {
	int		(*fn)(char *, char *, size_t);
	const char	*what;		/* the syntax, for conf_dump_table */
};

struct conf_opt {
	const char		*name;
	enum conf_type		 type;
	int			 flags;
	int64_t			 min;
	int64_t			 max;
	const char		*def;	/* parsed like a value from the file */
	size_t			 off;
	const struct conf_enum	*enums;
	const struct conf_check	*check;
	const char		*help;
};

/* Reader and handler state of one conf_load. */
struct conf_parse {
	struct conf		*c;
	struct conf_error	*err;
	FILE			*fp;
	char			*buf;
	size_t			 bufsz;
	int			 lineno;
	size_t			 total;		/* bytes read */
	int			 failed;
	int			*lines;	/* per option: its line, 0 = default */
};

static int	conf_check_url(char *, char *, size_t);
static int	conf_check_hostport(char *, char *, size_t);
static int	conf_check_allow(char *, char *, size_t);
static int	conf_check_name(char *, char *, size_t);
static int	conf_check_api_listen(char *, char *, size_t);
static int	conf_check_methods(char *, char *, size_t);
static int	conf_check_nats_url(char *, char *, size_t);
static int	conf_check_subject(char *, char *, size_t);
static int	conf_check_token(char *, char *, size_t);

static const struct conf_check conf_url = { conf_check_url, "URL" };
static const struct conf_check conf_hostport = { conf_check_hostport,
	"host:port" };
static const struct conf_check conf_allow = { conf_check_allow,
	"list of uid:N, gid:N or user names" };
static const struct conf_check conf_name = { conf_check_name, "name" };
static const struct conf_check conf_api_listen = { conf_check_api_listen,
	"host:port or unix:/path" };
static const struct conf_check conf_methods = { conf_check_methods,
	"list of Bot API method names" };
static const struct conf_check conf_nats_url = { conf_check_nats_url,
	"list of NATS URLs" };
static const struct conf_check conf_subject = { conf_check_subject,
	"NATS subject prefix" };
static const struct conf_check conf_token = { conf_check_token,
	"name of letters, digits, _ and -" };

static const struct conf_enum conf_fsync_modes[] = {
	{ "always",	FSYNC_ALWAYS },
	{ "batch",	FSYNC_BATCH },
	{ "off",	FSYNC_OFF },
	{ NULL,		0 }
};

static const struct conf_enum conf_log_levels[] = {
	{ "err",	LOG_LVL_ERR },
	{ "warn",	LOG_LVL_WARN },
	{ "notice",	LOG_LVL_NOTICE },
	{ "info",	LOG_LVL_INFO },
	{ "debug",	LOG_LVL_DEBUG },
	{ NULL,		0 }
};

#define O(f)	offsetof(struct conf, f)

static const struct conf_opt conf_opts[] = {
	/* Bot API */
	{ "api_url", CT_STRING, CF_DAEMON, 0, 0, "https://api.telegram.org",
	    O(api_url), NULL, &conf_url,
	    "Base URL of the Bot API server (http:// or https://)." },
	{ "token_file", CT_PATH, CF_OPTIONAL | CF_DAEMON, 0, 0, "",
	    O(token_file), NULL, NULL,
	    "File holding the bot token; "
	    "empty: $CREDENTIALS_DIRECTORY/token." },
	{ "poll_timeout", CT_DURATION, CF_SECONDS | CF_RELOAD | CF_DAEMON,
	    0, SECS(50), "30s",
	    O(poll_timeout), NULL, NULL,
	    "Long-poll timeout of getUpdates, in whole seconds." },
	{ "allowed_updates", CT_JSONLIST, CF_OPTIONAL | CF_DAEMON, 0, 0, "",
	    O(allowed_updates), NULL, NULL,
	    "Update types to receive, e.g. message, callback_query; "
	    "empty: Telegram's default set." },
	{ "delete_webhook", CT_BOOL, CF_DAEMON, 0, 1, "no",
	    O(delete_webhook), NULL, NULL,
	    "Call deleteWebhook at start so that polling is possible." },
	{ "drop_pending_updates", CT_BOOL, CF_DAEMON, 0, 1, "no",
	    O(drop_pending_updates), NULL, NULL,
	    "With delete_webhook, drop the updates Telegram has queued." },
	{ "backoff_min", CT_DURATION, CF_RELOAD | CF_DAEMON,
	    MSECS(10), SECS(10), "100ms",
	    O(backoff_min), NULL, NULL,
	    "First delay after a failed Bot API request." },
	{ "backoff_max", CT_DURATION, CF_RELOAD | CF_DAEMON,
	    SECS(1), MINS(10), "30s",
	    O(backoff_max), NULL, NULL,
	    "Cap of the exponential back-off; at least backoff_min." },

	/* Bot API calls of workers */
	{ "flood_control", CT_BOOL, CF_RELOAD | CF_DAEMON, 0, 1, "yes",
	    O(flood_control), NULL, NULL,
	    "Pace messages to Telegram's limits with the flood_*_rate "
	    "limits; no: only 429 answers slow calls down." },
	{ "flood_global_rate", CT_RATE, CF_RELOAD | CF_DAEMON, 0, 0, "30/s",
	    O(flood_global_rate), NULL, NULL,
	    "Messages for the whole bot, at most N in any window of the "
	    "period (N/s, N/m, N/h); with burst B a token bucket instead." },
	{ "flood_chat_rate", CT_RATE, CF_RELOAD | CF_DAEMON, 0, 0, "1/s",
	    O(flood_chat_rate), NULL, NULL,
	    "Messages per period to one private chat." },
	{ "flood_group_rate", CT_RATE, CF_RELOAD | CF_DAEMON, 0, 0, "20/m",
	    O(flood_group_rate), NULL, NULL,
	    "Messages per period to one group, supergroup or channel." },
	{ "max_call_retries", CT_INT, CF_RELOAD | CF_DAEMON, 0, 100, "3",
	    O(max_call_retries), NULL, NULL,
	    "Retries of a call after 429 (or a network error of a get* "
	    "method) before its error goes to the worker." },
	{ "api_max_inflight", CT_INT, CF_RELOAD | CF_DAEMON, 1, 1024, "32",
	    O(api_max_inflight), NULL, NULL,
	    "Bot API requests of workers' calls in flight at once." },
	{ "api_max_queued", CT_INT, CF_RELOAD | CF_DAEMON, 1, 1000000, "20000",
	    O(api_max_queued), NULL, NULL,
	    "Workers' calls queued at most: a call frame beyond it is "
	    "refused; past half (not counting the calls of workers over "
	    "max_calls_per_worker), no new update starts." },
	{ "max_calls_per_key", CT_INT, CF_RELOAD | CF_DAEMON, 1, 1000000,
	    "1000",
	    O(max_calls_per_key), NULL, NULL,
	    "Calls queued for one session key at most (and at most a quarter "
	    "of api_max_queued): beyond it the key's call frames are answered "
	    "429 and its next updates wait." },
	{ "max_calls_per_worker", CT_INT, CF_RELOAD | CF_DAEMON, 1, 1000000,
	    "5000",
	    O(max_calls_per_worker), NULL, NULL,
	    "Calls queued by one worker at most (and at most a quarter of "
	    "api_max_queued): beyond it its call frames are answered 429 and "
	    "it gets no new updates." },
	{ "worker_methods_allow", CT_STRING, CF_OPTIONAL | CF_RELOAD | CF_DAEMON,
	    0, 0, "", O(worker_methods_allow), NULL, &conf_methods,
	    "Bot API methods workers may call, e.g. sendMessage, "
	    "answerCallbackQuery; empty: all but the reserved ones." },
	{ "worker_methods_deny", CT_STRING, CF_OPTIONAL | CF_RELOAD | CF_DAEMON,
	    0, 0, "", O(worker_methods_deny), NULL, &conf_methods,
	    "Bot API methods workers may not call; empty: none but the "
	    "reserved ones." },
	{ "upload_dir", CT_PATH, CF_OPTIONAL | CF_RELOAD | CF_DAEMON, 0, 0, "",
	    O(upload_dir), NULL, NULL,
	    "Directory whose files workers' calls may upload with "
	    "{\"@file\": \"relative/path\"}; empty: file references are "
	    "refused." },
	{ "upload_max_size", CT_SIZE, CF_RELOAD | CF_DAEMON,
	    1, (int64_t)2 << 30, "50M",
	    O(upload_max_size), NULL, NULL,
	    "Largest file a file reference may upload." },

	/* state */
	{ "state_dir", CT_PATH, CF_DAEMON, 0, 0, CONF_STATE_DIR,
	    O(state_dir), NULL, NULL,
	    "Directory of the update journal." },
	{ "journal_fsync", CT_ENUM, CF_DAEMON, 0, 0, "batch",
	    O(journal_fsync), conf_fsync_modes, NULL,
	    "When the journal is flushed to disk: always (every write), "
	    "batch (once per fetched batch) or off." },

	/* routing */
	{ "session_key", CT_KEYLIST, CF_DAEMON, 0, KEYS_MAX, "chat",
	    O(session_key), NULL, NULL,
	    "Keys that serialise updates: chat, user, chat_user, chat_topic, "
	    "a list of them, or none." },
	{ "max_pending", CT_INT, CF_RELOAD | CF_DAEMON, 1, 1000000, "10000",
	    O(max_pending), NULL, NULL,
	    "Updates held in memory at most; polling pauses beyond it." },

	/* workers */
	{ "workers", CT_INT, CF_RELOAD, 0, 1024, "2",
	    O(workers), NULL, NULL,
	    "Worker processes started from worker_command; "
	    "0 requires listen." },
	{ "worker_command", CT_STRING, CF_OPTIONAL | CF_RELOAD, 0, 0, "",
	    O(worker_command), NULL, NULL,
	    "Command run with /bin/sh -c for each worker; "
	    "required when workers > 0." },
	{ "worker_user", CT_STRING, CF_OPTIONAL | CF_RELOAD, 0, 0, "",
	    O(worker_user), NULL, &conf_name,
	    "User the workers run as (only when started as root)." },
	{ "worker_group", CT_STRING, CF_OPTIONAL | CF_RELOAD, 0, 0, "",
	    O(worker_group), NULL, &conf_name,
	    "Group the workers run as (only when started as root)." },
	{ "update_timeout", CT_DURATION, CF_RELOAD | CF_DAEMON,
	    MSECS(100), HOURS(24), "60s",
	    O(update_timeout), NULL, NULL,
	    "Time a worker has for one update before it is cancelled." },
	{ "kill_grace", CT_DURATION, CF_RELOAD, 0, MINS(10), "5s",
	    O(kill_grace), NULL, NULL,
	    "Delay between cancel, SIGTERM and SIGKILL of a late worker." },
	{ "max_attempts", CT_INT, CF_RELOAD | CF_DAEMON, 1, 100, "3",
	    O(max_attempts), NULL, NULL,
	    "Attempts per update before it is recorded as dead." },
	{ "max_requests", CT_INT, CF_RELOAD, 0, 1000000000, "0",
	    O(max_requests), NULL, NULL,
	    "Updates a worker handles before it is recycled; 0: never." },
	{ "hello_timeout", CT_DURATION, CF_RELOAD, MSECS(100), MINS(10), "10s",
	    O(hello_timeout), NULL, NULL,
	    "Time a new worker has to send its hello frame." },
	{ "listen", CT_PATH, CF_OPTIONAL | CF_SOCKET, 0, 0, "",
	    O(listen), NULL, NULL,
	    "Unix socket where external workers may join; empty: none." },
	{ "listen_allow", CT_STRING, CF_OPTIONAL, 0, 0, "",
	    O(listen_allow), NULL, &conf_allow,
	    "Peers allowed on listen: uid:N, gid:N or user names; "
	    "empty: the daemon's own uid." },

	/* the Bot API endpoint for workers */
	{ "worker_api_listen", CT_STRING, CF_OPTIONAL | CF_DAEMON,
	    0, 0, "127.0.0.1:0",
	    O(worker_api_listen), NULL, &conf_api_listen,
	    "Where workers' own Bot API clients reach the daemon: a loopback "
	    "host:port (port 0: any free one) or unix:/path; empty: off." },
	{ "worker_api_max_connections", CT_INT, CF_RELOAD | CF_DAEMON, 1, 65536,
	    "256", O(worker_api_max_connections), NULL, NULL,
	    "Connections to worker_api_listen at once, all workers together; "
	    "beyond it new ones wait." },
	{ "worker_api_max_per_worker", CT_INT, CF_RELOAD | CF_DAEMON, 1, 65536,
	    "32", O(worker_api_max_per_worker), NULL, NULL,
	    "Connections one worker may hold to worker_api_listen; a request "
	    "on one more is answered 429." },
	{ "worker_api_timeout", CT_DURATION, CF_SECONDS | CF_RELOAD | CF_DAEMON,
	    SECS(1), HOURS(1), "30s", O(worker_api_timeout), NULL, NULL,
	    "Time a worker's connection may stay idle, or take to send a "
	    "request or read an answer, before it is closed." },
	{ "download_max_size", CT_SIZE, CF_RELOAD | CF_DAEMON,
	    1, (int64_t)2 << 30, "20M", O(download_max_size), NULL, NULL,
	    "Largest file a worker may download through worker_api_listen." },
	{ "local_files_dir", CT_PATH, CF_OPTIONAL | CF_RELOAD | CF_DAEMON, 0, 0,
	    "", O(local_files_dir), NULL, NULL,
	    "The --dir of a local Bot API server run with --local: downloads "
	    "are read from its files; empty: fetched from api_url." },

	/* worker hosts over NATS */
	{ "nats_url", CT_STRING, CF_OPTIONAL, 0, 0, "",
	    O(nats_url), NULL, &conf_nats_url,
	    "NATS servers (nats:// or tls://, comma-separated) through which "
	    "relays on other hosts offer worker slots; empty: none." },
	{ "nats_subject", CT_STRING, 0, 0, 0, "tgrunner",
	    O(nats_subject), NULL, &conf_subject,
	    "Prefix of the NATS subjects of this bot; the daemon and its "
	    "relays must agree." },
	{ "nats_user", CT_STRING, CF_OPTIONAL, 0, 0, "",
	    O(nats_user), NULL, NULL,
	    "User name for the NATS server; empty: none." },
	{ "nats_password_file", CT_PATH, CF_OPTIONAL, 0, 0, "",
	    O(nats_password_file), NULL, NULL,
	    "File holding nats_user's password; empty: none." },
	{ "nats_nkey", CT_STRING, CF_OPTIONAL, 0, 0, "",
	    O(nats_nkey), NULL, &conf_token,
	    "Public NKey (U...) to authenticate with; needs nats_nkey_seed." },
	{ "nats_nkey_seed", CT_PATH, CF_OPTIONAL, 0, 0, "",
	    O(nats_nkey_seed), NULL, NULL,
	    "File holding the seed of nats_nkey." },
	{ "nats_creds", CT_PATH, CF_OPTIONAL, 0, 0, "",
	    O(nats_creds), NULL, NULL,
	    "NATS .creds file (user JWT and seed); empty: none." },
	{ "nats_tls_ca", CT_PATH, CF_OPTIONAL, 0, 0, "",
	    O(nats_tls_ca), NULL, NULL,
	    "CA certificates that sign the NATS server's; set: TLS." },
	{ "nats_tls_cert", CT_PATH, CF_OPTIONAL, 0, 0, "",
	    O(nats_tls_cert), NULL, NULL,
	    "Client certificate for the NATS server; needs nats_tls_key." },
	{ "nats_tls_key", CT_PATH, CF_OPTIONAL, 0, 0, "",
	    O(nats_tls_key), NULL, NULL,
	    "Private key of nats_tls_cert." },
	{ "relay_timeout", CT_DURATION, CF_DAEMON, SECS(1), MINS(10), "10s",
	    O(relay_timeout), NULL, NULL,
	    "Silence after which a relay is lost and its updates run "
	    "elsewhere." },
	{ "relay_max", CT_INT, CF_DAEMON, 1, 1024, "64",
	    O(relay_max), NULL, NULL,
	    "Relays that may be joined at once." },
	{ "relay_max_slots", CT_INT, CF_DAEMON, 1, 65536, "4096",
	    O(relay_max_slots), NULL, NULL,
	    "Slots one relay may offer; more are not used." },
	{ "relay_name", CT_STRING, CF_OPTIONAL | CF_RELAY, 0, 0, "",
	    O(relay_name), NULL, &conf_token,
	    "tgrunner-relay: its name on NATS; empty: the host name." },

	/* operation */
	{ "control_socket", CT_PATH, CF_OPTIONAL | CF_SOCKET | CF_DAEMON, 0, 0,
	    CONF_CONTROL_SOCKET,
	    O(control_socket), NULL, NULL,
	    "Unix socket of tgrunnerctl; empty: none." },
	{ "metrics_listen", CT_STRING, CF_OPTIONAL | CF_DAEMON, 0, 0, "",
	    O(metrics_listen), NULL, &conf_hostport,
	    "host:port of the Prometheus /metrics endpoint; empty: off." },
	{ "metrics_public", CT_BOOL, CF_DAEMON, 0, 1, "no",
	    O(metrics_public), NULL, NULL,
	    "Allow metrics_listen on an address other than loopback." },
	{ "shutdown_timeout", CT_DURATION, CF_RELOAD, 0, HOURS(1), "30s",
	    O(shutdown_timeout), NULL, NULL,
	    "Time in-flight updates get to finish at SIGTERM." },
	{ "log_level", CT_ENUM, CF_RELOAD, 0, 0, "info",
	    O(log_level), conf_log_levels, NULL,
	    "Lowest level logged: err, warn, notice, info or debug." },
};

#undef O

#define CONF_NOPTS	(sizeof(conf_opts) / sizeof(conf_opts[0]))
_Static_assert(CONF_NOPTS <= 64 * sizeof(((struct conf *)0)->infile) /
    sizeof(uint64_t), "struct conf's infile has a bit per option");

/*
 * Options that existed once: a file that sets one still loads, with a
 * warning that says what became of it (tgrunnerd -n prints it, the daemon
 * logs it at start and reload).
 */
static const struct conf_obsolete {
	const char	*name;
	const char	*why;
} conf_obsolete[] = {
	{ "worker_token_env", "obsolete and ignored: workers never get the "
	    "bot token (it was never passed to them); the daemon makes their "
	    "Bot API calls (call frames, tgrunner-protocol(7))" },
};

static void *
conf_field(struct conf *c, const struct conf_opt *o)
{
	return (char *)c + o->off;
}

static const void *
conf_cfield(const struct conf *c, const struct conf_opt *o)
{
	return (const char *)c + o->off;
}

/* Append s to buf, truncating (glibc 2.36 has no strlcat). */
static void
conf_append(char *buf, size_t bufsz, const char *s)
{
	size_t n = strlen(buf);

	if (n + 1 < bufsz)
		snprintf(buf + n, bufsz - n, "%s", s);
}

static const struct conf_opt *
conf_find(const char *name)
{
	size_t i;

	for (i = 0; i < CONF_NOPTS; i++)
		if (strcmp(conf_opts[i].name, name) == 0)
			return &conf_opts[i];
	return NULL;
}

static int
conf_index(const char *name)
{
	const struct conf_opt *o;

	if ((o = conf_find(name)) == NULL)
		fatalx(EXIT_SOFTWARE, "%s: no option %s", __func__, name);
	return (int)(o - conf_opts);
}

/*
 * A value quoted back in a message: bounded and printable, since it goes to
 * a terminal or the journal.
 */
static void
conf_show(const char *v, char *out, size_t outsz)
{
	size_t i, n = 0;

	for (i = 0; v[i] != '\0' && n + 4 < outsz && i < CONF_SHOW_MAX; i++)
		out[n++] = isprint((unsigned char)v[i]) ? v[i] : '?';
	if (v[i] != '\0' && n + 4 < outsz) {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
}

static int
conf_expect(char *why, size_t whysz, const char *v, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Fill why with "expected <what>, got '<v>'"; returns -1 for the caller. */
static int
conf_expect(char *why, size_t whysz, const char *v, const char *fmt, ...)
{
	char	 what[256], shown[CONF_SHOW_MAX + 8];
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	conf_show(v, shown, sizeof(shown));
	snprintf(why, whysz, "expected %s, got '%s'", what, shown);
	return -1;
}

/* "100ms", "30s", "10m", "24h": the largest unit that divides ms. */
static void
conf_fmt_duration(int64_t ms, char *buf, size_t bufsz)
{
	if (ms != 0 && ms % HOURS(1) == 0)
		snprintf(buf, bufsz, "%" PRId64 "h", ms / HOURS(1));
	else if (ms != 0 && ms % MINS(1) == 0)
		snprintf(buf, bufsz, "%" PRId64 "m", ms / MINS(1));
	else if (ms % SECS(1) == 0)
		snprintf(buf, bufsz, "%" PRId64 "s", ms / SECS(1));
	else
		snprintf(buf, bufsz, "%" PRId64 "ms", ms);
}

static void
conf_fmt_size(int64_t n, char *buf, size_t bufsz)
{
	static const char units[] = "kMG";
	int i;

	for (i = 2; i >= 0; i--) {
		int64_t m = (int64_t)1 << (10 * (i + 1));
		if (n != 0 && n % m == 0) {
			snprintf(buf, bufsz, "%" PRId64 "%c", n / m, units[i]);
			return;
		}
	}
	snprintf(buf, bufsz, "%" PRId64, n);
}

static void
conf_fmt_bounds(const struct conf_opt *o, char *buf, size_t bufsz)
{
	char lo[32], hi[32];

	switch (o->type) {
	case CT_DURATION:
		conf_fmt_duration(o->min, lo, sizeof(lo));
		conf_fmt_duration(o->max, hi, sizeof(hi));
		break;
	case CT_SIZE:
		conf_fmt_size(o->min, lo, sizeof(lo));
		conf_fmt_size(o->max, hi, sizeof(hi));
		break;
	default:
		snprintf(lo, sizeof(lo), "%" PRId64, o->min);
		snprintf(hi, sizeof(hi), "%" PRId64, o->max);
		break;
	}
	snprintf(buf, bufsz, "%s and %s", lo, hi);
}

static int
conf_parse_int(const char *s, int64_t *out)
{
	int neg = 0;

	if (*s == '-' || *s == '+')
		neg = *s++ == '-';
	if (parse_uint(&s, INT64_MAX, out) == -1 || *s != '\0')
		return -1;
	if (neg)
		*out = -*out;
	return 0;
}

/* "250ms", "30s", "1m30s", "2h"; a bare number is seconds. */
static int
conf_parse_duration(const char *s, int64_t *out)
{
	const char	*bare = s;
	int64_t		 v, unit, total = 0;

	if (parse_uint(&bare, INT64_MAX, &v) == 0 && *bare == '\0') {
		if (v > INT64_MAX / SECS(1))
			return -1;
		*out = SECS(v);
		return 0;
	}
	if (*s == '\0')
		return -1;
	while (*s != '\0') {
		while (*s == ' ')
			s++;
		if (parse_uint(&s, INT64_MAX, &v) == -1)
			return -1;
		while (*s == ' ')
			s++;
		if ((unit = parse_unit_ms(&s)) == 0)
			return -1;
		if (v > (INT64_MAX - total) / unit)
			return -1;
		total += v * unit;
		while (*s == ' ')
			s++;
	}
	*out = total;
	return 0;
}

/* "512", "64k", "16M", "1G" (binary multiples). */
static int
conf_parse_size(const char *s, int64_t *out)
{
	int64_t	 v, mult = 1;

	if (parse_uint(&s, INT64_MAX, &v) == -1)
		return -1;
	switch (*s) {
	case '\0':
		break;
	case 'k':
	case 'K':
		mult = (int64_t)1 << 10;
		s++;
		break;
	case 'M':
		mult = (int64_t)1 << 20;
		s++;
		break;
	case 'G':
		mult = (int64_t)1 << 30;
		s++;
		break;
	default:
		return -1;
	}
	if (*s != '\0' || v > INT64_MAX / mult)
		return -1;
	*out = v * mult;
	return 0;
}

static int
conf_parse_bool(const char *s, int *out)
{
	static const char *const yes[] = { "yes", "true", "on", "1", NULL };
	static const char *const no[] = { "no", "false", "off", "0", NULL };
	int i;

	for (i = 0; yes[i] != NULL; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

/*
 * Next item of a list ("a, b c"): commas and/or blanks separate items.
 * Returns 1 with the item, 0 at the end, -1 for an empty or too long item.
 */
static int
conf_list_next(const char **sp, char *item, size_t itemsz)
{
	const char	*s = *sp;
	size_t		 n;

	while (*s == ' ' || *s == '\t')
		s++;
	if (*s == '\0')
		return 0;
	n = strcspn(s, ", \t");
	if (n == 0 || n >= itemsz)
		return -1;
	memcpy(item, s, n);
	item[n] = '\0';
	s += n;
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s == ',') {
		s++;
		while (*s == ' ' || *s == '\t')
			s++;
		if (*s == '\0' || *s == ',')
			return -1;	/* "a," or "a,,b" */
	}
	*sp = s;
	return 1;
}

static void
conf_enum_names(const struct conf_opt *o, const char *sep, char *buf,
    size_t bufsz)
{
	int i;

	buf[0] = '\0';
	for (i = 0; o->enums[i].name != NULL; i++) {
		if (i > 0)
			conf_append(buf, bufsz, sep);
		conf_append(buf, bufsz, o->enums[i].name);
	}
}

static int
conf_set_int(struct conf *c, const struct conf_opt *o, const char *v,
    char *why, size_t whysz)
{
	int64_t n;

	if (conf_parse_int(v, &n) == -1 || n < o->min || n > o->max)
		return conf_expect(why, whysz, v,
		    "an integer between %" PRId64 " and %" PRId64,
		    o->min, o->max);
	*(int64_t *)conf_field(c, o) = n;
	return 0;
}

static int
conf_set_duration(struct conf *c, const struct conf_opt *o, const char *v,
    char *why, size_t whysz)
{
	char	 bounds[80];
	int64_t	 ms;

	conf_fmt_bounds(o, bounds, sizeof(bounds));
	if (conf_parse_duration(v, &ms) == -1 || ms < o->min || ms > o->max)
		return conf_expect(why, whysz, v,
		    "a duration between %s (units ms, s, m, h)", bounds);
	if ((o->flags & CF_SECONDS) && ms % SECS(1) != 0)
		return conf_expect(why, whysz, v, "whole seconds");
	*(int64_t *)conf_field(c, o) = ms;
	return 0;
}

static int
conf_set_size(struct conf *c, const struct conf_opt *o, const char *v,
    char *why, size_t whysz)
{
	char	 bounds[80];
	int64_t	 n;

	conf_fmt_bounds(o, bounds, sizeof(bounds));
	if (conf_parse_size(v, &n) == -1 || n < o->min || n > o->max)
		return conf_expect(why, whysz, v,
		    "a size between %s (units k, M, G)", bounds);
	*(int64_t *)conf_field(c, o) = n;
	return 0;
}

static int
conf_set_bool(struct conf *c, const struct conf_opt *o, const char *v,
    char *why, size_t whysz)
{
	if (conf_parse_bool(v, (int *)conf_field(c, o)) == -1)
		return conf_expect(why, whysz, v,
		    "yes or no (also true/false, on/off, 1/0)");
	return 0;
}

static int
conf_set_enum(struct conf *c, const struct conf_opt *o, const char *v,
    char *why, size_t whysz)
{
	char	 names[128];
	int	 i;

	for (i = 0; o->enums[i].name != NULL; i++) {
		if (strcasecmp(v, o->enums[i].name) == 0) {
			*(int *)conf_field(c, o) = o->enums[i].value;
			return 0;
		}
	}
	conf_enum_names(o, ", ", names, sizeof(names));
	return conf_expect(why, whysz, v, "one of %s", names);
}

/* session_key is the only keylist: it fills two fields of struct conf. */
static int
conf_set_keylist(struct conf *c, const struct conf_opt *o, const char *v,
    char *why, size_t whysz)
{
	enum key_kind	 kinds[KEYS_MAX], k;
	char		 item[CONF_ITEM_MAX];
	const char	*s = v;
	int		 i, n = 0, r;

	if (strcasecmp(v, "none") == 0) {
		c->session_key_n = 0;
		return 0;
	}
	while ((r = conf_list_next(&s, item, sizeof(item))) == 1) {
		if (keys_kind_parse(item, &k) == -1)
			return conf_expect(why, whysz, item, "'none' or a list "
			    "of chat, user, chat_user, chat_topic");
		for (i = 0; i < n; i++)
			if (kinds[i] == k)
				return conf_expect(why, whysz, v,
				    "each key once");
		if (n == (int)o->max)
			return conf_expect(why, whysz, v, "at most %d keys",
			    (int)o->max);
		kinds[n++] = k;
	}
	if (r == -1 || n == 0)
		return conf_expect(why, whysz, v, "'none' or a comma-separated "
		    "list of chat, user, chat_user, chat_topic");
	memcpy(c->session_key, kinds, sizeof(kinds[0]) * n);
	c->session_key_n = n;
	return 0;
}

static int
conf_is_update_type(const char *name)
{
	const char *t;
	size_t i;

	for (i = 0; (t = keys_update_type_at(i, NULL)) != NULL; i++)
		if (strcmp(t, name) == 0)
			return 1;
	return 0;
}

/* Add one update type name to arr; -1 with why for a bad or repeated one. */
static int
conf_jsonlist_add(json_t *arr, const char *name, char *why, size_t whysz)
{
	size_t	 i;
	json_t	*e;

	if (!conf_is_update_type(name))
		return conf_expect(why, whysz, name, "an update type such as "
		    "message or callback_query (see getUpdates)");
	json_array_foreach(arr, i, e)
		if (strcmp(json_string_value(e), name) == 0)
			return conf_expect(why, whysz, name,
			    "each update type once");
	if (json_array_append_new(arr, json_string(name)) == -1)
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	return 0;
}

/* A JSON array of strings, as Telegram spells it. */
static int
conf_jsonlist_json(json_t *arr, const char *v, char *why, size_t whysz)
{
	json_t	*in, *e;
	size_t	 i;
	int	 r = 0;

	in = json_loads(v, JSON_REJECT_DUPLICATES, NULL);
	if (in == NULL || !json_is_array(in)) {
		json_decref(in);
		return conf_expect(why, whysz, v, "a JSON array of strings");
	}
	json_array_foreach(in, i, e) {
		if (!json_is_string(e))
			r = conf_expect(why, whysz, v,
			    "a JSON array of strings");
		else
			r = conf_jsonlist_add(arr, json_string_value(e), why,
			    whysz);
		if (r == -1)
			break;
	}
	json_decref(in);
	return r;
}

static int
conf_jsonlist_words(json_t *arr, const char *v, char *why, size_t whysz)
{
	char	 item[CONF_ITEM_MAX];
	int	 r;

	while ((r = conf_list_next(&v, item, sizeof(item))) == 1)
		if (conf_jsonlist_add(arr, item, why, whysz) == -1)
			return -1;
	if (r == -1)
		return conf_expect(why, whysz, v,
		    "a comma-separated list of update types");
	return 0;
}

/* Stored as compact JSON array text, ready for getUpdates. */
static int
conf_set_jsonlist(struct conf *c, const struct conf_opt *o, const char *v,
    char *why, size_t whysz)
{
	char	**dst = conf_field(c, o);
	json_t	 *arr;
	int	  r;

	if ((arr = json_array()) == NULL)
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	if (*v == '[')
		r = conf_jsonlist_json(arr, v, why, whysz);
	else
		r = conf_jsonlist_words(arr, v, why, whysz);
	if (r == 0) {
		free(*dst);
		if ((*dst = json_dumps(arr, JSON_COMPACT)) == NULL)
			fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	}
	json_decref(arr);
	return r;
}

static int
conf_check_path(const struct conf_opt *o, const char *v, char *why,
    size_t whysz)
{
	size_t i;

	if (v[0] != '/')
		return conf_expect(why, whysz, v, "an absolute path");
	for (i = 0; v[i] != '\0'; i++)
		if (iscntrl((unsigned char)v[i]))
			return conf_expect(why, whysz, v,
			    "a path without control characters");
	if ((o->flags & CF_SOCKET) &&
	    i >= sizeof(((struct sockaddr_un *)NULL)->sun_path))
		return conf_expect(why, whysz, v, "a socket path shorter than "
		    "%zu bytes",
		    sizeof(((struct sockaddr_un *)NULL)->sun_path));
	return 0;
}

static int
conf_set_string(struct conf *c, const struct conf_opt *o, const char *v,
    char *why, size_t whysz)
{
	char	**dst = conf_field(c, o);
	char	 *s;

	if (o->type == CT_PATH && conf_check_path(o, v, why, whysz) == -1)
		return -1;
	s = xstrdup(v);
	if (o->check != NULL && o->check->fn(s, why, whysz) == -1) {
		free(s);
		return -1;
	}
	free(*dst);
	*dst = s;
	return 0;
}

static int
conf_set_rate(struct conf *c, const struct conf_opt *o, const char *v,
    char *why, size_t whysz)
{
	if (flood_rate_parse(v, conf_field(c, o)) == -1)
		return conf_expect(why, whysz, v, "a rate N/period such as "
		    "30/s, 20/m or 1/s burst 3 (N and burst 1 to %d, period "
		    "1ms to 24h)", FLOOD_N_MAX);
	return 0;
}

/* Parse v (unquoted) into the field of o; the same code reads defaults. */
static int
conf_set(struct conf *c, const struct conf_opt *o, const char *v, char *why,
    size_t whysz)
{
	if (*v == '\0' && (o->flags & CF_OPTIONAL)) {
		free(*(char **)conf_field(c, o));
		*(char **)conf_field(c, o) = NULL;
		return 0;
	}
	switch (o->type) {
	case CT_STRING:
	case CT_PATH:
		if (*v == '\0')
			return conf_expect(why, whysz, v, "a value");
		return conf_set_string(c, o, v, why, whysz);
	case CT_INT:
		return conf_set_int(c, o, v, why, whysz);
	case CT_BOOL:
		return conf_set_bool(c, o, v, why, whysz);
	case CT_DURATION:
		return conf_set_duration(c, o, v, why, whysz);
	case CT_SIZE:
		return conf_set_size(c, o, v, why, whysz);
	case CT_ENUM:
		return conf_set_enum(c, o, v, why, whysz);
	case CT_KEYLIST:
		return conf_set_keylist(c, o, v, why, whysz);
	case CT_JSONLIST:
		return conf_set_jsonlist(c, o, v, why, whysz);
	case CT_RATE:
		return conf_set_rate(c, o, v, why, whysz);
	}
	fatalx(EXIT_SOFTWARE, "%s: bad type of %s", __func__, o->name);
}

static int
conf_check_url(char *v, char *why, size_t whysz)
{
	size_t i, n;

	n = strncmp(v, "https://", 8) == 0 ? 8 :
	    strncmp(v, "http://", 7) == 0 ? 7 : 0;
	if (n == 0 || v[n] == '\0' || v[n] == '/')
		return conf_expect(why, whysz, v, "a URL starting with "
		    "http:// or https://");
	for (i = n; v[i] != '\0'; i++)
		if (isspace((unsigned char)v[i]) ||
		    iscntrl((unsigned char)v[i]))
			return conf_expect(why, whysz, v,
			    "a URL without blanks");
	/* The poller appends "/bot<token>/<method>". */
	while (i > n && v[i - 1] == '/')
		v[--i] = '\0';
	return 0;
}

static int
conf_port_ok(const char *s)
{
	int64_t port;

	return parse_uint(&s, INT64_MAX, &port) == 0 && *s == '\0' &&
	    port >= 1 && port <= 65535;
}

/* "127.0.0.1:9100", "[::1]:9100", "localhost:9100". */
static int
conf_check_hostport(char *v, char *why, size_t whysz)
{
	const char	*colon, *host = v;
	size_t		 hlen, i;

	if (*v == '[') {
		colon = strchr(v, ']');
		if (colon == NULL || colon[1] != ':' || colon == v + 1)
			goto bad;
		host = v + 1;
		hlen = colon - host;
		colon++;
	} else {
		if ((colon = strrchr(v, ':')) == NULL || colon == v)
			goto bad;
		hlen = colon - v;
	}
	for (i = 0; i < hlen; i++)
		if (!isalnum((unsigned char)host[i]) && strchr(".-:",
		    host[i]) == NULL)
			goto bad;
	if (*v != '[' && memchr(host, ':', hlen) != NULL)
		goto bad;
	if (conf_port_ok(colon + 1))
		return 0;
 bad:
	return conf_expect(why, whysz, v, "host:port, e.g. 127.0.0.1:9100 or "
	    "[::1]:9100");
}

/* "127.0.0.1:0", "[::1]:8443" (port 0: the kernel's choice), "unix:/path". */
static int
conf_check_api_listen(char *v, char *why, size_t whysz)
{
	char	 copy[512];
	size_t	 n;

	if (strncmp(v, "unix:", 5) == 0) {
		n = strlen(v + 5);
		if (v[5] != '/' || n >= sizeof(((struct sockaddr_un *)NULL)->
		    sun_path) || strpbrk(v, " \t\r\n") != NULL)
			return conf_expect(why, whysz, v, "unix: and an absolute "
			    "socket path shorter than %zu bytes", sizeof(((struct
			    sockaddr_un *)NULL)->sun_path));
		return 0;
	}
	n = strlen(v);
	/* port 0 is fine here: reuse the host:port check with port 1 */
	if (n >= 2 && n < sizeof(copy) && strcmp(v + n - 2, ":0") == 0) {
		snprintf(copy, sizeof(copy), "%.*s:1", (int)(n - 2), v);
		if (conf_check_hostport(copy, why, whysz) == 0)
			return 0;
	} else if (conf_check_hostport(v, why, whysz) == 0)
		return 0;
	return conf_expect(why, whysz, v, "host:port (e.g. 127.0.0.1:0) or "
	    "unix:/path");
}

static int
conf_name_ok(const char *s)
{
	size_t i;

	if (*s == '\0' || *s == '-' || strlen(s) > 32)
		return 0;
	for (i = 0; s[i] != '\0'; i++)
		if (!isalnum((unsigned char)s[i]) &&
		    strchr("_.-", s[i]) == NULL)
			return 0;
	return 1;
}

static int
conf_check_name(char *v, char *why, size_t whysz)
{
	if (!conf_name_ok(v))
		return conf_expect(why, whysz, v, "a user or group name");
	return 0;
}

static int
conf_method_ok(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_')
			return 0;
	return i > 0 && i <= CONF_METHOD_MAX;
}

/* "sendMessage, answerCallbackQuery": Bot API method names. */
static int
conf_check_methods(char *v, char *why, size_t whysz)
{
	char		 item[CONF_ITEM_MAX + 8];
	const char	*s = v;
	int		 r;

	while ((r = conf_list_next(&s, item, sizeof(item))) == 1)
		if (!conf_method_ok(item))
			return conf_expect(why, whysz, item, "a Bot API method "
			    "name (1 to %d of A-Z, a-z, 0-9, _)",
			    CONF_METHOD_MAX);
	if (r == -1)
		return conf_expect(why, whysz, v, "a comma-separated list of "
		    "Bot API method names");
	return 0;
}

/* A token of a subject: what a relay name or key may be. */
static int
conf_token_ok(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > 64)
		return 0;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
			return 0;
	return 1;
}

static int
conf_check_token(char *v, char *why, size_t whysz)
{
	if (!conf_token_ok(v, strlen(v)))
		return conf_expect(why, whysz, v, "1 to 64 letters, digits, _ "
		    "or -");
	return 0;
}

/* "tgrunner", "bots.mybot": tokens joined by dots, no wildcards. */
static int
conf_check_subject(char *v, char *why, size_t whysz)
{
	const char *s = v, *dot;

	if (strlen(v) > 128)
		return conf_expect(why, whysz, v, "at most 128 bytes");
	for (;;) {
		dot = strchr(s, '.');
		if (!conf_token_ok(s, dot ? (size_t)(dot - s) : strlen(s)))
			return conf_expect(why, whysz, v, "tokens of letters, "
			    "digits, _ or - joined by dots");
		if (dot == NULL)
			return 0;
		s = dot + 1;
	}
}

/* "nats://h:4222, tls://user@h2:4222": scheme and host, no blanks inside. */
static int
conf_check_nats_url(char *v, char *why, size_t whysz)
{
	char item[CONF_LINE_MAX];
	const char *s = v;
	size_t n, i;
	int count = 0;

	while (*s != '\0') {
		while (*s == ' ' || *s == ',')
			s++;
		if (*s == '\0')
			break;
		n = strcspn(s, ", ");
		memcpy(item, s, n);
		item[n] = '\0';
		s += n;
		for (i = 0; i < n; i++)
			if (iscntrl((unsigned char)item[i]))
				goto bad;
		i = strncmp(item, "nats://", 7) == 0 ? 7 :
		    strncmp(item, "tls://", 6) == 0 ? 6 : 0;
		if (i == 0 || item[i] == '\0' || item[i] == '/' ||
		    ++count > 16)
			goto bad;
	}
	if (count > 0)
		return 0;
 bad:
	return conf_expect(why, whysz, v, "up to 16 URLs nats://host:port or "
	    "tls://host:port, comma-separated");
}

/* Syntax only: names are resolved when the socket is opened. */
static int
conf_check_allow(char *v, char *why, size_t whysz)
{
	char		 item[CONF_ITEM_MAX];
	const char	*s = v, *num;
	int64_t		 id;
	int		 r;

	while ((r = conf_list_next(&s, item, sizeof(item))) == 1) {
		if (strncmp(item, "uid:", 4) == 0 ||
		    strncmp(item, "gid:", 4) == 0) {
			num = item + 4;
			if (parse_uint(&num, INT64_MAX, &id) == 0 && *num == '\0' &&
			    id <= UINT32_MAX)
				continue;
		} else if (conf_name_ok(item))
			continue;
		return conf_expect(why, whysz, item, "uid:N, gid:N or a user "
		    "name");
	}
	if (r == -1)
		return conf_expect(why, whysz, v, "a comma-separated list of "
		    "uid:N, gid:N or user names");
	return 0;
}

void
conf_defaults(struct conf *c)
{
	char	 why[256];
	size_t	 i;

	memset(c, 0, sizeof(*c));
	for (i = 0; i < CONF_NOPTS; i++)
		if (conf_set(c, &conf_opts[i], conf_opts[i].def, why,
		    sizeof(why)) == -1)
			fatalx(EXIT_SOFTWARE, "%s: default of %s: %s",
			    __func__, conf_opts[i].name, why);
}

void
conf_clear(struct conf *c)
{
	size_t i;

	for (i = 0; i < CONF_NOPTS; i++) {
		switch (conf_opts[i].type) {
		case CT_STRING:
		case CT_PATH:
		case CT_JSONLIST:
			free(*(char **)conf_field(c, &conf_opts[i]));
			break;
		default:
			break;
		}
	}
	free(c->path);
	free(c->warnings);
	memset(c, 0, sizeof(*c));
}

static void
conf_fail(struct conf_parse *p, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Record the first error only: later ones are usually its echoes. */
static void
conf_fail(struct conf_parse *p, int line, const char *fmt, ...)
{
	va_list ap;

	if (p->failed)
		return;
	p->failed = 1;
	p->err->line = line;
	va_start(ap, fmt);
	vsnprintf(p->err->msg, sizeof(p->err->msg), fmt, ap);
	va_end(ap);
}

/* Remember a warning for the caller ("file:line: text"). */
static void
conf_warn(struct conf_parse *p, const char *name, const char *why)
{
	char	*w;

	xasprintf(&w, "%s%s:%d: %s: %s\n", p->c->warnings ? p->c->warnings :
	    "", p->err->file, p->lineno, name, why);
	free(p->c->warnings);
	p->c->warnings = w;
}

static const struct conf_obsolete *
conf_find_obsolete(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(conf_obsolete) / sizeof(conf_obsolete[0]); i++)
		if (strcmp(conf_obsolete[i].name, name) == 0)
			return &conf_obsolete[i];
	return NULL;
}

/* Catch what inih would accept but tgrunner.conf(5) does not allow. */
static int
conf_line_check(struct conf_parse *p, const char *line)
{
	const char *s = line;

	if (p->lineno == 1 && strncmp(s, "\xef\xbb\xbf", 3) == 0)
		s += 3;		/* UTF-8 BOM, skipped by inih too */
	while (isspace((unsigned char)*s))
		s++;
	if (*s == '\0' || *s == '#')
		return 0;
	if (*s == '[') {
		conf_fail(p, p->lineno, "sections are not supported "
		    "(expected 'option = value')");
		return -1;
	}
	s += strcspn(s, "=:");
	if (*s != '=') {
		conf_fail(p, p->lineno, "expected 'option = value'");
		return -1;
	}
	return 0;
}

/*
 * One line into p->buf: at most max bytes are kept (a longer line is an
 * error anyway), so that neither a line that never ends (/dev/zero) nor a
 * huge file makes memory grow.  Returns its length (with the newline), 0
 * at the end of the file, -1 after a read error or past CONF_FILE_MAX.
 */
static ssize_t
conf_getline(struct conf_parse *p, size_t max)
{
	size_t	n = 0;
	int	ch;

	while (n < max && (ch = getc_unlocked(p->fp)) != EOF) {
		if (++p->total > CONF_FILE_MAX) {
			conf_fail(p, p->lineno + 1, "the file is larger than "
			    "%d bytes: not a configuration file", CONF_FILE_MAX);
			return -1;
		}
		p->buf[n++] = (char)ch;
		if (ch == '\n')
			break;
	}
	if (n == 0 && ferror(p->fp)) {
		conf_fail(p, p->lineno + 1, "read error: %s", strerror(errno));
		return -1;
	}
	p->buf[n] = '\0';
	return (ssize_t)n;
}

/* inih's fgets-like reader: exactly one line per call, so lines count. */
static char *
conf_reader(char *str, int num, void *arg)
{
	struct conf_parse	*p = arg;
	ssize_t			 n;

	if (p->failed)
		return NULL;
	errno = 0;
	if (p->buf == NULL) {
		p->bufsz = CONF_LINE_MAX + 3;
		p->buf = xmalloc(p->bufsz);
	}
	/* one byte more than a line may have, its newline included */
	if ((n = conf_getline(p, CONF_LINE_MAX + 2)) <= 0)
		return NULL;
	p->lineno++;
	if (memchr(p->buf, '\0', n) != NULL) {
		conf_fail(p, p->lineno, "NUL byte in line");
		return NULL;
	}
	if (n >= num || (n == CONF_LINE_MAX + 2 && p->buf[n - 1] != '\n')) {
		conf_fail(p, p->lineno, "line longer than %d bytes",
		    CONF_LINE_MAX);
		return NULL;
	}
	if (conf_line_check(p, p->buf) == -1)
		return NULL;
	memcpy(str, p->buf, n + 1);
	return str;
}

/* Edit distance of two short names, for "did you mean". */
static size_t
conf_distance(const char *a, const char *b)
{
	size_t	 row[CONF_NAME_MAX + 1], i, j, la, lb, diag, up, best;

	la = strlen(a);
	lb = strlen(b);
	if (la > CONF_NAME_MAX || lb > CONF_NAME_MAX)
		return SIZE_MAX;
	for (j = 0; j <= lb; j++)
		row[j] = j;
	for (i = 1; i <= la; i++) {
		diag = row[0];
		row[0] = i;
		for (j = 1; j <= lb; j++) {
			up = row[j];
			best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

static const char *
conf_suggest(const char *name)
{
	const char	*found = NULL;
	size_t		 i, d, best = CONF_SUGGEST + 1;

	for (i = 0; i < CONF_NOPTS; i++) {
		d = conf_distance(name, conf_opts[i].name);
		if (d < best) {
			best = d;
			found = conf_opts[i].name;
		}
	}
	return found;
}

static void
conf_unknown(struct conf_parse *p, const char *name)
{
	const char	*hint;
	char		 shown[CONF_SHOW_MAX + 8];

	conf_show(name, shown, sizeof(shown));
	if ((hint = conf_suggest(name)) != NULL)
		conf_fail(p, p->lineno, "unknown option '%s' (did you mean "
		    "'%s'?)", shown, hint);
	else
		conf_fail(p, p->lineno, "unknown option '%s'", shown);
}

/*
 * Strip the quotes of a value that is one quoted string, "..." or '...'.
 * Anything else is kept verbatim, so that shell commands such as
 * '/opt/my bot/run' --fast or "a" "b" reach /bin/sh unchanged.
 */
static void
conf_unquote(const char *v, char *out, size_t outsz)
{
	size_t n = strlen(v);

	if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0] &&
	    memchr(v + 1, v[0], n - 2) == NULL) {
		v++;
		n -= 2;
	}
	if (n >= outsz)
		n = outsz - 1;	/* cannot happen: a line is shorter */
	memcpy(out, v, n);
	out[n] = '\0';
}

static int
conf_handler(void *arg, const char *section, const char *name,
    const char *value)
{
	struct conf_parse	*p = arg;
	const struct conf_opt	*o;
	char			 v[CONF_LINE_MAX + 1], why[384];
	int			 idx;

	const struct conf_obsolete *obs;

	(void)section;		/* always "": the reader rejects [sections] */
	if ((o = conf_find(name)) == NULL) {
		if ((obs = conf_find_obsolete(name)) != NULL) {
			conf_warn(p, obs->name, obs->why);
			return 1;
		}
		conf_unknown(p, name);
		return 0;
	}
	idx = (int)(o - conf_opts);
	if (p->lines[idx] != 0) {
		conf_fail(p, p->lineno, "%s: duplicate option (first set on "
		    "line %d)", o->name, p->lines[idx]);
		return 0;
	}
	p->lines[idx] = p->lineno;
	p->c->infile[idx / 64] |= (uint64_t)1 << (idx % 64);
	conf_unquote(value, v, sizeof(v));
	if (conf_set(p->c, o, v, why, sizeof(why)) == -1) {
		conf_fail(p, p->lineno, "%s: %s", o->name, why);
		return 0;
	}
	return 1;
}

static int
conf_later(const int *lines, const char *a, const char *b)
{
	int la = lines[conf_index(a)], lb = lines[conf_index(b)];

	return la > lb ? la : lb;
}

/* localhost, 127.0.0.0/8 or ::1, from a checked host:port */
static int
conf_loopback(const char *hostport)
{
	char host[128];
	const char *end;
	struct in_addr a4;
	struct in6_addr a6;

	if (*hostport == '[') {
		end = strchr(hostport, ']');
		hostport++;
	} else
		end = strrchr(hostport, ':');
	if (end == NULL || (size_t)(end - hostport) >= sizeof(host))
		return 0;
	memcpy(host, hostport, (size_t)(end - hostport));
	host[end - hostport] = '\0';
	if (strcmp(host, "localhost") == 0)
		return 1;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* The reserved methods are the daemon's: no list can give them away. */
static void
conf_check_allow_list(struct conf_parse *p)
{
	char		 item[CONF_ITEM_MAX + 8];
	const char	*s = p->c->worker_methods_allow, *name;

	while (s != NULL && conf_list_next(&s, item, sizeof(item)) == 1)
		if ((name = policy_reserved(item)) != NULL) {
			conf_fail(p, p->lines[conf_index(
			    "worker_methods_allow")], "worker_methods_allow: "
			    "%s is reserved for the daemon and cannot be "
			    "allowed", name);
			return;
		}
}

/* Checks that involve several options, once the whole file is read. */
static void
conf_cross_check(struct conf_parse *p)
{
	struct conf	*c = p->c;
	char		 lo[32], hi[32];

	if (c->backoff_min > c->backoff_max) {
		conf_fmt_duration(c->backoff_min, lo, sizeof(lo));
		conf_fmt_duration(c->backoff_max, hi, sizeof(hi));
		conf_fail(p, conf_later(p->lines, "backoff_min", "backoff_max"),
		    "backoff_min (%s) must not exceed backoff_max (%s)", lo,
		    hi);
	}
	if (c->workers > 0 && c->worker_command == NULL)
		conf_fail(p, conf_later(p->lines, "workers", "worker_command"),
		    "worker_command is required when workers > 0 "
		    "(workers = %" PRId64 ")", c->workers);
	if (c->workers == 0 && c->listen == NULL && c->nats_url == NULL)
		conf_fail(p, conf_later(p->lines, "workers", "listen"),
		    "workers: 0 needs listen or nats_url, or no worker could "
		    "ever run an update");
	if ((c->nats_tls_cert == NULL) != (c->nats_tls_key == NULL))
		conf_fail(p, conf_later(p->lines, "nats_tls_cert",
		    "nats_tls_key"), "nats_tls_cert and nats_tls_key go "
		    "together");
	if ((c->nats_nkey == NULL) != (c->nats_nkey_seed == NULL))
		conf_fail(p, conf_later(p->lines, "nats_nkey",
		    "nats_nkey_seed"), "nats_nkey and nats_nkey_seed go "
		    "together");
	if (c->nats_creds != NULL && c->nats_nkey != NULL)
		conf_fail(p, conf_later(p->lines, "nats_creds", "nats_nkey"),
		    "nats_creds and nats_nkey exclude each other");
	if (c->nats_password_file != NULL && c->nats_user == NULL)
		conf_fail(p, p->lines[conf_index("nats_password_file")],
		    "nats_password_file needs nats_user");
	conf_check_allow_list(p);
	/* the counters say a lot about the bot: not for the network by default */
	if (c->metrics_listen != NULL && !c->metrics_public &&
	    !conf_loopback(c->metrics_listen))
		conf_fail(p, p->lines[conf_index("metrics_listen")],
		    "metrics_listen: %s is not a loopback address (set "
		    "metrics_public = yes to allow it)", c->metrics_listen);
	/* it serves the bot's own API, with the token behind it */
	if (c->worker_api_listen != NULL &&
	    strncmp(c->worker_api_listen, "unix:", 5) != 0 &&
	    !conf_loopback(c->worker_api_listen))
		conf_fail(p, p->lines[conf_index("worker_api_listen")],
		    "worker_api_listen: %s is not a loopback address (use "
		    "127.0.0.1, ::1 or unix:/path)", c->worker_api_listen);
}

/*
 * libinih's knobs are process globals (a Debian addition); set them on
 * every load, since nothing else in tgrunnerd uses inih.
 */
static void
conf_inih_setup(void)
{
	static char hash[] = "#";

	ini_start_comment_prefixes = hash;
	ini_inline_comment_prefixes = hash;
	ini_allow_inline_comments = 1;
	ini_allow_multiline = 0;
	ini_allow_no_value = 0;
	ini_allow_bom = 1;
	ini_stop_on_first_error = 1;
	/* A heap buffer of exactly this size: "\r\n\0" after the line. */
	ini_use_stack = 0;
	ini_allow_realloc = 0;
	ini_initial_alloc = CONF_LINE_MAX + 3;
	ini_max_line = CONF_LINE_MAX + 3;
}

static void
conf_parse_file(struct conf_parse *p)
{
	int r;

	conf_inih_setup();
	r = ini_parse_stream(conf_reader, p, conf_handler, p);
	free(p->buf);
	p->buf = NULL;
	if (r == -2)
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	else if (r != 0)
		conf_fail(p, r, "expected 'option = value'");
	if (!p->failed)
		conf_cross_check(p);
}

int
conf_load(const char *path, struct conf *c, struct conf_error *err)
{
	struct conf_parse	 p;
	int			 lines[CONF_NOPTS] = { 0 };

	memset(err, 0, sizeof(*err));
	snprintf(err->file, sizeof(err->file), "%s", path);
	memset(&p, 0, sizeof(p));
	p.c = c;
	p.err = err;
	p.lines = lines;
	conf_defaults(c);
	c->path = xstrdup(path);
	if ((p.fp = fopen(path, "re")) == NULL)
		conf_fail(&p, 0, "cannot open: %s", strerror(errno));
	else {
		conf_parse_file(&p);
		fclose(p.fp);
	}
	if (p.failed) {
		/* Zeroed: a caller that drops c on error leaks nothing. */
		conf_clear(c);
		return -1;
	}
	return 0;
}

/* ["message","poll"] back to "message, poll". */
static void
conf_format_jsonlist(const char *json, char *buf, size_t bufsz)
{
	json_t	*arr, *e;
	size_t	 i;

	if (json == NULL || (arr = json_loads(json, 0, NULL)) == NULL)
		return;
	json_array_foreach(arr, i, e) {
		if (i > 0)
			conf_append(buf, bufsz, ", ");
		if (json_is_string(e))
			conf_append(buf, bufsz, json_string_value(e));
	}
	json_decref(arr);
}

/*
 * v as a file would spell it.  inih strips blanks around a value and
 * conf_unquote() the quotes around one quoted string, so a value with a
 * blank at either end, or that is itself one quoted string ('...' or
 * "..."), can only have come from quotes: it is quoted again, with a
 * character it does not contain (it lacks one: conf_unquote() made it).
 * So is a value that starts with '#': after "name = " it would be a
 * comment.
 */
static void
conf_quote(const char *v, char *buf, size_t bufsz)
{
	size_t	n = strlen(v);
	int	q;

	if (n > 0 && !isspace((unsigned char)v[0]) && v[0] != '#' &&
	    !isspace((unsigned char)v[n - 1]) &&
	    !(n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0] &&
	    memchr(v + 1, v[0], n - 2) == NULL)) {
		snprintf(buf, bufsz, "%s", v);
		return;
	}
	q = strchr(v, '"') == NULL ? '"' : '\'';
	snprintf(buf, bufsz, "%c%s%c", q, v, q);
}

/* The value of o in c, spelled as the file would spell it. */
static void
conf_format(const struct conf *c, const struct conf_opt *o, char *buf,
    size_t bufsz)
{
	const void	*f = conf_cfield(c, o);
	int		 i;

	buf[0] = '\0';
	switch (o->type) {
	case CT_STRING:
	case CT_PATH:
		if (*(char *const *)f != NULL)
			conf_quote(*(char *const *)f, buf, bufsz);
		break;
	case CT_INT:
		snprintf(buf, bufsz, "%" PRId64, *(const int64_t *)f);
		break;
	case CT_BOOL:
		snprintf(buf, bufsz, "%s", *(const int *)f ? "yes" : "no");
		break;
	case CT_DURATION:
		conf_fmt_duration(*(const int64_t *)f, buf, bufsz);
		break;
	case CT_SIZE:
		conf_fmt_size(*(const int64_t *)f, buf, bufsz);
		break;
	case CT_ENUM:
		for (i = 0; o->enums[i].name != NULL; i++)
			if (o->enums[i].value == *(const int *)f)
				snprintf(buf, bufsz, "%s", o->enums[i].name);
		break;
	case CT_KEYLIST:
		if (c->session_key_n == 0)
			snprintf(buf, bufsz, "none");
		for (i = 0; i < c->session_key_n; i++) {
			if (i > 0)
				conf_append(buf, bufsz, ", ");
			conf_append(buf, bufsz,
			    keys_kind_name(c->session_key[i]));
		}
		break;
	case CT_JSONLIST:
		conf_format_jsonlist(*(char *const *)f, buf, bufsz);
		break;
	case CT_RATE:
		flood_rate_format(f, buf, bufsz);
		break;
	}
}

/*
 * Written so that the output reads back with conf_load: the daemon's view
 * of its configuration, after defaults, for `tgrunnerd -n -v`.
 */
void
conf_print(const struct conf *c, FILE *fp)
{
	char	 val[CONF_LINE_MAX + 1];
	size_t	 i;

	fprintf(fp, "# effective configuration (%s)\n",
	    c->path != NULL ? c->path : "defaults");
	for (i = 0; i < CONF_NOPTS; i++) {
		conf_format(c, &conf_opts[i], val, sizeof(val));
		fprintf(fp, "%s =%s%s\n", conf_opts[i].name,
		    val[0] != '\0' ? " " : "", val);
	}
}

/* Swap the value of o between a and b (the keylist has two fields). */
static void
conf_swap(struct conf *a, struct conf *b, const struct conf_opt *o)
{
	unsigned char	 t[64];
	size_t		 n;
	int		 k;

	switch (o->type) {
	case CT_STRING:
	case CT_PATH:
	case CT_JSONLIST:
		n = sizeof(char *);
		break;
	case CT_INT:
	case CT_DURATION:
	case CT_SIZE:
		n = sizeof(int64_t);
		break;
	case CT_BOOL:
	case CT_ENUM:
		n = sizeof(int);
		break;
	case CT_RATE:
		n = sizeof(struct flood_rate);
		break;
	case CT_KEYLIST:
		n = sizeof(a->session_key);
		k = a->session_key_n;
		a->session_key_n = b->session_key_n;
		b->session_key_n = k;
		break;
	default:
		fatalx(EXIT_SOFTWARE, "%s: bad type of %s", __func__,
		    o->name);
	}
	_Static_assert(sizeof(t) >= sizeof(struct flood_rate) &&
	    sizeof(t) >= sizeof(((struct conf *)NULL)->session_key),
	    "room to swap any field");
	memcpy(t, conf_field(a, o), n);
	memcpy(conf_field(a, o), conf_field(b, o), n);
	memcpy(conf_field(b, o), t, n);
}

static void
conf_list_add(char *list, size_t size, const char *name)
{
	if (list[0] != '\0')
		conf_append(list, size, ",");
	conf_append(list, size, name);
}

void
conf_reload(struct conf *cur, struct conf *next, char *applied,
    size_t appliedsz, char *restart, size_t restartsz)
{
	char	 a[CONF_LINE_MAX + 1], b[CONF_LINE_MAX + 1];
	size_t	 i;

	applied[0] = restart[0] = '\0';
	for (i = 0; i < CONF_NOPTS; i++) {
		conf_format(cur, &conf_opts[i], a, sizeof(a));
		conf_format(next, &conf_opts[i], b, sizeof(b));
		if (strcmp(a, b) == 0)
			continue;
		if (conf_opts[i].flags & CF_RELOAD) {
			conf_swap(cur, next, &conf_opts[i]);
			conf_list_add(applied, appliedsz, conf_opts[i].name);
		} else
			conf_list_add(restart, restartsz, conf_opts[i].name);
	}
}

int
conf_unused(const struct conf *c, int prog, char *buf, size_t bufsz)
{
	int	 other = prog == CONF_RELAY ? CF_DAEMON : CF_RELAY, n = 0;
	int	 full = 0;
	size_t	 i, len;

	buf[0] = '\0';
	for (i = 0; i < CONF_NOPTS; i++) {
		if (!(conf_opts[i].flags & other) ||
		    !(c->infile[i / 64] & (uint64_t)1 << (i % 64)))
			continue;
		n++;
		if (full)
			continue;
		/* room for ", name", then ", ..." and the NUL */
		len = strlen(buf);
		if (len + strlen(conf_opts[i].name) + 8 <= bufsz) {
			snprintf(buf + len, bufsz - len, "%s%s", n > 1 ? ", " :
			    "", conf_opts[i].name);
			continue;
		}
		full = 1;
		if (len + 6 <= bufsz)
			snprintf(buf + len, bufsz - len, "%s...", n > 1 ? ", " :
			    "");
	}
	return n;
}

/* "integer, 0 to 1024", "duration, 10ms to 10s", ... */
static void
conf_fmt_type(const struct conf_opt *o, char *buf, size_t bufsz)
{
	char	 extra[128];

	switch (o->type) {
	case CT_STRING:
		snprintf(buf, bufsz, "%s",
		    o->check != NULL ? o->check->what : "string");
		break;
	case CT_PATH:
		snprintf(buf, bufsz, "absolute path");
		break;
	case CT_BOOL:
		snprintf(buf, bufsz, "boolean");
		break;
	case CT_INT:
	case CT_DURATION:
	case CT_SIZE:
		conf_fmt_bounds(o, extra, sizeof(extra));
		snprintf(buf, bufsz, "%s between %s%s",
		    o->type == CT_INT ? "integer" : o->type == CT_SIZE ?
		    "size" : "duration", extra,
		    (o->flags & CF_SECONDS) ? ", whole seconds" : "");
		break;
	case CT_ENUM:
		conf_enum_names(o, " | ", extra, sizeof(extra));
		snprintf(buf, bufsz, "one of %s", extra);
		break;
	case CT_KEYLIST:
		snprintf(buf, bufsz, "none, or a list of up to %d of chat, "
		    "user, chat_user, chat_topic", (int)o->max);
		break;
	case CT_JSONLIST:
		snprintf(buf, bufsz, "list of update types");
		break;
	case CT_RATE:
		snprintf(buf, bufsz, "rate N/period [burst B]");
		break;
	}
}

/*
 * The table as a commented configuration file: one block per option,
 * "# name: type" / "#   help" / "#name = default".
 */
void
conf_dump_table(FILE *fp)
{
	const struct conf_opt	*o;
	char			 type[192];
	size_t			 i;

	for (i = 0; i < CONF_NOPTS; i++) {
		o = &conf_opts[i];
		conf_fmt_type(o, type, sizeof(type));
		fprintf(fp, "%s# %s: %s%s%s\n#   %s\n#%s =%s%s\n",
		    i > 0 ? "\n" : "", o->name, type,
		    (o->flags & CF_OPTIONAL) ? ", may be empty" : "",
		    (o->flags & CF_RELOAD) ? ", reloadable" : ", needs a restart",
		    o->help, o->name, o->def[0] != '\0' ? " " : "", o->def);
	}
}

static int64_t
conf_bound(int64_t opt, int64_t queued)
{
	int64_t quarter = queued / 4 > 0 ? queued / 4 : 1;

	return opt < quarter ? opt : quarter;
}

int64_t
conf_calls_per_key(const struct conf *c)
{
	return conf_bound(c->max_calls_per_key, c->api_max_queued);
}

int64_t
conf_calls_per_worker(const struct conf *c)
{
	return conf_bound(c->max_calls_per_worker, c->api_max_queued);
}
