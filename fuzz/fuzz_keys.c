/*
 * Fuzz session-key derivation: the input is an Update as the Bot API might
 * send it (JSON text).  Every subset of kinds, plus a list with repeats, must
 * yield at most KEYS_MAX distinct, bounded keys made of safe bytes only,
 * and, where the text is JSON the daemon's scanner takes, the very keys
 * of the independent reference derivation (tests/unit/keys_ref.c).
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jscan.h"
#include "keys.h"
#include "keys_ref.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
fuzz_check(const struct keyset *ks)
{
	static const char	 safe[] = "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-:/%~";
	size_t			 len;
	int			 i, j;

	if (ks->n < 0 || ks->n > KEYS_MAX)
		abort();
	for (i = 0; i < ks->n; i++) {
		len = strnlen(ks->k[i], KEY_STRLEN);
		if (len == 0 || len >= KEY_STRLEN)
			abort();
		if (strspn(ks->k[i], safe) != len)
			abort();
		for (j = 0; j < i; j++)
			if (strcmp(ks->k[i], ks->k[j]) == 0)
				abort();
	}
}

/* The daemon's derivation from the bytes against the reference's. */
static void
fuzz_oracle(const uint8_t *data, size_t size, const json_t *update,
    const enum key_kind *kinds, int n)
{
	struct keyset a, b;
	int i;

	keys_derive_text((const char *)data, size, kinds, n, &a);
	keys_ref_derive(update, kinds, n, &b);
	if (a.n != b.n || a.unknown != b.unknown)
		abort();
	for (i = 0; i < a.n; i++)
		if (strcmp(a.k[i], b.k[i]) != 0)
			abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum key_kind	 repeats[] = { KEY_CHAT_TOPIC,
	    KEY_CHAT_USER, KEY_USER, KEY_CHAT, KEY_CHAT, KEY_CHAT_TOPIC,
	    (enum key_kind)KEY_KIND_MAX };
	enum key_kind			 kinds[KEY_KIND_MAX];
	struct keyset			 ks;
	json_t				*update;
	int				 set, n, k, scans;

	update = json_loadb((const char *)data, size,
	    JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	if (update == NULL)
		return 0;
	(void)keys_update_type(update);
	scans = jscan_check((const char *)data, size);
	for (set = 0; set < (1 << KEY_KIND_MAX); set++) {
		for (n = 0, k = 0; k < KEY_KIND_MAX; k++)
			if (set & (1 << k))
				kinds[n++] = (enum key_kind)k;
		keys_derive(update, kinds, n, &ks);
		fuzz_check(&ks);
		if (n == 0 && ks.n != 0)
			abort();
		if (scans)
			fuzz_oracle(data, size, update, kinds, n);
	}
	keys_derive(update, repeats, (int)(sizeof(repeats) /
	    sizeof(repeats[0])), &ks);
	fuzz_check(&ks);
	json_decref(update);
	return 0;
}
