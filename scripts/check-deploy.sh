#!/usr/bin/env bash
# Static checks of what we ship for deployment and monitoring (part of `make ci`):
#   k8s/ manifests against the Kubernetes $K8S_VERSION schemas (kubernetes-validate, strict),
#   the nginx ConfigMap is nginx/nginx.conf verbatim and `nginx -t` accepts that config,
#   the retrieval Prometheus config passes `promtool check config` (all but its Kubernetes SD),
#   docker/Dockerfile passes hadolint (it is not built here: see docs/operations.md),
#   every alert has a section in docs/runbooks.md; alerts pass `promtool check rules` and their unit tests `promtool test rules`,
#   dashboards/*.json are what dashboards/generate.py writes.
# The binaries' side (args of every manifest, metric names) is checked by the e2e tests
# tests/tests/k8s_args.rs and tests/tests/observability.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS_OPT=${PEERS_OPT:-/opt/peers}
PY=$PEERS_OPT/venv/bin/python
K8S_VERSION=${K8S_VERSION:-1.30.0}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

"$PEERS_OPT/venv/bin/kubernetes-validate" -k "$K8S_VERSION" --strict --quiet k8s/*.yaml
echo "k8s: $(ls k8s/*.yaml | wc -l) files valid for Kubernetes $K8S_VERSION (strict)"

"$PY" - "$tmp" <<'PY'
import sys, yaml
tmp = sys.argv[1]
docs = {(d["kind"], d["metadata"]["name"]): d for f in ["k8s/nginx.yaml", "k8s/retrieval.yaml"]
        for d in yaml.safe_load_all(open(f)) if d}
if docs[("ConfigMap", "nginx-config")]["data"]["nginx.conf"] != open("nginx/nginx.conf").read():
    sys.exit("k8s/nginx.yaml: the nginx-config ConfigMap differs from nginx/nginx.conf")
# Debian's Prometheus is built without Kubernetes service discovery: check the rest of
# the config with static targets in its place, and the CA/token files of a pod's
# service account replaced by stand-ins.
prom = yaml.safe_load(docs[("ConfigMap", "retrieval-config")]["data"]["prometheus.yml"])
for sc in prom["scrape_configs"]:
    assert sc.pop("kubernetes_sd_configs"), sc["job_name"]
    sc["static_configs"] = [{"targets": ["127.0.0.1:1"]}]
    if "tls_config" in sc:
        sc["tls_config"]["ca_file"] = f"{tmp}/ca.crt"
        sc["authorization"]["credentials_file"] = f"{tmp}/token"
open(f"{tmp}/ca.crt", "w").close(); open(f"{tmp}/token", "w").close()
yaml.safe_dump(prom, open(f"{tmp}/prometheus.yml", "w"))
PY
grep -q '"../nginx/nginx.conf"' tests/tests/fleet.rs || { echo "tests/tests/fleet.rs no longer uses nginx/nginx.conf" >&2; exit 1; }
mkdir -p "$tmp/nginx"
sed -e "s#\${NGINX_PREFIX_DIR}#$tmp/nginx#g" -e 's#\${DISTRIBUTOR_ADDR}#127.0.0.1:1#' \
    -e 's#\${QUERY_ADDR}#127.0.0.1:2#' -e 's#\${LISTEN_ADDR}#127.0.0.1:3#' nginx/nginx.conf > "$tmp/nginx.conf"
nginx -t -q -c "$tmp/nginx.conf" -p "$tmp/nginx" -e "$tmp/nginx/error.log"
echo "nginx: k8s ConfigMap = nginx/nginx.conf (used by tests/tests/fleet.rs); nginx -t ok"

promtool check config "$tmp/prometheus.yml" >/dev/null
echo "retrieval: promtool check config ok (Kubernetes SD replaced by static targets)"

"$PEERS_OPT/venv/bin/hadolint" docker/Dockerfile
echo "docker: hadolint ok"

"$PY" - <<'PY'
import sys, yaml
alerts = [r["alert"] for g in yaml.safe_load(open("dashboards/alerts.yaml"))["groups"] for r in g["rules"] if "alert" in r]
text = open("docs/runbooks.md").read()
missing = [a for a in alerts if f"\n## {a}\n" not in text]
if missing:
    sys.exit(f"docs/runbooks.md has no section for: {', '.join(missing)}")
print(f"runbooks: all {len(alerts)} alerts have a section")
PY
promtool check rules dashboards/alerts.yaml
promtool test rules dashboards/alerts.test.yaml
python3 dashboards/generate.py --check
