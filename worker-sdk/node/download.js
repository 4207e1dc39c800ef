// SPDX-License-Identifier: ISC
'use strict';
/*
 * Downloads through the daemon's Bot API endpoint (tgrunner-protocol(7),
 * "The Bot API endpoint"): GET <api_root>/file/bot<api_token>/<file_path>,
 * with Node's http module ("unix:/path" roots through socketPath).
 */

const fs = require('fs');
const http = require('http');

const ERROR_MAX = 65536;	/* bytes of an error answer kept */
const IDLE_MS = 60000;		/* without a byte: give up */

function requestOptions(apiRoot, target) {
	if (apiRoot.startsWith('unix:'))
		return { socketPath: apiRoot.slice(5), path: target };
	const u = new URL(apiRoot);
	if (u.protocol !== 'http:')
		throw new Error(`api_root ${apiRoot}: expected http://host:port ` +
		    'or unix:/path');
	return { host: u.hostname.replace(/^\[|\]$/g, ''), port: u.port,
	    path: target };
}

function encodePath(p) {
	return p.split('/').map(encodeURIComponent).join('/');
}

/* An error answer: {error_code, description, parameters} for makeError. */
function readError(res, status, makeError, reject) {
	const parts = [];
	let n = 0;
	res.on('data', (c) => {
		if (n < ERROR_MAX)
			parts.push(c);
		n += c.length;
	});
	res.on('end', () => {
		let r;
		try {
			r = JSON.parse(Buffer.concat(parts).toString());
		} catch (e) {
			r = {};
		}
		reject(makeError({ error_code: status, description:
		    r.description || `HTTP ${status}`,
		    parameters: r.parameters }));
	});
	res.on('error', reject);
}

/*
 * The file at filePath (getFile's): a Buffer, or with opts.path written
 * there (removed again on error) and the path.  opts.maxSize bounds it.
 * makeError(r) builds the error thrown for an error answer.
 */
function fetchFile(apiRoot, apiToken, filePath, opts, makeError) {
	const o = opts || {};
	const max = o.maxSize === undefined ? Infinity : o.maxSize;
	const target = `/file/bot${apiToken}/${encodePath(filePath)}`;

	return new Promise((resolve, reject) => {
		let out = null;
		let size = 0;
		let settled = false;
		const parts = [];
		const done = (err, value) => {
			if (settled)
				return;
			settled = true;
			if (err === null)
				return resolve(value);
			req.destroy();
			if (out === null)
				return reject(err);
			out.destroy();
			fs.unlink(o.path, () => reject(err));
		};
		const fail = (e) => done(e);
		const req = http.get(requestOptions(apiRoot, target), (res) => {
			if (res.statusCode !== 200)
				return readError(res, res.statusCode, makeError,
				    fail);
			const len = Number(res.headers['content-length']);
			if (Number.isFinite(len) && len > max)
				return fail(new RangeError(`the file has ${len} ` +
				    `bytes, more than ${max}`));
			if (o.path !== undefined) {
				out = fs.createWriteStream(o.path);
				out.on('error', fail);
			}
			res.on('data', (c) => {
				size += c.length;
				if (size > max)
					return fail(new RangeError('the file has ' +
					    `more than ${max} bytes`));
				if (out !== null)
					out.write(c);
				else
					parts.push(c);
			});
			res.on('error', fail);
			res.on('aborted', () => fail(new Error('the Bot API ' +
			    'endpoint cut the file short')));
			res.on('end', () => {
				if (!res.complete)
					return fail(new Error('the Bot API endpoint ' +
					    'cut the file short'));
				if (out === null)
					return done(null, Buffer.concat(parts, size));
				out.end((err) => done(err || null, o.path));
			});
		});
		req.setTimeout(IDLE_MS, () => fail(new Error('the Bot API ' +
		    `endpoint sent nothing for ${IDLE_MS / 1000} s`)));
		req.on('error', fail);
	});
}

module.exports = { fetchFile };
