/*
 * Fuzz target: a getUpdates response body, as an untrusted server could send
 * it, through poller_parse(), then every accepted update through
 * keys_derive() for each key kind and for all of them at once, the way
 * the daemon handles a batch.
 *
 * The same bytes also hold jscan (the tree-less scanner of the hot path)
 * to jansson: whatever jscan_check() accepts jansson must accept; every
 * member jscan finds must equal jansson's (last duplicate, escaped names);
 * integers and strings must read the same.  And the keys the daemon
 * derives from the raw bytes (keys_derive_text) must equal those of an
 * independent derivation from jansson's tree (tests/unit/keys_ref.c),
 * for the whole body and for each update in it.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "jscan.h"
#include "keys.h"
#include "keys_ref.h"
#include "poller.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
fuzz_keys(const json_t *u)
{
	static const enum key_kind all[] = { KEY_CHAT, KEY_USER,
	    KEY_CHAT_USER, KEY_CHAT_TOPIC };
	struct keyset ks;
	int k, i;

	for (k = 0; k < KEY_KIND_MAX; k++) {
		keys_derive(u, all + k, 1, &ks);
		if (ks.n < 0 || ks.n > KEYS_MAX)
			__builtin_trap();
		for (i = 0; i < ks.n; i++)
			if (memchr(ks.k[i], '\0', KEY_STRLEN) == NULL)
				__builtin_trap();
	}
	keys_derive(u, all, KEY_KIND_MAX, &ks);
	keys_derive(u, all, 0, &ks);
	if (ks.n != 0)
		__builtin_trap();
	(void)keys_update_type(u);
}

static void
fuzz_jscan_member(struct jspan obj, const char *name, json_t *want)
{
	struct jspan m;
	json_t *got;
	int64_t x;
	char buf[4096];
	size_t len;

	if (jscan_member(obj, name, &m) == -1)
		__builtin_trap();
	got = json_loadb(m.p, (size_t)(m.e - m.p), JSON_DECODE_ANY, NULL);
	if (got == NULL || !json_equal(got, want))
		__builtin_trap();
	json_decref(got);
	if (json_is_integer(want) && (jscan_int(m, &x) == -1 ||
	    x != json_integer_value(want)))
		__builtin_trap();
	if (!json_is_integer(want) && jscan_int(m, &x) == 0)
		__builtin_trap();
	if (json_is_string(want) && jscan_string(m, buf, sizeof(buf),
	    &len) == 0 && (len != json_string_length(want) ||
	    memcmp(buf, json_string_value(want), len) != 0))
		__builtin_trap();
}

/* The daemon's keys from the bytes == the reference's from the tree. */
static void
fuzz_same_keys(const char *text, size_t len, const json_t *tree)
{
	static const enum key_kind all[] = { KEY_CHAT, KEY_USER,
	    KEY_CHAT_USER, KEY_CHAT_TOPIC };
	struct keyset a, b;
	const char *ta, *tb;
	int i, k;

	for (k = 0; k <= KEY_KIND_MAX; k++) {
		/* each kind alone, then all of them */
		keys_ref_derive(tree, k < KEY_KIND_MAX ? all + k : all,
		    k < KEY_KIND_MAX ? 1 : KEY_KIND_MAX, &a);
		keys_derive_text(text, len, k < KEY_KIND_MAX ? all + k : all,
		    k < KEY_KIND_MAX ? 1 : KEY_KIND_MAX, &b);
		if (a.n != b.n || a.unknown != b.unknown)
			__builtin_trap();
		for (i = 0; i < a.n; i++)
			if (strcmp(a.k[i], b.k[i]) != 0)
				__builtin_trap();
	}
	ta = keys_ref_update_type(tree);
	tb = keys_update_type_text(text, len);
	if ((ta == NULL) != (tb == NULL) || (ta != NULL && strcmp(ta, tb) != 0))
		__builtin_trap();
}

/* Each update of the result: its own bytes against its own tree. */
static void
fuzz_jscan_updates(struct jspan root, json_t *res)
{
	struct jspan r, u;
	const char *it = NULL;
	size_t n = 0;

	if (!json_is_array(res) || jscan_member(root, "result", &r) == -1)
		return;
	while (jscan_next(r, &it, &u))
		fuzz_same_keys(u.p, (size_t)(u.e - u.p),
		    json_array_get(res, n++));
	if (n != json_array_size(res))
		__builtin_trap();
}

static void
fuzz_jscan(const char *data, size_t size)
{
	struct jspan root;
	const char *k;
	json_t *j, *v;

	if (!jscan_check(data, size))
		return;
	if ((j = json_loadb(data, size, JSON_DECODE_ANY, NULL)) == NULL)
		__builtin_trap();	/* jscan accepted what jansson refuses */
	root = jscan_span(data, size);
	if (json_is_object(j)) {
		json_object_foreach(j, k, v)
			fuzz_jscan_member(root, k, v);
		fuzz_same_keys(data, size, j);
		fuzz_jscan_updates(root, json_object_get(j, "result"));
	}
	json_decref(j);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *arr = NULL, *u;
	size_t bad, i;
	int code, retry;
	char desc[256];

	fuzz_jscan((const char *)data, size);
	if (poller_parse((const char *)data, size, &arr, &bad, &code, &retry,
	    desc, sizeof(desc)) != 0) {
		if (arr != NULL)
			__builtin_trap();
		return 0;
	}
	json_array_foreach(arr, i, u) {
		if (!json_is_integer(json_object_get(u, "update_id")))
			__builtin_trap();
		fuzz_keys(u);
	}
	json_decref(arr);
	return 0;
}
