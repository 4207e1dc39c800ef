/* SPDX-License-Identifier: ISC */
/*
 * Unit tests of daemon/conf.c: every value type, every error class with its
 * file:line, and the agreement of the option table with tgrunner.conf(5)
 * and examples/tgrunner.conf, as installed (inst/ under $TG_BUILDDIR).
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"

/* Minimal valid file: workers > 0 needs a command. */
#define CMD	"worker_command = /bin/cat\n"

static char		 tmpdir[] = "/tmp/check_conf.XXXXXX";
static char		 path[512];
static struct conf	 c;
static struct conf_error err;

/*
 * The temporary directory is made and removed by main(), so that it goes
 * even when a test fails (a failing test's process skips its teardown).
 */
static void
setup(void)
{
	memset(&c, 0, sizeof(c));
}

static void
teardown(void)
{
	conf_clear(&c);
}

static void
write_bytes(const char *text, size_t len)
{
	FILE *fp;

	ck_assert_ptr_nonnull(fp = fopen(path, "w"));
	ck_assert_uint_eq(fwrite(text, 1, len, fp), len);
	ck_assert_int_eq(fclose(fp), 0);
}

/* conf_load overwrites c: free what the previous load left. */
static void
load_ok(const char *text)
{
	conf_clear(&c);
	write_bytes(text, strlen(text));
	if (conf_load(path, &c, &err) != 0)
		ck_abort_msg("unexpected error %s:%d: %s", err.file, err.line,
		    err.msg);
}

/* Expect an error on line; msg must contain want. */
static void
load_err(const char *text, int line, const char *want)
{
	conf_clear(&c);
	write_bytes(text, strlen(text));
	ck_assert_int_eq(conf_load(path, &c, &err), -1);
	ck_assert_str_eq(err.file, path);
	ck_assert_msg(strstr(err.msg, want) != NULL, "'%s' not in '%s'", want,
	    err.msg);
	ck_assert_msg(err.line == line, "line %d, want %d (%s)", err.line,
	    line, err.msg);
}

static void
load_err_exact(const char *text, int line, const char *want)
{
	load_err(text, line, want);
	ck_assert_str_eq(err.msg, want);
}

START_TEST(test_defaults)
{
	conf_defaults(&c);
	ck_assert_str_eq(c.api_url, "https://api.telegram.org");
	ck_assert_ptr_null(c.token_file);
	ck_assert_int_eq(c.poll_timeout, 30000);
	ck_assert_ptr_null(c.allowed_updates);
	ck_assert_int_eq(c.delete_webhook, 0);
	ck_assert_int_eq(c.drop_pending_updates, 0);
	ck_assert_int_eq(c.backoff_min, 100);
	ck_assert_int_eq(c.backoff_max, 30000);
	ck_assert_str_eq(c.state_dir, LOCALSTATEDIR "/lib/tgrunner");
	ck_assert_int_eq(c.journal_fsync, FSYNC_BATCH);
	ck_assert_int_eq(c.session_key_n, 1);
	ck_assert_int_eq(c.session_key[0], KEY_CHAT);
	ck_assert_int_eq(c.max_pending, 10000);
	ck_assert_int_eq(c.workers, 2);
	ck_assert_ptr_null(c.worker_command);
	ck_assert_ptr_null(c.worker_user);
	ck_assert_ptr_null(c.worker_group);
	ck_assert_ptr_null(c.worker_methods_allow);
	ck_assert_ptr_null(c.worker_methods_deny);
	ck_assert_int_eq(c.max_calls_per_key, 1000);
	ck_assert_int_eq(c.max_calls_per_worker, 5000);
	ck_assert_ptr_null(c.warnings);
	ck_assert_int_eq(c.update_timeout, 60000);
	ck_assert_int_eq(c.kill_grace, 5000);
	ck_assert_int_eq(c.max_attempts, 3);
	ck_assert_int_eq(c.max_requests, 0);
	ck_assert_int_eq(c.hello_timeout, 10000);
	ck_assert_ptr_null(c.listen);
	ck_assert_ptr_null(c.listen_allow);
	/* the same path as tgrunnerctl's default */
	ck_assert_str_eq(c.control_socket, RUNSTATEDIR "/tgrunner/control.sock");
	ck_assert_ptr_null(c.metrics_listen);
	ck_assert_int_eq(c.shutdown_timeout, 30000);
	ck_assert_int_eq(c.log_level, LOG_LVL_INFO);
	ck_assert_ptr_null(c.path);
}
END_TEST

START_TEST(test_minimal_file_gets_defaults)
{
	load_ok("# only the command\n\n" CMD);
	ck_assert_str_eq(c.path, path);
	ck_assert_str_eq(c.worker_command, "/bin/cat");
	ck_assert_int_eq(c.workers, 2);
	ck_assert_str_eq(c.api_url, "https://api.telegram.org");
	ck_assert_int_eq(c.poll_timeout, 30000);
	ck_assert_int_eq(c.journal_fsync, FSYNC_BATCH);
}
END_TEST

START_TEST(test_empty_file)
{
	/* Valid syntax, but the defaults need a worker_command. */
	load_err("", 0, "worker_command is required");
	load_ok("workers = 0\nlisten = /run/tg.sock\n");
	ck_assert_int_eq(c.workers, 0);
	ck_assert_str_eq(c.listen, "/run/tg.sock");
}
END_TEST

START_TEST(test_int)
{
	load_ok(CMD "workers = 1024\nmax_pending = 1\nmax_requests = "
	    "1000000000\nmax_attempts = +7\n");
	ck_assert_int_eq(c.workers, 1024);
	ck_assert_int_eq(c.max_pending, 1);
	ck_assert_int_eq(c.max_requests, 1000000000);
	ck_assert_int_eq(c.max_attempts, 7);
	load_err_exact(CMD "\nworkers = many\n", 3,
	    "workers: expected an integer between 0 and 1024, got 'many'");
	load_err(CMD "workers = 1025\n", 2, "got '1025'");
	load_err(CMD "workers = -1\n", 2, "between 0 and 1024");
	load_err(CMD "workers = 1e3\n", 2, "got '1e3'");
	load_err(CMD "workers = 2 3\n", 2, "got '2 3'");
	load_err(CMD "workers =\n", 2, "got ''");
	load_err(CMD "max_pending = 0\n", 2, "between 1 and 1000000");
	load_err(CMD "max_attempts = 99999999999999999999999\n", 2,
	    "between 1 and 100");
}
END_TEST

START_TEST(test_bool)
{
	static const char *yes[] = { "yes", "true", "on", "1", "YES", "On" };
	static const char *no[] = { "no", "false", "off", "0", "No" };
	char	 buf[256];
	size_t	 i;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		snprintf(buf, sizeof(buf), CMD "delete_webhook = %s\n", yes[i]);
		load_ok(buf);
		ck_assert_int_eq(c.delete_webhook, 1);
		conf_clear(&c);
	}
	for (i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		snprintf(buf, sizeof(buf), CMD "delete_webhook = %s\n",
		    no[i]);
		load_ok(buf);
		ck_assert_int_eq(c.delete_webhook, 0);
		conf_clear(&c);
	}
	load_err_exact(CMD "drop_pending_updates = maybe\n", 2,
	    "drop_pending_updates: expected yes or no (also true/false, "
	    "on/off, 1/0), got 'maybe'");
	load_err(CMD "delete_webhook = 2\n", 2, "got '2'");
}
END_TEST

START_TEST(test_duration)
{
	load_ok(CMD "backoff_min = 250ms\nbackoff_max = 1m30s\n"
	    "update_timeout = 24h\nkill_grace = 0\nshutdown_timeout = 2\n"
	    "hello_timeout = 1 m\npoll_timeout = 0s\n");
	ck_assert_int_eq(c.backoff_min, 250);
	ck_assert_int_eq(c.backoff_max, 90000);
	ck_assert_int_eq(c.update_timeout, 24 * 3600 * 1000);
	ck_assert_int_eq(c.kill_grace, 0);
	ck_assert_int_eq(c.shutdown_timeout, 2000);
	ck_assert_int_eq(c.hello_timeout, 60000);
	ck_assert_int_eq(c.poll_timeout, 0);
	conf_clear(&c);
	load_ok(CMD "poll_timeout = 50\nbackoff_min = 10ms\nbackoff_max = "
	    "10m\n");
	ck_assert_int_eq(c.poll_timeout, 50000);
	ck_assert_int_eq(c.backoff_min, 10);
	ck_assert_int_eq(c.backoff_max, 600000);
	load_err_exact(CMD "poll_timeout = 51s\n", 2, "poll_timeout: expected "
	    "a duration between 0s and 50s (units ms, s, m, h), got '51s'");
	load_err_exact(CMD "poll_timeout = 1500ms\n", 2,
	    "poll_timeout: expected whole seconds, got '1500ms'");
	load_err(CMD "backoff_min = 9ms\n", 2, "between 10ms and 10s");
	load_err(CMD "update_timeout = 25h\n", 2, "between 100ms and 24h");
	load_err(CMD "kill_grace = 5x\n", 2, "got '5x'");
	load_err(CMD "kill_grace = s\n", 2, "got 's'");
	load_err(CMD "kill_grace = -5s\n", 2, "got '-5s'");
	load_err(CMD "kill_grace = 1m30\n", 2, "got '1m30'");
	load_err(CMD "kill_grace =\n", 2, "got ''");
	load_err(CMD "kill_grace = 99999999999999999999h\n", 2, "between");
	load_err(CMD "kill_grace = 9999999999999999s\n", 2, "between");
}
END_TEST

START_TEST(test_enum)
{
	load_ok(CMD "journal_fsync = always\nlog_level = debug\n");
	ck_assert_int_eq(c.journal_fsync, FSYNC_ALWAYS);
	ck_assert_int_eq(c.log_level, LOG_LVL_DEBUG);
	conf_clear(&c);
	load_ok(CMD "journal_fsync = OFF\nlog_level = err\n");
	ck_assert_int_eq(c.journal_fsync, FSYNC_OFF);
	ck_assert_int_eq(c.log_level, LOG_LVL_ERR);
	load_err_exact(CMD "journal_fsync = sometimes\n", 2, "journal_fsync: "
	    "expected one of always, batch, off, got 'sometimes'");
	load_err(CMD "log_level = verbose\n", 2,
	    "one of err, warn, notice, info, debug");
}
END_TEST

START_TEST(test_keylist)
{
	load_ok(CMD "session_key = chat, user\n");
	ck_assert_int_eq(c.session_key_n, 2);
	ck_assert_int_eq(c.session_key[0], KEY_CHAT);
	ck_assert_int_eq(c.session_key[1], KEY_USER);
	conf_clear(&c);
	load_ok(CMD "session_key = none\n");
	ck_assert_int_eq(c.session_key_n, 0);
	conf_clear(&c);
	load_ok(CMD "session_key = chat_topic,chat_user user chat\n");
	ck_assert_int_eq(c.session_key_n, 4);
	ck_assert_int_eq(c.session_key[0], KEY_CHAT_TOPIC);
	ck_assert_int_eq(c.session_key[3], KEY_CHAT);
	load_err(CMD "session_key = room\n", 2, "session_key: expected 'none' "
	    "or a list of chat, user, chat_user, chat_topic, got 'room'");
	load_err(CMD "session_key = chat, chat\n", 2, "each key once");
	load_err(CMD "session_key = chat,\n", 2, "got 'chat,'");
	load_err(CMD "session_key = chat,,user\n", 2, "comma-separated");
	load_err(CMD "session_key = none, chat\n", 2, "got 'none'");
	load_err(CMD "session_key =\n", 2, "got ''");
}
END_TEST

START_TEST(test_jsonlist)
{
	load_ok(CMD "allowed_updates = message, callback_query\n");
	ck_assert_str_eq(c.allowed_updates, "[\"message\",\"callback_query\"]");
	conf_clear(&c);
	load_ok(CMD "allowed_updates = [\"poll\", \"chat_member\"]\n");
	ck_assert_str_eq(c.allowed_updates, "[\"poll\",\"chat_member\"]");
	conf_clear(&c);
	load_ok(CMD "allowed_updates = []\n");
	ck_assert_str_eq(c.allowed_updates, "[]");
	conf_clear(&c);
	load_ok(CMD "allowed_updates =\n");
	ck_assert_ptr_null(c.allowed_updates);
	load_err(CMD "allowed_updates = message, messages\n", 2,
	    "allowed_updates: expected an update type such as message or "
	    "callback_query (see getUpdates), got 'messages'");
	load_err(CMD "allowed_updates = poll poll\n", 2,
	    "each update type once");
	load_err(CMD "allowed_updates = [1]\n", 2, "a JSON array of strings");
	load_err(CMD "allowed_updates = [\"poll\"\n", 2, "a JSON array");
}
END_TEST

START_TEST(test_strings_and_paths)
{
	load_ok(CMD "api_url = http://127.0.0.1:8081//\nstate_dir = /tmp/x\n"
	    "token_file = /run/credentials/token\nlisten = /run/tg.sock\n"
	    "control_socket = /run/tg.ctl\nmetrics_listen = 127.0.0.1:9100\n"
	    "listen_allow = uid:1000, gid:33 www-data\nworker_user = tg\n"
	    "worker_group = _tg.grp\n");
	ck_assert_str_eq(c.api_url, "http://127.0.0.1:8081");
	ck_assert_str_eq(c.state_dir, "/tmp/x");
	ck_assert_str_eq(c.token_file, "/run/credentials/token");
	ck_assert_str_eq(c.listen, "/run/tg.sock");
	ck_assert_str_eq(c.control_socket, "/run/tg.ctl");
	ck_assert_str_eq(c.metrics_listen, "127.0.0.1:9100");
	ck_assert_str_eq(c.listen_allow, "uid:1000, gid:33 www-data");
	ck_assert_str_eq(c.worker_user, "tg");
	ck_assert_str_eq(c.worker_group, "_tg.grp");
	conf_clear(&c);
	load_ok(CMD "metrics_listen = [::1]:9100\n");
	ck_assert_str_eq(c.metrics_listen, "[::1]:9100");

	load_err(CMD "api_url = ftp://x\n", 2, "api_url: expected a URL "
	    "starting with http:// or https://, got 'ftp://x'");
	load_err(CMD "api_url = https://\n", 2, "got 'https://'");
	load_err(CMD "api_url = http://a b\n", 2, "without blanks");
	load_err(CMD "api_url =\n", 2, "api_url: expected a value, got ''");
	load_err(CMD "state_dir = var/lib\n", 2,
	    "state_dir: expected an absolute path, got 'var/lib'");
	load_err(CMD "state_dir =\n", 2, "state_dir: expected a value");
	load_err(CMD "listen = /run/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaa\n",
	    2, "socket path shorter than 108 bytes");
	load_err(CMD "metrics_listen = 9100\n", 2, "expected host:port");
	load_err(CMD "metrics_listen = 127.0.0.1:0\n", 2, "host:port");
	load_err(CMD "metrics_listen = 127.0.0.1:65536\n", 2, "host:port");
	load_err(CMD "metrics_listen = ::1:80\n", 2, "host:port");
	load_err(CMD "metrics_listen = a/b:80\n", 2, "host:port");
	load_err(CMD "listen_allow = uid:x\n", 2,
	    "listen_allow: expected uid:N, gid:N or a user name, got 'uid:x'");
	load_err(CMD "worker_user = a b\n", 2, "a user or group name");
}
END_TEST

START_TEST(test_quotes)
{
	load_ok("worker_command = \"python3 -m bot\"\nstate_dir = '/srv/tg'\n"
	    "token_file = \"\"\n");
	ck_assert_str_eq(c.worker_command, "python3 -m bot");
	ck_assert_str_eq(c.state_dir, "/srv/tg");
	ck_assert_ptr_null(c.token_file);
	conf_clear(&c);
	load_ok("worker_command = python3 -c \"print(1)\"\n"
	    "log_level = \"debug\"\nworkers = '4'\n");
	ck_assert_str_eq(c.worker_command, "python3 -c \"print(1)\"");
	ck_assert_int_eq(c.log_level, LOG_LVL_DEBUG);
	ck_assert_int_eq(c.workers, 4);
	conf_clear(&c);
	/* Shell quoting is left alone when the value is not one string. */
	load_ok("worker_command = '/opt/my bot/run' --fast\n");
	ck_assert_str_eq(c.worker_command, "'/opt/my bot/run' --fast");
	load_ok("worker_command = \"a\" \"b\"\n");
	ck_assert_str_eq(c.worker_command, "\"a\" \"b\"");
	load_ok("worker_command = echo \"'\"\n");
	ck_assert_str_eq(c.worker_command, "echo \"'\"");
	load_err(CMD "state_dir = \"/srv\n", 2,
	    "state_dir: expected an absolute path, got '\"/srv'");
	load_err(CMD "state_dir = \"/srv'\n", 2, "absolute path");
	load_err(CMD "workers = \"\n", 2, "got '\"'");
}
END_TEST

START_TEST(test_comments)
{
	load_ok("# comment\n   # indented comment\nworkers = 3 # three\n"
	    "worker_command = run#this\t# but not this\n"
	    "  log_level   =   debug   \n");
	ck_assert_int_eq(c.workers, 3);
	ck_assert_str_eq(c.worker_command, "run#this");
	ck_assert_int_eq(c.log_level, LOG_LVL_DEBUG);
	conf_clear(&c);
	/* ';' is not a comment: it belongs to shell commands. */
	load_ok("worker_command = a ; b\n");
	ck_assert_str_eq(c.worker_command, "a ; b");
	load_err(CMD "; not a comment\n", 2, "expected 'option = value'");
}
END_TEST

START_TEST(test_crlf_and_bom)
{
	load_ok("\xef\xbb\xbfworkers = 5\r\n# c\r\n" "worker_command = x y\r\n"
	    "state_dir = \"/a b\"\r\n");
	ck_assert_int_eq(c.workers, 5);
	ck_assert_str_eq(c.worker_command, "x y");
	ck_assert_str_eq(c.state_dir, "/a b");
	load_err("workers = 5\r\nworkers = 6\r\n", 2, "duplicate");
}
END_TEST

START_TEST(test_long_line)
{
	char	*buf;
	size_t	 n = 4096 - strlen("worker_command = ");

	buf = malloc(8192);
	ck_assert_ptr_nonnull(buf);
	strcpy(buf, "worker_command = ");
	memset(buf + strlen(buf), 'x', n);
	strcpy(buf + 4096, "\r\nworkers = 1\n");
	load_ok(buf);
	ck_assert_uint_eq(strlen(c.worker_command), n);
	ck_assert_int_eq(c.workers, 1);
	conf_clear(&c);

	strcpy(buf, "workers = 1\nworker_command = ");
	memset(buf + strlen(buf), 'y', 5000);
	strcpy(buf + 5020, "\nlog_level = debug\n");
	load_err(buf, 2, "line longer than 4096 bytes");
	free(buf);
}
END_TEST

START_TEST(test_worker_methods)
{
	load_ok(CMD "worker_methods_allow = sendMessage, answerCallbackQuery\n"
	    "worker_methods_deny = sendPhoto\n");
	ck_assert_str_eq(c.worker_methods_allow,
	    "sendMessage, answerCallbackQuery");
	ck_assert_str_eq(c.worker_methods_deny, "sendPhoto");
	load_err(CMD "worker_methods_deny = send-Message\n", 2,
	    "a Bot API method name");
	/* the reserved methods cannot be given away, in any case */
	load_err_exact(CMD "worker_methods_allow = sendMessage GETupdates\n", 2,
	    "worker_methods_allow: getUpdates is reserved for the daemon and "
	    "cannot be allowed");
	load_err(CMD "worker_methods_allow = close\n", 2, "close is reserved");
	/* denying them is redundant, not wrong */
	load_ok(CMD "worker_methods_deny = logOut\n");
}
END_TEST

START_TEST(test_obsolete_option)
{
	load_ok(CMD "\nworker_token_env = yes\n");
	ck_assert_ptr_nonnull(c.warnings);
	ck_assert_msg(strstr(c.warnings, ":3: worker_token_env: obsolete and "
	    "ignored") != NULL, "%s", c.warnings);
}
END_TEST

/* A file that never ends (/dev/zero) or is huge: an error, bounded memory. */
START_TEST(test_file_size_limit)
{
	char	*buf;
	size_t	 i, n = (2 << 20) / 16;

	buf = malloc(n * 16 + 1);
	ck_assert_ptr_nonnull(buf);
	for (i = 0; i < n; i++)
		memcpy(buf + i * 16, "# a comment ...\n", 16);
	buf[n * 16] = '\0';
	load_err(buf, 65537, "the file is larger than 1048576 bytes");
	free(buf);
	conf_clear(&c);
	ck_assert_int_eq(conf_load("/dev/zero", &c, &err), -1);
	ck_assert_int_eq(err.line, 1);
	ck_assert_msg(strstr(err.msg, "line longer than 4096 bytes") != NULL ||
	    strstr(err.msg, "NUL byte") != NULL, "%s", err.msg);
}
END_TEST

START_TEST(test_unknown_option)
{
	load_err_exact(CMD "\n\nwrokers = 3\n", 4,
	    "unknown option 'wrokers' (did you mean 'workers'?)");
	load_err(CMD "listen_alow = uid:1\n", 2, "did you mean 'listen_allow'");
	load_err(CMD "Workers = 1\n", 2, "did you mean 'workers'");
	load_err_exact(CMD "frobnicate = 1\n", 2,
	    "unknown option 'frobnicate'");
	load_err(CMD "= 1\n", 2, "unknown option ''");
	load_err(CMD "bad\x01name = 1\n", 2, "unknown option 'bad?name'");
}
END_TEST

START_TEST(test_duplicate)
{
	load_err_exact("workers = 1\n" CMD "# x\nworkers = 2\n", 4,
	    "workers: duplicate option (first set on line 1)");
}
END_TEST

START_TEST(test_syntax_errors)
{
	load_err(CMD "[main]\nworkers = 1\n", 2, "sections are not supported");
	load_err(CMD "workers 3\n", 2, "expected 'option = value'");
	load_err(CMD "workers: 3\n", 2, "expected 'option = value'");
	load_err(CMD "workers # = 3\n", 2, "expected 'option = value'");
	load_err_exact("workers = 1\n" CMD "  indented\n", 3,
	    "expected 'option = value'");
	write_bytes(CMD "work\0ers = 1\n", sizeof(CMD "work\0ers = 1\n") - 1);
	conf_clear(&c);
	ck_assert_int_eq(conf_load(path, &c, &err), -1);
	ck_assert_int_eq(err.line, 2);
	ck_assert_str_eq(err.msg, "NUL byte in line");
}
END_TEST

START_TEST(test_missing_file)
{
	char nofile[600];

	snprintf(nofile, sizeof(nofile), "%s/nonexistent.conf", tmpdir);
	ck_assert_int_eq(conf_load(nofile, &c, &err), -1);
	ck_assert_str_eq(err.file, nofile);
	ck_assert_int_eq(err.line, 0);
	ck_assert_msg(strstr(err.msg, strerror(ENOENT)) != NULL, "%s",
	    err.msg);
	/* A directory opens but does not read. */
	conf_clear(&c);
	ck_assert_int_eq(conf_load(tmpdir, &c, &err), -1);
	ck_assert_msg(strstr(err.msg, strerror(EISDIR)) != NULL, "%s",
	    err.msg);
}
END_TEST

START_TEST(test_cross_checks)
{
	load_err_exact(CMD "backoff_max = 1s\nbackoff_min = 2s\n", 3,
	    "backoff_min (2s) must not exceed backoff_max (1s)");
	load_err(CMD "backoff_min = 2s\nbackoff_max = 1s\n\n", 3,
	    "must not exceed");
	load_err(CMD "backoff_min = 10s\nbackoff_max = 5s\n", 3,
	    "must not exceed backoff_max");
	load_err("log_level = debug\nworkers = 3\n", 2,
	    "worker_command is required when workers > 0");
	load_err("log_level = debug\n", 0, "worker_command is required");
	load_err("workers = 0\n", 1, "0 needs listen");
}
END_TEST

START_TEST(test_worker_api_listen)
{
	load_ok(CMD);
	ck_assert_str_eq(c.worker_api_listen, "127.0.0.1:0");
	ck_assert_int_eq(c.download_max_size, 20 * 1024 * 1024);
	ck_assert_int_eq(c.worker_api_timeout, 30000);
	ck_assert_ptr_null(c.local_files_dir);
	load_ok(CMD "worker_api_listen = [::1]:8443\n");
	ck_assert_str_eq(c.worker_api_listen, "[::1]:8443");
	load_ok(CMD "worker_api_listen = localhost:0\n");
	load_ok(CMD "worker_api_listen = unix:/run/tgrunner/api.sock\n");
	ck_assert_str_eq(c.worker_api_listen, "unix:/run/tgrunner/api.sock");
	load_ok(CMD "worker_api_listen =\n");
	ck_assert_ptr_null(c.worker_api_listen);
	/* the bot's API with the token behind it: never off loopback */
	load_err(CMD "worker_api_listen = 0.0.0.0:8080\n", 2,
	    "not a loopback address");
	load_err(CMD "worker_api_listen = 10.1.2.3:0\n", 2,
	    "not a loopback address");
	load_err(CMD "worker_api_listen = unix:relative.sock\n", 2,
	    "unix: and an absolute socket path");
	load_err(CMD "worker_api_listen = 127.0.0.1\n", 2, "host:port");
	load_err(CMD "worker_api_listen = 127.0.0.1:65536\n", 2, "host:port");
	load_err(CMD "download_max_size = 0\n", 2, "download_max_size");
	load_err(CMD "worker_api_timeout = 500ms\n", 2, "worker_api_timeout");
	load_err(CMD "local_files_dir = relative\n", 2, "absolute path");
}
END_TEST

/* On error c is zeroed: a caller that drops it leaks nothing. */
START_TEST(test_error_leaves_nothing)
{
	static const struct conf zero;

	load_err("workers = 7\nworker_command = x\napi_url = http://h\n"
	    "bogus = 1\n", 4, "unknown option");
	ck_assert_int_eq(memcmp(&c, &zero, sizeof(c)), 0);
	load_ok(CMD);
	ck_assert_int_eq(c.workers, 2);
}
END_TEST

static char *
print_to_string(const struct conf *cf)
{
	char	*buf = NULL;
	size_t	 len = 0;
	FILE	*fp;

	ck_assert_ptr_nonnull(fp = open_memstream(&buf, &len));
	conf_print(cf, fp);
	ck_assert_int_eq(fclose(fp), 0);
	return buf;
}

/* Load text; worker_command must be want, and again after a print. */
static void
round_trip(const char *text, const char *want)
{
	char *printed;

	load_ok(text);
	ck_assert_str_eq(c.worker_command, want);
	printed = print_to_string(&c);
	load_ok(printed);
	ck_assert_str_eq(c.worker_command, want);
	free(printed);
}

/*
 * Values that only quotes can carry print with quotes, so that
 * `tgrunnerd -n -v` reads back (the last three were found by fuzz_conf).
 */
START_TEST(test_print_round_trip_quotes)
{
	round_trip("worker_command = \"'/opt/my bot/run'\"\n",
	    "'/opt/my bot/run'");
	round_trip("worker_command = '\"a\" \"b\"'\n", "\"a\" \"b\"");
	round_trip("worker_command = \"p mand = \"\n", "p mand = ");
	/* a leading '#' is no comment after "=" without a blank */
	round_trip("worker_command =#!/bin/sh x\n", "#!/bin/sh x");
	load_ok("listen_allow = 'uid:5'\n" CMD);
	ck_assert_str_eq(c.listen_allow, "uid:5");
}
END_TEST

START_TEST(test_print_round_trip)
{
	char *first, *second, *body;

	load_ok("worker_command = python3 bot.py\nworkers = 4\n"
	    "session_key = chat_user, chat_topic\nallowed_updates = message, "
	    "poll\nbackoff_min = 1500ms\nupdate_timeout = 90s\n"
	    "journal_fsync = off\nlog_level = notice\ndelete_webhook = yes\n"
	    "listen = /run/w.sock\nmetrics_listen = localhost:9100\n");
	first = print_to_string(&c);
	ck_assert_ptr_nonnull(strstr(first, "\nsession_key = chat_user, "
	    "chat_topic\n"));
	ck_assert_ptr_nonnull(strstr(first, "\nbackoff_min = 1500ms\n"));
	ck_assert_ptr_nonnull(strstr(first, "\nupdate_timeout = 90s\n"));
	ck_assert_ptr_nonnull(strstr(first, "\nallowed_updates = message, "
	    "poll\n"));
	ck_assert_ptr_nonnull(strstr(first, "\ntoken_file =\n"));
	conf_clear(&c);
	load_ok(first);
	second = print_to_string(&c);
	/* Same body; only the "# ... (path)" header may differ. */
	body = strchr(first, '\n');
	ck_assert_str_eq(body, strchr(second, '\n'));
	free(first);
	free(second);
}
END_TEST

/* The option table, read back from conf_dump_table: "#name = default". */
struct row {
	char	name[64];
	char	def[128];
};

static int
table_rows(struct row *rows, int max)
{
	char	*buf = NULL, *line, *save = NULL, *eq;
	size_t	 len = 0;
	FILE	*fp;
	int	 n = 0;

	ck_assert_ptr_nonnull(fp = open_memstream(&buf, &len));
	conf_dump_table(fp);
	ck_assert_int_eq(fclose(fp), 0);
	for (line = strtok_r(buf, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		if (line[0] != '#' || line[1] == ' ' ||
		    (eq = strstr(line, " =")) == NULL)
			continue;
		ck_assert_int_lt(n, max);
		snprintf(rows[n].name, sizeof(rows[n].name), "%.*s",
		    (int)(eq - line - 1), line + 1);
		snprintf(rows[n].def, sizeof(rows[n].def), "%s",
		    eq[2] == ' ' ? eq + 3 : "");
		n++;
	}
	free(buf);
	return n;
}

/*
 * A file as installed: the build tree's inst/ has the man pages and the
 * configuration with the configured paths (so with this build's defaults).
 */
static char *
slurp(const char *rel)
{
	const char	*builddir = getenv("TG_BUILDDIR");
	char		 file[1024], *buf = NULL;
	size_t		 cap = 0;
	FILE		*fp;
	ssize_t		 n;

	snprintf(file, sizeof(file), "%s/inst/%s", builddir ? builddir : ".",
	    rel);
	fp = fopen(file, "r");
	ck_assert_msg(fp != NULL, "%s: %s (set TG_BUILDDIR, run make)", file,
	    strerror(errno));
	n = getdelim(&buf, &cap, '\0', fp);
	ck_assert_int_gt(n, 0);
	fclose(fp);
	return buf;
}

START_TEST(test_dump_table_defaults)
{
	struct row	 rows[64];
	char		*text = NULL, *p;
	size_t		 len = 0;
	FILE		*fp;
	int		 i, n;

	n = table_rows(rows, 64);
	ck_assert_int_eq(n, 61);
	/* The defaults as dumped read back as the defaults. */
	ck_assert_ptr_nonnull(fp = open_memstream(&text, &len));
	for (i = 0; i < n; i++)
		if (strcmp(rows[i].name, "worker_command") != 0)
			fprintf(fp, "%s = %s\n", rows[i].name, rows[i].def);
	fprintf(fp, CMD);
	ck_assert_int_eq(fclose(fp), 0);
	load_ok(text);
	free(text);
	p = print_to_string(&c);
	conf_clear(&c);
	conf_defaults(&c);
	c.worker_command = strdup("/bin/cat");
	text = print_to_string(&c);
	ck_assert_str_eq(strchr(p, '\n'), strchr(text, '\n'));
	free(p);
	free(text);
}
END_TEST

/* The entry of name in the man page: from its ".It Ic name" to the next. */
static char *
man_entry(char *man, const char *name)
{
	char	 want[128], *s, *end;
	size_t	 n;

	n = (size_t)snprintf(want, sizeof(want), "\n.It Ic %s ", name);
	if ((s = strstr(man, want)) == NULL)
		return NULL;
	s += n;
	end = strstr(s, "\n.It ");
	if (end == NULL)
		end = strstr(s, "\n.El");
	return strndup(s, end ? (size_t)(end - s) : strlen(s));
}

START_TEST(test_man_page_complete)
{
	struct row	 rows[64];
	char		*man, *entry;
	int		 i, n;

	man = slurp("man/tgrunner.conf.5");
	n = table_rows(rows, 64);
	for (i = 0; i < n; i++) {
		entry = man_entry(man, rows[i].name);
		ck_assert_msg(entry != NULL, "tgrunner.conf.5 lacks "
		    "'.It Ic %s'", rows[i].name);
		if (rows[i].def[0] != '\0')
			ck_assert_msg(strstr(entry, rows[i].def) != NULL,
			    "tgrunner.conf.5: %s: default '%s' not mentioned",
			    rows[i].name, rows[i].def);
		else
			ck_assert_msg(strstr(entry, "empty") != NULL,
			    "tgrunner.conf.5: %s: empty default not mentioned",
			    rows[i].name);
		ck_assert_msg(strstr(entry, "Default") != NULL,
		    "tgrunner.conf.5: %s: no Default", rows[i].name);
		free(entry);
	}
	free(man);
}
END_TEST

START_TEST(test_example_complete)
{
	struct row	 rows[64];
	char		 want[32768], *ex, *line;
	int		 i, n;

	ex = slurp("tgrunner.conf");
	n = table_rows(rows, 64);
	for (i = 0; i < n; i++) {
		/* Commented out at its default, or set. */
		snprintf(want, sizeof(want), "\n#%s =%s%s\n", rows[i].name,
		    rows[i].def[0] ? " " : "", rows[i].def);
		if (strstr(ex, want) != NULL)
			continue;
		snprintf(want, sizeof(want), "\n%s = ", rows[i].name);
		line = strstr(ex, want);
		ck_assert_msg(line != NULL, "tgrunner.conf lacks %s "
		    "(or has a default other than '%s')", rows[i].name,
		    rows[i].def);
	}
	/* And it loads as it is. */
	conf_clear(&c);
	write_bytes(ex, strlen(ex));
	if (conf_load(path, &c, &err) != 0)
		ck_abort_msg("inst/tgrunner.conf:%d: %s", err.line,
		    err.msg);
	free(ex);
}
END_TEST

START_TEST(test_reload)
{
	struct conf	next;
	char		applied[512], restart[512];
	const char	*text;

	load_ok(CMD);
	memset(&next, 0, sizeof(next));
	write_bytes(CMD "workers = 5\napi_url = http://127.0.0.1:1\n"
	    "flood_chat_rate = 2/s\nsession_key = user\nlog_level = debug\n"
	    "upload_dir = /srv/up\n", strlen(CMD) + 120);
	ck_assert_int_eq(conf_load(path, &next, &err), 0);
	conf_reload(&c, &next, applied, sizeof(applied), restart,
	    sizeof(restart));
	/* in the order of the table */
	ck_assert_str_eq(applied,
	    "flood_chat_rate,upload_dir,workers,log_level");
	ck_assert_str_eq(restart, "api_url,session_key");
	ck_assert_int_eq(c.workers, 5);
	ck_assert_int_eq(c.flood_chat_rate.n, 2);
	ck_assert_int_eq(c.log_level, LOG_LVL_DEBUG);
	ck_assert_str_eq(c.upload_dir, "/srv/up");
	ck_assert_str_eq(c.api_url, "https://api.telegram.org");
	ck_assert_int_eq(c.session_key_n, 1);
	ck_assert_int_eq(c.session_key[0], KEY_CHAT);
	/* next holds what was replaced; the rest is its own */
	ck_assert_int_eq(next.workers, 2);
	ck_assert_ptr_null(next.upload_dir);
	ck_assert_str_eq(next.api_url, "http://127.0.0.1:1");
	ck_assert_int_eq(next.session_key[0], KEY_USER);
	conf_clear(&next);

	/* the endpoint's bounds apply at once, its address at the next start */
	load_ok(CMD);
	text = CMD "worker_api_listen = unix:/run/api.sock\n"
	    "worker_api_max_connections = 9\nworker_api_max_per_worker = 3\n"
	    "worker_api_timeout = 5s\ndownload_max_size = 1M\n"
	    "local_files_dir = /srv/bot-api\n";
	write_bytes(text, strlen(text));
	ck_assert_int_eq(conf_load(path, &next, &err), 0);
	conf_reload(&c, &next, applied, sizeof(applied), restart,
	    sizeof(restart));
	ck_assert_str_eq(applied, "worker_api_max_connections,"
	    "worker_api_max_per_worker,worker_api_timeout,download_max_size,"
	    "local_files_dir");
	ck_assert_str_eq(restart, "worker_api_listen");
	ck_assert_int_eq(c.worker_api_max_connections, 9);
	ck_assert_int_eq(c.worker_api_max_per_worker, 3);
	ck_assert_int_eq(c.worker_api_timeout, 5000);
	ck_assert_int_eq(c.download_max_size, 1 << 20);
	ck_assert_str_eq(c.local_files_dir, "/srv/bot-api");
	ck_assert_str_eq(c.worker_api_listen, "127.0.0.1:0");
	conf_clear(&next);

	/* nothing changed: nothing to say */
	load_ok(CMD);
	ck_assert_int_eq(conf_load(path, &next, &err), 0);
	conf_reload(&c, &next, applied, sizeof(applied), restart,
	    sizeof(restart));
	ck_assert_str_eq(applied, "");
	ck_assert_str_eq(restart, "");
	conf_clear(&next);
}
END_TEST

/* The man page says of each option what a reload does, as the table does. */
START_TEST(test_man_page_reload)
{
	char	*buf = NULL, *man, *entry, *line, *save = NULL, name[64];
	size_t	 len = 0;
	FILE	*fp;
	int	 n = 0, reloadable;

	man = slurp("man/tgrunner.conf.5");
	ck_assert_ptr_nonnull(fp = open_memstream(&buf, &len));
	conf_dump_table(fp);
	ck_assert_int_eq(fclose(fp), 0);
	for (line = strtok_r(buf, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		/* "# name: type, ..., reloadable" */
		if (strncmp(line, "# ", 2) != 0 || line[2] == ' ' ||
		    strchr(line, ':') == NULL)
			continue;
		snprintf(name, sizeof(name), "%.*s",
		    (int)(strchr(line, ':') - line - 2), line + 2);
		reloadable = strstr(line, ", reloadable") != NULL;
		ck_assert_msg(reloadable || strstr(line, ", needs a restart"),
		    "%s: neither reloadable nor restart-only", name);
		entry = man_entry(man, name);
		ck_assert_msg(entry != NULL, "no man entry for %s", name);
		ck_assert_msg(strstr(entry, reloadable ? "A reload applies it." :
		    "Changing it needs a restart.") != NULL,
		    "tgrunner.conf.5: %s must say %s", name, reloadable ?
		    "A reload applies it." : "Changing it needs a restart.");
		free(entry);
		n++;
	}
	ck_assert_int_eq(n, 61);
	free(buf);
	free(man);
}
END_TEST

/* Options the other program reads are named; both programs' own are not. */
START_TEST(test_unused)
{
	char	 buf[512], small[24];

	load_ok("workers = 0\nnats_url = nats://127.0.0.1:4222\n"
	    "relay_name = r1\nlog_level = info\n");
	ck_assert_int_eq(conf_unused(&c, CONF_RELAY, buf, sizeof(buf)), 0);
	ck_assert_str_eq(buf, "");
	ck_assert_int_eq(conf_unused(&c, CONF_DAEMON, buf, sizeof(buf)), 1);
	ck_assert_str_eq(buf, "relay_name");

	load_ok("api_url = http://127.0.0.1:1\nstate_dir = /tmp\n"
	    "session_key = user\nrelay_timeout = 5s\nworkers = 0\n"
	    "nats_url = nats://127.0.0.1:4222\n");
	ck_assert_int_eq(conf_unused(&c, CONF_DAEMON, buf, sizeof(buf)), 0);
	ck_assert_int_eq(conf_unused(&c, CONF_RELAY, buf, sizeof(buf)), 4);
	ck_assert_str_eq(buf, "api_url, state_dir, session_key, "
	    "relay_timeout");
	/* too small: whole names, then "...", never a name after it */
	ck_assert_int_eq(conf_unused(&c, CONF_RELAY, small, sizeof(small)), 4);
	ck_assert_str_eq(small, "api_url, state_dir, ...");
	ck_assert_int_eq(conf_unused(&c, CONF_RELAY, small, 8), 4);
	ck_assert_str_eq(small, "...");

	/* the method policy and the fair-queue bounds are the daemon's */
	load_ok("workers = 0\nnats_url = nats://127.0.0.1:4222\n"
	    "max_calls_per_key = 10\nmax_calls_per_worker = 20\n"
	    "worker_methods_allow = sendMessage\n"
	    "worker_methods_deny = sendPhoto\n");
	ck_assert_int_eq(conf_unused(&c, CONF_DAEMON, buf, sizeof(buf)), 0);
	ck_assert_int_eq(conf_unused(&c, CONF_RELAY, buf, sizeof(buf)), 4);
	ck_assert_str_eq(buf, "max_calls_per_key, max_calls_per_worker, "
	    "worker_methods_allow, worker_methods_deny");
}
END_TEST

static Suite *
conf_suite(void)
{
	Suite	*s = suite_create("conf");
	TCase	*tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_reload);
	tcase_add_test(tc, test_print_round_trip_quotes);
	tcase_add_test(tc, test_man_page_reload);
	tcase_add_test(tc, test_minimal_file_gets_defaults);
	tcase_add_test(tc, test_empty_file);
	tcase_add_test(tc, test_int);
	tcase_add_test(tc, test_bool);
	tcase_add_test(tc, test_duration);
	tcase_add_test(tc, test_enum);
	tcase_add_test(tc, test_keylist);
	tcase_add_test(tc, test_jsonlist);
	tcase_add_test(tc, test_strings_and_paths);
	tcase_add_test(tc, test_quotes);
	tcase_add_test(tc, test_comments);
	tcase_add_test(tc, test_crlf_and_bom);
	tcase_add_test(tc, test_long_line);
	tcase_add_test(tc, test_unknown_option);
	tcase_add_test(tc, test_worker_methods);
	tcase_add_test(tc, test_obsolete_option);
	tcase_add_test(tc, test_file_size_limit);
	tcase_add_test(tc, test_duplicate);
	tcase_add_test(tc, test_syntax_errors);
	tcase_add_test(tc, test_missing_file);
	tcase_add_test(tc, test_cross_checks);
	tcase_add_test(tc, test_worker_api_listen);
	tcase_add_test(tc, test_error_leaves_nothing);
	tcase_add_test(tc, test_print_round_trip);
	tcase_add_test(tc, test_dump_table_defaults);
	tcase_add_test(tc, test_man_page_complete);
	tcase_add_test(tc, test_example_complete);
	tcase_add_test(tc, test_unused);
	suite_add_tcase(s, tc);
	return s;
}

static int
conf_test_init(void)
{
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return -1;
	}
	snprintf(path, sizeof(path), "%s/tgrunner.conf", tmpdir);
	return 0;
}

static int
conf_test_fini(void)
{
	unlink(path);
	if (rmdir(tmpdir) == -1) {
		perror(tmpdir);
		return 1;
	}
	return 0;
}

#define TEST_SUITE	conf_suite
#define TEST_INIT	conf_test_init
#define TEST_FINI	conf_test_fini
#include "testmain.h"
