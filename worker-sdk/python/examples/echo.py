#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""echo: a tgrunner worker to start a bot from.  Many updates at once
(ECHO_SLOTS, default 50) on asyncio.

  /start              a greeting with an inline keyboard
  a button press      answerCallbackQuery at once (Telegram shows a spinner
                      until then), then the button's message is edited
  an edited message   "edited: <text>", as a reply to it
  a text message      the same text back

    worker_command = python3 /path/to/echo.py      (in tgrunner.conf)
"""
import os
import sys

from tgrunner_worker import ApiError, Worker

w = Worker(slots=int(os.environ.get("ECHO_SLOTS", "50")), name="echo.py")

KEYBOARD = {"inline_keyboard": [[
    {"text": "Press me", "callback_data": "pressed"},
    {"text": "Or me", "callback_data": "pressed too"}]]}


def is_command(text, name):
    """/name, /name args or /name@bot."""
    word = text.split(maxsplit=1)[0] if text else ""
    return word == name or word.startswith(name + "@")


async def on_button(ctx):
    cq = ctx.update["callback_query"]
    data = cq.get("data", "")
    try:
        await ctx.call("answerCallbackQuery", callback_query_id=cq["id"],
                       text="You pressed: " + data)
    except ApiError as e:		# too old (15 s): answer the rest anyway
        print("answerCallbackQuery: %s" % e.description, file=sys.stderr)
    msg = cq.get("message")
    if msg is not None:
        ctx.add_call("editMessageText", chat_id=msg["chat"]["id"],
                     message_id=msg["message_id"],
                     text="You pressed: " + data, reply_markup=KEYBOARD)
    elif "inline_message_id" in cq:
        ctx.add_call("editMessageText",
                     inline_message_id=cq["inline_message_id"],
                     text="You pressed: " + data)


@w.handler
async def on_update(ctx):
    if ctx.type == "callback_query":
        await on_button(ctx)
    elif ctx.text is None:
        return				# a photo, a sticker, a poll...: nothing
    elif ctx.type == "edited_message":
        ctx.reply("edited: " + ctx.text,
                  reply_parameters={"message_id": ctx.message["message_id"]})
    elif is_command(ctx.text, "/start"):
        ctx.reply("Hello! I echo what you write. Try the buttons.",
                  reply_markup=KEYBOARD)
    else:
        ctx.reply(ctx.text)


if __name__ == "__main__":
    w.run()
