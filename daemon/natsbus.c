/*
 * NATS on the loop (natsbus.h): the connection, the hand-over of what
 * libnats's threads report, headers, and reliable links.
 */
#include "config.h"

#include <sys/queue.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <nats/nats.h>

/* libnats's adapter defines its functions in the header, once per program */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
#include <nats/adapters/libevent.h>
#pragma GCC diagnostic pop

#include "conf.h"
#include "log.h"
#include "natsbus.h"
#include "proto.h"
#include "timeutil.h"
#include "xmalloc.h"

#define NB_QUEUE_MAX		65536	/* messages waiting for the loop */
#define NB_PENDING_MSGS		65536	/* libnats's per subscription */
#define NB_PENDING_BYTES	(256 * 1024 * 1024)
#define NB_HEADROOM		512	/* bytes of headers in a piece */
#define NB_RECONNECT_WAIT	250	/* ms between reconnect attempts */
#define NB_RECONNECT_BUF	(32 * 1024 * 1024)
#define NB_PING_INTERVAL	5000	/* ms; two missed: reconnect */
#define NB_ACK_DELAY		10	/* ms an acknowledgement may wait */
#define NB_RESEND_GAP		200	/* ms between resends of a link */
#define NB_ERRLEN		256

/* What a libnats thread left for the loop. */
struct nbitem {
	natsMsg			*m;		/* or NULL: a state change */
	int			 up;
	char			*err;
	STAILQ_ENTRY(nbitem)	 entry;
};

struct natsbus {
	struct event_base	*base;
	natsOptions		*opts;
	natsConnection		*nc;
	natsSubscription	*subs[8];
	int			 nsubs;
	const struct natsbus_ops *ops;
	void			*arg;
	struct event		*wake;
	pthread_mutex_t		 lock;		/* guards the rest */
	STAILQ_HEAD(, nbitem)	 queue;
	size_t			 queued;
	int			 woken;
	int			 closing;
	int			 up;		/* as the loop saw it last */
	uint64_t		 dropped;
	int			 warned_full;
	char			 lasterr[NB_ERRLEN];	/* the loop's */
	int64_t			 lasterr_at;
};

/* --- from libnats's threads ------------------------------------------------ */

static void
nb_push(struct natsbus *nb, struct nbitem *it)
{
	pthread_mutex_lock(&nb->lock);
	if (nb->closing || (it->m != NULL && nb->queued >= NB_QUEUE_MAX)) {
		if (it->m != NULL && !nb->closing)
			nb->dropped++;
		pthread_mutex_unlock(&nb->lock);
		natsMsg_Destroy(it->m);
		free(it->err);
		free(it);
		return;
	}
	STAILQ_INSERT_TAIL(&nb->queue, it, entry);
	nb->queued++;
	if (!nb->woken) {
		nb->woken = 1;
		event_active(nb->wake, EV_READ, 0);
	}
	pthread_mutex_unlock(&nb->lock);
}

static void
nb_on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *arg)
{
	struct nbitem *it;

	/* no xmalloc here: a fatal exit from a libnats thread helps nobody */
	if ((it = calloc(1, sizeof(*it))) == NULL) {
		natsMsg_Destroy(m);
		return;
	}
	it->m = m;
	nb_push(arg, it);
}

static void
nb_on_state(struct natsbus *nb, int up, const char *err)
{
	struct nbitem *it;

	if ((it = calloc(1, sizeof(*it))) == NULL)
		return;
	it->up = up;
	if (err != NULL)
		it->err = strdup(err);
	nb_push(nb, it);
}

static void
nb_on_disconnected(natsConnection *nc, void *arg)
{
	nb_on_state(arg, 0, NULL);
}

static void
nb_on_connected(natsConnection *nc, void *arg)
{
	nb_on_state(arg, 1, NULL);
}

static void
nb_on_error(natsConnection *nc, natsSubscription *sub, natsStatus s,
    void *arg)
{
	char err[NB_ERRLEN];

	snprintf(err, sizeof(err), "%s", natsStatus_GetText(s));
	if (s == NATS_SLOW_CONSUMER)
		snprintf(err, sizeof(err), "slow consumer: messages dropped "
		    "(more than %d waiting)", NB_PENDING_MSGS);
	else if (s == NATS_NOT_PERMITTED)
		snprintf(err, sizeof(err), "not permitted: the server refused "
		    "a publish or subscription (its permissions for this user)");
	/* up = -1: an error, not a change of state */
	nb_on_state(arg, -1, err);
}

/* --- on the loop ------------------------------------------------------------ */

static void
nb_wake(evutil_socket_t fd, short ev, void *arg)
{
	struct natsbus *nb = arg;
	STAILQ_HEAD(, nbitem) q;
	struct nbitem *it;

	pthread_mutex_lock(&nb->lock);
	STAILQ_INIT(&q);
	STAILQ_CONCAT(&q, &nb->queue);
	nb->queued = 0;
	nb->woken = 0;
	if (nb->dropped > 0 && !nb->warned_full) {
		nb->warned_full = 1;
		log_warnx("nats: more than %d messages waiting for the loop; "
		    "dropping (they are sent again)", NB_QUEUE_MAX);
	}
	pthread_mutex_unlock(&nb->lock);
	while ((it = STAILQ_FIRST(&q)) != NULL) {
		STAILQ_REMOVE_HEAD(&q, entry);
		if (it->m != NULL) {
			nb->ops->msg(nb->arg, it->m);
			natsMsg_Destroy(it->m);
		} else if (it->up == -1) {
			/* the same error again and again: once a minute */
			if (strcmp(nb->lasterr, it->err ? it->err : "") != 0 ||
			    mono_ms() - nb->lasterr_at >= 60000) {
				snprintf(nb->lasterr, sizeof(nb->lasterr), "%s",
				    it->err ? it->err : "");
				nb->lasterr_at = mono_ms();
				log_warnx("nats: %s", it->err ? it->err :
				    "error");
			}
		}
		else if (it->up != nb->up) {
			nb->up = it->up;
			if (it->up)
				log_notice("nats: connected to %s",
				    nb->nc ? "the server" : "?");
			else
				log_warnx("nats: disconnected; remote work "
				    "pauses until it reconnects");
			nb->ops->link(nb->arg, it->up);
		}
		free(it->err);
		free(it);
	}
}

static int
nb_check(natsStatus s, const char *what)
{
	if (s == NATS_OK)
		return 0;
	log_warnx("nats: %s: %s (%s)", what, natsStatus_GetText(s),
	    nats_GetLastError(NULL) ? nats_GetLastError(NULL) : "");
	return -1;
}

/* The password from its file: the first line. */
static char *
nb_read_secret(const char *path)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	FILE *fp;

	if ((fp = fopen(path, "re")) == NULL) {
		log_warn("nats: %s", path);
		return NULL;
	}
	n = getline(&line, &cap, fp);
	fclose(fp);
	if (n <= 0) {
		log_warnx("nats: %s: empty", path);
		free(line);
		return NULL;
	}
	line[strcspn(line, "\r\n")] = '\0';
	log_add_secret(line);
	return line;
}

static int
nb_credentials(natsOptions *o, const struct conf *c)
{
	char *pw;
	int rv = 0;

	if (c->nats_creds != NULL && nb_check(
	    natsOptions_SetUserCredentialsFromFiles(o, c->nats_creds, NULL),
	    c->nats_creds) == -1)
		return -1;
	if (c->nats_nkey != NULL && nb_check(natsOptions_SetNKeyFromSeed(o,
	    c->nats_nkey, c->nats_nkey_seed), c->nats_nkey_seed) == -1)
		return -1;
	if (c->nats_user != NULL) {
		pw = NULL;
		if (c->nats_password_file != NULL &&
		    (pw = nb_read_secret(c->nats_password_file)) == NULL)
			return -1;
		rv = nb_check(natsOptions_SetUserInfo(o, c->nats_user, pw),
		    "user");
		free(pw);
	}
	return rv;
}

static int
nb_tls(natsOptions *o, const struct conf *c)
{
	if (c->nats_tls_ca == NULL && c->nats_tls_cert == NULL)
		return 0;
	if (nb_check(natsOptions_SetSecure(o, true), "tls") == -1)
		return -1;
	if (c->nats_tls_ca != NULL && nb_check(
	    natsOptions_LoadCATrustedCertificates(o, c->nats_tls_ca),
	    c->nats_tls_ca) == -1)
		return -1;
	if (c->nats_tls_cert != NULL && nb_check(
	    natsOptions_LoadCertificatesChain(o, c->nats_tls_cert,
	    c->nats_tls_key), c->nats_tls_cert) == -1)
		return -1;
	return 0;
}

/* "nats://a:4222, nats://b:4222" into libnats's server list. */
static int
nb_servers(natsOptions *o, const char *urls)
{
	char *copy = xstrdup(urls), *s, *save = NULL;
	const char *list[16];
	int n = 0, rv;

	for (s = strtok_r(copy, ", ", &save); s != NULL && n < 16;
	    s = strtok_r(NULL, ", ", &save))
		list[n++] = s;
	rv = nb_check(natsOptions_SetServers(o, list, n), "nats_url");
	free(copy);
	return rv;
}

static int
nb_options(struct natsbus *nb, const struct conf *c, const char *name)
{
	natsOptions *o;

	if (nb_check(natsOptions_Create(&nb->opts), "options") == -1)
		return -1;
	o = nb->opts;
	if (nb_servers(o, c->nats_url) == -1 || nb_credentials(o, c) == -1 ||
	    nb_tls(o, c) == -1)
		return -1;
	/* the loop reads and writes; publishing only queues for it */
	if (nb_check(natsOptions_SetEventLoop(o, nb->base, natsLibevent_Attach,
	    natsLibevent_Read, natsLibevent_Write, natsLibevent_Detach),
	    "event loop") == -1 ||
	    nb_check(natsOptions_SetSendAsap(o, true), "send asap") == -1 ||
	    nb_check(natsOptions_SetName(o, name), "name") == -1 ||
	    nb_check(natsOptions_SetMaxReconnect(o, -1), "reconnect") == -1 ||
	    nb_check(natsOptions_SetReconnectWait(o, NB_RECONNECT_WAIT),
	    "reconnect wait") == -1 ||
	    nb_check(natsOptions_SetReconnectBufSize(o, NB_RECONNECT_BUF),
	    "reconnect buffer") == -1 ||
	    nb_check(natsOptions_SetPingInterval(o, NB_PING_INTERVAL),
	    "ping") == -1 ||
	    nb_check(natsOptions_SetMaxPingsOut(o, 2), "ping") == -1 ||
	    nb_check(natsOptions_SetNoEcho(o, true), "no echo") == -1 ||
	    nb_check(natsOptions_SetMaxPendingMsgs(o, NB_PENDING_MSGS),
	    "pending") == -1 ||
	    nb_check(natsOptions_SetRetryOnFailedConnect(o, true,
	    nb_on_connected, nb), "retry") == -1 ||
	    nb_check(natsOptions_SetDisconnectedCB(o, nb_on_disconnected, nb),
	    "callback") == -1 ||
	    nb_check(natsOptions_SetReconnectedCB(o, nb_on_connected, nb),
	    "callback") == -1 ||
	    nb_check(natsOptions_SetErrorHandler(o, nb_on_error, nb),
	    "callback") == -1)
		return -1;
	return 0;
}

void
natsbus_init(void)
{
	natsLibevent_Init();
	if (nats_Open(-1) != NATS_OK)
		fatalx(EXIT_NOMEM, "nats: cannot initialise libnats");
}

struct natsbus *
natsbus_new(struct event_base *base, const struct conf *c, const char *name,
    const char *const *subjects, const struct natsbus_ops *ops, void *arg)
{
	struct natsbus *nb;
	natsStatus s;
	int i;

	nb = xcalloc(1, sizeof(*nb));
	nb->base = base;
	nb->ops = ops;
	nb->arg = arg;
	pthread_mutex_init(&nb->lock, NULL);
	STAILQ_INIT(&nb->queue);
	if ((nb->wake = event_new(base, -1, 0, nb_wake, nb)) == NULL)
		fatalx(EXIT_NOMEM, "%s: event_new", __func__);
	if (nb_options(nb, c, name) == -1) {
		natsbus_free(nb);
		return NULL;
	}
	s = natsConnection_Connect(&nb->nc, nb->opts);
	if (s == NATS_NOT_YET_CONNECTED)
		log_warnx("nats: no server at %s yet; retrying", c->nats_url);
	else if (s == NATS_OK)
		nb_on_connected(nb->nc, nb);
	else {
		nb_check(s, c->nats_url);
		natsbus_free(nb);
		return NULL;
	}
	for (i = 0; subjects[i] != NULL && i < 8; i++) {
		if (nb_check(natsConnection_Subscribe(&nb->subs[i], nb->nc,
		    subjects[i], nb_on_msg, nb), subjects[i]) == -1 ||
		    nb_check(natsSubscription_SetPendingLimits(nb->subs[i],
		    NB_PENDING_MSGS, NB_PENDING_BYTES), subjects[i]) == -1) {
			natsbus_free(nb);
			return NULL;
		}
		nb->nsubs++;
	}
	return nb;
}

void
natsbus_free(struct natsbus *nb)
{
	struct nbitem *it;
	int i;

	if (nb == NULL)
		return;
	pthread_mutex_lock(&nb->lock);
	nb->closing = 1;
	pthread_mutex_unlock(&nb->lock);
	for (i = 0; i < nb->nsubs; i++) {
		natsSubscription_Unsubscribe(nb->subs[i]);
		natsSubscription_Destroy(nb->subs[i]);
	}
	if (nb->nc != NULL) {
		natsConnection_Close(nb->nc);
		natsConnection_Destroy(nb->nc);
	}
	natsOptions_Destroy(nb->opts);
	/* libnats's threads may still call us until they are all gone */
	nats_CloseAndWait(5000);
	while ((it = STAILQ_FIRST(&nb->queue)) != NULL) {
		STAILQ_REMOVE_HEAD(&nb->queue, entry);
		natsMsg_Destroy(it->m);
		free(it->err);
		free(it);
	}
	event_free(nb->wake);
	pthread_mutex_destroy(&nb->lock);
	free(nb);
}

int
natsbus_up(const struct natsbus *nb)
{
	return nb->up;
}

size_t
natsbus_max_payload(const struct natsbus *nb)
{
	int64_t n = nb != NULL && nb->nc != NULL ?
	    natsConnection_GetMaxPayload(nb->nc) : 0;

	return n > 0 ? (size_t)n : 0;
}

uint64_t
natsbus_dropped(const struct natsbus *nb)
{
	uint64_t n;
	int64_t d = 0;
	int i;

	pthread_mutex_lock((pthread_mutex_t *)&nb->lock);
	n = nb->dropped;
	pthread_mutex_unlock((pthread_mutex_t *)&nb->lock);
	for (i = 0; i < nb->nsubs; i++)
		if (natsSubscription_GetDropped(nb->subs[i], &d) == NATS_OK)
			n += (uint64_t)d;
	return n;
}

/* --- headers ---------------------------------------------------------------- */

static const struct {
	const char	*name;
	size_t		 off;
} nb_fields[] = {
	{ "Tg-Epoch",	offsetof(struct nbhdr, epoch) },
	{ "Tg-Seq",	offsetof(struct nbhdr, seq) },
	{ "Tg-Ack",	offsetof(struct nbhdr, ack) },
	{ "Tg-Sent",	offsetof(struct nbhdr, sent) },
	{ "Tg-Nack",	offsetof(struct nbhdr, nack) },
};

static int
nb_set_headers(natsMsg *m, const struct nbhdr *h)
{
	char v[32];
	uint64_t x;
	size_t i;

	for (i = 0; i < sizeof(nb_fields) / sizeof(nb_fields[0]); i++) {
		x = *(const uint64_t *)((const char *)h + nb_fields[i].off);
		if (x == 0)
			continue;
		snprintf(v, sizeof(v), "%" PRIu64, x);
		if (natsMsgHeader_Set(m, nb_fields[i].name, v) != NATS_OK)
			return -1;
	}
	if (h->more && natsMsgHeader_Set(m, "Tg-More", "1") != NATS_OK)
		return -1;
	if (h->instance != 0) {
		snprintf(v, sizeof(v), "%" PRId64, h->instance);
		if (natsMsgHeader_Set(m, "Tg-Instance", v) != NATS_OK)
			return -1;
	}
	return 0;
}

static int
nb_parse_u64(const char *s, uint64_t *out)
{
	char *end;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	*out = strtoull(s, &end, 10);
	return errno != 0 || *end != '\0' ? -1 : 0;
}

int
natsbus_headers(natsMsg *m, struct nbhdr *h)
{
	const char *v;
	uint64_t x;
	size_t i;

	memset(h, 0, sizeof(*h));
	for (i = 0; i < sizeof(nb_fields) / sizeof(nb_fields[0]); i++) {
		if (natsMsgHeader_Get(m, nb_fields[i].name, &v) != NATS_OK)
			continue;
		if (nb_parse_u64(v, &x) == -1)
			return -1;
		*(uint64_t *)((char *)h + nb_fields[i].off) = x;
	}
	if (natsMsgHeader_Get(m, "Tg-More", &v) == NATS_OK)
		h->more = 1;
	if (natsMsgHeader_Get(m, "Tg-Instance", &v) == NATS_OK) {
		if (nb_parse_u64(v, &x) == -1 || x > INT64_MAX)
			return -1;
		h->instance = (int64_t)x;
	}
	return 0;
}

int
natsbus_publish(struct natsbus *nb, const char *subject, const char *reply,
    const struct nbhdr *h, const char *data, size_t len)
{
	natsMsg *m = NULL;
	natsStatus s;

	/* a link without a bus (fuzz/fuzz_nlink.c) sends nothing */
	if (nb == NULL || len > INT32_MAX)
		return -1;
	s = natsMsg_Create(&m, subject, reply, data, (int)len);
	if (s == NATS_OK && h != NULL && nb_set_headers(m, h) == -1)
		s = NATS_NO_MEMORY;
	if (s == NATS_OK)
		s = natsConnection_PublishMsg(nb->nc, m);
	natsMsg_Destroy(m);
	if (s != NATS_OK) {
		log_debug("nats: publish on %s: %s", subject,
		    natsStatus_GetText(s));
		return -1;
	}
	return 0;
}

/* --- links ------------------------------------------------------------------ */

/* A frame, or a piece of one, until the other side has it. */
struct nlmsg {
	uint64_t		 seq;
	int			 more;
	size_t			 len;
	TAILQ_ENTRY(nlmsg)	 entry;
	char			 data[];
};

static void
nlink_ack_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct nlink *l = arg;

	if (l->ack_owed)
		nlink_beat(l);
}

void
nlink_init(struct nlink *l, struct natsbus *nb, struct event_base *base,
    const char *subject, const char *beat, uint64_t epoch, size_t max_unacked)
{
	memset(l, 0, sizeof(*l));
	l->nb = nb;
	l->subject = xstrdup(subject);
	l->beat = xstrdup(beat);
	l->epoch = epoch;
	l->max_unacked = max_unacked;
	l->progress = mono_ms();
	TAILQ_INIT(&l->unacked);
	if ((l->ack_timer = evtimer_new(base, nlink_ack_timeout, l)) == NULL)
		fatalx(EXIT_NOMEM, "%s: evtimer_new", __func__);
}

void
nlink_reply(struct nlink *l, const char *first, const char *probe)
{
	free(l->first);
	free(l->probe);
	l->first = first != NULL ? xstrdup(first) : NULL;
	l->probe = probe != NULL ? xstrdup(probe) : NULL;
}

static void
nlink_forget(struct nlink *l, uint64_t upto)
{
	struct nlmsg *m;

	while ((m = TAILQ_FIRST(&l->unacked)) != NULL && m->seq <= upto) {
		TAILQ_REMOVE(&l->unacked, m, entry);
		l->nunacked--;
		l->unacked_bytes -= m->len;
		free(m);
	}
}

void
nlink_clear(struct nlink *l)
{
	if (l->subject == NULL)
		return;
	nlink_forget(l, UINT64_MAX);
	event_free(l->ack_timer);
	free(l->subject);
	free(l->beat);
	free(l->part);
	free(l->first);
	free(l->probe);
	memset(l, 0, sizeof(*l));
}

static void
nlink_header(const struct nlink *l, struct nbhdr *h)
{
	memset(h, 0, sizeof(*h));
	h->epoch = l->epoch;
	h->ack = l->recvd;
	h->instance = l->instance;
}

static void
nlink_publish(struct nlink *l, const struct nlmsg *m)
{
	struct nbhdr h;

	nlink_header(l, &h);
	h.seq = m->seq;
	h.more = m->more;
	/* not sent now (disconnected): it is resent from unacked */
	(void)natsbus_publish(l->nb, m->seq == 1 && l->first != NULL ?
	    l->first : l->subject, NULL, &h, m->data, m->len);
}

int
nlink_send(struct nlink *l, const char *data, size_t len)
{
	size_t max = natsbus_max_payload(l->nb), piece, off = 0;
	size_t npieces;
	struct nlmsg *m;

	/* never connected yet: pieces as small as any server takes */
	piece = max > NB_HEADROOM * 4 ? max - NB_HEADROOM : 64 * 1024;
	npieces = len / piece + 1;
	if (l->nunacked + npieces > l->max_unacked) {
		log_warnx("nats: %s: %zu frames not acknowledged (the bound); "
		    "not sending more", l->subject, l->nunacked);
		return -1;
	}
	if (TAILQ_EMPTY(&l->unacked))
		l->progress = mono_ms();
	do {
		size_t n = len - off < piece ? len - off : piece;

		m = xmalloc(sizeof(*m) + (n > 0 ? n : 1));
		m->seq = ++l->sent;
		m->len = n;
		m->more = off + n < len;
		if (n > 0)
			memcpy(m->data, data + off, n);
		TAILQ_INSERT_TAIL(&l->unacked, m, entry);
		l->nunacked++;
		l->unacked_bytes += n;
		nlink_publish(l, m);
		off += n;
	} while (off < len);
	/* what we had to acknowledge went with it */
	l->ack_owed = 0;
	evtimer_del(l->ack_timer);
	return 0;
}

void
nlink_beat(struct nlink *l)
{
	struct nbhdr h;

	nlink_header(l, &h);
	h.sent = l->sent;
	l->ack_owed = 0;
	evtimer_del(l->ack_timer);
	(void)natsbus_publish(l->nb, l->beat, l->probe, &h, "", 0);
}

static void
nlink_nack(struct nlink *l)
{
	struct nbhdr h;

	nlink_header(l, &h);
	h.nack = l->recvd + 1;
	h.sent = l->sent;
	(void)natsbus_publish(l->nb, l->beat, NULL, &h, "", 0);
}

static void
nlink_owe_ack(struct nlink *l)
{
	struct timeval tv = tv_ms(NB_ACK_DELAY);

	if (!l->ack_owed) {
		l->ack_owed = 1;
		evtimer_add(l->ack_timer, &tv);
	}
}

void
nlink_resend(struct nlink *l, const char *why)
{
	struct nlmsg *m;
	int64_t now = mono_ms();

	if (TAILQ_EMPTY(&l->unacked) || now - l->resent < NB_RESEND_GAP)
		return;
	l->resent = now;
	l->resends++;
	log_info("nats: %s: resending %zu frame(s) after %" PRIu64 " (%s)",
	    l->subject, l->nunacked, l->acked, why);
	TAILQ_FOREACH(m, &l->unacked, entry)
		nlink_publish(l, m);
}

void
nlink_control(struct nlink *l, const struct nbhdr *h)
{
	if (h->ack > l->acked && h->ack <= l->sent) {
		l->acked = h->ack;
		l->progress = mono_ms();
		nlink_forget(l, h->ack);
	}
	if (h->nack > 0 && h->nack <= l->sent && h->nack > l->acked)
		nlink_resend(l, "the other side reports a gap");
	/* a beat says what was sent: we miss the end of it */
	if (h->sent > l->recvd && h->seq == 0)
		nlink_nack(l);
}

void
nlink_input(struct nlink *l, const char *data, size_t len,
    const struct nbhdr *h)
{
	nlink_control(l, h);
	if (h->seq <= l->recvd) {
		/* resent, and we had it: say so again */
		l->dups++;
		nlink_owe_ack(l);
		return;
	}
	if (h->seq != l->recvd + 1) {
		nlink_nack(l);
		return;
	}
	l->recvd = h->seq;
	nlink_owe_ack(l);
	if (h->more || l->part != NULL) {
		if (l->partlen + len > PROTO_MAX_FRAME) {
			free(l->part);
			l->part = NULL;
			l->partlen = l->partcap = 0;
			l->error(l->arg, "frame too long");
			return;
		}
		/* doubling: a peer's many small pieces cost linear time */
		if (l->partlen + len + 1 > l->partcap) {
			l->partcap = l->partcap > 0 ? l->partcap : 4096;
			while (l->partlen + len + 1 > l->partcap)
				l->partcap *= 2;
			l->part = xreallocarray(l->part, l->partcap, 1);
		}
		memcpy(l->part + l->partlen, data, len);
		l->partlen += len;
		if (h->more)
			return;
		data = l->part;
		len = l->partlen;
		l->part = NULL;
		l->partlen = l->partcap = 0;
		l->frame(l->arg, data, len);
		free((char *)data);
		return;
	}
	l->frame(l->arg, data, len);
}

void
nlink_tick(struct nlink *l, int64_t stall)
{
	if (!TAILQ_EMPTY(&l->unacked) && mono_ms() - l->progress >= stall) {
		nlink_resend(l, "no acknowledgement");
		l->progress = mono_ms();
	}
}
