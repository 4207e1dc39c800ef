/*
 * The control socket: a Unix stream socket where tgrunnerctl sends one
 * command line ("status", "drain", ...) and reads one JSON object back.
 * Access: the socket file's mode (0600) plus a SO_PEERCRED check that the
 * peer is root or runs with the daemon's uid.
 */
#ifndef TG_CONTROL_H
#define TG_CONTROL_H

#include <sys/types.h>

#include <jansson.h>

struct event_base;
struct control;

#define CONTROL_LINE_MAX	1024

/* Answer one command; return a new JSON object (sent, then freed). */
typedef json_t *(*control_fn)(void *arg, const char *cmd, const char *args);

/*
 * Listen on path with the given mode (a stale socket there is replaced;
 * any other file is an error).  Returns NULL with a logged reason.
 */
struct control	*control_new(struct event_base *, const char *path, mode_t mode,
		    control_fn, void *arg);
/*
 * A listening, non-blocking, close-on-exec Unix stream socket at path,
 * created with mode (never wider, not even for a moment).  A stale socket
 * there is replaced; any other file is an error.  Returns the fd or -1
 * (logged).  Also used for the workers' listen socket.
 */
int		 control_unix_listen(const char *path, mode_t mode);
/* Closes every connection and removes the socket file. */
void		 control_free(struct control *);

#endif
