/* SPDX-License-Identifier: ISC */
/*
 * The workers' listen socket: externally started workers join the pool
 * over a Unix socket (mode 0660), checked against listen_allow
 * (unixsock.h), and speak the same protocol as spawned ones.  Such a
 * worker is not the daemon's child: nothing can be signalled or reaped;
 * once its connection is gone it can no longer report, so its updates are
 * given back at once.
 */
#ifndef TG_LISTENER_H
#define TG_LISTENER_H

struct listener;
struct pool;

/* Accept workers at path for p.  NULL (logged) if it cannot listen. */
struct listener	*listener_new(struct pool *p, const char *path);
/* Stops accepting and removes the socket file; joined workers stay. */
void		 listener_free(struct listener *);

#endif
