#!/usr/bin/env node
// SPDX-License-Identifier: ISC
'use strict';
/*
 * The worker of bench/run.py's reply-path systems: one Node.js worker
 * (worker-sdk/node) whose handler replies with sendMessage "echo: <text>"
 * either as a call frame or through the daemon's Bot API endpoint, awaiting
 * the answer in both cases, so that only the path of the call differs.
 *
 *   TG_RECORD        record file: "S|E id attempt pid keys chat seq t_ns"
 *   TG_SLOTS         slots (50)
 *   TG_SLEEP_MS      handler duration before the reply, ms (0)
 *   TG_REPLY         1: reply to every message (0: none)
 *   BENCH_PATH       call: ctx.call() (a call frame); endpoint: POST
 *                    <api_root>/bot<api_token>/sendMessage with the
 *                    X-Tgrunner-Update header, over keep-alive connections
 *
 * One write() per record line on an O_APPEND fd, like the C test worker.
 */

const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

let tgw;
try {
	tgw = require('tgrunner-worker');
} catch (e) {
	tgw = require(path.join(__dirname, '..', '..', 'worker-sdk', 'node'));
}

const env = process.env;
const slots = parseInt(env.TG_SLOTS || '50', 10);
const sleepMs = parseInt(env.TG_SLEEP_MS || '0', 10);
const reply = env.TG_REPLY === '1';
const mode = env.BENCH_PATH || 'call';
const recfd = fs.openSync(env.TG_RECORD, 'a');

if (mode !== 'call' && mode !== 'endpoint')
	throw new Error(`BENCH_PATH: call or endpoint, not ${mode}`);

const origin = BigInt(Math.round(performance.timeOrigin * 1000)) * 1000n;
function nowNs() {
	return origin + BigInt(Math.round(performance.now() * 1e6));
}

function record(what, ctx, seq) {
	const keys = ctx.keys.length > 0 ? ctx.keys.join(',') : '-';
	const chat = ctx.chatId !== undefined ? ctx.chatId : '-';
	fs.writeSync(recfd, `${what} ${ctx.id} ${ctx.attempt} ${process.pid} ` +
	    `${keys} ${chat} ${seq} ${nowNs()}\n`);
}

/* As many connections as the daemon allows a worker by default. */
const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });

function post(w, id, method, params) {
	const body = Buffer.from(JSON.stringify(params));
	const url = new URL(`${w.apiRoot}/bot${w.apiToken}/${method}`);
	return new Promise((resolve, reject) => {
		const req = http.request({
			agent, method: 'POST', host: url.hostname,
			port: url.port, path: url.pathname,
			headers: {
				'Content-Type': 'application/json',
				'Content-Length': body.length,
				'X-Tgrunner-Update': String(id),
			},
		}, (res) => {
			const parts = [];
			res.on('data', (d) => parts.push(d));
			res.on('end', () => {
				const r = JSON.parse(Buffer.concat(parts));
				if (r.ok)
					resolve(r.result);
				else
					reject(new Error(`${method}: ${r.error_code} ` +
					    `${r.description}`));
			});
			res.on('error', reject);
		});
		req.on('error', reject);
		req.end(body);
	});
}

const w = new tgw.Worker({ slots, name: `bench-${mode}` });
w.onUpdate(async (ctx) => {
	const text = ctx.text || '';
	const seq = text.startsWith('seq ') ? parseInt(text.slice(4), 10) : '-';

	record('S', ctx, seq);
	if (sleepMs > 0)
		await ctx.sleep(sleepMs);
	if (reply && ctx.chatId !== undefined) {
		const p = { chat_id: ctx.chatId, text: `echo: ${text}` };
		if (mode === 'call')
			await ctx.call('sendMessage', p);
		else
			await post(w, ctx.id, 'sendMessage', p);
	}
	record('E', ctx, seq);
});
w.run();
