#!/usr/bin/env bash
# Build SQLite's own sqlite3_rsync (SQLite >= 3.47, tool/sqlite3_rsync.c) for the benches' anchor.
#
#     bench/build_sqlite3_rsync.sh [--force] [--dest DIR]
#
# The benches (bench_cost.py, bench_first_pull.py) compare our pulls with sqlite3_rsync measured in
# the same run. Debian 12 ships SQLite 3.40 and no sqlite3_rsync, so this script fetches the source
# package of a newer Debian suite (SQLITE_RSYNC_SUITE, default sid) with apt's ordinary client from
# the Debian mirror this machine already uses (apt checks the files against the suite's signed
# index), builds SQLite's amalgamation from it and links sqlite3_rsync statically against it, as
# SQLite's own main.mk does (`make sqlite3_rsync`). Nothing of SQLite's is kept in the repository.
#
# Installs DIR/sqlite3_rsync (default: <repo>/var/bin, which git ignores) and says so; run again,
# it does nothing while that binary runs (--force rebuilds). Needs root (apt's private lists and
# cache live under <repo>/var/build), a C compiler and make (apt-get install build-essential).
# Never part of CI or of the tests: the benches report "not measured" when the binary is absent.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dest="$repo/var/bin"
force=0
suite=${SQLITE_RSYNC_SUITE:-sid}
while [ $# -gt 0 ]; do
    case "$1" in
        --force) force=1 ;;
        --dest) dest=$2; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build_sqlite3_rsync: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
target="$dest/sqlite3_rsync"

fail() { echo "build_sqlite3_rsync: cannot build sqlite3_rsync: $*" >&2; exit 1; }

if [ "$force" = 0 ] && [ -x "$target" ] && "$target" --version >/dev/null 2>&1; then
    echo "build_sqlite3_rsync: already built: $target ($(cat "$target.version" 2>/dev/null || "$target" --version))"
    exit 0
fi

[ "$(id -u)" = 0 ] || fail "needs root for apt-get (private lists under var/build)"
for tool in apt-get apt-cache cc make tar xz; do
    command -v "$tool" >/dev/null || fail "'$tool' is missing (apt-get install build-essential xz-utils)"
done

build="$repo/var/build/sqlite3_rsync"
apt_dir="$build/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$build/src"
# The Debian mirror apt is already set up with (its first non-security URI), unless SQLITE_RSYNC_MIRROR says.
mirror=${SQLITE_RSYNC_MIRROR:-$( { sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null
    sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) .*/\2/p' /etc/apt/sources.list 2>/dev/null || true; } \
    | tr ' ' '\n' | grep -v -e security -e '^$' | head -1 || true)}
[ -n "$mirror" ] || fail "no Debian mirror in apt's sources (set SQLITE_RSYNC_MIRROR)"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" > "$apt_dir/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
          -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache")

echo "build_sqlite3_rsync: reading Debian $suite's source index (apt-get update, private lists)"
apt-get "${apt_opts[@]}" -q update >"$build/apt-update.log" 2>&1 \
    || fail "apt-get update of Debian $suite's sources failed (see $build/apt-update.log)"
version=$(apt-cache "${apt_opts[@]}" showsrc sqlite3 2>/dev/null | sed -n 's/^Version: //p' | sort -V | tail -1)
[ -n "$version" ] || fail "Debian $suite lists no sqlite3 source package"
upstream=${version%-*}
upstream=${upstream#*:}
if [ "$(printf '%s\n3.47.0\n' "$upstream" | sort -V | head -1)" != 3.47.0 ]; then
    fail "Debian $suite has SQLite $upstream; sqlite3_rsync needs 3.47 or newer (try SQLITE_RSYNC_SUITE=sid)"
fi

cd "$build/src"
if [ ! -f "sqlite3_$upstream.orig.tar.xz" ]; then
    echo "build_sqlite3_rsync: downloading the source package sqlite3 $version"
    apt-get "${apt_opts[@]}" -q source --download-only "sqlite3=$version" >"$build/apt-source.log" 2>&1 \
        || fail "apt-get source sqlite3=$version failed (see $build/apt-source.log)"
fi
tree="$build/src/sqlite3-$upstream"
rm -rf "$tree"
tar -xJf "sqlite3_$upstream.orig.tar.xz"
[ -f "$tree/tool/sqlite3_rsync.c" ] || [ -f "$tree/tool/sqlite3-rsync.c" ] \
    || fail "the source of SQLite $upstream has no tool/sqlite3_rsync.c"

echo "build_sqlite3_rsync: building SQLite $upstream's amalgamation and sqlite3_rsync (about a minute)"
(cd "$tree" && ./configure --disable-tcl >"$build/configure.log" 2>&1) \
    || fail "configure failed (see $build/configure.log)"
(cd "$tree" && make sqlite3_rsync >"$build/make.log" 2>&1) || fail "make sqlite3_rsync failed (see $build/make.log)"
"$tree/sqlite3_rsync" --version >/dev/null || fail "the built sqlite3_rsync does not run"

mkdir -p "$dest"
install -m 0755 "$tree/sqlite3_rsync" "$target.new"
mv -f "$target.new" "$target"
echo "SQLite $upstream (Debian $suite source $version), $("$target" --version)" > "$target.version"
rm -rf "$tree"
echo "build_sqlite3_rsync: installed $target: $(cat "$target.version")"
