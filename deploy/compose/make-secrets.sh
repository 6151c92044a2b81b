#!/usr/bin/env bash
# Make the secret files compose.yaml mounts, for one laptop: random, local, never committed
# (deploy/compose/.gitignore ignores secrets/).
#
#   deploy/compose/make-secrets.sh [DIR] [EDGE_ID]    # default: deploy/compose/secrets edge-1
#
# Files (an existing one is kept, so running it again only fills gaps):
#   tail-tokens, edge-token     one bearer token: the tail accepts it, the agent presents it
#   edge-mqtt-password          the agent's MQTT password (user name = EDGE_ID)
#   mosquitto.passwd            the broker's password file (hashes only) with that user
#   broker-ca.crt               a CA made here (its key is deleted at once), trusted by the agent
#   broker.crt, broker.key      the broker's certificate for localhost / 127.0.0.1
# Each container reads its files as its own user: as root, this script chowns them (broker:
# uid 1883, splitwire: uid 10001); otherwise it prints the sudo command that does.
# Needs openssl and mosquitto_passwd (Debian package mosquitto). Exit codes: 0 done, 1 failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${1:-$here/secrets}
edge_id=${2:-edge-1}
die() { printf 'make-secrets.sh: error: %s\n' "$*" >&2; exit 1; }
for tool in openssl mosquitto_passwd; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (Debian: apt-get install openssl mosquitto)"
done
mkdir -p "$dir"
cd "$dir"
umask 077
token() { openssl rand -base64 "$1" | tr '+/' '-_' | tr -d '=\n'; }

made=()
[ -e tail-tokens ] || { { token 32; echo; } > tail-tokens; made+=(tail-tokens); }
[ -e edge-token ] || { head -n 1 tail-tokens > edge-token; made+=(edge-token); }
[ -e edge-mqtt-password ] || { { token 24; echo; } > edge-mqtt-password; made+=(edge-mqtt-password); }
if [ ! -e mosquitto.passwd ]; then
    # `user:password` lines hashed in place (-U): the password never appears on a command line.
    printf '%s:%s\n' "$edge_id" "$(head -n 1 edge-mqtt-password)" > mosquitto.passwd
    mosquitto_passwd -U mosquitto.passwd
    made+=(mosquitto.passwd)
fi
if [ ! -e broker.crt ] || [ ! -e broker.key ] || [ ! -e broker-ca.crt ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
        -subj "/CN=splitwire laptop CA" -keyout "$work/ca.key" -out broker-ca.crt 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
        -keyout broker.key -out "$work/broker.csr" 2>/dev/null
    printf '%s\n' 'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature' \
        'extendedKeyUsage=serverAuth' 'subjectAltName=DNS:localhost,IP:127.0.0.1' \
        'subjectKeyIdentifier=hash' 'authorityKeyIdentifier=keyid' > "$work/ext"
    openssl x509 -req -in "$work/broker.csr" -CA broker-ca.crt -CAkey "$work/ca.key" \
        -CAcreateserial -CAserial "$work/ca.srl" -days 825 -extfile "$work/ext" \
        -out broker.crt 2>/dev/null
    made+=(broker-ca.crt broker.crt broker.key)
fi
# Certificates are public; keys, tokens and passwords stay readable by their one reader only.
# Only files made by this run: the ones kept may already belong to the containers' users.
for file in "${made[@]}"; do
    case $file in
        *.crt) chmod 0644 "$file" ;;
        mosquitto.passwd|broker.key) chmod 0600 "$file" ;;
        *) chmod 0400 "$file" ;;
    esac
done
broker_files=() splitwire_files=()
for file in "${made[@]}"; do
    case $file in
        mosquitto.passwd|broker.key) broker_files+=("$file") ;;
        tail-tokens|edge-token|edge-mqtt-password) splitwire_files+=("$file") ;;
    esac
done
if [ "$(id -u)" = 0 ]; then
    [ ${#broker_files[@]} -eq 0 ] || chown 1883:1883 "${broker_files[@]}"
    [ ${#splitwire_files[@]} -eq 0 ] || chown 10001:10001 "${splitwire_files[@]}"
elif [ ${#made[@]} -gt 0 ]; then
    echo "make-secrets.sh: now give the containers' users their files (not needed on Docker Desktop):" >&2
    [ ${#broker_files[@]} -eq 0 ] || echo "  sudo chown 1883:1883 ${broker_files[*]/#/$dir/}" >&2
    [ ${#splitwire_files[@]} -eq 0 ] || echo "  sudo chown 10001:10001 ${splitwire_files[*]/#/$dir/}" >&2
fi
echo "make-secrets.sh: secrets for $edge_id in $dir" >&2
