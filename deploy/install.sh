#!/usr/bin/env bash
# Install or upgrade linevision on a line PC (Debian 12): /opt/linevision, /etc/linevision, units.
#   sudo deploy/install.sh [--source DIR] [--prefix /opt/linevision] [--no-start]
# Running it again upgrades: the package is reinstalled, units and models are replaced,
# /etc/linevision (config, recipes, keys, token) is never overwritten.
set -euo pipefail

SOURCE="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX=/opt/linevision
ETC=/etc/linevision
UNITS=/etc/systemd/system
START=1
USER_NAME=linevision

usage() { sed -n '2,5p' "$0"; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --source) SOURCE="$2"; shift 2 ;;
    --prefix) PREFIX="$2"; shift 2 ;;
    --no-start) START=0; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
[ -f "$SOURCE/pyproject.toml" ] || { echo "install.sh: no pyproject.toml in $SOURCE" >&2; exit 1; }

step() { echo "==> $*"; }

step "system packages"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends python3 python3-venv >/dev/null

step "user $USER_NAME"
if ! id "$USER_NAME" >/dev/null 2>&1; then
  useradd --system --user-group --home-dir /var/lib/linevision --no-create-home \
    --shell /usr/sbin/nologin "$USER_NAME"
fi
getent group plugdev >/dev/null || groupadd --system plugdev

step "venv and package in $PREFIX"
install -d -m 0755 "$PREFIX"
[ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --quiet --upgrade pip
# the units run the HMI and the bridges too: the hmi, plc and mqtt extras
"$PREFIX/venv/bin/pip" install --quiet --upgrade "$SOURCE[plc,hmi,mqtt]"
LV="$PREFIX/venv/bin/linevision"

step "models and docs"
for d in models docs; do
  if [ -d "$SOURCE/$d" ]; then
    rm -rf "$PREFIX/$d.new"
    cp -a "$SOURCE/$d" "$PREFIX/$d.new"
    rm -rf "$PREFIX/$d"
    mv "$PREFIX/$d.new" "$PREFIX/$d"
  fi
done

step "configuration in $ETC (kept if present)"
install -d -m 0750 -o root -g "$USER_NAME" "$ETC" "$ETC/recipes" "$ETC/keys" "$ETC/keys/authorized" \
  "$ETC/mqtt"
if [ ! -f "$ETC/config.yaml" ]; then
  install -m 0640 -o root -g "$USER_NAME" "$SOURCE/deploy/config.example.yaml" "$ETC/config.yaml"
  echo "    wrote $ETC/config.yaml from the example: set the camera serials and check it"
fi
for r in "$SOURCE"/deploy/recipes/*.yaml; do
  [ -e "$r" ] || continue
  [ -f "$ETC/recipes/$(basename "$r")" ] || install -m 0640 -o root -g "$USER_NAME" "$r" "$ETC/recipes/"
done
for name in linevision bridge-plc bridge-reject bridge-mqtt hmi; do
  [ -f "$ETC/keys/$name.key_secret" ] || "$LV" keys generate "$ETC/keys" --name "$name" >/dev/null
done
chgrp -R "$USER_NAME" "$ETC/keys"
chmod 0640 "$ETC"/keys/*.key_secret
if [ ! -f "$ETC/hmi-token" ]; then
  (umask 0027; head -c 24 /dev/urandom | base64 | tr -d '/+=\n' > "$ETC/hmi-token")
  chgrp "$USER_NAME" "$ETC/hmi-token"
fi
"$LV" check-config "$ETC/config.yaml"

step "systemd units"
install -m 0644 "$SOURCE"/systemd/*.service "$UNITS/"
for d in "$SOURCE"/systemd/*.service.d; do
  [ -d "$d" ] || continue
  install -d -m 0755 "$UNITS/$(basename "$d")"
  install -m 0644 "$d"/*.conf "$UNITS/$(basename "$d")/"
done
systemctl daemon-reload
systemctl enable linevision.service linevision-hmi.service
for kind in plc reject mqtt; do
  if [ -f "$ETC/bridge-$kind.yaml" ]; then
    systemctl enable "linevision-bridge@$kind.service"
  fi
done

if [ "$START" -eq 1 ]; then
  step "restart"
  systemctl restart linevision.service
  systemctl restart linevision-hmi.service
  for kind in plc reject mqtt; do
    if systemctl is-enabled --quiet "linevision-bridge@$kind.service" 2>/dev/null; then
      systemctl restart "linevision-bridge@$kind.service"
    fi
  done
  systemctl --no-pager --lines=0 status linevision.service || true
fi
echo "done: journalctl -u linevision -f   |   http://127.0.0.1:8080   |   curl -s 127.0.0.1:9108/metrics"
