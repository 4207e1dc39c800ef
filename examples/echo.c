/*
 * echo: the smallest useful tgrunner worker, on the blocking SDK API.
 *
 * Replies "echo #<n>: <text>" where n counts the messages of that chat.
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

static enum tgw_status
echo_handle(struct tgw_ctx *ctx, const json_t *update, void *arg)
{
	const char *text = tgw_update_text(update);
	char path[4096], *reply;
	size_t len;
	int64_t chat;
	long n;

	(void)arg;
	if (text == NULL || tgw_update_chat_id(update, &chat) == -1)
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
