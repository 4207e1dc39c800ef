/* SPDX-License-Identifier: ISC */
/*
 * Unix sockets (unixsock.h).
 *
 * Why SO_PEERGROUPS for "gid:N": it reports the supplementary groups the
 * peer process had when it connected, recorded by the kernel with the
 * connection, like SO_PEERCRED's uid and gid.  The alternatives are both
 * wrong in some case: /proc/<pid>/status reads whatever process has that
 * pid now (which may be another one, or one with other groups by then),
 * and getgrouplist() on the peer's uid tells what the group database
 * would give a fresh login, not what the process has (systemd's
 * SupplementaryGroups=, a dropped setgroups(), a container's mapping).
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "unixsock.h"
#include "xmalloc.h"

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS	59	/* Linux 4.13 */
#endif

#define UNIXSOCK_GROUPS	64	/* supplementary groups read at once */

int
unixsock_listen(const char *path, mode_t mode)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		log_errx("socket %s: path too long", path);
		return -1;
	}
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			log_errx("socket %s: exists and is not a socket", path);
			return -1;
		}
		unlink(path);
	}
	strcpy(sun.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
	    0)) == -1) {
		log_err("socket %s", path);
		return -1;
	}
	/* never a moment with a wider mode than asked for */
	old = umask(0777 & ~mode);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		umask(old);
		log_err("socket %s: bind", path);
		close(fd);
		return -1;
	}
	umask(old);
	if (chmod(path, mode) == -1 || listen(fd, 16) == -1) {
		log_err("socket %s", path);
		close(fd);
		unlink(path);
		return -1;
	}
	return fd;
}

/* Is gid the peer's primary group or one of its supplementary groups? */
static int
unixsock_peer_in_group(int fd, gid_t primary, gid_t gid)
{
	gid_t		 buf[UNIXSOCK_GROUPS], *g = buf;
	socklen_t	 len = sizeof(buf);
	size_t		 i, n;
	int		 in = 0;

	if (primary == gid)
		return 1;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) == -1) {
		if (errno != ERANGE) {
			log_warn("listen: cannot read the peer's groups "
			    "(SO_PEERGROUPS); only its primary group counts");
			return 0;
		}
		g = xmalloc(len);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) == -1) {
			log_warn("listen: SO_PEERGROUPS");
			free(g);
			return 0;
		}
	}
	n = len / sizeof(gid_t);
	for (i = 0; i < n && !in; i++)
		in = g[i] == gid;
	if (g != buf)
		free(g);
	return in;
}

/* "uid:N", "gid:N" or "uid:N junk": the number, or -1. */
static int64_t
unixsock_id(const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v > UINT32_MAX)
		return -1;
	return (int64_t)v;
}

static int
unixsock_match(int fd, const struct ucred *cr, const char *item)
{
	struct passwd *pw;
	int64_t id;

	if (strncmp(item, "uid:", 4) == 0)
		return (id = unixsock_id(item + 4)) != -1 &&
		    (uid_t)id == cr->uid;
	if (strncmp(item, "gid:", 4) == 0)
		return (id = unixsock_id(item + 4)) != -1 &&
		    unixsock_peer_in_group(fd, cr->gid, (gid_t)id);
	return (pw = getpwnam(item)) != NULL && pw->pw_uid == cr->uid;
}

int
unixsock_peer_allowed(int fd, const char *allow, uid_t *uid, pid_t *pid)
{
	struct ucred	 cr;
	socklen_t	 len = sizeof(cr);
	char		*list, *tok, *save = NULL;
	int		 ok = 0;

	*uid = (uid_t)-1;
	*pid = 0;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == -1 ||
	    len != sizeof(cr))
		return 0;
	*uid = cr.uid;
	*pid = cr.pid;
	if (cr.uid == 0 || cr.uid == geteuid())
		return 1;
	if (allow == NULL)
		return 0;
	list = xstrdup(allow);
	for (tok = strtok_r(list, ", \t", &save); tok != NULL && !ok;
	    tok = strtok_r(NULL, ", \t", &save))
		ok = unixsock_match(fd, &cr, tok);
	free(list);
	return ok;
}
