#!/bin/sh
# Every source file carries "SPDX-License-Identifier: ISC" in its first ten
# lines.  Run as `make spdx-check` and by .ci/run (in a git checkout it
# checks the tracked files).  Lists the files that lack it and exits 1 if
# any does.
#   tests/spdx-check.sh [SRCDIR]
set -eu
top=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$top"
if [ -e .git ] && command -v git >/dev/null 2>&1; then
	list() { git ls-files; }
else
	list() { find . -type f ! -path './.git/*' | sed 's|^\./||'; }
fi
missing=0
n=0
for f in $(list | grep -E '\.(c|h|py|js|ts|sh|am|ac|in)$|^\.ci/run$|^tests/conformance/tgrunner-conformance$|^debian/rules$' |
    grep -v -E '^(fuzz/corpus|proto/vectors)/'); do
	[ -f "$f" ] || continue
	n=$((n + 1))
	head -n 10 "$f" | grep -q 'SPDX-License-Identifier: ISC' && continue
	echo "no SPDX line: $f"
	missing=$((missing + 1))
done
echo "spdx-check: $n files, $missing without an SPDX line"
[ "$missing" -eq 0 ]
