// SPDX-License-Identifier: ISC
'use strict';
/* The line splitter, the frame decoder and encoder, update helpers. */
const test = require('node:test');
const assert = require('node:assert');
const { _internal, ProtocolError, FrameError } = require('..');
const { LineSplitter, decodeFrame, encodeFrame, updateChat } = _internal;

function lines(sp, ...chunks) {
	const out = [];
	for (const c of chunks)
		for (const l of sp.push(Buffer.from(c)))
			out.push(l.toString());
	return out;
}

test('several frames in one chunk, and a partial one', () => {
	const sp = new LineSplitter(100);
	assert.deepStrictEqual(lines(sp, 'a\nbb\ncc'), ['a', 'bb']);
	assert.strictEqual(sp.pending, 2);
	assert.deepStrictEqual(lines(sp, 'c\n'), ['ccc']);
	assert.strictEqual(sp.pending, 0);
});

test('a frame byte by byte, with UTF-8 split across chunks', () => {
	const sp = new LineSplitter(1000);
	const frame = Buffer.from('{"type":"x","s":"h\u00e9llo \ud83d\ude00 \u4e16"}\n');
	const out = [];
	for (let i = 0; i < frame.length; i++)
		for (const l of sp.push(frame.subarray(i, i + 1)))
			out.push(decodeFrame(l));
	assert.deepStrictEqual(out, [{ type: 'x', s: 'h\u00e9llo \ud83d\ude00 \u4e16' }]);
});

test('the chunk buffer may be reused by the caller', () => {
	const sp = new LineSplitter(100);
	const b = Buffer.from('abc');
	sp.push(b);
	b.fill(0x7a);
	assert.deepStrictEqual(lines(sp, 'd\n'), ['abcd']);
});

test('line limit counts the newline, whole or split', () => {
	const sp = new LineSplitter(5);
	assert.deepStrictEqual(lines(sp, 'abcd\n'), ['abcd']);
	assert.throws(() => lines(sp, 'abcde\n'), ProtocolError);
	const sp2 = new LineSplitter(5);
	assert.throws(() => lines(sp2, 'abc', 'de'), ProtocolError);
	const sp3 = new LineSplitter(5);
	assert.deepStrictEqual(lines(sp3, 'ab', 'cd', '\n'), ['abcd']);
});

test('decodeFrame rejects what the protocol calls malformed', () => {
	const bad = ['not json', '[1,2]', '"str"', 'null', '{"typ":"x"}',
	    '{"type":3}', '{"type":"x"', '{"type":"a\u0000"}'];
	for (const s of bad)
		assert.throws(() => decodeFrame(Buffer.from(s)), ProtocolError, s);
	assert.throws(() => decodeFrame(Buffer.from([0x7b, 0xff, 0x7d])),
	    ProtocolError);
	/* a lone UTF-8 continuation byte inside a string */
	assert.throws(() => decodeFrame(Buffer.concat([
	    Buffer.from('{"type":"x","s":"'), Buffer.from([0x80]),
	    Buffer.from('"}')])), ProtocolError);
	assert.deepStrictEqual(decodeFrame(Buffer.from('{"type":"x","future":1}')),
	    { type: 'x', future: 1 });
});

test('encodeFrame: compact, no raw newline, well-formed, no NUL', () => {
	const s = encodeFrame({ type: 'done', id: 1, t: 'a\nb "q" \ud83d\ude00' });
	assert.strictEqual(s, '{"type":"done","id":1,"t":"a\\nb \\"q\\" \ud83d\ude00"}');
	assert.ok(!s.includes('\n'));
	/* lone surrogates become U+FFFD, in values and in keys */
	const w = encodeFrame({ type: 'x', t: 'a\ud800b', ['k\udc00']: 1 });
	assert.deepStrictEqual(JSON.parse(w), { type: 'x', t: 'a\ufffdb',
	    'k\ufffd': 1 });
	assert.ok(Buffer.from(w).toString() === w);
	/* a NUL character is refused; a literal backslash-u0000 text is not */
	assert.throws(() => encodeFrame({ type: 'x', t: 'a\u0000' }), FrameError);
	assert.strictEqual(JSON.parse(encodeFrame({ type: 'x', t: '\\u0000' })).t,
	    '\\u0000');
});

test('updateChat finds the chat of the usual update types', () => {
	const chat = { id: -100, type: 'supergroup' };
	assert.strictEqual(updateChat({ update_id: 1, message: { chat } }), chat);
	assert.strictEqual(updateChat({ update_id: 1,
	    callback_query: { id: 'x', message: { chat } } }), chat);
	assert.strictEqual(updateChat({ update_id: 1,
	    chat_join_request: { chat } }), chat);
	assert.strictEqual(updateChat({ update_id: 1,
	    inline_query: { id: 'q' } }), undefined);
	assert.strictEqual(updateChat({ update_id: 1 }), undefined);
});
