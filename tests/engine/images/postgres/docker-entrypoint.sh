#!/usr/bin/env bash
# The official postgres image's entrypoint contract, for Debian's postgresql package:
#   POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_USER (postgres),
#   POSTGRES_DB ($POSTGRES_USER), POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD (scram-sha-256);
#   each of these may instead be given as <VAR>_FILE (read from that file, e.g. a secret).
# On first start (empty $PGDATA) it runs initdb, then /docker-entrypoint-initdb.d/*.sql, *.sql.gz
# and *.sh (executed if executable, else sourced) as the superuser against POSTGRES_DB, with a
# temporary server that listens on the unix socket only.
set -Eeuo pipefail

# file_env VAR [DEFAULT]: VAR from $VAR or from the file named by $VAR_FILE (not both)
file_env() {
	local var=$1 file_var="${1}_FILE" def=${2:-} val
	if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
		echo >&2 "error: both $var and $file_var are set (but are exclusive)"
		exit 1
	fi
	val=$def
	if [ -n "${!var:-}" ]; then
		val=${!var}
	elif [ -n "${!file_var:-}" ]; then
		val=$(<"${!file_var}")
	fi
	export "$var=$val"
	unset "$file_var"
}

setup_env() {
	file_env POSTGRES_PASSWORD
	file_env POSTGRES_USER postgres
	file_env POSTGRES_DB "$POSTGRES_USER"
	file_env POSTGRES_INITDB_ARGS
	: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
	export POSTGRES_HOST_AUTH_METHOD
}

init_database() {
	if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
		echo >&2 "error: database is uninitialized and superuser password is not specified."
		echo >&2 "       Set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE), or POSTGRES_HOST_AUTH_METHOD=trust."
		exit 1
	fi
	# like the official image: trust on the socket and loopback, password from everywhere else
	# shellcheck disable=SC2086
	initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
		--encoding=UTF8 --locale=C.UTF-8 $POSTGRES_INITDB_ARGS
	printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"
	printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"

	# temporary server: socket only, so TCP health checks stay red until the real server is up
	set -- "$@" -c listen_addresses='' -p "${PGPORT:-5432}"
	PGUSER=$POSTGRES_USER pg_ctl -D "$PGDATA" -o "$(printf '%q ' "$@")" -w start

	local psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
	if [ "$POSTGRES_DB" != postgres ]; then
		"${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<-'SQL'
			CREATE DATABASE :"db" ;
		SQL
	fi
	psql+=(--dbname "$POSTGRES_DB")
	local f
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
			*.sh)
				if [ -x "$f" ]; then
					echo "$0: running $f"; "$f"
				else
					echo "$0: sourcing $f"; . "$f"
				fi ;;
			*.sql) echo "$0: running $f"; "${psql[@]}" -f "$f" ;;
			*.sql.gz) echo "$0: running $f"; gunzip -c "$f" | "${psql[@]}" ;;
			*) [ "$f" = '/docker-entrypoint-initdb.d/*' ] || echo "$0: ignoring $f" ;;
		esac
	done

	PGUSER=$POSTGRES_USER pg_ctl -D "$PGDATA" -m fast -w stop
	echo
	echo 'PostgreSQL init process complete; ready for start up.'
	echo
}

# `docker run postgres -c foo=bar` means `postgres -c foo=bar`
if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi

if [ "$1" = postgres ]; then
	if [ "$(id -u)" = 0 ]; then
		mkdir -p "$PGDATA" /var/run/postgresql
		chown -R postgres:postgres "$PGDATA" /var/run/postgresql
		chmod 700 "$PGDATA"
		exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
	fi
	setup_env
	if [ ! -s "$PGDATA/PG_VERSION" ]; then
		shift
		init_database "$@"
		set -- postgres "$@"
	else
		echo
		echo 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
		echo
	fi
fi

exec "$@"
