#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""An aiogram 3 bot run as a tgrunner worker.

UNTESTED: aiogram 3 is not packaged for Debian 12 and this project's tests
have no PyPI access, so this example has never run.  It shows the way; the
tested adapters are python-telegram-bot 13 (tgrunner_worker.adapters.ptb)
and, in Node.js, grammY and Telegraf.

The bot's own session points at the daemon's Bot API endpoint, and each
update the daemon hands over is fed to the Dispatcher; the lines marked
"tgrunner" are the change from a polling bot:

    /start      a greeting and an inline keyboard; the button's callback
                query is answered and the message edited
    /order      an FSM conversation (size, then name)

aiogram keeps FSM state in memory: run it with workers = 1 (and many
slots), or give the Dispatcher a storage the workers share (Redis).
"""

import contextvars
import os
import weakref

import aiohttp
from aiogram import Bot, Dispatcher, F
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import (CallbackQuery, InlineKeyboardButton,
                           InlineKeyboardMarkup, Message)

from tgrunner_worker import Worker				# tgrunner

# --- tgrunner: every request made for an update names it -------------------

current = contextvars.ContextVar("tgrunner_update", default=None)
_traced = weakref.WeakSet()


async def _name_update(session, trace_ctx, params):
    uid = current.get()
    if uid is not None:
        params.headers["X-Tgrunner-Update"] = str(uid)


class TgrunnerSession(AiohttpSession):
    """aiogram's aiohttp session; its requests carry X-Tgrunner-Update."""

    async def create_session(self):
        session = await super().create_session()
        if session not in _traced:
            trace = aiohttp.TraceConfig()
            trace.on_request_start.append(_name_update)
            trace.freeze()
            session._trace_configs.append(trace)
            _traced.add(session)
        return session


api = TelegramAPIServer.from_base(os.environ["TGRUNNER_API_ROOT"])  # tgrunner
bot = Bot(os.environ["TGRUNNER_API_TOKEN"],			# tgrunner
          session=TgrunnerSession(api=api))
dp = Dispatcher()

# --- the bot, as it was ----------------------------------------------------


class Order(StatesGroup):
    size = State()
    name = State()


@dp.message(Command("start"))
async def start(message: Message):
    kb = InlineKeyboardMarkup(inline_keyboard=[[
        InlineKeyboardButton(text="Yes", callback_data="yes"),
        InlineKeyboardButton(text="No", callback_data="no")]])
    await message.answer("Hello! Do you like tgrunner?", reply_markup=kb)


@dp.callback_query(F.data.in_({"yes", "no"}))
async def button(query: CallbackQuery):
    await query.answer("Thanks!")
    await query.message.edit_text("You said: %s" % query.data)


@dp.message(Command("order"))
async def order(message: Message, state: FSMContext):
    await state.set_state(Order.size)
    await message.answer("Which size? (S, M or L)")


@dp.message(Order.size, F.text.in_({"S", "M", "L"}))
async def size(message: Message, state: FSMContext):
    await state.update_data(size=message.text)
    await state.set_state(Order.name)
    await message.answer("Your name?")


@dp.message(Order.name)
async def name(message: Message, state: FSMContext):
    data = await state.get_data()
    await state.clear()
    await message.answer("Order: size %s for %s" % (data["size"],
                                                    message.text))

# --- tgrunner: updates from the daemon instead of polling ------------------

w = Worker(slots=50)


@w.handler
async def on_update(ctx):
    token = current.set(ctx.id)
    try:
        # an exception that no @dp.errors() handler takes propagates:
        # the update is answered fail and retried later
        await dp.feed_raw_update(bot, ctx.update)
    finally:
        current.reset(token)


@w.on_shutdown
async def close(worker):
    await bot.session.close()


if __name__ == "__main__":
    w.run()			# tgrunner: was dp.start_polling(bot)
