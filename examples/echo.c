/* SPDX-License-Identifier: ISC */
/*
 * echo: a tgrunner worker to start a bot from, on the blocking SDK API.
 *
 *   /start              a greeting with an inline keyboard
 *   a button press      answerCallbackQuery at once (Telegram shows a
 *                       spinner until then), then the button's message is
 *                       edited
 *   an edited message   "edited: <text>", as a reply to it
 *   a text message      "echo #<n>: <text>"
 *
 * n counts the messages of that chat.
 * The counter lives in a file per chat under $ECHO_STATE_DIR (default
 * /tmp/tgrunner-echo) and is read, then written back after a short pause.
 * That read-modify-write is deliberately racy: with session keys off, two
 * workers handling the same chat at once lose increments; with tgrunnerd's
 * default session_key = chat they never do, because one chat's updates never
 * run concurrently.
 *
 *   cc -o echo echo.c $(pkg-config --cflags --libs tgrunner-worker)
 *   worker_command = /path/to/echo        (in tgrunner.conf)
 */
#ifdef HAVE_CONFIG_H
#include "config.h"	/* in the tgrunner tree; stand-alone builds skip it */
#endif

#include <sys/stat.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tgrunner-worker.h"

#define ECHO_RACE_MS	10	/* the window between read and write */
#define ECHO_HELLO	"Hello! I echo what you write. Try the buttons."

static const char *
echo_state_dir(void)
{
	const char *dir = getenv("ECHO_STATE_DIR");

	return dir != NULL && *dir != '\0' ? dir : "/tmp/tgrunner-echo";
}

static long
echo_counter_read(const char *path)
{
	FILE *fp;
	long n = 0;

	if ((fp = fopen(path, "r")) == NULL)
		return 0;	/* first message of this chat */
	if (fscanf(fp, "%ld", &n) != 1)
		n = 0;
	fclose(fp);
	return n;
}

static int
echo_counter_write(const char *path, long n)
{
	FILE *fp;

	if ((fp = fopen(path, "w")) == NULL) {
		fprintf(stderr, "echo: %s: %s\n", path, strerror(errno));
		return -1;
	}
	fprintf(fp, "%ld\n", n);
	return fclose(fp) == 0 ? 0 : -1;
}

/* {"inline_keyboard": [[two buttons]]}: new reference */
static json_t *
echo_keyboard(void)
{
	return json_pack("{s:[[{s:s, s:s}, {s:s, s:s}]]}", "inline_keyboard",
	    "text", "Press me", "callback_data", "pressed",
	    "text", "Or me", "callback_data", "pressed too");
}

/* "/name", "/name args" or "/name@bot" */
static int
echo_is_command(const char *text, const char *name)
{
	size_t n = strlen(name);

	return strncmp(text, name, n) == 0 && (text[n] == '\0' ||
	    text[n] == ' ' || text[n] == '@' || text[n] == '\n');
}

/*
 * Answer the query first: until then the user's client shows a spinner.
 * A query older than 15 s cannot be answered any more; the edit still can.
 */
static enum tgw_status
echo_button(struct tgw_ctx *ctx, const json_t *update)
{
	const json_t *cq = json_object_get(update, "callback_query");
	const json_t *msg = json_object_get(cq, "message");
	const char *data = json_string_value(json_object_get(cq, "data"));
	char text[128];
	json_t *params;
	int rc;

	snprintf(text, sizeof(text), "You pressed: %s", data ? data : "");
	params = json_pack("{s:O?, s:s}", "callback_query_id",
	    json_object_get(cq, "id"), "text", text);
	if ((rc = tgw_call(ctx, "answerCallbackQuery", params, NULL)) == -1)
		return TGW_RETRY;	/* the daemon went away */
	if (rc > 0)
		fprintf(stderr, "echo: answerCallbackQuery: error %d\n", rc);
	if (json_is_object(msg))
		params = json_pack("{s:O?, s:O?, s:s, s:o}", "chat_id",
		    json_object_get(json_object_get(msg, "chat"), "id"),
		    "message_id", json_object_get(msg, "message_id"),
		    "text", text, "reply_markup", echo_keyboard());
	else
		params = json_pack("{s:O?, s:s}", "inline_message_id",
		    json_object_get(cq, "inline_message_id"), "text", text);
	if (params != NULL)
		tgw_ctx_add_call(ctx, "editMessageText", params);
	return TGW_DONE;
}

static enum tgw_status
echo_edited(struct tgw_ctx *ctx, const json_t *update, const char *text)
{
	const json_t *msg = json_object_get(update, "edited_message");
	json_t *params;
	int64_t chat;
	size_t len = strlen(text) + 16;
	char *reply;

	if (tgw_update_chat_id(update, &chat) == -1 ||
	    (reply = malloc(len)) == NULL)
		return TGW_DONE;
	snprintf(reply, len, "edited: %s", text);
	params = json_pack("{s:I, s:s, s:{s:O?}}", "chat_id", (json_int_t)chat,
	    "text", reply, "reply_parameters", "message_id",
	    json_object_get(msg, "message_id"));
	free(reply);
	if (params != NULL)
		tgw_ctx_add_call(ctx, "sendMessage", params);
	return TGW_DONE;
}

static enum tgw_status
echo_start(struct tgw_ctx *ctx, const json_t *update)
{
	json_t *params;
	int64_t chat;

	if (tgw_update_chat_id(update, &chat) == -1)
		return TGW_DONE;
	params = json_pack("{s:I, s:s, s:o}", "chat_id", (json_int_t)chat,
	    "text", ECHO_HELLO, "reply_markup", echo_keyboard());
	if (params != NULL)
		tgw_ctx_add_call(ctx, "sendMessage", params);
	return TGW_DONE;
}

/* The racy counter: see the top of the file. */
static enum tgw_status
echo_text(struct tgw_ctx *ctx, const json_t *update, const char *text)
{
	char path[4096], *reply;
	size_t len;
	int64_t chat;
	long n;

	if (tgw_update_chat_id(update, &chat) == -1)
		return TGW_DONE;	/* nothing to echo */
	snprintf(path, sizeof(path), "%s/%" PRId64, echo_state_dir(), chat);
	n = echo_counter_read(path) + 1;
	if (tgw_sleep(ctx, ECHO_RACE_MS))
		return TGW_RETRY;	/* cancelled: nothing written yet */
	if (echo_counter_write(path, n) == -1) {
		tgw_ctx_set_error(ctx, "cannot write the counter");
		return TGW_RETRY;
	}
	len = strlen(text) + 32;
	if ((reply = malloc(len)) == NULL)
		return TGW_RETRY;
	snprintf(reply, len, "echo #%ld: %s", n, text);
	tgw_reply_text(ctx, reply);
	free(reply);
	return TGW_DONE;
}

static enum tgw_status
echo_handle(struct tgw_ctx *ctx, const json_t *update, void *arg)
{
	const char *type = tgw_update_type(update);
	const char *text = tgw_update_text(update);

	(void)arg;
	if (type != NULL && strcmp(type, "callback_query") == 0)
		return echo_button(ctx, update);
	if (text == NULL)
		return TGW_DONE;	/* a sticker, a poll...: nothing */
	if (strcmp(type, "edited_message") == 0)
		return echo_edited(ctx, update, text);
	if (echo_is_command(text, "/start"))
		return echo_start(ctx, update);
	return echo_text(ctx, update, text);
}

int
main(void)
{
	struct tgw_config cfg = { .slots = 1, .name = "echo" };

	if (mkdir(echo_state_dir(), 0700) == -1 && errno != EEXIST) {
		fprintf(stderr, "echo: %s: %s\n", echo_state_dir(),
		    strerror(errno));
		return 1;
	}
	return tgw_run(&cfg, echo_handle, NULL) == 0 ? 0 : 1;
}
