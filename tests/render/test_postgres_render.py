"""berth's databases SQL run by a real PostgreSQL 15 (as the job's psql does), then isolation proven role by role."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import PG_BIN, PostgresCluster, postgres_cluster, run

from berth.plan.postgres import database_url, databases_sql, healthcheck_test, quote_ident, quote_literal
from berth.settings.services import PostgresSettings

# Seed 003: one PostgreSQL with five isolated databases, each with its own user.
SETTINGS = PostgresSettings.model_validate({
    "user": "postgres",
    "database": "app",
    "databases": {
        "reranking_service": {"owner": "reranking_user"},
        "fetch_service": {"owner": "fetch_user"},
        "stalking_service": {"owner": "stalking_user"},
        "chat_service": {"owner": "chat_user"},
        "gift_ideas_service": {"owner": "gift_ideas_user"},
    },
})
OWNERS = {name: db.owner for name, db in SETTINGS.databases.items()}
# Passwords that break naive quoting: quotes, backslashes, psql meta-commands, dollar quotes, unicode.
PASSWORDS = {
    "reranking_service": "it's a 'quoted' pw",
    "fetch_service": "back\\slash\\\\ and \\gexec",
    "stalking_service": 'dollar $$ ; DROP ROLE "postgres"; --',
    "chat_service": "ünïcødé ☃ pass:word@host/x?y#z%",
    "gift_ideas_service": "\\connect postgres\n;:var :'var'",
}
SUPERUSER_PASSWORD = "super'secret\\"
SYSTEM_DATABASES = ["app", "postgres", "template1"]


@pytest.fixture(scope="module")
def cluster():
    with postgres_cluster(SETTINGS.user, SUPERUSER_PASSWORD, SETTINGS.database) as running:
        # As the image does: psql as the superuser against its default database, stop at the first error.
        result = running.psql(databases_sql(SETTINGS, PASSWORDS), database=SETTINGS.database)
        assert result.returncode == 0, result.stderr
        yield running


def as_owner(cluster: PostgresCluster, sql: str, database: str, owner_db: str, password: str | None = None):
    """SQL over TCP with a password, as an application connects."""
    return cluster.psql(sql, database=database, user=OWNERS[owner_db], tcp=True,
                        password=PASSWORDS[owner_db] if password is None else password)


@pytest.mark.parametrize("name", sorted(OWNERS))
def test_owner_works_in_its_own_database(cluster, name):
    result = as_owner(cluster, "CREATE TABLE t (id int primary key, note text);"
                               "INSERT INTO t VALUES (1, current_user);"
                               "SELECT note FROM t; DROP TABLE t;", name, name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == OWNERS[name]


@pytest.mark.parametrize(("owner_db", "database"), [
    (owner_db, database)
    for owner_db in sorted(OWNERS)
    for database in sorted(OWNERS) + SYSTEM_DATABASES if database != owner_db
])
def test_owner_refused_on_every_other_database(cluster, owner_db, database):
    result = as_owner(cluster, "SELECT 1;", database, owner_db)
    assert result.returncode != 0
    assert f'permission denied for database "{database}"' in result.stderr
    assert "User does not have CONNECT privilege" in result.stderr


@pytest.mark.parametrize("name", sorted(OWNERS))
def test_wrong_password_refused(cluster, name):
    result = as_owner(cluster, "SELECT 1;", name, name, password=PASSWORDS[name] + "x")
    assert result.returncode != 0
    assert f'password authentication failed for user "{OWNERS[name]}"' in result.stderr


def test_catalog_shows_owners_and_no_public_access(cluster):
    query = """SELECT json_object_agg(datname, json_build_object(
                 'owner', pg_get_userbyid(datdba),
                 'public_connect', has_database_privilege('public', datname, 'CONNECT'),
                 'public_temp', has_database_privilege('public', datname, 'TEMPORARY')))
               FROM pg_database WHERE datname <> 'template0';"""
    result = cluster.psql(query, database="postgres")
    assert result.returncode == 0, result.stderr
    catalog = json.loads(result.stdout)
    assert set(catalog) == set(OWNERS) | set(SYSTEM_DATABASES)
    for name, info in catalog.items():
        assert (info["public_connect"], info["public_temp"]) == (False, False), name
        assert info["owner"] == OWNERS.get(name, "postgres")


@pytest.mark.parametrize("name", sorted(OWNERS))
def test_public_schema_owned_by_owner_and_closed_to_public(cluster, name):
    query = ("SELECT pg_get_userbyid(nspowner), has_schema_privilege('public', 'public', 'USAGE'),"
             " has_schema_privilege('public', 'public', 'CREATE') FROM pg_namespace WHERE nspname = 'public';")
    result = cluster.psql(query, database=name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{OWNERS[name]}|f|f"


def test_schema_stays_closed_even_if_connect_is_granted_by_mistake(cluster):
    victim, intruder = "chat_service", "fetch_service"
    grant = f"GRANT CONNECT ON DATABASE chat_service TO {OWNERS[intruder]};"
    assert cluster.psql(grant, database="postgres").returncode == 0
    try:
        setup = as_owner(cluster, "CREATE TABLE secrets (v text); INSERT INTO secrets VALUES ('x');", victim, victim)
        assert setup.returncode == 0, setup.stderr
        for sql in ("SELECT * FROM public.secrets;", "CREATE TABLE public.planted (v text);"):
            result = as_owner(cluster, sql, victim, intruder)
            assert result.returncode != 0
            assert "permission denied for schema public" in result.stderr
    finally:
        as_owner(cluster, "DROP TABLE IF EXISTS secrets;", victim, victim)
        cluster.psql(grant.replace("GRANT", "REVOKE").replace(" TO ", " FROM "), database="postgres")


def test_app_roles_are_not_privileged(cluster):
    result = cluster.psql("SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles WHERE rolname LIKE '%_user'"
                          " AND rolcanlogin AND NOT (rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication);",
                          database="postgres")
    assert result.stdout.strip() == ",".join(sorted(OWNERS.values()))


def test_rerun_is_harmless_and_converges_on_new_passwords(cluster):
    assert cluster.psql(databases_sql(SETTINGS, PASSWORDS), database="app").returncode == 0
    changed = {**PASSWORDS, "chat_service": "rotated ' \\ pw"}
    try:
        result = cluster.psql(databases_sql(SETTINGS, changed), database="app")
        assert result.returncode == 0, result.stderr
        assert as_owner(cluster, "SELECT 1;", "chat_service", "chat_service", password=changed["chat_service"]
                        ).returncode == 0
        assert as_owner(cluster, "SELECT 1;", "chat_service", "chat_service").returncode != 0
    finally:
        assert cluster.psql(databases_sql(SETTINGS, PASSWORDS), database="app").returncode == 0
    assert as_owner(cluster, "SELECT 1;", "chat_service", "chat_service").returncode == 0


@pytest.mark.parametrize("name", sorted(OWNERS))
def test_database_url_is_understood_by_libpq(cluster, name):
    url = database_url(OWNERS[name], PASSWORDS[name], "127.0.0.1", cluster.port, name)
    result = run([str(PG_BIN / "psql"), "-X", "-A", "-t", "-d", url, "-c", "SELECT current_user, current_database()"],
                 env={"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "10"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{OWNERS[name]}|{name}"


def test_healthcheck_command_reports_ready(cluster):
    argv = healthcheck_test(SETTINGS)[1:]
    argv = [str(PG_BIN / argv[0])] + [str(cluster.port) if arg == "5432" else arg for arg in argv[1:]]
    assert run(argv, env={"PGPASSWORD": SUPERUSER_PASSWORD}).returncode == 0
    closed = [str(cluster.port + 1) if arg == str(cluster.port) else arg for arg in argv]
    assert run(closed).returncode != 0


PG_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)
REAL = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@REAL
@given(text=PG_TEXT)
def test_quote_literal_against_the_server(cluster, text):
    # Compared on the server with the text sent as hex, so no output decoding (\r, newlines) is involved.
    expected = f"convert_from(decode('{text.encode().hex()}', 'hex'), 'UTF8')"
    result = cluster.psql(f"SELECT {quote_literal(text)} = {expected};", database="postgres")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "t\n"


@REAL
@given(name=PG_TEXT.filter(lambda s: 0 < len(s.encode()) <= 63))
def test_quote_ident_against_the_server(cluster, name):
    # Identifiers are truncated at 63 bytes (NAMEDATALEN), hence the filter; the row's JSON keys are column
    # names (x.* is the whole row even when the column itself is called x).
    result = cluster.psql(f"SELECT to_json(x.*) FROM (SELECT 1 AS {quote_ident(name)}) x;", database="postgres")
    assert result.returncode == 0, result.stderr
    assert list(json.loads(result.stdout)) == [name]



def test_an_owner_changed_in_settings_takes_over_the_data_and_the_old_role_reaches_nothing():
    before = PostgresSettings.model_validate({"databases": {"notes": {"owner": "notes_old"}}})
    after = PostgresSettings.model_validate({"databases": {"notes": {"owner": "notes_new"}}})
    with postgres_cluster("postgres", SUPERUSER_PASSWORD, "app") as pg:
        def as_role(sql: str, user: str, password: str):
            return pg.psql(sql, database="notes", user=user, tcp=True, password=password)

        assert pg.psql(databases_sql(before, {"notes": "old-pw"}), database="app").returncode == 0
        made = as_role("CREATE TABLE notes (body text); INSERT INTO notes VALUES ('kept');", "notes_old", "old-pw")
        assert made.returncode == 0, made.stderr
        for _ in range(2):  # the change, then a run with nothing left to change
            result = pg.psql(databases_sql(after, {"notes": "new-pw"}), database="app")
            assert result.returncode == 0, result.stderr
        used = as_role("INSERT INTO notes VALUES ('new'); SELECT string_agg(body, ',' ORDER BY body) FROM notes;",
                       "notes_new", "new-pw")
        assert used.returncode == 0 and used.stdout.strip().endswith("kept,new"), used.stderr
        refused = as_role("SELECT 1;", "notes_old", "old-pw")
        assert refused.returncode != 0 and "permission denied for database" in refused.stderr
        owners = pg.psql("SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables WHERE schemaname = 'public';",
                         database="notes")
        assert owners.stdout.strip().endswith("notes_new"), owners.stdout
