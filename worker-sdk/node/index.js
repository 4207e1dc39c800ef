// SPDX-License-Identifier: ISC
'use strict';
/*
 * tgrunner-worker: the Node.js library for tgrunner worker processes.
 *
 * A worker speaks newline-delimited JSON with tgrunnerd over a Unix stream
 * socket (tgrunner-protocol(7), proto/PROTOCOL.md).  This module does the
 * framing, the hello/welcome handshake, slot accounting, Bot API calls
 * through the daemon (call/result), cancel and shutdown, and runs one async
 * handler per update, up to `slots` of them at once.
 *
 *	const { Worker } = require('tgrunner-worker');
 *	const w = new Worker({ slots: 50 });
 *	w.onUpdate(async (ctx) => { if (ctx.text) ctx.reply(ctx.text); });
 *	w.run();
 *
 * No dependencies; Node.js >= 18.
 */

const net = require('net');
const fs = require('fs');
const path = require('path');
const timersPromises = require('timers/promises');
const { fetchFile } = require('./download');

const PROTOCOL = 1;
const MAX_FRAME = 1048576;		/* bytes, newline included */
const MAX_SLOTS = 1024;
const MAX_CALLS = 100;			/* per done frame */
const MAX_NAME = 256;			/* hello name, bytes */
const MAX_REF = 128;			/* a string ref, bytes */
const MIN_FRAME = 64;			/* least welcome.max_frame */
const MAX_API = 512;			/* welcome.api_root, .api_token, bytes */
const INT32_MIN = -(2 ** 31), INT32_MAX = 2 ** 31 - 1;
const INT64_MIN = -(2n ** 63n), INT64_MAX = 2n ** 63n - 1n;
const SAFE_MAX = BigInt(Number.MAX_SAFE_INTEGER);
const METHOD_RE = /^[A-Za-z0-9_]{1,64}$/;
const CANCEL_GRACE = 1000;		/* ms a cancelled handler may take */
const SHUTDOWN_MARGIN = 250;		/* ms before the shutdown deadline */

/* Message-like members of an Update, in the order ctx.message looks. */
const MESSAGE_TYPES = ['message', 'edited_message', 'channel_post',
    'edited_channel_post', 'business_message', 'edited_business_message'];

/* ------------------------------------------------------------------------ */
/* errors */

/** The daemon sent something this library cannot accept: fatal. */
class ProtocolError extends Error {
	constructor(message) {
		super(message);
		this.name = 'ProtocolError';
	}
}

/** A Bot API call (ctx.call) answered with ok:false. */
class ApiError extends Error {
	constructor(method, r) {
		super(`${method}: ${r.error_code} ${r.description || ''}`.trim());
		this.name = 'ApiError';
		this.method = method;
		this.errorCode = r.error_code;
		this.description = r.description;
		this.parameters = r.parameters;
		this.retryAfter = r.retry_after !== undefined ? r.retry_after :
		    (r.parameters && r.parameters.retry_after);
	}
}

/** The reason ctx.signal is aborted with when the daemon cancels. */
class CancelledError extends Error {
	constructor(reason) {
		super(`cancelled${reason ? ': ' + reason : ''}`);
		this.name = 'CancelledError';
		this.reason = reason;
	}
}

/** An outgoing frame that the protocol does not allow (size, NUL). */
class FrameError extends Error {
	constructor(message) {
		super(message);
		this.name = 'FrameError';
	}
}

/* ------------------------------------------------------------------------ */
/* framing */

/*
 * Splits a byte stream into lines.  Bytes are kept as Buffers until a
 * newline arrives, so a UTF-8 sequence split across reads is decoded whole.
 * A line longer than limit (newline included) is an error, detected as soon
 * as that many bytes are buffered without a newline.
 */
class LineSplitter {
	constructor(limit) {
		this.limit = limit;
		this.parts = [];
		this.len = 0;
	}

	/* Returns the complete lines (Buffers, newline stripped). */
	push(chunk) {
		const lines = [];
		let start = 0;
		let nl;
		while ((nl = chunk.indexOf(0x0a, start)) !== -1) {
			if (this.len + nl - start + 1 > this.limit)
				throw new ProtocolError('frame longer than ' +
				    this.limit + ' bytes');
			let line = chunk.subarray(start, nl);
			if (this.len > 0) {
				this.parts.push(line);
				line = Buffer.concat(this.parts, this.len + line.length);
				this.parts = [];
				this.len = 0;
			}
			lines.push(line);
			start = nl + 1;
		}
		if (start < chunk.length) {
			const rest = chunk.subarray(start);
			if (this.len + rest.length >= this.limit)
				throw new ProtocolError('frame longer than ' +
				    this.limit + ' bytes');
			/* copy: the caller's chunk may be reused */
			this.parts.push(Buffer.from(rest));
			this.len += rest.length;
		}
		return lines;
	}

	get pending() {
		return this.len;
	}
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/*
 * What JSON.parse lets through but the protocol does not (section 2), found
 * in one pass over text that JSON.parse accepted: duplicate members at any
 * depth, integers beyond 64 bits, infinite reals, escaped NUL or lone
 * surrogates.  Also what the frame's own members were written as: the
 * top-level members written as reals (where an integer is due they are
 * wrong, though JSON.parse makes 3.0 into 3) and those integers beyond
 * 2^53, which JSON.parse rounds (they become BigInts).
 */
const SUSPECT_ESC_RE = /\\u(?:0000|[dD][89a-fA-F])/;
const LONE_SURROGATE_RE =
    /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/* - + . 0-9 e E: what may follow the first character of a number */
function isNumberChar(c) {
	return (c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x65 ||
	    c === 0x45 || c === 0x2d || c === 0x2b;
}

/* A member name of the innermost object; returns the current top key. */
function addKey(stack, key, topKey) {
	const keys = stack[stack.length - 1];
	if (keys.has(key))
		throw new ProtocolError('duplicate member ' +
		    JSON.stringify(key).slice(0, 60));
	keys.add(key);
	return stack.length === 1 ? key : topKey;
}

function stringEnd(text, i) {
	for (let j = i + 1; ; ) {
		const q = text.indexOf('"', j);
		let b = q - 1;
		while (text.charCodeAt(b) === 0x5c)
			b--;
		if ((q - 1 - b) % 2 === 0)
			return q + 1;
		j = q + 1;
	}
}

function checkText(s) {
	if (s.indexOf('\u0000') !== -1)
		throw new ProtocolError('NUL character in a frame');
	if (LONE_SURROGATE_RE.test(s))
		throw new ProtocolError('escaped lone surrogate in a frame');
}

function scanNumber(tok, topKey, info) {
	if (/[.eE]/.test(tok)) {
		if (!Number.isFinite(Number(tok)))
			throw new ProtocolError('number out of range (reals must ' +
			    'be finite): ' + tok.slice(0, 40));
		if (topKey !== null)
			info.reals.add(topKey);
		return;
	}
	if (tok.length < 16)		/* 15 digits: always safe */
		return;
	const b = BigInt(tok);
	if (b < INT64_MIN || b > INT64_MAX)
		throw new ProtocolError('number out of range (integers must ' +
		    'fit in 64 bits): ' + tok.slice(0, 40));
	if (topKey !== null && (b > SAFE_MAX || b < -SAFE_MAX))
		info.bigs.set(topKey, b);
}

function scanJson(text) {
	const info = { reals: new Set(), bigs: new Map() };
	const strings = SUSPECT_ESC_RE.test(text);
	const stack = [];	/* per level: a Set of keys, or null (array) */
	let wantKey = false;
	let topKey = null;
	for (let i = 0, n = text.length; i < n; ) {
		const c = text.charCodeAt(i);
		if (c === 0x22) {				/* " */
			const end = stringEnd(text, i);
			if (wantKey || strings) {
				const raw = text.slice(i, end);
				const str = raw.indexOf('\\') === -1 ?
				    raw.slice(1, -1) : JSON.parse(raw);
				if (wantKey)
					topKey = addKey(stack, str, topKey);
				if (strings)
					checkText(str);
				wantKey = false;
			}
			i = end;
		} else if (c === 0x7b) {			/* { */
			stack.push(new Set());
			wantKey = true;
			i++;
		} else if (c === 0x5b) {			/* [ */
			stack.push(null);
			i++;
		} else if (c === 0x7d || c === 0x5d) {		/* } ] */
			stack.pop();
			i++;
		} else if (c === 0x2c) {			/* , */
			wantKey = stack[stack.length - 1] !== null;
			i++;
		} else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
			let j = i + 1;
			while (j < n && isNumberChar(text.charCodeAt(j)))
				j++;
			scanNumber(text.slice(i, j), stack.length === 1 ? topKey :
			    null, info);
			i = j;
		} else
			i++;	/* whitespace, ':', true, false, null */
	}
	return info;
}

/* An integer member in [lo, hi], written as one (a BigInt beyond 2^53). */
function intMember(f, info, key, lo, hi) {
	const v = f[key];
	return !info.reals.has(key) && (Number.isSafeInteger(v) ||
	    typeof v === 'bigint') && v >= lo && v <= hi;
}

/*
 * One line from the daemon (without its newline) to a plain object with a
 * string "type".  Refuses what the daemon's decoder refuses (proto/vectors
 * says so); a frame of a type this library does not know is returned (the
 * caller ignores it).  Ids and refs beyond 2^53 are BigInts.
 */
function decodeFrame(line) {
	if (line.length + 1 > MAX_FRAME)
		throw new ProtocolError('frame longer than ' + MAX_FRAME +
		    ' bytes');
	if (line.indexOf(0) !== -1)
		throw new ProtocolError('NUL byte in a frame');
	if (line.indexOf(0x0a) !== -1)
		throw new ProtocolError('newline inside a frame');
	let text;
	try {
		text = utf8.decode(line);
	} catch (e) {
		throw new ProtocolError('invalid UTF-8 in a frame');
	}
	let f;
	try {
		f = JSON.parse(text);
	} catch (e) {
		throw new ProtocolError('malformed JSON: ' + e.message);
	}
	if (f === null || typeof f !== 'object' || Array.isArray(f))
		throw new ProtocolError('frame is not a JSON object');
	const info = scanJson(text);
	if (typeof f.type !== 'string')
		throw new ProtocolError('frame without a string "type"');
	for (const [k, b] of info.bigs)
		f[k] = b;
	const check = D2W_CHECKS[f.type];
	if (check !== undefined)
		check(f, info);
	else if (W2D_TYPES.has(f.type))
		throw new ProtocolError(`${f.type} frame from the daemon`);
	/* a deadline of 2^60 ms is as good as a Number: ids must be exact */
	for (const k of info.bigs.keys())
		if (k !== 'id' && k !== 'ref')
			f[k] = Number(f[k]);
	return f;
}

/* NUL escaped by JSON.stringify (preceded by an even number of '\'). */
const NUL_ESC_RE = /(?:^|[^\\])(?:\\\\)*\\u0000/;
/* A lone surrogate escaped by JSON.stringify (or a literal look-alike). */
const SURROGATE_ESC_RE = /\\ud[89a-f][0-9a-f]{2}/i;

function wellFormed(s) {
	if (typeof s.toWellFormed === 'function')
		return s.toWellFormed();
	return s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g,
	    '\ufffd');
}

function strictReplacer(key, value) {
	if (typeof value === 'string') {
		if (value.indexOf('\u0000') !== -1)
			throw new FrameError('NUL character in a frame ' +
			    '(the protocol forbids it)');
		return wellFormed(value);
	}
	if (value !== null && typeof value === 'object' &&
	    !Array.isArray(value) && typeof value.toJSON !== 'function') {
		/* keys too may hold lone surrogates or NUL */
		let bad = false;
		for (const k of Object.keys(value))
			if (k.indexOf('\u0000') !== -1 || wellFormed(k) !== k)
				bad = true;
		if (bad) {
			const o = {};
			for (const k of Object.keys(value)) {
				if (k.indexOf('\u0000') !== -1)
					throw new FrameError('NUL character ' +
					    'in a frame (the protocol forbids it)');
				o[wellFormed(k)] = value[k];
			}
			return o;
		}
	}
	return value;
}

/*
 * A frame object to its wire form (without the newline).  Compact JSON never
 * holds a raw newline.  Lone surrogates become U+FFFD (the daemon only takes
 * valid UTF-8); a NUL character is refused (FrameError).
 */
function stringify(v) {
	let s = JSON.stringify(v);
	if (NUL_ESC_RE.test(s) || SURROGATE_ESC_RE.test(s))
		s = JSON.stringify(v, strictReplacer);
	return s;
}

function encodeFrame(obj) {
	const keys = Object.keys(obj);
	if (!keys.some((k) => typeof obj[k] === 'bigint'))
		return stringify(obj);
	/* an id beyond 2^53, as it came: JSON.stringify cannot write it */
	const parts = [];
	for (const k of keys) {
		const v = obj[k];
		if (v !== undefined)
			parts.push(JSON.stringify(k) + ':' + (typeof v === 'bigint' ?
			    v.toString() : stringify(v)));
	}
	return '{' + parts.join(',') + '}';
}

/* ------------------------------------------------------------------------ */
/* validation of daemon frames (peers are untrusted) */

function need(cond, type, what) {
	if (!cond)
		throw new ProtocolError(`${type}: ${what}`);
}

function isObject(v) {
	return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/* Section 4 of PROTOCOL.md: the same ranges as proto/proto.c. */
function checkWelcome(f, info) {
	need(intMember(f, info, 'protocol', 1, INT32_MAX), 'welcome',
	    'bad protocol');
	need(intMember(f, info, 'worker_id', 0, INT32_MAX), 'welcome',
	    'bad worker_id');
	need(isObject(f.bot), 'welcome', 'bot is not an object');
	need(intMember(f, info, 'max_frame', MIN_FRAME, MAX_FRAME), 'welcome',
	    'bad max_frame');
	for (const name of ['api_root', 'api_token'])
		need(f[name] === undefined || (typeof f[name] === 'string' &&
		    Buffer.byteLength(f[name]) <= MAX_API), 'welcome',
		    `${name} is not a string of at most ${MAX_API} bytes`);
	need((f.api_root === undefined) === (f.api_token === undefined),
	    'welcome', 'api_root and api_token come together');
}

function checkUpdate(f, info) {
	need(intMember(f, info, 'id', 0, INT64_MAX), 'update', 'bad id');
	need(Array.isArray(f.keys) && f.keys.every((k) => typeof k === 'string'),
	    'update', 'keys is not an array of strings');
	need(intMember(f, info, 'attempt', 1, INT32_MAX), 'update',
	    'bad attempt');
	need(intMember(f, info, 'deadline', 0, INT64_MAX), 'update',
	    'bad deadline');
	need(isObject(f.update), 'update', 'update is not an object');
}

function checkResult(f, info) {
	need(intMember(f, info, 'ref', INT64_MIN, INT64_MAX) ||
	    (typeof f.ref === 'string' && Buffer.byteLength(f.ref) <= MAX_REF),
	    'result', 'bad ref');
	need(typeof f.ok === 'boolean', 'result', 'ok is not a boolean');
	if (f.ok) {
		need('result' in f, 'result', 'no result');
		return;
	}
	need(intMember(f, info, 'error_code', INT32_MIN, INT32_MAX), 'result',
	    'error without an integer error_code');
	need(typeof f.description === 'string', 'result',
	    'error without a description');
	need(f.parameters === undefined || isObject(f.parameters), 'result',
	    'parameters is not an object');
	need(f.retry_after === undefined ||
	    intMember(f, info, 'retry_after', 0, INT32_MAX), 'result',
	    'bad retry_after');
}

function checkCancel(f, info) {
	need(intMember(f, info, 'id', 0, INT64_MAX), 'cancel', 'bad id');
	need(f.reason === undefined || typeof f.reason === 'string', 'cancel',
	    'reason is not a string');
}

function checkShutdown(f, info) {
	need(f.deadline === undefined ||
	    intMember(f, info, 'deadline', 0, INT64_MAX), 'shutdown',
	    'bad deadline');
}

const D2W_CHECKS = { __proto__: null, welcome: checkWelcome,
    update: checkUpdate, result: checkResult, cancel: checkCancel,
    shutdown: checkShutdown };
const W2D_TYPES = new Set(['hello', 'done', 'fail', 'call']);

/* ------------------------------------------------------------------------ */
/* the update context */

function updateType(update) {
	for (const k of Object.keys(update))
		if (k !== 'update_id')
			return k;
	return undefined;
}

function updateMessage(update) {
	for (const t of MESSAGE_TYPES)
		if (update[t] && typeof update[t] === 'object')
			return update[t];
	const cq = update.callback_query;
	if (cq && cq.message && typeof cq.message === 'object')
		return cq.message;
	return undefined;
}

function updateChat(update) {
	const m = updateMessage(update);
	if (m && m.chat)
		return m.chat;
	const t = updateType(update);
	const body = t !== undefined ? update[t] : undefined;
	if (body && typeof body === 'object' && body.chat &&
	    typeof body.chat === 'object')
		return body.chat;
	return undefined;
}

function updateFrom(update) {
	const t = updateType(update);
	const body = t !== undefined ? update[t] : undefined;
	if (!body || typeof body !== 'object')
		return undefined;
	return body.from || body.user || undefined;
}

/**
 * One update being handled.  Answered exactly once: by the handler's
 * return (done with the calls added), its throw (fail, retry), ctx.done(),
 * ctx.fail(), a cancel that the handler does not honour within the grace,
 * or the shutdown deadline.
 */
class Context {
	constructor(worker, f) {
		this._worker = worker;
		this._calls = [];
		this._abort = new AbortController();
		this._cancelTimer = null;
		this.answered = false;
		this.cancelled = false;
		this.id = f.id;
		this.keys = f.keys;
		this.attempt = f.attempt;
		this.deadline = f.deadline;
		this.update = f.update;
		this.type = updateType(f.update);
		this.message = updateMessage(f.update);
		this.chat = updateChat(f.update);
		this.chatId = this.chat ? this.chat.id : undefined;
		this.from = updateFrom(f.update);
		this.text = this.message && typeof this.message.text === 'string' ?
		    this.message.text : undefined;
	}

	/** Aborted when the daemon cancels this update (deadline passed). */
	get signal() {
		return this._abort.signal;
	}

	get bot() {
		return this._worker.bot;
	}

	/** The calls added so far (run by the daemon after done). */
	get calls() {
		return this._calls.slice();
	}

	/** Add a Bot API call run by the daemon after this update is done. */
	addCall(method, params) {
		if (this.answered)
			throw new Error(`update ${this.id} is already answered`);
		checkMethod(method);
		checkParams(params);
		if (this._calls.length >= MAX_CALLS)
			throw new Error(`more than ${MAX_CALLS} calls in one done`);
		const c = { method };
		if (params !== undefined)
			c.params = params;
		this._calls.push(c);
		return this;
	}

	/** sendMessage to this update's chat, after done. */
	reply(text, params) {
		if (this.chatId === undefined)
			throw new Error(`update ${this.id} (${this.type}) has ` +
			    'no chat to reply to');
		const p = Object.assign({ chat_id: this.chatId, text: String(text) },
		    params || {});
		if (this.message && this.message.business_connection_id &&
		    p.business_connection_id === undefined)
			p.business_connection_id =
			    this.message.business_connection_id;
		return this.addCall('sendMessage', p);
	}

	/**
	 * Run a Bot API method now, through the daemon.  Resolves with the
	 * method's result; rejects with ApiError (ok:false), or an Error when
	 * the connection is gone or the frame cannot be sent.
	 */
	call(method, params) {
		return this._worker._call(this.answered ? 0 : this.id, method,
		    params);
	}

	/**
	 * The file of fileId (a photo's, a document's) through the daemon's
	 * Bot API endpoint: a Buffer, or with opts.path written there (the
	 * path resolved).  opts.maxSize bounds it (RangeError beyond; the
	 * daemon's own bound is download_max_size).  Rejects with ApiError
	 * for the Bot API's errors (an unknown file_id), Error when the daemon
	 * serves no endpoint.
	 */
	download(fileId, opts) {
		return this._worker._download(this.answered ? 0 : this.id, fileId,
		    opts);
	}

	/** Resolves after ms; rejects with the cancel reason if cancelled. */
	sleep(ms) {
		return timersPromises.setTimeout(ms, undefined,
		    { signal: this.signal }).catch((e) => {
			if (this.signal.aborted)
				throw this.signal.reason;
			throw e;
		});
	}

	/** Answer done now (with the calls added so far, plus calls). */
	done(calls) {
		if (calls !== undefined)
			for (const c of calls)
				this.addCall(c.method, c.params);
		return this._worker._answerDone(this);
	}

	/** Answer fail now; retry defaults to false (dead-letter it). */
	fail(error, opts) {
		const retry = !!(opts && opts.retry);
		return this._worker._answerFail(this, errorText(error), retry);
	}
}

function checkMethod(method) {
	if (typeof method !== 'string' || !METHOD_RE.test(method))
		throw new TypeError(`bad Bot API method name ${JSON.stringify(method)}`);
}

function checkParams(params) {
	if (params !== undefined && (params === null ||
	    typeof params !== 'object' || Array.isArray(params)))
		throw new TypeError('params must be an object');
}

function errorText(e) {
	if (e instanceof Error)
		return e.message || e.name || 'error';
	if (typeof e === 'string')
		return e || 'error';
	try {
		return String(e);
	} catch (x) {
		return 'error';
	}
}

/* ------------------------------------------------------------------------ */
/* file uploads (tgrunner-protocol(7), "File uploads") */

function uploadExtra(obj, opts) {
	if (opts && opts.filename !== undefined)
		obj.filename = opts.filename;
	if (opts && opts.contentType !== undefined)
		obj.content_type = opts.contentType;
	return obj;
}

/**
 * A file under the daemon's upload_dir, by its path relative to it, for
 * any InputFile parameter (top level or inside media).  opts: filename
 * (default: the path's last component), contentType.  Throws TypeError for
 * a path the daemon would refuse anyway.
 */
function uploadFile(relPath, opts) {
	if (typeof relPath !== 'string' || relPath === '')
		throw new TypeError('uploadFile: path must be a non-empty string');
	if (relPath.startsWith('/'))
		throw new TypeError('uploadFile: path must be relative to upload_dir');
	if (relPath.split('/').includes('..'))
		throw new TypeError('uploadFile: path must not contain ".."');
	return uploadExtra({ '@file': relPath }, opts);
}

/**
 * Bytes sent inline, base64 in the frame: up to about 768 KiB.  data: a
 * Buffer, Uint8Array or string (UTF-8).  opts: filename (default "file"),
 * contentType.  Throws RangeError beyond the frame limit.
 */
function uploadBytes(data, opts) {
	const b64 = Buffer.from(data).toString('base64');

	if (b64.length >= MAX_FRAME)
		throw new RangeError(`uploadBytes: ${Buffer.byteLength(data)} ` +
		    'bytes do not fit in a frame; use uploadFile');
	return uploadExtra({ '@data': b64 }, opts);
}

/* ------------------------------------------------------------------------ */
/* the worker */

const S_NEW = 'new', S_HELLO = 'hello', S_RUNNING = 'running',
    S_DRAINING = 'draining', S_CLOSED = 'closed';

/**
 * A worker connection.  options:
 *   slots        updates handled at once (1..1024, default 1)
 *   name         shown in the daemon's logs (default: the script's name)
 *   socket       a connected net.Socket to use (tests, embedding)
 *   fd           else talk on this fd (default $TGRUNNER_FD)
 *   socketPath   else connect to this path (default $TGRUNNER_SOCKET)
 *   exit         process.exit() when the session ends (default true)
 *   cancelGrace  ms a cancelled handler may take before fail (1000)
 *   log          function(message) for diagnostics, or false (stderr)
 *   trace        file to append every frame to ("< " in, "> " out);
 *                default $TGRUNNER_TRACE
 */
class Worker {
	constructor(options) {
		const o = options || {};
		const slots = o.slots === undefined ? 1 : o.slots;
		if (!Number.isInteger(slots) || slots < 1 || slots > MAX_SLOTS)
			throw new RangeError(`slots must be an integer 1..${MAX_SLOTS}`);
		this.slots = slots;
		this.name = o.name !== undefined ? String(o.name) :
		    (process.argv[1] ? path.basename(process.argv[1]) : 'node');
		if (this.name.indexOf('\u0000') !== -1)
			throw new TypeError('name must not contain NUL');
		if (Buffer.byteLength(this.name) > MAX_NAME)
			this.name = Buffer.from(this.name).subarray(0, MAX_NAME)
			    .toString().replace(/\ufffd+$/, '');
		this._opts = o;
		this._exit = o.exit !== undefined ? !!o.exit : true;
		this._cancelGrace = o.cancelGrace !== undefined ? o.cancelGrace :
		    CANCEL_GRACE;
		this._log = o.log === false ? () => {} : (o.log ||
		    ((m) => process.stderr.write('tgrunner-worker: ' + m + '\n')));
		this._handler = null;
		this._shutdownHooks = [];
		this._state = S_NEW;
		this._socket = null;
		this._splitter = new LineSplitter(MAX_FRAME);
		this._running = new Map();	/* id -> Context */
		this._calls = new Map();	/* ref -> {resolve, reject, method} */
		this._ref = 0;
		this._deadlineTimer = null;
		this._traceFd = -1;
		this.bot = null;
		this.workerId = null;
		/* the daemon's Bot API endpoint and this worker's credential */
		this.apiRoot = null;
		this.apiToken = null;
		this.maxFrame = MAX_FRAME;
		this.protocol = PROTOCOL;
	}

	/** The handler: async (ctx) => { ... }, called once per update. */
	onUpdate(fn) {
		if (typeof fn !== 'function')
			throw new TypeError('onUpdate needs a function');
		this._handler = fn;
		return this;
	}

	/** Called (awaited) after shutdown, once every update is answered. */
	onShutdown(fn) {
		if (typeof fn !== 'function')
			throw new TypeError('onShutdown needs a function');
		this._shutdownHooks.push(fn);
		return this;
	}

	/** Updates held, not yet answered. */
	get busy() {
		return this._running.size;
	}

	get shuttingDown() {
		return this._state === S_DRAINING;
	}

	/**
	 * Connect, say hello, handle updates until shutdown or EOF.  Resolves
	 * with the exit status (0) or rejects (protocol or I/O error); with
	 * the exit option (default) the process exits with that status.
	 */
	run() {
		if (this._state !== S_NEW)
			throw new Error('run() called twice');
		if (!this._handler)
			throw new Error('no handler: call onUpdate() first');
		this._state = S_HELLO;
		this._promise = new Promise((resolve, reject) => {
			this._resolve = resolve;
			this._reject = reject;
		});
		if (this._exit)
			this._promise.then((code) => this._exitProcess(code),
			    () => this._exitProcess(1));
		try {
			this._openTrace();
			this._socket = this._connect();
		} catch (e) {
			this._end(e);
			return this._promise;
		}
		const s = this._socket;
		s.on('data', (chunk) => this._onData(chunk));
		s.on('end', () => this._onEof());
		s.on('error', (e) => this._end(e));
		s.on('close', () => this._end(null));
		this._send({ type: 'hello', protocol: PROTOCOL, slots: this.slots,
		    name: this.name });
		return this._promise;
	}

	/** A Bot API call not tied to an update (id 0: no per-key order). */
	call(method, params) {
		return this._call(0, method, params);
	}

	/** ctx.download() outside an update. */
	download(fileId, opts) {
		return this._download(0, fileId, opts);
	}

	async _download(id, fileId, opts) {
		if (this.apiRoot === null)
			throw new Error('the daemon serves no Bot API endpoint ' +
			    '(worker_api_listen is off)');
		const f = await this._call(id, 'getFile', { file_id: fileId });
		if (!f || typeof f.file_path !== 'string')
			throw new ApiError('getFile', { error_code: 400,
			    description: 'getFile answered no file_path' });
		return fetchFile(this.apiRoot, this.apiToken, f.file_path, opts,
		    (r) => new ApiError('download', r));
	}

	/* -- connection ------------------------------------------------------ */

	_connect() {
		const o = this._opts;
		if (o.socket)
			return o.socket;
		if (o.fd !== undefined && o.fd > 0)
			return this._fdSocket(o.fd);
		const env = process.env.TGRUNNER_FD;
		if (env !== undefined && env !== '') {
			if (!/^[0-9]+$/.test(env))
				throw new Error(`bad TGRUNNER_FD "${env}"`);
			return this._fdSocket(Number(env));
		}
		const p = o.socketPath || process.env.TGRUNNER_SOCKET;
		if (p)
			return net.createConnection(p);
		throw new Error('no connection: neither TGRUNNER_FD nor ' +
		    'TGRUNNER_SOCKET is set');
	}

	_fdSocket(fd) {
		return new net.Socket({ fd, readable: true, writable: true });
	}

	_openTrace() {
		const t = this._opts.trace !== undefined ? this._opts.trace :
		    process.env.TGRUNNER_TRACE;
		if (t)
			this._traceFd = fs.openSync(t, 'a');
	}

	_trace(dir, text) {
		if (this._traceFd >= 0)
			fs.writeSync(this._traceFd, dir + ' ' + text + '\n');
	}

	/* Write one frame; throws FrameError if the protocol forbids it. */
	_send(obj) {
		const s = encodeFrame(obj);
		const n = Buffer.byteLength(s) + 1;
		if (n > this.maxFrame)
			throw new FrameError(`${obj.type} frame of ${n} bytes ` +
			    `exceeds max_frame ${this.maxFrame}`);
		if (this._state === S_CLOSED)
			return false;
		this._trace('>', s);
		this._socket.write(s + '\n');
		return true;
	}

	_onData(chunk) {
		if (this._state === S_CLOSED)
			return;
		try {
			for (const line of this._splitter.push(chunk)) {
				this._trace('<', line.toString());
				this._dispatch(decodeFrame(line));
				if (this._state === S_CLOSED)
					return;
			}
		} catch (e) {
			this._end(e);
		}
	}

	_onEof() {
		if (this._splitter.pending > 0)
			this._end(new ProtocolError('connection closed inside ' +
			    'a frame'));
		else if (this._state === S_HELLO)
			this._end(new ProtocolError('connection closed before ' +
			    'welcome (protocol refused?)'));
		else
			this._end(null);
	}

	/* One switch: each known type to its handler; unknown ones ignored. */
	_dispatch(f) {
		if (this._state === S_HELLO && f.type !== 'welcome') {
			if (KNOWN_TYPES.has(f.type))
				throw new ProtocolError(`${f.type} before welcome`);
			return;
		}
		switch (f.type) {
		case 'welcome':
			return this._onWelcome(f);
		case 'update':
			return this._onUpdate(f);
		case 'result':
			return this._onResult(f);
		case 'cancel':
			return this._onCancel(f);
		case 'shutdown':
			return this._onShutdown(f);
		case 'hello':
		case 'done':
		case 'fail':
		case 'call':
			throw new ProtocolError(`${f.type} frame from the daemon`);
		default:
			/* a newer daemon's frame: ignore, as for members */
			return undefined;
		}
	}

	_onWelcome(f) {
		if (this._state !== S_HELLO)
			throw new ProtocolError('second welcome');
		if (f.protocol !== PROTOCOL)
			throw new ProtocolError(`welcome for protocol ${f.protocol}, ` +
			    `this library speaks ${PROTOCOL}`);
		this.workerId = f.worker_id;
		this.bot = f.bot;
		this.maxFrame = f.max_frame;
		if (f.api_root !== undefined) {
			this.apiRoot = f.api_root;
			this.apiToken = f.api_token;
		} else if (process.env.TGRUNNER_API_ROOT &&
		    process.env.TGRUNNER_API_TOKEN) {
			this.apiRoot = process.env.TGRUNNER_API_ROOT;
			this.apiToken = process.env.TGRUNNER_API_TOKEN;
		}
		this._splitter.limit = Math.max(MAX_FRAME, f.max_frame);
		this._state = S_RUNNING;
	}

	_onUpdate(f) {
		if (this._running.has(f.id))
			throw new ProtocolError(`update ${f.id} sent twice`);
		if (this._running.size >= this.slots)
			throw new ProtocolError(`more than ${this.slots} updates ` +
			    'at once');
		const ctx = new Context(this, f);
		this._running.set(f.id, ctx);
		if (this._state === S_DRAINING) {
			this._answerFail(ctx, 'shutting down', true);
			return;
		}
		this._start(ctx);
	}

	_start(ctx) {
		let p;
		try {
			p = Promise.resolve(this._handler(ctx));
		} catch (e) {
			p = Promise.reject(e);
		}
		p.then(() => this._settle(ctx, null, false),
		    (e) => this._settle(ctx, e, true));
	}

	/* The handler returned (or threw): answer unless already answered. */
	_settle(ctx, err, threw) {
		if (ctx.answered) {
			if (threw && !ctx.cancelled)
				this._log(`update ${ctx.id}: handler threw after ` +
				    `it was answered: ${errorText(err)}`);
			return;
		}
		if (!threw) {
			this._answerDone(ctx);
			return;
		}
		if (ctx.cancelled) {
			this._answerFail(ctx, 'cancelled', true);
			return;
		}
		const retry = err && typeof err.retry === 'boolean' ?
		    err.retry : true;
		this._log(`update ${ctx.id}: handler failed: ` +
		    (err && err.stack ? err.stack : errorText(err)));
		this._answerFail(ctx, errorText(err), retry);
	}

	_answerDone(ctx) {
		const f = { type: 'done', id: ctx.id };
		if (ctx._calls.length > 0)
			f.calls = ctx._calls;
		return this._answer(ctx, f);
	}

	_answerFail(ctx, error, retry) {
		/* for the logs: bounded, and no NUL (forbidden on the wire) */
		const e = String(error).replace(/\u0000/g, '\\0').slice(0, 4096);
		return this._answer(ctx, { type: 'fail', id: ctx.id,
		    error: e, retry: !!retry });
	}

	/* The one place an update is answered; frees its slot. */
	_answer(ctx, f) {
		if (ctx.answered)
			return false;
		try {
			this._send(f);
		} catch (e) {
			/* too large, a NUL, a BigInt or a cycle in the calls */
			this._log(`update ${ctx.id}: ${e.message}; answering fail`);
			this._send({ type: 'fail', id: ctx.id,
			    error: e.message.slice(0, 1000), retry: false });
		}
		ctx.answered = true;
		clearTimeout(ctx._cancelTimer);
		this._running.delete(ctx.id);
		if (this._state === S_DRAINING)
			this._maybeFinish();
		return true;
	}

	_call(id, method, params) {
		try {
			checkMethod(method);
			checkParams(params);
		} catch (e) {
			return Promise.reject(e);
		}
		if (this._state !== S_RUNNING && this._state !== S_DRAINING)
			return Promise.reject(new Error('not connected'));
		const ref = ++this._ref;
		const f = { type: 'call', id, ref, method, params: params || {} };
		return new Promise((resolve, reject) => {
			try {
				this._send(f);
			} catch (e) {
				reject(e);
				return;
			}
			this._calls.set(ref, { resolve, reject, method });
		});
	}

	_onResult(f) {
		const c = this._calls.get(f.ref);
		if (c === undefined)
			return;		/* not ours: nothing waits for it */
		this._calls.delete(f.ref);
		if (f.ok)
			c.resolve(f.result);
		else
			c.reject(new ApiError(c.method, f));
	}

	_onCancel(f) {
		const ctx = this._running.get(f.id);
		if (ctx === undefined || ctx.cancelled)
			return;		/* crossed our answer on the wire */
		ctx.cancelled = true;
		ctx._abort.abort(new CancelledError(f.reason));
		ctx._cancelTimer = setTimeout(() => {
			this._log(`update ${ctx.id}: handler ignored cancel ` +
			    `for ${this._cancelGrace} ms`);
			this._answerFail(ctx, 'cancelled', true);
		}, this._cancelGrace);
	}

	_onShutdown(f) {
		if (this._state === S_DRAINING)
			return;
		this._state = S_DRAINING;
		if (f.deadline) {
			const ms = Math.max(0, f.deadline - Date.now() -
			    SHUTDOWN_MARGIN);
			this._deadlineTimer = setTimeout(() => this._expire(), ms);
		}
		this._maybeFinish();
	}

	/* The shutdown deadline: give up on what still runs. */
	_expire() {
		for (const ctx of [...this._running.values()]) {
			ctx.cancelled = true;
			ctx._abort.abort(new CancelledError('shutdown'));
			this._answerFail(ctx, 'cancelled: shutdown deadline', true);
		}
	}

	_maybeFinish() {
		if (this._running.size > 0 || this._finishing)
			return;
		this._finishing = true;
		clearTimeout(this._deadlineTimer);
		const hooks = this._shutdownHooks.map((fn) => {
			try {
				return Promise.resolve(fn());
			} catch (e) {
				return Promise.reject(e);
			}
		});
		Promise.allSettled(hooks).then((res) => {
			for (const r of res)
				if (r.status === 'rejected')
					this._log('shutdown hook failed: ' +
					    errorText(r.reason));
			this._end(null, true);
		});
	}

	/*
	 * End the session once.  err null: a clean end (shutdown drained, or
	 * EOF); flush what is written first when graceful.
	 */
	_end(err, graceful) {
		if (this._state === S_CLOSED)
			return;
		const was = this._state;
		this._state = S_CLOSED;
		clearTimeout(this._deadlineTimer);
		for (const ctx of this._running.values()) {
			clearTimeout(ctx._cancelTimer);
			ctx._abort.abort(new CancelledError('connection closed'));
		}
		const gone = new Error('connection to tgrunnerd closed');
		for (const c of this._calls.values())
			c.reject(gone);
		this._calls.clear();
		if (err === null && was === S_HELLO)
			err = new ProtocolError('connection closed before welcome');
		if (err !== null)
			this._log(err instanceof ProtocolError ?
			    'protocol error: ' + err.message : errorText(err));
		const s = this._socket;
		const finish = () => {
			if (this._traceFd >= 0) {
				fs.closeSync(this._traceFd);
				this._traceFd = -1;
			}
			if (err === null)
				this._resolve(0);
			else
				this._reject(err);
		};
		if (s && graceful && !s.destroyed) {
			s.end(() => {
				s.destroy();
				finish();
			});
		} else {
			if (s)
				s.destroy();
			finish();
		}
	}

	_exitProcess(code) {
		/* stderr may be a pipe (the daemon's log): let it drain */
		process.exitCode = code;
		if (process.stderr.writableLength > 0)
			process.stderr.once('drain', () => process.exit(code));
		else
			process.exit(code);
	}
}

const KNOWN_TYPES = new Set(['welcome', 'update', 'result', 'cancel',
    'shutdown', 'hello', 'done', 'fail', 'call']);

module.exports = {
	Worker,
	/* framework adapters, loaded when used: adapters.grammy.run(bot) */
	get adapters() {
		return require('./adapters');
	},
	Context,
	ApiError,
	ProtocolError,
	CancelledError,
	FrameError,
	uploadFile,
	uploadBytes,
	PROTOCOL,
	MAX_FRAME,
	MAX_CALLS,
	MAX_SLOTS,
	/* for the unit tests */
	_internal: { LineSplitter, decodeFrame, encodeFrame, updateType,
	    updateChat },
};
