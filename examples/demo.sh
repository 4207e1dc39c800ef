#!/bin/sh
# SPDX-License-Identifier: ISC
# The quick start's first command: install the build dependencies (Debian),
# build in ./build, and run the demo (examples/demo.py): the fake Bot API,
# tgrunnerd and echo workers on loopback, or the real Bot API when
# TGRUNNER_TOKEN is set.  Arguments go to demo.py (--race, --keep, ...).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/tests/install-deps.sh"
cd "$top"
[ -x configure ] || autoreconf -fi
mkdir -p build
cd build
[ -f Makefile ] || ../configure -q
make -s -j"$(nproc)"
exec python3 "$top/examples/demo.py" --builddir "$top/build" "$@"
