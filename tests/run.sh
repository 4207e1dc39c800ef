#!/bin/sh
# SPDX-License-Identifier: ISC
# The whole test suite from a fresh clone: install dependencies, build in
# ./build, run `make check` (unit tests and scenario tests on loopback).
# Extra arguments go to configure (e.g. --enable-sanitizers).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/tests/install-deps.sh"
cd "$top"
[ -x configure ] || autoreconf -fi
builddir=${BUILDDIR:-$top/build}
mkdir -p "$builddir"
cd "$builddir"
[ -f Makefile ] && [ "$#" -eq 0 ] || "$top/configure" -q --enable-werror "$@"
make -s -j"$(nproc)"
make -s -j"$(nproc)" check
