#!/usr/bin/env bash
# Deploys the dev stack to this machine's Docker engine with Pulumi's local file backend.
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
mkdir -p "$ROOT/.pulumi"
"$VENV/bin/python" -m berth synth --stack dev --format tree >/dev/null   # bad config stops here, with one line
pulumi install
pulumi stack select --create dev
exec pulumi up --yes --stack dev "$@"
