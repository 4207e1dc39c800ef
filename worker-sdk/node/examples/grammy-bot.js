#!/usr/bin/env node
// SPDX-License-Identifier: ISC
'use strict';
/*
 * grammy-bot.js: a grammY bot run as a tgrunner worker.  Apart from the
 * lines marked "tgrunner" it is the bot as it would poll Telegram itself:
 *
 *	/start		a greeting with an inline keyboard
 *	(button)	a callback query: answered, the message edited
 *	/count		a counter kept by grammY's session middleware
 *	/fail		a handler that throws: the update is retried
 *
 *	worker_command = node /path/to/grammy-bot.js
 *	(with grammy installed where node finds it: npm install grammy)
 *
 * Sessions live in the worker's memory (grammY's default storage): with
 * several workers, use workers = 1 or a storage they share (grammY's
 * storage adapters), as with several polling instances.
 */
const { Bot, InlineKeyboard, session } = require('grammy');
let tgw;
try {
	tgw = require('tgrunner-worker');		// tgrunner
} catch (e) {
	tgw = require('..');		/* run from the source tree */
}

const { apiRoot, apiToken } = tgw.adapters.endpoint();		// tgrunner
const bot = new Bot(apiToken, { client: { apiRoot } });		// tgrunner

bot.use(session({ initial: () => ({ count: 0 }) }));

bot.command('start', (ctx) => ctx.reply('Hello! Do you like tgrunner?', {
	reply_markup: new InlineKeyboard().text('Yes', 'yes').text('No', 'no'),
}));

bot.on('callback_query:data', async (ctx) => {
	await ctx.answerCallbackQuery({ text: 'Thanks!' });
	await ctx.editMessageText(`You said: ${ctx.callbackQuery.data}`);
});

bot.command('count', (ctx) => {
	ctx.session.count++;
	return ctx.reply(`count ${ctx.session.count}`);
});

bot.command('fail', () => {
	throw new Error('this command always fails');
});

bot.on('message:text', (ctx) => ctx.reply(`echo: ${ctx.message.text}`));

bot.catch((err) => {
	console.error(`update ${err.ctx.update.update_id}: ${err.error}`);
	throw err;		/* and tgrunner runs it again later */
});

tgw.adapters.grammy.run(bot, { slots: 16 });	// tgrunner: was bot.start()
