/*
 * <sys/queue.h> with what glibc's copy lacks and the BSDs have.
 */
#ifndef TG_TAILQ_H
#define TG_TAILQ_H

#include <sys/queue.h>

#ifndef TAILQ_FOREACH_SAFE
/* var may be removed (and freed) inside the loop; tvar holds the next. */
#define TAILQ_FOREACH_SAFE(var, head, field, tvar)			\
	for ((var) = TAILQ_FIRST(head);					\
	    (var) != NULL && ((tvar) = TAILQ_NEXT(var, field), 1);	\
	    (var) = (tvar))
#endif

#endif
