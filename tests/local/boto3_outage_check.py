#!/usr/bin/env python3
"""Issue #5, checked as a new user would do it: a plain boto3 client against `ferry local up`.

Starts `ferry local up --region-count 3`, reads its ready lines, and with nothing but boto3 (dummy
credentials, region name = the region, endpoint = the printed one) writes plain, unstamped items
(put_item, update_item, delete_item; no Ferry attribute anywhere) into every region: some keys
written by one region only, some by all of them, one item per region holding every DynamoDB type
(a 38-digit number, binary, string/number/binary sets, nested lists and maps, ...). Then it runs
`ferry local outage <region> --for 10s` as a separate process, as the README tells a user to,
keeps writing into every region during the outage (the cut-off region's own clients too), and
checks:

* while cut off, the region really is cut off (what it writes does not reach the others and the
  reverse), so the check cannot pass on an outage that does nothing;
* afterwards, within the timeout, every region's scan holds the same items with the same
  attributes (tombstones, items with the marker `ferry_deleted`, read as absent; nothing else is
  ignored; values compared as DynamoDB does: sets unordered, numbers by value), twice in a row;
* a key written by one region only holds exactly that region's last write (plus Ferry's stamp,
  with that region as origin), and a key deleted and not rewritten is absent everywhere;
* no record reached a DLQ;
* every read-modify-write read of a key one region writes alone showed that region's last write;
* stopping `ferry local up` (SIGTERM, as Ctrl-C would) ends it and every process it started.

Ordinary application code also writes back what it read (issue #15), and so do the writers here,
before and during the outage: read-modify-write puts (get_item, change one field, put_item of the
whole item as read, Ferry's attributes included; the put sometimes a moment after the read, so
a newer version may have arrived in between) on keys one region writes and on shared keys, and
restores (an item as read is remembered, the key deleted, the copy put back a moment later with
one field changed). Some keys are *adopted*: written once by one region before the outage and
from then on only by the next region, whose first writes are such a restore or a
read-modify-write put carrying the first region's version (for half of them also their last
write; the other half are written on at random). A restored or read-modify-written item
is its writer's last write like any other: the checks above hold for it, with its writer as the
origin of the stamp. Ferry's attributes (`ferry_ts`, `ferry_origin`, `ferry_deleted`, `ttl`,
`ferry_sum`) are never part of what a key must hold, but every region must hold the same ones.

Run by `make test` (target `local-up-check`); by hand:
    cargo build -p ferry-cli --bin ferry && .venv/bin/python tests/local/boto3_outage_check.py
Exits 0 on success, 1 with the differing keys on failure, 2 when the sandbox could not start.
"""

import argparse
import atexit
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal

import boto3
from botocore.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Ferry's attribute names (the defaults the sandbox runs with; see client/README.md).
TS, ORIGIN, DELETED, TTL = "ferry_ts", "ferry_origin", "ferry_deleted", "ttl"
# The seal of a version Ferry wrote (a digest of the item): one more attribute of Ferry's.
SUM = "ferry_sum"
FERRY_ATTRS = {TS, ORIGIN, DELETED, TTL, SUM}
PK = "pk"


def log(msg):
    print(f"[boto3-outage-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class CheckFailed(Exception):
    pass


class SandboxFailed(Exception):
    pass


# ---------------------------------------------------------------- processes


def proc_start_time(pid):
    """The kernel's start time of a pid (to tell a pid from a reused one), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie is dead, only not reaped yet
        return None
    return fields[19]


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def descendants(root):
    """{pid: start time} of every live descendant of `root` (from /proc)."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(name))
    out, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            start = proc_start_time(child)
            if start is not None:
                out[child] = start
                todo.append(child)
    return out


class Sandbox:
    """A `ferry local up` process and everything it started."""

    def __init__(self, ferry, regions, state_dir, ready_timeout):
        self.ferry = ferry
        self.state_dir = state_dir
        self.env = dict(os.environ, FERRY_STATE_DIR=state_dir)
        self.stderr_path = os.path.join(state_dir, "ferry-local-up.stderr")
        self.stderr = open(self.stderr_path, "w+b")
        self.lines = queue.Queue()
        self.children = {}
        self.stopped = False
        cmd = [ferry, "local", "up", "--region-count", str(regions)]
        log(f"starting: {' '.join(cmd)}")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=self.env,
            cwd=ROOT,
        )
        atexit.register(self.stop)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self.endpoints = self._wait_ready(regions, ready_timeout)
        self.children = descendants(self.proc.pid)

    def _read_stdout(self):
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def stderr_tail(self, n=60):
        try:
            with open(self.stderr_path, "rb") as f:
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-n:])

    def _wait_ready(self, regions, timeout):
        """Parses `<region> dynamodb=<url> sqs=<url> table=<name>`, one line per region."""
        deadline = time.monotonic() + timeout
        endpoints = []
        while len(endpoints) < regions:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.01)) if left > 0 else None
            except queue.Empty:
                line = None
            if line is None:
                if self.proc.poll() is not None:
                    why = f"exited with status {self.proc.returncode} before it was ready"
                else:
                    why = f"printed {len(endpoints)} of {regions} ready lines in {timeout:g} s"
                raise SandboxFailed(
                    f"`ferry local up` {why}.\n--- its stderr ---\n{self.stderr_tail()}"
                )
            parts = line.split()
            fields = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
            if len(parts) != 4 or set(fields) != {"dynamodb", "sqs", "table"}:
                log(f"ferry local up printed (not a ready line): {line}")
                continue
            for name in ("dynamodb", "sqs"):
                if not fields[name].startswith("http://127.0.0.1:"):
                    raise SandboxFailed(f"{name} endpoint is not on loopback: {line}")
            endpoints.append(dict(region=parts[0], **fields))
            log(f"ready: {line}")
        return endpoints

    def outage(self, region, seconds):
        cmd = [self.ferry, "local", "outage", region, "--for", f"{seconds}s"]
        log(f"running: {' '.join(cmd)}")
        out = subprocess.run(cmd, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=30)
        answer = (out.stdout + out.stderr).strip()
        if out.returncode != 0 or not answer.startswith("ok"):
            raise CheckFailed(f"`ferry local outage` failed (status {out.returncode}): {answer}")
        log(f"ferry local outage: {answer}")

    def stop(self):
        """SIGTERM (as Ctrl-C would), SIGKILL after 20 s; returns the processes left behind."""
        if self.stopped:
            return []
        self.stopped = True
        if self.proc.poll() is None:
            # Children started since the ready lines count too.
            self.children.update(descendants(self.proc.pid))
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log("`ferry local up` ignored SIGTERM for 20 s: SIGKILL")
                self.proc.kill()
                self.proc.wait()
        # Its children may take a moment to die (PR_SET_PDEATHSIG, process-group kill).
        deadline = time.monotonic() + 5
        while True:
            left = {p: s for p, s in self.children.items() if proc_start_time(p) == s}
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        leftovers = [(p, proc_cmdline(p)) for p in left]
        for pid in left:  # don't leave them running, whatever the verdict
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.stderr.close()
        return leftovers


# ---------------------------------------------------------------- values, as DynamoDB compares them


def canon(value):
    """A hashable form of an AttributeValue: equal exactly when DynamoDB holds the same value."""
    (kind, v), = value.items()
    if kind == "N":
        return ("N", Decimal(v))
    if kind in ("S", "B", "BOOL"):
        return (kind, v)
    if kind == "NULL":
        return ("NULL", True)
    if kind == "SS" or kind == "BS":
        return (kind, frozenset(v))
    if kind == "NS":
        return ("NS", frozenset(Decimal(n) for n in v))
    if kind == "L":
        return ("L", tuple(canon(x) for x in v))
    if kind == "M":
        return ("M", frozenset((k, canon(x)) for k, x in v.items()))
    raise ValueError(f"unknown attribute type {kind}")


def canon_item(item):
    return {k: canon(v) for k, v in item.items()}


def show(item, limit=300):
    if item is None:
        return "absent"
    text = repr({k: v for k, v in sorted(item.items())})
    return text if len(text) <= limit else text[:limit] + "..."


def item_diff(want, got):
    """What differs between two canonical items, attribute by attribute."""
    if got is None:
        return "absent"
    out = []
    for k in sorted(set(want) | set(got)):
        if want.get(k) != got.get(k):
            out.append(f"{k}: expected {show_value(want.get(k))}, holds {show_value(got.get(k))}")
    return "; ".join(out)


def show_value(v, limit=80):
    text = "absent" if v is None else repr(v)
    return text if len(text) <= limit else text[:limit] + "..."


def app_view(item):
    """An item without Ferry's stamp and seal: what the application wrote."""
    return None if item is None else {k: v for k, v in item.items() if k not in (TS, ORIGIN, SUM)}


def without_ferry(item):
    """A raw item (AttributeValue dict) without any Ferry attribute: what the application wrote."""
    return {k: v for k, v in item.items() if k not in FERRY_ATTRS}


# ---------------------------------------------------------------- the workload


def everything_item(pk, region):
    """One item holding every DynamoDB type, at the edges that lose data when mishandled."""
    return {
        PK: {"S": pk},
        "n38": {"N": "12345678901234567890123456789012345678"},
        "n38neg": {"N": "-9.9999999999999999999999999999999999999E+125"},
        "tiny": {"N": "1E-130"},
        "bin": {"B": bytes(range(256))},
        "zero_byte": {"B": b"\x00"},
        "empty_bin": {"B": b""},
        "ss": {"SS": ["eu", "us", "ap", "ünïcødé ✓", region]},
        "ns": {"NS": ["1", "-0.5", "12345678901234567890123456789012345678", "3.14"]},
        "bs": {"BS": [b"\x00\x01", b"\xff\xfe", b"ferry"]},
        "s": {"S": "plain text, ünïcødé ✓, emoji 🛳"},
        "empty_s": {"S": ""},
        "t": {"BOOL": True},
        "f": {"BOOL": False},
        "nul": {"NULL": True},
        "list": {"L": [{"N": "1"}, {"S": "two"}, {"L": [{"B": b"\x03"}]}, {"M": {}}]},
        "map": {
            "M": {
                "inner": {"M": {"ss": {"SS": ["x", "y"]}, "n": {"N": "0.000001"}}},
                "l": {"L": []},
            }
        },
    }


class Writer:
    """Plain boto3 writes into one region, and the model of what the keys only it writes hold."""

    def __init__(self, endpoint, rng):
        self.region = endpoint["region"]
        self.table = endpoint["table"]
        self.rng = rng
        self.client = boto3.client(
            "dynamodb",
            endpoint_url=endpoint["dynamodb"],
            region_name=self.region,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(
                retries={"max_attempts": 4, "mode": "standard"},
                connect_timeout=3,
                read_timeout=15,
            ),
        )
        self.model = {}  # owned key -> item (AttributeValue dict) or None (deleted)
        self.writes = 0
        self.seq = 0
        self.adopted = []  # keys another region wrote first, written only by this one since
        self.pending = []  # [(due, seq, action)]: the second half of a delayed write
        self.read_errors = []  # own keys whose read did not show this region's last write
        self.counts = {"rmw": 0, "restore": 0}

    def own_key(self, tag):
        return f"own-{self.region}-{tag}"

    # Each method does one request and keeps the model in step.
    def put(self, pk, owned=True, **attrs):
        self.seq += 1
        item = {PK: {"S": pk}, "by": {"S": self.region}, "seq": {"N": str(self.seq)}}
        item.update(attrs)
        self.client.put_item(TableName=self.table, Item=item)
        self.writes += 1
        if owned:
            self.model[pk] = item

    def put_raw(self, item):
        self.client.put_item(TableName=self.table, Item=item)
        self.writes += 1
        self.model[item[PK]["S"]] = item

    def delete(self, pk, owned=True):
        self.client.delete_item(TableName=self.table, Key={PK: {"S": pk}})
        self.writes += 1
        if owned:
            self.model[pk] = None

    def update(self, pk, kind):
        """One of a few update shapes whose effect the model applies too."""
        key = {PK: {"S": pk}}
        cur = dict(self.model.get(pk) or {PK: {"S": pk}})
        self.seq += 1
        if kind == "set":
            self.client.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="SET #c = :c, #note = :note",
                ExpressionAttributeNames={"#c": "counter", "#note": "note"},
                ExpressionAttributeValues={
                    ":c": {"N": str(self.seq)},
                    ":note": {"S": f"updated in {self.region} #{self.seq}"},
                },
            )
            cur["counter"] = {"N": str(self.seq)}
            cur["note"] = {"S": f"updated in {self.region} #{self.seq}"}
        elif kind == "remove":
            self.client.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="REMOVE #note, #seq",
                ExpressionAttributeNames={"#note": "note", "#seq": "seq"},
            )
            cur.pop("note", None)
            cur.pop("seq", None)
        elif kind == "add_set":
            tag = f"t{self.rng.randrange(6)}"
            self.client.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="ADD #tags :t",
                ExpressionAttributeNames={"#tags": "tags"},
                ExpressionAttributeValues={":t": {"SS": [tag, self.region]}},
            )
            old = set(cur.get("tags", {}).get("SS", []))
            cur["tags"] = {"SS": sorted(old | {tag, self.region})}
        elif kind == "del_set":
            tag = f"t{self.rng.randrange(6)}"
            self.client.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="DELETE #tags :t",
                ExpressionAttributeNames={"#tags": "tags"},
                ExpressionAttributeValues={":t": {"SS": [tag]}},
            )
            left = set(cur.get("tags", {}).get("SS", [])) - {tag}
            if left:
                cur["tags"] = {"SS": sorted(left)}
            else:
                cur.pop("tags", None)
        else:
            raise ValueError(kind)
        self.writes += 1
        self.model[pk] = cur

    # Writes of what the application read (issue #15): the item as get_item returned it, Ferry's
    # attributes included, one field changed.
    def read(self, pk, owned=True):
        """get_item as an application does it; a tombstone reads as absent (client/README.md).
        For a key this region writes alone, the read must show its last write."""
        raw = self.client.get_item(TableName=self.table, Key={PK: {"S": pk}}, ConsistentRead=True).get("Item")
        if owned:
            want = self.model.get(pk)
            want = None if want is None else canon_item(want)
            # A tombstone an update_item brought back holds the update's attributes until Ferry
            # lifts the marker: what it holds then is the application's write all the same.
            app = None if raw is None else without_ferry(raw)
            got = None if app is None or (DELETED in raw and set(app) == {PK}) else canon_item(app)
            if got != want:
                self.read_errors.append(
                    f"{pk} read in {self.region}: expected its last write {show(want)}, read {show(got)}"
                )
        return None if raw is None or DELETED in raw else raw

    def later(self, delay, action):
        """Runs `action` once `delay` seconds have passed (see run_due)."""
        self.seq += 1
        self.pending.append((time.monotonic() + delay, self.seq, action))
        self.pending.sort(key=lambda p: (p[0], p[1]))

    def run_due(self, everything=False):
        now = time.monotonic()
        while self.pending and (everything or self.pending[0][0] <= now):
            _, _, action = self.pending.pop(0)
            action()

    def put_back(self, pk, item, owned):
        """put_item of an item made from a read: the application's last write of the key."""
        self.client.put_item(TableName=self.table, Item=item)
        self.writes += 1
        if owned:
            self.model[pk] = without_ferry(item)

    def rmw(self, pk, owned=True, delay=0.0):
        """Read-modify-write: get_item, change one field, put_item of the whole item as read
        (now, or `delay` s later: a newer version may land in between). Nothing if absent."""
        item = self.read(pk, owned)
        if item is None:
            return False
        self.seq += 1
        item = dict(item, rmw={"S": f"read-modify-write in {self.region} #{self.seq}"})
        self.counts["rmw"] += 1
        if delay > 0:
            self.later(delay, lambda: self.put_back(pk, item, owned))
        else:
            self.put_back(pk, item, owned)
        return True

    def restore(self, pk, owned=True, delay=0.5):
        """Remember the item as read, delete the key, put the copy back `delay` s later with one
        field changed. Nothing if absent."""
        item = self.read(pk, owned)
        if item is None:
            return False
        self.delete(pk, owned)
        self.seq += 1
        item = dict(item, restored={"S": f"restored in {self.region} #{self.seq}"})
        self.counts["restore"] += 1
        self.later(delay, lambda: self.put_back(pk, item, owned))
        return True

    def random_op(self, tags, shared_keys):
        """One random write: mostly to keys only this region writes, some to shared keys."""
        self.run_due()
        r = self.rng.random()
        if r < 0.2:
            pk = self.rng.choice(shared_keys)
            x = self.rng.random()
            if x < 0.2:
                self.delete(pk, owned=False)
            elif x < 0.4:
                self.rmw(pk, owned=False, delay=self.rng.choice([0, 0, 0.2, 0.6]))
            elif x < 0.5:
                self.restore(pk, owned=False, delay=self.rng.uniform(0.05, 1.0))
            else:
                self.put(pk, owned=False, note={"S": f"shared write from {self.region}"})
            return
        # Half the adopted keys only: the other half keep their first write as their last.
        keys = [self.own_key(t) for t in tags] + self.adopted[: (len(self.adopted) + 1) // 2]
        pk = self.rng.choice(keys)
        if r < 0.4:
            self.put(pk, payload={"S": "x" * self.rng.randrange(0, 400)}, n={"N": str(self.rng.random())})
        elif r < 0.6:
            # REMOVE / DELETE on a missing item: DynamoDB's result is not worth modelling here.
            live = self.model.get(pk) is not None
            self.update(pk, self.rng.choice(["set", "remove", "add_set", "del_set"] if live else ["set", "add_set"]))
        elif r < 0.75:
            self.rmw(pk, delay=self.rng.choice([0, 0, 0.3]))
        elif r < 0.82:
            self.restore(pk, delay=self.rng.uniform(0.05, 1.5))
        else:
            self.delete(pk)


# ---------------------------------------------------------------- reading regions


def scan_live(writer):
    """Every live item of a region (tombstones read as absent), canonical, by key."""
    items, tombstones = {}, 0
    kwargs = dict(TableName=writer.table, ConsistentRead=True)
    while True:
        page = writer.client.scan(**kwargs)
        for raw in page.get("Items", []):
            if DELETED in raw:
                tombstones += 1
                continue
            items[raw[PK]["S"]] = canon_item(raw)
        if "LastEvaluatedKey" not in page:
            return items, tombstones
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def differing(scans):
    """Keys whose live item is not the same in every region."""
    keys = set().union(*(s for s in scans.values()))
    out = []
    for k in sorted(keys):
        views = [s.get(k) for s in scans.values()]
        if any(v != views[0] for v in views[1:]):
            out.append(k)
    return out


def expected_errors(writers, scans):
    """What a key written by one region only must hold: its last write, stamped by it."""
    errors = []
    for w in writers:
        for pk, want in sorted(w.model.items()):
            want = None if want is None else canon_item(want)
            for region, scan in scans.items():
                got = scan.get(pk)
                if want is None:
                    if got is not None:
                        errors.append(f"{pk} in {region}: deleted by {w.region} but holds {show(got)}")
                    continue
                if app_view(got) != want:
                    errors.append(f"{pk} in {region}: {item_diff(want, app_view(got))}")
                elif got.get(ORIGIN) != ("S", w.region) or TS not in got:
                    errors.append(
                        f"{pk} in {region}: stamp {got.get(TS)}/{got.get(ORIGIN)}, expected origin {w.region}"
                    )
    return errors


def dlq_depths(endpoints):
    """Messages in every DLQ of the sandbox, by queue name."""
    out = {}
    for e in endpoints:
        sqs = boto3.client(
            "sqs",
            endpoint_url=e["sqs"],
            region_name=e["region"],
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        for url in sqs.list_queues(QueueNamePrefix="ferry-").get("QueueUrls", []):
            if not url.endswith("-dlq"):
                continue
            attrs = sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
            out[url.rsplit("/", 1)[-1]] = sum(int(v) for v in attrs.values())
    return out


# ---------------------------------------------------------------- the check


def run(args, sandbox):
    rng = random.Random(args.seed)
    writers = [Writer(e, random.Random(rng.random())) for e in sandbox.endpoints]
    by_region = {w.region: w for w in writers}
    cut = args.cut or writers[-1].region
    if cut not in by_region:
        raise CheckFailed(f"--cut {cut}: not one of {sorted(by_region)}")
    shared = [f"shared-{i}" for i in range(12)]
    tags = [str(i) for i in range(args.keys)]

    # 1. Before the outage: every region writes, all three kinds of request, every type.
    for w in writers:
        w.put_raw(everything_item(w.own_key("types"), w.region))
        for t in tags:
            w.put(w.own_key(t), payload={"S": f"first write of {t}"})
        for t in tags[::3]:
            w.update(w.own_key(t), "add_set")
        for t in tags[1::3]:
            w.delete(w.own_key(t))
        w.update(w.own_key("born-by-update"), "set")  # update_item creating an item
        w.put(w.own_key("gone"))
        w.put(w.own_key("reborn"), v={"N": "1"})
        for pk in shared:
            w.put(pk, owned=False)
    for w in writers:  # a delete that sticks, and one the same region undoes
        w.delete(w.own_key("gone"))
        w.delete(w.own_key("reborn"))
    time.sleep(2)  # the hard deletes become tombstones meanwhile
    for w in writers:
        w.put(w.own_key("reborn"), v={"N": "2"})
        w.update(w.own_key(tags[1]), "set")  # update_item on a deleted key brings it back
    for w in writers:  # writing back what was read (issue #15), before the outage too
        w.rmw(w.own_key(tags[min(5, len(tags) - 1)]))
        w.restore(w.own_key(tags[min(3, len(tags) - 1)]), delay=0.3)
        w.rmw(w.rng.choice(shared), owned=False)
    adopt(writers, args)  # (takes seconds: the restores' copies are put back after it)
    for w in writers:
        w.run_due(everything=True)
    before = sum(w.writes for w in writers)
    log(f"made {before} writes before the outage ({len(writers)} regions, seed {args.seed})")

    # 2. The outage, from another process, as a user would; everybody keeps writing.
    sandbox.outage(cut, args.outage_seconds)
    started = time.monotonic()
    # The adopters' first writes, while the region is cut off: each carries back the version of
    # the region that wrote the key first (half restores, half read-modify-write puts). Half the
    # adopted keys are written again by the random writes below; for the other half these stay
    # the last write.
    for w in writers:
        for i, pk in enumerate(w.adopted):
            if i % 2 == 0:
                w.restore(pk, delay=w.rng.uniform(0.1, 2.0))
            else:
                w.rmw(pk, delay=w.rng.uniform(0.0, 2.0))
    outage_end = started + args.outage_seconds
    write_until = started + args.write_seconds
    period = 1.0 / args.rate
    probe_done = False
    probe_at = started + 0.6 * min(args.write_seconds, args.outage_seconds)
    next_at = time.monotonic()
    while time.monotonic() < write_until:
        for w in writers:
            w.random_op(tags, shared)
        now = time.monotonic()
        # Probe the cut: keys first written well inside the outage must not cross it.
        # (some seconds in, and done well before the region comes back).
        if not probe_done and now >= probe_at and now + 2 < outage_end:
            probe_done = True
            probe_isolation(writers, cut, args)
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))
    if not probe_done:
        log("outage shorter than the probe needs: isolation not probed")
    for w in writers:  # delayed halves still due: done now
        w.run_due(everything=True)
    for w in writers:  # the last word on some keys, after the outage
        w.update(w.own_key(tags[0]), "set")
        w.delete(w.own_key(tags[2]))
    during = sum(w.writes for w in writers) - before
    log(f"made {during} more writes during/after the outage of {cut} ({args.outage_seconds} s)")
    log(
        "of which read-modify-write puts: "
        + ", ".join(f"{w.region} {w.counts['rmw']}" for w in writers)
        + "; restores: "
        + ", ".join(f"{w.region} {w.counts['restore']}" for w in writers)
    )
    if "is cut off" not in sandbox.stderr_tail(10_000):
        raise CheckFailed("`ferry local up` never reported the region cut off")

    # 3. Wait for every region to hold the same items, twice in a row.
    wait_from = time.monotonic()
    deadline = wait_from + args.timeout
    last, polls = None, 0
    while True:
        polls += 1
        scans = {}
        for w in writers:
            scans[w.region], _ = scan_live(w)
        diff = differing(scans)
        errors = expected_errors(writers, scans) if not diff else []
        stable = not diff and not errors and scans == last
        if stable:
            break
        last = scans if not diff and not errors else None
        if time.monotonic() > deadline:
            report_failure(writers, scans, diff, errors)
        time.sleep(2)
    read_errors = [e for w in writers for e in w.read_errors]
    if read_errors:
        raise CheckFailed(
            f"{len(read_errors)} reads of keys written by one region did not show its last write:\n"
            + "\n".join("  " + e for e in read_errors[:40])
        )
    converged = time.monotonic() - max(outage_end, wait_from)
    tomb = {w.region: scan_live(w)[1] for w in writers}
    dlq = dlq_depths(sandbox.endpoints)
    if any(dlq.values()):
        raise CheckFailed(f"records reached a DLQ: {dlq}")
    owned = sum(len(w.model) for w in writers)
    deleted = sum(1 for w in writers for v in w.model.values() if v is None)
    came_back = "is back" in sandbox.stderr_tail(10_000)
    log(
        f"converged {max(converged, 0):.1f} s after {cut} came back"
        f"{'' if came_back else ' (the sandbox did not say it was back!)'}: "
        f"{len(next(iter(last.values())))} live items identical in {len(writers)} regions "
        f"(tombstones: {tomb}); {owned} single-region keys hold their region's last write "
        f"({deleted} deleted ones absent everywhere); {polls} polls; DLQs empty ({len(dlq)} queues)"
    )
    if not came_back:
        raise CheckFailed("`ferry local up` never reported the region back")


def probe_isolation(writers, cut, args):
    """While cut off, a key the cut region writes must not reach the others, nor the reverse."""
    tag = f"probe-{args.seed}"
    for w in writers:
        w.put(w.own_key(tag), probe={"S": "written during the outage"})
    time.sleep(1.0)
    leaks = []
    for w in writers:
        for other in writers:
            if other is w or (w.region != cut and other.region != cut):
                continue
            got = other.client.get_item(
                TableName=other.table, Key={PK: {"S": w.own_key(tag)}}, ConsistentRead=True
            ).get("Item")
            if got is not None:
                leaks.append(f"{w.own_key(tag)} (written in {w.region}) is in {other.region}")
    if leaks:
        raise CheckFailed("the outage did not cut the region off: " + "; ".join(leaks))
    log(f"isolation probe: nothing crossed between {cut} and the others during the outage")


def adopt(writers, args):
    """Keys written once by one region, then handed to the next: seeded here, each must reach
    every region (stamped by its first writer) before the next region takes it over."""
    seeds = {}
    for i, w in enumerate(writers):
        heir = writers[(i + 1) % len(writers)]
        for j in range(args.adopted):
            pk = f"adopt-{w.region}-{j}"
            w.put(pk, owned=False, first={"S": f"written by {w.region}, adopted by {heir.region}"})
            seeds[pk] = (w, heir)
    deadline = time.monotonic() + 60
    waiting = dict(seeds)
    while waiting:
        for pk, (w, heir) in list(waiting.items()):
            copies = []
            for other in writers:
                got = other.client.get_item(
                    TableName=other.table, Key={PK: {"S": pk}}, ConsistentRead=True
                ).get("Item")
                copies.append(got)
            if all(c is not None and c.get(ORIGIN) == {"S": w.region} for c in copies) and all(
                canon_item(c) == canon_item(copies[0]) for c in copies
            ):
                del waiting[pk]
                heir.model[pk] = without_ferry(copies[0])
                heir.adopted.append(pk)
        if waiting and time.monotonic() > deadline:
            raise CheckFailed(f"keys to adopt did not reach every region in 60 s: {sorted(waiting)}")
        if waiting:
            time.sleep(0.3)
    for w in writers:
        w.adopted.sort()
    log(f"{len(seeds)} keys written by one region, stamped and everywhere, adopted by the next")


def report_failure(writers, scans, diff, errors):
    lines = []
    read_errors = [e for w in writers for e in w.read_errors]
    if read_errors:
        lines.append(f"{len(read_errors)} reads of keys written by one region did not show its last write:")
        lines += ["  " + e for e in read_errors[:20]]
    if diff:
        lines.append(f"{len(diff)} keys differ between regions:")
        for k in diff[:20]:
            lines.append(f"  {k}:")
            for region, scan in scans.items():
                lines.append(f"    {region}: {show(scan.get(k))}")
        if len(diff) > 20:
            lines.append(f"  ... and {len(diff) - 20} more: {', '.join(diff[20:])}")
    else:
        lines.append(f"regions agree, but {len(errors)} keys written by one region are wrong:")
        lines += ["  " + e for e in errors[:40]]
        if len(errors) > 40:
            lines.append(f"  ... and {len(errors) - 40} more")
    raise CheckFailed("\n".join(lines))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ferry", default=os.path.join(ROOT, "target", "debug", "ferry"))
    p.add_argument("--regions", type=int, default=3)
    p.add_argument("--cut", help="the region cut off (default: the last one)")
    p.add_argument("--outage-seconds", type=int, default=10)
    p.add_argument("--write-seconds", type=float, default=10, help="writing after the outage began")
    p.add_argument("--rate", type=float, default=25, help="write rounds per second (one write per region each)")
    p.add_argument("--keys", type=int, default=24, help="keys each region writes alone")
    p.add_argument("--adopted", type=int, default=4, help="keys each region writes first and hands to the next")
    p.add_argument("--timeout", type=float, default=90, help="seconds to converge after the writes end")
    p.add_argument("--ready-timeout", type=float, default=120)
    p.add_argument("--seed", type=int, default=int(os.environ.get("SEED", "0") or 0))
    args = p.parse_args()
    if not os.access(args.ferry, os.X_OK):
        print(f"{args.ferry} is missing: run `cargo build -p ferry-cli --bin ferry` first", file=sys.stderr)
        return 2
    # Loopback only: never a proxy, never real credentials or metadata lookups.
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
        os.environ.pop(var, None)
    # SIGTERM/SIGHUP to this script still stop the sandbox (finally + atexit).
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: sys.exit(128 + s))

    began = time.monotonic()
    state_dir = tempfile.mkdtemp(prefix="ferry-boto3-check-")
    sandbox = None
    status = 0
    try:
        sandbox = Sandbox(args.ferry, args.regions, state_dir, args.ready_timeout)
        run(args, sandbox)
    except SandboxFailed as e:
        log(f"FAILED to start the sandbox: {e}")
        status = 2
    except CheckFailed as e:
        log(f"FAILED: {e}")
        if sandbox is not None:
            print(f"--- ferry local up stderr (tail) ---\n{sandbox.stderr_tail(25)}", flush=True)
        status = 1
    finally:
        if sandbox is not None:
            leftovers = sandbox.stop()
            if leftovers:
                log("FAILED: `ferry local up` left processes behind after SIGTERM (killed now):")
                for pid, cmd in leftovers:
                    print(f"  pid {pid}: {cmd}", flush=True)
                status = status or 1
            elif status == 0:
                log(f"`ferry local up` stopped on SIGTERM; none of its {len(sandbox.children)} child processes is left")
    if status == 0:
        shutil.rmtree(state_dir, ignore_errors=True)
    else:
        log(f"`ferry local up`'s full stderr: {os.path.join(state_dir, 'ferry-local-up.stderr')}")
    log(f"{'OK' if status == 0 else 'FAILED'} in {time.monotonic() - began:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
