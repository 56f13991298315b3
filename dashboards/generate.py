#!/usr/bin/env python3
"""Writes the Grafana dashboards (dashboards/*.json) from the compact
descriptions below, in the spirit of the cortex-mixin, on the metric names our
binaries export. `generate.py --check` fails when a committed JSON file differs
from what this script writes (scripts/check-deploy.sh runs it).

Every dashboard has the variables `datasource`, `cluster` and `job` (multi,
"All" by default); panels select `{cluster=~"$cluster", job=~"$job"}`, so
one dashboard covers the all-in-one and the fleet alike: each panel's metric
or route already names the role it is about.
tests/tests/observability.rs checks that every metric a panel uses is exported.
"""
import json
import os
import sys

SEL = 'cluster=~"$cluster", job=~"$job"'
RATE = "[$__rate_interval]"
PUSH_ROUTES = 'route=~"api_prom_push|api_v1_push"'
READ_ROUTES = 'route=~"(api_prom|prometheus)_api_v1_.+"'
INGESTER_RING = 'name="ingester"'
FRONTEND_CACHE = 'name=~"frontend.+"'


def sel(extra=""):
    return "{" + SEL + (", " + extra if extra else "") + "}"


def rate(metric, extra="", by=None):
    inner = f"rate({metric}{sel(extra)}{RATE})"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def quantiles(hist, extra="", by=""):
    """p99, p50 and the mean of a histogram, as three targets."""
    grp = f"le, {by}" if by else "le"
    legend_by = f"{{{{{by}}}}} " if by else ""
    out = []
    for q in ("0.99", "0.50"):
        out.append((f"histogram_quantile({q}, sum by ({grp}) (rate({hist}_bucket{sel(extra)}{RATE})))",
                    f"{legend_by}p{q[2:]}"))
    mean_by = f"sum by ({by}) " if by else "sum "
    out.append((f"{mean_by}(rate({hist}_sum{sel(extra)}{RATE})) / {mean_by}(rate({hist}_count{sel(extra)}{RATE}))",
                f"{legend_by}mean"))
    return out


def panel(title, targets, unit="short", description=""):
    if isinstance(targets, str):
        targets = [(targets, "")]
    return {
        "title": title,
        "description": description,
        "type": "timeseries",
        "datasource": {"type": "prometheus", "uid": "$datasource"},
        "fieldConfig": {"defaults": {"unit": unit, "min": 0}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend or "__auto"}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def variables(extra=()):
    def query_var(name, query, multi):
        return {
            "name": name,
            "label": name,
            "type": "query",
            "datasource": {"type": "prometheus", "uid": "$datasource"},
            "query": {"query": query, "refId": name},
            "definition": query,
            "refresh": 2,
            "sort": 1,
            "multi": multi,
            "includeAll": multi,
            "allValue": ".+" if multi else None,
            "current": {"text": "All", "value": "$__all"} if multi else {},
        }

    out = [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "refresh": 1},
        query_var("cluster", "label_values(cortex_request_duration_seconds_count, cluster)", False),
        query_var("job", 'label_values(cortex_request_duration_seconds_count{cluster=~"$cluster"}, job)', True),
    ]
    out.extend(query_var(n, q, True) for n, q in extra)
    return out


def dashboard(uid, title, rows, extra_vars=()):
    panels, y, pid = [], 0, 1
    for row_title, row_panels in rows:
        panels.append({"type": "row", "title": row_title, "collapsed": False, "id": pid,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        width = 24 // max(1, min(len(row_panels), 4))
        for i, p in enumerate(row_panels):
            if i and i % 4 == 0:
                y += 8
            p = dict(p, id=pid, gridPos={"h": 8, "w": width, "x": (i % 4) * width, "y": y})
            panels.append(p)
            pid += 1
        y += 8
    return {
        "uid": uid,
        "title": title,
        "tags": ["cortex"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "utc",
        "templating": {"list": variables(extra_vars)},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def writes():
    return dashboard("cortex-writes", "Cortex / Writes", [
        ("Headlines", [
            panel("Samples / s", rate("cortex_distributor_received_samples_total"), "short",
                  "Samples accepted by the distributors (after validation and HA dedupe)."),
            panel("Active series", f"sum(cortex_ingester_memory_series{sel()}) / "
                  f"scalar(max(cortex_distributor_replication_factor{sel()}))", "short",
                  "In-memory series across ingesters, divided by the replication factor."),
            panel("Tenants", f"max(cortex_ingester_memory_users{sel()})"),
            panel("Discarded samples / s", rate("cortex_discarded_samples_total", by="reason"), "short",
                  "Samples refused by validation or limits, by reason (docs/runbooks.md)."),
        ]),
        ("Distributor", [
            panel("Push requests / s", rate("cortex_request_duration_seconds_count", PUSH_ROUTES, "status_code"), "reqps"),
            panel("Push latency", quantiles("cortex_request_duration_seconds", PUSH_ROUTES), "s"),
            panel("Appends to ingesters / s", [
                (rate("cortex_distributor_ingester_appends_total", by="type"), "{{type}}"),
                (rate("cortex_distributor_ingester_append_failures_total", by="type"), "{{type}} failed"),
            ], "short"),
            panel("Received metadata / s", rate("cortex_distributor_received_metadata_total")),
        ]),
        ("Ingester", [
            panel("Ingested samples / s by instance", rate("cortex_ingester_ingested_samples_total", by="instance")),
            panel("Ingestion failures / s", rate("cortex_ingester_ingested_samples_failures_total", by="instance")),
            panel("Series by instance", f"sum by (instance) (cortex_ingester_memory_series{sel()})"),
            panel("Series created / removed per s", [
                (rate("cortex_ingester_memory_series_created_total"), "created"),
                (rate("cortex_ingester_memory_series_removed_total"), "removed"),
            ]),
        ]),
        ("Ring and KV store", [
            panel("Ingesters by state", f"max by (state) (cortex_ring_members{sel(INGESTER_RING)})"),
            panel("KV requests / s", rate("cortex_kv_request_duration_seconds_count", by="kv_name, operation, status_code"), "reqps"),
            panel("KV latency p99", [(
                f"histogram_quantile(0.99, sum by (le, kv_name, operation) (rate(cortex_kv_request_duration_seconds_bucket{sel()}{RATE})))",
                "{{kv_name}} {{operation}}")], "s"),
            panel("Tokens owned by instance", f"max by (member) (cortex_ring_member_ownership_percent{sel()})", "percentunit"),
        ]),
    ])


def reads():
    return dashboard("cortex-reads", "Cortex / Reads", [
        ("Query API", [
            panel("Requests / s by route", rate("cortex_request_duration_seconds_count", READ_ROUTES, "route, status_code"), "reqps"),
            panel("Latency p99 by route", [(
                f"histogram_quantile(0.99, sum by (le, route) (rate(cortex_request_duration_seconds_bucket{sel(READ_ROUTES)}{RATE})))",
                "{{route}}")], "s"),
            panel("Latency (all read routes)", quantiles("cortex_request_duration_seconds", READ_ROUTES), "s"),
            panel("In-flight requests", f"sum by (job) (cortex_inflight_requests{sel()})"),
        ]),
        ("Ingester reads", [
            panel("Queries / s", rate("cortex_ingester_queries_total", by="instance"), "reqps"),
            panel("Series per query", quantiles("cortex_ingester_queried_series")),
            panel("Samples per query", quantiles("cortex_ingester_queried_samples")),
            panel("Chunks per query", quantiles("cortex_ingester_queried_chunks")),
        ]),
    ])


def queries():
    return dashboard("cortex-queries", "Cortex / Queries", [
        # The query-frontend's metrics are Cortex's (spec §7): it is deployed ahead of its code.
        ("Query-frontend", [
            panel("Queue length by tenant", f"sum by (user) (cortex_query_frontend_queue_length{sel()})"),
            panel("Time in queue", quantiles("cortex_query_frontend_queue_duration_seconds"), "s"),
            panel("Retries per query", quantiles("cortex_query_frontend_retries")),
            panel("Split queries / s", rate("cortex_frontend_split_queries_total")),
        ]),
        ("Results cache", [
            panel("Hit ratio", [(
                f"sum by (name) (rate(cortex_cache_hits_total{sel(FRONTEND_CACHE)}{RATE})) / "
                f"sum by (name) (rate(cortex_cache_fetched_keys_total{sel(FRONTEND_CACHE)}{RATE}))",
                "{{name}}")], "percentunit"),
            panel("Discarded (queue full) / s", rate("cortex_query_frontend_discarded_requests_total", by="user")),
        ]),
        ("Chunk store per query", [
            panel("Index lookups per query", quantiles("cortex_chunk_store_index_lookups_per_query")),
            panel("Series before intersection", quantiles("cortex_chunk_store_series_pre_intersection_per_query")),
            panel("Series after intersection", quantiles("cortex_chunk_store_series_post_intersection_per_query")),
            panel("Chunks per query", quantiles("cortex_chunk_store_chunks_per_query")),
        ]),
    ])


def chunks():
    return dashboard("cortex-chunks", "Cortex / Ingester chunks & WAL", [
        ("In memory", [
            panel("Chunks in memory", f"sum by (instance) (cortex_ingester_memory_chunks{sel()})"),
            panel("Age of the oldest unflushed chunk",
                  f"time() - (cortex_oldest_unflushed_chunk_timestamp_seconds{sel()} > 0)", "s",
                  "Above 10h CortexOldChunkInMemory fires: flushes are stuck."),
            panel("Chunk utilisation", quantiles("cortex_ingester_chunk_utilization"), "percentunit"),
            panel("Chunk length (samples)", quantiles("cortex_ingester_chunk_length")),
        ]),
        ("Flushes", [
            panel("Series enqueued for flush / s", rate("cortex_ingester_flushing_enqueued_series_total", by="reason")),
            panel("Flush outcomes / s", rate("cortex_ingester_flushing_dequeued_series_total", by="outcome"), "short",
                  "outcome=\"error\" means the store refused the chunk (CortexIngesterFlushFailures)."),
            panel("Flush queue", [
                (f"sum by (instance) (cortex_ingester_flush_queue_length{sel()})", "{{instance}} queued"),
                (f"sum by (instance) (cortex_ingester_flush_series_in_progress{sel()})", "{{instance}} in progress"),
            ]),
            panel("Flushed chunk size", quantiles("cortex_ingester_chunk_size_bytes"), "bytes"),
            panel("Flushed chunk age", quantiles("cortex_ingester_chunk_age_seconds"), "s"),
            panel("Chunks stored / s", [
                (rate("cortex_chunk_store_stored_chunks_total"), "chunks"),
                (rate("cortex_chunk_store_deduped_chunks_total"), "deduplicated"),
            ]),
            panel("Bytes stored / s", rate("cortex_chunk_store_stored_chunk_bytes_total"), "Bps"),
            panel("Index entries per chunk", quantiles("cortex_chunk_store_index_entries_per_chunk")),
        ]),
        ("WAL", [
            panel("WAL bytes / s", rate("cortex_ingester_wal_logged_bytes_total", by="instance"), "Bps"),
            panel("WAL records / s", rate("cortex_ingester_wal_records_logged_total", by="instance")),
            panel("WAL corruptions", f"sum by (instance) (increase(cortex_ingester_wal_corruptions_total{sel()}[1h]))"),
            panel("Last WAL replay duration", f"max by (instance) (cortex_ingester_wal_replay_duration_seconds{sel()})", "s"),
        ]),
        ("Checkpoints", [
            panel("Checkpoints / h", [
                (f"sum(increase(cortex_ingester_checkpoint_creations_total{sel()}[1h]))", "created"),
                (f"sum(increase(cortex_ingester_checkpoint_creations_failed_total{sel()}[1h]))", "creation failed"),
                (f"sum(increase(cortex_ingester_checkpoint_deletions_total{sel()}[1h]))", "deleted"),
                (f"sum(increase(cortex_ingester_checkpoint_deletions_failed_total{sel()}[1h]))", "deletion failed"),
            ]),
            panel("Checkpoint duration", quantiles("cortex_ingester_checkpoint_duration_seconds"), "s"),
            panel("Checkpoint bytes / s", rate("cortex_ingester_checkpoint_logged_bytes_total", by="instance"), "Bps"),
        ]),
    ])


def ruler():
    # The ruler's metrics are Cortex's (spec §8): it is deployed ahead of its code.
    return dashboard("cortex-ruler", "Cortex / Ruler", [
        ("Evaluations", [
            panel("Evaluations / s", rate("cortex_prometheus_rule_evaluations_total", by="user")),
            panel("Failed evaluations / s", rate("cortex_prometheus_rule_evaluation_failures_total", by="user")),
            panel("Missed group iterations / s", rate("cortex_prometheus_rule_group_iterations_missed_total", by="user, rule_group")),
            panel("Group evaluation duration", f"max by (user, rule_group) (cortex_prometheus_rule_group_last_duration_seconds{sel()})", "s"),
        ]),
        ("Writes of results", [
            panel("Failed writes / s", rate("cortex_ruler_write_requests_failed_total")),
            panel("Group iterations / s", rate("cortex_prometheus_rule_group_iterations_total", by="user")),
        ]),
    ])


def object_store():
    cache_sel = 'name!~"frontend.+"'
    return dashboard("cortex-object-store", "Cortex / Object store & caches", [
        ("DynamoDB (index)", [
            panel("Requests / s", rate("cortex_dynamo_request_duration_seconds_count", by="operation, status_code"), "reqps"),
            panel("Latency p99", [(
                f"histogram_quantile(0.99, sum by (le, operation) (rate(cortex_dynamo_request_duration_seconds_bucket{sel()}{RATE})))",
                "{{operation}}")], "s"),
            panel("Throttled / s", rate("cortex_dynamo_throttled_total")),
            panel("Pages per query", quantiles("cortex_dynamo_query_pages_count")),
        ]),
        ("S3 (chunks)", [
            panel("Requests / s", rate("cortex_s3_request_duration_seconds_count", by="operation, status_code"), "reqps"),
            panel("Latency p99", [(
                f"histogram_quantile(0.99, sum by (le, operation) (rate(cortex_s3_request_duration_seconds_bucket{sel()}{RATE})))",
                "{{operation}}")], "s"),
        ]),
        ("Caches (memcached and in-process)", [
            panel("Hit ratio", [(
                f"sum by (name) (rate(cortex_cache_hits_total{sel(cache_sel)}{RATE})) / "
                f"sum by (name) (rate(cortex_cache_fetched_keys_total{sel(cache_sel)}{RATE}))",
                "{{name}}")], "percentunit"),
            panel("Requests / s", rate("cortex_cache_request_duration_seconds_count", cache_sel, "name, method, status_code"), "reqps"),
            panel("Latency p99", [(
                f"histogram_quantile(0.99, sum by (le, name, method) (rate(cortex_cache_request_duration_seconds_bucket{sel(cache_sel)}{RATE})))",
                "{{name}} {{method}}")], "s"),
        ]),
        ("Table-manager", [
            panel("Syncs / s", rate("cortex_table_manager_sync_duration_seconds_count", by="status_code")),
            panel("Since the last successful sync",
                  f"time() - max(cortex_table_manager_sync_success_timestamp_seconds{sel()})", "s"),
            panel("Table create / delete failures", [
                (f"max(cortex_table_manager_create_failures{sel()})", "create"),
                (f"max(cortex_table_manager_delete_failures{sel()})", "delete"),
            ]),
            panel("Provisioned capacity", f"max by (op, table) (cortex_table_capacity_units{sel()})"),
        ]),
    ])


def resources():
    # container_* come from the kubelets' cAdvisor (k8s/retrieval.yaml scrapes them), not from us.
    ns = 'cluster=~"$cluster", namespace=~"$namespace", container!="", container!="POD"'
    return dashboard("cortex-resources", "Cortex / Resources", [
        ("CPU and memory by container", [
            panel("CPU (cores)", f"sum by (pod) (rate(container_cpu_usage_seconds_total{{{ns}}}{RATE}))"),
            panel("Working set", f"sum by (pod) (container_memory_working_set_bytes{{{ns}}})", "bytes"),
        ]),
        ("What drives them", [
            panel("Series per ingester", f"sum by (instance) (cortex_ingester_memory_series{sel()})"),
            panel("Chunks per ingester", f"sum by (instance) (cortex_ingester_memory_chunks{sel()})"),
            panel("In-flight requests", f"sum by (job) (cortex_inflight_requests{sel()})"),
        ]),
    ], extra_vars=[("namespace", 'label_values(container_memory_working_set_bytes{cluster=~"$cluster"}, namespace)')])


DASHBOARDS = {
    "writes.json": writes,
    "reads.json": reads,
    "queries.json": queries,
    "chunks.json": chunks,
    "ruler.json": ruler,
    "object-store.json": object_store,
    "resources.json": resources,
}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    check = "--check" in sys.argv[1:]
    stale = []
    for name, build in DASHBOARDS.items():
        text = json.dumps(build(), indent=2, sort_keys=True) + "\n"
        path = os.path.join(here, name)
        if check:
            try:
                with open(path) as f:
                    if f.read() != text:
                        stale.append(name)
            except FileNotFoundError:
                stale.append(name)
        else:
            with open(path, "w") as f:
                f.write(text)
    if stale:
        sys.exit(f"dashboards out of date: {', '.join(stale)}; run python3 dashboards/generate.py")
    print(f"dashboards: {len(DASHBOARDS)} {'up to date' if check else 'written'}")


if __name__ == "__main__":
    main()
