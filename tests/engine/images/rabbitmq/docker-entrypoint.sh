#!/usr/bin/env bash
# The official rabbitmq image's entrypoint: rabbitmq* commands run as the rabbitmq user, the data
# directory is handed to it. The Erlang cookie lives in the data volume, so a replacement container
# on the same volume keeps the node's cookie.
set -euo pipefail

if [[ "$1" == rabbitmq* ]] && [ "$(id -u)" = 0 ]; then
	if [ "$1" = rabbitmq-server ]; then
		find /var/lib/rabbitmq \! -user rabbitmq -exec chown rabbitmq '{}' +
	fi
	exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "${BASH_SOURCE[0]}" "$@"
fi

cookie=/var/lib/rabbitmq/.erlang.cookie
if [ "$1" = rabbitmq-server ] && [ ! -e "$cookie" ]; then
	# created before the server starts, so a CLI health check run as root can never create it first
	(umask 077 && head -c 30 /dev/urandom | base64 -w0 >"$cookie")
	chmod 400 "$cookie"
fi

# if long and short hostnames differ, use long node names
if [ -z "${RABBITMQ_USE_LONGNAME:-}" ] && [ "$(hostname)" != "$(hostname -s)" ]; then
	export RABBITMQ_USE_LONGNAME=true
fi

exec "$@"
