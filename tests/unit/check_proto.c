/* SPDX-License-Identifier: ISC */
/*
 * The frame codec, driven by the shared test vectors in proto/vectors
 * ($TG_SRCDIR/proto/vectors) plus the cases too big or too binary to keep
 * as files.
 */
#include "config.h"

#include <sys/stat.h>

#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

#define ANY_DIR	(PROTO_W2D | PROTO_D2W)

static char vecdir[4096];

static void
find_vectors(void)
{
	const char *cands[] = { getenv("TG_SRCDIR"), "..", ".", "../.." };
	struct stat st;
	size_t i;

	for (i = 0; i < sizeof(cands) / sizeof(cands[0]); i++) {
		if (cands[i] == NULL)
			continue;
		snprintf(vecdir, sizeof(vecdir), "%s/proto/vectors", cands[i]);
		if (stat(vecdir, &st) == 0 && S_ISDIR(st.st_mode))
			return;
	}
	vecdir[0] = '\0';
}

/* Read a vector, dropping the one trailing newline of the wire format. */
static char *
read_vector(const char *path, size_t *len)
{
	char *buf;
	long n;
	FILE *fp;

	fp = fopen(path, "rb");
	ck_assert_msg(fp != NULL, "cannot open %s", path);
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	rewind(fp);
	buf = malloc(n > 0 ? n : 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(fread(buf, 1, n, fp), n);
	fclose(fp);
	ck_assert_msg(n > 0 && buf[n - 1] == '\n', "%s: no newline", path);
	*len = n - 1;
	return buf;
}

typedef void (*vector_fn)(const char *name, const char *buf, size_t len);

static int
for_each_vector(const char *sub, vector_fn fn)
{
	char path[8192];
	struct dirent *de;
	size_t len;
	char *buf;
	DIR *d;
	int n = 0;

	ck_assert_msg(vecdir[0] != '\0', "proto/vectors not found; set "
	    "TG_SRCDIR");
	snprintf(path, sizeof(path), "%s/%s", vecdir, sub);
	d = opendir(path);
	ck_assert_msg(d != NULL, "cannot open %s", path);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s/%s", vecdir, sub,
		    de->d_name);
		buf = read_vector(path, &len);
		fn(de->d_name, buf, len);
		free(buf);
		n++;
	}
	closedir(d);
	return n;
}

/* Every member the encoder wrote has the value the original had. */
static void
assert_subset(const char *name, json_t *enc, json_t *orig)
{
	const char *key;
	json_t *v;

	json_object_foreach(enc, key, v)
		ck_assert_msg(json_equal(v, json_object_get(orig, key)),
		    "%s: member %s changed in the round trip", name, key);
}

static void
check_valid(const char *name, const char *buf, size_t len)
{
	struct frame f, g, h;
	char err[256] = "", *e1, *e2;
	size_t l1, l2;
	unsigned other;

	ck_assert_msg(proto_decode(buf, len, ANY_DIR, &f, err,
	    sizeof(err)) == 0, "%s: refused: %s", name, err);
	other = ANY_DIR & ~proto_type_dir(f.type);
	ck_assert_msg(proto_decode(buf, len, other, &h, err,
	    sizeof(err)) == -1, "%s: accepted from the wrong direction", name);
	ck_assert_int_eq(h.type, FRAME_NONE);

	e1 = proto_encode(&f, &l1);
	ck_assert_msg(e1 != NULL, "%s: cannot encode", name);
	ck_assert_int_eq(e1[l1 - 1], '\n');
	ck_assert_ptr_null(memchr(e1, '\n', l1 - 1));
	ck_assert_msg(proto_decode(e1, l1 - 1, proto_type_dir(f.type), &g,
	    err, sizeof(err)) == 0, "%s: re-decode: %s", name, err);
	ck_assert_int_eq(g.type, f.type);
	assert_subset(name, g.root, f.root);
	e2 = proto_encode(&g, &l2);
	ck_assert_ptr_nonnull(e2);
	ck_assert_msg(l1 == l2 && memcmp(e1, e2, l1) == 0,
	    "%s: encoding is not stable", name);
	free(e1);
	free(e2);
	frame_clear(&g);
	frame_clear(&f);
	ck_assert_ptr_null(f.root);
}

static void
check_invalid(const char *name, const char *buf, size_t len)
{
	unsigned dir;
	struct frame f;
	char err[256] = "";

	if (strncmp(name, "w2d_", 4) == 0)
		dir = PROTO_W2D;
	else if (strncmp(name, "d2w_", 4) == 0)
		dir = PROTO_D2W;
	else
		ck_abort_msg("%s: name must start with w2d_ or d2w_", name);
	ck_assert_msg(proto_decode(buf, len, dir, &f, err, sizeof(err)) == -1,
	    "%s: accepted", name);
	ck_assert_msg(err[0] != '\0', "%s: no reason given", name);
	ck_assert_ptr_null(f.root);
}

/* Well-formed, of a type nobody knows: the daemon refuses it, a worker ignores it. */
static void
check_ignored(const char *name, const char *buf, size_t len)
{
	struct frame f;
	char err[256] = "";
	json_t *root;

	ck_assert_msg(strncmp(name, "d2w_", 4) == 0, "%s: not d2w_", name);
	ck_assert_msg(proto_decode(buf, len, PROTO_D2W, &f, err,
	    sizeof(err)) == -1, "%s: accepted", name);
	ck_assert_msg(strstr(err, "unknown frame type") != NULL, "%s: %s",
	    name, err);
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
	ck_assert_msg(json_is_object(root), "%s: not a JSON object", name);
	json_decref(root);
}

START_TEST(vectors_valid)
{
	ck_assert_int_ge(for_each_vector("valid", check_valid), 40);
}
END_TEST

START_TEST(vectors_invalid)
{
	ck_assert_int_ge(for_each_vector("invalid", check_invalid), 100);
}
END_TEST

START_TEST(vectors_ignored)
{
	ck_assert_int_ge(for_each_vector("ignored", check_ignored), 2);
}
END_TEST

/* One line of proto/vectors/sized: built, then judged like a file. */
static void
check_sized(char *spec)
{
	char verdict[16], dir[8], *tmpl, *at, *buf;
	size_t total, head, tail;
	struct frame f;
	int n;

	n = 0;
	ck_assert_msg(sscanf(spec, "%15s %7s %zu %n", verdict, dir, &total,
	    &n) == 3 && n > 0, "sized: bad line %s", spec);
	tmpl = spec + n;
	tmpl[strcspn(tmpl, "\n")] = '\0';
	ck_assert_ptr_nonnull(at = strchr(tmpl, '@'));
	head = at - tmpl;
	tail = strlen(at + 1);
	ck_assert(total > head + tail + 1);
	buf = malloc(total);
	ck_assert_ptr_nonnull(buf);
	memcpy(buf, tmpl, head);
	memset(buf + head, 'x', total - 1 - head - tail);
	memcpy(buf + total - 1 - tail, at + 1, tail);
	buf[total - 1] = '\n';
	if (strcmp(verdict, "valid") == 0)
		check_valid(tmpl, buf, total - 1);
	else {
		ck_assert_str_eq(verdict, "invalid");
		ck_assert_int_eq(proto_decode(buf, total - 1,
		    strcmp(dir, "w2d") == 0 ? PROTO_W2D : PROTO_D2W, &f, NULL,
		    0), -1);
	}
	free(buf);
}

START_TEST(vectors_sized)
{
	char path[8192], line[1024];
	FILE *fp;
	int n = 0;

	snprintf(path, sizeof(path), "%s/sized", vecdir);
	ck_assert_msg((fp = fopen(path, "r")) != NULL, "cannot open %s",
	    path);
	while (fgets(line, sizeof(line), fp) != NULL) {
		if (line[0] == '#' || line[0] == '\n')
			continue;
		check_sized(line);
		n++;
	}
	fclose(fp);
	ck_assert_int_ge(n, 4);
}
END_TEST

START_TEST(type_table)
{
	int t;

	for (t = FRAME_NONE + 1; t < FRAME_MAX; t++) {
		ck_assert_ptr_nonnull(proto_type_name(t));
		ck_assert_int_eq(proto_type_lookup(proto_type_name(t)), t);
		ck_assert(proto_type_dir(t) == PROTO_W2D ||
		    proto_type_dir(t) == PROTO_D2W);
	}
	ck_assert_ptr_null(proto_type_name(FRAME_NONE));
	ck_assert_ptr_null(proto_type_name(FRAME_MAX));
	ck_assert_int_eq(proto_type_lookup("nope"), FRAME_NONE);
	ck_assert_int_eq(proto_type_lookup(NULL), FRAME_NONE);
	ck_assert_int_eq(proto_type_lookup("HELLO"), FRAME_NONE);
	ck_assert_int_eq(proto_type_dir(FRAME_HELLO), PROTO_W2D);
	ck_assert_int_eq(proto_type_dir(FRAME_UPDATE), PROTO_D2W);
	ck_assert_int_eq(proto_type_dir(FRAME_MAX), 0);
}
END_TEST

/* A done frame padded to exactly total bytes (newline not included). */
static char *
padded_done(size_t total)
{
	const char head[] = "{\"type\":\"done\",\"id\":1,\"pad\":\"";
	char *buf = malloc(total);

	ck_assert_ptr_nonnull(buf);
	memcpy(buf, head, sizeof(head) - 1);
	memset(buf + sizeof(head) - 1, 'x', total - sizeof(head) - 1);
	memcpy(buf + total - 2, "\"}", 2);
	return buf;
}

START_TEST(frame_size_limit)
{
	struct frame f;
	char err[128];
	char *buf;

	/* PROTO_MAX_FRAME includes the newline. */
	buf = padded_done(PROTO_MAX_FRAME - 1);
	ck_assert_int_eq(proto_decode(buf, PROTO_MAX_FRAME - 1, PROTO_W2D,
	    &f, err, sizeof(err)), 0);
	frame_clear(&f);
	free(buf);
	buf = padded_done(PROTO_MAX_FRAME);
	ck_assert_int_eq(proto_decode(buf, PROTO_MAX_FRAME, PROTO_W2D, &f,
	    err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "longer"));
	free(buf);
}
END_TEST

START_TEST(not_nul_terminated)
{
	const char text[] = "{\"type\":\"done\",\"id\":12}";
	struct frame f;
	char *buf;

	/* Exactly len bytes, no terminator: ASan catches any over-read. */
	buf = malloc(sizeof(text) - 1);
	memcpy(buf, text, sizeof(text) - 1);
	ck_assert_int_eq(proto_decode(buf, sizeof(text) - 1, PROTO_W2D, &f,
	    NULL, 0), 0);
	ck_assert_int_eq(f.u.done.id, 12);
	frame_clear(&f);
	free(buf);
	/* Bytes beyond len are not part of the frame. */
	ck_assert_int_eq(proto_decode("{\"type\":\"done\",\"id\":1}}}}", 22,
	    PROTO_W2D, &f, NULL, 0), 0);
	frame_clear(&f);
	ck_assert_int_eq(proto_decode(text, sizeof(text) - 2, PROTO_W2D, &f,
	    NULL, 0), -1);
	ck_assert_int_eq(proto_decode(NULL, 0, PROTO_W2D, &f, NULL, 0), -1);
}
END_TEST

START_TEST(nul_bytes)
{
	const char text[] = "{\"type\":\"done\",\"id\":1}\0";
	struct frame f;
	char err[128];

	ck_assert_int_eq(proto_decode(text, sizeof(text) - 1, PROTO_W2D, &f,
	    err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "NUL"));
	ck_assert_int_eq(proto_decode("\0", 1, PROTO_W2D, &f, err,
	    sizeof(err)), -1);
}
END_TEST

/* The exact SDK spelling of done takes a shortcut that must mean the same. */
START_TEST(done_fast_path)
{
	static const char *good[] = { "0", "5", "42", "999999999999999999",
	    "1000000000000000000", "9223372036854775807" };
	static const char *bad[] = { "007", "-1", "1.5", "1e3", "",
	    "9223372036854775808", "\"5\"", "5 5" };
	char fast[128], slow[128], err[256];
	struct frame a, b;
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(fast, sizeof(fast), "{\"type\":\"done\",\"id\":%s}",
		    good[i]);
		/* a space is enough to take the full path */
		snprintf(slow, sizeof(slow), "{\"type\":\"done\", \"id\":%s}",
		    good[i]);
		ck_assert_int_eq(proto_decode(fast, strlen(fast), PROTO_W2D,
		    &a, err, sizeof(err)), 0);
		ck_assert_int_eq(proto_decode(slow, strlen(slow), PROTO_W2D,
		    &b, err, sizeof(err)), 0);
		ck_assert_int_eq(a.type, FRAME_DONE);
		ck_assert_int_eq(a.u.done.id, b.u.done.id);
		ck_assert_int_eq(a.u.done.id, strtoll(good[i], NULL, 10));
		ck_assert_ptr_null(a.u.done.calls);
		frame_clear(&a);
		frame_clear(&b);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(fast, sizeof(fast), "{\"type\":\"done\",\"id\":%s}",
		    bad[i]);
		ck_assert_int_eq(proto_decode(fast, strlen(fast), PROTO_W2D,
		    &a, err, sizeof(err)), -1);
	}
	/* a worker never receives done */
	snprintf(fast, sizeof(fast), "{\"type\":\"done\",\"id\":5}");
	ck_assert_int_eq(proto_decode(fast, strlen(fast), PROTO_D2W, &a, err,
	    sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "direction"));
	/* trailing bytes after the object are not a done frame */
	ck_assert_int_eq(proto_decode("{\"type\":\"done\",\"id\":5}}", 23,
	    PROTO_W2D, &a, err, sizeof(err)), -1);
}
END_TEST

START_TEST(decoded_members)
{
	const char *l = "{\"type\":\"result\",\"ref\":\"a\",\"ok\":false,"
	    "\"error_code\":429,\"description\":\"slow\","
	    "\"parameters\":{\"retry_after\":3},\"retry_after\":3}";
	struct frame f;

	ck_assert_int_eq(proto_decode(l, strlen(l), PROTO_D2W, &f, NULL, 0),
	    0);
	ck_assert_int_eq(f.type, FRAME_RESULT);
	ck_assert_str_eq(json_string_value(f.u.result.ref), "a");
	ck_assert_int_eq(f.u.result.ok, 0);
	ck_assert_int_eq(f.u.result.error_code, 429);
	ck_assert_str_eq(f.u.result.description, "slow");
	ck_assert_int_eq(f.u.result.retry_after, 3);
	ck_assert(json_is_object(f.u.result.parameters));
	frame_clear(&f);

	l = "{\"type\":\"hello\",\"protocol\":1,\"slots\":8,\"name\":\"n\"}";
	ck_assert_int_eq(proto_decode(l, strlen(l), PROTO_W2D, &f, NULL, 0),
	    0);
	ck_assert_int_eq(f.u.hello.slots, 8);
	ck_assert_str_eq(f.u.hello.name, "n");
	frame_clear(&f);

	l = "{\"type\":\"fail\",\"id\":4,\"error\":\"e\"}";
	ck_assert_int_eq(proto_decode(l, strlen(l), PROTO_W2D, &f, NULL, 0),
	    0);
	ck_assert_int_eq(f.u.fail.retry, 0);
	frame_clear(&f);
}
END_TEST

START_TEST(encode_update_parses_back)
{
	const char *keys[] = { "chat:5", "odd\"key\\with\nctl\x01" };
	const char *upd = "{\"update_id\":77,\"message\":{\"text\":\"hi\"}}";
	json_t *u;
	struct frame f;
	char err[128], *line;
	size_t len;

	line = proto_encode_update(77, keys, 2, 2, 1700000000123LL, upd,
	    strlen(upd), &len);
	ck_assert_ptr_nonnull(line);
	ck_assert_int_eq(len, strlen(line));
	ck_assert_int_eq(line[len - 1], '\n');
	ck_assert_ptr_null(memchr(line, '\n', len - 1));
	ck_assert_msg(proto_decode(line, len - 1, PROTO_D2W, &f, err,
	    sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(f.type, FRAME_UPDATE);
	ck_assert_int_eq(f.u.update.id, 77);
	ck_assert_int_eq(f.u.update.attempt, 2);
	ck_assert_int_eq(f.u.update.deadline, 1700000000123LL);
	ck_assert_int_eq(json_array_size(f.u.update.keys), 2);
	ck_assert_str_eq(json_string_value(json_array_get(f.u.update.keys, 0)),
	    keys[0]);
	ck_assert_str_eq(json_string_value(json_array_get(f.u.update.keys, 1)),
	    keys[1]);
	u = json_loads(upd, 0, NULL);
	ck_assert(json_equal(u, f.u.update.update));
	json_decref(u);
	frame_clear(&f);
	free(line);

	line = proto_encode_update(1, NULL, 0, 1, 0, upd, strlen(upd), &len);
	ck_assert_ptr_nonnull(line);
	ck_assert_ptr_nonnull(strstr(line, "\"keys\":[]"));
	free(line);
}
END_TEST

START_TEST(encode_update_refuses)
{
	const char *upd = "{\"update_id\":1}";
	size_t len;
	char *big;

	ck_assert_ptr_null(proto_encode_update(1, NULL, 0, 1, 0,
	    "{\"a\":\n1}", 8, &len));
	ck_assert_ptr_null(proto_encode_update(1, NULL, 0, 0, 0, upd,
	    strlen(upd), &len));
	ck_assert_ptr_null(proto_encode_update(-1, NULL, 0, 1, 0, upd,
	    strlen(upd), &len));
	ck_assert_ptr_null(proto_encode_update(1, NULL, 0, 1, 0, upd, 0,
	    &len));
	ck_assert_ptr_null(proto_encode_update(1, NULL, 0, 1, 0, "{\"a\0",
	    4, &len));
	/* An Update that does not fit in a frame with its envelope. */
	big = padded_done(PROTO_MAX_FRAME - 40);
	ck_assert_ptr_null(proto_encode_update(1, NULL, 0, 1, 0, big,
	    PROTO_MAX_FRAME - 40, &len));
	free(big);
}
END_TEST

START_TEST(encode_refuses_invalid)
{
	struct frame f;
	json_t *calls;
	size_t len;
	int i;

	memset(&f, 0, sizeof(f));
	f.type = FRAME_DONE;
	f.u.done.id = 1;
	f.u.done.calls = calls = json_array();
	for (i = 0; i <= PROTO_MAX_CALLS; i++)
		json_array_append_new(calls, json_pack("{s:s}", "method",
		    "getMe"));
	ck_assert_ptr_null(proto_encode(&f, &len));
	json_array_clear(calls);
	json_array_append_new(calls, json_pack("{s:s}", "method", "a b"));
	ck_assert_ptr_null(proto_encode(&f, &len));
	json_decref(calls);

	memset(&f, 0, sizeof(f));
	f.type = FRAME_HELLO;
	f.u.hello.protocol = 1;
	ck_assert_ptr_null(proto_encode(&f, &len));	/* slots 0 */
	f.type = FRAME_NONE;
	ck_assert_ptr_null(proto_encode(&f, &len));
	f.type = FRAME_MAX;
	ck_assert_ptr_null(proto_encode(&f, &len));
	ck_assert_ptr_null(proto_encode(NULL, &len));
}
END_TEST

START_TEST(encode_refuses_oversize)
{
	struct frame f;
	size_t len;
	char *big;

	big = malloc(PROTO_MAX_FRAME);
	memset(big, 'y', PROTO_MAX_FRAME - 1);
	big[PROTO_MAX_FRAME - 1] = '\0';
	memset(&f, 0, sizeof(f));
	f.type = FRAME_FAIL;
	f.u.fail.id = 1;
	f.u.fail.error = big;
	ck_assert_ptr_null(proto_encode(&f, &len));
	big[1000] = '\0';
	free(proto_encode(&f, &len));
	free(big);
}
END_TEST

START_TEST(encode_round_trip_structs)
{
	struct frame f, g;
	size_t len;
	char *line;

	memset(&f, 0, sizeof(f));
	f.type = FRAME_CALL;
	f.u.call.id = 9;
	f.u.call.ref = json_integer(3);
	f.u.call.method = "sendChatAction";
	f.u.call.params = json_pack("{s:i, s:s}", "chat_id", 5, "action",
	    "typing");
	line = proto_encode(&f, &len);
	ck_assert_ptr_nonnull(line);
	ck_assert_int_eq(proto_decode(line, len - 1, PROTO_W2D, &g, NULL, 0),
	    0);
	ck_assert_int_eq(g.u.call.id, 9);
	ck_assert(json_equal(g.u.call.ref, f.u.call.ref));
	ck_assert_str_eq(g.u.call.method, "sendChatAction");
	ck_assert(json_equal(g.u.call.params, f.u.call.params));
	frame_clear(&g);
	free(line);
	json_decref(f.u.call.ref);
	json_decref(f.u.call.params);

	memset(&f, 0, sizeof(f));
	f.type = FRAME_SHUTDOWN;
	line = proto_encode(&f, &len);
	ck_assert_str_eq(line, "{\"type\":\"shutdown\"}\n");
	free(line);
}
END_TEST

static Suite *
proto_suite(void)
{
	Suite *s = suite_create("proto");
	TCase *tc = tcase_create("codec");

	tcase_add_test(tc, vectors_valid);
	tcase_add_test(tc, vectors_invalid);
	tcase_add_test(tc, vectors_ignored);
	tcase_add_test(tc, vectors_sized);
	tcase_add_test(tc, type_table);
	tcase_add_test(tc, frame_size_limit);
	tcase_add_test(tc, not_nul_terminated);
	tcase_add_test(tc, nul_bytes);
	tcase_add_test(tc, decoded_members);
	tcase_add_test(tc, done_fast_path);
	tcase_add_test(tc, encode_update_parses_back);
	tcase_add_test(tc, encode_update_refuses);
	tcase_add_test(tc, encode_refuses_invalid);
	tcase_add_test(tc, encode_refuses_oversize);
	tcase_add_test(tc, encode_round_trip_structs);
	suite_add_tcase(s, tc);
	return s;
}

static int
proto_test_init(void)
{
	find_vectors();
	return 0;
}

#define TEST_SUITE	proto_suite
#define TEST_INIT	proto_test_init
#include "testmain.h"
