#!/bin/sh
# Build the Debian packages from a clean copy of the source tree, check
# what they contain, run lintian, print the result (make deb).
#   tests/deb.sh [-n] [-o OUTDIR] [SRCDIR]
# The copy: `git archive` of the work tree's tracked files (uncommitted
# changes included, untracked files not: they are listed), or a copy of
# SRCDIR without git.  The packages and lintian's report end up in OUTDIR
# (default ./deb).  Build dependencies and lintian are installed with
# apt-get when missing (-n: never; fail instead).  Exit status 0 when the
# packages built, contain what they should and lintian reports no error.
set -eu
outdir=$PWD/deb
noinstall=0
while getopts no: opt; do
	case $opt in
	n) noinstall=1 ;;
	o) outdir=$OPTARG ;;
	*) echo "usage: tests/deb.sh [-n] [-o OUTDIR] [SRCDIR]" >&2; exit 64 ;;
	esac
done
shift $((OPTIND - 1))
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
src=$(cd "${1:-$(dirname "$0")/..}" && pwd)
t0=$(date +%s)

say() { echo "deb: $*"; }
fail() { echo "deb: FAILED: $*" >&2; exit 1; }

# --- what the build needs ----------------------------------------------------
need_pkgs() {
	missing=""
	for p in dpkg-dev lintian; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
			missing="$missing $p"
	done
	(cd "$src" && dpkg-checkbuilddeps) >/dev/null 2>&1 || missing="$missing build-deps"
	[ -z "$missing" ] && return 0
	[ "$noinstall" -eq 0 ] || fail "missing:$missing (without -n, apt-get installs them)"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	say "installing:$missing"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
		--no-install-recommends dpkg-dev lintian >/dev/null
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get build-dep -y -qq "$src" >/dev/null
}
command -v dpkg-checkbuilddeps >/dev/null 2>&1 || [ "$noinstall" -eq 1 ] ||
	{ apt-get install -y -qq dpkg-dev >/dev/null 2>&1 || true; }
need_pkgs

# --- a clean copy --------------------------------------------------------------
version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
work=$(mktemp -d "${TMPDIR:-/tmp}/tgrunner-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
tree=$work/tgrunner-$version
mkdir -p "$tree"
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
	rev=$(git -C "$src" stash create 2>/dev/null || true)
	git -C "$src" archive --format=tar "${rev:-HEAD}" | tar -x -C "$tree"
	untracked=$(git -C "$src" ls-files --others --exclude-standard)
	[ -z "$untracked" ] || say "not in the copy (untracked):" $untracked
else
	(cd "$src" && tar -c --exclude=./.git --exclude='./build*' --exclude=./deb .) |
		tar -x -C "$tree"
fi

# --- build ---------------------------------------------------------------------
export DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-parallel=2}"
# a symbol added to (or gone from) libtgrunner-worker without its line in
# debian/libtgrunner-worker0.symbols fails the build instead of a warning
export DPKG_GENSYMBOLS_CHECK_LEVEL=4
say "dpkg-buildpackage -us -uc -b in $tree ($DEB_BUILD_OPTIONS)"
# the system's tools only (not a python3 or node of the user's PATH)
(cd "$tree" && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b) \
    >"$work/build.log" 2>&1 ||
	{ tail -60 "$work/build.log"; fail "dpkg-buildpackage (log above)"; }
t1=$(date +%s)
rm -rf "$outdir"
mkdir -p "$outdir"
cp "$work"/*.deb "$work"/*.changes "$work"/*.buildinfo "$work/build.log" "$outdir"/
cd "$outdir"

# --- what the packages contain -------------------------------------------------
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
ma=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
deb() { echo "$1_${version}_$2.deb"; }
for p in "tgrunnerd $arch" "tgrunner-relay $arch" "libtgrunner-worker0 $arch" \
    "libtgrunner-worker-dev $arch" "python3-tgrunner-worker all" \
    "node-tgrunner-worker all"; do
	set -- $p
	[ -f "$(deb "$1" "$2")" ] || fail "no package $1"
done
has() {	# package file: the package has this file
	dpkg-deb -c "$1" | awk '{ print $6 }' | grep -x "./$2" >/dev/null ||
		fail "$1 lacks /$2"
}
d=$(deb tgrunnerd "$arch")
for f in usr/sbin/tgrunnerd usr/bin/tgrunnerctl usr/bin/tgrunner-fakeapi \
    usr/libexec/tgrunner/echo-worker etc/tgrunner.conf \
    usr/share/doc/tgrunnerd/PROTOCOL.md usr/share/doc/tgrunnerd/JOURNAL.md \
    usr/share/doc/tgrunnerd/examples/tgrunner.conf \
    usr/share/man/man8/tgrunnerd.8.gz usr/share/man/man5/tgrunner.conf.5.gz; do
	has "$d" "$f"
done
dpkg-deb -c "$d" | grep '/systemd/system/tgrunnerd\.service$' >/dev/null || fail "$d: no unit"
dpkg-deb -c "$d" | grep '/systemd/system/tgrunnerd@\.service$' >/dev/null || fail "$d: no template unit"
dpkg-deb -f "$d" Depends | grep -q libtgrunner-worker0 || fail "$d: no shlibs dependency"
[ "$(dpkg-deb -I "$d" conffiles)" = /etc/tgrunner.conf ] || fail "$d: /etc/tgrunner.conf is not a conffile"
! dpkg-deb -c "$d" | grep -q 'tgrunner-relay' || fail "$d: has files of tgrunner-relay"
d=$(deb tgrunner-relay "$arch")
for f in usr/sbin/tgrunner-relay etc/tgrunner-relay.conf \
    usr/share/doc/tgrunner-relay/NATS.md \
    usr/share/doc/tgrunner-relay/examples/tgrunner-relay.conf \
    usr/share/doc/tgrunner-relay/README.Debian \
    usr/share/man/man8/tgrunner-relay.8.gz; do
	has "$d" "$f"
done
dpkg-deb -c "$d" | grep '/systemd/system/tgrunner-relay\.service$' >/dev/null || fail "$d: no unit"
dpkg-deb -f "$d" Depends | grep -q libnats || fail "$d: no shlibs dependency on libnats"
[ "$(dpkg-deb -I "$d" conffiles)" = /etc/tgrunner-relay.conf ] ||
	fail "$d: /etc/tgrunner-relay.conf is not a conffile"
d=$(deb libtgrunner-worker0 "$arch")
has "$d" "usr/lib/$ma/libtgrunner-worker.so.0"
dpkg-deb -I "$d" symbols | grep -q '^ tgw_run@Base' || fail "$d: no symbols file"
d=$(deb libtgrunner-worker-dev "$arch")
for f in usr/include/tgrunner-worker.h "usr/lib/$ma/libtgrunner-worker.so" \
    "usr/lib/$ma/pkgconfig/tgrunner-worker.pc"; do
	has "$d" "$f"
done
d=$(deb python3-tgrunner-worker all)
has "$d" usr/lib/python3/dist-packages/tgrunner_worker/__init__.py
has "$d" usr/lib/python3/dist-packages/tgrunner_worker/adapters/ptb.py
d=$(deb node-tgrunner-worker all)
for f in package.json index.js download.js adapters/index.js adapters/common.js \
    adapters/grammy.js adapters/telegraf.js; do
	has "$d" "usr/share/nodejs/tgrunner-worker/$f"
done

# unpacked side by side: the shipped configuration is valid as it is, and
# the libraries load
root=$work/root
for f in *.deb; do dpkg-deb -x "$f" "$root"; done
LD_LIBRARY_PATH=$root/usr/lib/$ma "$root/usr/sbin/tgrunnerd" -n -c "$root/etc/tgrunner.conf" ||
	fail "the shipped /etc/tgrunner.conf"
"$root/usr/sbin/tgrunner-relay" -n -c "$root/etc/tgrunner-relay.conf" ||
	fail "the shipped /etc/tgrunner-relay.conf"
PYTHONPATH=$root/usr/lib/python3/dist-packages \
    python3 -c 'import tgrunner_worker, tgrunner_worker.adapters.ptb' ||
	fail "python3-tgrunner-worker does not import"
if command -v node >/dev/null 2>&1; then
	node -e "const t = require('$root/usr/share/nodejs/tgrunner-worker');
	    t.adapters.grammy; t.adapters.telegraf" ||
		fail "node-tgrunner-worker does not load"
fi

# --- lintian -------------------------------------------------------------------
say "lintian"
set +e
lintian --info --display-info --pedantic --tag-display-limit 0 *.changes >lintian.txt 2>&1
lrc=$?
set -e
grep -v '^N:' lintian.txt || true	# the explanations stay in the file
t2=$(date +%s)
say "$(grep -c '^E:' lintian.txt) errors, $(grep -c '^W:' lintian.txt) warnings," \
	"$(grep -c '^I:' lintian.txt) info, $(grep -c '^P:' lintian.txt) pedantic" \
	"(lintian.txt); build $((t1 - t0)) s, all $((t2 - t0)) s"
[ "$lrc" -eq 0 ] || fail "lintian reported errors"
say "packages in $outdir:"
ls -1 "$outdir"/*.deb
