// SPDX-License-Identifier: ISC
'use strict';
/*
 * The frame decoder against the protocol's test vectors (proto/vectors in
 * the tgrunner source tree, or $TGRUNNER_VECTORS): it must refuse exactly
 * what the daemon's decoder refuses in frames from the daemon, so that the
 * C, Python and Node.js libraries agree by construction.
 */
const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const path = require('path');
const { _internal, ProtocolError } = require('..');
const { decodeFrame, encodeFrame } = _internal;

const VECTORS = process.env.TGRUNNER_VECTORS ||
    path.join(__dirname, '..', '..', '..', 'proto', 'vectors');
const WORKER_TYPES = new Set(['hello', 'done', 'fail', 'call']);
const skip = fs.existsSync(VECTORS) ? false : 'no proto/vectors here';

function vectors(sub) {
	const dir = path.join(VECTORS, sub);
	return fs.readdirSync(dir).sort().map((name) => {
		const data = fs.readFileSync(path.join(dir, name));
		assert.strictEqual(data[data.length - 1], 0x0a, name);
		return [name, data.subarray(0, data.length - 1)];
	});
}

function sized() {
	const out = [];
	const lines = fs.readFileSync(path.join(VECTORS, 'sized'), 'utf8')
	    .split('\n');
	lines.forEach((line, n) => {
		if (line.trim() === '' || line.startsWith('#'))
			return;
		const [verdict, dir, total] = line.split(' ', 3);
		const tmpl = line.split(' ').slice(3).join(' ');
		const [head, tail] = tmpl.split('@').map((s) => Buffer.from(s));
		const pad = Number(total) - 1 - head.length - tail.length;
		out.push([`sized:${n + 1}`, verdict, dir,
		    Buffer.concat([head, Buffer.alloc(pad, 'x'), tail])]);
	});
	return out;
}

test('valid daemon frames decode; worker frames from the daemon do not',
    { skip }, () => {
	let n = 0;
	for (const [name, data] of vectors('valid')) {
		const type = JSON.parse(data.toString()).type;
		if (WORKER_TYPES.has(type)) {
			assert.throws(() => decodeFrame(data), ProtocolError, name);
		} else {
			assert.strictEqual(decodeFrame(data).type, type, name);
			n++;
		}
	}
	assert.ok(n >= 20, `only ${n} daemon frames`);
});

test('invalid daemon frames are refused', { skip }, () => {
	let n = 0;
	for (const [name, data] of vectors('invalid')) {
		if (!name.startsWith('d2w_'))
			continue;	/* the daemon's business */
		assert.throws(() => decodeFrame(data), ProtocolError, name);
		n++;
	}
	assert.ok(n >= 40, `only ${n} vectors`);
});

test('frames of an unknown type decode (the worker ignores them)',
    { skip }, () => {
	const all = vectors('ignored');
	for (const [name, data] of all)
		assert.strictEqual(decodeFrame(data).type,
		    JSON.parse(data.toString()).type, name);
	assert.ok(all.length >= 2);
});

test('frames at the size limit', { skip }, () => {
	let n = 0;
	for (const [name, verdict, dir, data] of sized()) {
		if (dir !== 'd2w')
			continue;
		if (verdict === 'valid')
			decodeFrame(data);
		else
			assert.throws(() => decodeFrame(data), ProtocolError, name);
		n++;
	}
	assert.ok(n >= 2);
});

test('ids and refs keep every bit, and go back out unchanged', { skip }, () => {
	const v = Object.fromEntries(vectors('valid'));
	const c = decodeFrame(v['cancel_id_max.json']);
	assert.strictEqual(c.id, 2n ** 63n - 1n);
	assert.strictEqual(decodeFrame(v['result_ref_int_min.json']).ref,
	    -(2n ** 63n));
	const u = decodeFrame(v['update_numbers.json']);
	assert.strictEqual(u.id, 0);
	assert.strictEqual(typeof u.deadline, 'number');
	assert.strictEqual(encodeFrame({ type: 'done', id: c.id }),
	    '{"type":"done","id":9223372036854775807}');
	assert.strictEqual(encodeFrame({ type: 'fail', id: 2n ** 53n + 1n,
	    error: 'e', retry: true }),
	    '{"type":"fail","id":9007199254740993,"error":"e","retry":true}');
	/* small ids stay numbers */
	assert.strictEqual(decodeFrame(v['cancel.json']).id, 10001);
});
