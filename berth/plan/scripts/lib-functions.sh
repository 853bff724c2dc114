STATE=/backups/state
mkdir -p "$STATE"
for key in /run/berth/*.key; do
  [ -e "$key" ] || continue
  (umask 077; mkdir -p /tmp/berth-ssh; cp "$key" /tmp/berth-ssh/)
done
log() { echo "berth-backup: $*"; }
now() { date -u +%s; }

# restic against one repository: rr NAME restic-args...; its credentials are read in a subshell.
rr() {
  repo_args "$1" || return 2
  name=$1; shift
  (
    if [ -r "/run/berth/$name.env" ]; then set -a; . "/run/berth/$name.env"; set +a; fi
    if [ -n "$REPO_OPTS" ]; then exec restic -r "$REPO_URL" -o "$REPO_OPTS" "$@"; fi
    exec restic -r "$REPO_URL" "$@"
  )
}

# The run lock: a scheduled run, an operator's `now`, a check and a restore never overlap.
locked() { exec 9>"$STATE/lock"; flock 9; }

ensure_repo() {  # NAME: create the repository on first use (off-host ones copy the local chunker)
  rr "$1" cat config >/dev/null 2>&1 && return 0
  if [ "$1" = local ]; then
    rr local init --repository-version 2 >/dev/null
  else
    rr "$1" init --repository-version 2 --copy-chunker-params --from-repo /backups/repo \
      --from-password-file "$RESTIC_PASSWORD_FILE" >/dev/null
  fi
}

human() { awk -v b="$1" 'BEGIN { split("B KiB MiB GiB TiB", u); i = 1; while (b >= 1024 && i < 5) { b /= 1024; i++ }
  printf (i == 1 ? "%d%s" : "%.1f%s"), b, u[i] }'; }

# snapshot ID of `latest` or a given ID, for one tag: snap REPO WHAT ID|latest
snap() {
  if [ "$3" != latest ]; then echo "$3"; return 0; fi
  id=$(rr "$1" snapshots --json --host "$HOST_TAG" --tag "berth,$2" --latest 1 | sed -n 's/.*"short_id":"\([0-9a-f]*\)".*/\1/p' | tail -n 1)
  [ -n "$id" ] || { echo "berth-backup: no snapshot of $2 in repository $1" >&2; return 1; }
  echo "$id"
}
