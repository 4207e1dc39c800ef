/* SPDX-License-Identifier: ISC */
/*
 * The main() of every unit test.  A test file defines its cases and the
 * function that builds its Suite, then ends with:
 *
 *	#define TEST_SUITE	router_suite
 *	#include "testmain.h"
 *
 * Optional hooks, defined before the include:
 *   TEST_INIT	int f(void), run first; -1 fails the program.
 *   TEST_FINI	int f(void), run last; returns failures of its own (a
 *		temporary directory that cannot be removed, ...).
 *
 * Logs go to stderr at warn level; TG_TEST_DEBUG=1 in the environment
 * logs everything.  SIGPIPE is ignored: tests write to peers they close.
 * To add a test program, list it in UNIT_TESTS in Makefile.am: its source
 * is tests/unit/<name>.c and it links libtgcore by default.
 */
#ifndef TG_TESTMAIN_H
#define TG_TESTMAIN_H

#include <signal.h>
#include <stdlib.h>

#include <check.h>

#include "log.h"

#ifndef TEST_SUITE
#error "define TEST_SUITE as the function that builds the Suite"
#endif

int
main(void)
{
	SRunner	*sr;
	int	 failed;

	signal(SIGPIPE, SIG_IGN);
	log_init("unit", getenv("TG_TEST_DEBUG") != NULL ? LOG_LVL_DEBUG :
	    LOG_LVL_WARN);
#ifdef TEST_INIT
	if (TEST_INIT() == -1)
		return EXIT_FAILURE;
#endif
	sr = srunner_create(TEST_SUITE());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
#ifdef TEST_FINI
	failed += TEST_FINI();
#endif
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif
