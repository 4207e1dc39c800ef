#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""A python-telegram-bot 13 bot (Debian 12: python3-python-telegram-bot)
run as a tgrunner worker.  Apart from the two lines marked "tgrunner", it
is the bot as it would poll Telegram by itself:

    /start            a greeting and an inline keyboard
    (button)          a callback query: answered, the message edited
    /count            a per-chat counter in chat_data
    /order            a ConversationHandler: asks a size, then a name
    /cancel           leaves the conversation
    /slow             a run_async handler (PTB's own thread pool)

In /etc/tgrunner.conf (one worker process keeps the conversations, many
slots serve many chats at once):

    workers = 1
    worker_command = python3 /path/to/ptb_bot.py
"""

import logging
import time

from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.ext import (CallbackQueryHandler, CommandHandler,
                          ConversationHandler, Filters, MessageHandler,
                          Updater)

from tgrunner_worker.adapters import ptb		# tgrunner

SIZE, NAME = range(2)


def start(update, context):
    keyboard = [[InlineKeyboardButton("Yes", callback_data="yes"),
                 InlineKeyboardButton("No", callback_data="no")]]
    update.message.reply_text("Hello! Do you like tgrunner?",
                              reply_markup=InlineKeyboardMarkup(keyboard))


def button(update, context):
    query = update.callback_query
    query.answer("Thanks!")
    query.edit_message_text("You said: %s" % query.data)


def count(update, context):
    n = context.chat_data.get("count", 0) + 1
    context.chat_data["count"] = n
    update.message.reply_text("count %d" % n)


def order(update, context):
    update.message.reply_text("Which size? (S, M or L)")
    return SIZE


def size(update, context):
    context.user_data["size"] = update.message.text
    update.message.reply_text("Your name?")
    return NAME


def name(update, context):
    update.message.reply_text("Order: size %s for %s"
                              % (context.user_data.pop("size", "?"),
                                 update.message.text))
    return ConversationHandler.END


def cancel(update, context):
    update.message.reply_text("Cancelled.")
    return ConversationHandler.END


def slow(update, context):
    time.sleep(0.3)
    update.message.reply_text("slow done")


def fail(update, context):
    raise RuntimeError("this command always fails")


def main():
    logging.basicConfig(level=logging.WARNING)
    updater = Updater(**ptb.bot_args(), use_context=True)	# tgrunner
    dp = updater.dispatcher
    dp.add_handler(ConversationHandler(
        entry_points=[CommandHandler("order", order)],
        states={SIZE: [MessageHandler(Filters.regex("^(S|M|L)$"), size)],
                NAME: [MessageHandler(Filters.text & ~Filters.command,
                                      name)]},
        fallbacks=[CommandHandler("cancel", cancel)]))
    dp.add_handler(CommandHandler("start", start))
    dp.add_handler(CommandHandler("count", count))
    dp.add_handler(CommandHandler("slow", slow, run_async=True))
    dp.add_handler(CommandHandler("fail", fail))
    dp.add_handler(CallbackQueryHandler(button))
    ptb.run(updater, slots=8)		# tgrunner: was start_polling(); idle()


if __name__ == "__main__":
    main()
