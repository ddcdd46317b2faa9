#!/usr/bin/env bash
# The CI job that builds the backend's and the frontend's images, pushes them to a registry
# and pins what it pushed, by digest, in the desired-state file; commit the result to deploy
# it (deploy.sh, or the workflow in github-actions-containers.yml, then runs reconcile).
#
#   push-images.sh VERSION
#
#   REGISTRY            where the images go, e.g. ghcr.io/acme or 123456789012.dkr.ecr.eu-west-1.amazonaws.com
#                       (images: $REGISTRY/choiros-backend:VERSION and $REGISTRY/choiros-frontend:VERSION)
#   REGISTRY_USER       who pushes (GHCR: the account; ECR: AWS)
#   REGISTRY_PASSWORD   its token (GHCR: GITHUB_TOKEN with packages: write; ECR: aws ecr get-login-password)
#   DESIRED_STATE       the file to pin them in (default: examples/ci/desired-state.containers.yaml)
#   IMAGE_RUNTIME_ROOT  the Debian root whose Python goes into the images (default: /)
#   REGISTRY_CERT_DIR   a folder with the CA of a registry with its own (test) CA (optional)
#
# The password goes into an auth file in a private temporary folder, never on a command line.
set -euo pipefail

version=$1
here=$(cd "$(dirname "$0")" && pwd)
app="$here/../app"
file=${DESIRED_STATE:-$here/desired-state.containers.yaml}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

python3 - "$out/auth.json" "${REGISTRY%%/*}" <<'PY'
import base64, json, os, sys
token = base64.b64encode(f"{os.environ['REGISTRY_USER']}:{os.environ['REGISTRY_PASSWORD']}".encode()).decode()
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
with os.fdopen(fd, "w") as fh:
    json.dump({"auths": {sys.argv[2]: {"auth": token}}}, fh)
PY
certs=()
if [ -n "${REGISTRY_CERT_DIR:-}" ]; then certs=(--dest-cert-dir "$REGISTRY_CERT_DIR"); fi

pins=()
for part in backend frontend; do
    repo="$REGISTRY/choiros-$part"
    tar=$(python3 "$app/build_image.py" "$version" --out "$out" --part "$part" \
        --runtime-root "${IMAGE_RUNTIME_ROOT:-/}" --docker-archive "$repo:$version" | cut -d' ' -f1)
    echo "== pushing $repo:$version"
    skopeo copy --quiet --dest-authfile "$out/auth.json" "${certs[@]}" --digestfile "$out/$part.digest" \
        "docker-archive:$tar" "docker://$repo:$version"
    pins+=("$part=$repo:$version@$(cat "$out/$part.digest")")
done
python3 "$here/pin_images.py" "$file" "$version" "${pins[@]}"
echo "== pinned in $file: ${pins[*]}"
