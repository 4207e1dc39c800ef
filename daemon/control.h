/* SPDX-License-Identifier: ISC */
/*
 * The control socket: a Unix stream socket where tgrunnerctl sends one
 * command line ("status", "drain", ...) and reads one JSON object back.
 * The commands are a table the daemon gives (struct control_cmd); this
 * file owns the socket, the line and the dispatch.
 * Access: the socket file's mode (0600) plus a check of the peer's
 * credentials: root or the daemon's uid (unixsock.h).
 */
#ifndef TG_CONTROL_H
#define TG_CONTROL_H

#include <sys/types.h>

#include <jansson.h>

struct event_base;
struct control;

#define CONTROL_LINE_MAX	1024

/*
 * One command of the control socket, as ntpd's control.c has its
 * IMSG_CTL_* cases: a name, the handler that answers it with a new JSON
 * object (sent, then freed), and the states of the daemon in which it is
 * allowed (bits CONTROL_STATE(s); CONTROL_ANY: always).  args is the rest
 * of the line after the name, blanks skipped.
 */
struct control_cmd {
	const char	*name;
	json_t		*(*fn)(void *arg, const char *args);
	unsigned	 states;
};
#define CONTROL_ANY		0u
#define CONTROL_STATE(s)	(1u << (s))

/* The daemon's state: its number (for CONTROL_STATE) and its name. */
typedef int (*control_state_fn)(void *arg, const char **name);

/*
 * Listen on path with the given mode (a stale socket there is replaced;
 * any other file is an error) and answer the commands of cmds (an array
 * ending with a NULL name; borrowed, must outlive the control).  Returns
 * NULL with a logged reason.
 */
struct control	*control_new(struct event_base *, const char *path, mode_t mode,
		    const struct control_cmd *cmds, control_state_fn, void *arg);
/*
 * The answer to one command line: the handler's, or {"ok":false,...} for
 * an unknown command or one not allowed in the current state.
 */
json_t		*control_run(const struct control_cmd *cmds, control_state_fn,
		    void *arg, const char *cmd, const char *args);
/* Closes every connection and removes the socket file. */
void		 control_free(struct control *);

#endif
