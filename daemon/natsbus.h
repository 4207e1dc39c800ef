/*
 * NATS for tgrunnerd and tgrunner-relay: one client connection (libnats)
 * whose socket is served by the process's libevent loop, and links over
 * it that carry protocol frames reliably and in order.
 *
 * libnats runs some work on threads of its own (pings, reconnects,
 * message delivery, its callbacks).  None of them touches our data: what
 * they report is queued under a lock and handed to the loop, where
 * everything else happens.  natsbus_init() must run before the loop's
 * event base is made, so that those threads may wake it.
 *
 * A link (struct nlink) is one direction pair between the daemon and one
 * relay session, named by an epoch.  NATS itself delivers at most once:
 * a message published while the other side is reconnecting is gone.  So
 * every frame carries a sequence number and the other side's
 * acknowledgement in message headers; what is not acknowledged is sent
 * again after a reconnect, when the other side reports a gap, or when
 * acknowledgements stall.  The payload is the frame as on the socket
 * (without its newline); a frame larger than the server's max_payload
 * travels in pieces.  See proto/NATS.md.
 */
#ifndef TG_NATSBUS_H
#define TG_NATSBUS_H

#include <sys/queue.h>

#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

struct conf;
struct event;
struct event_base;
struct natsbus;

struct natsbus_ops {
	/* A message on a subscribed subject, on the loop (borrowed). */
	void	(*msg)(void *arg, natsMsg *);
	/* The connection came up (again: resend what is owed) or went down. */
	void	(*link)(void *arg, int up);
};

/* The envelope of a message, in its headers (0: absent). */
struct nbhdr {
	uint64_t	epoch;		/* Tg-Epoch: the relay session */
	uint64_t	seq;		/* Tg-Seq: this frame's number */
	uint64_t	ack;		/* Tg-Ack: frames received in order */
	uint64_t	sent;		/* Tg-Sent: frames sent so far (beats) */
	uint64_t	nack;		/* Tg-Nack: a gap after this one, resend */
	int		more;		/* Tg-More: a piece; the frame goes on */
	int64_t		instance;	/* Tg-Instance: the relay process */
};

/* Once, before the event base is made (libevent's thread locking). */
void		 natsbus_init(void);
/*
 * Connect to c's nats_url with its credentials, as name, subscribed to
 * subjects (NULL-terminated).  A server that cannot be reached yet is
 * retried in the background.  NULL (logged) on a bad option or file.
 */
struct natsbus	*natsbus_new(struct event_base *, const struct conf *c,
		    const char *name, const char *const *subjects,
		    const struct natsbus_ops *, void *arg);
/*
 * Close the connection and wait for libnats's threads to end: at exit,
 * once per process (libnats cannot be used again after it).
 */
void		 natsbus_free(struct natsbus *);
int		 natsbus_up(const struct natsbus *);
/* Largest payload the server takes (0 while never connected). */
size_t		 natsbus_max_payload(const struct natsbus *);
/* Messages dropped: our queue full, or libnats's (slow consumer). */
uint64_t	 natsbus_dropped(const struct natsbus *);
/* Publish data[0..len) with h (may be NULL).  0, or -1 (logged). */
int		 natsbus_publish(struct natsbus *, const char *subject,
		    const char *reply, const struct nbhdr *h, const char *data,
		    size_t len);
/* Read the envelope of m: 0, or -1 when a header is malformed. */
int		 natsbus_headers(natsMsg *m, struct nbhdr *h);

/* --- reliable, ordered frames --------------------------------------------- */

struct nlmsg;

struct nlink {
	struct natsbus		*nb;
	char			*subject;	/* frames go here */
	char			*beat;		/* acknowledgements and beats */
	char			*first;		/* frame 1 goes here (a reply) */
	char			*probe;		/* reply of beats: no responders */
	uint64_t		 epoch;
	int64_t			 instance;	/* sent in every header (relay) */
	uint64_t		 sent;		/* last sequence number used */
	uint64_t		 acked;		/* the other side has these */
	uint64_t		 recvd;		/* we have these, in order */
	TAILQ_HEAD(, nlmsg)	 unacked;
	size_t			 nunacked;
	size_t			 unacked_bytes;
	size_t			 max_unacked;	/* frames; a bound */
	char			*part;		/* a frame arriving in pieces */
	size_t			 partlen;
	size_t			 partcap;	/* bytes allocated at part */
	int64_t			 progress;	/* mono ms: acked last moved */
	int64_t			 resent;	/* mono ms: last resend */
	int			 ack_owed;
	struct event		*ack_timer;
	uint64_t		 resends;	/* counters, for status */
	uint64_t		 dups;
	/* a whole frame, in order (without newline), or a broken link */
	void			(*frame)(void *arg, const char *, size_t);
	void			(*error)(void *arg, const char *why);
	void			*arg;
};

void		 nlink_init(struct nlink *, struct natsbus *,
		    struct event_base *, const char *subject, const char *beat,
		    uint64_t epoch, size_t max_unacked);
void		 nlink_clear(struct nlink *);
/* Frame 1 (welcome) to subject; beats with reply subject probe. */
void		 nlink_reply(struct nlink *, const char *first,
		    const char *probe);
/* Send one frame: 0, or -1 when the bound of unacknowledged frames bites. */
int		 nlink_send(struct nlink *, const char *data, size_t len);
/* A message of this link's epoch on its frame subject: its payload. */
void		 nlink_input(struct nlink *, const char *data, size_t len,
		    const struct nbhdr *);
/* Acknowledgement, gap report and sent count of a beat (or any header). */
void		 nlink_control(struct nlink *, const struct nbhdr *);
/* Send a beat now: what we have, what we sent. */
void		 nlink_beat(struct nlink *);
/* Resend what is unacknowledged (after a reconnect, or stalled). */
void		 nlink_resend(struct nlink *, const char *why);
/* Periodic: resend what the other side has not acknowledged for stall ms. */
void		 nlink_tick(struct nlink *, int64_t stall);

#endif
