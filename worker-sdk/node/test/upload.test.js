// SPDX-License-Identifier: ISC
'use strict';
/* uploadFile / uploadBytes, and a file object going out in a call frame. */
const test = require('node:test');
const assert = require('node:assert');
const { uploadFile, uploadBytes, MAX_FRAME } = require('..');
const { pair, message } = require('./fake-daemon');

test('uploadFile builds the @file object', () => {
	assert.deepStrictEqual(uploadFile('a/b.jpg'), { '@file': 'a/b.jpg' });
	assert.deepStrictEqual(uploadFile('b.jpg', { filename: 'c.jpg',
	    contentType: 'image/jpeg' }), { '@file': 'b.jpg',
	    filename: 'c.jpg', content_type: 'image/jpeg' });
	for (const bad of ['', '/etc/passwd', '../x', 'a/../x', 'a/..', 5])
		assert.throws(() => uploadFile(bad), TypeError, String(bad));
	assert.deepStrictEqual(uploadFile('a..b/..c'), { '@file': 'a..b/..c' });
});

test('uploadBytes encodes base64 and refuses what cannot fit a frame', () => {
	assert.deepStrictEqual(uploadBytes(Buffer.from([0, 1, 255]),
	    { filename: 'x.bin' }), { '@data': 'AAH/', filename: 'x.bin' });
	assert.deepStrictEqual(uploadBytes('hi'), { '@data': 'aGk=' });
	assert.deepStrictEqual(uploadBytes(new Uint8Array([104, 105])),
	    { '@data': 'aGk=' });
	assert.throws(() => uploadBytes(Buffer.alloc(MAX_FRAME / 4 * 3)),
	    RangeError);
});

test('a file object goes out in the call frame unchanged', async (t) => {
	const { d } = await pair(t, async (ctx) => {
		await ctx.call('sendMediaGroup', { chat_id: ctx.chatId, media: [
		    { type: 'photo', media: uploadFile('p.jpg') },
		    { type: 'photo', media: uploadBytes('x') }] });
	});
	await d.handshake();
	d.send(message(5, 'go', 42));
	const call = await d.next();
	assert.deepStrictEqual(call.params.media, [
	    { type: 'photo', media: { '@file': 'p.jpg' } },
	    { type: 'photo', media: { '@data': 'eA==' } }]);
	d.send({ type: 'result', ref: call.ref, ok: true, result: [] });
	assert.strictEqual((await d.next()).type, 'done');
});
