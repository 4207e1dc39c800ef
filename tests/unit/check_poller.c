/*
 * Unit tests of the poller: poller_parse on good and hostile bodies, the
 * back-off sequence, and (when $TG_BUILDDIR/tgrunner-fakeapi exists) the
 * whole poller and http client against the fake Bot API on loopback.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "conf.h"
#include "http.h"
#include "log.h"
#include "poller.h"

#define TOKEN	"123456:TEST-TOKEN"

/* --- poller_parse -------------------------------------------------------- */

struct parsed {
	int	 rc;
	json_t	*arr;
	size_t	 bad;
	int	 code, retry;
	char	 desc[256];
};

static void
parse_len(const char *body, size_t len, struct parsed *p)
{
	memset(p, 0, sizeof(*p));
	p->rc = poller_parse(body, len, &p->arr, &p->bad, &p->code, &p->retry,
	    p->desc, sizeof(p->desc));
}

static void
parse(const char *body, struct parsed *p)
{
	parse_len(body, strlen(body), p);
}

static int64_t
id_at(const struct parsed *p, size_t i)
{
	return json_integer_value(json_object_get(json_array_get(p->arr, i),
	    "update_id"));
}

START_TEST(parse_valid)
{
	struct parsed p;

	parse("{\"ok\":true,\"result\":[{\"update_id\":5,\"message\":{\"chat\":"
	    "{\"id\":1}}},{\"update_id\":6,\"edited_message\":{}}],\"x\":1}", &p);
	ck_assert_int_eq(p.rc, 0);
	ck_assert_uint_eq(json_array_size(p.arr), 2);
	ck_assert_uint_eq(p.bad, 0);
	ck_assert_int_eq(id_at(&p, 0), 5);
	ck_assert_int_eq(id_at(&p, 1), 6);
	json_decref(p.arr);

	parse("{\"ok\":true,\"result\":[]}", &p);
	ck_assert_int_eq(p.rc, 0);
	ck_assert_uint_eq(json_array_size(p.arr), 0);
	json_decref(p.arr);
}
END_TEST

START_TEST(parse_keeps_order)
{
	struct parsed p;

	parse("{\"ok\":true,\"result\":[{\"update_id\":9},{\"update_id\":3},"
	    "{\"update_id\":7}]}", &p);
	ck_assert_int_eq(p.rc, 0);
	ck_assert_int_eq(id_at(&p, 0), 9);
	ck_assert_int_eq(id_at(&p, 1), 3);
	ck_assert_int_eq(id_at(&p, 2), 7);
	json_decref(p.arr);
}
END_TEST

START_TEST(parse_errors)
{
	struct parsed p;

	parse("{\"ok\":false,\"error_code\":401,\"description\":\"Unauthorized\"}",
	    &p);
	ck_assert_int_eq(p.rc, 1);
	ck_assert_int_eq(p.code, 401);
	ck_assert_str_eq(p.desc, "Unauthorized");
	ck_assert_ptr_null(p.arr);

	parse("{\"ok\":false,\"error_code\":409,\"description\":\"Conflict: "
	    "terminated by other getUpdates request\"}", &p);
	ck_assert_int_eq(p.rc, 1);
	ck_assert_int_eq(p.code, 409);
	ck_assert_ptr_nonnull(strstr(p.desc, "terminated by other"));
	ck_assert_int_eq(p.retry, 0);

	parse("{\"ok\":false,\"error_code\":429,\"description\":\"Too Many "
	    "Requests: retry after 7\",\"parameters\":{\"retry_after\":7}}", &p);
	ck_assert_int_eq(p.rc, 1);
	ck_assert_int_eq(p.code, 429);
	ck_assert_int_eq(p.retry, 7);

	/* an error without error_code is not a Bot API error */
	parse("{\"ok\":false,\"description\":\"x\"}", &p);
	ck_assert_int_eq(p.rc, -1);
}
END_TEST

START_TEST(parse_truncated)
{
	static const char full[] = "{\"ok\":true,\"result\":[{\"update_id\":5,"
	    "\"message\":{\"text\":\"hello\"}}]}";
	struct parsed p;
	size_t n;

	for (n = 0; n < sizeof(full) - 1; n++) {
		parse_len(full, n, &p);
		ck_assert_msg(p.rc == -1, "prefix of %zu bytes accepted", n);
		ck_assert_ptr_null(p.arr);
		ck_assert(p.desc[0] != '\0');
	}
	parse_len(full, sizeof(full) - 1, &p);
	ck_assert_int_eq(p.rc, 0);
	json_decref(p.arr);
}
END_TEST

START_TEST(parse_not_json)
{
	static const char *bodies[] = {
		"<html><body><h1>502 Bad Gateway</h1></body></html>",
		"", " ", "{\"ok\":tru", "null", "ok",
	};
	struct parsed p;
	size_t i;

	for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		parse(bodies[i], &p);
		ck_assert_msg(p.rc == -1, "accepted: %s", bodies[i]);
	}
}
END_TEST

START_TEST(parse_wrong_shapes)
{
	static const char *bodies[] = {
		"[]", "42", "\"ok\"", "{}",
		"{\"ok\":\"true\",\"result\":[]}",
		"{\"ok\":1,\"result\":[]}",
		"{\"ok\":true}",
		"{\"ok\":true,\"result\":{}}",
		"{\"ok\":true,\"result\":true}",
		"{\"ok\":true,\"result\":null}",
		"{\"ok\":false,\"error_code\":\"429\"}",
	};
	struct parsed p;
	size_t i;

	for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		parse(bodies[i], &p);
		ck_assert_msg(p.rc == -1, "accepted: %s", bodies[i]);
		ck_assert_ptr_null(p.arr);
	}
}
END_TEST

START_TEST(parse_bad_elements)
{
	struct parsed p;

	parse("{\"ok\":true,\"result\":[1,\"x\",null,[],{\"update_id\":\"5\"},"
	    "{\"update_id\":5.0},{\"message\":{}},{\"update_id\":7},"
	    "{\"update_id\":-3},{\"update_id\":true},{\"update_id\":8}]}", &p);
	ck_assert_int_eq(p.rc, 0);
	ck_assert_uint_eq(json_array_size(p.arr), 2);
	ck_assert_uint_eq(p.bad, 9);
	ck_assert_int_eq(id_at(&p, 0), 7);
	ck_assert_int_eq(id_at(&p, 1), 8);
	json_decref(p.arr);
}
END_TEST

START_TEST(parse_huge_ids)
{
	struct parsed p;

	/* in range, but id + 1 (the next offset) would overflow */
	parse("{\"ok\":true,\"result\":[{\"update_id\":9223372036854775807},"
	    "{\"update_id\":9223372036854775806}]}", &p);
	ck_assert_int_eq(p.rc, 0);
	ck_assert_uint_eq(p.bad, 1);
	ck_assert_int_eq(id_at(&p, 0), INT64_MAX - 1);
	json_decref(p.arr);

	/* beyond int64: jansson rejects the whole document */
	parse("{\"ok\":true,\"result\":[{\"update_id\":9223372036854775808}]}",
	    &p);
	ck_assert_int_eq(p.rc, -1);
	parse("{\"ok\":true,\"result\":[{\"update_id\":1e400}]}", &p);
	ck_assert_int_eq(p.rc, -1);
	parse("{\"ok\":true,\"result\":[{\"update_id\":1e3}]}", &p);
	ck_assert_int_eq(p.rc, 0);
	ck_assert_uint_eq(p.bad, 1);
	json_decref(p.arr);
}
END_TEST

START_TEST(parse_nul)
{
	static const char a[] = "{\"ok\":true,\"result\":[]}";
	static const char b[] = "{\"ok\":true,\0\"result\":[]}";
	static const char c[] = "{\"ok\":true,\"result\":[{\"update_id\":1,"
	    "\"t\":\"a\\u0000b\"}]}";
	struct parsed p;

	parse_len(a, sizeof(a), &p);		/* trailing NUL counted */
	ck_assert_int_eq(p.rc, -1);
	parse_len(b, sizeof(b) - 1, &p);
	ck_assert_int_eq(p.rc, -1);
	/* an escaped NUL inside a string is not valid for jansson either */
	parse(c, &p);
	ck_assert_int_eq(p.rc, -1);
}
END_TEST

static char *
many_updates(size_t n)
{
	size_t i, cap = 64 + n * 24, o;
	char *s = malloc(cap);

	ck_assert_ptr_nonnull(s);
	o = (size_t)snprintf(s, cap, "{\"ok\":true,\"result\":[");
	for (i = 0; i < n; i++)
		o += (size_t)snprintf(s + o, cap - o, "%s{\"update_id\":%zu}",
		    i ? "," : "", i + 1);
	snprintf(s + o, cap - o, "]}");
	return s;
}

START_TEST(parse_bound)
{
	struct parsed p;
	char *s;

	s = many_updates(1000);
	parse(s, &p);
	ck_assert_int_eq(p.rc, 0);
	ck_assert_uint_eq(json_array_size(p.arr), 1000);
	json_decref(p.arr);
	free(s);
	s = many_updates(1001);
	parse(s, &p);
	ck_assert_int_eq(p.rc, -1);
	free(s);
}
END_TEST

/* --- back-off ------------------------------------------------------------ */

/*
 * Slices must be exactly the elements jansson parsed: each one parses to
 * an equal value.  Returns the slice count.
 */
static int
slices_match(const char *body)
{
	struct poller_slice sl[16];
	json_t *arr = NULL, *u, *v;
	size_t bad, i;
	int code, retry, n;
	char desc[256];

	ck_assert_int_eq(poller_parse(body, strlen(body), &arr, &bad, &code,
	    &retry, desc, sizeof(desc)), 0);
	n = poller_slices(body, strlen(body), sl, 16);
	if (n >= 0) {
		ck_assert_uint_eq((size_t)n, json_array_size(arr));
		json_array_foreach(arr, i, u) {
			v = json_loadb(body + sl[i].off, sl[i].len, 0, NULL);
			ck_assert_ptr_nonnull(v);
			ck_assert(json_equal(u, v));
			json_decref(v);
		}
	}
	json_decref(arr);
	return n;
}

START_TEST(slices_exact_bytes)
{
	const char *body = "{\"ok\":true,\"result\":[{\"update_id\":1,"
	    "\"message\":{\"text\":\"a]}\\\",{\\\\\",\"n\":[1,{\"x\":null}],"
	    "\"f\":1.10}},{\"update_id\":2}]}";
	struct poller_slice sl[4];

	ck_assert_int_eq(slices_match(body), 2);
	ck_assert_int_eq(poller_slices(body, strlen(body), sl, 4), 2);
	/* the bytes as sent: 1.10 is not respelled */
	ck_assert(memmem(body + sl[0].off, sl[0].len, "1.10}", 5) != NULL);
	ck_assert_int_eq(body[sl[0].off], '{');
	ck_assert_int_eq(body[sl[1].off + sl[1].len - 1], '}');
	ck_assert_int_eq(slices_match("{\"ok\":true,\"result\":[]}"), 0);
}
END_TEST

START_TEST(slices_whitespace_and_order)
{
	/* pretty-printed; result first; other members after */
	ck_assert_int_eq(slices_match("  {\n \"result\" : [ {\"update_id\" : 5}"
	    " ,\n\t{ \"update_id\":6 } ] ,\n \"ok\" : true , \"x\":[[]] }\n"),
	    2);
	/* two "result" members: jansson keeps the last, so do the slices */
	ck_assert_int_eq(slices_match("{\"ok\":true,\"result\":[{\"update_id\""
	    ":1}],\"result\":[{\"update_id\":7},{\"update_id\":8}]}"), 2);
}
END_TEST

START_TEST(slices_give_up)
{
	struct poller_slice sl[2];
	const char *esc = "{\"ok\":true,\"res\\u0075lt\":[{\"update_id\":1}]}";
	const char *three = "{\"ok\":true,\"result\":[{\"update_id\":1},"
	    "{\"update_id\":2},{\"update_id\":3}]}";
	char deep[2048];
	size_t i, o = 0;

	/* an escaped member name is still "result" */
	ck_assert_int_eq(slices_match(esc), 1);
	/* more elements than room */
	ck_assert_int_eq(poller_slices(three, strlen(three), sl, 2), -1);
	ck_assert_int_eq(poller_slices("[]", 2, sl, 2), -1);
	ck_assert_int_eq(poller_slices("{\"result\":{}}", 13, sl, 2), -1);
	/* nesting deeper than jscan checks is still sliced right */
	o += (size_t)snprintf(deep, sizeof(deep),
	    "{\"ok\":true,\"result\":[{\"update_id\":1,\"a\":");
	for (i = 0; i < 300; i++)
		deep[o++] = '[';
	for (i = 0; i < 300; i++)
		deep[o++] = ']';
	snprintf(deep + o, sizeof(deep) - o, "}]}");
	ck_assert_int_eq(slices_match(deep), 1);
}
END_TEST

START_TEST(backoff_bounds)
{
	static const double rs[] = { 0.0, 0.25, 0.5, 0.999999 };
	int64_t min = 100, max = 30000, cap, d, prev_cap = 0;
	int a;
	size_t i;

	for (a = 1; a <= 64; a++) {
		cap = min;
		for (i = 1; i < (size_t)a && cap < max; i++)
			cap = cap * 2 > max ? max : cap * 2;
		ck_assert(cap >= prev_cap);
		prev_cap = cap;
		for (i = 0; i < sizeof(rs) / sizeof(rs[0]); i++) {
			d = poller_backoff_ms(a, min, max, rs[i]);
			ck_assert_msg(d >= min && d <= cap,
			    "attempt %d r %g: %" PRId64 " not in [%" PRId64
			    ", %" PRId64 "]", a, rs[i], d, min, cap);
			ck_assert(d >= cap / 2);
		}
	}
	ck_assert_int_eq(poller_backoff_ms(1, 100, 30000, 0.0), 100);
	ck_assert_int_eq(poller_backoff_ms(1, 100, 30000, 0.99), 100);
	ck_assert_int_eq(poller_backoff_ms(2, 100, 30000, 0.0), 100);
	ck_assert_int_eq(poller_backoff_ms(2, 100, 30000, 0.5), 150);
	ck_assert_int_eq(poller_backoff_ms(4, 100, 30000, 0.0), 400);
	ck_assert_int_eq(poller_backoff_ms(20, 100, 30000, 0.0), 15000);
	ck_assert_int_eq(poller_backoff_ms(20, 100, 30000, 0.999999), 29999);
}
END_TEST

START_TEST(backoff_edges)
{
	/* no overflow however long the streak */
	ck_assert_int_eq(poller_backoff_ms(1000000, 1, INT64_MAX, 0.0),
	    INT64_MAX / 2);
	ck_assert(poller_backoff_ms(INT32_MAX, 100, 30000, 0.7) <= 30000);
	/* min above max: min wins; nonsense rand is clamped */
	ck_assert_int_eq(poller_backoff_ms(5, 500, 100, 0.3), 500);
	ck_assert_int_eq(poller_backoff_ms(0, 100, 1000, 0.0), 100);
	ck_assert_int_eq(poller_backoff_ms(3, 100, 1000, -1.0), 200);
	ck_assert_int_eq(poller_backoff_ms(3, 100, 1000, 7.0), 200);
	ck_assert(poller_backoff_ms(1, 0, 0, 0.0) >= 1);
}
END_TEST

START_TEST(state_names)
{
	int s, t;

	for (s = POLL_IDLE; s <= POLL_SYNCING; s++) {
		ck_assert_ptr_nonnull(poller_state_str(s));
		for (t = POLL_IDLE; t < s; t++)
			ck_assert_str_ne(poller_state_str(s), poller_state_str(t));
	}
}
END_TEST

/* --- end to end against the fake Bot API --------------------------------- */

struct fake {
	pid_t	 pid;
	int	 port;
	char	 dir[64];
	char	 url[64];
};

static int
fake_path(char *buf, size_t len)
{
	const char *bd = getenv("TG_BUILDDIR");

	if (bd == NULL)
		return -1;
	snprintf(buf, len, "%s/tgrunner-fakeapi", bd);
	return access(buf, X_OK);
}

static int
fake_read_port(const char *path)
{
	FILE *fp;
	int port = 0;

	if ((fp = fopen(path, "r")) == NULL)
		return 0;
	if (fscanf(fp, "%d", &port) != 1)
		port = 0;
	fclose(fp);
	return port;
}

static void
fake_start(struct fake *f, const char *bin)
{
	char portfile[128];
	struct timespec ts = { 0, 10 * 1000 * 1000 };
	int i, fd;

	memset(f, 0, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/check_poller.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(f->dir));
	snprintf(portfile, sizeof(portfile), "%s/port", f->dir);
	f->pid = fork();
	ck_assert_int_ne(f->pid, -1);
	if (f->pid == 0) {
		if ((fd = open("/dev/null", O_WRONLY)) != -1)
			dup2(fd, 1);
		execl(bin, bin, "-l", "127.0.0.1:0", "-p", portfile,
		    (char *)NULL);
		_exit(127);
	}
	/* the port file appears atomically once the fake listens */
	for (i = 0; i < 1000 && f->port == 0; i++) {
		if ((f->port = fake_read_port(portfile)) == 0)
			nanosleep(&ts, NULL);
	}
	ck_assert_msg(f->port > 0, "fake API did not start");
	snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d", f->port);
}

static void
fake_stop(struct fake *f)
{
	char path[128];
	int st;

	if (f->pid > 0) {
		kill(f->pid, SIGTERM);
		waitpid(f->pid, &st, 0);
	}
	snprintf(path, sizeof(path), "%s/port", f->dir);
	unlink(path);
	rmdir(f->dir);
}

/* A tiny blocking HTTP/1.0 client for the control interface. */
static json_t *
fake_ctl(const struct fake *f, const char *method, const char *path,
    const char *body)
{
	struct sockaddr_in sin;
	char req[1024], *resp = NULL, *p;
	size_t len = 0, cap = 0;
	ssize_t n;
	json_t *j;
	int s;

	s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ne(s, -1);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)f->port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(connect(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
	if (body == NULL)
		body = "";
	snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n"
	    "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
	    method, path, strlen(body), body);
	ck_assert_int_eq(write(s, req, strlen(req)), (ssize_t)strlen(req));
	for (;;) {
		if (len + 4096 > cap) {
			cap = cap ? cap * 2 : 8192;
			ck_assert_ptr_nonnull(resp = realloc(resp, cap));
		}
		if ((n = read(s, resp + len, cap - len - 1)) <= 0)
			break;
		len += (size_t)n;
	}
	close(s);
	ck_assert_ptr_nonnull(resp);
	resp[len] = '\0';
	p = strstr(resp, "\r\n\r\n");
	ck_assert_msg(p != NULL, "no HTTP response from the fake");
	j = json_loads(p + 4, 0, NULL);
	ck_assert_msg(j != NULL, "fake answered %s %s with: %.200s", method,
	    path, resp);
	free(resp);
	return j;
}

static int64_t
fake_stat(const struct fake *f, const char *name)
{
	json_t *j = fake_ctl(f, "GET", "/_ctl/stats", NULL);
	int64_t v = json_integer_value(json_object_get(j, name));

	json_decref(j);
	return v;
}

static void
fake_post(const struct fake *f, const char *path, const char *body,
    int64_t *first, int64_t *last)
{
	json_t *j = fake_ctl(f, "POST", path, body);

	ck_assert_msg(json_is_true(json_object_get(j, "ok")), "%s failed", path);
	if (first != NULL)
		*first = json_integer_value(json_object_get(j, "first_id"));
	if (last != NULL)
		*last = json_integer_value(json_object_get(j, "last_id"));
	json_decref(j);
}

/* What the fake "daemon" around the poller sees. */
struct rec {
	struct event_base *base;
	struct poller	*poller;
	const struct fake *fake;
	int64_t		 ids[4096];
	size_t		 n;
	size_t		 room;
	size_t		 maxbatch;
	int		 ready;
	int		 fatal;
	int		 fail_next_batch;
	int		 async_batches;	/* answer 1: not durable yet */
	struct timespec	 polls[512];	/* when each request was about to go */
	uint64_t	 errs[512];	/* poller errors counted by then */
	size_t		 npolls;
	int		(*until)(struct rec *);
};

static size_t
rec_room(void *arg)
{
	struct rec *r = arg;

	if (r->npolls < sizeof(r->polls) / sizeof(r->polls[0])) {
		r->errs[r->npolls] = poller_stats(r->poller)->errors;
		clock_gettime(CLOCK_MONOTONIC, &r->polls[r->npolls++]);
	}
	return r->room;
}

static int
rec_batch(void *arg, const int64_t *ids, const char *const *jsons,
    const size_t *lens, size_t n)
{
	struct rec *r = arg;
	size_t i;

	if (r->fail_next_batch) {
		r->fail_next_batch = 0;
		return -1;
	}
	if (n > r->maxbatch)
		r->maxbatch = n;
	for (i = 0; i < n && r->n < sizeof(r->ids) / sizeof(r->ids[0]); i++) {
		ck_assert_ptr_nonnull(memmem(jsons[i], lens[i],
		    "\"update_id\":", 12));
		ck_assert_ptr_null(memchr(jsons[i], '\n', lens[i]));
		r->ids[r->n++] = ids[i];
	}
	return r->async_batches ? 1 : 0;
}

static void
rec_ready(void *arg, json_t *bot)
{
	struct rec *r = arg;

	ck_assert(json_is_object(bot));
	ck_assert_int_eq(json_integer_value(json_object_get(bot, "id")), 123456);
	r->ready = 1;
}

static void
rec_fatal(void *arg, int status, const char *why)
{
	struct rec *r = arg;

	r->fatal = status;
	ck_assert_ptr_nonnull(strstr(why, "401"));
}

static const struct poller_ops rec_ops = {
	.room = rec_room,
	.batch = rec_batch,
	.ready = rec_ready,
	.fatal = rec_fatal,
};

static void
rec_check(evutil_socket_t fd, short what, void *arg)
{
	struct rec *r = arg;

	if (r->until(r))
		event_base_loopbreak(r->base);
}

/* Run the loop until r->until holds (checked every 5 ms) or ms pass. */
static int
rec_run(struct rec *r, int (*until)(struct rec *), int ms)
{
	struct timeval iv = { 0, 5000 }, tv;
	struct event *ev;
	struct timespec t0;

	r->until = until;
	if (until(r))
		return 1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ev = event_new(r->base, -1, EV_PERSIST, rec_check, r);
	event_add(ev, &iv);
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	event_base_loopexit(r->base, &tv);
	event_base_dispatch(r->base);
	event_free(ev);
	return until(r);
}

static int64_t want_n;
static int64_t want_offset;
static uint64_t want_errs;

static int
until_n(struct rec *r)
{
	return (int64_t)r->n >= want_n;
}

static int
until_confirmed(struct rec *r)
{
	return fake_stat(r->fake, "confirmed_offset") >= want_offset;
}

static int
until_errors(struct rec *r)
{
	return poller_stats(r->poller)->errors >= want_errs;
}

static int
until_fatal(struct rec *r)
{
	return r->fatal != 0;
}

static int
until_never(struct rec *r)
{
	return 0;
}

static void
conf_for_test(struct conf *c, const struct fake *f)
{
	memset(c, 0, sizeof(*c));
	c->api_url = (char *)f->url;
	c->poll_timeout = 1000;
	c->backoff_min = 50;
	c->backoff_max = 1000;
	c->delete_webhook = 1;
}

struct e2e {
	struct fake	 fake;
	struct conf	 conf;
	struct http	*http;
	struct rec	 rec;
};

static int
e2e_setup(struct e2e *e, const char *token)
{
	struct event_config *cfg;
	char bin[512];

	if (fake_path(bin, sizeof(bin)) == -1) {
		fprintf(stderr, "check_poller: SKIP end-to-end test: no "
		    "$TG_BUILDDIR/tgrunner-fakeapi\n");
		return -1;
	}
	memset(e, 0, sizeof(*e));
	fake_start(&e->fake, bin);
	conf_for_test(&e->conf, &e->fake);
	/* libevent's default coarse clock may fire timers a few ms early */
	cfg = event_config_new();
	event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	e->rec.base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	ck_assert_ptr_nonnull(e->rec.base);
	e->rec.fake = &e->fake;
	e->rec.room = 50;
	e->http = http_new(e->rec.base, 4);
	ck_assert_ptr_nonnull(e->http);
	e->rec.poller = poller_new(e->rec.base, e->http, &e->conf, token,
	    &rec_ops, &e->rec);
	ck_assert_ptr_nonnull(e->rec.poller);
	return 0;
}

static void
e2e_teardown(struct e2e *e)
{
	poller_free(e->rec.poller);
	http_free(e->http);
	event_base_free(e->rec.base);
	fake_stop(&e->fake);
}

static void
assert_sequence(const struct rec *r, int64_t first, int64_t last)
{
	size_t i;

	ck_assert_int_eq((int64_t)r->n, last - first + 1);
	for (i = 0; i < r->n; i++)
		ck_assert_msg(r->ids[i] == first + (int64_t)i,
		    "update %zu is %" PRId64 ", expected %" PRId64, i,
		    r->ids[i], first + (int64_t)i);
}

START_TEST(e2e_in_order)
{
	struct e2e e;
	int64_t first, last;

	if (e2e_setup(&e, TOKEN) == -1)
		return;
	poller_start(e.rec.poller, 0);
	fake_post(&e.fake, "/_ctl/generate", "{\"count\":250,\"chats\":10}",
	    &first, &last);
	want_n = 250;
	ck_assert(rec_run(&e.rec, until_n, 20000));
	ck_assert(e.rec.ready);
	assert_sequence(&e.rec, first, last);
	ck_assert_uint_le(e.rec.maxbatch, 50);
	want_offset = last + 1;
	ck_assert(rec_run(&e.rec, until_confirmed, 10000));
	ck_assert_int_eq(poller_offset(e.rec.poller), last + 1);
	ck_assert_int_eq(fake_stat(&e.fake, "served"), 250);
	ck_assert(poller_last_ok(e.rec.poller) > 0);
	ck_assert_uint_eq(poller_stats(e.rec.poller)->errors, 0);
	ck_assert_uint_eq(poller_stats(e.rec.poller)->updates, 250);
	e2e_teardown(&e);
}
END_TEST

/* Gap in ms between request i-1 and i as seen by ops->room. */
static int64_t
poll_gap(const struct rec *r, size_t i)
{
	return (int64_t)(r->polls[i].tv_sec - r->polls[i - 1].tv_sec) * 1000 +
	    (r->polls[i].tv_nsec - r->polls[i - 1].tv_nsec) / 1000000;
}

/*
 * Every request from poll number from on that follows a failed one waited at
 * least min_ms; returns how many such retries there were.
 */
static int
check_retry_gaps(const struct rec *r, size_t from, int64_t min_ms)
{
	size_t i;
	int n = 0;

	/* request from-1 may have been sent, not answered, before a fault */
	for (i = from > 0 ? from : 1; i < r->npolls; i++) {
		if (r->errs[i] == r->errs[i - 1])
			continue;
		n++;
		ck_assert_msg(poll_gap(r, i) >= min_ms, "retry %zu after %"
		    PRId64 " ms (min %" PRId64 ")", i, poll_gap(r, i), min_ms);
	}
	return n;
}

/* Make the held poll return (one update), so the next one meets the fault. */
static void
inject(struct e2e *e, const char *fault, int64_t *expect)
{
	int64_t first, last;

	fake_post(&e->fake, "/_ctl/fault", fault, NULL, NULL);
	fake_post(&e->fake, "/_ctl/generate", "{\"count\":3,\"chats\":2}",
	    &first, &last);
	*expect = last;
}

static void
recover(struct e2e *e, uint64_t errs_before, uint64_t errs, int64_t last)
{
	int64_t first, l2;

	want_errs = errs_before + errs;
	ck_assert_msg(rec_run(&e->rec, until_errors, 10000),
	    "fault not seen");
	fake_post(&e->fake, "/_ctl/generate", "{\"count\":5,\"chats\":2}",
	    &first, &l2);
	ck_assert_int_eq(first, last + 1);
	want_n = (int64_t)e->rec.n + (l2 - last);
	ck_assert_msg(rec_run(&e->rec, until_n, 10000), "no recovery");
	ck_assert_int_eq(e->rec.ids[e->rec.n - 1], l2);
}

START_TEST(e2e_faults)
{
	const struct poller_stats *st;
	struct e2e e;
	int64_t first, last, polls0, polls1;
	size_t i, np;

	if (e2e_setup(&e, TOKEN) == -1)
		return;
	st = poller_stats(e.rec.poller);
	poller_start(e.rec.poller, 0);
	fake_post(&e.fake, "/_ctl/generate", "{\"count\":10,\"chats\":3}",
	    &first, &last);
	want_n = 10;
	ck_assert(rec_run(&e.rec, until_n, 10000));

	/* three 502 with an HTML body, then fine again */
	inject(&e, "{\"kind\":\"5xx\",\"count\":3}", &last);
	np = e.rec.npolls;
	recover(&e, 0, 3, last);
	ck_assert_uint_eq(st->err_http5xx, 3);
	ck_assert_int_eq(check_retry_gaps(&e.rec, np, 50), 3);

	/* 429: retry_after is obeyed */
	inject(&e, "{\"kind\":\"429\",\"retry_after\":1}", &last);
	np = e.rec.npolls;
	recover(&e, st->errors, 1, last);
	ck_assert_uint_eq(st->err_429, 1);
	ck_assert_int_eq(check_retry_gaps(&e.rec, np, 990), 1);

	np = e.rec.npolls;
	inject(&e, "{\"kind\":\"malformed\"}", &last);
	recover(&e, st->errors, 1, last);
	ck_assert_uint_eq(st->err_malformed, 1);
	inject(&e, "{\"kind\":\"truncated\"}", &last);
	recover(&e, st->errors, 1, last);
	/*
	 * curl silently retries a request once when a reused keep-alive
	 * connection dies before any answer: reset twice to see an error.
	 */
	inject(&e, "{\"kind\":\"reset\",\"count\":2}", &last);
	recover(&e, st->errors, 1, last);
	ck_assert_uint_ge(st->err_transport, 1);
	ck_assert_uint_eq(st->errors, st->err_http5xx + st->err_429 +
	    st->err_malformed + st->err_transport);
	ck_assert_int_ge(check_retry_gaps(&e.rec, np, 50), 3);

	/* the journal refuses a batch: the same updates come again */
	e.rec.fail_next_batch = 1;
	fake_post(&e.fake, "/_ctl/generate", "{\"count\":4,\"chats\":2}",
	    &first, &last);
	want_n = (int64_t)e.rec.n + 4;
	ck_assert(rec_run(&e.rec, until_n, 10000));
	ck_assert_int_eq(e.rec.ids[e.rec.n - 1], last);

	/* a failure streak: requests are spaced by the back-off */
	fake_post(&e.fake, "/_ctl/fault", "{\"kind\":\"5xx\",\"count\":-1}",
	    NULL, NULL);
	fake_post(&e.fake, "/_ctl/generate", "{\"count\":1,\"chats\":1}", NULL,
	    &last);
	want_errs = st->errors + 1;
	ck_assert(rec_run(&e.rec, until_errors, 10000));
	polls0 = fake_stat(&e.fake, "polls");
	rec_run(&e.rec, until_never, 700);
	polls1 = fake_stat(&e.fake, "polls");
	/* at 0, >=50, >=100, >=200, >=400 ms: five at most in 700 ms */
	ck_assert_msg(polls1 - polls0 <= 6 && polls1 - polls0 >= 2,
	    "%" PRId64 " polls in 700 ms of failures", polls1 - polls0);
	fake_post(&e.fake, "/_ctl/fault/clear", "{}", NULL, NULL);
	recover(&e, st->errors, 0, last);

	/* exactly once, in order, across every fault */
	for (i = 1; i < e.rec.n; i++)
		ck_assert_int_eq(e.rec.ids[i], e.rec.ids[i - 1] + 1);
	e2e_teardown(&e);
}
END_TEST

START_TEST(e2e_bad_token)
{
	struct e2e e;

	if (e2e_setup(&e, "123456:WRONG-TOKEN") == -1)
		return;
	poller_start(e.rec.poller, 0);
	ck_assert(rec_run(&e.rec, until_fatal, 10000));
	ck_assert_int_eq(e.rec.fatal, EXIT_BADTOKEN);
	ck_assert_int_eq(poller_state(e.rec.poller), POLL_STOPPED);
	ck_assert(!e.rec.ready);
	/* no retry loop after a fatal answer */
	ck_assert_uint_eq(http_running(e.http), 0);
	e2e_teardown(&e);
}
END_TEST

/* A batch accepted but not durable: nothing is confirmed until it is. */
START_TEST(e2e_syncing)
{
	struct e2e e;
	int64_t first, last;
	uint64_t polls;

	if (e2e_setup(&e, TOKEN) == -1)
		return;
	e.rec.async_batches = 1;
	e.rec.room = 3;
	poller_start(e.rec.poller, 0);
	fake_post(&e.fake, "/_ctl/generate", "{\"count\":7,\"chats\":2}",
	    &first, &last);
	want_n = 3;
	ck_assert(rec_run(&e.rec, until_n, 10000));
	rec_run(&e.rec, until_never, 200);
	/* one batch in, the confirming getUpdates held back */
	ck_assert_uint_eq(e.rec.n, 3);
	ck_assert_int_eq(poller_state(e.rec.poller), POLL_SYNCING);
	ck_assert_str_eq(poller_state_str(POLL_SYNCING), "syncing");
	ck_assert_uint_eq(http_running(e.http), 0);
	ck_assert_int_eq(poller_offset(e.rec.poller), first + 3);
	polls = poller_stats(e.rec.poller)->polls;
	/* durable: the next poll confirms it and fetches on */
	e.rec.async_batches = 0;
	poller_durable(e.rec.poller);
	want_n = 7;
	ck_assert(rec_run(&e.rec, until_n, 10000));
	assert_sequence(&e.rec, first, last);
	ck_assert_uint_gt(poller_stats(e.rec.poller)->polls, polls);
	e2e_teardown(&e);
}
END_TEST

START_TEST(e2e_full_and_pause)
{
	struct e2e e;
	int64_t first, last;

	if (e2e_setup(&e, TOKEN) == -1)
		return;
	e.rec.room = 0;
	poller_start(e.rec.poller, 0);
	fake_post(&e.fake, "/_ctl/generate", "{\"count\":7,\"chats\":2}",
	    &first, &last);
	rec_run(&e.rec, until_never, 300);
	ck_assert_int_eq(poller_state(e.rec.poller), POLL_FULL);
	ck_assert_uint_eq(e.rec.n, 0);
	ck_assert_uint_eq(http_running(e.http), 0);
	e.rec.room = 3;
	poller_kick(e.rec.poller);
	want_n = 7;
	ck_assert(rec_run(&e.rec, until_n, 10000));
	assert_sequence(&e.rec, first, last);
	ck_assert_uint_le(e.rec.maxbatch, 3);

	poller_pause(e.rec.poller);
	ck_assert_int_eq(poller_state(e.rec.poller), POLL_PAUSED);
	ck_assert_uint_eq(http_running(e.http), 0);
	fake_post(&e.fake, "/_ctl/generate", "{\"count\":2,\"chats\":2}",
	    NULL, &last);
	rec_run(&e.rec, until_never, 100);
	ck_assert_uint_eq(e.rec.n, 7);
	poller_resume(e.rec.poller);
	want_n = 9;
	ck_assert(rec_run(&e.rec, until_n, 10000));
	ck_assert_int_eq(e.rec.ids[8], last);
	e2e_teardown(&e);
}
END_TEST

static int
until_409s(struct rec *r)
{
	return poller_stats(r->poller)->err_409 >= 2;
}

START_TEST(e2e_webhook)
{
	struct e2e e;
	int64_t first, last;

	if (e2e_setup(&e, TOKEN) == -1)
		return;
	fake_post(&e.fake, "/bot" TOKEN "/setWebhook",
	    "{\"url\":\"https://example.invalid/hook\"}", NULL, NULL);
	/* without delete_webhook: 409, backed off and retried */
	e.conf.delete_webhook = 0;
	poller_start(e.rec.poller, 0);
	ck_assert(rec_run(&e.rec, until_409s, 10000));
	ck_assert(e.rec.ready);
	ck_assert_uint_eq(e.rec.n, 0);
	ck_assert_int_ge(check_retry_gaps(&e.rec, 0, 50), 1);
	poller_pause(e.rec.poller);

	/* with it, the webhook goes and polling works */
	e.conf.delete_webhook = 1;
	fake_post(&e.fake, "/_ctl/generate", "{\"count\":3,\"chats\":2}",
	    &first, &last);
	poller_start(e.rec.poller, 0);
	want_n = 3;
	ck_assert(rec_run(&e.rec, until_n, 10000));
	assert_sequence(&e.rec, first, last);
	e2e_teardown(&e);
}
END_TEST

/* --- http: callbacks may free everything --------------------------------- */

struct hfree {
	struct http	*http;
	int		 calls;
	long		 status;
};

static void
hfree_cb(void *arg, const struct http_response *r)
{
	struct hfree *h = arg;

	h->calls++;
	h->status = r->status;
	http_free(h->http);	/* with another request still running */
}

static void
never_cb(void *arg, const struct http_response *r)
{
	ck_abort_msg("callback of a freed http ran");
}

START_TEST(e2e_http_free_in_callback)
{
	struct e2e e;
	struct hfree hf;
	char url[256];
	struct http_req *r1, *r2;

	if (e2e_setup(&e, TOKEN) == -1)
		return;
	memset(&hf, 0, sizeof(hf));
	hf.http = http_new(e.rec.base, 2);
	snprintf(url, sizeof(url), "%s/bot%s/getMe", e.fake.url, TOKEN);
	r1 = http_post(hf.http, url, "application/json", "{}", 2, 5000,
	    hfree_cb, &hf);
	snprintf(url, sizeof(url), "%s/bot%s/getUpdates", e.fake.url, TOKEN);
	r2 = http_post(hf.http, url, "application/json", "{\"timeout\":5}",
	    13, 10000, never_cb, NULL);
	ck_assert_ptr_nonnull(r1);
	ck_assert_ptr_nonnull(r2);
	ck_assert_int_eq(hf.calls, 0);	/* never from inside http_post */
	rec_run(&e.rec, until_never, 500);
	ck_assert_int_eq(hf.calls, 1);
	ck_assert_int_eq(hf.status, 200);
	e2e_teardown(&e);
}
END_TEST

static Suite *
poller_suite(void)
{
	Suite *s = suite_create("poller");
	TCase *tc;

	tc = tcase_create("parse");
	tcase_add_test(tc, parse_valid);
	tcase_add_test(tc, parse_keeps_order);
	tcase_add_test(tc, parse_errors);
	tcase_add_test(tc, parse_truncated);
	tcase_add_test(tc, parse_not_json);
	tcase_add_test(tc, parse_wrong_shapes);
	tcase_add_test(tc, parse_bad_elements);
	tcase_add_test(tc, parse_huge_ids);
	tcase_add_test(tc, parse_nul);
	tcase_add_test(tc, parse_bound);
	tcase_add_test(tc, slices_exact_bytes);
	tcase_add_test(tc, slices_whitespace_and_order);
	tcase_add_test(tc, slices_give_up);
	suite_add_tcase(s, tc);

	tc = tcase_create("backoff");
	tcase_add_test(tc, backoff_bounds);
	tcase_add_test(tc, backoff_edges);
	tcase_add_test(tc, state_names);
	suite_add_tcase(s, tc);

	tc = tcase_create("fakeapi");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, e2e_in_order);
	tcase_add_test(tc, e2e_faults);
	tcase_add_test(tc, e2e_bad_token);
	tcase_add_test(tc, e2e_full_and_pause);
	tcase_add_test(tc, e2e_syncing);
	tcase_add_test(tc, e2e_webhook);
	tcase_add_test(tc, e2e_http_free_in_callback);
	suite_add_tcase(s, tc);
	return s;
}

static int
poller_test_init(void)
{
	log_add_secret(TOKEN);
	return 0;
}

#define TEST_SUITE	poller_suite
#define TEST_INIT	poller_test_init
#include "testmain.h"
