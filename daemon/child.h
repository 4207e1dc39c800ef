/* SPDX-License-Identifier: ISC */
/*
 * Workers the pool starts itself: a child process running worker_command
 * under /bin/sh, with one end of a socketpair as fd 3 (TGRUNNER_FD=3),
 * its stdout and stderr going to the log, in its own process group, with
 * the daemon's secrets taken out of its environment, optionally under
 * another user, and killed with the daemon (PR_SET_PDEATHSIG).  A child
 * is made to go with signals to its process group; it is gone once
 * reaped.
 */
#ifndef TG_CHILD_H
#define TG_CHILD_H

struct pool;
struct worker;

/* Start one child for the pool; NULL (logged) if it cannot be started. */
struct worker	*child_spawn(struct pool *);
/* waitpid() said w's process exited with status: w is freed. */
void		 child_exited(struct worker *w, int status);

#endif
