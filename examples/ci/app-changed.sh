#!/usr/bin/env bash
# Did a push change these paths? The containers workflow builds images when the app changed,
# by the diff of the push, whatever the commit messages say: a `git revert` of an app change
# changes the app (build), a `git revert` of a "Deploy ..." commit changes only the pins (no
# build, deploy the older pins).
#
#   app-changed.sh BEFORE AFTER PATH...
#
# Prints `changed=true` or `changed=false`, a line for $GITHUB_OUTPUT. BEFORE is where the
# branch pointed before the push (github.event.before); when the clone does not have it (all
# zeros for a new branch, or a forced push that dropped it) the answer is true: build.
set -euo pipefail

before=$1
after=$2
shift 2
if ! git cat-file -e "$before^{commit}" 2>/dev/null; then
    echo "changed=true"
    exit 0
fi
set +e
git diff --quiet "$before" "$after" -- "$@"
rc=$?
set -e
case $rc in
    0) echo "changed=false" ;;
    1) echo "changed=true" ;;
    *) exit "$rc" ;;                  # not a diff: AFTER is not a commit, not a repository
esac
