/* SPDX-License-Identifier: ISC */
/*
 * File uploads: find the file objects in a call's params, open or decode
 * each one, and lay the call out as multipart/form-data parts.
 *
 * A worker runs user code, so an @file path is hostile until proven
 * otherwise: it must be relative, without "..", and is opened beneath the
 * upload_dir fd without following any symbolic link (openat2 with
 * RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, or a walk of openat(O_NOFOLLOW)
 * one component at a time where the kernel lacks openat2).  The last
 * component is opened O_NONBLOCK, so a fifo cannot hang the loop, and
 * must then be a regular file.  The fd opened is the one that is sent:
 * no path is ever opened twice.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef SYS_openat2
#include <linux/openat2.h>
#endif

#include <jansson.h>

#include "http.h"
#include "log.h"
#include "upload.h"
#include "xmalloc.h"

#define UPLOAD_NAME_MAX		64	/* a parameter (part) name */
#define UPLOAD_FILENAME_MAX	255
#define UPLOAD_CTYPE_MAX	127
#define UPLOAD_WHERE_MAX	96	/* "media[3].thumbnail" in errors */
#define UPLOAD_DEPTH_MAX	32	/* nesting searched for file objects */
/*
 * Files held open by queued calls, all calls together.  Each is opened
 * when its call is accepted; a queue of thousands of uploads must not
 * starve the daemon of descriptors for workers, sockets and the journal.
 */
#define UPLOAD_OPEN_MAX		256

struct upload {
	struct http_part	*parts;
	size_t			 nparts, cap;
	char			**strs;		/* owned strings of the parts */
	size_t			 nstrs, strcap;
	size_t			 nfiles;
	unsigned		 attach;	/* next tgfileN */
	int64_t			 bytes;
	/* only during upload_prepare */
	json_t			*params;	/* the call's, borrowed */
	int			 dirfd;
	int64_t			 max_size;
	char			*err;
	size_t			 errsz;
};

static int	upload_no_openat2;
static int	upload_nopen;		/* files open, see UPLOAD_OPEN_MAX */

static int	upload_replace(struct upload *, json_t *, const char *, int);

void
upload_force_walk(int on)
{
	upload_no_openat2 = on;
}

static int
upload_fail(struct upload *u, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fill the worker's error: "tgrunner: <where>: <why>". */
static int
upload_fail(struct upload *u, const char *where, const char *fmt, ...)
{
	char	why[UPLOAD_ERR_MAX];
	va_list	ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	snprintf(u->err, u->errsz, "tgrunner: %s: %s", where, why);
	return -1;
}

int
upload_wanted(const char *body)
{
	/* a key is quoted and followed by ':'; inside a string '"' is escaped */
	return strstr(body, "\"@file\":") != NULL ||
	    strstr(body, "\"@data\":") != NULL;
}

static int
upload_is_file(const json_t *v)
{
	return json_is_object(v) && (json_object_get(v, "@file") != NULL ||
	    json_object_get(v, "@data") != NULL);
}

/* arr with room for element n: its capacity *cap doubles from init. */
static void *
upload_grow(void *arr, size_t n, size_t *cap, size_t size, size_t init)
{
	if (n < *cap)
		return arr;
	*cap = *cap > 0 ? *cap * 2 : init;
	return xreallocarray(arr, *cap, size);
}

/* --- owned strings and parts ---------------------------------------------- */

static char *
upload_keep(struct upload *u, char *s)
{
	if (s == NULL)
		return NULL;
	u->strs = upload_grow(u->strs, u->nstrs, &u->strcap,
	    sizeof(*u->strs), 16);
	u->strs[u->nstrs++] = s;
	return s;
}

static char *
upload_strndup(struct upload *u, const char *s, size_t n)
{
	char *p;

	p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return upload_keep(u, p);
}

static struct http_part *
upload_part(struct upload *u, const char *where)
{
	struct http_part *n;

	u->parts = upload_grow(u->parts, u->nparts, &u->cap, sizeof(*u->parts),
	    8);
	n = &u->parts[u->nparts++];
	memset(n, 0, sizeof(*n));
	n->fd = -1;
	return n;
}

static int
upload_text(struct upload *u, const char *name, const char *text, size_t len)
{
	struct http_part *p;

	if ((p = upload_part(u, name)) == NULL)
		return -1;
	p->name = name;
	if ((p->data = upload_strndup(u, text, len)) == NULL)
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	p->len = len;
	return 0;
}

/* --- opening a file beneath upload_dir ------------------------------------ */

int
upload_dir_open(const char *path)
{
	return open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
}

/* Relative, not empty, no ".." component, no control character. */
static const char *
upload_path_bad(const char *rel)
{
	const char *p, *c;
	size_t n;

	if (*rel == '\0')
		return "the path is empty";
	if (*rel == '/')
		return "the path must be relative to upload_dir";
	if (strlen(rel) >= PATH_MAX)
		return "the path is too long";
	for (p = rel; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return "the path holds a control character";
	for (c = rel; *c != '\0'; c += n + (c[n] == '/')) {
		n = strcspn(c, "/");
		if (n == 2 && c[0] == '.' && c[1] == '.')
			return "the path must not contain \"..\"";
	}
	return NULL;
}

/* openat2 beneath dirfd; -1 with errno ENOSYS when the kernel lacks it. */
static int
upload_openat2(int dirfd, const char *rel)
{
#ifdef SYS_openat2
	struct open_how how;

	memset(&how, 0, sizeof(how));
	how.flags = O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC;
	how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
	    RESOLVE_NO_MAGICLINKS;
	return (int)syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
#else
	errno = ENOSYS;
	return -1;
#endif
}

/* After a failed open of name in dir: a symlink reads better as ELOOP. */
static int
upload_why(int dir, const char *name, int err)
{
	struct stat st;

	if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISLNK(st.st_mode))
		return ELOOP;
	return err;
}

/* One component at a time, each opened O_NOFOLLOW from the previous one. */
static int
upload_walk(int dirfd, const char *rel)
{
	char	comp[NAME_MAX + 1];
	int	cur = dirfd, next, err;
	size_t	n;

	for (;;) {
		n = strcspn(rel, "/");
		if (n > NAME_MAX) {
			err = ENAMETOOLONG;
			break;
		}
		memcpy(comp, rel, n);
		comp[n] = '\0';
		rel += n;
		while (*rel == '/')
			rel++;
		if (*rel == '\0') {
			/* last: the file itself */
			next = openat(cur, n > 0 ? comp : ".", O_RDONLY |
			    O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
			err = next == -1 ? upload_why(cur, comp, errno) : 0;
			break;
		}
		if (n == 0 || strcmp(comp, ".") == 0)
			continue;
		next = openat(cur, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW |
		    O_CLOEXEC);
		if (next == -1) {
			err = upload_why(cur, comp, errno);
			break;
		}
		if (cur != dirfd)
			close(cur);
		cur = next;
	}
	if (cur != dirfd)
		close(cur);
	if (err != 0) {
		errno = err;
		return -1;
	}
	return next;
}

static const char *
upload_open_error(int err)
{
	switch (err) {
	case ENOENT:
		return "no such file in upload_dir";
	case ELOOP:
	case EXDEV:
		return "symbolic links are not followed";
	case ENOTDIR:
		return "a component of the path is not a directory";
	case EACCES:
	case EPERM:
		return "permission denied";
	default:
		return strerror(err);
	}
}

int
upload_open(int dirfd, const char *rel, int64_t max_size, int64_t *size,
    char *err, size_t errsz)
{
	struct stat	 st;
	const char	*bad;
	int		 fd = -1;

	if ((bad = upload_path_bad(rel)) != NULL) {
		snprintf(err, errsz, "%s", bad);
		return -1;
	}
	if (!upload_no_openat2) {
		fd = upload_openat2(dirfd, rel);
		if (fd == -1 && errno == ENOSYS)
			upload_no_openat2 = 1;
	}
	/* EPERM: a seccomp filter that does not know openat2 */
	if (fd == -1 && (upload_no_openat2 || errno == EPERM))
		fd = upload_walk(dirfd, rel);
	if (fd == -1) {
		snprintf(err, errsz, "\"%s\": %s", rel, upload_open_error(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		snprintf(err, errsz, "\"%s\" is not a regular file", rel);
		close(fd);
		return -1;
	}
	if (st.st_size > max_size) {
		snprintf(err, errsz, "\"%s\" has %lld bytes, more than "
		    "upload_max_size (%lld)", rel, (long long)st.st_size,
		    (long long)max_size);
		close(fd);
		return -1;
	}
	*size = st.st_size;
	return fd;
}

/* --- base64 ----------------------------------------------------------------- */

static int
b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

ssize_t
upload_b64_decode(const char *in, size_t len, unsigned char *out, size_t *bad)
{
	uint32_t	acc = 0;
	size_t		i, n = 0, end = len;
	int		v, bits = 0;

	/* up to two '=' at the end, and only where they make a full quad */
	while (end > 0 && len - end < 2 && in[end - 1] == '=')
		end--;
	for (i = 0; i < end; i++) {
		if ((v = b64_value((unsigned char)in[i])) == -1) {
			*bad = i;
			return -1;
		}
		acc = (acc << 6) | (uint32_t)v;
		if ((bits += 6) >= 8) {
			bits -= 8;
			out[n++] = (unsigned char)(acc >> bits);
			acc &= (1U << bits) - 1;
		}
	}
	if (end < len && len % 4 != 0) {
		*bad = end;
		return -1;
	}
	/* a lone sixth of a byte, or leftover bits that are not zero */
	if (bits == 6 || acc != 0) {
		*bad = end > 0 ? end - 1 : 0;
		return -1;
	}
	return (ssize_t)n;
}

/* --- file objects -------------------------------------------------------- */

static int
upload_name_ok(const char *s)
{
	size_t n;

	for (n = 0; s[n] != '\0'; n++)
		if (!(s[n] >= 'a' && s[n] <= 'z') && !(s[n] >= 'A' &&
		    s[n] <= 'Z') && !(s[n] >= '0' && s[n] <= '9') && s[n] != '_')
			return 0;
	return n > 0 && n <= UPLOAD_NAME_MAX;
}

/* Goes into a header: no control characters, quotes or backslashes. */
static const char *
upload_label_bad(const char *s, size_t max)
{
	size_t n;

	for (n = 0; s[n] != '\0'; n++)
		if ((unsigned char)s[n] < 0x20 || s[n] == 0x7f ||
		    s[n] == '"' || s[n] == '\\')
			return "must not hold control characters, '\"' or '\\'";
	if (n == 0 || n > max)
		return "has a bad length";
	return NULL;
}

/* Only the members we know; each a string. */
static int
upload_check_members(struct upload *u, const char *where, json_t *v)
{
	const char	*k, *bad;
	json_t		*m;

	if (json_object_get(v, "@file") != NULL &&
	    json_object_get(v, "@data") != NULL)
		return upload_fail(u, where, "a file object has both @file "
		    "and @data");
	json_object_foreach(v, k, m) {
		if (strcmp(k, "@file") != 0 && strcmp(k, "@data") != 0 &&
		    strcmp(k, "filename") != 0 && strcmp(k, "content_type") != 0)
			return upload_fail(u, where, "unknown member \"%.32s\" "
			    "in a file object", k);
		if (!json_is_string(m))
			return upload_fail(u, where, "%s must be a string", k);
	}
	if ((m = json_object_get(v, "filename")) != NULL &&
	    (bad = upload_label_bad(json_string_value(m),
	    UPLOAD_FILENAME_MAX)) != NULL)
		return upload_fail(u, where, "filename %s", bad);
	if ((m = json_object_get(v, "content_type")) != NULL &&
	    (bad = upload_label_bad(json_string_value(m),
	    UPLOAD_CTYPE_MAX)) != NULL)
		return upload_fail(u, where, "content_type %s", bad);
	return 0;
}

static int
upload_from_path(struct upload *u, const char *where, struct http_part *p,
    const char *rel)
{
	char	 why[UPLOAD_ERR_MAX];
	int64_t	 size;
	const char *base;

	if (u->dirfd == -1)
		return upload_fail(u, where, "file references are refused: "
		    "upload_dir is not set");
	if (upload_nopen >= UPLOAD_OPEN_MAX)
		return upload_fail(u, where, "%d files are waiting to be sent "
		    "already; try again later", UPLOAD_OPEN_MAX);
	if ((p->fd = upload_open(u->dirfd, rel, u->max_size, &size, why,
	    sizeof(why))) == -1)
		return upload_fail(u, where, "%s", why);
	upload_nopen++;
	p->len = (size_t)size;
	if (p->filename == NULL) {
		base = strrchr(rel, '/');
		base = base != NULL && base[1] != '\0' ? base + 1 : rel;
		p->filename = upload_strndup(u, base, strlen(base));
	}
	return 0;
}

static int
upload_from_data(struct upload *u, const char *where, struct http_part *p,
    json_t *data)
{
	const char	*s = json_string_value(data);
	size_t		 len = json_string_length(data), bad;
	unsigned char	*out;
	ssize_t		 n;

	out = xmalloc(len / 4 * 3 + 3);
	if ((n = upload_b64_decode(s, len, out, &bad)) == -1) {
		free(out);
		return upload_fail(u, where, "@data is not valid base64 "
		    "(at offset %zu)", bad);
	}
	if (upload_keep(u, (char *)out) == NULL)
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	p->data = (const char *)out;
	p->len = (size_t)n;
	if (p->filename == NULL)
		p->filename = "file";
	return 0;
}

static const char *
upload_member_dup(struct upload *u, json_t *v, const char *k)
{
	json_t *m = json_object_get(v, k);

	if (m == NULL)
		return NULL;
	return upload_strndup(u, json_string_value(m), json_string_length(m));
}

/* A file object v becomes the file part name. */
static int
upload_file(struct upload *u, const char *where, const char *name, json_t *v)
{
	struct http_part	*p;
	json_t			*m;

	if (upload_check_members(u, where, v) == -1)
		return -1;
	if (++u->nfiles > UPLOAD_MAX_FILES)
		return upload_fail(u, where, "more than %d files in one call",
		    UPLOAD_MAX_FILES);
	if ((p = upload_part(u, where)) == NULL)
		return -1;
	p->name = name;
	p->filename = upload_member_dup(u, v, "filename");
	p->ctype = upload_member_dup(u, v, "content_type");
	if ((m = json_object_get(v, "@file")) != NULL) {
		if (upload_from_path(u, where, p, json_string_value(m)) == -1)
			return -1;
	} else if (upload_from_data(u, where, p, json_object_get(v,
	    "@data")) == -1)
		return -1;
	if (p->filename == NULL)
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	u->bytes += (int64_t)p->len;
	return 0;
}

/* tgfile0, tgfile1, ...: a name no top-level parameter uses. */
static const char *
upload_attach_name(struct upload *u)
{
	char name[32];

	do
		snprintf(name, sizeof(name), "tgfile%u", u->attach++);
	while (json_object_get(u->params, name) != NULL);
	return upload_strndup(u, name, strlen(name));
}

/* A nested file object becomes a part; its place gets "attach://name". */
static json_t *
upload_nested(struct upload *u, json_t *v, const char *where)
{
	const char *name;

	if ((name = upload_attach_name(u)) == NULL)
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	if (upload_file(u, where, name, v) == -1)
		return NULL;
	return json_sprintf("attach://%s", name);
}

static void
upload_where(char *buf, size_t bufsz, const char *parent, const char *key,
    size_t idx)
{
	if (key != NULL)
		snprintf(buf, bufsz, "%s.%s", parent, key);
	else
		snprintf(buf, bufsz, "%s[%zu]", parent, idx);
}

/* One member or element of j (a copy we own): replace or descend. */
static int
upload_slot(struct upload *u, json_t *j, const char *key, size_t idx,
    json_t *v, const char *parent, int depth)
{
	char	 where[UPLOAD_WHERE_MAX];
	json_t	*ref;

	upload_where(where, sizeof(where), parent, key, idx);
	if (!upload_is_file(v))
		return upload_replace(u, v, where, depth + 1);
	if ((ref = upload_nested(u, v, where)) == NULL)
		return -1;
	/* v is freed here: nothing of the upload points into it */
	if ((key != NULL ? json_object_set_new(j, key, ref) :
	    json_array_set_new(j, idx, ref)) == -1)
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	return 0;
}

/* Every nested file object in j (a copy we own) becomes an attach://. */
static int
upload_replace(struct upload *u, json_t *j, const char *where, int depth)
{
	const char	*k;
	json_t		*v;
	size_t		 i;

	if (depth > UPLOAD_DEPTH_MAX && (json_is_object(j) ||
	    json_is_array(j)))
		return upload_fail(u, where, "nested too deeply");
	if (json_is_object(j)) {
		json_object_foreach(j, k, v)
			if (upload_slot(u, j, k, 0, v, where, depth) == -1)
				return -1;
	} else if (json_is_array(j)) {
		json_array_foreach(j, i, v)
			if (upload_slot(u, j, NULL, i, v, where, depth) == -1)
				return -1;
	}
	return 0;
}

/* A top-level object or array: its JSON text, file objects attached. */
static int
upload_json_param(struct upload *u, const char *name, json_t *v)
{
	json_t	*copy;
	char	*text;
	int	 rc;

	if ((copy = json_deep_copy(v)) == NULL)
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	rc = upload_replace(u, copy, name, 1);
	text = rc == 0 ? json_dumps(copy, JSON_COMPACT) : NULL;
	json_decref(copy);
	if (rc == -1)
		return -1;
	if (upload_keep(u, text) == NULL)
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	return upload_text(u, name, text, strlen(text));
}

/* A top-level scalar: strings as they are, the rest as JSON text. */
static int
upload_scalar_param(struct upload *u, const char *name, json_t *v)
{
	char	*text;

	if (json_is_string(v))
		return upload_text(u, name, json_string_value(v),
		    json_string_length(v));
	if ((text = upload_keep(u, json_dumps(v, JSON_COMPACT |
	    JSON_ENCODE_ANY))) == NULL)
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	return upload_text(u, name, text, strlen(text));
}

static int
upload_param(struct upload *u, const char *k, json_t *v)
{
	const char *name;

	if (!upload_name_ok(k))
		return upload_fail(u, "params", "parameter name \"%.32s\" cannot "
		    "be sent as multipart (1 to %d of [A-Za-z0-9_])", k,
		    UPLOAD_NAME_MAX);
	if ((name = upload_strndup(u, k, strlen(k))) == NULL)
		fatalx(EXIT_NOMEM, "%s: out of memory", __func__);
	if (upload_is_file(v))
		return upload_file(u, name, name, v);
	if (json_is_object(v) || json_is_array(v))
		return upload_json_param(u, name, v);
	return upload_scalar_param(u, name, v);
}

/* Is there a file object anywhere in j?  Too deep to tell counts as yes. */
static int
upload_any(json_t *j, int depth)
{
	const char	*k;
	json_t		*v;
	size_t		 i;

	if (upload_is_file(j))
		return 1;
	if (depth > UPLOAD_DEPTH_MAX)
		return json_is_object(j) || json_is_array(j);
	if (json_is_object(j)) {
		json_object_foreach(j, k, v)
			if (upload_any(v, depth + 1))
				return 1;
	} else if (json_is_array(j)) {
		json_array_foreach(j, i, v)
			if (upload_any(v, depth + 1))
				return 1;
	}
	return 0;
}

int
upload_prepare(json_t *params, int dirfd, int64_t max_size,
    struct upload **out, char *err, size_t errsz)
{
	struct upload	*u;
	const char	*k;
	json_t		*v;
	int		 any = 0;

	*out = NULL;
	json_object_foreach(params, k, v)
		if ((any = upload_any(v, 1)) != 0)
			break;
	if (!any)
		return 0;
	u = xcalloc(1, sizeof(*u));
	u->params = params;
	u->dirfd = dirfd;
	u->max_size = max_size;
	u->err = err;
	u->errsz = errsz;
	json_object_foreach(params, k, v)
		if (upload_param(u, k, v) == -1) {
			upload_free(u);
			return -1;
		}
	u->params = NULL;
	u->err = NULL;
	*out = u;
	return 1;
}

void
upload_free(struct upload *u)
{
	size_t i;

	if (u == NULL)
		return;
	for (i = 0; i < u->nparts; i++)
		if (u->parts[i].fd != -1) {
			close(u->parts[i].fd);
			upload_nopen--;
		}
	for (i = 0; i < u->nstrs; i++)
		free(u->strs[i]);
	free(u->strs);
	free(u->parts);
	free(u);
}

const struct http_part *
upload_parts(const struct upload *u, size_t *n)
{
	*n = u->nparts;
	return u->parts;
}

int64_t
upload_size(const struct upload *u)
{
	return u->bytes;
}
