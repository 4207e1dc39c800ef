/*
 * Unit tests of flood control's pure parts (daemon/flood.c): the rate
 * syntax, token bucket arithmetic, which calls count as messages and which
 * chat they count for.  The scheduling in api.c that uses them is tested
 * end to end by tests/scenario/test_flood.py.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "flood.h"

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
	rate_is("30/s", 30, 1000, 30, "30/s");
	rate_is("1/s burst 3", 1, 1000, 3, "1/s burst 3");
	rate_is("20/m", 20, 60000, 20, "20/m");
	rate_is("20/m burst 5", 20, 60000, 5, "20/m burst 5");
	rate_is("  5 / 10s   BURST   2 ", 5, 10000, 2, "5/10s burst 2");
	rate_is("100/h", 100, 3600000, 100, "100/h");
	rate_is("1/500ms", 1, 500, 1, "1/500ms");
	rate_is("2/60s", 2, 60000, 2, "2/m");
	rate_is("3/2m burst 3", 3, 120000, 3, "3/2m");
	rate_is("1/24h", 1, 86400000, 1, "1/24h");
	rate_is("1000000/ms burst 1000000", 1000000, 1, 1000000,
	    "1000000/ms");
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

static Suite *
api_suite(void)
{
	Suite	*s = suite_create("flood");
	TCase	*tc = tcase_create("core");

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
	return s;
}

#define TEST_SUITE	api_suite
#include "testmain.h"
