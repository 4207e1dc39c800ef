// SPDX-License-Identifier: ISC
'use strict';
/*
 * Telegraf bots as tgrunner workers.  The bot is built on the daemon's Bot
 * API endpoint and run by the worker instead of polling:
 *
 *	const { adapters } = require('tgrunner-worker');
 *	const { apiRoot, apiToken } = adapters.endpoint();
 *	const bot = new Telegraf(apiToken, { telegram: { apiRoot } });
 *	...				// handlers, unchanged
 *	adapters.telegraf.run(bot);	// instead of bot.launch()
 *
 * Each update goes through bot.handleUpdate(); Telegraf builds a Telegram
 * client per update, and its requests get the update's X-Tgrunner-Update
 * header from the agent this adapter gives each one (Telegraf drops a
 * configured agent for http:// roots, so it is set on the context's client).
 * Errors take Telegraf's path: bot.catch's handler, else its default that
 * rethrows, and then the update is answered fail, retried unless
 * options.retry is false.
 */

const { agent, adapterWorker, lazyBot } = require('./common');

/* Contexts of this bot give their Telegram client our agent. */
function install(bot) {
	const Base = bot.options.contextType;
	if (Base.tgrunnerAgent)
		return;
	class TgrunnerContext extends Base {
		constructor(update, telegram, botInfo) {
			super(update, telegram, botInfo);
			telegram.options.agent = agent;
		}
	}
	TgrunnerContext.tgrunnerAgent = true;
	bot.options.contextType = TgrunnerContext;
}

function handle(bot, update, ctx) {
	if (bot.botInfo === undefined)
		bot.botInfo = ctx.bot;
	return bot.handleUpdate(update);
}

/**
 * Serve the daemon's updates with bot until shutdown.  options: those of
 * Worker (slots, default 16; name; ...) and retry (default true).  bot
 * may be a function ({ apiRoot, apiToken }) => bot, called once the
 * daemon's welcome is in (workers it did not spawn).
 */
function run(bot, options) {
	const botFor = lazyBot(bot, install);

	return adapterWorker(options, (update, ctx) => handle(botFor(ctx),
	    update, ctx)).run();
}

module.exports = { run, install, handle };
