/* SPDX-License-Identifier: ISC */
/*
 * The reference derivation of session keys (keys_ref.c): same contract as
 * keys_derive(), from a jansson tree, by code that shares nothing with
 * daemon/keys.c.
 */
#ifndef TG_KEYS_REF_H
#define TG_KEYS_REF_H

#include <jansson.h>

#include "keys.h"

void		 keys_ref_derive(const json_t *update,
		    const enum key_kind *kinds, int nkinds, struct keyset *out);
const char	*keys_ref_update_type(const json_t *update);

#endif
