#!/bin/sh
# berth: the proxy's entrypoint in tls.mode letsencrypt (berth/plan/acme.py uploads it).
#
# nginx serves $BERTH_TLS_ACTIVE (key + chain in one file). At start that is the certificate certbot
# left on the shared volume ($BERTH_TLS_SOURCE), or the temporary self-signed one until there is one.
# A watcher compares the source with what is served every $BERTH_TLS_POLL seconds; when certbot has
# written a new one (one rename, so the file is always whole) it is checked with `nginx -t` and loaded
# with `nginx -s reload`: new workers take the new certificate, old ones finish their requests. No
# Docker socket is needed, and a certificate nginx refuses is logged and never served. POSIX sh:
# runs on the official image's busybox and on Debian's dash.
set -u
umask 077
src=$BERTH_TLS_SOURCE
active=$BERTH_TLS_ACTIVE
poll=${BERTH_TLS_POLL:-1}
# Options for `nginx -t` and `nginx -s reload` when the config is not the image's default (-p, -c).
opts=${BERTH_NGINX_OPTS:-}

say() { echo "berth-tls: $*" >&2; }

# Serve $1; keep what was served if nginx -t refuses the result.
serve() {
  cp "$1" "$active.new" || return 1
  [ -f "$active" ] && cp "$active" "$active.old"
  mv "$active.new" "$active"
  # shellcheck disable=SC2086
  if nginx $opts -t -q 2>"$active.test"; then
    return 0
  fi
  say "nginx refuses the certificate from $1, keeping the one it serves: $(tr '\n' ' ' <"$active.test")"
  cp "$1" "$active.refused"
  if [ -f "$active.old" ]; then mv "$active.old" "$active"; else cp "$BERTH_TLS_TEMPORARY" "$active"; fi
  return 1
}

if [ -s "$src" ] && serve "$src"; then
  say "serving the certificate from certbot ($src)"
else
  cp "$BERTH_TLS_TEMPORARY" "$active"
  say "serving the temporary certificate until certbot has one"
fi

watch() {
  while sleep "$poll"; do
    [ -s "$src" ] || continue
    cmp -s "$src" "$active" && continue
    [ -f "$active.refused" ] && cmp -s "$src" "$active.refused" && continue
    if serve "$src"; then
      # shellcheck disable=SC2086
      if nginx $opts -s reload 2>"$active.test"; then
        say "new certificate from certbot: nginx reloaded"
      else
        say "nginx -s reload failed: $(tr '\n' ' ' <"$active.test")"
      fi
    fi
  done
}

watch &
exec "$@"
