#!/usr/bin/env bash
# Installs proxy-please on a Linux host run by systemd:
#
#   curl -fsSL https://github.com/proxy-please/proxy-please/releases/latest/download/install.sh | sudo bash
#   sudo bash install.sh [--version X.Y.Z] [--binary PATH] [--from-source [DIR]]
#   sudo bash install.sh --uninstall [--purge]
#
# Installs the binary (/usr/local/bin/proxy-please), the firewall setup script
# (/usr/local/lib/proxy-please/proxy-please-firewall), the systemd units
# (/etc/systemd/system/proxy-please{,-firewall}.service) and a commented /etc/proxy-please.env
# (never overwritten). Release binaries are verified against the release's SHA256SUMS.
#
# Environment: DESTDIR stages everything under a prefix (no systemd needed, nothing started);
# PROXY_PLEASE_RELEASE_URL overrides the release base URL (https://, file:// or a directory
# laid out like GitHub releases: latest/download/ASSET and download/vX.Y.Z/ASSET).
#
# Everything happens inside main(), called on the last line, so a truncated download runs
# nothing.

set -euo pipefail

PROG=install.sh
DEFAULT_RELEASE_URL=https://github.com/proxy-please/proxy-please/releases

die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}
say() { printf '%s: %s\n' "$PROG" "$*"; }

usage() {
  cat <<'EOF'
usage: install.sh [options]

  --version X.Y.Z      install that release (default: the latest)
  --binary PATH        install a local proxy-please binary instead of downloading one
  --from-source [DIR]  build the binary with deno compile from a checkout (default: the
                       directory holding this script) and install it
  --uninstall          remove everything this script installed (keeps /etc/proxy-please.env)
  --purge              with --uninstall, remove /etc/proxy-please.env too
  -h, --help           this text

Environment: DESTDIR=/some/dir stages the files there (for packaging and tests);
PROXY_PLEASE_RELEASE_URL overrides the release location.
EOF
}

# ---------------------------------------------------------------------------------------------

# Files this script installs, relative to DESTDIR, with their modes.
BIN=/usr/local/bin/proxy-please
LIBDIR=/usr/local/lib/proxy-please
FIREWALL=$LIBDIR/proxy-please-firewall
MANIFEST=$LIBDIR/installed-files
UNITDIR=/etc/systemd/system
UNITS=(proxy-please.service proxy-please-firewall.service)
ENVFILE=/etc/proxy-please.env

have() { command -v "$1" >/dev/null 2>&1; }

# target_triple: the release asset suffix for this machine (deno compile target names).
target_triple() {
  local os arch
  os=${PROXY_PLEASE_OS:-$(uname -s)}
  arch=${PROXY_PLEASE_ARCH:-$(uname -m)}
  [[ $os == Linux ]] || die "unsupported OS \"$os\": proxy-please runs on Linux only (it needs iptables REDIRECT and SO_ORIGINAL_DST)"
  case $arch in
  x86_64 | amd64) echo x86_64-unknown-linux-gnu ;;
  aarch64 | arm64) echo aarch64-unknown-linux-gnu ;;
  *) die "unsupported architecture \"$arch\": release binaries exist for x86_64 and aarch64 (try --from-source)" ;;
  esac
}

systemd_running() { [[ -d /run/systemd/system ]]; }

preflight() {
  [[ $EUID -eq 0 ]] || die "must run as root (try: sudo bash install.sh ...)"
  local os=${PROXY_PLEASE_OS:-$(uname -s)}
  [[ $os == Linux ]] || die "unsupported OS \"$os\": proxy-please runs on Linux only (it needs iptables REDIRECT and SO_ORIGINAL_DST)"
  if [[ -z $DESTDIR ]] && ! systemd_running; then
    die "systemd is not running on this host (PID 1 is $(cat /proc/1/comm 2>/dev/null || echo unknown)); proxy-please is managed by systemd. To stage the files anyway, set DESTDIR=/some/dir."
  fi
  if [[ -n $DESTDIR && $DESTDIR != /* ]]; then
    die "DESTDIR must be an absolute path, not \"$DESTDIR\""
  fi
}

# fetch URL FILE: downloads with curl or wget; file:// URLs and plain directories work too.
fetch() {
  local url=$1 out=$2
  if [[ $url == /* ]]; then
    cp -- "$url" "$out" 2>/dev/null || die "cannot read $url"
  elif have curl; then
    curl -fsSL --proto '=https,file' --retry 2 -o "$out" "$url" || die "download failed: $url"
  elif have wget; then
    [[ $url == https://* ]] || die "wget cannot fetch $url (install curl)"
    wget -q -O "$out" "$url" || die "download failed: $url"
  else
    die "neither curl nor wget is installed"
  fi
}

# release_dir: the URL (or directory) holding the chosen release's assets.
release_dir() {
  local base=${PROXY_PLEASE_RELEASE_URL:-$DEFAULT_RELEASE_URL}
  base=${base%/}
  if [[ -n $VERSION ]]; then
    printf '%s/download/v%s\n' "$base" "${VERSION#v}"
  else
    printf '%s/latest/download\n' "$base"
  fi
}

# fetch_verified NAME: downloads the release asset NAME into TMP_DIR and checks it against the
# release's SHA256SUMS (fetched once); prints the local path.
fetch_verified() {
  local name=$1 dir expected actual
  dir=$(release_dir)
  if [[ ! -f $TMP_DIR/SHA256SUMS ]]; then
    fetch "$dir/SHA256SUMS" "$TMP_DIR/SHA256SUMS"
  fi
  say "downloading $dir/$name" >&2
  fetch "$dir/$name" "$TMP_DIR/$name"
  expected=$(awk -v a="$name" '$2 == a || $2 == "*" a { print $1; exit }' "$TMP_DIR/SHA256SUMS")
  [[ $expected =~ ^[0-9a-f]{64}$ ]] || die "SHA256SUMS has no checksum for $name"
  actual=$(sha256sum "$TMP_DIR/$name" | awk '{ print $1 }')
  [[ $actual == "$expected" ]] ||
    die "checksum mismatch for $name: expected $expected, got $actual; nothing installed"
  printf '%s\n' "$TMP_DIR/$name"
}

# build_from_source DIR TMPDIR: deno compile in a checkout, prints the binary path.
build_from_source() {
  local src=$1 tmp=$2
  [[ -f $src/main.ts && -f $src/deno.json ]] || die "--from-source: $src is not a proxy-please checkout (no main.ts and deno.json)"
  have deno || die "--from-source needs deno on PATH (https://deno.com)"
  say "building with $(deno --version | head -n1) in $src" >&2
  # The permissions and V8 flags live in deno.json's compile task only.
  if ! (cd "$src" && deno task compile && mv dist/proxy-please "$tmp/proxy-please") >&2; then
    die "deno compile failed in $src. It downloads the denort runtime on first use, so a machine without internet access cannot build: build on another machine and use --binary PATH."
  fi
  printf '%s\n' "$tmp/proxy-please"
}

script_dir() {
  local src=${BASH_SOURCE[0]:-}
  [[ -n $src && -f $src ]] || return 1
  (cd "$(dirname "$src")" && pwd)
}

# support_file NAME: a support file (systemd/NAME) from the checkout next to this script, or,
# when the script was piped from curl, from the release (checksum verified).
support_file() {
  local name=$1 dir
  if dir=$(script_dir) && [[ -f $dir/systemd/$name ]]; then
    printf '%s\n' "$dir/systemd/$name"
  else
    fetch_verified "$name"
  fi
}

# mkdirs PATH: creates missing directories under DESTDIR, recording the ones it made.
mkdirs() {
  local dir=$1 missing=()
  [[ -z $DESTDIR || -d $DESTDIR ]] || mkdir -p -- "$DESTDIR"
  while [[ $dir != / && ! -d $DESTDIR$dir ]]; do
    missing=("$dir" "${missing[@]}")
    dir=$(dirname "$dir")
  done
  local d
  for d in "${missing[@]}"; do
    install -d -m 0755 -o root -g root "$DESTDIR$d"
    CREATED_DIRS+=("$d")
  done
}

put() { # put SRC DEST MODE
  mkdirs "$(dirname "$2")"
  install -m "$3" -o root -g root "$1" "$DESTDIR$2.new"
  mv -f "$DESTDIR$2.new" "$DESTDIR$2"
  INSTALLED+=("$2")
}

do_install() {
  local binary
  TMP_DIR=$(mktemp -d)
  trap 'rm -rf "$TMP_DIR"' EXIT

  if [[ -n $BINARY ]]; then
    [[ -f $BINARY ]] || die "--binary: no such file \"$BINARY\""
    binary=$BINARY
  elif [[ $FROM_SOURCE == yes ]]; then
    binary=$(build_from_source "${SOURCE_DIR:-$(script_dir || echo .)}" "$TMP_DIR")
  else
    have sha256sum || die "sha256sum not found (coreutils)"
    binary=$(fetch_verified "proxy-please-$(target_triple)")
    say "checksum verified"
  fi

  # Every source is resolved (and verified) before anything is written.
  local firewall_src env_src unit0 unit1
  firewall_src=$(support_file proxy-please-firewall)
  env_src=$(support_file proxy-please.env)
  unit0=$(support_file "${UNITS[0]}")
  unit1=$(support_file "${UNITS[1]}")
  local unit_src=("$unit0" "$unit1")

  # An earlier install's directories stay recorded so uninstall can remove them.
  CREATED_DIRS=()
  INSTALLED=()
  if [[ -f $DESTDIR$MANIFEST ]]; then
    local kind path
    while read -r kind path; do
      [[ $kind == dir ]] && CREATED_DIRS+=("$path")
    done <"$DESTDIR$MANIFEST"
  fi

  put "$binary" "$BIN" 0755
  put "$firewall_src" "$FIREWALL" 0755
  local i
  for i in "${!UNITS[@]}"; do put "${unit_src[$i]}" "$UNITDIR/${UNITS[$i]}" 0644; done
  if [[ -e $DESTDIR$ENVFILE ]]; then
    say "keeping the existing $ENVFILE"
  else
    mkdirs "$(dirname "$ENVFILE")"
    install -m 0644 -o root -g root "$env_src" "$DESTDIR$ENVFILE"
    say "installed the template $ENVFILE"
  fi

  mkdirs "$LIBDIR"
  {
    for i in "${INSTALLED[@]}"; do echo "file $i"; done
    echo "file $MANIFEST"
    for i in "${CREATED_DIRS[@]}"; do echo "dir $i"; done
  } >"$DESTDIR$MANIFEST.new"
  chmod 0644 "$DESTDIR$MANIFEST.new"
  mv -f "$DESTDIR$MANIFEST.new" "$DESTDIR$MANIFEST"

  if [[ -n $DESTDIR ]]; then
    say "staged under DESTDIR=$DESTDIR; not running systemctl daemon-reload"
  elif systemd_running; then
    systemctl daemon-reload
  else
    say "systemd is not running; skipped systemctl daemon-reload"
  fi

  cat <<EOF

proxy-please is installed. Next steps:
  1. Edit $ENVFILE: set ALLOWED_HOSTS (empty denies everything) and LAN_INTERFACE
     (the interface your clients' traffic arrives on).
  2. Point the clients' default route (or DHCP router option) at this host.
  3. sudo systemctl enable --now proxy-please
  4. Watch decisions: journalctl -u proxy-please -f
EOF
}

do_uninstall() {
  local -a files=() dirs=()
  local kind path
  if [[ -f $DESTDIR$MANIFEST ]]; then
    while read -r kind path; do
      [[ $path == /* && $path != *..* ]] || continue
      case $kind in
      file) files+=("$path") ;;
      dir) dirs+=("$path") ;;
      esac
    done <"$DESTDIR$MANIFEST"
  else
    files=("$BIN" "$FIREWALL" "$UNITDIR/${UNITS[0]}" "$UNITDIR/${UNITS[1]}")
    dirs=("$LIBDIR")
  fi

  if [[ -z $DESTDIR ]] && systemd_running; then
    systemctl disable --now proxy-please.service proxy-please-firewall.service 2>/dev/null || true
  fi

  local f
  for f in "${files[@]}"; do
    [[ $f == "$ENVFILE" ]] && continue
    rm -f -- "$DESTDIR$f"
  done
  if [[ $PURGE == yes ]]; then
    rm -f -- "$DESTDIR$ENVFILE"
  elif [[ -e $DESTDIR$ENVFILE ]]; then
    say "kept $ENVFILE (use --purge to remove it)"
  fi
  # Directories this script created, deepest first, only if now empty.
  local i
  for ((i = ${#dirs[@]} - 1; i >= 0; i--)); do
    rmdir -- "$DESTDIR${dirs[$i]}" 2>/dev/null || true
  done
  rmdir -- "$DESTDIR$LIBDIR" 2>/dev/null || true

  if [[ -n $DESTDIR ]]; then
    say "removed from DESTDIR=$DESTDIR; not running systemctl daemon-reload"
  elif systemd_running; then
    systemctl daemon-reload
  fi
  say "proxy-please uninstalled"
}

main() {
  VERSION="" BINARY="" FROM_SOURCE=no SOURCE_DIR="" UNINSTALL=no PURGE=no
  DESTDIR=${DESTDIR:-}
  DESTDIR=${DESTDIR%/}
  while [[ $# -gt 0 ]]; do
    case $1 in
    --version)
      [[ $# -ge 2 ]] || die "--version needs a version"
      VERSION=$2
      shift 2
      ;;
    --version=*) VERSION=${1#*=} && shift ;;
    --binary)
      [[ $# -ge 2 ]] || die "--binary needs a path"
      BINARY=$2
      shift 2
      ;;
    --binary=*) BINARY=${1#*=} && shift ;;
    --from-source)
      FROM_SOURCE=yes
      shift
      if [[ $# -gt 0 && $1 != -* ]]; then SOURCE_DIR=$1 && shift; fi
      ;;
    --uninstall) UNINSTALL=yes && shift ;;
    --purge) PURGE=yes && shift ;;
    -h | --help) usage && exit 0 ;;
    *) die "unknown option \"$1\" (see --help)" ;;
    esac
  done
  [[ $PURGE == no || $UNINSTALL == yes ]] || die "--purge only goes with --uninstall"
  [[ -z $BINARY || $FROM_SOURCE == no ]] || die "--binary and --from-source exclude each other"
  if [[ -n $BINARY && $BINARY != /* ]]; then BINARY=$PWD/$BINARY; fi

  preflight
  if [[ $UNINSTALL == yes ]]; then do_uninstall; else do_install; fi
}

main "$@"
