"""The soak's record checks: sizes of the files a sidecar leaves, a follower of the rotating carbon log,
the ``WatchFinished`` listener, and the after-run recheck that every finished request has one record."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

PREFIX = "soak-e"  # request ids of the soak's engines: soak-e<engine>-<n>


def st_size(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:
        return 0


def recheck(work: Path, engines: int) -> dict:
    """Records = finished requests, checked again from the files a run left (``--recheck WORK``): every
    request the engines finished (their saved ids, in the order they finished) against a full read of
    the carbon log and the rotations still on disk. Requests finished before the oldest record still
    on disk are counted as "rotated away" (the live count covered them during the run)."""
    log = work / "carbon.jsonl"
    ids: dict[str, int] = {}
    for p in [log] + sorted(work.glob("carbon.jsonl.*[0-9]")):
        with open(p, "rb") as fh:
            for line in fh:
                if b'"request_id"' not in line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("type", "request") == "request":
                    ids[rec["request_id"]] = ids.get(rec["request_id"], 0) + 1
    out = {"records_on_disk": len(ids), "duplicates_on_disk": sum(n - 1 for n in ids.values() if n > 1),
           "engines": []}
    missing_all = []
    for i in range(engines):
        z = np.load(work / f"engine{i}.npz")
        order = [f"{PREFIX}{i}-{n}" for n in z["done_n"].tolist()]
        first = next((k for k, rid in enumerate(order) if rid in ids), len(order))
        covered = order[first:]
        missing = [rid for rid in covered if rid not in ids]
        missing_all += missing
        out["engines"].append({"finished": len(order), "finished_before_oldest_record_on_disk": first,
                               "checked": len(covered), "missing": len(missing)})
    out["checked"] = sum(e["checked"] for e in out["engines"])
    out["missing"] = len(missing_all)
    out["missing_examples"] = missing_all[:10]
    return out


class LogFollower:
    """Reads every record the sidecar writes, across rotations (files followed by inode)."""

    def __init__(self, log: Path):
        self.log = log
        self.offsets: dict[int, int] = {}
        self.partial: dict[int, bytes] = {}
        self.ids: set[str] = set()
        self.duplicates = 0
        self.windows = 0
        self.errors = 0  # records that say source "error" (dead-lettered), if any
        self.lines = 0

    def poll(self) -> None:
        paths = [self.log] + sorted(self.log.parent.glob(self.log.name + ".*[0-9]"), reverse=True)
        seen = []
        for p in reversed(paths):  # oldest rotation first
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            seen.append((st.st_ino, p))
        for ino, p in sorted(seen, key=lambda x: -self._age(x[1])):
            off = self.offsets.get(ino, 0)
            if st_size(p) < off:  # the inode was reused (a rotation deleted one file, the new log got its number)
                off = 0
                self.partial.pop(ino, None)
            try:
                with open(p, "rb") as fh:
                    fh.seek(off)
                    data = fh.read()
            except FileNotFoundError:
                continue
            if not data:
                continue
            self.offsets[ino] = off + len(data)
            data = self.partial.pop(ino, b"") + data
            lines = data.split(b"\n")
            if lines[-1]:
                self.partial[ino] = lines[-1]
            for line in lines[:-1]:
                if not line:
                    continue
                self.lines += 1
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                kind = rec.get("type", "request")
                if kind == "window":
                    self.windows += 1
                elif kind == "request":
                    rid = rec.get("request_id", "")
                    if rid in self.ids:
                        self.duplicates += 1
                    else:
                        self.ids.add(rid)
                    if rec.get("source") == "error":
                        self.errors += 1

    def _age(self, p: Path) -> int:
        suffix = p.name[len(self.log.name):].lstrip(".")
        return int(suffix) if suffix.isdigit() else 0


def watch_records(address: str, arrivals: dict, stop: threading.Event) -> None:
    """Arrival time (monotonic) of each record on a WatchFinished stream; reopened after a restart."""
    import grpc

    from llmco2_sidecar._proto import sidecar_pb2 as spb
    from llmco2_sidecar._proto import sidecar_pb2_grpc

    while not stop.is_set():
        ch = grpc.insecure_channel(address)
        try:
            stub = sidecar_pb2_grpc.CarbonSidecarStub(ch)
            call = stub.WatchFinished(spb.WatchRequest(request_id_prefix=PREFIX))
            stopper = threading.Thread(target=lambda: (stop.wait(), call.cancel()), daemon=True)
            stopper.start()
            for rec in call:
                arrivals.setdefault(rec.request_id, time.monotonic())
        except grpc.RpcError:
            pass
        finally:
            ch.close()
        stop.wait(0.2)


# ---- the run --------------------------------------------------------------------------------------
