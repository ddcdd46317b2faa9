#!/usr/bin/env bash
# The CI deploy job: build the release desired-state.yaml names, show the plan, deploy it.
# Bump release.version in a commit to deploy; `git revert` it to roll back.
#
#   DEPLOY_SSH_KEY       private key allowed to log in to the target (a CI secret)
#   DEPLOY_KNOWN_HOSTS   the target's pinned host key line(s), e.g. from `ssh-keyscan HOST`
#                        checked once by a person (a CI variable); an unknown or changed key fails
#   DESIRED_STATE        the desired-state file (default: desired-state.yaml)
#   BUILD                command that builds a version into the path desired-state.yaml names
#                        (default: the example app's build)
#   RECONCILE            how to run the reconciler (default: reconcile)
# Secrets the app needs are passed as environment variables and referenced as ${NAME} in
# desired-state.yaml; they never appear in the plan, the logs or the host's history.
set -euo pipefail

file=${DESIRED_STATE:-desired-state.yaml}
reconcile=${RECONCILE:-reconcile}
build=${BUILD:-python3 examples/app/build.py}

ssh_dir=$(mktemp -d)
trap 'rm -rf "$ssh_dir"' EXIT
printf '%s\n' "$DEPLOY_SSH_KEY" > "$ssh_dir/key"
printf '%s\n' "$DEPLOY_KNOWN_HOSTS" > "$ssh_dir/known_hosts"
chmod 600 "$ssh_dir/key"
ssh=(-i "$ssh_dir/key" --known-hosts "$ssh_dir/known_hosts")

# The file is checked before anything is built or touched (exit 1 with every problem listed):
# --offline first, since the release it names is built below; then again once it is built, the
# artifact, what is inside it and the secrets included.
# Reproducible builds: file times come from the commit, so the same commit builds the same
# bytes (and sha256), and a new commit gives the frontend's files new times (so new ETags).
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
# The file is checked before anything is built (offline: the artifact does not exist yet), and
# an invalid one prints its problems, each at its file:line:column.
$reconcile validate --offline -f "$file" >&2 || exit 1
version=$($reconcile validate --offline -f "$file" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["version"])')
echo "== building release $version"
$build "$version"
$reconcile validate -f "$file"

echo "== plan"
set +e
$reconcile --once --dry-run -f "$file" "${ssh[@]}"
rc=$?
set -e
case $rc in
    0) echo "nothing to deploy"; exit 0 ;;
    2) ;;                                   # changes pending
    *) exit "$rc" ;;
esac

echo "== deploy"
$reconcile --once -f "$file" "${ssh[@]}" --lock-timeout 300
