"""Backup: restic backups of the stack's data, run on a schedule by a long-running container.

Creates the repository password (pulumi-random), the repository volume on the host (retained), the
backup image (built on the host from the stack's own Postgres image, so pg_dump matches the server)
and the backup container on the data network, with every backed-up app volume mounted read-only.
"""

from __future__ import annotations

from dataclasses import replace

import pulumi
import pulumi_docker as docker

from berth.plan import backups as plan
from berth.plan.containers import docker_name, resolve_image
from berth.settings.loader import PROJECT_ROOT
from components.common import ContainerSpec, Placement, ServiceArgs, container, data_volume, password, upload

IMAGE_KEY = "berth-backup"
PASSWORD_LENGTH = 48


class Backup(pulumi.ComponentResource):
    """The backup container: scheduled `backup.sh` and `check.sh` runs, a healthcheck that shows a broken backup.

    The image is built from the stack's own Postgres image plus restic, rclone, redis-cli, curl and ssh:
    `pg_dump` must not be older than the server, and the server's own image has exactly its version
    on every platform (Debian or Alpine); a separate image would have to track every Postgres major.
    Secrets reach the container as uploaded files, never as its environment or command line.
    """

    def __init__(self, name: str, args: ServiceArgs, images: pulumi.Resource,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("berth:backup:Backup", name, None, opts)
        settings = args.settings
        section = plan.backups(settings)
        assert section is not None
        self.password = password(f"{name}-restic-password", self, length=PASSWORD_LENGTH)
        self.volume = data_volume(f"{name}-repository", settings, section.volume, self)
        base = resolve_image(plan.image_base(settings), settings.images)
        context = PROJECT_ROOT / plan.IMAGE_CONTEXT
        self.image = docker.Image(
            f"{name}-image",
            image_name=f"{docker_name(settings, 'backup')}:{plan.image_tag(context, base)}",
            build=docker.DockerBuildArgs(context=plan.IMAGE_CONTEXT, dockerfile=f"{plan.IMAGE_CONTEXT}/Dockerfile",
                                         args={"BASE": base}),
            skip_push=True,
            # The stack's Postgres image is pulled before the build starts FROM it (a base_image is
            # pulled by the build itself).
            opts=pulumi.ResourceOptions(parent=self, depends_on=[images]),
        )
        networks = [args.data_network] + ([args.edge_network] if section.repositories else [])
        self.container = container(f"{name}-container", replace(args, images={IMAGE_KEY: self.image.image_name}),
                                   ContainerSpec(
            image=IMAGE_KEY,
            placement=Placement(networks=networks, aliases=["backup"]),
            health=(plan.healthcheck_test(), section.healthcheck),
            resources=section.resources,
            volumes={plan.BACKUPS_DIR: self.volume.name},
            read_only_volumes={f"{plan.VOLUMES_DIR}/{volume}": args.volumes[volume]
                               for volume in plan.volumes(settings)},
            uploads=self._uploads(args),
            fixed_name=docker_name(settings, "backup"),
            grace=section.stop_grace,
            extra={"entrypoints": ["python3", "/usr/local/lib/berth/scheduler.py"]},
        ), parent=self, depends_on=[args.after[s] for s in ("postgres", "redis", "rabbitmq", "minio")
                       if s in args.after])
        self.register_outputs({"volume": self.volume.name, "repository_password": self.password})

    def _uploads(self, args: ServiceArgs) -> list[docker.ContainerUploadArgs]:
        settings = args.settings
        section = plan.backups(settings)
        assert section is not None
        files = [upload(path, content, secret=False) for path, content in sorted(plan.scripts(settings).items())]
        files.append(upload(plan.PASSWORD_FILE, self.password, secret=True))
        secrets = args.secrets
        pg_pw, redis_pw = secrets.get("postgres.password"), secrets.get("redis.password")
        # MinIO's keys (rclone's): only in this secret file, like the passwords.
        backs_up_minio = "minio" in plan.items(settings)
        minio_id = secrets.get("minio.access_key") if backs_up_minio else None
        minio_key = secrets.get("minio.secret_key") if backs_up_minio else None
        services = pulumi.Output.all(pg_pw, redis_pw, minio_id, minio_key).apply(
            lambda pws: plan.services_env(settings, pws[0], pws[1],
                                          (pws[2], pws[3]) if pws[2] is not None and pws[3] is not None else None))
        files.append(upload(plan.SERVICES_ENV, services, secret=True))
        if settings.rabbitmq is not None and "rabbitmq.admin_password" in secrets:
            user = settings.rabbitmq.admin_user
            files.append(upload(plan.CURLRC, secrets["rabbitmq.admin_password"].apply(lambda pw: plan.curlrc(user, pw)),
                                secret=True))
        for repo_name, repo in sorted(section.repositories.items()):
            if repo.env:
                env = {key: value.get_secret_value() for key, value in repo.env.items()}
                files.append(upload(f"{plan.SECRETS_DIR}/{repo_name}.env", plan.env_file(env), secret=True))
            if repo.ssh_key is not None and repo.known_hosts:
                key = repo.ssh_key.get_secret_value()
                files.append(upload(f"{plan.SECRETS_DIR}/{repo_name}.key", key if key.endswith("\n") else key + "\n",
                                    secret=True))
                files.append(upload(f"{plan.SECRETS_DIR}/{repo_name}.known_hosts", repo.known_hosts.strip() + "\n",
                                    secret=False))
        return files
