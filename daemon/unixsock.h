/* SPDX-License-Identifier: ISC */
/*
 * Local Unix stream sockets: listening with a fixed mode, and one rule for
 * who may connect, used by the control socket and the workers' listen
 * socket alike.
 */
#ifndef TG_UNIXSOCK_H
#define TG_UNIXSOCK_H

#include <sys/types.h>

/*
 * A listening, non-blocking, close-on-exec Unix stream socket at path,
 * created with mode (never wider, not even for a moment).  A stale socket
 * there is replaced; any other file is an error.  Returns the fd or -1
 * (logged).
 */
int	unixsock_listen(const char *path, mode_t mode);
/*
 * May the peer of the connected socket fd talk to us?  Root and the
 * daemon's own uid always may.  allow (NULL: nobody else) lists more, by
 * commas or blanks: "uid:N", "gid:N" (the peer's primary group or any of
 * its supplementary groups) or user names.  Credentials are the peer's at
 * connect() time (SO_PEERCRED, SO_PEERGROUPS), as the kernel recorded
 * them.  Returns 1 or 0; *uid is the peer's uid (-1 if unknown), *pid its
 * pid (0 if unknown).
 */
int	unixsock_peer_allowed(int fd, const char *allow, uid_t *uid,
	    pid_t *pid);

#endif
