#!/usr/bin/env node
'use strict';
/*
 * echo.js: a tgrunner worker in Node.js that answers every text message
 * with the same text, ECHO_SLOTS (default 16) updates at once.
 *
 *	worker_command = node /path/to/worker-sdk/node/examples/echo.js
 *
 * With ECHO_PREFIX set, the reply is prefixed with it.  ECHO_SLEEP_MS
 * (default 0; "A-B" for a random time in that range) makes each update
 * take that long, without blocking the other slots.
 */
let tgw;
try {
	tgw = require('tgrunner-worker');
} catch (e) {
	tgw = require('..');		/* run from the source tree */
}

const slots = Number(process.env.ECHO_SLOTS || 16);
const prefix = process.env.ECHO_PREFIX || '';
const [sleepMin, sleepMax = sleepMin] = (process.env.ECHO_SLEEP_MS || '0')
    .split('-').map(Number);

const w = new tgw.Worker({ slots, name: 'echo.js' });

w.onUpdate(async (ctx) => {
	const ms = sleepMin + Math.random() * (sleepMax - sleepMin);
	if (ms > 0)
		await ctx.sleep(ms);
	if (ctx.text !== undefined)
		ctx.reply(prefix + ctx.text);
});

w.run();
