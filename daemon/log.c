#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "xmalloc.h"

/* a worker's output line: 4 KiB, 16 KiB once escaped, and its prefix */
#define LOG_LINE_MAX	(17 * 1024)
#define LOG_SECRETS_MAX	4

static int	 log_level = LOG_LVL_INFO;
static char	*log_secrets[LOG_SECRETS_MAX];

void
log_init(const char *progname, int level)
{
	(void)progname;
	log_level = level;
}

void
log_set_level(int level)
{
	log_level = level;
}

void
log_add_secret(const char *secret)
{
	int i;

	if (secret == NULL || *secret == '\0')
		return;
	for (i = 0; i < LOG_SECRETS_MAX; i++) {
		if (log_secrets[i] == NULL) {
			log_secrets[i] = xstrdup(secret);
			return;
		}
	}
}

void
log_clear_secrets(void)
{
	int i;

	for (i = 0; i < LOG_SECRETS_MAX; i++) {
		if (log_secrets[i] != NULL) {
			explicit_bzero(log_secrets[i], strlen(log_secrets[i]));
			free(log_secrets[i]);
		}
		log_secrets[i] = NULL;
	}
}

static void
redact_one(char *buf, size_t size, const char *secret)
{
	static const char repl[] = "<redacted>";
	size_t slen = strlen(secret), rlen = sizeof(repl) - 1;
	char *p = buf;

	while ((p = strstr(p, secret)) != NULL) {
		size_t tail = strlen(p + slen);

		if ((size_t)(p - buf) + rlen + tail + 1 > size)
			tail = size - 1 - (size_t)(p - buf) - rlen;
		memmove(p + rlen, p + slen, tail);
		p[rlen + tail] = '\0';
		memcpy(p, repl, rlen);
		p += rlen;
	}
}

void
log_redact(char *buf, size_t size)
{
	int i;

	for (i = 0; i < LOG_SECRETS_MAX; i++)
		if (log_secrets[i] != NULL)
			redact_one(buf, size, log_secrets[i]);
}

/* The one writer: with_errno appends ": strerror(errno)" (errno as on entry). */
static void
log_line(int level, int with_errno, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX];
	char *p;
	int saved = errno;
	size_t n;

	if (level > log_level)
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	if (with_errno) {
		n = strlen(line);
		snprintf(line + n, sizeof(line) - n, ": %s", strerror(saved));
	}
	/* one event, one line: fold embedded newlines */
	for (p = line; *p != '\0'; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	log_redact(line, sizeof(line));
	fprintf(stderr, "<%d>%s\n", level, line);
	errno = saved;
}


void
log_msg(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_line(level, 0, fmt, ap);
	va_end(ap);
}

#define LOG_FN(name, level, with_errno)				\
void								\
name(const char *fmt, ...)					\
{								\
	va_list ap;						\
								\
	va_start(ap, fmt);					\
	log_line(level, with_errno, fmt, ap);			\
	va_end(ap);						\
}

LOG_FN(log_err, LOG_LVL_ERR, 1)
LOG_FN(log_errx, LOG_LVL_ERR, 0)
LOG_FN(log_warn, LOG_LVL_WARN, 1)
LOG_FN(log_warnx, LOG_LVL_WARN, 0)
LOG_FN(log_notice, LOG_LVL_NOTICE, 0)
LOG_FN(log_info, LOG_LVL_INFO, 0)
LOG_FN(log_debug, LOG_LVL_DEBUG, 0)

#define FATAL_FN(name, with_errno)				\
void								\
name(int status, const char *fmt, ...)				\
{								\
	va_list ap;						\
								\
	va_start(ap, fmt);					\
	log_line(LOG_LVL_ERR, with_errno, fmt, ap);		\
	va_end(ap);						\
	exit(status);						\
}

FATAL_FN(fatal, 1)
FATAL_FN(fatalx, 0)
