#!/usr/bin/env bash
# Installs everything the build needs, from the Debian archive this machine is
# already configured for, then builds the real Linux guest fixtures (linux_fixture/).
# Idempotent: a second run checks and exits in about a second.
# Run as root (or with sudo available).
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "must run as root (apt-get and dpkg are needed) or have sudo"
  SUDO="sudo"
fi

[ -r /etc/os-release ] || die "cannot read /etc/os-release; this script supports Debian 12 (bookworm) and newer"
# shellcheck disable=SC1091
. /etc/os-release
if [ "${ID:-}" != "debian" ]; then
  die "unsupported distribution '${ID:-unknown}': needs Debian 12+ with apt (packages: bazel-bootstrap libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev libxen-dev and Unicorn >= 2.1 development files)"
fi

# clang + libclang-rt: the dump parsers' libFuzzer targets; CLI11 + nlohmann-json: the vmi CLI.
# qemu-system-x86 + busybox-static (+ gcc/libc6-dev for a static helper): the real Linux
# guest fixtures (tools/linux_fixture); libbpf-dev: BTF parsing; liblzma-dev: xz decompression.
PACKAGES=(bazel-bootstrap g++ pkg-config python3 libabsl-dev libgtest-dev libgmock-dev
          libbenchmark-dev libxen-dev clang libclang-rt-14-dev libcli11-dev nlohmann-json3-dev
          qemu-system-x86 busybox-static gcc libc6-dev libbpf-dev liblzma-dev)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Unicorn: the x86 CPU model must honour guest page tables, which needs >= 2.1.
unicorn_version() {
  local h=/usr/include/unicorn/unicorn.h
  [ -r "$h" ] || { echo "0 0"; return; }
  local major minor
  major=$(sed -n 's/^#define UC_API_MAJOR \([0-9]*\).*/\1/p' "$h" | head -n1)
  minor=$(sed -n 's/^#define UC_API_MINOR \([0-9]*\).*/\1/p' "$h" | head -n1)
  echo "${major:-0} ${minor:-0}"
}
unicorn_ok() {
  local v
  read -r -a v <<<"$(unicorn_version)"
  [ "${v[0]}" -gt 2 ] || { [ "${v[0]}" -eq 2 ] && [ "${v[1]}" -ge 1 ]; }
}

# Prints the URI that serves this release's main suite, read from the apt
# configuration (deb822 .sources files or one-line .list files).
archive_uri() {
  local codename=$1 f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    awk -v want="$codename" '
      function flush() { if (uri != "" && suite_ok) { print uri; found = 1; exit } uri = ""; suite_ok = 0 }
      /^[[:space:]]*$/ { flush(); next }
      /^URIs:/ { uri = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == want) suite_ok = 1 }
      END { if (!found && uri != "" && suite_ok) print uri }
    ' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    awk -v want="$codename" '
      $1 == "deb" {
        i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i + 1) == want) print $i
      }' "$f"
  done
}

if ! unicorn_ok; then
  log "Unicorn >= 2.1 not installed (found $(unicorn_version | tr ' ' .)); taking it from Debian 13 (trixie)"
  codename=${VERSION_CODENAME:-}
  [ -n "$codename" ] || die "cannot tell this Debian release's codename; install libunicorn-dev >= 2.1 by hand"
  uri=$(archive_uri "$codename" | grep -v -- '-security' | head -n1 || true)
  [ -n "$uri" ] || die "no apt source for suite '$codename' found in /etc/apt; install libunicorn-dev >= 2.1 (Debian 13's libunicorn2t64 + libunicorn-dev) by hand"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -r "$keyring" ] || die "missing $keyring (package debian-archive-keyring)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/lists/partial" "$work/debs"
  chmod 755 "$work" "$work/debs"
  echo "deb [signed-by=$keyring] $uri trixie main" >"$work/trixie.list"
  apt_opts=(-o "Dir::Etc::SourceList=$work/trixie.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$work/lists" -o APT::Get::List-Cleanup=0)
  $SUDO apt-get "${apt_opts[@]}" update -q
  (cd "$work/debs" && $SUDO apt-get "${apt_opts[@]}" download libunicorn2t64 libunicorn-dev) ||
    die "could not download libunicorn2t64/libunicorn-dev from trixie at $uri"
  DEBIAN_FRONTEND=noninteractive $SUDO dpkg -i "$work"/debs/*.deb
  unicorn_ok || die "installed Unicorn is still older than 2.1 ($(unicorn_version | tr ' ' .))"
fi

log "ok: bazel $(dpkg-query -W -f='${Version}' bazel-bootstrap), unicorn $(unicorn_version | tr ' ' .)"

# Real Linux guest fixtures (memory dumps of Debian's kernel under QEMU): built once per
# kernel version, then a no-op. VMI_SKIP_LINUX_FIXTURES=1 skips them.
if [ "${VMI_SKIP_LINUX_FIXTURES:-0}" = 1 ]; then
  log "skipping the Linux guest fixtures (VMI_SKIP_LINUX_FIXTURES=1)"
else
  fixture_args=()
  if [ -n "${VMI_FIXTURE_DIR:-}" ]; then fixture_args=(--out "$VMI_FIXTURE_DIR"); fi
  $SUDO "$(dirname "${BASH_SOURCE[0]}")/linux_fixture/build.sh" "${fixture_args[@]}" ||
    die "building the Linux guest fixtures failed (tools/linux_fixture/build.sh)"
fi
