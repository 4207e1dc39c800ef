// SPDX-License-Identifier: ISC
'use strict';
/*
 * What the framework adapters share: the endpoint from the environment,
 * the current update of an async context, and an HTTP agent that names it
 * in every request (X-Tgrunner-Update), so that the daemon orders a chat's
 * calls as it orders call frames.
 */

const http = require('http');
const { AsyncLocalStorage } = require('async_hooks');

const HEADER = 'X-Tgrunner-Update';

/* The update a handler runs for; set around bot.handleUpdate(). */
const current = new AsyncLocalStorage();

/*
 * A keep-alive agent that adds the header of the current update to each
 * request before it is sent.  Frameworks hand it to node-fetch as `agent`.
 */
class UpdateAgent extends http.Agent {
	constructor(options) {
		super(Object.assign({ keepAlive: true }, options));
	}

	addRequest(req, options) {
		const id = current.getStore();
		if (id !== undefined && !req.headersSent && !req.getHeader(HEADER))
			req.setHeader(HEADER, String(id));
		return super.addRequest(req, options);
	}
}

const agent = new UpdateAgent();

/** $TGRUNNER_API_ROOT and $TGRUNNER_API_TOKEN (spawned workers), or throws. */
function endpoint() {
	const apiRoot = process.env.TGRUNNER_API_ROOT;
	const apiToken = process.env.TGRUNNER_API_TOKEN;
	if (!apiRoot || !apiToken)
		throw new Error('TGRUNNER_API_ROOT and TGRUNNER_API_TOKEN are not ' +
		    'set: run this bot as a worker of tgrunnerd (worker_command), ' +
		    'with worker_api_listen on');
	return { apiRoot, apiToken };
}

/* The retry of a failed update: the error's own, else the option's. */
function retryOf(err, dflt) {
	for (let e = err; e; e = e.error) {
		if (typeof e.retry === 'boolean')
			return e.retry;
		if (e.error === e)
			break;
	}
	return dflt;
}

/*
 * A Worker whose handler runs handle(update, ctx) in the update's async
 * context and turns a rejection into fail with the retry the options say.
 */
function adapterWorker(options, handle) {
	const { Worker } = require('..');
	const o = Object.assign({ slots: 16 }, options || {});
	const retry = o.retry !== undefined ? !!o.retry : true;
	delete o.retry;
	const w = new Worker(o);
	w.onUpdate((ctx) => current.run(ctx.id, () => handle(ctx.update, ctx))
	    .catch((err) => {
		const e = err instanceof Error ? err : new Error(String(err));
		e.retry = retryOf(err, retry);
		throw e;
	}));
	return w;
}

/*
 * run(bot) or run(({ apiRoot, apiToken }) => bot): the second builds the
 * bot from the welcome when the first update comes (for workers the
 * daemon did not spawn, which have no TGRUNNER_API_* environment).
 * Returns the function that gives the bot for a context.
 */
function lazyBot(botOrFactory, install) {
	let bot = null;
	if (typeof botOrFactory !== 'function' ||
	    typeof botOrFactory.handleUpdate === 'function') {
		bot = botOrFactory;
		install(bot);
	}
	return (ctx) => {
		if (bot === null) {
			const w = ctx._worker;
			if (w.apiRoot === null)
				throw new Error('the daemon serves no Bot API ' +
				    'endpoint (worker_api_listen is off)');
			bot = botOrFactory({ apiRoot: w.apiRoot,
			    apiToken: w.apiToken });
			install(bot);
		}
		return bot;
	};
}

module.exports = { HEADER, agent, current, endpoint, adapterWorker,
	lazyBot, UpdateAgent };
