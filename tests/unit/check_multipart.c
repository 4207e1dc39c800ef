/* SPDX-License-Identifier: ISC */
/*
 * Unit tests of the multipart/form-data parser (daemon/multipart.c): the
 * bodies bot frameworks send (grammY, Telegraf, urllib3's for
 * python-telegram-bot), the grammar's corners, every refusal, the bounds,
 * and encode/parse round trips.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "multipart.h"

static char err[MULTIPART_ERR_MAX];

static struct multipart *
parse(const char *body, size_t len, const char *boundary)
{
	struct multipart *m;

	err[0] = '\0';
	m = multipart_parse(body, len, boundary, err, sizeof(err));
	ck_assert_msg(m != NULL, "refused: %s", err);
	return m;
}

/* Refused, with a reason that contains want. */
static void
refused(const char *body, size_t len, const char *boundary, const char *want)
{
	struct multipart *m;

	err[0] = '\0';
	m = multipart_parse(body, len, boundary, err, sizeof(err));
	ck_assert_msg(m == NULL, "accepted: %.60s", body);
	ck_assert_msg(strstr(err, want) != NULL, "error '%s' lacks '%s'", err,
	    want);
}

static void
part_is(const struct multipart_part *pt, const char *name,
    const char *filename, const char *ctype, const char *data, size_t len)
{
	ck_assert_str_eq(pt->name, name);
	if (filename == NULL)
		ck_assert_ptr_null(pt->filename);
	else
		ck_assert_str_eq(pt->filename, filename);
	if (ctype == NULL)
		ck_assert_ptr_null(pt->ctype);
	else
		ck_assert_str_eq(pt->ctype, ctype);
	ck_assert_uint_eq(pt->len, len);
	ck_assert(memcmp(pt->data, data, len) == 0);
}

#define S(x)	x, sizeof(x) - 1

START_TEST(test_fields_and_file)
{
	static const char body[] =
	    "--XyZ\r\n"
	    "Content-Disposition: form-data; name=\"chat_id\"\r\n"
	    "\r\n"
	    "42\r\n"
	    "--XyZ\r\n"
	    "Content-Disposition: form-data; name=\"photo\"; "
	    "filename=\"cat.jpg\"\r\n"
	    "Content-Type: image/jpeg\r\n"
	    "\r\n"
	    "\xff\xd8\0\r\n--X\r\nz--XyZ\r\n"
	    "--XyZ--\r\n";
	struct multipart *m = parse(S(body), "XyZ");

	ck_assert_uint_eq(m->n, 2);
	part_is(&m->parts[0], "chat_id", NULL, NULL, S("42"));
	/* binary, a NUL, CRLFs and near-delimiters stay in the data */
	part_is(&m->parts[1], "photo", "cat.jpg", "image/jpeg",
	    S("\xff\xd8\0\r\n--X\r\nz--XyZ"));
	/* slices of the body, not copies */
	ck_assert(m->parts[0].data > body &&
	    m->parts[1].data < body + sizeof(body));
	multipart_free(m);
}
END_TEST

/* As grammY 1.x writes it: lower-case header names, attach:// in JSON. */
START_TEST(test_grammy_shape)
{
	static const char body[] =
	    "--grammy0a1b2c\r\n"
	    "content-disposition:form-data;name=\"chat_id\"\r\n\r\n"
	    "-100123\r\n"
	    "--grammy0a1b2c\r\n"
	    "content-disposition:form-data;name=\"media\"\r\n\r\n"
	    "[{\"type\":\"photo\",\"media\":\"attach://abc\"}]\r\n"
	    "--grammy0a1b2c\r\n"
	    "content-disposition:form-data;name=\"abc\";filename=abc\r\n"
	    "content-type:application/octet-stream\r\n\r\n"
	    "BYTES\r\n"
	    "--grammy0a1b2c--\r\n";
	struct multipart *m = parse(S(body), "grammy0a1b2c");

	ck_assert_uint_eq(m->n, 3);
	part_is(&m->parts[0], "chat_id", NULL, NULL, S("-100123"));
	part_is(&m->parts[1], "media", NULL, NULL,
	    S("[{\"type\":\"photo\",\"media\":\"attach://abc\"}]"));
	part_is(&m->parts[2], "abc", "abc", "application/octet-stream",
	    S("BYTES"));
	multipart_free(m);
}
END_TEST

/* urllib3 (python-telegram-bot 13): RFC 2231 filename* for non-ASCII. */
START_TEST(test_filename_star)
{
	static const char body[] =
	    "--8f2\r\n"
	    "Content-Disposition: form-data; name=\"document\"; "
	    "filename*=utf-8''%E2%82%AC%20rate.txt; filename=\"x.txt\"\r\n"
	    "\r\n"
	    "euro\r\n"
	    "--8f2\r\n"
	    "Content-Disposition: form-data; name=\"other\"; "
	    "filename*=iso-8859-1'en'%A3.txt; filename=\"pound.txt\"\r\n"
	    "\r\n"
	    "x\r\n"
	    "--8f2--";
	struct multipart *m = parse(S(body), "8f2");

	ck_assert_uint_eq(m->n, 2);
	/* filename* wins over filename, in either order */
	part_is(&m->parts[0], "document", "\xe2\x82\xac rate.txt", NULL,
	    S("euro"));
	/* a charset other than UTF-8 is ignored: filename stays */
	part_is(&m->parts[1], "other", "pound.txt", NULL, S("x"));
	multipart_free(m);
}
END_TEST

START_TEST(test_preamble_padding_epilogue)
{
	static const char body[] =
	    "This is the preamble.\r\n"
	    "--b \t\r\n"
	    "Content-Disposition: form-data; name=\"a\\\"b\\\\c\"\r\n"
	    "X-Other: ignored\r\n"
	    "\r\n"
	    "\r\n"
	    "--b--and an epilogue, ignored\r\n--b\r\n";
	struct multipart *m = parse(S(body), "b");

	ck_assert_uint_eq(m->n, 1);
	/* quoted-string escapes; empty data */
	part_is(&m->parts[0], "a\"b\\c", NULL, NULL, S(""));
	multipart_free(m);
}
END_TEST

START_TEST(test_no_parts)
{
	struct multipart *m = parse(S("--b--\r\n"), "b");

	ck_assert_uint_eq(m->n, 0);
	multipart_free(m);
}
END_TEST

START_TEST(test_refusals)
{
	refused(S("no delimiter at all"), "b", "no boundary delimiter");
	refused(S("--b\r\nContent-Disposition: form-data; name=a\r\n\r\nx"),
	    "b", "body ends inside");
	refused(S("--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--"), "b",
	    "no Content-Disposition");
	refused(S("--b\r\n\r\nx\r\n--b--"), "b", "no Content-Disposition");
	refused(S("--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--"),
	    "b", "bad Content-Disposition");
	refused(S("--b\r\nContent-Disposition: form-data; name=\"\"\r\n\r\n"
	    "x\r\n--b--"), "b", "bad Content-Disposition");
	refused(S("--b\r\nContent-Disposition: attachment; name=a\r\n\r\n"
	    "x\r\n--b--"), "b", "bad Content-Disposition");
	refused(S("--b\r\nContent-Disposition: form-data; name=\"a\r\n\r\n"
	    "x\r\n--b--"), "b", "bad Content-Disposition");
	refused(S("--b\r\nContent-Disposition: form-data; name=a; name=b"
	    "\r\n\r\nx\r\n--b--"), "b", "bad Content-Disposition");
	refused(S("--b\r\nContent-Disposition: form-data; name=a\r\n"
	    "Content-Disposition: form-data; name=b\r\n\r\nx\r\n--b--"), "b",
	    "bad Content-Disposition");
	/* no obsolete line folding */
	refused(S("--b\r\nContent-Disposition: form-data; name=a\r\n"
	    " X: folded\r\n\r\nx\r\n--b--"), "b", "malformed header line");
	refused(S("--b\r\nno colon here\r\n\r\nx\r\n--b--"), "b",
	    "malformed header line");
	refused(S("--b\r\nContent-Disposition: form-data; name=a\r\n"
	    "Content-Type: \x01\r\n\r\nx\r\n--b--"), "b", "bad Content-Type");
	refused(S("--bx\r\nContent-Disposition: form-data; name=a\r\n\r\n"
	    "x\r\n--b--"), "b", "malformed boundary line");
	refused(S("--b"), "b", "malformed boundary line");
	refused(S("--b\r\nContent-Disposition: form-data; name=a"), "b",
	    "no end of headers");
	/* a decoded control character never becomes a name */
	refused(S("--b\r\nContent-Disposition: form-data; name=a; "
	    "filename*=utf-8''%0d%0a.txt\r\n\r\nx\r\n--b--"), "b",
	    "bad Content-Disposition");
	refused(S("--b\r\nContent-Disposition: form-data; name=a; "
	    "filename*=utf-8''%zz\r\n\r\nx\r\n--b--"), "b",
	    "bad Content-Disposition");
	refused(S("--b\r\nContent-Disposition: form-data; name=\"a\0b\"\r\n"
	    "\r\nx\r\n--b--"), "b", "malformed header line");
	refused(S("x"), "", "bad boundary");
	refused(S("x"), "bad\"boundary", "bad boundary");
}
END_TEST

START_TEST(test_bounds)
{
	char	*body, *p;
	size_t	 i, cap = (MULTIPART_MAX_PARTS + 2) * 80 + MULTIPART_HEADER_MAX +
		    1024;

	body = malloc(cap);
	/* MULTIPART_MAX_PARTS parts pass, one more does not */
	for (p = body, i = 0; i < MULTIPART_MAX_PARTS; i++)
		p += sprintf(p, "--b\r\nContent-Disposition: form-data; "
		    "name=p%zu\r\n\r\nv\r\n", i);
	strcpy(p, "--b--");
	multipart_free(parse(body, strlen(body), "b"));
	p += sprintf(p, "--b\r\nContent-Disposition: form-data; "
	    "name=one_more\r\n\r\nv\r\n--b--");
	refused(body, strlen(body), "b", "more than 256 parts");
	/* a header block past MULTIPART_HEADER_MAX */
	p = body + sprintf(body, "--b\r\nContent-Disposition: form-data; "
	    "name=a\r\nX-Pad: ");
	memset(p, 'x', MULTIPART_HEADER_MAX);
	strcpy(p + MULTIPART_HEADER_MAX, "\r\n\r\nv\r\n--b--");
	refused(body, strlen(body), "b", "header block too large");
	/* a name past MULTIPART_NAME_MAX */
	p = body + sprintf(body, "--b\r\nContent-Disposition: form-data; "
	    "name=");
	memset(p, 'n', MULTIPART_NAME_MAX + 1);
	strcpy(p + MULTIPART_NAME_MAX + 1, "\r\n\r\nv\r\n--b--");
	refused(body, strlen(body), "b", "bad Content-Disposition");
	/* exactly MULTIPART_NAME_MAX is fine */
	p = body + sprintf(body, "--b\r\nContent-Disposition: form-data; "
	    "name=");
	memset(p, 'n', MULTIPART_NAME_MAX);
	strcpy(p + MULTIPART_NAME_MAX, "\r\n\r\nv\r\n--b--");
	multipart_free(parse(body, strlen(body), "b"));
	free(body);
}
END_TEST

START_TEST(test_boundary_param)
{
	char b[MULTIPART_BOUNDARY_MAX + 1];

	ck_assert_int_eq(multipart_boundary("multipart/form-data; "
	    "boundary=abc", b, sizeof(b)), 0);
	ck_assert_str_eq(b, "abc");
	ck_assert_int_eq(multipart_boundary("Multipart/Form-Data;charset=x;"
	    "BOUNDARY=\"----WebKit Form\"", b, sizeof(b)), 0);
	ck_assert_str_eq(b, "----WebKit Form");
	ck_assert_int_eq(multipart_boundary("multipart/form-data; boundary=\""
	    "0123456789012345678901234567890123456789012345678901234567890"
	    "123456789\"", b, sizeof(b)), 0);
	ck_assert_int_eq(multipart_boundary("multipart/form-data; boundary=\""
	    "0123456789012345678901234567890123456789012345678901234567890"
	    "1234567890\"", b, sizeof(b)), -1);
	ck_assert_int_eq(multipart_boundary("multipart/mixed; boundary=a", b,
	    sizeof(b)), -1);
	ck_assert_int_eq(multipart_boundary("multipart/form-data", b,
	    sizeof(b)), -1);
	ck_assert_int_eq(multipart_boundary("multipart/form-data; "
	    "boundary=", b, sizeof(b)), -1);
	ck_assert_int_eq(multipart_boundary("multipart/form-data; "
	    "boundary=\"a\"b\"", b, sizeof(b)), 0);
	ck_assert_str_eq(b, "a");
	ck_assert_int_eq(multipart_boundary("multipart/form-data; "
	    "boundary=\"a b \"", b, sizeof(b)), -1);
	ck_assert_int_eq(multipart_boundary("multipart/form-dataX; "
	    "boundary=a", b, sizeof(b)), -1);
	ck_assert_int_eq(multipart_boundary("multipart/form-data; "
	    "boundary=\"x\\\"y\"", b, sizeof(b)), -1);
}
END_TEST

START_TEST(test_encode_round_trip)
{
	struct multipart_part	 parts[3] = {
		{ "chat_id", NULL, NULL, "42", 2 },
		{ "we\"ird\\name", "f\"ile.bin", "application/x-thing",
		    "\0\r\n--Bee\r\n", 11 },
		{ "empty", "", NULL, "", 0 },
	};
	struct multipart	*m;
	char			*enc;
	size_t			 len, i;

	enc = multipart_encode(parts, 3, "Bee-1", &len);
	ck_assert_ptr_nonnull(enc);
	m = parse(enc, len, "Bee-1");
	ck_assert_uint_eq(m->n, 3);
	for (i = 0; i < 3; i++)
		part_is(&m->parts[i], parts[i].name, parts[i].filename,
		    parts[i].ctype, parts[i].data, parts[i].len);
	multipart_free(m);
	free(enc);
	/* data holding the delimiter cannot be sent with that boundary */
	parts[1].data = "x\r\n--Bee-1y";
	parts[1].len = 11;
	ck_assert_ptr_null(multipart_encode(parts, 3, "Bee-1", &len));
	/* nor a name with a line break */
	parts[1].data = "x";
	parts[1].len = 1;
	parts[0].name = "a\r\nb";
	ck_assert_ptr_null(multipart_encode(parts, 3, "Bee-1", &len));
}
END_TEST

static Suite *
multipart_suite(void)
{
	Suite	*s = suite_create("multipart");
	TCase	*tc = tcase_create("core");

	tcase_add_test(tc, test_fields_and_file);
	tcase_add_test(tc, test_grammy_shape);
	tcase_add_test(tc, test_filename_star);
	tcase_add_test(tc, test_preamble_padding_epilogue);
	tcase_add_test(tc, test_no_parts);
	tcase_add_test(tc, test_refusals);
	tcase_add_test(tc, test_bounds);
	tcase_add_test(tc, test_boundary_param);
	tcase_add_test(tc, test_encode_round_trip);
	suite_add_tcase(s, tc);
	return s;
}

#define TEST_SUITE	multipart_suite
#include "testmain.h"
