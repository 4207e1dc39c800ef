#!/bin/sh
# SPDX-License-Identifier: ISC
# mandoc -Tlint over every man page: any message fails, except the two that
# depend on what this machine has installed (pages the others refer to,
# and its mandoc.db).  Exits 77 (automake's "skipped") without mandoc.
#   tests/mandoc-lint.sh [SRCDIR]
set -u
top=${1:-${TG_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}}
if ! command -v mandoc >/dev/null 2>&1; then
	echo "mandoc not installed (apt-get install mandoc): skipped"
	exit 77
fi
out=$(for f in "$top"/man/*.[1-8]; do mandoc -Tlint "$f" 2>&1; done |
	grep -v -e 'referenced manual not found' -e 'outdated mandoc.db' \
	    -e 'mandoc.db' )
if [ -n "$out" ]; then
	echo "$out"
	echo "mandoc -Tlint: the pages above need fixing"
	exit 1
fi
echo "mandoc -Tlint: $(ls "$top"/man/*.[1-8] | wc -l) pages clean"
