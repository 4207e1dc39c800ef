/*
 * The bot token (token.h).
 */
#include "config.h"

#include <sys/stat.h>

#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "token.h"
#include "xmalloc.h"

/* Digits, ':', then letters, digits, '_' or '-'. */
static int
token_valid(const char *t)
{
	const char *p = t;

	if (!isdigit((unsigned char)*p))
		return 0;
	while (isdigit((unsigned char)*p))
		p++;
	if (*p++ != ':' || *p == '\0')
		return 0;
	for (; *p != '\0'; p++)
		if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-')
			return 0;
	return 1;
}

static void
token_path(const struct conf *c, char *path, size_t size)
{
	const char *creds;

	if (c->token_file != NULL)
		snprintf(path, size, "%s", c->token_file);
	else if ((creds = getenv("CREDENTIALS_DIRECTORY")) != NULL)
		snprintf(path, size, "%s/token", creds);
	else
		fatalx(EXIT_CONFIG, "%s: no bot token: set token_file, or run "
		    "under systemd with LoadCredential=token:PATH", c->path);
}

char *
token_load(const struct conf *c)
{
	char path[4096], buf[TOKEN_MAX + 2], *token;
	struct stat st;
	ssize_t n;
	size_t len;
	int fd;

	token_path(c, path, sizeof(path));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		fatal(EXIT_CONFIG, "token file %s", path);
	if (fstat(fd, &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
		log_warnx("token file %s: mode %04o lets its group or others "
		    "read the bot token; chmod 600 it", path,
		    (unsigned)(st.st_mode & 07777));
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		fatal(EXIT_CONFIG, "token file %s", path);
	buf[n] = '\0';
	if (memchr(buf, '\0', (size_t)n) != NULL)
		fatalx(EXIT_CONFIG, "token file %s: does not hold a bot token "
		    "(it contains a NUL byte)", path);
	len = strlen(buf);
	while (len > 0 && isspace((unsigned char)buf[len - 1]))
		buf[--len] = '\0';
	if (len == 0 || len > TOKEN_MAX || !token_valid(buf))
		fatalx(EXIT_CONFIG, "token file %s: does not hold a bot token "
		    "(expected digits, ':', then letters, digits, '_' or '-')",
		    path);
	log_add_secret(buf);
	/* the part after ':' is the secret; redact it alone too */
	log_add_secret(strchr(buf, ':') + 1);
	token = xstrdup(buf);
	explicit_bzero(buf, sizeof(buf));
	return token;
}

char *
token_url(const char *api_url, const char *token)
{
	size_t n = strlen(api_url);
	char *s;

	while (n > 0 && api_url[n - 1] == '/')
		n--;
	xasprintf(&s, "%.*s/bot%s/", (int)n, api_url, token);
	return s;
}

void
token_free(char *s)
{
	if (s == NULL)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}
