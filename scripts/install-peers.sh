#!/usr/bin/env bash
# Idempotent install of the real third-party servers our end-to-end tests and
# benchmarks run against (Debian bookworm, as root). Only package registries
# are used. Each step is skipped when its result is already present.
#
#   apt: prometheus 2.42 (+ promtool), etcd-server + etcd-client 3.4, nginx, curl
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

need=()
for pair in prometheus:prometheus promtool:prometheus etcd:etcd-server etcdctl:etcd-client nginx:nginx curl:curl; do
  bin=${pair%%:*}; pkg=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  # Debian's postinst scripts start services through invoke-rc.d; a policy-rc.d
  # that exits 101 keeps them from binding public ports during the install.
  tmp_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null; $sudo chmod +x /usr/sbin/policy-rc.d; tmp_policy=1
  fi
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
  [ -n "$tmp_policy" ] && $sudo rm -f /usr/sbin/policy-rc.d
fi
echo "peers: $(prometheus --version 2>&1 | head -1)"
echo "peers: $(etcd --version | head -1)"
echo "peers: $(nginx -v 2>&1)"
