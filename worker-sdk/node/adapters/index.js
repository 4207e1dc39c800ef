// SPDX-License-Identifier: ISC
'use strict';
/*
 * Framework adapters: bots written for grammY or Telegraf run as tgrunner
 * workers, their Bot API client pointed at the daemon's endpoint
 * (tgrunner-protocol(7), "The Bot API endpoint").  The frameworks are the
 * bot's dependencies, not this library's: nothing here requires them.
 */

const { endpoint } = require('./common');

module.exports = {
	endpoint,
	get grammy() {
		return require('./grammy');
	},
	get telegraf() {
		return require('./telegraf');
	},
};
