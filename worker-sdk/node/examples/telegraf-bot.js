#!/usr/bin/env node
// SPDX-License-Identifier: ISC
'use strict';
/*
 * telegraf-bot.js: a Telegraf bot run as a tgrunner worker.  Apart from the
 * lines marked "tgrunner" it is the bot as it would poll Telegram itself:
 *
 *	/start		a greeting with an inline keyboard
 *	(button)	a callback query: answered, the message edited
 *	/help		a command
 *	/count		a counter kept by Telegraf's session middleware
 *	/fail		a handler that throws: the update is retried
 *
 *	worker_command = node /path/to/telegraf-bot.js
 *	(with telegraf installed where node finds it: npm install telegraf)
 */
const { Telegraf, Markup, session } = require('telegraf');
let tgw;
try {
	tgw = require('tgrunner-worker');		// tgrunner
} catch (e) {
	tgw = require('..');		/* run from the source tree */
}

const { apiRoot, apiToken } = tgw.adapters.endpoint();		// tgrunner
const bot = new Telegraf(apiToken, { telegram: { apiRoot } });	// tgrunner

bot.use(session({ defaultSession: () => ({ count: 0 }) }));

bot.start((ctx) => ctx.reply('Hello! Do you like tgrunner?',
    Markup.inlineKeyboard([Markup.button.callback('Yes', 'yes'),
	Markup.button.callback('No', 'no')])));

bot.action(/^(yes|no)$/, async (ctx) => {
	await ctx.answerCbQuery('Thanks!');
	await ctx.editMessageText(`You said: ${ctx.match[1]}`);
});

bot.help((ctx) => ctx.reply('Send /start, /count or any text.'));

bot.command('count', (ctx) => {
	ctx.session.count++;
	return ctx.reply(`count ${ctx.session.count}`);
});

bot.command('fail', () => {
	throw new Error('this command always fails');
});

bot.on('text', (ctx) => ctx.reply(`echo: ${ctx.message.text}`));

tgw.adapters.telegraf.run(bot, { slots: 16 });	// tgrunner: was bot.launch()
