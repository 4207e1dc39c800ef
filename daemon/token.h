/* SPDX-License-Identifier: ISC */
/*
 * The bot token.  It is read once, at start (token_load), stays in the
 * daemon alone (never in argv, the environment of workers, or a log line:
 * log_add_secret), and every string that holds it, the token itself or a
 * URL built with it (token_url), is wiped with explicit_bzero before its
 * memory is freed (token_free).
 */
#ifndef TG_TOKEN_H
#define TG_TOKEN_H

struct conf;

#define TOKEN_MAX	256

/*
 * Read the token from token_file, or $CREDENTIALS_DIRECTORY/token.  On
 * error print why (never the content) and exit 78.  Free with token_free().
 */
char	*token_load(const struct conf *);
/* "<api_url>/bot<token>/": the base of every method URL.  token_free() it. */
char	*token_url(const char *api_url, const char *token);
/* Wipe s, then free it; NULL is fine. */
void	 token_free(char *s);

#endif
