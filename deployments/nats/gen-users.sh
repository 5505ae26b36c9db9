#!/usr/bin/env bash
# gen-users.sh STORE... > users.conf
# Writes the TELEMETRY account's users: the ingester (password from
# $INGESTER_PASSWORD at server start) and one user per store with the
# permissions in store-user.tmpl and a random password. Prints
# "store password" pairs to stderr for the relays' credentials.
# Store ids: [A-Za-z0-9_-]{1,64}, as the relay requires.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
echo "users: ["
echo "  { user: ingester, password: \$INGESTER_PASSWORD }"
for store in "$@"; do
  if [[ ! $store =~ ^[A-Za-z0-9_-]{1,64}$ ]]; then
    echo "bad store id: $store" >&2
    exit 2
  fi
  pw=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
  sed -e "s/@STORE@/$store/g" -e "s/@PASSWORD@/$pw/g" "$here/store-user.tmpl"
  echo "$store $pw" >&2
done
echo "]"
