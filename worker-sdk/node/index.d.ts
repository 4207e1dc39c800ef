// SPDX-License-Identifier: ISC
// Types for tgrunner-worker, the Node.js library for tgrunner workers.
/// <reference types="node" />

import type { Socket } from 'net';

/** A Telegram Update object, as the daemon received it. */
export type Update = { update_id: number; [type: string]: any };

/** One Bot API call run by the daemon after `done`. */
export interface Call {
	method: string;
	params?: Record<string, unknown>;
}

export interface WorkerOptions {
	/** Updates handled at once, 1..1024 (default 1). */
	slots?: number;
	/** Shown in the daemon's logs (default: the script's file name). */
	name?: string;
	/** A connected socket to use (tests, embedding). */
	socket?: Socket;
	/** File descriptor of the connection (default $TGRUNNER_FD). */
	fd?: number;
	/** Else the daemon's listen socket (default $TGRUNNER_SOCKET). */
	socketPath?: string;
	/** process.exit() with the status when the session ends (default true). */
	exit?: boolean;
	/** ms a cancelled handler may take before it is failed (default 1000). */
	cancelGrace?: number;
	/** Diagnostics (default: stderr, "tgrunner-worker: " prefix); false: none. */
	log?: ((message: string) => void) | false;
	/** Append every frame to this file (default $TGRUNNER_TRACE). */
	trace?: string;
}

export interface FailOptions {
	/** Dispatch again later with attempt + 1 (default false: dead-letter). */
	retry?: boolean;
}

/** One update being handled; answered exactly once. */
export declare class Context {
	/**
	 * The update's id (its update_id): a bigint only beyond
	 * Number.MAX_SAFE_INTEGER, where a number would not be exact.
	 */
	readonly id: number | bigint;
	/** Session keys ("chat:5", ...). */
	readonly keys: string[];
	/** 1, or more when delivered again (crash, timeout, retry). */
	readonly attempt: number;
	/** Unix ms after which the daemon cancels it; 0 = none. */
	readonly deadline: number;
	/** The Telegram Update object. */
	readonly update: Update;
	/** The update's type ("message", "callback_query", ...). */
	readonly type: string | undefined;
	/** message, edited_message, channel_post, business_message, ... or
	 *  callback_query.message. */
	readonly message: Record<string, any> | undefined;
	readonly chat: Record<string, any> | undefined;
	readonly chatId: number | undefined;
	/** The user the update comes from (from, or user). */
	readonly from: Record<string, any> | undefined;
	/** message.text, if any. */
	readonly text: string | undefined;
	/** Aborted (with a CancelledError) when the daemon cancels the update. */
	readonly signal: AbortSignal;
	/** The bot's getMe User object. */
	readonly bot: Record<string, any>;
	/** The calls added so far. */
	readonly calls: Call[];
	/** Has the update been answered (done or fail)? */
	readonly answered: boolean;
	/** Has the daemon cancelled it? */
	readonly cancelled: boolean;

	/** Add a Bot API call the daemon runs after done (at most 100). */
	addCall(method: string, params?: Record<string, unknown>): this;
	/** addCall('sendMessage', { chat_id: ctx.chatId, text, ...params }). */
	reply(text: string, params?: Record<string, unknown>): this;
	/** Run a Bot API method now; rejects with ApiError on ok:false. */
	call<T = any>(method: string, params?: Record<string, unknown>): Promise<T>;
	/** Wait ms; rejects with the CancelledError when cancelled. */
	sleep(ms: number): Promise<void>;
	/** A file by its file_id, through the daemon's Bot API endpoint. */
	download(fileId: string): Promise<Buffer>;
	download(fileId: string, opts: DownloadOptions & { path: string }):
	    Promise<string>;
	download(fileId: string, opts?: DownloadOptions): Promise<Buffer>;
	/** Answer done now (later returns and throws are ignored). */
	done(calls?: Call[]): boolean;
	/** Answer fail now; retry defaults to false. */
	fail(error: string | Error, options?: FailOptions): boolean;
}

export interface DownloadOptions {
	/** Write the file here (resolves with the path) instead of a Buffer. */
	path?: string;
	/** At most this many bytes (RangeError beyond). */
	maxSize?: number;
}

export type Handler = (ctx: Context) => unknown | Promise<unknown>;

export declare class Worker {
	constructor(options?: WorkerOptions);
	readonly slots: number;
	readonly name: string;
	/** Set by welcome. */
	readonly bot: Record<string, any> | null;
	readonly workerId: number | null;
	readonly maxFrame: number;
	/** The daemon's Bot API endpoint for this worker and its credential
	 *  (welcome's api_root, api_token; else $TGRUNNER_API_ROOT and
	 *  $TGRUNNER_API_TOKEN), or null. */
	readonly apiRoot: string | null;
	readonly apiToken: string | null;
	/** Updates held, not yet answered. */
	readonly busy: number;
	readonly shuttingDown: boolean;

	/** The handler, called once per update, up to `slots` at once. */
	onUpdate(handler: Handler): this;
	/** Called (awaited) after shutdown once every update is answered. */
	onShutdown(hook: () => unknown | Promise<unknown>): this;
	/** Run until shutdown or EOF; resolves 0, rejects on a protocol or
	 *  I/O error.  With `exit` (default) the process then exits. */
	run(): Promise<number>;
	/** A Bot API call tied to no update (id 0). */
	call<T = any>(method: string, params?: Record<string, unknown>): Promise<T>;
	/** ctx.download() outside an update. */
	download(fileId: string, opts?: DownloadOptions): Promise<Buffer | string>;
}

export interface AdapterOptions extends WorkerOptions {
	/** Run an update whose handler threw again later (default true; an
	 *  error's own boolean `retry` wins). */
	retry?: boolean;
}

/** Framework adapters: feed the daemon's updates to an unchanged bot. */
export declare const adapters: {
	grammy: { run(bot: any, options?: AdapterOptions): Promise<number> };
	telegraf: { run(bot: any, options?: AdapterOptions): Promise<number> };
	/** $TGRUNNER_API_ROOT and $TGRUNNER_API_TOKEN, or throws. */
	endpoint(): { apiRoot: string; apiToken: string };
};

export declare class ApiError extends Error {
	readonly method: string;
	readonly errorCode: number;
	readonly description: string | undefined;
	readonly parameters: Record<string, any> | undefined;
	readonly retryAfter: number | undefined;
}

export declare class ProtocolError extends Error {}
export declare class CancelledError extends Error {
	readonly reason: string | undefined;
}
export declare class FrameError extends Error {}

/** A file object of the daemon's "File uploads" (tgrunner-protocol(7)). */
export type UploadFile =
	| { '@file': string; filename?: string; content_type?: string }
	| { '@data': string; filename?: string; content_type?: string };
export interface UploadOptions {
	filename?: string;
	contentType?: string;
}
/** A file under the daemon's upload_dir, by its path relative to it. */
export declare function uploadFile(path: string, opts?: UploadOptions): UploadFile;
/** Bytes sent inline (base64 in the frame, up to about 768 KiB). */
export declare function uploadBytes(data: Uint8Array | string,
	opts?: UploadOptions): UploadFile;

export declare const PROTOCOL: 1;
export declare const MAX_FRAME: number;
export declare const MAX_CALLS: number;
export declare const MAX_SLOTS: number;
