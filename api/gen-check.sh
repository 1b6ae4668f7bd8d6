#!/bin/sh
# gen-check: fail if the generated code differs from what `make gen` makes.
# It generates in a copy of the tree, never in place: CI builds the images
# and runs the cluster suites beside `make test`, and `make gen` deletes and
# rewrites packages that a concurrent build would read half-written.
# Usage (from the repository root): api/gen-check.sh DIR... (the generated
# directories; every *.pb.go of the tree is compared too).
set -eu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
git ls-files -z --cached --others --exclude-standard | xargs -0 cp -P --parents -t "$tmp"
if ! ${MAKE:-make} -s -C "$tmp" gen BIN="$tmp/bin" >"$tmp/gen.log" 2>&1; then
	cat "$tmp/gen.log"
	echo "gen-check: make gen failed" >&2
	exit 1
fi
stale=$(
	for d in "$@"; do diff -rq "$d" "$tmp/$d" 2>&1 || true; done
	(find . -path ./bin -prune -o -path ./.git -prune -o -name '*.pb.go' -print
	 cd "$tmp" && find . -path ./bin -prune -o -name '*.pb.go' -print) | sort -u |
	while read -r f; do cmp -s "$f" "$tmp/$f" || echo "differs: $f"; done
)
if [ -n "$stale" ]; then
	echo "$stale"
	echo "generated code is stale: run make gen and commit" >&2
	exit 1
fi
