"""Postgres: a data volume, generated passwords, the container, and a job that provisions isolated databases."""

from __future__ import annotations

import pulumi

from berth.plan import postgres as plan
from berth.plan.containers import docker_name
from components.common import (
    ContainerSpec,
    Placement,
    ServiceArgs,
    container,
    data_volume,
    password,
    setup_job,
    upload,
)

PORT = 5432
DATA_DIR = "/var/lib/postgresql/data"
DATABASES_SQL = "/tmp/berth-databases.sql"


class Postgres(pulumi.ComponentResource):
    """PostgreSQL on the data network: the superuser, one owner role per database, and their URLs as secrets.

    The databases are provisioned by a one-shot psql job once the server is healthy, not by the
    image's init scripts (those run only on an empty volume): a database added to settings, or a
    password changed, reaches a live cluster on the next `pulumi up`. The script converges.
    """

    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("berth:data:Postgres", name, None, opts)
        settings = args.settings
        pg = settings.postgres
        assert pg is not None
        self.volume = data_volume(f"{name}-data", settings, pg.volume, self)
        self.password = password(f"{name}-password", self, pg.password)
        self.url = _url(pg.user, self.password, pg.database)
        self.database_passwords = {db: password(f"{name}-{db}-password", self, spec.password)
                                   for db, spec in sorted(pg.databases.items())}
        self.database_urls = {db: _url(spec.owner or db, self.database_passwords[db], db)
                              for db, spec in pg.databases.items()}
        self.container = container(f"{name}-container", args, ContainerSpec(
            image=pg.image,
            placement=Placement(networks=[args.data_network], aliases=["postgres"]),
            env={"POSTGRES_USER": pg.user, "POSTGRES_DB": pg.database, "PGDATA": DATA_DIR},
            # The superuser's password is made true at every start (plan.START_SCRIPT), so a stack
            # whose state was lost comes back on its retained volume, and rotation works.
            command=["postgres"],
            secret_env={"POSTGRES_PASSWORD": self.password},
            health=(plan.healthcheck_test(pg), pg.healthcheck),
            resources=pg.resources,
            volumes={DATA_DIR: self.volume.name},
            uploads=[upload(plan.START_SCRIPT_PATH, plan.START_SCRIPT, secret=False)],
            fixed_name=docker_name(settings, "postgres"),
            grace=pg.stop_grace,
            extra={"stop_signal": "SIGINT",  # smart shutdown: finish sessions, then checkpoint
                   "entrypoints": ["/bin/sh", plan.START_SCRIPT_PATH]},
        ), parent=self)
        self.gate: pulumi.Output[str] | None = None
        if pg.databases:
            sql = pulumi.Output.all(**self.database_passwords).apply(lambda pws: plan.databases_sql(pg, pws))
            self.provision, self.gate = setup_job(
                f"{name}-databases", args, self, self.container, ["psql"],
                image=pg.image, command=["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", DATABASES_SQL],
                env={"PGHOST": "postgres", "PGPORT": str(PORT), "PGUSER": pg.user, "PGDATABASE": pg.database,
                     "PGCONNECT_TIMEOUT": "10"},
                secret_env={"PGPASSWORD": self.password}, uploads=[upload(DATABASES_SQL, sql, secret=True)])
        # What workloads may reference, by the names Settings.secret_refs() allows.
        self.refs = {"postgres.password": self.password, "postgres.url": self.url}
        for db in sorted(pg.databases):
            self.refs[f"postgres.databases.{db}.password"] = self.database_passwords[db]
            self.refs[f"postgres.databases.{db}.url"] = self.database_urls[db]
        self.register_outputs({"volume": self.volume.name, "url": self.url})


def _url(user: str, secret: pulumi.Output[str], database: str) -> pulumi.Output[str]:
    return pulumi.Output.secret(secret.apply(lambda pw: plan.database_url(user, pw, "postgres", PORT, database)))
