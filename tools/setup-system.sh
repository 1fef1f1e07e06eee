#!/usr/bin/env bash
# Install the Debian packages the project needs on the controller, when they are missing.
#   tools/setup-system.sh demo   -> what `make demo` needs (Python venv support)
#   tools/setup-system.sh test   -> plus sshd, rsync, sqlite3, cron, iproute2, sudo for the test fleet,
#                                    git for ansible-test (make sanity), restic for the offsite copy
set -euo pipefail
purpose=${1:-test}
packages=(python3-venv)
if [ "$purpose" = test ]; then
  packages+=(openssh-server openssh-client rsync sqlite3 cron iproute2 util-linux make chromium sudo git restic)
fi
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
fi
# A Python that already makes virtual environments does not need Debian's python3-venv.
if python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing=("${missing[@]/python3-venv}")
fi
read -r -a missing <<<"${missing[*]:-}"
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages: ${missing[*]} (install them, e.g. sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
