#!/usr/bin/env bash
# The pull request job: show what merging would do. Plans against the real host
# (`reconcile --once --dry-run --format markdown`: it only observes, nothing changes), and
# posts the plan on the pull request, or updates the plan posted before: what each action
# does and why, and the diff of every file it would write, secret values masked.
#
#   DEPLOY_SSH_KEY, DEPLOY_KNOWN_HOSTS, DESIRED_STATE, RECONCILE   as for deploy.sh
#   PR_NUMBER    the pull request to comment on; unset: only write the plan
#   PLAN_FILE    where the markdown goes (default: plan.md)
#   GH_TOKEN, GH_REPO                                              for `gh`, in the workflow
# The app's secrets (${DEPLOY_API_TOKEN}, $RECONCILER_AGE_IDENTITY for from_age: files) are
# needed as for a deploy: the plan compares every value, and prints none.
#
# Exits with reconcile's code, except that 2 (changes pending) is a plan, not a failure:
# 0 nothing or something to change, 1 bad input or the host unreachable (the comment says
# why), 3 the desired configuration is quarantined, 4 the host is paused.
set -euo pipefail

file=${DESIRED_STATE:-desired-state.yaml}
reconcile=${RECONCILE:-reconcile}
plan_file=${PLAN_FILE:-plan.md}
marker='<!-- reconcile plan -->'

ssh_dir=$(mktemp -d)
trap 'rm -rf "$ssh_dir"' EXIT
printf '%s\n' "$DEPLOY_SSH_KEY" > "$ssh_dir/key"
printf '%s\n' "$DEPLOY_KNOWN_HOSTS" > "$ssh_dir/known_hosts"
chmod 600 "$ssh_dir/key"

set +e
$reconcile --once --dry-run --format markdown -f "$file" -i "$ssh_dir/key" \
    --known-hosts "$ssh_dir/known_hosts" > "$ssh_dir/plan.md"
rc=$?
set -e
{
    echo "$marker"
    cat "$ssh_dir/plan.md"
    echo
    echo "<sub>plan of $(git rev-parse --short HEAD 2>/dev/null || echo 'this commit'), exit $rc; merging deploys it</sub>"
} > "$plan_file"
cat "$plan_file"

if [ -n "${PR_NUMBER:-}" ]; then
    # One comment per pull request, updated on every push: find ours by its marker.
    id=$(gh api "repos/{owner}/{repo}/issues/$PR_NUMBER/comments" --paginate \
        --jq "[.[] | select(.body | startswith(\"$marker\"))] | last | .id // empty")
    if [ -n "$id" ]; then
        gh api -X PATCH "repos/{owner}/{repo}/issues/comments/$id" -F "body=@$plan_file" > /dev/null
    else
        gh pr comment "$PR_NUMBER" --body-file "$plan_file"
    fi
fi

case $rc in
    0|2) exit 0 ;;
    *) exit "$rc" ;;
esac
