// SPDX-License-Identifier: ISC
'use strict';
/*
 * grammY bots as tgrunner workers.  The bot is built on the daemon's Bot
 * API endpoint and run by the worker instead of polling:
 *
 *	const { adapters } = require('tgrunner-worker');
 *	const { apiRoot, apiToken } = adapters.endpoint();
 *	const bot = new Bot(apiToken, { client: { apiRoot } });
 *	...				// middleware, unchanged
 *	adapters.grammy.run(bot);	// instead of bot.start()
 *
 * Each update goes through bot.handleUpdate(); the calls its middleware
 * makes carry the update's X-Tgrunner-Update header (grammY builds an Api
 * per update from bot.clientConfig, whose fetch agent adds it).  Errors
 * take grammY's path: bot.catch's handler gets the BotError (as under
 * bot.start()); if it throws (grammY's default one does) the update is
 * answered fail, retried unless options.retry is false.
 */

const { agent, adapterWorker, lazyBot } = require('./common');

/* Every Api grammY builds for an update gets our agent. */
function install(bot) {
	const cfg = bot.clientConfig || {};
	if (cfg.baseFetchConfig && cfg.baseFetchConfig.agent === agent)
		return;
	if (cfg.fetch !== undefined)
		process.emitWarning('tgrunner-worker: the bot has its own fetch; ' +
		    'its requests carry no X-Tgrunner-Update header unless it ' +
		    'uses options.agent');
	bot.clientConfig = Object.assign({}, cfg, {
		baseFetchConfig: Object.assign({}, cfg.baseFetchConfig, { agent })
	});
}

async function handle(bot, update, ctx) {
	if (!bot.isInited())
		bot.botInfo = ctx.bot;
	try {
		await bot.handleUpdate(update);
	} catch (err) {
		/* what bot.start() does with it */
		if (err && err.name === 'BotError' && bot.errorHandler)
			await bot.errorHandler(err);
		else
			throw err;
	}
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
