/*
 * Flood control's limiters (daemon/flood.c): the sliding window that keeps
 * a rate over every window (the default), the token bucket a burst asks
 * for, and a reload switching one into the other.  The property that
 * matters is checked over random call schedules (seeded, so a failure can
 * be replayed with TG_TEST_SEED): a window never lets more than n
 * messages into any window of the period, a bucket never more than
 * burst + n * w / period into a window of w, and neither holds a message
 * back when it may go (flood_wait_ms is exact).  check_api holds the rate
 * syntax and the bucket arithmetic; tests/scenario/test_flood.py holds the
 * same bounds end to end.
 */
#include "config.h"

#include <check.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flood.h"

#define SENDS_MAX	20000

/* ck_assert marks every point it passes (a write); hot loops check so */
#define CHECK(c, ...)	do { if (!(c)) ck_abort_msg(__VA_ARGS__); } while (0)

struct sent {
	int64_t	t;
	int64_t	n;
};

static struct flood_rate
rate(const char *s)
{
	struct flood_rate r;

	ck_assert_msg(flood_rate_parse(s, &r) == 0, "'%s' rejected", s);
	return r;
}

START_TEST(test_window_exact)
{
	struct flood_rate	r = rate("3/s");
	struct flood_bucket	b = { 0 };

	ck_assert(flood_full(&b, &r, 0));
	ck_assert_int_eq(flood_take(&b, &r, 1, 0), 0);
	ck_assert_int_eq(flood_take(&b, &r, 1, 400), 0);
	ck_assert_int_eq(flood_take(&b, &r, 1, 800), 0);
	ck_assert(!flood_full(&b, &r, 800));
	/* the fourth waits for the first to leave its window, not longer */
	ck_assert_int_eq(flood_wait_ms(&b, &r, 1, 800), 200);
	ck_assert_int_eq(flood_take(&b, &r, 1, 999), -1);
	ck_assert_int_eq(flood_take(&b, &r, 1, 1000), 0);
	/* asking about later changes nothing */
	ck_assert_int_eq(flood_wait_ms(&b, &r, 2, 5000), 0);
	ck_assert_int_eq(flood_wait_ms(&b, &r, 1, 1000), 400);
	ck_assert_int_eq(flood_wait_ms(&b, &r, 2, 1000), 800);
	ck_assert(flood_full(&b, &r, 2000));
	flood_clear(&b);
}
END_TEST

/* The default global rate, greedy: 30 at once, then 30 each second, no more. */
START_TEST(test_window_greedy)
{
	struct flood_rate	r = rate("30/s");
	struct flood_bucket	b = { 0 };
	int64_t			t;
	int			n = 0;

	for (t = 0; t < 10000; t++)
		while (flood_take(&b, &r, 1, t) == 0)
			n++;
	ck_assert_int_eq(n, 300);
	flood_clear(&b);
}
END_TEST

START_TEST(test_window_cost)
{
	struct flood_rate	r = rate("20/m");
	struct flood_bucket	b = { 0 };

	/* an album of 10, then one of 15: it waits for the first to leave */
	ck_assert_int_eq(flood_take(&b, &r, 10, 0), 0);
	ck_assert_int_eq(flood_take(&b, &r, 5, 1000), 0);
	ck_assert_int_eq(flood_wait_ms(&b, &r, 15, 2000), 58000);
	ck_assert_int_eq(flood_wait_ms(&b, &r, 10, 2000), 58000);
	ck_assert_int_eq(flood_wait_ms(&b, &r, 5, 2000), 0);
	/* more than n at once: it counts as n, and waits for an empty window */
	ck_assert_int_eq(flood_wait_ms(&b, &r, 100, 2000), 59000);
	ck_assert_int_eq(flood_take(&b, &r, 100, 61000), 0);
	ck_assert_int_eq(flood_wait_ms(&b, &r, 1, 61000), 60000);
	flood_clear(&b);
}
END_TEST

/* After a 429 the window counts as full for a period. */
START_TEST(test_window_drain)
{
	struct flood_rate	r = rate("1/s");
	struct flood_bucket	b = { 0 };

	flood_drain(&b, &r, 500);
	ck_assert_int_eq(flood_wait_ms(&b, &r, 1, 500), 1000);
	ck_assert_int_eq(flood_take(&b, &r, 1, 1499), -1);
	ck_assert_int_eq(flood_take(&b, &r, 1, 1500), 0);
	flood_clear(&b);
}
END_TEST

/* A reload that switches between a window and a bucket keeps what was sent. */
START_TEST(test_switch_keeps_what_was_sent)
{
	struct flood_rate	w = rate("4/s"), k = rate("4/s burst 4");
	struct flood_bucket	b = { 0 };

	ck_assert_int_eq(flood_take(&b, &w, 3, 0), 0);
	/* as a bucket: 1 token left, then one every 250 ms */
	ck_assert_int_eq(flood_take(&b, &k, 1, 0), 0);
	ck_assert_int_eq(flood_wait_ms(&b, &k, 1, 0), 250);
	/* and back: the bucket was empty, the window is full now */
	ck_assert_int_eq(flood_wait_ms(&b, &w, 1, 0), 1000);
	ck_assert_int_eq(flood_take(&b, &w, 4, 1000), 0);
	/* a smaller n: what was sent still counts */
	ck_assert_int_eq(flood_wait_ms(&b, &(struct flood_rate){ 2, 1000, 0 },
	    1, 1500), 500);
	flood_clear(&b);
}
END_TEST

/* Past FLOOD_WINDOW_MAX per period, no window: a millisecond's worth at once. */
START_TEST(test_large_rates_paced)
{
	struct flood_rate	r = rate("5000/s"), one = rate("2000/h");
	struct flood_bucket	b = { 0 };
	int			n = 0;

	while (flood_take(&b, &r, 1, 0) == 0)
		n++;
	ck_assert_int_eq(n, 5);
	ck_assert_int_eq(flood_wait_ms(&b, &r, 1, 0), 1);
	flood_clear(&b);
	n = 0;
	while (flood_take(&b, &one, 1, 0) == 0)
		n++;
	ck_assert_int_eq(n, 1);
	ck_assert_int_eq(flood_wait_ms(&b, &one, 1, 0), 1800);
	flood_clear(&b);
}
END_TEST

/* --- the property, over random schedules ------------------------------- */

static uint64_t rng;

static uint64_t
rnd(uint64_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return n > 0 ? rng % n : 0;
}

/* The most messages any window [t, t + width) holds. */
static int64_t
fullest_window(const struct sent *s, size_t n, int64_t width)
{
	int64_t in = 0, most = 0;
	size_t i, j = 0;

	for (i = 0; i < n; i++) {
		in += s[i].n;
		while (s[i].t - s[j].t >= width)
			in -= s[j++].n;
		if (in > most)
			most = in;
	}
	return most;
}

/* Bucket: every run of sends i..j fits burst + n * (t_j - t_i) / per. */
static void
check_bucket_bound(const struct sent *s, size_t n, const struct flood_rate *r)
{
	int64_t sum;
	size_t i, j;

	for (i = 0; i < n; i++) {
		sum = 0;
		for (j = i; j < n && j < i + 400; j++) {
			sum += s[j].n;
			CHECK(sum * r->per_ms <= r->burst * r->per_ms +
			    r->n * (s[j].t - s[i].t), "%lld msgs in %lld ms, "
			    "rate %lld/%lldms burst %lld", (long long)sum,
			    (long long)(s[j].t - s[i].t), (long long)r->n,
			    (long long)r->per_ms, (long long)r->burst);
		}
	}
}

/* A random rate: half windows (the default form), half buckets. */
static struct flood_rate
random_rate(void)
{
	static const int64_t periods[] = { 1, 7, 100, 1000, 60000 };
	struct flood_rate r;

	r.per_ms = periods[rnd(5)] * (1 + (int64_t)rnd(3));
	r.n = 1 + (int64_t)rnd(rnd(2) ? 5 : 60);
	r.burst = rnd(2) ? 0 : 1 + (int64_t)rnd(10);
	return r;
}

/*
 * One schedule: callers arrive at random gaps (bursts of zero gap too),
 * each wanting 1..3 messages; those refused come back when flood_wait_ms
 * says, or give up.  Every refusal is checked to be exact.
 */
static size_t
run_schedule(const struct flood_rate *r, struct sent *s)
{
	struct flood_bucket	b = { 0 };
	int64_t			t = (int64_t)rnd(1000), w, cost, gap;
	size_t			n = 0, k;

	gap = r->per_ms / r->n + 1;
	for (k = 0; k < 3000 && n < SENDS_MAX; k++) {
		t += rnd(4) == 0 ? 0 : (int64_t)rnd(2 * (uint64_t)gap + 1);
		cost = 1 + (int64_t)rnd(3);
		if ((w = flood_wait_ms(&b, r, cost, t)) > 0) {
			CHECK(flood_take(&b, r, cost, t) == -1, "took at %lld "
			    "what had to wait %lld ms", (long long)t,
			    (long long)w);
			CHECK(w == 1 || flood_wait_ms(&b, r, cost,
			    t + w - 1) > 0, "at %lld: waits %lld ms, but may "
			    "go 1 ms earlier", (long long)t, (long long)w);
			if (rnd(3) == 0)
				continue;	/* gave up */
			t += w;
		}
		/* when it says so, it may go */
		CHECK(flood_wait_ms(&b, r, cost, t) == 0 &&
		    flood_take(&b, r, cost, t) == 0, "at %lld: refused when it "
		    "said it may go", (long long)t);
		s[n].t = t;
		s[n].n = cost < (r->burst > 0 ? r->burst : r->n) ? cost :
		    (r->burst > 0 ? r->burst : r->n);
		n++;
	}
	flood_clear(&b);
	return n;
}

START_TEST(test_property_random_schedules)
{
	static struct sent s[SENDS_MAX];
	const char *env = getenv("TG_TEST_SEED");
	uint64_t seed = env != NULL ? strtoull(env, NULL, 10) : 20260521;
	struct flood_rate r;
	int64_t most;
	size_t n;
	int round;

	rng = seed * 0x9E3779B97F4A7C15ULL | 1;
	for (round = 0; round < 300; round++) {
		r = random_rate();
		n = run_schedule(&r, s);
		CHECK(n > 0, "nothing sent");
		if (r.burst == 0) {
			most = fullest_window(s, n, r.per_ms);
			CHECK(most <= r.n, "seed %" PRIu64 " round %d: "
			    "%lld messages in a window of %lld ms, limit %lld",
			    seed, round, (long long)most, (long long)r.per_ms,
			    (long long)r.n);
		} else
			check_bucket_bound(s, n, &r);
	}
}
END_TEST

static Suite *
flood_suite(void)
{
	Suite *s = suite_create("flood");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_window_exact);
	tcase_add_test(tc, test_window_greedy);
	tcase_add_test(tc, test_window_cost);
	tcase_add_test(tc, test_window_drain);
	tcase_add_test(tc, test_switch_keeps_what_was_sent);
	tcase_add_test(tc, test_large_rates_paced);
	tcase_add_test(tc, test_property_random_schedules);
	suite_add_tcase(s, tc);
	return s;
}

#define TEST_SUITE	flood_suite
#include "testmain.h"
