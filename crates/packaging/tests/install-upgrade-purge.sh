#!/bin/sh
# The packages in a throw-away Debian root (crates/packaging/tests/packages.rs runs this as
# mmdebstrap's customize hook): install with apt (dependencies from the mirror), check the
# service user, paths and that no unit is enabled; leave configuration and repository data;
# upgrade the client to a later version keeping an edited conffile; purge both and check that
# the configuration is gone and the repository data stays. Usage: ROOT CLIENT REPOSITORY
# CLIENT_UPGRADE (.deb files).
set -eu
R="$1"
step() { echo "STEP: $*"; }
cp "$2" "$R/tmp/client.deb"
cp "$3" "$R/tmp/repository.deb"
cp "$4" "$R/tmp/client-upgrade.deb"
step install
chroot "$R" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /tmp/client.deb /tmp/repository.deb
chroot "$R" getent passwd bulwark | grep -q ':/usr/sbin/nologin$'
test "$(chroot "$R" id -u bulwark)" -lt 1000
for f in /usr/bin/bulwark /usr/bin/bulwark-repo /usr/bin/bulwark-immutctl /usr/bin/bulwark-monitor /usr/bin/bulwark-tier /usr/sbin/bulwark-immutd; do test -x "$R$f"; done
for u in bulwark-immutd.service bulwark-repo.service bulwark-job@.service bulwark-job@.timer bulwark-monitor.timer bulwark-verify.timer bulwark-tier-sync.timer bulwark-alert@.service; do test -f "$R/lib/systemd/system/$u"; done
test -d "$R/etc/bulwark/jobs" && test "$(stat -c %a "$R/etc/bulwark/client")" = 700
test -f "$R/etc/bulwark/notify.toml" && test -f "$R/etc/bulwark/notify-repository.toml"
# Installed, not enabled: no unit is wanted by any target.
if find "$R/etc/systemd/system" -name 'bulwark*' | grep .; then echo "a unit was enabled"; exit 1; fi
chroot "$R" bulwark --version
chroot "$R" bulwark-repo --version
step data
# What an administrator and the services leave: configuration and repository data.
mkdir -p "$R/srv/bulwark/repo" "$R/var/lib/bulwark-immutd"
echo point > "$R/srv/bulwark/repo/keep.bwrp"
echo ledger > "$R/var/lib/bulwark-immutd/ledger"
echo 'service_user = "bulwark"' > "$R/etc/bulwark/immutd.toml"
echo 'name = "web01"' > "$R/etc/bulwark/jobs/web01.toml"
echo '# edited by the administrator' >> "$R/etc/bulwark/notify.toml"
step upgrade
old=$(chroot "$R" dpkg-query -W -f '${Version}' bulwark)
chroot "$R" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Options::=--force-confold /tmp/client-upgrade.deb
new=$(chroot "$R" dpkg-query -W -f '${Version}' bulwark)
test "$old" != "$new"
echo "upgraded bulwark $old -> $new"
grep -q 'edited by the administrator' "$R/etc/bulwark/notify.toml"
test -f "$R/etc/bulwark/jobs/web01.toml"
step purge
chroot "$R" dpkg --purge bulwark bulwark-repository
for f in /usr/bin/bulwark /usr/sbin/bulwark-immutd /lib/systemd/system/bulwark-immutd.service; do test ! -e "$R$f"; done
test ! -e "$R/etc/bulwark"
test "$(cat "$R/srv/bulwark/repo/keep.bwrp")" = point
test "$(cat "$R/var/lib/bulwark-immutd/ledger")" = ledger
step done
