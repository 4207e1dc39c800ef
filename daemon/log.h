/* SPDX-License-Identifier: ISC */
/*
 * Logging to stderr with sd-daemon priority prefixes ("<3>..."), so that
 * journald keeps the level of every line.  Every message passes through the
 * redaction filter, so the bot token never reaches the log even if a caller
 * formats a URL that holds it.
 *
 * Rules for every line:
 *   - One line per event.  Facts about it are key=value fields
 *     ("worker=3 pid=812 update=1000 attempt=2"), named the same everywhere,
 *     then a human sentence.
 *   - A failed system call is reported with log_err()/log_warn(), which
 *     append ": <strerror(errno)>" themselves (as OpenBSD's log_warn);
 *     the x forms (log_errx, log_warnx, fatalx) append nothing.  Nobody
 *     formats strerror(errno) by hand.
 *   - fatal()/fatalx() only at start-up, for broken invariants, and when
 *     memory runs out (xmalloc.h: out of memory is always fatal).
 *     Anything else at run time is logged once, where it happens, and the
 *     caller decides what to do.
 */
#ifndef TG_LOG_H
#define TG_LOG_H

#define EXIT_SOFTWARE	70	/* EX_SOFTWARE: a broken invariant (fatalx) */

enum log_level { LOG_LVL_ERR = 3, LOG_LVL_WARN = 4, LOG_LVL_NOTICE = 5,
	LOG_LVL_INFO = 6, LOG_LVL_DEBUG = 7 };

void	log_init(const char *progname, int level);
void	log_set_level(int level);
/* Remember a secret (copied) that must be replaced by "<redacted>" in every line. */
void	log_add_secret(const char *secret);
void	log_clear_secrets(void);
/* Replace every remembered secret in buf (in place, NUL-terminated, size bytes). */
void	log_redact(char *buf, size_t size);

/* with ": strerror(errno)" appended */
void	log_err(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
/* without */
void	log_errx(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_warnx(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_notice(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_msg(int level, const char *, ...) __attribute__((format(printf, 2, 3)));
/* Start-up errors, broken invariants, no memory: log and exit(status). */
void	fatal(int status, const char *, ...)
	    __attribute__((format(printf, 2, 3), noreturn));
void	fatalx(int status, const char *, ...)
	    __attribute__((format(printf, 2, 3), noreturn));

#endif
