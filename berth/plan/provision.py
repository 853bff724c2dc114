"""Host provisioning as POSIX-sh scripts, one per step, rendered from the settings.

Every script is idempotent: it compares before it writes, installs only what is missing, restarts
a service only when its configuration changed, and ends with one line saying what it changed, or
``unchanged``. Every value from the settings is shell-quoted. Services are driven by ``systemctl``
when PID 1 is systemd (``/run/systemd/system``) and by ``service`` (the init scripts) otherwise.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from datetime import timedelta

from berth.settings import Settings
from berth.settings.host import HostSettings
from berth.settings.provision import (
    DAEMON_LOG_MAX_FILE,
    DAEMON_LOG_MAX_SIZE,
    ELASTICSEARCH_MAX_MAP_COUNT,
    ProvisionSettings,
    SshConnection,
    Target,
    proxy_ports_of,
    target,
)

# The order the steps run in; each waits for the one before (apt takes a lock, and the deploy user
# needs the docker group, the firewall Docker's chains).
STEPS = ("sysctls", "docker", "deploy_user", "ssh_hardening", "firewall", "fail2ban", "upgrades")
SYSCTL_FILE = "/etc/sysctl.d/90-berth.conf"
DAEMON_JSON = "/etc/docker/daemon.json"
SSHD_DROP_IN = "/etc/ssh/sshd_config.d/00-berth.conf"  # sshd keeps the first value it reads: sort first
JAIL_FILE = "/etc/fail2ban/jail.d/berth.local"
UFW_AFTER_RULES = "/etc/ufw/after.rules"
UPGRADES_FILE = "/etc/apt/apt.conf.d/52berth-unattended-upgrades"
PERIODIC_FILE = "/etc/apt/apt.conf.d/20auto-upgrades"
SUMMARY = "berth-provision"
# Why the proxy gets no fail2ban jail of its own (README, and the fail2ban script's comment).
NO_PROXY_JAIL = ("the proxy logs through Docker's log driver: a json-file path carries the container id, which "
                 "changes at every replacement, a fresh host has none yet (fail2ban refuses to start a jail "
                 "without a log file), and its rate-limit rejections are already answered by nginx with 429/503")

q = shlex.quote


@dataclass(frozen=True)
class Script:
    """One step's script and its content hash (part of the remote command, so a change re-runs it)."""

    step: str
    text: str

    @property
    def digest(self) -> str:
        """The first 16 hex digits of the script's sha256."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


def scripts(settings: Settings) -> list[Script]:
    """The enabled steps' scripts in run order; empty when provisioning is off."""
    provision = settings.host.provision
    if not provision.enabled:
        return []
    where = target(settings.host.url)
    renderers = {
        "sysctls": lambda: _sysctls(sysctl_values(settings)) if sysctl_values(settings) else None,
        "docker": lambda: _docker(provision),
        "deploy_user": lambda: _deploy_user(provision, where),
        "ssh_hardening": lambda: _ssh_hardening(provision, where),
        "firewall": lambda: _firewall(firewall_rules(settings)),
        "fail2ban": lambda: _fail2ban(provision, where),
        "upgrades": lambda: _upgrades(provision),
    }
    rendered = []
    for step in STEPS:
        if getattr(provision, step).enabled and (body := renderers[step]()) is not None:
            rendered.append(Script(step, _PRELUDE.replace("@STEP@", q(step)) + body + "finish\n"))
    return rendered


def remote_command(script: Script, ssh: SshConnection) -> str:
    """The command pulumi-command runs, the script on stdin.

    The script's hash is in the command itself: a changed script is a changed ``create``, which
    pulumi-command runs again as an update. ``triggers`` would replace the resource on every change
    instead (pulumi/pulumi-command#855).
    """
    return f": {SUMMARY} {script.step} sha256={script.digest}; {_runner(ssh)}"


def remote_stdin(script: Script, ssh: SshConnection) -> str:
    """What the command reads: the sudo password's line first when there is one, then the script."""
    if ssh.sudo_password is not None:
        return ssh.sudo_password.get_secret_value() + "\n" + script.text
    return script.text


def _runner(ssh: SshConnection) -> str:
    if ssh.user == "root":
        return "sh -s"
    if ssh.sudo_password is None:
        return "sudo -n sh -s"
    # The password goes to sudo through a pipe (never argv); the script through a private temp file,
    # so a sudo that needs no password cannot run the password's line as a command.
    return ("sh -c 'IFS= read -r pw; t=$(mktemp); cat >\"$t\"; printf \"%s\\n\" \"$pw\" | "
            "sudo -S -k -p \"\" sh \"$t\"; rc=$?; rm -f \"$t\"; exit $rc'")


def docker_ssh_opts(where: Target, host_key: str | None) -> list[str]:
    """Ssh options of the docker provider: only the configured host key is trusted, nothing learned."""
    if host_key is None:
        return ["-o", "StrictHostKeyChecking=yes"]
    line = f"{_known_hosts_name(where)} {host_key}"
    return ["-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", f"KnownHostsCommand=/bin/echo {line}"]


def provider_ssh_opts(host: HostSettings) -> list[str]:
    """Every ssh option the docker provider runs with (the preflight's ssh uses the very same).

    ssh keeps the first value of an option: on a provisioned host the verified host key comes before
    the user's own options (ssh_opts, and ssh_key as -i).
    """
    verified = docker_ssh_opts(target(host.url), host.provision.ssh.host_key) if host.provision.enabled else []
    return [*verified, *host.ssh_args]


def _known_hosts_name(where: Target) -> str:
    return where.host if where.port == 22 else f"[{where.host}]:{where.port}"


# -- derived values ------------------------------------------------------------------------------


def sysctl_values(settings: Settings) -> dict[str, str]:
    """Kernel settings: vm.max_map_count for Elasticsearch, then the configured ones (sorted)."""
    values = {}
    if settings.service("elasticsearch"):
        values["vm.max_map_count"] = str(ELASTICSEARCH_MAX_MAP_COUNT)
    values.update(settings.host.provision.sysctls.values)
    return dict(sorted(values.items()))


@dataclass(frozen=True)
class FirewallRules:
    """What UFW allows in: the SSH port, the web ports, the extras; Docker-published ones obey it too."""

    ssh_port: int
    tcp: tuple[int, ...]
    udp: tuple[int, ...]

    @property
    def ufw_rules(self) -> list[str]:
        """The rules as `ufw show added` lists them."""
        return [f"ufw allow {port}/tcp" for port in (self.ssh_port, *self.tcp)] + \
               [f"ufw allow {port}/udp" for port in self.udp]


def firewall_rules(settings: Settings) -> FirewallRules:
    """The SSH port, the proxy's ports (80/443 without a proxy) and the configured extras."""
    firewall = settings.host.provision.firewall
    web = sorted(proxy_ports_of(settings))
    return FirewallRules(target(settings.host.url).port, tuple(web + list(firewall.allow_tcp)),
                         tuple(firewall.allow_udp))


def daemon_json() -> str:
    """The engine's configuration: containers outlive a daemon restart, logs rotate, no TCP socket."""
    config = {"live-restore": True, "log-driver": "json-file",
              "log-opts": {"max-file": str(DAEMON_LOG_MAX_FILE), "max-size": DAEMON_LOG_MAX_SIZE}}
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def _seconds(value: timedelta) -> int:
    return int(value.total_seconds())


# -- the scripts ---------------------------------------------------------------------------------


_PRELUDE = r"""#!/bin/sh
# berth host provisioning, step @STEP@ (rendered by berth/plan/provision.py; safe to run again)
set -eu
umask 022
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
STEP=@STEP@
CHANGES=''
changed() { CHANGES="${CHANGES:+$CHANGES; }$1"; }
fail() { echo "$STEP: $*" >&2; exit 1; }
has_systemd() { [ -d /run/systemd/system ]; }
service_do() { if has_systemd; then systemctl "$1" "$2"; else service "$2" "$1"; fi; }
is_running() {
  if has_systemd; then systemctl is-active --quiet "$1"; else service "$1" status >/dev/null 2>&1; fi
}
# ensure_running NAME: started now, and at boot where systemd decides that
ensure_running() {
  if has_systemd && ! systemctl is-enabled --quiet "$1" 2>/dev/null; then
    systemctl enable --quiet "$1"; changed "enabled $1"
  fi
  if ! is_running "$1"; then service_do start "$1"; changed "started $1"; fi
}
# put_file PATH MODE CONTENT: replaced only when content or mode differ; WROTE=1 when it was
put_file() {
  WROTE=0
  if [ -f "$1" ] && [ "$(stat -c %a "$1")" = "$2" ] && printf '%s' "$3" | cmp -s - "$1"; then return 0; fi
  mkdir -p "$(dirname "$1")"
  printf '%s' "$3" >"$1.berth-new"
  chmod "$2" "$1.berth-new"
  mv -f "$1.berth-new" "$1"
  WROTE=1
  changed "wrote $1"
}
# install_packages PKG...: the missing ones, from the configured apt sources
install_packages() {
  missing=''
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing="$missing $pkg"
  done
  [ -n "$missing" ] || return 0
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold $missing >/dev/null
  changed "installed$missing"
}
finish() {
  if [ -n "$CHANGES" ]; then echo "berth-provision: $STEP: changed: $CHANGES"
  else echo "berth-provision: $STEP: unchanged"; fi
}
"""


def _sysctls(values: dict[str, str]) -> str:
    lines = "".join(f"{key} = {value}\n" for key, value in values.items())
    apply = "".join(f"apply_sysctl {q(key)} {q(value)}\n" for key, value in values.items())
    return f"""# {SYSCTL_FILE} makes them survive a reboot; the running kernel gets them now
put_file {SYSCTL_FILE} 644 {q(lines)}
apply_sysctl() {{
  # multi-value settings read back tab-separated: compare word by word
  if [ "$(sysctl -n "$1" | tr -s ' \\t' '  ')" != "$(printf '%s' "$2" | tr -s ' \\t' '  ')" ]; then
    sysctl -q -w "$1=$2"; changed "set $1=$2"
  fi
}}
{apply}"""


def _docker(provision: ProvisionSettings) -> str:
    if provision.docker.source == "distro":
        packages = "install_packages docker.io iproute2\n"
    else:
        packages = """install_packages ca-certificates curl gnupg iproute2
. /etc/os-release
if [ ! -s /etc/apt/keyrings/docker.gpg ]; then
  install -d -m 755 /etc/apt/keyrings
  curl -fsSL "https://download.docker.com/linux/$ID/gpg" | gpg --dearmor -o /etc/apt/keyrings/docker.gpg
  changed "added Docker's apt key"
fi
put_file /etc/apt/sources.list.d/docker.list 644 "deb [arch=$(dpkg --print-architecture) \
signed-by=/etc/apt/keyrings/docker.gpg] https://download.docker.com/linux/$ID $VERSION_CODENAME stable
"
install_packages docker-ce docker-ce-cli containerd.io
"""
    return f"""# daemon.json first, so the engine's very first start has live-restore and log rotation
put_file {DAEMON_JSON} 644 {q(daemon_json())}
config_changed=$WROTE
was_running=0
if command -v dockerd >/dev/null 2>&1 && is_running docker; then was_running=1; fi
{packages}if [ "$config_changed" = 1 ] && [ "$was_running" = 1 ]; then
  service_do restart docker; changed "restarted docker"
fi
ensure_running docker
i=0
until docker info >/dev/null 2>&1; do
  i=$((i + 1)); [ "$i" -le 60 ] || fail "dockerd did not come up"; sleep 0.5
done
# What the running daemon reports, not just what the file says
[ "$(docker info --format '{{{{.LiveRestoreEnabled}}}}')" = true ] || fail "live-restore is off"
[ "$(docker info --format '{{{{.LoggingDriver}}}}')" = json-file ] || fail "the log driver is not json-file"
if ss -Hltnp 2>/dev/null | grep -q '"dockerd"'; then
  echo "$STEP: dockerd listens on TCP; remove the tcp:// host from its unit or /etc/default/docker" >&2; exit 1
fi
"""


def _deploy_user(provision: ProvisionSettings, where: Target) -> str:
    keys = "".join(f"{key}\n" for key in provision.deploy_user.authorized_keys)
    source = (f"keys={q(keys)}\n" if keys else
              """# no keys configured: the ones that let the provisioning user in
from_home=$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)
keys=$(cat "$from_home/.ssh/authorized_keys")
keys="$keys
"
""")
    return f"""user={q(where.deploy_user)}
if ! getent group docker >/dev/null; then groupadd --system docker; changed "created group docker"; fi
if ! id -u "$user" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$user"; changed "created user $user"
fi
if ! id -nG "$user" | tr ' ' '\\n' | grep -qx docker; then
  usermod -aG docker "$user"; changed "added $user to docker"
fi
home=$(getent passwd "$user" | cut -d: -f6)
group=$(id -gn "$user")
if [ ! -d "$home/.ssh" ]; then install -d -m 700 -o "$user" -g "$group" "$home/.ssh"; changed "created $home/.ssh"; fi
{source}put_file "$home/.ssh/authorized_keys" 600 "$keys"
chown "$user:$group" "$home/.ssh/authorized_keys"
"""


def _ssh_hardening(provision: ProvisionSettings, where: Target) -> str:
    # Root keeps key logins when berth provisions as root (it connects again on the next change).
    root_login = "prohibit-password" if provision.ssh.user == "root" else "no"
    config = ("# berth: keys only\n"
              "PasswordAuthentication no\n"
              "KbdInteractiveAuthentication no\n"
              "PermitEmptyPasswords no\n"
              f"PermitRootLogin {root_login}\n"
              "PubkeyAuthentication yes\n"
              "X11Forwarding no\n")
    # sshd -T spells prohibit-password by its older name
    shown = "without-password" if root_login == "prohibit-password" else root_login
    expect = f"passwordauthentication no|kbdinteractiveauthentication no|permitrootlogin {shown}"
    port = where.port
    return f"""install_packages openssh-server iproute2
put_file {SSHD_DROP_IN} 644 {q(config)}
if ! sshd -t; then rm -f {SSHD_DROP_IN}; echo "$STEP: sshd rejects the configuration" >&2; exit 1; fi
# the drop-in only counts if sshd_config includes sshd_config.d before its own settings
effective=$(sshd -T | grep -cE '^({expect})$' || true)
if [ "$effective" != 3 ]; then
  echo "$STEP: sshd -T does not show {expect}; is sshd_config.d included first?" >&2; exit 1
fi
mkdir -p /run/sshd
# reload, not restart: the session running this script stays up. sshd re-executes itself on a
# reload and listens again a moment later: wait for that, so the next step's connection gets in.
if [ "$WROTE" = 1 ]; then
  service_do reload ssh; changed "reloaded ssh"
  sleep 0.5
  i=0
  until ss -Hltn "sport = :{port}" | grep -q .; do
    i=$((i + 1)); [ "$i" -le 40 ] || fail "sshd does not listen on {port} again"; sleep 0.25
  done
fi
"""


def _firewall(rules: FirewallRules) -> str:
    wanted = "".join(f"{rule}\n" for rule in rules.ufw_rules)
    ensure = "".join(f"ensure_rule {rule.removeprefix('ufw ')}\n" for rule in rules.ufw_rules)
    docker_user = _docker_user_block(rules)
    return f"""install_packages ufw
wanted={q(wanted)}
current=$(ufw show added | grep '^ufw ' || true)
ensure_rule() {{
  printf '%s\\n' "$current" | grep -qxF "ufw $*" || {{ ufw "$@" >/dev/null; changed "ufw $*"; }}
}}
# the SSH port first, so enabling the firewall cannot cut this session
{ensure}# rules berth did not ask for go: the firewall is exactly what the settings say
set -f
printf '%s\\n' "$current" | while IFS= read -r rule; do
  if [ -n "$rule" ] && ! printf '%s' "$wanted" | grep -qxF "$rule"; then
    ufw --force delete ${{rule#ufw }} >/dev/null; echo "$rule"
  fi
done >/tmp/berth-ufw.$$
set +f
while IFS= read -r rule; do changed "removed $rule"; done </tmp/berth-ufw.$$
rm -f /tmp/berth-ufw.$$
if ! grep -qx 'DEFAULT_INPUT_POLICY="DROP"' /etc/default/ufw; then
  ufw default deny incoming >/dev/null; changed "default deny incoming"
fi
if ! grep -qx 'DEFAULT_OUTPUT_POLICY="ACCEPT"' /etc/default/ufw; then
  ufw default allow outgoing >/dev/null; changed "default allow outgoing"
fi
# Docker publishes ports through its own FORWARD rules, ahead of UFW's (the ufw-docker gap): the
# DOCKER-USER chain, which Docker keeps first and never flushes, lets in only the allowed ports.
rules_mode=$(stat -c %a {UFW_AFTER_RULES})
block={q(docker_user)}
{{ sed '/^# BEGIN berth docker-user/,/^# END berth docker-user/d' {UFW_AFTER_RULES}; printf '%s' "$block"; }} \\
  >{UFW_AFTER_RULES}.berth-new
if cmp -s {UFW_AFTER_RULES}.berth-new {UFW_AFTER_RULES}; then rm -f {UFW_AFTER_RULES}.berth-new; after_changed=0
else
  chmod "$rules_mode" {UFW_AFTER_RULES}.berth-new; mv -f {UFW_AFTER_RULES}.berth-new {UFW_AFTER_RULES}
  after_changed=1; changed "wrote the DOCKER-USER rules"
fi
if ! ufw status | grep -q '^Status: active'; then ufw --force enable >/dev/null; changed "enabled ufw"
elif [ "$after_changed" = 1 ]; then ufw reload >/dev/null; changed "reloaded ufw"; fi
# Docker adds its jump to DOCKER-USER when it starts; a running engine already has it
if command -v docker >/dev/null 2>&1 && ! iptables -C FORWARD -j DOCKER-USER 2>/dev/null; then
  if is_running docker; then service_do restart docker; changed "restarted docker for DOCKER-USER"; fi
fi
"""


def _docker_user_block(rules: FirewallRules) -> str:
    allowed = [("tcp", port) for port in rules.tcp] + [("udp", port) for port in rules.udp]
    accepts = "".join(f"-A DOCKER-USER -p {proto} -m conntrack --ctorigdstport {port} -j RETURN\n"
                      for proto, port in allowed)
    return ("# BEGIN berth docker-user (rendered by berth; the ports UFW allows, for Docker-published ports)\n"
            "*filter\n"
            ":DOCKER-USER - [0:0]\n"
            "-A DOCKER-USER -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n"
            "-A DOCKER-USER -i docker0 -j RETURN\n"
            "-A DOCKER-USER -i br-+ -j RETURN\n"
            "-A DOCKER-USER -i lo -j RETURN\n"
            f"{accepts}"
            "-A DOCKER-USER -m conntrack --ctstate NEW,INVALID -j DROP\n"
            "COMMIT\n"
            "# END berth docker-user\n")


def _fail2ban(provision: ProvisionSettings, where: Target) -> str:
    jail = provision.fail2ban

    def config(backend: str) -> str:
        logpath = "logpath = /var/log/auth.log\n" if backend == "auto" else ""
        return ("[sshd]\n"
                "enabled = true\n"
                f"port = {where.port}\n"
                f"backend = {backend}\n"
                # With password logins off, a guesser's attempts end as "Connection closed by
                # authenticating user ... [preauth]": only the aggressive mode counts those.
                "mode = aggressive\n"
                f"{logpath}"
                f"maxretry = {jail.max_retry}\n"
                f"findtime = {_seconds(jail.find_time)}\n"
                f"bantime = {_seconds(jail.ban_time)}\n")

    return f"""# No jail for the proxy: {NO_PROXY_JAIL}.
if has_systemd; then
  install_packages fail2ban python3-systemd
  jail={q(config("systemd"))}
else
  # without systemd's journal, sshd's log lines reach /var/log/auth.log through a syslog daemon
  install_packages fail2ban rsyslog
  # Debian 12's rsyslog ships no init script: without systemd it is started directly
  if [ ! -s /run/rsyslogd.pid ] || ! kill -0 "$(cat /run/rsyslogd.pid)" 2>/dev/null; then
    rsyslogd; changed "started rsyslogd"
  fi
  # fail2ban will not start a jail whose log file does not exist yet
  if [ ! -e /var/log/auth.log ]; then
    touch /var/log/auth.log; chmod 640 /var/log/auth.log; changed "created /var/log/auth.log"
  fi
  jail={q(config("auto"))}
fi
put_file {JAIL_FILE} 644 "$jail"
jail_changed=$WROTE
if [ "$jail_changed" = 1 ] && is_running fail2ban; then
  fail2ban-client reload >/dev/null; changed "reloaded fail2ban"
fi
ensure_running fail2ban
i=0
until fail2ban-client status sshd >/dev/null 2>&1; do
  i=$((i + 1)); [ "$i" -le 40 ] || fail "the sshd jail is not up"; sleep 0.5
done
"""


def _upgrades(provision: ProvisionSettings) -> str:
    upgrades = provision.upgrades
    periodic = 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n'
    reboot = ('// berth: reboot after an upgrade that needs one, in this window\n'
              f'Unattended-Upgrade::Automatic-Reboot "{str(upgrades.reboot).lower()}";\n'
              f'Unattended-Upgrade::Automatic-Reboot-Time "{upgrades.reboot_time}";\n')
    return f"""# security updates only: the distribution's default origins of unattended-upgrades
install_packages unattended-upgrades
put_file {PERIODIC_FILE} 644 {q(periodic)}
put_file {UPGRADES_FILE} 644 {q(reboot)}
"""
