/* SPDX-License-Identifier: ISC */
/*
 * File uploads in workers' Bot API calls.  Anywhere in a call's params, an
 * object with an "@file" or "@data" member is a file to upload:
 *
 *   {"@file": "relative/path", "filename"?: "...", "content_type"?: "..."}
 *	a regular file under upload_dir, opened without following any
 *	symbolic link (never re-opened by path: the fd is what is sent);
 *   {"@data": "<base64>", "filename"?: "...", "content_type"?: "..."}
 *	bytes carried in the frame itself.
 *
 * Such a call is sent as multipart/form-data: a top-level file object
 * becomes the file part of its parameter; a nested one (sendMediaGroup's
 * media, an InputMedia's thumbnail) becomes "attach://tgfileN" in its
 * parameter's JSON text plus a file part tgfileN.  Everything here is pure
 * but for opening files, so the unit and fuzz tests can drive it.
 */
#ifndef TG_UPLOAD_H
#define TG_UPLOAD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

struct http_part;
struct upload;

#define UPLOAD_MAX_FILES	50	/* file objects in one call */
#define UPLOAD_ERR_MAX		256	/* "tgrunner: ..." descriptions */

/*
 * Could body (a call's params as compact JSON text) hold a file object?
 * A fast filter: 0 means certainly not, so the call stays JSON.
 */
int		 upload_wanted(const char *body);

/*
 * Lay params out as multipart parts.  dirfd: upload_dir (from
 * upload_dir_open), or -1 when none is configured; max_size bounds each
 * @file.  Returns 1 with *out set (the caller frees it with upload_free),
 * 0 if params hold no file object, or -1 with err filled with a
 * description for the worker ("tgrunner: ...").
 */
int		 upload_prepare(json_t *params, int dirfd, int64_t max_size,
		    struct upload **out, char *err, size_t errsz);
/* Closes the files.  NULL is fine. */
void		 upload_free(struct upload *);
/* The parts, valid until upload_free. */
const struct http_part *upload_parts(const struct upload *, size_t *n);
/* Bytes of all file parts, for the request's timeout. */
int64_t		 upload_size(const struct upload *);

/* An O_PATH directory fd of path (O_CLOEXEC), or -1 with errno set. */
int		 upload_dir_open(const char *path);
/*
 * Open rel beneath dirfd for reading: a regular file of at most max_size
 * bytes, reached without a symbolic link.  Returns the fd with *size set,
 * or -1 with err filled.
 */
int		 upload_open(int dirfd, const char *rel, int64_t max_size,
		    int64_t *size, char *err, size_t errsz);
/*
 * Decode standard base64 (padding optional, nothing else allowed) into
 * out, which has room for at least len / 4 * 3 + 2 bytes.  Returns the
 * number of bytes, or -1 with *bad set to the offset of the first bad
 * character.
 */
ssize_t		 upload_b64_decode(const char *in, size_t len,
		    unsigned char *out, size_t *bad);
/* Tests: 1 makes upload_open walk the path as if openat2 were missing. */
void		 upload_force_walk(int);

#endif
