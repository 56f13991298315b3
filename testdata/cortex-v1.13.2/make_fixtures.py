#!/usr/bin/env python3
"""Regenerates the Cortex v1.13.2 chunk fixtures in this directory (see README.md).

Not part of the build or the tests: it needs a Cortex v1.13.2 binary (built from its vendored
source, never committed), dynalite and s3rver (scripts/install-peers.sh) and boto3.

    python3 make_fixtures.py --cortex /path/to/cortex [--out .]

For each encoding Cortex reads (1 DoubleDelta, 2 Varbit, 3 Bigchunk, 4 PrometheusXorChunk) it
starts Cortex with `-ingester.chunk-encoding=<n>` on a fresh tenant, remote-writes the dataset of
dataset.json (written here first, values as exact float64 bit patterns), asks the ingester to
flush, stops it, and finally dumps every index row (DynamoDB scan) and chunk object (S3) Cortex
wrote.
"""
import argparse
import base64
import json
import math
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3

ENCODINGS = {1: "doubledelta", 2: "varbit", 3: "bigchunk", 4: "prometheusxor"}
T0 = 1622505600000  # 2021-06-01T00:00:00Z
INDEX_PREFIX = "cortex_index_"
BUCKET = "cortex-chunks"
SCHEMA_FROM = "2021-05-01"
STALE_NAN = 0x7FF0000000000002


def dataset():
    """Series that exercise every branch of the encodings: constant values (varbit zero encoding,
    doubledelta 0-byte values), integer counters (integer double deltas), float gauges (XOR,
    direct and 8-byte values), irregular timestamps (every delta-of-delta bucket), extreme and
    special values (±huge, tiny, -0, stale-marker NaN)."""
    rnd = random.Random(20210601)
    out = []

    def series(name, kind, samples):
        out.append({"labels": {"__name__": name, "kind": kind, "job": "fixtures"},
                    "samples": [[t, struct.unpack("<Q", struct.pack("<d", v))[0]] for t, v in samples]})

    series("fixture_constant", "constant", [(T0 + i * 15000, 1.0) for i in range(480)])
    t, v, s = T0, 0.0, []
    for i in range(480):
        t += 15000 + rnd.randint(-40, 40)
        v += rnd.choice([0, 0, 1, 2, 3, 17, 250, 40000])
        s.append((t, v))
    series("fixture_counter", "counter", s)
    s = []
    for i in range(480):
        s.append((T0 + i * 15000 + rnd.randint(0, 3), math.sin(i / 10) * 100 + rnd.random()))
    series("fixture_gauge", "gauge", s)
    t, s = T0, []
    specials = [1e15, -1e15, 5e-324, -0.0, 1e300, -2.5, float("inf"), 3.0, 123456789.125]
    for i in range(300):
        t += rnd.choice([1, 1000, 15000, 15000, 15000, 60000, 600000, 15000 + rnd.randint(-5000, 5000)])
        if i == 150:
            bits = STALE_NAN
            s.append((t, struct.unpack("<d", struct.pack("<Q", bits))[0]))
            continue
        v = specials[i % len(specials)] if i % 7 == 0 else rnd.uniform(-1e6, 1e6)
        s.append((t, v))
    series("fixture_irregular", "irregular", s)
    # The stale NaN must keep its exact bits: patch them in after float round trips.
    out[3]["samples"][150][1] = STALE_NAN
    return out


# --- remote write without dependencies: hand-made protobuf + literal-only snappy -----------------

def varint(n):
    b = bytearray()
    n &= (1 << 64) - 1
    while n >= 0x80:
        b.append((n & 0x7F) | 0x80)
        n >>= 7
    b.append(n)
    return bytes(b)


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def write_request(ds):
    body = b""
    for s in ds:
        ts = b""
        for k in sorted(s["labels"]):
            ts += field(1, 2, field(1, 2, k.encode()) + field(2, 2, s["labels"][k].encode()))
        for t, bits in s["samples"]:
            sample = field(1, 1, struct.pack("<Q", bits)) + field(2, 0, varint(t))
            ts += field(2, 2, sample)
        body += field(1, 2, ts)
    return body


def snappy_literal(data):
    """A valid snappy block made of literals only (no compression needed for a test push)."""
    out = bytearray(varint(len(data)))
    for i in range(0, len(data), 65536):
        part = data[i:i + 65536]
        n = len(part) - 1
        if n < 60:
            out.append(n << 2)
        elif n < 256:
            out += bytes([60 << 2, n])
        else:
            out += bytes([61 << 2]) + struct.pack("<H", n)
        out += part
    return bytes(out)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} not ready")


def metric(url, name):
    with urllib.request.urlopen(url + "/metrics") as r:
        total = 0.0
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cortex", required=True)
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--peers", default=os.environ.get("PEERS_OPT", "/opt/peers"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="cortex-fixtures-")
    bin_dir = os.path.join(args.peers, "node/node_modules/.bin")
    dport, sport = free_port(), free_port()
    procs = [
        subprocess.Popen([os.path.join(bin_dir, "dynalite"), "--host", "127.0.0.1", "--port", str(dport),
                          "--createTableMs", "10"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([os.path.join(bin_dir, "s3rver"), "-d", os.path.join(work, "s3"), "-a", "127.0.0.1",
                          "-p", str(sport), "--configure-bucket", BUCKET, "--allow-mismatched-signatures"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    os.makedirs(os.path.join(work, "s3"), exist_ok=True)
    try:
        time.sleep(2)
        aws = dict(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
        ddb = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{dport}", **aws)
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sport}", region_name="us-east-1", aws_access_key_id="S3RVER", aws_secret_access_key="S3RVER")
        # The week of the dataset: weekly tables numbered by floor(unix seconds / 604800).
        table = f"{INDEX_PREFIX}{(T0 // 1000) // 604800}"
        ddb.create_table(TableName=table, KeySchema=[{"AttributeName": "h", "KeyType": "HASH"},
                                                     {"AttributeName": "r", "KeyType": "RANGE"}],
                         AttributeDefinitions=[{"AttributeName": "h", "AttributeType": "S"},
                                               {"AttributeName": "r", "AttributeType": "B"}],
                         ProvisionedThroughput={"ReadCapacityUnits": 1, "WriteCapacityUnits": 1})
        ds = dataset()
        with open(os.path.join(args.out, "dataset.json"), "w") as f:
            json.dump({"comment": "samples are [timestamp ms, float64 bits as u64]", "series": ds}, f, indent=1)
        config = os.path.join(work, "cortex.yaml")
        with open(config, "w") as f:
            f.write(f"""auth_enabled: true
schema:
  configs:
  - from: {SCHEMA_FROM}
    store: aws-dynamo
    object_store: s3
    schema: v11
    index:
      prefix: {INDEX_PREFIX}
      period: 168h
storage:
  engine: chunks
  aws:
    dynamodb:
      dynamodb_url: http://x:y@127.0.0.1:{dport}
    s3: http://S3RVER:S3RVER@127.0.0.1:{sport}/{BUCKET}
    s3forcepathstyle: true
ingester:
  lifecycler:
    join_after: 0s
    min_ready_duration: 0s
    final_sleep: 0s
    num_tokens: 512
    ring:
      kvstore:
        store: inmemory
      replication_factor: 1
""")
        body = snappy_literal(write_request(ds))
        for enc, tenant in ENCODINGS.items():
            hport, gport = free_port(), free_port()
            log = open(os.path.join(work, f"cortex-{enc}.log"), "w")
            p = subprocess.Popen([args.cortex, f"-config.file={config}", "-target=distributor,ingester,querier",
                                  f"-server.http-listen-port={hport}", f"-server.grpc-listen-port={gport}",
                                  f"-ingester.chunk-encoding={enc}", "-ingester.flush-period=1h"],
                                 stdout=log, stderr=subprocess.STDOUT, cwd=work)
            base = f"http://127.0.0.1:{hport}"
            wait_http(base + "/ready", 90)
            req = urllib.request.Request(base + "/api/v1/push", data=body, method="POST", headers={
                "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                "X-Prometheus-Remote-Write-Version": "0.1.0", "X-Scope-OrgID": tenant})
            with urllib.request.urlopen(req) as r:
                assert r.status == 200, r.status
            urllib.request.urlopen(urllib.request.Request(base + "/flush", method="POST")).read()
            end = time.time() + 60
            while time.time() < end and metric(base, "cortex_ingester_memory_chunks") > 0:
                time.sleep(0.5)
            stored = metric(base, "cortex_ingester_chunks_stored_total")
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(120)
            except subprocess.TimeoutExpired:
                p.kill()
                raise SystemExit(f"cortex did not stop; log in {work}/cortex-{enc}.log")
            print(f"encoding {enc} ({tenant}): {stored:.0f} chunks stored", file=sys.stderr)
        rows = []
        for page in ddb.get_paginator("scan").paginate(TableName=table):
            for it in page["Items"]:
                rows.append({"table": table, "hash": it["h"]["S"],
                             "range": base64.b64encode(it["r"]["B"]).decode(),
                             "value": base64.b64encode(it["c"]["B"]).decode() if "c" in it else ""})
        rows.sort(key=lambda r: (r["hash"], r["range"]))
        with open(os.path.join(args.out, "index.json"), "w") as f:
            json.dump({"schema_from": SCHEMA_FROM, "schema": "v11", "index_prefix": INDEX_PREFIX,
                       "period": "168h", "rows": rows}, f, indent=1)
        chunks = os.path.join(args.out, "chunks")
        shutil.rmtree(chunks, ignore_errors=True)
        n = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for o in page.get("Contents", []):
                path = os.path.join(chunks, *o["Key"].split("/"))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read())
                n += 1
        print(f"{len(rows)} index rows, {n} chunk objects", file=sys.stderr)
    except BaseException:
        print(f"failed; work directory kept: {work}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(work, ignore_errors=True)
    finally:
        for p in procs:
            p.terminate()


if __name__ == "__main__":
    main()
