#!/bin/sh
# SPDX-License-Identifier: ISC
# Run the scenario tests with tgrunnerd under valgrind memcheck.
#
#   tests/valgrind.sh [-b BUILDDIR] [-o OUTDIR] [TEST.py ...]
#
# BUILDDIR defaults to $TG_BUILDDIR, else the current directory; the tests
# default to every tests/scenario/test_*.py except the chaos one.  The
# harness (tests/lib/tgtest.py) runs $TG_BUILDDIR/tgrunnerd, so this script
# builds a shadow build directory whose tgrunnerd is a wrapper that execs
# valgrind on the real one (same pid, so signals and process groups are
# unchanged); everything else is a symlink to the real build.  Workers are
# not traced (--trace-children=no): only the daemon is checked.
#
# Every daemon run writes OUTDIR/vg.<pid>.log.  At the end the script sums
# the memcheck errors and the definitely/indirectly lost bytes over all of
# them and prints the logs that have any.  Exit status: 0 clean, 1 memcheck
# found errors or leaks, 2 a test failed but valgrind found nothing (under
# valgrind the daemon is 20-50 times slower: timing-bound tests may fail
# for that alone; the list says which), 77 valgrind is not installed.
set -u

SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
BUILDDIR=${TG_BUILDDIR:-$(pwd)}
OUTDIR=
while getopts b:o: opt; do
	case $opt in
	b) BUILDDIR=$OPTARG ;;
	o) OUTDIR=$OPTARG ;;
	*) echo "usage: $0 [-b BUILDDIR] [-o OUTDIR] [TEST.py ...]" >&2
	   exit 64 ;;
	esac
done
shift $((OPTIND - 1))
BUILDDIR=$(cd "$BUILDDIR" && pwd) || exit 64

if ! command -v valgrind >/dev/null 2>&1; then
	echo "valgrind.sh: valgrind is not installed; skipping" >&2
	exit 77
fi
if [ ! -x "$BUILDDIR/tgrunnerd" ]; then
	echo "valgrind.sh: no tgrunnerd in $BUILDDIR (build first)" >&2
	exit 64
fi
if grep -q 'fsanitize' "$BUILDDIR/config.log" 2>/dev/null &&
    grep -q "enable-sanitizers" "$BUILDDIR/config.log"; then
	echo "valgrind.sh: $BUILDDIR is a sanitizer build; use a plain one" >&2
	exit 64
fi

SHADOW=$(mktemp -d /tmp/tgvg-XXXXXX) || exit 1
if [ -z "$OUTDIR" ]; then
	OUTDIR=$SHADOW/logs
	KEEP_NOTE="(removed at exit; use -o DIR to keep them)"
else
	KEEP_NOTE=
fi
mkdir -p "$OUTDIR" || exit 1
OUTDIR=$(cd "$OUTDIR" && pwd)
trap 'rm -rf "$SHADOW"' EXIT
trap 'exit 130' INT TERM

for f in "$BUILDDIR"/* "$BUILDDIR"/.libs; do
	[ -e "$f" ] || continue
	ln -s "$f" "$SHADOW/$(basename "$f")"
done
rm -f "$SHADOW/tgrunnerd"
cat >"$SHADOW/tgrunnerd" <<EOF
#!/bin/sh
exec valgrind -q --tool=memcheck --error-exitcode=99 \\
    --leak-check=full --show-leak-kinds=definite,indirect \\
    --errors-for-leak-kinds=definite,indirect \\
    --child-silent-after-fork=yes --trace-children=no \\
    --num-callers=30 --log-file='$OUTDIR/vg.%p.log' \\
    '$BUILDDIR/tgrunnerd' "\$@"
EOF
chmod +x "$SHADOW/tgrunnerd"

if [ $# -eq 0 ]; then
	for t in "$SRCDIR"/tests/scenario/test_*.py; do
		case $t in *test_chaos_quick.py) continue ;; esac
		set -- "$@" "$t"
	done
fi

failed=
for t in "$@"; do
	case $t in /*) ;; *) [ -f "$t" ] || t=$SRCDIR/tests/scenario/$t ;; esac
	name=$(basename "$t")
	start=$(date +%s)
	TG_BUILDDIR=$SHADOW TG_SRCDIR=$SRCDIR PYTHONPATH=$SRCDIR/tests/lib \
	    python3 "$t" >"$OUTDIR/$name.out" 2>&1
	rc=$?
	case $rc in
	0) verdict=PASS ;;
	77) verdict=SKIP ;;
	*) verdict=FAIL; failed="$failed $name" ;;
	esac
	printf '%-28s %s (%ss)\n' "$name" "$verdict" $(($(date +%s) - start))
done

# Sum over every daemon run.  With -q a log holds only reports: errors
# ("Invalid read", "Conditional jump ...") and leak records.
bad=$(python3 - "$OUTDIR" <<'PYEOF'
import glob, os, re, sys
ERR = re.compile(r"^==\d+== (Invalid (read|write|free)|Conditional jump|"
                 r"Use of uninitialised|Syscall param|Mismatched free|"
                 r"Source and destination overlap|Argument .* of function|"
                 r"Process terminating)")
LEAK = re.compile(r"^==\d+== ([\d,]+) (?:\(([\d,]+) direct, [\d,]+ "
                  r"indirect\) )?bytes in [\d,]+ blocks are "
                  r"(definitely|indirectly) lost")
logs = sorted(glob.glob(os.path.join(sys.argv[1], "vg.*.log")))
errs = leaks = definite = indirect = 0
bad = []
for path in logs:
    e = n = 0
    with open(path, errors="replace") as f:
        for line in f:
            if ERR.match(line):
                e += 1
            m = LEAK.match(line)
            if m:
                n += 1
                b = int((m.group(2) or m.group(1)).replace(",", ""))
                if m.group(3) == "definitely":
                    definite += b
                else:
                    indirect += b
    errs += e
    leaks += n
    if e or n:
        bad.append(path)
sys.stderr.write("valgrind: %d daemon runs; memcheck errors: %d; leak "
                 "records: %d (definitely lost %d bytes, indirectly lost %d "
                 "bytes)\n" % (len(logs), errs, leaks, definite, indirect))
print(" ".join(bad))
PYEOF
)
echo "valgrind: logs and test output in $OUTDIR $KEEP_NOTE"
for l in $bad; do
	echo "---- $l"
	head -80 "$l"
done
if [ -n "$bad" ]; then
	exit 1
fi
if [ -n "$failed" ]; then
	echo "valgrind: tests that failed under valgrind:$failed"
	exit 2
fi
exit 0
