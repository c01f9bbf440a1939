#!/usr/bin/env bash
# Installs the system packages the test suite needs, only those that are missing.
# Debian/Ubuntu (apt-get). Runs non-interactively; safe to run repeatedly.
#
# Add packages your tests need to PACKAGES below (one per line, with what needs it).
set -euo pipefail

PACKAGES=(
  fuse3        # mount tests: fusermount3, /dev/fuse helpers
  attr         # setfattr/getfattr, handy when debugging xattr round-trips
  util-linux   # setpriv: run coffer unprivileged for the unreadable-file test
  mount        # mount/umount: the full-disk test mounts a small tmpfs
  e2fsprogs    # chattr/lsattr
  rsync        # e2e_mount: rsync -aHX out of the mount
  libglib2.0-bin  # e2e_mount: gio copy out of the mount, as a file manager does
  python3      # e2e_mount: mmap reads through the mount; e2e_remote/store_seam: moto_server (S3)
  python3-pip  # installs moto[server] below
  openssh-server  # e2e_remote, store_seam: sshd on 127.0.0.1 serves SFTP
  openssh-client  # e2e_remote, store_seam: ssh, ssh-keygen (OpenDAL's SFTP runs the ssh binary)
  rclone       # e2e_remote, store_seam: `rclone serve webdav` on 127.0.0.1
  dbus         # e2e_keys: dbus-daemon for a private session bus (Secret Service tests)
  dbus-x11     # e2e_keys: dbus-run-session/dbus-launch helpers for the same
  gnome-keyring    # e2e_keys: gnome-keyring-daemon, a real Secret Service
  libsecret-tools  # e2e_keys: secret-tool, to see Coffer's entries as other programs do
  keyutils     # e2e_keys: keyctl session, a session keyring for the kernel keyutils store
  restic       # e2e_filter: the same patterns through restic, to compare selections
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

# PyPI packages, installed with python3's own pip only when missing.
install_python_packages() {
  # e2e_remote, store_seam, benches/remote.sh: an S3 server (moto_server) on 127.0.0.1
  if ! python3 -c 'import moto.server, flask, flask_cors' >/dev/null 2>&1; then
    echo "install-deps: pip install moto[server]"
    python3 -m pip install --quiet 'moto[server]' </dev/null \
      || python3 -m pip install --quiet --break-system-packages 'moto[server]' </dev/null
  fi
}

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all system packages present"
  install_python_packages
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: missing ${missing[*]} and no apt-get here; install them by hand" >&2
  exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)
  else
    echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq </dev/null
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
install_python_packages
