// SPDX-License-Identifier: ISC
'use strict';
/*
 * The Bot API endpoint members of welcome, ctx.download(), and the
 * framework adapters' machinery, without the frameworks: a local HTTP
 * server plays the endpoint, duck-typed bots play grammY and Telegraf (the
 * real ones run in tests/scenario/test_adapters.py).
 */
const test = require('node:test');
const assert = require('node:assert');
const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const { once } = require('events');
const { ApiError, ProtocolError } = require('..');
const common = require('../adapters/common');
const grammy = require('../adapters/grammy');
const telegraf = require('../adapters/telegraf');
const { pair, message, outcome } = require('./fake-daemon');

const TOKEN = '42:w7-00112233445566778899aabbccddeeff';

/* An endpoint: files by path, and every request's headers. */
async function endpoint(t, files) {
	const seen = [];
	const server = http.createServer((req, res) => {
		seen.push({ url: req.url, headers: req.headers });
		const m = req.url.match(/^\/file\/bot([^/]+)\/(.*)$/);
		if (!m || m[1] !== TOKEN) {
			res.writeHead(m ? 401 : 404, { 'Content-Type':
			    'application/json' });
			return res.end(JSON.stringify({ ok: false, error_code:
			    m ? 401 : 404, description: m ? 'Unauthorized' :
			    'Not Found' }));
		}
		const f = files[decodeURIComponent(m[2])];
		if (f === undefined) {
			res.writeHead(404, { 'Content-Type': 'application/json' });
			return res.end('{"ok":false,"error_code":404,' +
			    '"description":"Not Found"}');
		}
		if (f.chunked)
			res.writeHead(200);	/* no length: chunked */
		else
			res.writeHead(200, { 'Content-Length': f.data.length });
		res.end(f.data);
	});
	server.listen(0, '127.0.0.1');
	await once(server, 'listening');
	t.after(() => server.close());
	return { root: `http://127.0.0.1:${server.address().port}`, seen };
}

/* Answers getFile call frames as the daemon would. */
async function serveGetFile(d, paths, n) {
	for (let i = 0; i < n; i++) {
		const f = await d.next();
		assert.strictEqual(f.type, 'call');
		assert.strictEqual(f.method, 'getFile');
		const p = paths[f.params.file_id];
		d.send(p === undefined ? { type: 'result', ref: f.ref, ok: false,
		    error_code: 400, description: 'Bad Request: invalid file_id' } :
		    { type: 'result', ref: f.ref, ok: true, result: {
		    file_id: f.params.file_id, file_path: p } });
	}
}

test('welcome: api_root and api_token, or the environment', async (t) => {
	const { w, d } = await pair(t, async () => {});
	await d.handshake({ api_root: 'http://127.0.0.1:9', api_token: TOKEN });
	d.send(message(1, 'x'));
	await d.next();
	assert.strictEqual(w.apiRoot, 'http://127.0.0.1:9');
	assert.strictEqual(w.apiToken, TOKEN);

	process.env.TGRUNNER_API_ROOT = 'unix:/run/api.sock';
	process.env.TGRUNNER_API_TOKEN = '1:w2-ab';
	t.after(() => {
		delete process.env.TGRUNNER_API_ROOT;
		delete process.env.TGRUNNER_API_TOKEN;
	});
	const p2 = await pair(t, async () => {});
	await p2.d.handshake();
	p2.d.send(message(1, 'x'));
	await p2.d.next();
	assert.strictEqual(p2.w.apiRoot, 'unix:/run/api.sock');
	assert.strictEqual(p2.w.apiToken, '1:w2-ab');
});

test('welcome: api_root without api_token is a protocol error',
    async (t) => {
	const { d, run } = await pair(t, async () => {});
	await d.handshake({ api_root: 'http://127.0.0.1:9' });
	const o = await outcome(run);
	assert.strictEqual(o.ok, false);
	assert.ok(o.error instanceof ProtocolError, String(o.error));
	assert.match(o.error.message, /api_root and api_token/);
});

test('ctx.download: bytes, a path, bounds, errors', async (t) => {
	const big = crypto.randomBytes(300001);
	const ep = await endpoint(t, {
		'documents/a.bin': { data: big },
		'photos/é x.jpg': { data: Buffer.from('photo'), chunked: true },
	});
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tgw-dl-'));
	t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
	const out = [];
	const { d } = await pair(t, async (ctx) => {
		const [cmd, id, arg] = ctx.text.split(' ');
		try {
			if (cmd === 'mem')
				out.push(await ctx.download(id, arg ?
				    { maxSize: Number(arg) } : {}));
			else
				out.push(await ctx.download(id, { path: arg }));
		} catch (e) {
			out.push(e);
		}
	}, { slots: 1 });
	await d.handshake({ api_root: ep.root, api_token: TOKEN });
	const paths = { A: 'documents/a.bin', P: 'photos/é x.jpg',
	    G: 'gone/x' };
	const steps = [
		['mem A', 1], ['mem P', 1], [`file A ${dir}/a`, 1],
		['mem A 1000', 1], ['mem P 2', 1], ['mem nope', 1], ['mem G', 1],
		[`file A ${dir}/none/x`, 1],
	];
	for (let i = 0; i < steps.length; i++) {
		d.send(message(100 + i, steps[i][0]));
		await serveGetFile(d, paths, steps[i][1]);
		assert.strictEqual((await d.next()).type, 'done');
	}
	assert.ok(out[0].equals(big));
	assert.strictEqual(out[1].toString(), 'photo');
	assert.strictEqual(out[2], `${dir}/a`);
	assert.ok(fs.readFileSync(`${dir}/a`).equals(big));
	assert.ok(out[3] instanceof RangeError);
	assert.match(out[3].message, /300001 bytes, more than 1000/);
	assert.ok(out[4] instanceof RangeError);
	assert.ok(out[5] instanceof ApiError);
	assert.strictEqual(out[5].errorCode, 400);
	assert.ok(out[6] instanceof ApiError);
	assert.strictEqual(out[6].errorCode, 404);
	assert.ok(out[7] instanceof Error);
	assert.strictEqual(fs.existsSync(`${dir}/none/x`), false);
	/* the file requests carried the credential, percent-encoded paths */
	assert.ok(ep.seen.some((r) => r.url ===
	    `/file/bot${TOKEN}/photos/%C3%A9%20x.jpg`));
});

test('ctx.download without an endpoint says so', async (t) => {
	let err;
	const { d } = await pair(t, async (ctx) => {
		try {
			await ctx.download('x');
		} catch (e) {
			err = e;
		}
	});
	await d.handshake();
	d.send(message(1, 'x'));
	assert.strictEqual((await d.next()).type, 'done');
	assert.match(err.message, /no Bot API endpoint/);
});

test('the agent names the current update in each request', async (t) => {
	const ep = await endpoint(t, { f: { data: Buffer.from('x') } });
	const get = () => new Promise((resolve, reject) => {
		http.get(`${ep.root}/file/bot${TOKEN}/f`, { agent: common.agent },
		    (res) => {
			res.resume();
			res.on('end', resolve);
		}).on('error', reject);
	});
	await common.current.run(1001, get);
	await common.current.run(1002, async () => {
		await new Promise((r) => setTimeout(r, 5));
		await get();
	});
	await get();
	assert.deepStrictEqual(ep.seen.map((r) =>
	    r.headers['x-tgrunner-update']), ['1001', '1002', undefined]);
});

test('endpoint() reads the environment, or throws', () => {
	delete process.env.TGRUNNER_API_ROOT;
	assert.throws(() => common.endpoint(), /TGRUNNER_API_ROOT/);
	process.env.TGRUNNER_API_ROOT = 'http://127.0.0.1:1';
	process.env.TGRUNNER_API_TOKEN = TOKEN;
	try {
		assert.deepStrictEqual(common.endpoint(), { apiRoot:
		    'http://127.0.0.1:1', apiToken: TOKEN });
	} finally {
		delete process.env.TGRUNNER_API_ROOT;
		delete process.env.TGRUNNER_API_TOKEN;
	}
});

/* A duck-typed grammY Bot: handleUpdate, botInfo, catch, clientConfig. */
function fakeGrammy(behaviour) {
	const bot = {
		me: undefined, handled: [], clientConfig: { apiRoot: 'x' },
		isInited() {
			return this.me !== undefined;
		},
		set botInfo(v) {
			this.me = v;
		},
		async errorHandler(err) {
			throw err;	/* grammY's default */
		},
		async handleUpdate(u) {
			this.handled.push([u.update_id, common.current.getStore()]);
			const e = behaviour(u);
			if (e) {
				const be = new Error('Error in middleware: ' +
				    e.message);
				be.name = 'BotError';
				be.error = e;
				throw be;
			}
		},
	};
	return bot;
}

test('grammY: updates in context, errors through bot.catch', async (t) => {
	const bot = fakeGrammy((u) => (u.message.text === 'boom' ?
	    new Error('boom') : u.message.text === 'keep' ?
	    Object.assign(new Error('keep'), { retry: false }) : null));
	grammy.install(bot);
	assert.strictEqual(bot.clientConfig.baseFetchConfig.agent,
	    common.agent);
	assert.strictEqual(bot.clientConfig.apiRoot, 'x');
	const w = common.adapterWorker({}, (u, ctx) => grammy.handle(bot, u,
	    ctx));
	assert.strictEqual(w.slots, 16);
	/* drive it like a real one: through its handler */
	const { d } = await pair(t, (ctx) => w._handler(ctx));
	await d.handshake();
	d.send(message(1, 'ok'));
	assert.deepStrictEqual(await d.next(), { type: 'done', id: 1 });
	d.send(message(2, 'boom'));
	const f2 = await d.next();
	assert.strictEqual(f2.type, 'fail');
	assert.strictEqual(f2.retry, true);
	d.send(message(3, 'keep'));
	assert.strictEqual((await d.next()).retry, false);
	assert.deepStrictEqual(bot.handled, [[1, 1], [2, 2], [3, 3]]);
	assert.strictEqual(bot.me.username, 'test_bot');
	/* a bot.catch that handles the error: the update is done */
	bot.errorHandler = async () => {};
	d.send(message(4, 'boom'));
	assert.deepStrictEqual(await d.next(), { type: 'done', id: 4 });
});

test('adapter option retry: false', async (t) => {
	const w = common.adapterWorker({ retry: false, slots: 2 }, () =>
	    Promise.reject(new Error('no')));
	const { d } = await pair(t, (ctx) => w._handler(ctx));
	await d.handshake();
	d.send(message(1, 'x'));
	const f = await d.next();
	assert.strictEqual(f.type, 'fail');
	assert.strictEqual(f.retry, false);
	assert.strictEqual(w.slots, 2);
});

test('Telegraf: each context\'s client gets the agent', () => {
	class Ctx {
		constructor(update, telegram) {
			this.update = update;
			this.telegram = telegram;
		}
	}
	const bot = { options: { contextType: Ctx } };
	telegraf.install(bot);
	telegraf.install(bot);		/* once is enough */
	const tg = { options: { agent: undefined } };
	const ctx = new bot.options.contextType({ update_id: 1 }, tg, {});
	assert.ok(ctx instanceof Ctx);
	assert.strictEqual(tg.options.agent, common.agent);
	assert.strictEqual(Object.getPrototypeOf(bot.options.contextType), Ctx);
});

test('run(factory): the bot is built from the welcome', async (t) => {
	const built = [];
	const botFor = common.lazyBot(({ apiRoot, apiToken }) => {
		const b = fakeGrammy(() => null);
		built.push([apiRoot, apiToken]);
		return b;
	}, grammy.install);
	const w = common.adapterWorker({}, (u, ctx) => grammy.handle(
	    botFor(ctx), u, ctx));
	const { d } = await pair(t, (ctx) => w._handler(ctx));
	await d.handshake({ api_root: 'http://127.0.0.1:9', api_token: TOKEN });
	d.send(message(1, 'a'));
	assert.strictEqual((await d.next()).type, 'done');
	d.send(message(2, 'b'));
	assert.strictEqual((await d.next()).type, 'done');
	assert.deepStrictEqual(built, [['http://127.0.0.1:9', TOKEN]]);
});
