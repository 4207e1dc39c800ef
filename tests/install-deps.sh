#!/bin/sh
# SPDX-License-Identifier: ISC
# Install what building and testing tgrunner needs on Debian 12 (apt-get).
# Does nothing when everything is already there.  The npm packages the
# framework tests run come from tests/install-node-deps.sh, run last.
set -eu
PKGS="build-essential autoconf automake libtool pkg-config
libcurl4-openssl-dev libjansson-dev libevent-dev libsystemd-dev libinih-dev
uthash-dev zlib1g-dev check python3 clang libclang-rt-14-dev mandoc
python3-venv python3-setuptools python3-wheel python3-python-telegram-bot
libnats-dev nats-server iproute2"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
# the Node.js worker library and the grammY/Telegraf adapter tests (which
# fetch those two from the npm registry); a node from elsewhere will do
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
if [ -n "$missing" ]; then
	echo "installing:$missing"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
	    --no-install-recommends $missing
fi
# grammY and Telegraf themselves, from the npm registry
exec "$(dirname "$0")/install-node-deps.sh"
