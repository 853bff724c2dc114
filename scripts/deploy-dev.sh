#!/usr/bin/env bash
# Deploys the dev stack (the demo blueprint unless Pulumi.dev.yaml names another) to this machine's
# Docker engine with Pulumi's local file backend, then prints the URL to open.
# usage: bash scripts/deploy-dev.sh [pulumi up args...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"

python_env requirements.txt
docker_engine
if ! command -v pulumi >/dev/null 2>&1; then
  cat >&2 <<'MSG'
The Pulumi CLI is not installed. Install it, then run this script again:
    curl -fsSL https://get.pulumi.com | sh        # installs to ~/.pulumi/bin
    export PATH="$HOME/.pulumi/bin:$PATH"
(or see https://www.pulumi.com/docs/install/). Meanwhile `python -m berth synth --stack dev`
shows what would be deployed, without Pulumi.
MSG
  exit 1
fi
export PULUMI_BACKEND_URL="file://$ROOT/.pulumi"
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-}"   # dev holds no given secrets; set one for real use
export PULUMI_SKIP_UPDATE_CHECK=true
mkdir -p "$ROOT/.pulumi"
"$VENV/bin/python" -m berth synth --stack dev --format tree >/dev/null   # bad config stops here, with one line
pulumi stack select --create dev >/dev/null

blueprint=$("$VENV/bin/python" -c 'import berth.settings.loader as l; print(l.from_stack_files("dev").get("blueprint", ""))')
if [ "$blueprint" = demo ]; then
  # The demo's public images, and its app built here from demo/app.
  PUBLIC=(postgres:16-alpine redis:7-alpine nginx:1.27-alpine)
  if timeout 60 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
    for image in "${PUBLIC[@]}"; do docker image inspect "$image" >/dev/null 2>&1 || docker pull -q "$image"; done
    log "docker build berth/demo:1 (demo/app)"
    DOCKER_BUILDKIT=0 docker build -q -t berth/demo:1 demo/app >/dev/null
  else
    # No registry (an offline machine): build every image from Debian packages on a debootstrap base,
    # as the engine tier does, and map the public names to them in this stack's config.
    log "no image registry reachable: building the demo's images locally from Debian packages"
    apt_install debootstrap
    python3 tests/engine/images/build.py postgres redis nginx demo
    docker tag berth-engine/demo:latest berth/demo:1
    for image in "${PUBLIC[@]}"; do
      pulumi config set --stack dev --path "berth:images[\"$image\"]" "berth-engine/${image%%:*}:latest"
    done
    log "Pulumi.dev.yaml now maps ${PUBLIC[*]} to local builds (berth:images); git checkout Pulumi.dev.yaml undoes it"
  fi
fi

pulumi install >/dev/null
pulumi up --yes --skip-preview --stack dev "$@"

url=$(pulumi stack output --stack dev urls --json | "$VENV/bin/python" -c 'import json,sys; print((json.load(sys.stdin) or [""])[0])')
echo
if [ "$blueprint" = demo ] && [ -n "$url" ]; then
  page=$(curl -fsSk --max-time 10 "$url/" || true)
  status=$(printf '%s' "$page" | "$VENV/bin/python" -c '
import html, re, sys
page = sys.stdin.read()
print("\n".join("  " + html.unescape(re.sub("<[^>]+>", "", m)) for m in re.findall(r"<li[^>]*>(.*?)</li>", page)))')
  cat <<MSG
The demo is up. Open $url/ in a browser (the certificate is self-signed: accept the warning).
You will see the berth demo page, served by the demo app behind nginx, saying what it reached:
${status:-  (the page did not answer yet: try again in a few seconds)}
Each reload adds a visit in PostgreSQL and a page view in Redis; both live on retained volumes.
Another system: pulumi config set --stack dev berth:blueprint praxifi (or databaseai, sentineliq,
ai-present-finder, webprometrics), then run this script again.
MSG
else
  echo "The dev stack is up${url:+ at $url/}."
fi
