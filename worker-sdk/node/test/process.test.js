// SPDX-License-Identifier: ISC
'use strict';
/*
 * The examples as real processes: connected on fd 3 ($TGRUNNER_FD) or by
 * path ($TGRUNNER_SOCKET), with the exit status the protocol asks for.
 */
const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const { spawn } = require('child_process');
const { once } = require('events');
const { FakeDaemon, message } = require('./fake-daemon');

const EXAMPLES = path.join(__dirname, '..', 'examples');

/* Start example `name` connected to a fake daemon; how: 'fd' or 'path'. */
async function start(t, name, how, env = {}) {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tgw-node-'));
	const sockPath = path.join(dir, 'sock');
	const server = net.createServer();
	server.listen(sockPath);
	await once(server, 'listening');
	const accepted = once(server, 'connection');
	let child, client;
	const base = Object.assign({}, process.env, env);
	delete base.TGRUNNER_FD;
	delete base.TGRUNNER_SOCKET;
	if (how === 'fd') {
		client = net.createConnection(sockPath);
		await once(client, 'connect');
		child = spawn(process.execPath, [path.join(EXAMPLES, name)], {
		    stdio: ['ignore', 'inherit', 'pipe', client],
		    env: Object.assign(base, { TGRUNNER_FD: '3' }) });
		client.destroy();	/* the child holds its copy */
	} else {
		child = spawn(process.execPath, [path.join(EXAMPLES, name)], {
		    stdio: ['ignore', 'inherit', 'pipe'],
		    env: Object.assign(base, { TGRUNNER_SOCKET: sockPath }) });
	}
	let stderr = '';
	child.stderr.on('data', (b) => { stderr += b; });
	const exited = once(child, 'exit').then(([code, sig]) => ({ code, sig }));
	const [conn] = await accepted;
	const d = new FakeDaemon(conn);
	t.after(() => {
		child.kill('SIGKILL');
		conn.destroy();
		server.close();
		fs.rmSync(dir, { recursive: true, force: true });
	});
	return { d, child, exited, stderr: () => stderr };
}

function within(p, ms, what) {
	let t;
	return Promise.race([p, new Promise((_, rej) => {
		t = setTimeout(() => rej(new Error(what + ' within ' + ms + ' ms')),
		    ms);
	})]).finally(() => clearTimeout(t));
}

for (const how of ['fd', 'path']) {
	test(`echo.js on ${how}: echo, then shutdown exits 0`, async (t) => {
		const { d, exited } = await start(t, 'echo.js', how,
		    { ECHO_SLOTS: '3', ECHO_SLEEP_MS: '100' });
		const hello = await d.handshake();
		assert.strictEqual(hello.slots, 3);
		assert.strictEqual(hello.name, 'echo.js');
		d.send(message(1, 'hi \ud83d\ude00', 77));
		d.send({ type: 'shutdown', deadline: Date.now() + 5000 });
		const f = await d.next();
		assert.deepStrictEqual(f, { type: 'done', id: 1, calls: [{
		    method: 'sendMessage', params: { chat_id: 77,
		    text: 'hi \ud83d\ude00' } }] });
		assert.deepStrictEqual(await within(exited, 3000, 'exit'),
		    { code: 0, sig: null });
	});
}

test('malformed input: the process exits non-zero, answers nothing',
    async (t) => {
	const { d, exited, stderr } = await start(t, 'conformance.js', 'fd');
	await d.handshake();
	d.sendRaw('this is not json\n');
	const r = await within(exited, 3000, 'exit');
	assert.notStrictEqual(r.code, 0);
	assert.deepStrictEqual(d.frames.map((f) => f.type), ['hello']);
	assert.match(stderr(), /protocol error/);
});

test('EOF: the process exits promptly, even with a handler running',
    async (t) => {
	const { d, exited } = await start(t, 'conformance.js', 'fd');
	await d.handshake();
	d.send(message(1, 'sleep 10000'));
	await new Promise((r) => setTimeout(r, 50));
	d.sock.end();
	const r = await within(exited, 3000, 'exit');
	assert.strictEqual(r.code, 0);
});

test('no connection configured: exits non-zero with a message',
    async () => {
	const env = Object.assign({}, process.env);
	delete env.TGRUNNER_FD;
	delete env.TGRUNNER_SOCKET;
	const child = spawn(process.execPath, [path.join(EXAMPLES, 'echo.js')],
	    { stdio: ['ignore', 'ignore', 'pipe'], env });
	let err = '';
	child.stderr.on('data', (b) => { err += b; });
	const [code] = await within(once(child, 'exit'), 3000, 'exit');
	assert.notStrictEqual(code, 0);
	assert.match(err, /TGRUNNER_FD/);
});
