// SPDX-License-Identifier: ISC
// The reference bot for bench/run.py: grammY + @grammyjs/runner, doing what
// tests/workers/tg-test-worker does, and recording the same lines.
//
//   BENCH_API          fake Bot API root (http://127.0.0.1:PORT)
//   BENCH_TOKEN        bot token
//   BENCH_RECORD       record file: "S|E id attempt pid keys chat seq t_ns"
//   BENCH_SLEEP_MS     handler duration in ms (0: none)
//   BENCH_REPLY=1      answer every message with sendMessage "echo: <text>"
//   BENCH_POLL_TIMEOUT long-poll timeout in seconds (10)
//   BENCH_CONCURRENCY  sink concurrency (500, the runner's default)
//
// One write() per record line on an O_APPEND fd, like the C test worker.
"use strict";

const fs = require("node:fs");
const { Bot } = require("grammy");
const { run, sequentialize } = require("@grammyjs/runner");

const env = process.env;
const sleepMs = parseInt(env.BENCH_SLEEP_MS || "0", 10);
const reply = env.BENCH_REPLY === "1";
const timeout = parseInt(env.BENCH_POLL_TIMEOUT || "10", 10);
const concurrency = parseInt(env.BENCH_CONCURRENCY || "500", 10);
const recfd = fs.openSync(env.BENCH_RECORD, "a");

// CLOCK_REALTIME in ns, as the C worker writes it (µs precision).
const origin = BigInt(Math.round(performance.timeOrigin * 1000)) * 1000n;
function nowNs() {
	return origin + BigInt(Math.round(performance.now() * 1e6));
}

function record(what, id, chat, seq) {
	fs.writeSync(recfd, `${what} ${id} 1 ${process.pid} chat:${chat} ` +
	    `${chat} ${seq} ${nowNs()}\n`);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const bot = new Bot(env.BENCH_TOKEN, { client: { apiRoot: env.BENCH_API } });

bot.use(sequentialize((ctx) => String(ctx.chat?.id)));
bot.on("message", async (ctx) => {
	const id = ctx.update.update_id;
	const chat = ctx.chat.id;
	const text = ctx.msg.text || "";
	const seq = text.startsWith("seq ") ? parseInt(text.slice(4), 10) : "-";

	record("S", id, chat, seq);
	if (sleepMs > 0)
		await sleep(sleepMs);
	if (reply)
		await ctx.reply("echo: " + text);
	record("E", id, chat, seq);
});
bot.catch((err) => console.error("bot error:", err.message));

const handle = run(bot, {
	runner: { fetch: { timeout, allowed_updates: ["message"] } },
	sink: { concurrency },
});

function stop() {
	handle.stop().then(() => process.exit(0));
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
console.error(`grammy bot: pid ${process.pid}, sleep ${sleepMs} ms, ` +
    `reply ${reply}, concurrency ${concurrency}`);
