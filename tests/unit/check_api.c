/*
 * The Bot API client of workers' calls.  First flood control's pure parts
 * (daemon/flood.c): the rate syntax, token bucket arithmetic, which calls
 * count as messages and which chat they count for.  Then the scheduler of
 * api.c on a real event loop, against a Bot API server in the test's own
 * process (evhttp on loopback) that answers when and how the test says:
 * per-key order of calls, the in-flight bound, flood waits per chat, 429
 * pauses of a chat or of the whole bot for retry_after, retries, and the
 * bounded queue.  tests/scenario/test_flood.py holds the same rules end to
 * end.
 */
#include "config.h"

#include <sys/socket.h>

#include <netinet/in.h>

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>

#include "api.h"
#include "conf.h"
#include "flood.h"
#include "http.h"
#include "testloop.h"

static struct flood_rate
rate(const char *s)
{
	struct flood_rate r;

	ck_assert_msg(flood_rate_parse(s, &r) == 0, "'%s' rejected", s);
	return r;
}

static void
rate_is(const char *s, int64_t n, int64_t per_ms, int64_t burst,
    const char *canonical)
{
	struct flood_rate	r = rate(s), back;
	char			buf[64];

	ck_assert_msg(r.n == n && r.per_ms == per_ms && r.burst == burst,
	    "'%s': %lld/%lldms burst %lld", s, (long long)r.n,
	    (long long)r.per_ms, (long long)r.burst);
	flood_rate_format(&r, buf, sizeof(buf));
	ck_assert_str_eq(buf, canonical);
	back = rate(buf);
	ck_assert(back.n == r.n && back.per_ms == r.per_ms &&
	    back.burst == r.burst);
}

START_TEST(test_rate_parse)
{
	/* without a burst: a sliding window (burst 0) */
	rate_is("30/s", 30, 1000, 0, "30/s");
	rate_is("1/s burst 3", 1, 1000, 3, "1/s burst 3");
	rate_is("20/m", 20, 60000, 0, "20/m");
	rate_is("20/m burst 5", 20, 60000, 5, "20/m burst 5");
	rate_is("  5 / 10s   BURST   2 ", 5, 10000, 2, "5/10s burst 2");
	rate_is("100/h", 100, 3600000, 0, "100/h");
	rate_is("1/500ms", 1, 500, 0, "1/500ms");
	rate_is("2/60s", 2, 60000, 0, "2/m");
	rate_is("3/2m burst 3", 3, 120000, 3, "3/2m burst 3");
	rate_is("1/24h", 1, 86400000, 0, "1/24h");
	rate_is("1000000/ms burst 1000000", 1000000, 1, 1000000,
	    "1000000/ms burst 1000000");
}
END_TEST

START_TEST(test_rate_reject)
{
	static const char *const bad[] = {
		"", "30", "30/", "/s", "0/s", "-1/s", "+1/s", "1.5/s", "1/0s",
		"1/x", "1/sec", "1/s burst", "1/s burst 0", "1/s burst -1",
		"1/s burst 2 3", "1/s burst2", "1/s, burst 2", "1/25h",
		"1000001/s", "1/s burst 1000001", "99999999999999999999/s",
		"1/99999999999999999999s", "30/s extra", "1/ms5", NULL
	};
	struct flood_rate	r = { 7, 7, 7 };
	int			i;

	for (i = 0; bad[i] != NULL; i++) {
		ck_assert_msg(flood_rate_parse(bad[i], &r) == -1,
		    "'%s' accepted", bad[i]);
		ck_assert(r.n == 7 && r.per_ms == 7 && r.burst == 7);
	}
}
END_TEST

START_TEST(test_bucket_starts_full)
{
	struct flood_rate	r = rate("1/s burst 3");
	struct flood_bucket	b = { 0 };

	ck_assert(flood_full(&b, &r, 5000));
	ck_assert_int_eq(flood_wait_ms(&b, &r, 3, 5000), 0);
	ck_assert_int_eq(flood_take(&b, &r, 1, 5000), 0);
	ck_assert_int_eq(flood_take(&b, &r, 1, 5000), 0);
	ck_assert_int_eq(flood_take(&b, &r, 1, 5000), 0);
	/* the burst is spent: the fourth waits one period */
	ck_assert_int_eq(flood_take(&b, &r, 1, 5000), -1);
	ck_assert_int_eq(flood_wait_ms(&b, &r, 1, 5000), 1000);
	ck_assert(!flood_full(&b, &r, 5000));
}
END_TEST

START_TEST(test_bucket_refills_continuously)
{
	struct flood_rate	r = rate("5/s burst 2");
	struct flood_bucket	b = { 0 };
	int64_t			t = 0;
	int			i, sent = 0;

	flood_refill(&b, &r, 0);
	flood_drain(&b, &r, 0);
	/* one token each 200 ms, exactly */
	ck_assert_int_eq(flood_wait_ms(&b, &r, 1, 0), 200);
	ck_assert_int_eq(flood_wait_ms(&b, &r, 1, 150), 50);
	ck_assert_int_eq(flood_wait_ms(&b, &r, 1, 199), 1);
	ck_assert_int_eq(flood_wait_ms(&b, &r, 1, 200), 0);
	ck_assert_int_eq(flood_wait_ms(&b, &r, 2, 200), 200);
	/* taking at each moment the wait says: exactly the rate */
	for (i = 0; i < 50; i++) {
		t += flood_wait_ms(&b, &r, 1, t);
		ck_assert_int_eq(flood_take(&b, &r, 1, t), 0);
		sent++;
	}
	ck_assert_int_eq(t, 50 * 200);
	ck_assert_int_eq(sent, 50);
	/* long idle: capped at burst, not more */
	ck_assert_int_eq(flood_take(&b, &r, 1, t + 3600000), 0);
	ck_assert_int_eq(flood_take(&b, &r, 1, t + 3600000), 0);
	ck_assert_int_eq(flood_take(&b, &r, 1, t + 3600000), -1);
}
END_TEST

/* The bound the scenario test checks: n in any window <= burst + rate * w. */
START_TEST(test_bucket_window_bound)
{
	struct flood_rate	r = rate("20/m burst 5");
	struct flood_bucket	b = { 0 };
	int64_t			sent[256], t = 0;
	int			i, j, n = 0;

	/* greedy sender, a try every 7 ms for 10 minutes */
	for (t = 0; t < 600000; t += 7)
		if (flood_take(&b, &r, 1, t) == 0 && n < 256)
			sent[n++] = t;
	/* the burst, then one per 3 s until the last try at 599998 ms */
	ck_assert_int_eq(n, 5 + 599998 / 3000);
	for (i = 0; i < n; i++)
		for (j = i; j < n; j++)
			ck_assert_msg((j - i + 1) * r.per_ms <=
			    r.burst * r.per_ms + r.n * (sent[j] - sent[i]),
			    "%d msgs in %lld ms",
			    j - i + 1, (long long)(sent[j] - sent[i]));
}
END_TEST

START_TEST(test_bucket_cost_above_burst)
{
	struct flood_rate	r = rate("1/s burst 3");
	struct flood_bucket	b = { 0 };

	/* an album of 10 in a chat of burst 3: waits for a full bucket */
	ck_assert_int_eq(flood_wait_ms(&b, &r, 10, 0), 0);
	ck_assert_int_eq(flood_take(&b, &r, 10, 0), 0);
	ck_assert_int_eq(flood_wait_ms(&b, &r, 1, 0), 1000);
	ck_assert_int_eq(flood_wait_ms(&b, &r, 10, 0), 3000);
	ck_assert_int_eq(flood_take(&b, &r, 10, 2999), -1);
	ck_assert_int_eq(flood_take(&b, &r, 10, 3000), 0);
}
END_TEST

START_TEST(test_bucket_rate_change)
{
	struct flood_rate	r1 = rate("1/s burst 4");
	struct flood_rate	r2 = rate("60/m burst 2");
	struct flood_bucket	b = { 0 };

	ck_assert_int_eq(flood_take(&b, &r1, 1, 0), 0);	/* 3 left */
	/* a reload: the tokens stay, capped at the new burst */
	ck_assert_int_eq(flood_wait_ms(&b, &r2, 2, 0), 0);
	ck_assert_int_eq(flood_take(&b, &r2, 2, 0), 0);
	ck_assert_int_eq(flood_wait_ms(&b, &r2, 1, 0), 1000);
	/* and back: 1/s again */
	ck_assert_int_eq(flood_wait_ms(&b, &r1, 1, 500), 500);
}
END_TEST

START_TEST(test_bucket_no_overflow)
{
	struct flood_rate	r = rate("1000000/ms burst 1000000");
	struct flood_rate	slow = rate("1/24h burst 1000000");
	struct flood_bucket	b = { 0 };

	flood_drain(&b, &r, 0);
	ck_assert(flood_full(&b, &r, INT64_MAX / 2));
	b = (struct flood_bucket){ 0 };
	flood_drain(&b, &slow, 0);
	ck_assert_int_eq(flood_wait_ms(&b, &slow, 1000000, 0),
	    1000000LL * 86400000);
	ck_assert(flood_full(&b, &slow, INT64_MAX / 2));
	/* time going backwards changes nothing */
	b = (struct flood_bucket){ 0 };
	flood_drain(&b, &r, 1000);
	ck_assert_int_eq(flood_take(&b, &r, 1, 10), -1);
}
END_TEST

static int64_t
cost(const char *method, const char *params)
{
	json_t	*p = json_loads(params, 0, NULL);
	int64_t	 c;

	ck_assert_ptr_nonnull(p);
	c = flood_cost(method, p);
	json_decref(p);
	return c;
}

START_TEST(test_cost)
{
	static const char *const messages[] = {
		"sendMessage", "sendPhoto", "sendAudio", "sendDocument",
		"sendVideo", "sendAnimation", "sendVoice", "sendVideoNote",
		"sendPaidMedia", "sendLocation", "sendVenue", "sendContact",
		"sendPoll", "sendDice", "sendSticker", "sendInvoice",
		"sendGame", "copyMessage", "forwardMessage", "SENDMESSAGE",
		"sendmessage", NULL
	};
	static const char *const others[] = {
		"answerCallbackQuery", "getChat", "getMe", "editMessageText",
		"editMessageCaption", "editMessageReplyMarkup", "deleteMessage",
		"deleteMessages", "sendChatAction", "answerInlineQuery",
		"setMessageReaction", "pinChatMessage", "sendMessageX",
		"send", "", NULL
	};
	int i;

	for (i = 0; messages[i] != NULL; i++)
		ck_assert_msg(cost(messages[i], "{\"chat_id\":1}") == 1, "%s",
		    messages[i]);
	for (i = 0; others[i] != NULL; i++)
		ck_assert_msg(cost(others[i], "{\"chat_id\":1}") == 0, "%s",
		    others[i]);
	/* albums and batches count per item */
	ck_assert_int_eq(cost("sendMediaGroup",
	    "{\"media\":[{},{},{},{},{},{},{},{},{},{}]}"), 10);
	ck_assert_int_eq(cost("sendMediaGroup", "{\"media\":[{},{}]}"), 2);
	ck_assert_int_eq(cost("sendMediaGroup", "{\"media\":\"[{},{},{}]\"}"),
	    3);
	ck_assert_int_eq(cost("sendMediaGroup", "{\"media\":[]}"), 1);
	ck_assert_int_eq(cost("sendMediaGroup", "{}"), 1);
	ck_assert_int_eq(cost("sendMediaGroup", "{\"media\":\"junk\"}"), 1);
	ck_assert_int_eq(cost("copyMessages", "{\"message_ids\":[1,2,3,4]}"),
	    4);
	ck_assert_int_eq(cost("forwardMessages", "{\"message_ids\":[1,2]}"),
	    2);
	ck_assert_int_eq(flood_cost("sendMessage", NULL), 1);
	ck_assert_int_eq(flood_cost("sendMediaGroup", NULL), 1);
}
END_TEST

START_TEST(test_cost_capped)
{
	json_t	*p = json_object(), *ids = json_array();
	int	 i;

	for (i = 0; i < 1000; i++)
		json_array_append_new(ids, json_integer(i));
	json_object_set_new(p, "message_ids", ids);
	ck_assert_int_eq(flood_cost("forwardMessages", p), FLOOD_COST_MAX);
	json_decref(p);
}
END_TEST

static enum flood_scope
scope(const char *params, char *name)
{
	json_t		 *p = json_loads(params, 0, NULL);
	enum flood_scope  k;

	ck_assert_ptr_nonnull(p);
	k = flood_scope(p, name, FLOOD_SCOPE_MAX);
	json_decref(p);
	return k;
}

static void
scope_is(const char *params, enum flood_scope want, const char *wname)
{
	char name[FLOOD_SCOPE_MAX];

	memset(name, 'x', sizeof(name));
	ck_assert_msg(scope(params, name) == want, "%s: %s, want %s", params,
	    flood_scope_str(scope(params, name)), flood_scope_str(want));
	ck_assert_str_eq(name, wname);
}

START_TEST(test_scope)
{
	scope_is("{\"chat_id\":42}", FLOOD_SCOPE_PRIVATE, "p:42");
	scope_is("{\"chat_id\":-42}", FLOOD_SCOPE_GROUP, "g:-42");
	scope_is("{\"chat_id\":-1001234567890}", FLOOD_SCOPE_GROUP,
	    "g:-1001234567890");
	scope_is("{\"chat_id\":9223372036854775807}", FLOOD_SCOPE_PRIVATE,
	    "p:9223372036854775807");
	scope_is("{\"chat_id\":-9223372036854775808}", FLOOD_SCOPE_GROUP,
	    "g:-9223372036854775808");
	/* ids as strings are the same chats */
	scope_is("{\"chat_id\":\"42\"}", FLOOD_SCOPE_PRIVATE, "p:42");
	scope_is("{\"chat_id\":\"-1001234\"}", FLOOD_SCOPE_GROUP, "g:-1001234");
	/* channel usernames: groups, case-insensitive */
	scope_is("{\"chat_id\":\"@MyChannel_1\"}", FLOOD_SCOPE_GROUP,
	    "g:@mychannel_1");
	scope_is("{\"chat_id\":\"@mychannel_1\"}", FLOOD_SCOPE_GROUP,
	    "g:@mychannel_1");
	/* no chat, or none that Telegram would accept */
	scope_is("{}", FLOOD_SCOPE_NONE, "");
	scope_is("{\"chat_id\":0}", FLOOD_SCOPE_NONE, "");
	scope_is("{\"chat_id\":null}", FLOOD_SCOPE_NONE, "");
	scope_is("{\"chat_id\":1.5}", FLOOD_SCOPE_NONE, "");
	scope_is("{\"chat_id\":[1]}", FLOOD_SCOPE_NONE, "");
	scope_is("{\"chat_id\":\"\"}", FLOOD_SCOPE_NONE, "");
	scope_is("{\"chat_id\":\"@\"}", FLOOD_SCOPE_NONE, "");
	scope_is("{\"chat_id\":\"@a b\"}", FLOOD_SCOPE_NONE, "");
	scope_is("{\"chat_id\":\"@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
	    FLOOD_SCOPE_NONE, "");
	scope_is("{\"chat_id\":\"name\"}", FLOOD_SCOPE_NONE, "");
	scope_is("{\"chat_id\":\"12a\"}", FLOOD_SCOPE_NONE, "");
	scope_is("{\"chat_id\":\"99999999999999999999\"}", FLOOD_SCOPE_NONE,
	    "");
	/* the destination counts, not the source */
	scope_is("{\"chat_id\":-5,\"from_chat_id\":7}", FLOOD_SCOPE_GROUP,
	    "g:-5");
	scope_is("{\"from_chat_id\":7}", FLOOD_SCOPE_NONE, "");
	/* an inline message has no chat */
	scope_is("{\"inline_message_id\":\"abc\"}", FLOOD_SCOPE_NONE, "");
}
END_TEST

START_TEST(test_scope_null_params)
{
	char name[FLOOD_SCOPE_MAX] = "junk";

	ck_assert_int_eq(flood_scope(NULL, name, sizeof(name)),
	    FLOOD_SCOPE_NONE);
	ck_assert_str_eq(name, "");
}
END_TEST

/* --- the scheduler, against a Bot API server of the test's own ------------ */

#define TOKEN		"123456:TEST"
#define MAXREQ		256

/* A request the server got. */
struct sreq {
	char			 method[64];
	json_t			*params;
	int64_t			 at;		/* mono ms */
	struct evhttp_request	*r;		/* held, not answered yet */
};

/* A call's answer, as its callback got it. */
struct got {
	int			 tag;
	int			 ok;
	int			 code;
	int			 retry_after;
	int64_t			 at;
};

static struct event_base	*sbase;
static struct evhttp		*server;
static struct http		*client;
static struct api		*api;
static struct conf		 sconf;
static struct sreq		 sreqs[MAXREQ];
static int			 nsreqs;
static struct got		 gots[MAXREQ];
static int			 ngots;
static int			 hold;		/* keep answers for answer() */
/* Per request: the answer's HTTP status and body, or 0 for "ok". */
static int			(*policy)(const struct sreq *, char *body,
				    size_t size);

static void
reply(struct evhttp_request *r, int code, const char *body)
{
	struct evbuffer *b = evbuffer_new();

	evbuffer_add(b, body, strlen(body));
	evhttp_add_header(evhttp_request_get_output_headers(r),
	    "Content-Type", "application/json");
	evhttp_send_reply(r, code, code == 200 ? "OK" : "Error", b);
	evbuffer_free(b);
}

static void
answer_ok(struct sreq *q)
{
	char body[256];

	snprintf(body, sizeof(body), "{\"ok\":true,\"result\":{\"method\":"
	    "\"%s\",\"tag\":%lld}}", q->method, (long long)json_integer_value(
	    json_object_get(q->params, "tag")));
	reply(q->r, 200, body);
	q->r = NULL;
}

static void
server_cb(struct evhttp_request *r, void *arg)
{
	const char	*uri = evhttp_request_get_uri(r);
	struct evbuffer	*in = evhttp_request_get_input_buffer(r);
	struct sreq	*q;
	char		 body[512];
	int		 code;

	ck_assert_int_lt(nsreqs, MAXREQ);
	ck_assert_msg(strncmp(uri, "/bot" TOKEN "/", strlen(TOKEN) + 5) == 0,
	    "%s", uri);
	q = &sreqs[nsreqs++];
	snprintf(q->method, sizeof(q->method), "%s", uri + strlen(TOKEN) + 5);
	q->params = json_loadb((const char *)evbuffer_pullup(in, -1),
	    evbuffer_get_length(in), 0, NULL);
	ck_assert_ptr_nonnull(q->params);
	q->at = mono_ms();
	q->r = r;
	if (policy != NULL && (code = policy(q, body, sizeof(body))) != 0) {
		reply(r, code, body);
		q->r = NULL;
	} else if (!hold)
		answer_ok(q);
}

static void
on_result(void *arg, const struct api_result *r)
{
	struct got *g = &gots[ngots++];

	g->tag = (int)(intptr_t)arg;
	g->ok = r->ok;
	g->code = r->error_code;
	g->retry_after = r->retry_after;
	g->at = mono_ms();
}

static void
sched_setup(void)
{
	struct evhttp_bound_socket	*bs;
	struct sockaddr_in		 sin;
	socklen_t			 len = sizeof(sin);
	char				 url[64];

	sbase = event_base_new();
	server = evhttp_new(sbase);
	bs = evhttp_bind_socket_with_handle(server, "127.0.0.1", 0);
	ck_assert_ptr_nonnull(bs);
	ck_assert_int_eq(getsockname(evhttp_bound_socket_get_fd(bs),
	    (struct sockaddr *)&sin, &len), 0);
	evhttp_set_gencb(server, server_cb, NULL);
	conf_defaults(&sconf);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", ntohs(sin.sin_port));
	free(sconf.api_url);
	sconf.api_url = strdup(url);
	sconf.flood_control = 0;
	client = http_new(sbase, 16);
	nsreqs = ngots = hold = 0;
	policy = NULL;
}

static void
sched_teardown(void)
{
	int i;

	api_free(api);
	http_free(client);
	evhttp_free(server);
	event_base_free(sbase);
	for (i = 0; i < nsreqs; i++)
		json_decref(sreqs[i].params);
	conf_clear(&sconf);
}

static void
start_api(void)
{
	api = api_new(sbase, client, &sconf, TOKEN);
	ck_assert_ptr_nonnull(api);
}

/* Call method with {"chat_id": chat (0: none), "tag": tag}, under key. */
static void
call(const char *key, const char *method, int64_t chat, int tag)
{
	json_t *params = json_pack("{s:i}", "tag", tag);

	if (chat != 0)
		json_object_set_new(params, "chat_id", json_integer(chat));
	ck_assert_int_eq(api_call(api, key, method, params, 0, on_result,
	    (void *)(intptr_t)tag), 0);
	json_decref(params);
}

static int
tag_of(int i)
{
	return (int)json_integer_value(json_object_get(sreqs[i].params,
	    "tag"));
}

/* The index of the first request with tag, or -1. */
static int
sreq_of(int tag)
{
	int i;

	for (i = 0; i < nsreqs; i++)
		if (tag_of(i) == tag)
			return i;
	return -1;
}

static int
got_of(int tag)
{
	int i;

	for (i = 0; i < ngots; i++)
		if (gots[i].tag == tag)
			return i;
	return -1;
}

static int want_reqs, want_gots;

static int
have_reqs(void *arg)
{
	return nsreqs >= want_reqs;
}

static int
have_gots(void *arg)
{
	return ngots >= want_gots;
}

static void
wait_reqs(int n)
{
	want_reqs = n;
	TESTLOOP_UNTIL(sbase, have_reqs, NULL, 30000, "requests at the server");
}

static void
wait_gots(int n)
{
	want_gots = n;
	TESTLOOP_UNTIL(sbase, have_gots, NULL, 30000, "results of calls");
}

static int
have_429s(void *arg)
{
	return api_stats(api)->got_429 >= (uint64_t)want_reqs;
}

/* The client has taken in n 429 answers (not only the server sent them). */
static void
wait_429(int n)
{
	want_reqs = n;
	TESTLOOP_UNTIL(sbase, have_429s, NULL, 30000, "the 429 taken in");
}

static void
answer_tag(int tag)
{
	int i = sreq_of(tag);

	ck_assert_int_ge(i, 0);
	ck_assert_ptr_nonnull(sreqs[i].r);
	answer_ok(&sreqs[i]);
}

START_TEST(test_key_order)
{
	start_api();
	hold = 1;
	/* three calls of one chat's key, one of another key, one unkeyed */
	call("chat:1", "sendMessage", 1, 11);
	call("chat:1", "sendMessage", 1, 12);
	call("chat:1", "sendMessage", 1, 13);
	call("chat:2", "sendMessage", 2, 21);
	call(NULL, "getMe", 0, 31);
	wait_reqs(3);
	/* while 11 is out, 12 must not be: give it every chance */
	testloop_for(sbase, 200);
	ck_assert_int_eq(nsreqs, 3);
	ck_assert_int_ge(sreq_of(11), 0);
	ck_assert_int_ge(sreq_of(21), 0);
	ck_assert_int_ge(sreq_of(31), 0);
	ck_assert_uint_eq(api_queued(api), 5);
	ck_assert_uint_eq(api_inflight(api), 3);
	/* other keys finishing changes nothing for chat:1 */
	answer_tag(21);
	answer_tag(31);
	wait_gots(2);
	testloop_for(sbase, 100);
	ck_assert_int_eq(nsreqs, 3);
	/* each answer lets the next call of the key go, in order */
	answer_tag(11);
	wait_reqs(4);
	ck_assert_int_eq(tag_of(3), 12);
	ck_assert_int_lt(got_of(11), 3);	/* its result came first */
	answer_tag(12);
	wait_reqs(5);
	ck_assert_int_eq(tag_of(4), 13);
	answer_tag(13);
	wait_gots(5);
	ck_assert_int_eq(gots[2].tag, 11);
	ck_assert_int_eq(gots[3].tag, 12);
	ck_assert_int_eq(gots[4].tag, 13);
	ck_assert(gots[4].ok);
	ck_assert_uint_eq(api_queued(api), 0);
}
END_TEST

START_TEST(test_inflight_bound)
{
	int i;

	sconf.api_max_inflight = 2;
	start_api();
	hold = 1;
	for (i = 1; i <= 5; i++)
		call(NULL, "getChat", i, i);
	wait_reqs(2);
	testloop_for(sbase, 200);
	ck_assert_int_eq(nsreqs, 2);
	ck_assert_uint_eq(api_inflight(api), 2);
	answer_tag(tag_of(0));
	wait_reqs(3);
	ck_assert_int_eq(tag_of(2), 3);
	testloop_for(sbase, 100);
	ck_assert_int_eq(nsreqs, 3);
}
END_TEST

/* Call under key with flags (API_HOLD, ...). */
static void
call_flags(const char *key, const char *method, int tag, int flags)
{
	json_t *params = json_pack("{s:i}", "tag", tag);

	ck_assert_int_eq(api_call(api, key, method, params, flags, on_result,
	    (void *)(intptr_t)tag), 0);
	json_decref(params);
}

/*
 * A held call's slot stays taken after its answer, until api_settle():
 * never more than api_max_inflight calls answered and not recorded.
 */
START_TEST(test_hold_until_settled)
{
	sconf.api_max_inflight = 2;
	start_api();
	hold = 1;
	call_flags(NULL, "sendMessage", 1, API_HOLD | API_NOLIMIT);
	call_flags(NULL, "sendMessage", 2, API_HOLD | API_NOLIMIT);
	call_flags(NULL, "sendMessage", 3, API_HOLD | API_NOLIMIT);
	call_flags(NULL, "getMe", 4, 0);
	wait_reqs(2);
	answer_tag(1);
	answer_tag(2);
	wait_gots(2);
	/* both answered, both slots held: nothing else may start */
	testloop_for(sbase, 200);
	ck_assert_int_eq(nsreqs, 2);
	ck_assert_uint_eq(api_inflight(api), 0);
	api_settle(api);
	wait_reqs(4);
	ck_assert_int_eq(tag_of(2), 3);
	ck_assert_int_eq(tag_of(3), 4);
	/* an unheld call frees its slot with its answer */
	answer_tag(4);
	wait_gots(3);
	call_flags(NULL, "getMe", 5, 0);
	wait_reqs(5);
	/* a call refused before any request holds nothing */
	answer_tag(3);
	answer_tag(5);
	wait_gots(5);
	api_settle(api);
	ck_assert_int_eq(api_call(api, NULL, "bad method", NULL, API_HOLD,
	    on_result, NULL), -1);
	call_flags(NULL, "getMe", 6, 0);
	call_flags(NULL, "getMe", 7, 0);
	wait_reqs(7);
}
END_TEST

/* api_stop: queued calls stay queued, the one in flight finishes. */
START_TEST(test_stop)
{
	sconf.api_max_inflight = 1;
	start_api();
	hold = 1;
	call("chat:1", "sendMessage", 1, 1);
	call("chat:1", "sendMessage", 1, 2);
	wait_reqs(1);
	api_stop(api);
	answer_tag(1);
	wait_gots(1);
	testloop_for(sbase, 200);
	ck_assert_int_eq(nsreqs, 1);
	ck_assert_uint_eq(api_queued(api), 1);
	ck_assert_uint_eq(api_inflight(api), 0);
}
END_TEST

START_TEST(test_flood_wait)
{
	int64_t t0;
	int i, a, b;

	sconf.flood_control = 1;
	ck_assert_int_eq(flood_rate_parse("5/s burst 1",
	    &sconf.flood_chat_rate), 0);
	start_api();
	t0 = mono_ms();
	/* unkeyed: only flood control keeps them apart */
	for (i = 1; i <= 4; i++)
		call(NULL, "sendMessage", 42, i);
	call(NULL, "sendMessage", 43, 10);
	call(NULL, "getChat", 42, 20);
	wait_gots(6);
	/*
	 * One message each 200 ms to chat 42.  The server sees them later
	 * than they leave, by a varying delay (a new connection, a loaded
	 * machine): each gap is held loosely, the whole span closely.
	 */
	for (i = 2; i <= 4; i++) {
		a = sreq_of(i - 1);
		b = sreq_of(i);
		ck_assert_msg(sreqs[b].at - sreqs[a].at >= 100, "messages %d "
		    "and %d to one chat %lld ms apart", i - 1, i,
		    (long long)(sreqs[b].at - sreqs[a].at));
	}
	ck_assert_int_ge(sreqs[sreq_of(4)].at - sreqs[sreq_of(1)].at,
	    600 - 50);
	/*
	 * Another chat's message, and a call that is no message, do not wait
	 * behind chat 42's tokens: they are there before its second message.
	 */
	ck_assert_int_lt(sreqs[sreq_of(10)].at, sreqs[sreq_of(2)].at);
	ck_assert_int_lt(sreqs[sreq_of(20)].at, sreqs[sreq_of(2)].at);
	ck_assert_int_lt(sreqs[sreq_of(10)].at - t0, 10000);
	ck_assert_uint_ge(api_stats(api)->throttled, 3);
}
END_TEST

/* The first message to chat 7 gets a 429 with retry_after 2. */
static int
policy_429_once(const struct sreq *q, char *body, size_t size)
{
	static int done;

	if (q == &sreqs[0])
		done = 0;
	if (done || json_integer_value(json_object_get(q->params,
	    "chat_id")) != 7)
		return 0;
	done = 1;
	snprintf(body, size, "{\"ok\":false,\"error_code\":429,\"description\":"
	    "\"Too Many Requests: retry after 2\",\"parameters\":"
	    "{\"retry_after\":2}}");
	return 429;
}

START_TEST(test_429_pauses_chat)
{
	int64_t t429;

	start_api();
	policy = policy_429_once;
	call("chat:7", "sendMessage", 7, 1);
	wait_429(1);
	t429 = sreqs[0].at;
	/* chat 7 is paused; chat 8 is not */
	call(NULL, "sendMessage", 8, 2);
	call(NULL, "sendMessage", 7, 3);
	wait_gots(1);
	ck_assert_int_eq(gots[0].tag, 2);
	wait_gots(3);
	ck_assert_int_eq(sreq_of(1), 0);
	/*
	 * The retry of 1 and the other call to chat 7 both wait out the
	 * pause (they may reach the server in either order: two connections).
	 */
	ck_assert_int_eq(nsreqs, 4);
	ck_assert_msg(sreqs[2].at - t429 >= 2000 - TESTLOOP_SLACK_MS,
	    "a call to chat 7 %lld ms after a 429 with retry_after 2",
	    (long long)(sreqs[2].at - t429));
	ck_assert_int_ge(sreqs[3].at - t429, 2000 - TESTLOOP_SLACK_MS);
	ck_assert((tag_of(2) == 1 && tag_of(3) == 3) ||
	    (tag_of(2) == 3 && tag_of(3) == 1));
	/* the worker sees the retried call's success, not the 429 */
	ck_assert(gots[got_of(1)].ok);
	ck_assert(gots[got_of(3)].ok);
	ck_assert_uint_eq(api_stats(api)->got_429, 1);
	ck_assert_uint_ge(api_stats(api)->retries, 1);
}
END_TEST

/* Every call gets a 429 with retry_after 1. */
static int
policy_429_always(const struct sreq *q, char *body, size_t size)
{
	snprintf(body, size, "{\"ok\":false,\"error_code\":429,\"description\":"
	    "\"Too Many Requests: retry after 1\",\"parameters\":"
	    "{\"retry_after\":1}}");
	return 429;
}

START_TEST(test_429_gives_up)
{
	sconf.max_call_retries = 1;
	start_api();
	policy = policy_429_always;
	call("chat:9", "sendMessage", 9, 1);
	wait_gots(1);
	/* tried, paused, tried once more: then the worker gets the 429 */
	ck_assert_int_eq(nsreqs, 2);
	ck_assert_int_ge(sreqs[1].at - sreqs[0].at, 1000 - TESTLOOP_SLACK_MS);
	ck_assert(!gots[0].ok);
	ck_assert_int_eq(gots[0].code, 429);
	ck_assert_int_eq(gots[0].retry_after, 1);
	ck_assert_uint_eq(api_stats(api)->got_429, 2);
}
END_TEST

/* A call without a chat (getMe) gets a 429: the whole bot waits. */
static int
policy_429_getme(const struct sreq *q, char *body, size_t size)
{
	if (strcmp(q->method, "getMe") != 0 || q != &sreqs[0])
		return 0;
	snprintf(body, size, "{\"ok\":false,\"error_code\":429,\"description\":"
	    "\"Too Many Requests: retry after 1\",\"parameters\":"
	    "{\"retry_after\":1}}");
	return 429;
}

START_TEST(test_429_pauses_bot)
{
	start_api();
	policy = policy_429_getme;
	call(NULL, "getMe", 0, 1);
	wait_429(1);
	call(NULL, "sendMessage", 5, 2);
	call(NULL, "getChat", 6, 3);
	wait_gots(3);
	ck_assert_int_eq(nsreqs, 4);
	ck_assert_int_ge(sreqs[sreq_of(2)].at - sreqs[0].at,
	    1000 - TESTLOOP_SLACK_MS);
	ck_assert_int_ge(sreqs[sreq_of(3)].at - sreqs[0].at,
	    1000 - TESTLOOP_SLACK_MS);
	ck_assert(gots[got_of(1)].ok);
}
END_TEST

START_TEST(test_queue_bound)
{
	json_t *p = json_object();

	sconf.api_max_queued = 2;
	start_api();
	hold = 1;
	call(NULL, "getChat", 1, 1);
	call(NULL, "getChat", 2, 2);
	ck_assert_int_eq(api_call(api, NULL, "getChat", p, 0, on_result,
	    NULL), -1);
	/* a reply already owed is never refused for room */
	ck_assert_int_eq(api_call(api, NULL, "getChat", p, API_NOLIMIT,
	    on_result, (void *)3), 0);
	ck_assert_uint_eq(api_queued(api), 3);
	/* nor is a method name a worker made up taken */
	ck_assert_int_eq(api_call(api, NULL, "get/../Me", p, API_NOLIMIT,
	    on_result, NULL), -1);
	json_decref(p);
}
END_TEST

static Suite *
api_suite(void)
{
	Suite	*s = suite_create("flood");
	TCase	*tc = tcase_create("core");
	TCase	*sc = tcase_create("scheduler");

	tcase_add_test(tc, test_rate_parse);
	tcase_add_test(tc, test_rate_reject);
	tcase_add_test(tc, test_bucket_starts_full);
	tcase_add_test(tc, test_bucket_refills_continuously);
	tcase_add_test(tc, test_bucket_window_bound);
	tcase_add_test(tc, test_bucket_cost_above_burst);
	tcase_add_test(tc, test_bucket_rate_change);
	tcase_add_test(tc, test_bucket_no_overflow);
	tcase_add_test(tc, test_cost);
	tcase_add_test(tc, test_cost_capped);
	tcase_add_test(tc, test_scope);
	tcase_add_test(tc, test_scope_null_params);
	suite_add_tcase(s, tc);
	tcase_add_checked_fixture(sc, sched_setup, sched_teardown);
	tcase_set_timeout(sc, 120);
	tcase_add_test(sc, test_key_order);
	tcase_add_test(sc, test_inflight_bound);
	tcase_add_test(sc, test_hold_until_settled);
	tcase_add_test(sc, test_stop);
	tcase_add_test(sc, test_flood_wait);
	tcase_add_test(sc, test_429_pauses_chat);
	tcase_add_test(sc, test_429_gives_up);
	tcase_add_test(sc, test_429_pauses_bot);
	tcase_add_test(sc, test_queue_bound);
	suite_add_tcase(s, sc);
	return s;
}

#define TEST_SUITE	api_suite
#include "testmain.h"
