/*
 * Logging to stderr with sd-daemon priority prefixes ("<3>..."), so that
 * journald keeps the level of every line.  One line per event; fields as
 * key=value.  Every message passes through the redaction filter, so the bot
 * token never reaches the log even if a caller formats a URL that holds it.
 */
#ifndef TG_LOG_H
#define TG_LOG_H

#include <stdarg.h>

enum log_level { LOG_LVL_ERR = 3, LOG_LVL_WARN = 4, LOG_LVL_NOTICE = 5,
	LOG_LVL_INFO = 6, LOG_LVL_DEBUG = 7 };

void	log_init(const char *progname, int level);
void	log_set_level(int level);
int	log_get_level(void);
/* Remember a secret (copied) that must be replaced by "<redacted>" in every line. */
void	log_add_secret(const char *secret);
void	log_clear_secrets(void);
/* Replace every remembered secret in buf (in place, NUL-terminated, size bytes). */
void	log_redact(char *buf, size_t size);

void	log_err(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_notice(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_msg(int level, const char *, ...) __attribute__((format(printf, 2, 3)));
void	log_vmsg(int level, const char *, va_list);
/* Start-up errors and broken invariants only: log and exit(status). */
void	fatalx(int status, const char *, ...)
	    __attribute__((format(printf, 2, 3), noreturn));

#endif
