#!/usr/bin/env node
// SPDX-License-Identifier: ISC
'use strict';
/*
 * A worker for tests/scenario/test_adapters.py: "dl <file_id> [max]"
 * downloads the file with ctx.download() and replies "<size> <sha256>";
 * "dlpath <file_id> <path>" writes it to path first.  Errors are replied
 * as "error <name>: <message>".
 */
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { Worker } = require(path.join(process.env.TG_SRCDIR || '../..',
    'worker-sdk', 'node'));

const w = new Worker({ slots: 4 });
w.onUpdate(async (ctx) => {
	const args = (ctx.text || '').split(' ');
	try {
		let data;
		if (args[0] === 'dl')
			data = await ctx.download(args[1], args[2] === undefined ?
			    {} : { maxSize: Number(args[2]) });
		else
			data = fs.readFileSync(await ctx.download(args[1],
			    { path: args[2] }));
		ctx.reply(`${data.length} ` +
		    crypto.createHash('sha256').update(data).digest('hex'));
	} catch (e) {
		ctx.reply(`error ${e.name}: ${e.message}`);
	}
});
w.run();
