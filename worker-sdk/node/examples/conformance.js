#!/usr/bin/env node
// SPDX-License-Identifier: ISC
'use strict';
/*
 * conformance.js: the conformance worker of the Node.js library, run by
 * tests/conformance/tgrunner-conformance.  Commands (the message text):
 *
 *	echo <s>	done, sendMessage <s> to the chat
 *	call		getMe through the daemon, then sendMessage me:<username>
 *			(or error:<error_code>)
 *	sleep <ms>	wait without blocking other slots; cancellable
 *	fail		fail, retry false
 *	raise		the handler throws (the library answers fail, retry)
 *	anything else	done, no calls
 *
 * Slots: TG_SLOTS (default 1).
 */
let tgw;
try {
	tgw = require('tgrunner-worker');
} catch (e) {
	tgw = require('..');
}

const w = new tgw.Worker({ slots: Number(process.env.TG_SLOTS || 1),
    name: 'conformance.js' });

w.onUpdate(async (ctx) => {
	const text = ctx.text === undefined ? '' : ctx.text;
	const sp = text.indexOf(' ');
	const cmd = sp === -1 ? text : text.slice(0, sp);
	const arg = sp === -1 ? '' : text.slice(sp + 1);

	switch (cmd) {
	case 'echo':
		ctx.reply(arg);
		break;
	case 'call':
		try {
			const me = await ctx.call('getMe', {});
			ctx.reply('me:' + me.username);
		} catch (e) {
			if (!(e instanceof tgw.ApiError))
				throw e;
			ctx.reply('error:' + e.errorCode);
		}
		break;
	case 'sleep':
		await ctx.sleep(Number(arg));
		break;
	case 'fail':
		ctx.fail('asked to fail', { retry: false });
		break;
	case 'raise':
		throw new Error('raised on request');
	default:
		break;
	}
});

w.run();
