#!/usr/bin/env node
// SPDX-License-Identifier: ISC
'use strict';
/*
 * echo.js: a tgrunner worker in Node.js to start a bot from, ECHO_SLOTS
 * (default 16) updates at once.
 *
 *   /start              a greeting with an inline keyboard
 *   a button press      answerCallbackQuery at once (Telegram shows a
 *                       spinner until then), then the button's message is
 *                       edited
 *   an edited message   "edited: <text>", as a reply to it
 *   a text message      the same text back
 *
 *	worker_command = node /path/to/worker-sdk/node/examples/echo.js
 *
 * With ECHO_PREFIX set, the echoed text is prefixed with it.  ECHO_SLEEP_MS
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

const KEYBOARD = { inline_keyboard: [[
	{ text: 'Press me', callback_data: 'pressed' },
	{ text: 'Or me', callback_data: 'pressed too' }]] };

/* /name, /name args or /name@bot */
function isCommand(text, name) {
	const word = text.split(/\s/, 1)[0];
	return word === name || word.startsWith(name + '@');
}

async function onButton(ctx) {
	const cq = ctx.update.callback_query;
	const data = cq.data || '';
	try {
		await ctx.call('answerCallbackQuery', {
		    callback_query_id: cq.id, text: 'You pressed: ' + data });
	} catch (e) {
		if (!(e instanceof tgw.ApiError))
			throw e;
		/* too old (15 s): answer the rest anyway */
		console.error(`answerCallbackQuery: ${e.description}`);
	}
	if (cq.message)
		ctx.addCall('editMessageText', { chat_id: cq.message.chat.id,
		    message_id: cq.message.message_id,
		    text: 'You pressed: ' + data, reply_markup: KEYBOARD });
	else if (cq.inline_message_id)
		ctx.addCall('editMessageText', {
		    inline_message_id: cq.inline_message_id,
		    text: 'You pressed: ' + data });
}

const w = new tgw.Worker({ slots, name: 'echo.js' });

w.onUpdate(async (ctx) => {
	const ms = sleepMin + Math.random() * (sleepMax - sleepMin);
	if (ms > 0)
		await ctx.sleep(ms);
	if (ctx.type === 'callback_query')
		await onButton(ctx);
	else if (ctx.text === undefined)
		return;			/* a photo, a sticker, a poll...: nothing */
	else if (ctx.type === 'edited_message')
		ctx.reply('edited: ' + ctx.text,
		    { reply_parameters: { message_id: ctx.message.message_id } });
	else if (isCommand(ctx.text, '/start'))
		ctx.reply('Hello! I echo what you write. Try the buttons.',
		    { reply_markup: KEYBOARD });
	else
		ctx.reply(prefix + ctx.text);
});

w.run();
