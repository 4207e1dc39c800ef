// SPDX-License-Identifier: ISC
'use strict';
/*
 * The daemon's side of the protocol for the unit tests: a Unix socket in a
 * temp dir, a Worker connected to it (exit: false), and helpers to read the
 * worker's frames and send daemon frames.  Not a test file itself.
 */
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const { once } = require('events');
const { Worker } = require('..');

const WAIT = 3000;	/* ms: generous upper bound for any expected frame */

class FakeDaemon {
	constructor(sock) {
		this.sock = sock;
		this.frames = [];	/* every frame from the worker */
		this.raw = [];		/* their lines */
		this.queue = [];
		this.waiters = [];
		this.buf = Buffer.alloc(0);
		this.eof = false;
		this.closed = new Promise((r) => sock.on('close', r));
		sock.on('data', (b) => this._data(b));
		sock.on('end', () => {
			this.eof = true;
			this._wake();
		});
		sock.on('error', () => {});
	}

	_data(b) {
		this.buf = Buffer.concat([this.buf, b]);
		let nl;
		while ((nl = this.buf.indexOf(0x0a)) !== -1) {
			const line = this.buf.subarray(0, nl).toString();
			this.buf = this.buf.subarray(nl + 1);
			this.raw.push(line);
			const f = JSON.parse(line);
			this.frames.push(f);
			this.queue.push(f);
		}
		this._wake();
	}

	_wake() {
		const w = this.waiters;
		this.waiters = [];
		for (const fn of w)
			fn();
	}

	/* The next frame from the worker; rejects on timeout or EOF. */
	async next(timeout = WAIT) {
		const deadline = Date.now() + timeout;
		while (this.queue.length === 0) {
			if (this.eof)
				throw new Error('worker closed the connection');
			const left = deadline - Date.now();
			if (left <= 0)
				throw new Error(`no frame within ${timeout} ms`);
			await new Promise((r) => {
				const t = setTimeout(r, left);
				this.waiters.push(() => {
					clearTimeout(t);
					r();
				});
			});
		}
		return this.queue.shift();
	}

	/* Resolves with true if no frame arrives within ms. */
	async quiet(ms) {
		try {
			const f = await this.next(ms);
			this.queue.unshift(f);
			return false;
		} catch (e) {
			return true;
		}
	}

	send(obj) {
		this.sendRaw(JSON.stringify(obj) + '\n');
	}

	sendRaw(data) {
		this.sock.write(data);
	}

	async handshake(welcome) {
		const hello = await this.next();
		this.send(Object.assign({ type: 'welcome', protocol: 1,
		    worker_id: 7, bot: { id: 42, is_bot: true,
		    first_name: 'Test', username: 'test_bot' },
		    max_frame: 1048576 }, welcome || {}));
		return hello;
	}
}

function message(id, text, chat = 5, extra = {}) {
	return Object.assign({ type: 'update', id, keys: ['chat:' + chat],
	    attempt: 1, deadline: 0, update: { update_id: id,
	    message: { message_id: id, date: 1700000000,
	    chat: { id: chat, type: 'private' }, text } } }, extra);
}

/*
 * A worker and the fake daemon on a temp Unix socket.  t: the node:test
 * context (cleanups).  Returns { w, d, run, logs }; run is w.run()'s
 * promise, already started.
 */
async function pair(t, handler, opts = {}) {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tgw-node-'));
	const sockPath = path.join(dir, 'sock');
	const server = net.createServer();
	server.listen(sockPath);
	await once(server, 'listening');
	const accepted = once(server, 'connection');
	const client = net.createConnection(sockPath);
	const [conn] = await accepted;
	await once(client, 'connect');
	const logs = [];
	const w = new Worker(Object.assign({ socket: client, exit: false,
	    log: (m) => logs.push(m) }, opts));
	w.onUpdate(handler);
	const run = w.run();
	run.catch(() => {});	/* tests look at it when they care */
	const d = new FakeDaemon(conn);
	t.after(() => {
		client.destroy();
		conn.destroy();
		server.close();
		fs.rmSync(dir, { recursive: true, force: true });
	});
	return { w, d, run, logs, client, conn };
}

/* Resolves with run's outcome: { ok, value | error }, or times out. */
async function outcome(run, timeout = WAIT) {
	let t;
	const timer = new Promise((_, rej) => {
		t = setTimeout(() => rej(new Error('run() did not end')), timeout);
	});
	try {
		const v = await Promise.race([run, timer]);
		return { ok: true, value: v };
	} catch (e) {
		if (e.message === 'run() did not end')
			throw e;
		return { ok: false, error: e };
	} finally {
		clearTimeout(t);
	}
}

module.exports = { FakeDaemon, message, pair, outcome, WAIT };
