/* SPDX-License-Identifier: ISC */
/*
 * The lexing of numbers and time units that the configuration and the
 * flood rates share: digits only (no sign, no blanks, no overflow; strtoll
 * alone accepts too much), and the units ms, s, m, h.
 */
#ifndef TG_PARSE_H
#define TG_PARSE_H

#include <stdint.h>

/*
 * Decimal digits at *sp, at most max: 0 with the value in *out and *sp
 * past them, or -1 (nothing consumed) when there are none or too many.
 */
int	parse_uint(const char **sp, int64_t max, int64_t *out);
/*
 * A unit at *sp ("ms", "s", "m", "h"): its length in milliseconds with *sp
 * past it, or 0 (nothing consumed) when there is none.
 */
int64_t	parse_unit_ms(const char **sp);

#endif
