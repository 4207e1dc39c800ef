#!/bin/sh
# SPDX-License-Identifier: ISC
# Install the bot frameworks the adapter and framework tests run (grammY,
# Telegraf: the versions pinned in tests/adapters/package-lock.json) with
# `npm ci` into a cache outside the build tree, so that `make check` and
# `make distcheck` need no registry: tests/lib/botfw.py looks there first.
# Does nothing when the cache already holds that lock file's packages.
#   TGRUNNER_NODE_DEPS  the directory (default ~/.cache/tgrunner/adapters-node)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dest=${TGRUNNER_NODE_DEPS:-${XDG_CACHE_HOME:-$HOME/.cache}/tgrunner/adapters-node}
lock="$here/adapters/package-lock.json"
want=$(sha256sum "$lock" | cut -d' ' -f1)
if [ "$(cat "$dest/installed.stamp" 2>/dev/null || true)" = "$want" ]; then
	exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "$0: npm not installed" >&2; exit 1; }
mkdir -p "$dest"
rm -f "$dest/installed.stamp"
cp "$here/adapters/package.json" "$lock" "$dest/"
(cd "$dest" && npm ci --no-audit --no-fund --loglevel=error)
printf '%s' "$want" > "$dest/installed.stamp"
echo "installed grammy and telegraf into $dest"
