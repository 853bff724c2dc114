#!/bin/sh
# A fresh host key and client key pair per container; the test reads the client's private key.
set -eu
ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
mkdir -p /home/restic/.ssh
ssh-keygen -q -t ed25519 -N '' -f /home/restic/client_key
cp /home/restic/client_key.pub /home/restic/.ssh/authorized_keys
chown -R restic /home/restic
chmod 600 /home/restic/.ssh/authorized_keys
exec /usr/sbin/sshd -D -e -o PasswordAuthentication=no -o HostKey=/etc/ssh/ssh_host_ed25519_key
