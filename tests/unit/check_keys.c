/*
 * Session-key derivation: one realistic sample per Update type, with the
 * expected key for every kind, then the hostile and edge cases.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <jansson.h>

#include "jscan.h"
#include "keys.h"
#include "keys_ref.h"

struct vector {
	const char	*type;		/* expected keys_update_type(), NULL = unknown */
	const char	*json;
	const char	*chat, *user, *chat_user, *chat_topic;	/* "" = no key */
};

#define ANN	"{\"id\":42,\"is_bot\":false,\"first_name\":\"Ann\",\"language_code\":\"en\"}"
#define BOB	"{\"id\":77,\"is_bot\":false,\"first_name\":\"Bob\"}"
#define PRIV42	"{\"id\":42,\"first_name\":\"Ann\",\"type\":\"private\"}"
#define PRIV77	"{\"id\":77,\"first_name\":\"Bob\",\"type\":\"private\"}"
#define GROUP	"{\"id\":-1001234567890,\"title\":\"Forum\",\"type\":\"supergroup\",\"is_forum\":true}"
#define CHAN	"{\"id\":-1009876543210,\"title\":\"News\",\"type\":\"channel\"}"
#define G	"chat:-1001234567890"
#define C	"chat:-1009876543210"
#define BC	"bchat:AbC_123-x"

static const struct vector vectors[] = {
	{ "message",
	  "{\"update_id\":1,\"message\":{\"message_id\":10,\"from\":" ANN ",\"chat\":" PRIV42
	  ",\"date\":1700000000,\"text\":\"/start\",\"entities\":[{\"offset\":0,\"length\":6,\"type\":\"bot_command\"}]}}",
	  "chat:42", "user:42", "chat:42/user:42", "chat:42" },
	{ "message",	/* in a forum topic */
	  "{\"update_id\":2,\"message\":{\"message_id\":11,\"message_thread_id\":7,\"is_topic_message\":true,"
	  "\"from\":" ANN ",\"chat\":" GROUP ",\"date\":1700000001,\"text\":\"in topic\"}}",
	  G, "user:42", G "/user:42", G "/topic:7" },
	{ "message",	/* anonymous admin: "from" is a placeholder, sender_chat acts */
	  "{\"update_id\":3,\"message\":{\"message_id\":12,\"from\":{\"id\":1087968824,\"is_bot\":true,"
	  "\"first_name\":\"Group\",\"username\":\"GroupAnonymousBot\"},\"sender_chat\":" GROUP
	  ",\"chat\":" GROUP ",\"date\":1700000002,\"text\":\"anon\"}}",
	  G, G, G "/" G, G },
	{ "edited_message",	/* a reply thread, not a topic */
	  "{\"update_id\":4,\"edited_message\":{\"message_id\":13,\"message_thread_id\":9,"
	  "\"from\":" BOB ",\"chat\":" GROUP ",\"date\":1700000003,\"edit_date\":1700000009,\"text\":\"fixed\"}}",
	  G, "user:77", G "/user:77", G },
	{ "channel_post",
	  "{\"update_id\":5,\"channel_post\":{\"message_id\":5,\"sender_chat\":" CHAN ",\"chat\":" CHAN
	  ",\"date\":1700000004,\"text\":\"news\"}}",
	  C, C, C "/" C, C },
	{ "edited_channel_post",	/* no sender_chat, no from: no actor */
	  "{\"update_id\":6,\"edited_channel_post\":{\"message_id\":5,\"author_signature\":\"Ed\","
	  "\"chat\":" CHAN ",\"date\":1700000004,\"edit_date\":1700000100,\"text\":\"news!\"}}",
	  C, "", "", C },
	{ "business_connection",
	  "{\"update_id\":7,\"business_connection\":{\"id\":\"AbC_123-x\",\"user\":" ANN
	  ",\"user_chat_id\":42,\"date\":1700000005,\"can_reply\":true,\"is_enabled\":true}}",
	  "bconn:AbC_123-x", "user:42", "bconn:AbC_123-x/user:42", "bconn:AbC_123-x" },
	{ "business_message",
	  "{\"update_id\":8,\"business_message\":{\"business_connection_id\":\"AbC_123-x\",\"message_id\":1,"
	  "\"from\":" BOB ",\"chat\":" PRIV77 ",\"date\":1700000006,\"text\":\"hello\"}}",
	  BC ":77", "user:77", BC ":77/user:77", BC ":77" },
	{ "edited_business_message",	/* the account owner edits */
	  "{\"update_id\":9,\"edited_business_message\":{\"business_connection_id\":\"AbC_123-x\","
	  "\"message_id\":2,\"from\":" ANN ",\"chat\":" PRIV77 ",\"date\":1700000007,"
	  "\"edit_date\":1700000008,\"text\":\"hi Bob\"}}",
	  BC ":77", "user:42", BC ":77/user:42", BC ":77" },
	{ "deleted_business_messages",
	  "{\"update_id\":10,\"deleted_business_messages\":{\"business_connection_id\":\"AbC_123-x\","
	  "\"chat\":" PRIV77 ",\"message_ids\":[1,2]}}",
	  BC ":77", "", "", BC ":77" },
	{ "message_reaction",
	  "{\"update_id\":11,\"message_reaction\":{\"chat\":" GROUP ",\"message_id\":11,\"user\":" BOB
	  ",\"date\":1700000010,\"old_reaction\":[],\"new_reaction\":[{\"type\":\"emoji\",\"emoji\":\"\\ud83d\\udc4d\"}]}}",
	  G, "user:77", G "/user:77", G },
	{ "message_reaction",	/* anonymous: actor_chat */
	  "{\"update_id\":12,\"message_reaction\":{\"chat\":" GROUP ",\"message_id\":11,\"actor_chat\":" GROUP
	  ",\"date\":1700000011,\"old_reaction\":[],\"new_reaction\":[]}}",
	  G, G, G "/" G, G },
	{ "message_reaction_count",
	  "{\"update_id\":13,\"message_reaction_count\":{\"chat\":" CHAN ",\"message_id\":5,"
	  "\"date\":1700000012,\"reactions\":[{\"type\":{\"type\":\"emoji\",\"emoji\":\"x\"},\"total_count\":3}]}}",
	  C, "", "", C },
	{ "inline_query",
	  "{\"update_id\":14,\"inline_query\":{\"id\":\"4711\",\"from\":" ANN ",\"query\":\"cats\",\"offset\":\"\",\"chat_type\":\"sender\"}}",
	  "", "user:42", "", "" },
	{ "chosen_inline_result",
	  "{\"update_id\":15,\"chosen_inline_result\":{\"result_id\":\"r1\",\"from\":" ANN
	  ",\"query\":\"cats\",\"inline_message_id\":\"AAAB\"}}",
	  "", "user:42", "", "" },
	{ "callback_query",	/* on a message in a topic */
	  "{\"update_id\":16,\"callback_query\":{\"id\":\"99\",\"from\":" BOB ",\"message\":{\"message_id\":20,"
	  "\"message_thread_id\":3,\"is_topic_message\":true,\"from\":{\"id\":5000,\"is_bot\":true,\"first_name\":\"Bot\"},"
	  "\"chat\":" GROUP ",\"date\":1700000013,\"text\":\"pick\"},\"chat_instance\":\"-55\",\"data\":\"a\"}}",
	  G, "user:77", G "/user:77", G "/topic:3" },
	{ "callback_query",	/* inline message: no chat */
	  "{\"update_id\":17,\"callback_query\":{\"id\":\"100\",\"from\":" BOB
	  ",\"inline_message_id\":\"BAAC\",\"chat_instance\":\"-56\",\"data\":\"b\"}}",
	  "", "user:77", "", "" },
	{ "callback_query",	/* inaccessible message (date 0) still names its chat */
	  "{\"update_id\":18,\"callback_query\":{\"id\":\"101\",\"from\":" ANN ",\"message\":{\"chat\":" PRIV42
	  ",\"message_id\":3,\"date\":0},\"chat_instance\":\"-57\",\"data\":\"c\"}}",
	  "chat:42", "user:42", "chat:42/user:42", "chat:42" },
	{ "callback_query",	/* on a message the business account sent */
	  "{\"update_id\":19,\"callback_query\":{\"id\":\"102\",\"from\":" BOB ",\"message\":{\"message_id\":4,"
	  "\"business_connection_id\":\"AbC_123-x\",\"from\":" ANN ",\"chat\":" PRIV77
	  ",\"date\":1700000014,\"text\":\"menu\"},\"chat_instance\":\"-58\",\"data\":\"d\"}}",
	  BC ":77", "user:77", BC ":77/user:77", BC ":77" },
	{ "shipping_query",
	  "{\"update_id\":20,\"shipping_query\":{\"id\":\"s1\",\"from\":" ANN ",\"invoice_payload\":\"p\","
	  "\"shipping_address\":{\"country_code\":\"DE\",\"state\":\"\",\"city\":\"B\",\"street_line1\":\"x\","
	  "\"street_line2\":\"\",\"post_code\":\"1\"}}}",
	  "", "user:42", "", "" },
	{ "pre_checkout_query",
	  "{\"update_id\":21,\"pre_checkout_query\":{\"id\":\"q1\",\"from\":" ANN ",\"currency\":\"XTR\","
	  "\"total_amount\":50,\"invoice_payload\":\"p\"}}",
	  "", "user:42", "", "" },
	{ "purchased_paid_media",
	  "{\"update_id\":22,\"purchased_paid_media\":{\"from\":" BOB ",\"paid_media_payload\":\"pm\"}}",
	  "", "user:77", "", "" },
	{ "poll",
	  "{\"update_id\":23,\"poll\":{\"id\":\"5\",\"question\":\"?\",\"options\":[{\"text\":\"a\",\"voter_count\":1}],"
	  "\"total_voter_count\":1,\"is_closed\":false,\"is_anonymous\":true,\"type\":\"regular\","
	  "\"allows_multiple_answers\":false}}",
	  "", "", "", "" },
	{ "poll_answer",
	  "{\"update_id\":24,\"poll_answer\":{\"poll_id\":\"5\",\"user\":" ANN ",\"option_ids\":[0]}}",
	  "", "user:42", "", "" },
	{ "poll_answer",	/* voted on behalf of a chat */
	  "{\"update_id\":25,\"poll_answer\":{\"poll_id\":\"5\",\"voter_chat\":" CHAN ",\"option_ids\":[1]}}",
	  "", C, "", "" },
	{ "my_chat_member",
	  "{\"update_id\":26,\"my_chat_member\":{\"chat\":" GROUP ",\"from\":" ANN ",\"date\":1700000015,"
	  "\"old_chat_member\":{\"status\":\"left\",\"user\":{\"id\":5000,\"is_bot\":true,\"first_name\":\"Bot\"}},"
	  "\"new_chat_member\":{\"status\":\"member\",\"user\":{\"id\":5000,\"is_bot\":true,\"first_name\":\"Bot\"}}}}",
	  G, "user:42", G "/user:42", G },
	{ "chat_member",
	  "{\"update_id\":27,\"chat_member\":{\"chat\":" GROUP ",\"from\":" BOB ",\"date\":1700000016,"
	  "\"old_chat_member\":{\"status\":\"left\",\"user\":" BOB "},"
	  "\"new_chat_member\":{\"status\":\"member\",\"user\":" BOB "}}}",
	  G, "user:77", G "/user:77", G },
	{ "chat_join_request",
	  "{\"update_id\":28,\"chat_join_request\":{\"chat\":" GROUP ",\"from\":" BOB ",\"user_chat_id\":77,"
	  "\"date\":1700000017}}",
	  G, "user:77", G "/user:77", G },
	{ "chat_boost",
	  "{\"update_id\":29,\"chat_boost\":{\"chat\":" CHAN ",\"boost\":{\"boost_id\":\"b1\",\"add_date\":1700000018,"
	  "\"expiration_date\":1800000000,\"source\":{\"source\":\"premium\",\"user\":" ANN "}}}}",
	  C, "user:42", C "/user:42", C },
	{ "chat_boost",	/* giveaway without a user */
	  "{\"update_id\":30,\"chat_boost\":{\"chat\":" CHAN ",\"boost\":{\"boost_id\":\"b2\",\"add_date\":1700000019,"
	  "\"expiration_date\":1800000000,\"source\":{\"source\":\"giveaway\",\"giveaway_message_id\":9,"
	  "\"is_unclaimed\":true}}}}",
	  C, "", "", C },
	{ "removed_chat_boost",
	  "{\"update_id\":31,\"removed_chat_boost\":{\"chat\":" CHAN ",\"boost_id\":\"b1\",\"remove_date\":1700000020,"
	  "\"source\":{\"source\":\"gift_code\",\"user\":" BOB "}}}",
	  C, "user:77", C "/user:77", C },
	{ "managed_bot",	/* a bot created through this one: its creator */
	  "{\"update_id\":33,\"managed_bot\":{\"user\":" ANN ",\"bot\":{\"id\":999,\"is_bot\":true,"
	  "\"first_name\":\"B\"}}}",
	  "", "user:42", "", "" },
	{ "guest_message",	/* a Message, in a chat the bot is not in */
	  "{\"update_id\":34,\"guest_message\":{\"message_id\":1,\"from\":" BOB ",\"chat\":" GROUP
	  ",\"date\":1700000021,\"text\":\"@bot hi\"}}",
	  G, "user:77", G "/user:77", G },
	/* types the table does not know: keyed by what their members say */
	{ NULL,		/* message-like: its chat and sender, as a message */
	  "{\"update_id\":32,\"some_future_thing\":{\"chat\":" GROUP ",\"from\":" ANN "}}",
	  G, "user:42", G "/user:42", G },
	{ NULL,		/* about a message, by a user */
	  "{\"update_id\":35,\"future_reaction\":{\"message\":{\"message_id\":3,\"chat\":" PRIV42
	  ",\"is_topic_message\":true,\"message_thread_id\":4},\"user\":" BOB "}}",
	  "chat:42", "user:77", "chat:42/user:77", "chat:42/topic:4" },
	{ NULL,		/* a user only */
	  "{\"update_id\":36,\"future_query\":{\"id\":\"q\",\"from\":" ANN "}}",
	  "", "user:42", "", "" },
	{ NULL,		/* a business account's chat stays its own */
	  "{\"update_id\":37,\"future_business\":{\"business_connection_id\":\"AbC_123-x\",\"chat\":"
	  PRIV77 ",\"from\":" BOB ",\"sender_chat\":7}}",
	  BC ":77", "user:77", BC ":77/user:77", BC ":77" },
	{ NULL,		/* nothing to key by */
	  "{\"update_id\":38,\"future_poll\":{\"id\":\"p\",\"chat\":5}}",
	  "", "", "", "" },
};

static const enum key_kind all_kinds[] = { KEY_CHAT, KEY_USER, KEY_CHAT_USER, KEY_CHAT_TOPIC };

static json_t *
parse(const char *text)
{
	json_error_t	 err;
	json_t		*j;

	j = json_loads(text, 0, &err);
	ck_assert_msg(j != NULL, "bad test JSON: %s: %s", err.text, text);
	return j;
}

static void
derive1(const json_t *j, enum key_kind kind, char *buf, size_t size)
{
	struct keyset ks;

	keys_derive(j, &kind, 1, &ks);
	ck_assert_int_le(ks.n, 1);
	snprintf(buf, size, "%s", ks.n == 1 ? ks.k[0] : "");
}

static void
check_kind(const json_t *j, enum key_kind kind, const char *want)
{
	char got[KEY_STRLEN];
	struct keyset ks;

	derive1(j, kind, got, sizeof(got));
	ck_assert_msg(strcmp(got, want) == 0, "kind %s: got \"%s\", want \"%s\"",
	    keys_kind_name(kind), got, want);
	/* the fuzzers' reference must agree with the vectors too */
	keys_ref_derive(j, &kind, 1, &ks);
	ck_assert_msg(strcmp(ks.n == 1 ? ks.k[0] : "", want) == 0,
	    "reference, kind %s: got \"%s\", want \"%s\"",
	    keys_kind_name(kind), ks.n == 1 ? ks.k[0] : "", want);
}

START_TEST(test_vector)
{
	const struct vector	*v = &vectors[_i];
	json_t			*j;
	const char		*type;

	j = parse(v->json);
	type = keys_update_type(j);
	if (v->type == NULL)
		ck_assert_ptr_null(type);
	else
		ck_assert_str_eq(type, v->type);
	check_kind(j, KEY_CHAT, v->chat);
	check_kind(j, KEY_USER, v->user);
	check_kind(j, KEY_CHAT_USER, v->chat_user);
	check_kind(j, KEY_CHAT_TOPIC, v->chat_topic);
	json_decref(j);
}
END_TEST

/* Every kind at once: the keys come in kind order, without duplicates. */
START_TEST(test_vector_all_kinds)
{
	const struct vector	*v = &vectors[_i];
	const char		*want[4] = { v->chat, v->user, v->chat_user, v->chat_topic };
	struct keyset		 ks;
	json_t			*j;
	int			 i, k, n = 0;

	j = parse(v->json);
	keys_derive(j, all_kinds, 4, &ks);
	for (i = 0; i < 4; i++) {
		if (want[i][0] == '\0')
			continue;
		for (k = 0; k < i; k++)
			if (strcmp(want[k], want[i]) == 0)
				break;
		if (k < i)
			continue;
		ck_assert_int_lt(n, ks.n);
		ck_assert_str_eq(ks.k[n], want[i]);
		n++;
	}
	ck_assert_int_eq(ks.n, n);
	json_decref(j);
}
END_TEST

static void
expect(const char *text, enum key_kind kind, const char *want)
{
	json_t *j = parse(text);

	check_kind(j, kind, want);
	json_decref(j);
}

START_TEST(test_kind_names)
{
	enum key_kind	k;
	int		i;

	for (i = 0; i < KEY_KIND_MAX; i++) {
		ck_assert_int_eq(keys_kind_parse(keys_kind_name((enum key_kind)i), &k), 0);
		ck_assert_int_eq(k, i);
	}
	ck_assert_int_eq(keys_kind_parse("chat_user", &k), 0);
	ck_assert_int_eq(k, KEY_CHAT_USER);
	ck_assert_int_eq(keys_kind_parse("Chat", &k), -1);
	ck_assert_int_eq(keys_kind_parse("", &k), -1);
	ck_assert_int_eq(keys_kind_parse("telegram", &k), -1);
	ck_assert_str_eq(keys_kind_name((enum key_kind)99), "unknown");
}
END_TEST

START_TEST(test_not_an_update)
{
	static const char *bad[] = {
		"[]", "null", "5", "\"message\"", "{}", "{\"update_id\":1}",
		"{\"update_id\":1,\"message\":[1,2]}",
		"{\"update_id\":1,\"message\":null}",
		"{\"update_id\":1,\"message\":\"text\"}",
		"{\"update_id\":1,\"message\":{}}",
	};
	struct keyset	ks;
	json_t		*j;
	size_t		i;

	keys_derive(NULL, all_kinds, 4, &ks);
	ck_assert_int_eq(ks.n, 0);
	ck_assert_ptr_null(keys_update_type(NULL));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		j = json_loads(bad[i], JSON_DECODE_ANY, NULL);
		ck_assert_ptr_nonnull(j);
		keys_derive(j, all_kinds, 4, &ks);
		ck_assert_msg(ks.n == 0, "keys from %s", bad[i]);
		json_decref(j);
	}
}
END_TEST

START_TEST(test_mistyped_members)
{
	/* ids must be JSON integers */
	expect("{\"message\":{\"chat\":{\"id\":\"5\"},\"from\":{\"id\":6}}}", KEY_CHAT, "");
	expect("{\"message\":{\"chat\":{\"id\":5.0},\"from\":{\"id\":6}}}", KEY_CHAT, "");
	expect("{\"message\":{\"chat\":{\"id\":5e3}}}", KEY_CHAT, "");
	expect("{\"message\":{\"chat\":{\"id\":true}}}", KEY_CHAT, "");
	expect("{\"message\":{\"chat\":{\"id\":null}}}", KEY_CHAT, "");
	expect("{\"message\":{\"chat\":5}}", KEY_CHAT, "");
	expect("{\"message\":{\"chat\":[{\"id\":5}]}}", KEY_CHAT, "");
	expect("{\"message\":{\"chat\":{\"id\":5},\"from\":{\"id\":\"6\"}}}", KEY_USER, "");
	expect("{\"message\":{\"chat\":{\"id\":5},\"from\":{\"id\":\"6\"}}}", KEY_CHAT_USER, "");
	expect("{\"message\":{\"chat\":{\"id\":5},\"from\":6}}", KEY_CHAT, "chat:5");
	/* a mistyped sender_chat falls back to from */
	expect("{\"message\":{\"chat\":{\"id\":5},\"from\":{\"id\":6},\"sender_chat\":{\"id\":\"x\"}}}",
	    KEY_USER, "user:6");
	/* topic flags must be exactly right */
	expect("{\"message\":{\"chat\":{\"id\":5},\"is_topic_message\":\"true\",\"message_thread_id\":3}}",
	    KEY_CHAT_TOPIC, "chat:5");
	expect("{\"message\":{\"chat\":{\"id\":5},\"is_topic_message\":1,\"message_thread_id\":3}}",
	    KEY_CHAT_TOPIC, "chat:5");
	expect("{\"message\":{\"chat\":{\"id\":5},\"is_topic_message\":true,\"message_thread_id\":\"3\"}}",
	    KEY_CHAT_TOPIC, "chat:5");
	expect("{\"message\":{\"is_topic_message\":true,\"message_thread_id\":3}}",
	    KEY_CHAT_TOPIC, "");
	/* callback_query whose message is not an object */
	expect("{\"callback_query\":{\"from\":{\"id\":6},\"message\":\"m\"}}", KEY_CHAT, "");
	expect("{\"callback_query\":{\"from\":{\"id\":6},\"message\":\"m\"}}", KEY_USER, "user:6");
	expect("{\"chat_boost\":{\"chat\":{\"id\":5},\"boost\":[]}}", KEY_USER, "");
}
END_TEST

/* An unknown type is flagged, and named (safely) for the log. */
START_TEST(test_unknown_type_flagged)
{
	static const char *const cases[][2] = {
		{ "{\"update_id\":1,\"future\":{\"chat\":{\"id\":1}}}", "future" },
		{ "{\"future\":5,\"update_id\":1,\"b\\u0061d\":{}}", "bad" },
		{ "{\"update_id\":1,\"Str\\u00e9nge\":{}}", "?tr??nge" },
		{ "{\"update_id\":1,\"future\":[1]}", "" },
		{ "{\"update_id\":1}", "" },
		/* a repeated member counts where it first came, with its last value */
		{ "{\"a\":{},\"b\":{},\"a\":5}", "b" },
		{ "{\"a\":5,\"b\":{},\"a\":{}}", "a" },
	};
	enum key_kind chat = KEY_CHAT;
	struct keyset ks;
	char name[32];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		keys_type_name(cases[i][0], strlen(cases[i][0]), name,
		    sizeof(name));
		ck_assert_msg(strcmp(name, cases[i][1]) == 0, "%s: \"%s\"",
		    cases[i][0], name);
		keys_derive_text(cases[i][0], strlen(cases[i][0]), &chat, 1,
		    &ks);
		ck_assert_int_eq(ks.unknown, cases[i][1][0] != '\0');
	}
	keys_derive_text("{\"message\":{}}", 14, &chat, 1, &ks);
	ck_assert_int_eq(ks.unknown, 0);
	/* no session key configured: still told */
	keys_derive_text(cases[0][0], strlen(cases[0][0]), NULL, 0, &ks);
	ck_assert_int_eq(ks.unknown, 1);
	ck_assert_int_eq(ks.n, 0);
	/* only the first members are looked at */
	keys_type_name("{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,"
	    "\"h\":8,\"i\":{}}", 56, name, sizeof(name));
	ck_assert_str_eq(name, "");
}
END_TEST

START_TEST(test_first_known_member_wins)
{
	/* a confused server sending two payloads gets a deterministic answer */
	json_t *j = parse("{\"update_id\":1,\"future\":{\"chat\":{\"id\":1}},"
	    "\"callback_query\":{\"from\":{\"id\":6}},\"message\":{\"chat\":{\"id\":5}}}");

	ck_assert_str_eq(keys_update_type(j), "message");
	check_kind(j, KEY_CHAT, "chat:5");
	json_decref(j);
}
END_TEST

START_TEST(test_huge_numbers)
{
	char buf[512];

	expect("{\"message\":{\"chat\":{\"id\":9223372036854775807}}}", KEY_CHAT,
	    "chat:9223372036854775807");
	expect("{\"message\":{\"chat\":{\"id\":-9223372036854775808}}}", KEY_CHAT,
	    "chat:-9223372036854775808");
	expect("{\"message\":{\"chat\":{\"id\":1e300}}}", KEY_CHAT, "");
	/* the longest possible keys still fit, for every kind */
	snprintf(buf, sizeof(buf), "{\"business_message\":{\"business_connection_id\":\"%0200d\","
	    "\"chat\":{\"id\":-9223372036854775808},\"from\":{\"id\":-9223372036854775808},"
	    "\"sender_chat\":{\"id\":-9223372036854775808},"
	    "\"is_topic_message\":true,\"message_thread_id\":-9223372036854775808}}", 7);
	{
		json_t		*j = parse(buf);
		struct keyset	 ks;
		int		 i;

		keys_derive(j, all_kinds, 4, &ks);
		ck_assert_int_eq(ks.n, 4);
		for (i = 0; i < ks.n; i++) {
			ck_assert_int_lt(strlen(ks.k[i]), KEY_STRLEN);
			ck_assert_msg(strncmp(ks.k[i], "bchat:", 6) == 0 ||
			    strncmp(ks.k[i], "chat:", 5) == 0, "%s", ks.k[i]);
		}
		ck_assert_ptr_nonnull(strstr(ks.k[3], "/topic:-9223372036854775808"));
		json_decref(j);
	}
}
END_TEST

START_TEST(test_negative_ids)
{
	expect("{\"message\":{\"chat\":{\"id\":-100500},\"from\":{\"id\":7}}}", KEY_CHAT_USER,
	    "chat:-100500/user:7");
	expect("{\"message\":{\"chat\":{\"id\":-5},\"from\":{\"id\":-7}}}", KEY_USER, "user:-7");
	expect("{\"message\":{\"chat\":{\"id\":0}}}", KEY_CHAT, "chat:0");
}
END_TEST

START_TEST(test_business_distinct)
{
	char	a[KEY_STRLEN], b[KEY_STRLEN], c[KEY_STRLEN];
	json_t	*j;

	j = parse("{\"message\":{\"chat\":{\"id\":77},\"from\":{\"id\":77}}}");
	derive1(j, KEY_CHAT, a, sizeof(a));
	json_decref(j);
	j = parse("{\"business_message\":{\"business_connection_id\":\"c1\",\"chat\":{\"id\":77}}}");
	derive1(j, KEY_CHAT, b, sizeof(b));
	json_decref(j);
	j = parse("{\"business_message\":{\"business_connection_id\":\"c2\",\"chat\":{\"id\":77}}}");
	derive1(j, KEY_CHAT, c, sizeof(c));
	json_decref(j);
	ck_assert_str_eq(a, "chat:77");
	ck_assert_str_eq(b, "bchat:c1:77");
	ck_assert_str_eq(c, "bchat:c2:77");
	/* a business update without a usable connection id: no chat key */
	expect("{\"business_message\":{\"chat\":{\"id\":77},\"from\":{\"id\":8}}}", KEY_CHAT, "");
	expect("{\"business_message\":{\"business_connection_id\":\"\",\"chat\":{\"id\":77}}}", KEY_CHAT, "");
	expect("{\"business_message\":{\"business_connection_id\":5,\"chat\":{\"id\":77}}}", KEY_CHAT, "");
	expect("{\"business_message\":{\"chat\":{\"id\":77},\"from\":{\"id\":8}}}", KEY_USER, "user:8");
	expect("{\"deleted_business_messages\":{\"chat\":{\"id\":77}}}", KEY_CHAT_TOPIC, "");
	expect("{\"business_connection\":{\"id\":7,\"user\":{\"id\":8}}}", KEY_CHAT, "");
	/* plain messages ignore a mistyped connection id */
	expect("{\"message\":{\"business_connection_id\":5,\"chat\":{\"id\":77}}}", KEY_CHAT, "chat:77");
}
END_TEST

START_TEST(test_business_id_escaped)
{
	static const char *longid1 = "{\"business_message\":{\"business_connection_id\":"
	    "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1\","
	    "\"chat\":{\"id\":1}}}";
	static const char *longid2 = "{\"business_message\":{\"business_connection_id\":"
	    "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa2\","
	    "\"chat\":{\"id\":1}}}";
	char	 a[KEY_STRLEN], b[KEY_STRLEN];
	json_t	*j;
	size_t	 i;

	/* separators cannot be forged */
	expect("{\"business_message\":{\"business_connection_id\":\"x:1/user:2\",\"chat\":{\"id\":3}}}",
	    KEY_CHAT, "bchat:x%3A1%2Fuser%3A2:3");
	expect("{\"business_connection\":{\"id\":\"a b\\n\\u00e9\",\"user\":{\"id\":8}}}",
	    KEY_CHAT, "bconn:a%20b%0A%C3%A9");
	j = json_loads("{\"business_connection\":{\"id\":\"a\\u0000b\"}}", JSON_ALLOW_NUL, NULL);
	ck_assert_ptr_nonnull(j);
	check_kind(j, KEY_CHAT, "bconn:a%00b");
	json_decref(j);
	/* long ids are bounded yet stay distinct */
	j = parse(longid1);
	derive1(j, KEY_CHAT, a, sizeof(a));
	json_decref(j);
	j = parse(longid2);
	derive1(j, KEY_CHAT, b, sizeof(b));
	json_decref(j);
	ck_assert_str_ne(a, b);
	ck_assert_int_lt(strlen(a), 70);
	ck_assert_int_eq(strncmp(a, "bchat:aaaa", 10), 0);
	for (i = 0; a[i] != '\0'; i++)
		ck_assert_msg(strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "0123456789_-:%~", a[i]) != NULL, "bad byte in %s", a);
}
END_TEST

START_TEST(test_topic_distinct)
{
	expect("{\"message\":{\"chat\":{\"id\":-1},\"is_topic_message\":true,\"message_thread_id\":1}}",
	    KEY_CHAT_TOPIC, "chat:-1/topic:1");
	expect("{\"message\":{\"chat\":{\"id\":-1},\"is_topic_message\":true,\"message_thread_id\":2}}",
	    KEY_CHAT_TOPIC, "chat:-1/topic:2");
	expect("{\"message\":{\"chat\":{\"id\":-1},\"is_topic_message\":false,\"message_thread_id\":2}}",
	    KEY_CHAT_TOPIC, "chat:-1");
	expect("{\"message\":{\"chat\":{\"id\":-1},\"is_topic_message\":true,\"message_thread_id\":1}}",
	    KEY_CHAT, "chat:-1");
	expect("{\"business_message\":{\"business_connection_id\":\"b\",\"chat\":{\"id\":-1},"
	    "\"is_topic_message\":true,\"message_thread_id\":1}}", KEY_CHAT_TOPIC, "bchat:b:-1/topic:1");
}
END_TEST

START_TEST(test_dedup)
{
	static const enum key_kind cc[] = { KEY_CHAT, KEY_CHAT_TOPIC, KEY_CHAT };
	static const enum key_kind uc[] = { KEY_USER, KEY_CHAT, KEY_USER };
	struct keyset	ks;
	json_t		*j;

	j = parse("{\"message\":{\"chat\":{\"id\":42},\"from\":{\"id\":42}}}");
	keys_derive(j, cc, 3, &ks);
	ck_assert_int_eq(ks.n, 1);
	ck_assert_str_eq(ks.k[0], "chat:42");
	keys_derive(j, uc, 3, &ks);
	ck_assert_int_eq(ks.n, 2);
	ck_assert_str_eq(ks.k[0], "user:42");
	ck_assert_str_eq(ks.k[1], "chat:42");
	keys_derive(j, cc, 0, &ks);
	ck_assert_int_eq(ks.n, 0);
	json_decref(j);
	/* an anonymous channel post: the actor is the chat itself */
	j = parse("{\"channel_post\":{\"chat\":{\"id\":-9},\"sender_chat\":{\"id\":-9}}}");
	keys_derive(j, uc, 3, &ks);
	ck_assert_int_eq(ks.n, 1);
	ck_assert_str_eq(ks.k[0], "chat:-9");
	json_decref(j);
}
END_TEST

START_TEST(test_keys_max)
{
	enum key_kind	many[16];
	struct keyset	ks;
	json_t		*j;
	int		i;

	for (i = 0; i < 16; i++)
		many[i] = (enum key_kind)(i % (KEY_KIND_MAX + 2)) - 1;	/* includes invalid -1, 4 */
	j = parse("{\"message\":{\"chat\":{\"id\":-1},\"from\":{\"id\":2},"
	    "\"is_topic_message\":true,\"message_thread_id\":3}}");
	keys_derive(j, many, 16, &ks);
	ck_assert_int_eq(ks.n, KEYS_MAX);
	ck_assert_str_eq(ks.k[0], "chat:-1");
	ck_assert_str_eq(ks.k[1], "user:2");
	ck_assert_str_eq(ks.k[2], "chat:-1/user:2");
	ck_assert_str_eq(ks.k[3], "chat:-1/topic:3");
	json_decref(j);
}
END_TEST

/* --- jscan: the scanner the keys read updates with ------------------------ */

/* jscan_check() accepts a subset of what jansson accepts. */
START_TEST(test_jscan_check_vs_jansson)
{
	static const struct { const char *text; int ok; } v[] = {
		{ "{}", 1 }, { " [ 1 , -0 , 2.5e-3 , true , null ] ", 1 },
		{ "{\"a\":{\"b\":[{}]},\"c\":\"\\u00e9\\ud83d\\ude00\\n\"}", 1 },
		{ "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"", 1 },
		{ "9223372036854775807", 1 }, { "-9223372036854775808", 1 },
		{ "9223372036854775808", 0 }, { "-9223372036854775809", 0 },
		{ "1e999", 0 },			/* jansson: real overflow */
		{ "{\"a\":1,}", 0 }, { "[1,]", 0 }, { "[01]", 0 }, { "[1.]", 0 },
		{ "[.5]", 0 }, { "[+1]", 0 }, { "[1e]", 0 }, { "[tru]", 0 },
		{ "[\"\\u0000\"]", 0 }, { "[\"\\ud800\"]", 0 },
		{ "[\"\\udc00\"]", 0 }, { "[\"\\ud800\\u0041\"]", 0 },
		{ "[\"\\x\"]", 0 }, { "[\"a\tb\"]", 0 }, { "[\"\xc3\"]", 0 },
		{ "[\"\xc0\xaf\"]", 0 }, { "[\"\xed\xa0\x80\"]", 0 },
		{ "[\"\xf4\x90\x80\x80\"]", 0 }, { "{} {}", 0 }, { "", 0 },
		{ "{\"a\" 1}", 0 }, { "[1 2]", 0 }, { "{1:2}", 0 },
	};
	json_t *j;
	size_t i;
	int ok;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		ok = jscan_check(v[i].text, strlen(v[i].text));
		ck_assert_msg(ok == v[i].ok, "jscan_check(%s) = %d", v[i].text,
		    ok);
		if (!ok)
			continue;
		j = json_loadb(v[i].text, strlen(v[i].text), JSON_DECODE_ANY,
		    NULL);
		ck_assert_msg(j != NULL, "jansson refuses %s", v[i].text);
		json_decref(j);
	}
}
END_TEST

/* Lookups: last duplicate wins, escaped names match, kinds and values. */
START_TEST(test_jscan_lookups)
{
	const char *t = "{\"a\":1,\"n\\u0061me\":\"x\",\"a\":{\"b\":[1,2]},"
	    "\"s\":\"\\u00e9\\ud83d\\ude00\\\"\",\"i\":-42,\"f\":1.5,\"t\":true}";
	struct jspan root, v, e;
	const char *it = NULL;
	char buf[32];
	size_t len;
	int64_t x;
	int n = 0;

	ck_assert(jscan_check(t, strlen(t)));
	root = jscan_span(t, strlen(t));
	ck_assert_int_eq(jscan_member(root, "a", &v), 0);
	ck_assert_int_eq(jscan_kind(v), '{');
	ck_assert_int_eq(jscan_path(root, "a.b", &v), 0);
	while (jscan_next(v, &it, &e))
		n++;
	ck_assert_int_eq(n, 2);
	ck_assert_int_eq(jscan_member(root, "name", &v), 0);
	ck_assert_int_eq(jscan_string(v, buf, sizeof(buf), &len), 0);
	ck_assert_str_eq(buf, "x");
	ck_assert_int_eq(jscan_member(root, "s", &v), 0);
	ck_assert_int_eq(jscan_string(v, buf, sizeof(buf), &len), 0);
	ck_assert_str_eq(buf, "\xc3\xa9\xf0\x9f\x98\x80\"");
	ck_assert_uint_eq(len, 7);
	ck_assert_int_eq(jscan_string(v, buf, 4, &len), -1);	/* too small */
	ck_assert_int_eq(jscan_member(root, "i", &v), 0);
	ck_assert_int_eq(jscan_int(v, &x), 0);
	ck_assert_int_eq(x, -42);
	ck_assert_int_eq(jscan_member(root, "f", &v), 0);
	ck_assert_int_eq(jscan_kind(v), 'n');
	ck_assert_int_eq(jscan_int(v, &x), -1);		/* not an integer */
	ck_assert_int_eq(jscan_member(root, "t", &v), 0);
	ck_assert_int_eq(jscan_kind(v), 't');
	ck_assert_int_eq(jscan_member(root, "zz", &v), -1);
	ck_assert_int_eq(jscan_path(root, "i.x", &v), -1);
}
END_TEST

/* Escaped names longer than any stack buffer still match (and decode). */
START_TEST(test_jscan_long_escaped_name)
{
	char text[4096], name[1100], buf[8];
	struct jspan root, v;
	size_t i, o = 0, len;
	char *d;

	o += (size_t)snprintf(text, sizeof(text), "{\"x\":1,\"\\u0041");
	name[0] = 'A';
	for (i = 1; i < 1000; i++) {
		text[o++] = 'b';
		name[i] = 'b';
	}
	name[i] = '\0';
	snprintf(text + o, sizeof(text) - o, "\":7}");
	ck_assert(jscan_check(text, strlen(text)));
	root = jscan_span(text, strlen(text));
	ck_assert_int_eq(jscan_member(root, name, &v), 0);
	ck_assert_int_eq(jscan_kind(v), 'n');
	/* the name itself, decoded into a buffer too small for it */
	v.p = text + 7;
	v.e = text + strlen(text) - 3;
	ck_assert_ptr_nonnull(d = jscan_decode(v, buf, sizeof(buf), &len));
	ck_assert_ptr_ne(d, buf);
	ck_assert_uint_eq(len, 1000);
	ck_assert_str_eq(d, name);
	free(d);
	ck_assert_ptr_null(jscan_decode(root, buf, sizeof(buf), &len));
}
END_TEST

/* Keys read from the bytes equal keys read from jansson's re-encoding. */
START_TEST(test_keys_text_spellings)
{
	static const char *same[] = {
		"{\"update_id\":1,\"message\":{\"chat\":{\"id\":5},\"from\":{\"id\":7}}}",
		" { \"update_id\" : 1 , \"message\" : { \"chat\" : { \"id\" : 5 } ,"
		    " \"from\" : { \"id\" : 7 } } } ",
		"{\"update_id\":1,\"m\\u0065ssage\":{\"ch\\u0061t\":{\"id\":5},"
		    "\"from\":{\"id\":7}}}",
		/* duplicates: the last one counts */
		"{\"update_id\":1,\"message\":{\"chat\":{\"id\":9},\"from\":{\"id\":7},"
		    "\"chat\":{\"id\":5}}}",
		"{\"message\":5,\"update_id\":1,\"message\":{\"chat\":{\"id\":5},"
		    "\"from\":{\"id\":7}}}",
	};
	static const enum key_kind all[] = { KEY_CHAT, KEY_USER,
	    KEY_CHAT_USER, KEY_CHAT_TOPIC };
	struct keyset a, b;
	json_t *j;
	size_t i;

	for (i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
		keys_derive_text(same[i], strlen(same[i]), all, 4, &a);
		ck_assert_int_eq(a.n, 3);
		ck_assert_str_eq(a.k[0], "chat:5");
		ck_assert_str_eq(a.k[1], "user:7");
		ck_assert_str_eq(a.k[2], "chat:5/user:7");
		/* and the reference, from jansson's reading of the same text */
		j = json_loads(same[i], 0, NULL);
		ck_assert_ptr_nonnull(j);
		keys_ref_derive(j, all, 4, &b);
		ck_assert_int_eq(b.n, a.n);
		ck_assert_str_eq(b.k[0], a.k[0]);
		ck_assert_str_eq(b.k[1], a.k[1]);
		ck_assert_str_eq(b.k[2], a.k[2]);
		json_decref(j);
	}
	/* garbage bytes are safe and give no keys */
	keys_derive_text("{\"message\":{\"chat\":{\"id\":", 24, all, 4, &a);
	ck_assert_int_eq(a.n, 0);
}
END_TEST

static Suite *
keys_suite(void)
{
	Suite	*s = suite_create("keys");
	TCase	*tc = tcase_create("keys");
	int	 nv = (int)(sizeof(vectors) / sizeof(vectors[0]));

	tcase_add_loop_test(tc, test_vector, 0, nv);
	tcase_add_loop_test(tc, test_vector_all_kinds, 0, nv);
	tcase_add_test(tc, test_kind_names);
	tcase_add_test(tc, test_not_an_update);
	tcase_add_test(tc, test_mistyped_members);
	tcase_add_test(tc, test_first_known_member_wins);
	tcase_add_test(tc, test_unknown_type_flagged);
	tcase_add_test(tc, test_huge_numbers);
	tcase_add_test(tc, test_negative_ids);
	tcase_add_test(tc, test_business_distinct);
	tcase_add_test(tc, test_business_id_escaped);
	tcase_add_test(tc, test_topic_distinct);
	tcase_add_test(tc, test_dedup);
	tcase_add_test(tc, test_keys_max);
	suite_add_tcase(s, tc);
	tc = tcase_create("jscan");
	tcase_add_test(tc, test_jscan_check_vs_jansson);
	tcase_add_test(tc, test_jscan_lookups);
	tcase_add_test(tc, test_jscan_long_escaped_name);
	tcase_add_test(tc, test_keys_text_spellings);
	suite_add_tcase(s, tc);
	return s;
}

#define TEST_SUITE	keys_suite
#include "testmain.h"
