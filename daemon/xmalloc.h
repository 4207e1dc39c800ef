/* SPDX-License-Identifier: ISC */
/*
 * Memory: one rule for the whole daemon.  An allocation that fails at run
 * time is fatal: the daemon logs it and exits with EXIT_NOMEM, and systemd
 * (Restart=on-failure) starts it again.  Nothing is lost by that: every
 * update is in the journal before it is handed out, and the journal replays
 * whatever was not done.  Carrying on instead would mean dropping something
 * already promised (a journaled update, a reply owed to a chat) or keeping
 * a half-built state, so no code tries to.  See also log.h.
 *
 * Limits on what peers may make the daemon hold (frames, queues, backlog)
 * are enforced before allocating; running out of memory inside them is the
 * machine's problem, not a peer's request to refuse.
 */
#ifndef TG_XMALLOC_H
#define TG_XMALLOC_H

#include <stddef.h>

#define EXIT_NOMEM	71	/* EX_OSERR: out of memory */

void	*xmalloc(size_t);
void	*xcalloc(size_t, size_t);
void	*xreallocarray(void *, size_t, size_t);
char	*xstrdup(const char *);
char	*xstrndup(const char *, size_t);
/* asprintf that cannot fail; returns the length. */
int	 xasprintf(char **, const char *, ...)
	    __attribute__((format(printf, 2, 3)));

#endif
