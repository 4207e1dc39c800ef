/* SPDX-License-Identifier: ISC */
/*
 * Numbers and time units (parse.h).
 */
#include "config.h"

#include <ctype.h>
#include <string.h>

#include "parse.h"

int
parse_uint(const char **sp, int64_t max, int64_t *out)
{
	const char	*s = *sp;
	int64_t		 v = 0;

	if (!isdigit((unsigned char)*s))
		return -1;
	for (; isdigit((unsigned char)*s); s++) {
		if (v > (max - (*s - '0')) / 10)
			return -1;
		v = v * 10 + (*s - '0');
	}
	*sp = s;
	*out = v;
	return 0;
}

int64_t
parse_unit_ms(const char **sp)
{
	static const struct {
		const char	*name;
		int64_t		 ms;
	} units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "m", 60 * 1000 },
		{ "h", 60 * 60 * 1000 }
	};
	size_t i, n;

	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		n = strlen(units[i].name);
		if (strncmp(*sp, units[i].name, n) == 0) {
			*sp += n;
			return units[i].ms;
		}
	}
	return 0;
}
