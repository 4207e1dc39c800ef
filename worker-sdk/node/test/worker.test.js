// SPDX-License-Identifier: ISC
'use strict';
/* The Worker against a fake daemon on a temp Unix socket. */
const test = require('node:test');
const assert = require('node:assert');
const { ApiError, ProtocolError, CancelledError } = require('..');
const { pair, message, outcome } = require('./fake-daemon');

const echo = async (ctx) => {
	if (ctx.text !== undefined)
		ctx.reply(ctx.text);
};

test('hello, welcome, then updates; done carries the calls', async (t) => {
	let seen;
	const { w, d } = await pair(t, async (ctx) => {
		seen = ctx;
		ctx.reply('hi ' + ctx.text);
		ctx.addCall('sendChatAction', { chat_id: ctx.chatId,
		    action: 'typing' });
	}, { slots: 3, name: 'unit' });
	const hello = await d.handshake();
	assert.deepStrictEqual(hello, { type: 'hello', protocol: 1, slots: 3,
	    name: 'unit' });
	assert.match(d.raw[0], /^\{"type":"hello",/);
	d.send(message(1000, 'there', 42, { attempt: 2, deadline: 1700000030000,
	    keys: ['chat:42', 'user:9'] }));
	const done = await d.next();
	assert.deepStrictEqual(done, { type: 'done', id: 1000, calls: [
	    { method: 'sendMessage', params: { chat_id: 42, text: 'hi there' } },
	    { method: 'sendChatAction', params: { chat_id: 42,
	    action: 'typing' } }] });
	assert.strictEqual(w.workerId, 7);
	assert.strictEqual(w.bot.username, 'test_bot');
	assert.strictEqual(seen.id, 1000);
	assert.strictEqual(seen.attempt, 2);
	assert.strictEqual(seen.deadline, 1700000030000);
	assert.deepStrictEqual(seen.keys, ['chat:42', 'user:9']);
	assert.strictEqual(seen.type, 'message');
	assert.strictEqual(seen.update.update_id, 1000);
	assert.strictEqual(w.busy, 0);
});

test('a handler without calls answers a bare done', async (t) => {
	const { d } = await pair(t, async () => {});
	await d.handshake();
	d.send(message(1, 'x'));
	assert.deepStrictEqual(await d.next(), { type: 'done', id: 1 });
});

test('several frames in one write, and one frame in many', async (t) => {
	const { d } = await pair(t, echo, { slots: 4 });
	await d.handshake();
	const a = JSON.stringify(message(1, 'one', 1));
	const b = JSON.stringify(message(2, 'tw\u00f6 \ud83d\ude00', 2));
	d.sendRaw(a + '\n' + b + '\n');
	const buf = Buffer.from(JSON.stringify(message(3, '\ud83d\ude00\u00e9', 3)) + '\n');
	/* split inside the 4-byte emoji and everywhere else */
	for (let i = 0; i < buf.length; i += 3) {
		d.sendRaw(buf.subarray(i, i + 3));
		await new Promise((r) => setImmediate(r));
	}
	const got = new Map();
	for (let i = 0; i < 3; i++) {
		const f = await d.next();
		got.set(f.id, f.calls[0].params.text);
	}
	assert.deepStrictEqual(Object.fromEntries(got), { 1: 'one',
	    2: 'tw\u00f6 \ud83d\ude00', 3: '\ud83d\ude00\u00e9' });
});

test('ctx.call: result ok, result error as ApiError', async (t) => {
	const errs = [];
	const { d } = await pair(t, async (ctx) => {
		const me = await ctx.call('getMe');
		ctx.reply('me:' + me.username);
		try {
			await ctx.call('sendMessage', { chat_id: 1, text: 'x' });
		} catch (e) {
			errs.push(e);
		}
	});
	await d.handshake();
	d.send(message(10, 'call'));
	const c1 = await d.next();
	assert.strictEqual(c1.type, 'call');
	assert.strictEqual(c1.id, 10);
	assert.strictEqual(c1.method, 'getMe');
	assert.deepStrictEqual(c1.params, {});
	/* an unrelated result and an unknown frame first: ignored */
	d.send({ type: 'result', ref: 'nobody', ok: true, result: 1 });
	d.send({ type: 'future_frame', x: [1] });
	d.send({ type: 'result', ref: c1.ref, ok: true,
	    result: { id: 42, username: 'test_bot' }, future: 1 });
	const c2 = await d.next();
	assert.strictEqual(c2.method, 'sendMessage');
	assert.notStrictEqual(c2.ref, c1.ref);
	d.send({ type: 'result', ref: c2.ref, ok: false, error_code: 429,
	    description: 'Too Many Requests: retry after 3',
	    parameters: { retry_after: 3 }, retry_after: 3 });
	const done = await d.next();
	assert.deepStrictEqual(done.calls, [{ method: 'sendMessage',
	    params: { chat_id: 5, text: 'me:test_bot' } }]);
	assert.strictEqual(errs.length, 1);
	assert.ok(errs[0] instanceof ApiError);
	assert.strictEqual(errs[0].errorCode, 429);
	assert.strictEqual(errs[0].retryAfter, 3);
	assert.deepStrictEqual(errs[0].parameters, { retry_after: 3 });
	assert.match(errs[0].description, /Too Many/);
});

test('calls after the answer go out with id 0', async (t) => {
	let later;
	const { d } = await pair(t, async (ctx) => {
		ctx.done();
		later = ctx.call('getMe');
	});
	await d.handshake();
	d.send(message(11, 'x'));
	assert.deepStrictEqual(await d.next(), { type: 'done', id: 11 });
	const c = await d.next();
	assert.strictEqual(c.id, 0);
	d.send({ type: 'result', ref: c.ref, ok: true, result: true });
	assert.strictEqual(await later, true);
});

test('slots run concurrently, and not beyond slots', async (t) => {
	let active = 0, peak = 0;
	let release;
	const gate = new Promise((r) => { release = r; });
	const { d, run } = await pair(t, async () => {
		active++;
		peak = Math.max(peak, active);
		await gate;
		active--;
	}, { slots: 4 });
	await d.handshake();
	for (let i = 1; i <= 4; i++)
		d.send(message(i, 'x', i));
	const t0 = Date.now();
	while (peak < 4 && Date.now() - t0 < 2000)
		await new Promise((r) => setTimeout(r, 5));
	assert.strictEqual(peak, 4);
	release();
	const ids = [];
	for (let i = 0; i < 4; i++)
		ids.push((await d.next()).id);
	assert.deepStrictEqual(ids.sort(), [1, 2, 3, 4]);
	/* a fifth update while four are held is the daemon's protocol error */
	const gate2 = new Promise(() => {});
	void gate2;
	for (let i = 5; i <= 9; i++)
		d.send(message(i, 'x', i));
	const o = await outcome(run);
	assert.strictEqual(o.ok, false);
	assert.ok(o.error instanceof ProtocolError);
	assert.match(o.error.message, /more than 4/);
});

test('cancel aborts ctx.signal; fail cancelled, retry', async (t) => {
	let reason;
	const { d } = await pair(t, async (ctx) => {
		if (ctx.text !== 'sleep')
			return;
		try {
			await ctx.sleep(10000);
		} finally {
			reason = ctx.signal.reason;
		}
	});
	await d.handshake();
	d.send(message(20, 'sleep'));
	await new Promise((r) => setTimeout(r, 50));
	const t0 = Date.now();
	d.send({ type: 'cancel', id: 20, reason: 'timeout' });
	const f = await d.next();
	assert.deepStrictEqual(f, { type: 'fail', id: 20, error: 'cancelled',
	    retry: true });
	assert.ok(Date.now() - t0 < 1000, 'cancel answered within 1 s');
	assert.ok(reason instanceof CancelledError);
	assert.strictEqual(reason.reason, 'timeout');
	/* a cancel crossing the answer, and one for an unknown id: ignored */
	d.send({ type: 'cancel', id: 20 });
	d.send({ type: 'cancel', id: 999 });
	d.send(message(21, 'x'));
	assert.strictEqual((await d.next()).id, 21);
});

test('a handler that ignores cancel is answered after the grace', async (t) => {
	let finish;
	const { d } = await pair(t, async (ctx) => {
		await new Promise((r) => { finish = r; });
		ctx.reply('too late');
	}, { cancelGrace: 300 });
	await d.handshake();
	d.send(message(30, 'x'));
	await new Promise((r) => setTimeout(r, 20));
	const t0 = Date.now();
	d.send({ type: 'cancel', id: 30 });
	const f = await d.next();
	const dt = Date.now() - t0;
	assert.deepStrictEqual(f, { type: 'fail', id: 30, error: 'cancelled',
	    retry: true });
	assert.ok(dt >= 250 && dt < 2500, `answered after ${dt} ms`);
	finish();		/* its late result is ignored */
	assert.ok(await d.quiet(200));
});

test('throw -> fail retry; error.retry and ctx.fail are honoured', async (t) => {
	const { d, logs } = await pair(t, async (ctx) => {
		if (ctx.text === 'throw')
			throw new Error('boom');
		if (ctx.text === 'final') {
			const e = new Error('bad input');
			e.retry = false;
			throw e;
		}
		if (ctx.text === 'fail') {
			ctx.fail('asked to fail');
			throw new Error('ignored: already answered');
		}
		if (ctx.text === 'string')
			throw 'plain string';	// eslint-disable-line no-throw-literal
		ctx.reply('ok');
	}, { slots: 1 });
	await d.handshake();
	const expect = [
	    ['throw', { type: 'fail', id: 1, error: 'boom', retry: true }],
	    ['final', { type: 'fail', id: 2, error: 'bad input', retry: false }],
	    ['fail', { type: 'fail', id: 3, error: 'asked to fail',
		retry: false }],
	    ['string', { type: 'fail', id: 4, error: 'plain string',
		retry: true }],
	    ['x', { type: 'done', id: 5, calls: [{ method: 'sendMessage',
		params: { chat_id: 5, text: 'ok' } }] }]];
	let id = 0;
	for (const [text, want] of expect) {
		d.send(message(++id, text));
		assert.deepStrictEqual(await d.next(), want);
	}
	assert.ok(logs.some((l) => /boom/.test(l)));
});

test('a synchronous handler and a sync throw work too', async (t) => {
	const { d } = await pair(t, (ctx) => {
		if (ctx.text === 'throw')
			throw new Error('sync');
		ctx.reply('s');
	});
	await d.handshake();
	d.send(message(1, 'throw'));
	assert.strictEqual((await d.next()).retry, true);
	d.send(message(2, 'x'));
	assert.strictEqual((await d.next()).type, 'done');
});

test('unknown members and frame types are ignored', async (t) => {
	const { d } = await pair(t, echo);
	await d.handshake({ future: { x: 1 } });
	d.send({ type: 'future_frame' });
	d.send(message(1, 'a', 5, { future: 1 }));
	assert.strictEqual((await d.next()).calls[0].params.text, 'a');
});

test('calls that JSON cannot encode fail the update', async (t) => {
	const { d } = await pair(t, async (ctx) => {
		if (ctx.text === 'bigint')
			ctx.addCall('sendMessage', { chat_id: 1n });
		else {
			const p = {};
			p.self = p;
			ctx.addCall('sendMessage', p);
		}
	});
	await d.handshake();
	d.send(message(1, 'bigint'));
	assert.deepStrictEqual([(await d.next()).type, d.frames[1].retry],
	    ['fail', false]);
	d.send(message(2, 'cycle'));
	assert.strictEqual((await d.next()).type, 'fail');
});

test('oversized answers: fail instead of done, call rejects', async (t) => {
	let callErr;
	const { d } = await pair(t, async (ctx) => {
		try {
			await ctx.call('sendMessage', { text: 'y'.repeat(2000) });
		} catch (e) {
			callErr = e;
		}
		ctx.reply('x'.repeat(2000));
	});
	await d.handshake({ max_frame: 1024 });
	d.send(message(1, 'big'));
	const f = await d.next();
	assert.strictEqual(f.type, 'fail');
	assert.strictEqual(f.retry, false);
	assert.match(f.error, /exceeds max_frame 1024/);
	assert.match(String(callErr), /exceeds max_frame/);
	for (const line of d.raw)
		assert.ok(Buffer.byteLength(line) + 1 <= 1024);
});

test('a NUL in a reply fails the update, not the worker', async (t) => {
	const { d } = await pair(t, async (ctx) => {
		ctx.reply(ctx.text === 'nul' ? 'a\u0000b' : 'ok');
	});
	await d.handshake();
	d.send(message(1, 'nul'));
	const f = await d.next();
	assert.strictEqual(f.type, 'fail');
	assert.match(f.error, /NUL/);
	d.send(message(2, 'x'));
	assert.strictEqual((await d.next()).type, 'done');
});

test('shutdown: running updates finish and are answered, then end', async (t) => {
	const hooks = [];
	const { w, d, run } = await pair(t, async (ctx) => {
		await ctx.sleep(200);
		ctx.reply('late');
	}, { slots: 2 });
	w.onShutdown(() => hooks.push('hook'));
	await d.handshake();
	d.send(message(1, 'a', 1));
	d.send(message(2, 'b', 2));
	await new Promise((r) => setTimeout(r, 20));
	d.send({ type: 'shutdown', deadline: Date.now() + 5000 });
	const ids = [(await d.next()).id, (await d.next()).id].sort();
	assert.deepStrictEqual(ids, [1, 2]);
	const o = await outcome(run);
	assert.deepStrictEqual(o, { ok: true, value: 0 });
	assert.deepStrictEqual(hooks, ['hook']);
	await d.closed;
	assert.ok(d.eof);
});

test('shutdown with nothing running ends at once', async (t) => {
	const { d, run } = await pair(t, echo);
	await d.handshake();
	d.send({ type: 'shutdown' });
	assert.deepStrictEqual(await outcome(run, 1000), { ok: true, value: 0 });
});

test('shutdown deadline: a hung handler is failed for retry', async (t) => {
	const { d, run } = await pair(t, () => new Promise(() => {}));
	await d.handshake();
	d.send(message(1, 'hang'));
	await new Promise((r) => setTimeout(r, 20));
	const t0 = Date.now();
	d.send({ type: 'shutdown', deadline: Date.now() + 1000 });
	const f = await d.next();
	const dt = Date.now() - t0;
	assert.strictEqual(f.type, 'fail');
	assert.strictEqual(f.retry, true);
	/* 250 ms before the deadline, give or take a loaded machine */
	assert.ok(dt >= 700 && dt < 2000, `answered after ${dt} ms`);
	assert.deepStrictEqual(await outcome(run), { ok: true, value: 0 });
});

test('EOF from the daemon ends the run; pending calls reject', async (t) => {
	let callErr;
	const { d, run, conn } = await pair(t, async (ctx) => {
		try {
			await ctx.call('getMe');
		} catch (e) {
			callErr = e;
		}
	});
	await d.handshake();
	d.send(message(1, 'x'));
	assert.strictEqual((await d.next()).type, 'call');
	conn.end();
	assert.deepStrictEqual(await outcome(run), { ok: true, value: 0 });
	await new Promise((r) => setImmediate(r));
	assert.match(String(callErr), /closed/);
});

test('ids beyond 2^53 are answered exactly, calls included', async (t) => {
	let seen;
	const { d } = await pair(t, async (ctx) => {
		seen = ctx.id;
		await ctx.call('getMe');
		ctx.reply('big');
	});
	await d.handshake();
	d.sendRaw('{"type":"update","id":9223372036854775807,"keys":[],' +
	    '"attempt":1,"deadline":0,"update":{"update_id":1,"message":' +
	    '{"chat":{"id":5},"text":"x"}}}\n');
	const c = await d.next();
	assert.strictEqual(c.type, 'call');
	assert.match(d.raw[d.raw.length - 1], /"id":9223372036854775807,/);
	d.send({ type: 'result', ref: c.ref, ok: true, result: {} });
	const f = await d.next();
	assert.strictEqual(f.type, 'done');
	assert.match(d.raw[d.raw.length - 1],
	    /^\{"type":"done","id":9223372036854775807,"calls":/);
	assert.strictEqual(seen, 2n ** 63n - 1n);
});

const MALFORMED = [
	['not JSON', 'hello there\n'],
	['not an object', '[1]\n'],
	['no type', '{"id":1}\n'],
	['invalid UTF-8', Buffer.from([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x7d, 0x0a])],
	['raw NUL', '{"type":"cancel","id":1}\u0000\n'],
	['update id not an integer', JSON.stringify(message('1', 'x')) + '\n'],
	['update id beyond 2^63', '{"type":"update","id":9223372036854775808,' +
	    '"keys":[],"attempt":1,"deadline":0,"update":{}}\n'],
	['update id written as a real', '{"type":"update","id":5.0,' +
	    '"keys":[],"attempt":1,"deadline":0,"update":{}}\n'],
	['duplicate member', '{"type":"cancel","id":1,"id":2}\n'],
	['keys not strings', JSON.stringify(message(1, 'x', 5, { keys: [1] })) +
	    '\n'],
	['attempt 0', JSON.stringify(message(1, 'x', 5, { attempt: 0 })) + '\n'],
	['update not an object', JSON.stringify(message(1, 'x', 5,
	    { update: [] })) + '\n'],
	['result without ok', '{"type":"result","ref":1}\n'],
	['cancel without id', '{"type":"cancel"}\n'],
	['shutdown bad deadline', '{"type":"shutdown","deadline":"soon"}\n'],
	['a worker frame', '{"type":"done","id":1}\n'],
	['second welcome', '{"type":"welcome","protocol":1,"worker_id":1,' +
	    '"bot":{},"max_frame":1048576}\n'],
	['duplicate update id', JSON.stringify(message(1, 'x')) + '\n' +
	    JSON.stringify(message(1, 'x')) + '\n'],
	['oversized line', '{"type":"x","pad":"' + 'a'.repeat(1048576) + '"}\n'],
	['EOF inside a frame', '{"type":"upd'],
];

for (const [what, data] of MALFORMED) {
	test(`malformed input is fatal: ${what}`, async (t) => {
		const { d, run } = await pair(t, () => new Promise(() => {}),
		    { slots: 2 });
		await d.handshake();
		d.sendRaw(data);
		if (what === 'EOF inside a frame')
			d.sock.end();
		const o = await outcome(run);
		assert.strictEqual(o.ok, false, 'run() resolved');
		assert.ok(o.error instanceof ProtocolError, String(o.error));
		await d.closed;
		assert.deepStrictEqual(d.frames.map((f) => f.type), ['hello']);
	});
}

test('malformed welcome, and frames before welcome', async (t) => {
	for (const bad of [{ protocol: 2 }, { max_frame: 'big' },
	    { bot: null }, { worker_id: -1 }]) {
		const { d, run } = await pair(t, echo);
		await d.handshake(bad);
		const o = await outcome(run);
		assert.ok(o.error instanceof ProtocolError, JSON.stringify(bad));
	}
	const { d, run } = await pair(t, echo);
	await d.next();
	d.send(message(1, 'x'));
	const o = await outcome(run);
	assert.match(String(o.error), /before welcome/);
});

test('EOF before welcome is an error (protocol refused)', async (t) => {
	const { d, run } = await pair(t, echo);
	await d.next();
	d.sock.end();
	const o = await outcome(run);
	assert.strictEqual(o.ok, false);
	assert.match(String(o.error), /before welcome/);
});

test('constructor and run() check their arguments', () => {
	const { Worker } = require('..');
	assert.throws(() => new Worker({ slots: 0 }), RangeError);
	assert.throws(() => new Worker({ slots: 1025 }), RangeError);
	assert.throws(() => new Worker({ slots: 1.5 }), RangeError);
	assert.throws(() => new Worker().run(), /onUpdate/);
	assert.throws(() => new Worker().onUpdate(3), TypeError);
	assert.throws(() => new Worker({ name: 'a\u0000' }), TypeError);
	assert.strictEqual(new Worker({ name: 'x'.repeat(300) }).name.length, 256);
});

test('addCall checks method names and the call limit', async (t) => {
	const errs = [];
	const { d } = await pair(t, async (ctx) => {
		for (const m of ['', 'bad-name', 'a'.repeat(65), 3])
			try {
				ctx.addCall(m);
			} catch (e) {
				errs.push(e);
			}
		try {
			ctx.addCall('sendMessage', [1]);
		} catch (e) {
			errs.push(e);
		}
		for (let i = 0; i < 100; i++)
			ctx.addCall('getMe');
		try {
			ctx.addCall('getMe');
		} catch (e) {
			errs.push(e);
		}
	});
	await d.handshake();
	d.send(message(1, 'x'));
	const f = await d.next();
	assert.strictEqual(f.calls.length, 100);
	assert.strictEqual(errs.length, 6);
});
