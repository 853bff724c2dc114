#!/bin/sh
# The official redis image's entrypoint: `redis-server ...` (or a first arg that is an option or a
# .conf file) runs as the redis user after fixing /data ownership. The command is exec'ed unchanged.
set -eu

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
	find . \! -user redis -exec chown redis '{}' +
	exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

# like the official image: a private umask unless one was chosen
if [ "$1" = redis-server ] && [ "$(umask)" = 0022 ]; then
	umask 0077
fi

exec "$@"
