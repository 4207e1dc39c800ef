/*
 * Fuzz target: a getUpdates response body, as an untrusted server could send
 * it, through poller_parse(), then every accepted update through
 * keys_derive() for each key kind and for all of them at once, the way
 * the daemon handles a batch.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "keys.h"
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

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *arr = NULL, *u;
	size_t bad, i;
	int code, retry;
	char desc[256];

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
