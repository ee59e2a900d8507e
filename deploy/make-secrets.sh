#!/usr/bin/env bash
# Write the secrets of deploy/docker-compose.yml, each readable by the one container user that reads it and by
# nobody else on the host (root aside). Docker Compose bind-mounts a file secret with the host file's owner and
# mode; the long syntax's uid/gid/mode are not applied to file secrets outside Swarm (Compose file reference,
# "secrets", long syntax). So the host file itself is owned by that user, mode 0400:
#   orchestrator_keys.toml   10001:10001  the orchestrator image's user (deploy/Dockerfile, USER 10001:10001)
#   grafana_admin_password   472:0        the grafana/grafana image's user (uid 472, group root)
# A file that exists keeps its content (API keys are not rotated by accident; --force writes new ones) and gets
# its owner and mode set again. Needs root for chown:
#   sudo deploy/make-secrets.sh [--dir DIR] [--tenant NAME] [--force]
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/secrets"
tenant="default"
force=0
while (($#)); do
  case "$1" in
    --dir) dir="${2:?--dir needs a folder}"; shift 2 ;;
    --tenant) tenant="${2:?--tenant needs a name}"; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "make-secrets: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ ! "$tenant" =~ ^[A-Za-z0-9_.-]+$ ]]; then
  echo "make-secrets: --tenant: letters, digits, '_', '.', '-' only" >&2
  exit 2
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "make-secrets: run as root (sudo): the files are chowned to the containers' users" >&2
  exit 1
fi
command -v openssl >/dev/null || { echo "make-secrets: openssl not found (apt-get install openssl)" >&2; exit 1; }

mkdir -p "$dir"

# write NAME OWNER CONTENT-COMMAND...: the file gets the command's output unless it exists (or --force), then
# OWNER and mode 0400. Written to a temporary file with umask 077 and renamed, so it is never readable by others.
write() {
  local name="$1" owner="$2"
  shift 2
  local target="$dir/$name"
  if [[ ! -e "$target" || $force -eq 1 ]]; then
    local staging
    staging="$(umask 077 && mktemp "$dir/.${name}.XXXXXX")"
    "$@" > "$staging"
    mv -f "$staging" "$target"
    echo "wrote $target"
  else
    echo "kept $target"
  fi
  chown "$owner" "$target"
  chmod 0400 "$target"
}

api_keys() {
  printf '# API key -> tenant (orchestrator/api/settings.py)\n[keys]\n"%s" = "%s"\n' "$(openssl rand -hex 24)" "$tenant"
}
password() { openssl rand -hex 16; }

write orchestrator_keys.toml 10001:10001 api_keys
write grafana_admin_password 472:0 password
echo "read them with sudo, e.g.: sudo cat $dir/orchestrator_keys.toml"
