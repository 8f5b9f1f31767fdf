"""Append-only JSON-lines results: one record per cell, written as soon as it is measured,
so an interrupted run loses nothing and a rerun skips what is already there.

    store = ResultsStore("runs/default/results.jsonl")
    if store.key(cell) not in store.done(list(cell)): store.append({**cell, **metrics})

A record {"update_of": {...fields...}, **more} adds `more` to the latest earlier record whose
fields match (a second phase of a cell, measured after its record was safe on disk);
records() returns the records with their updates folded in.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


class ResultsStore:
    def __init__(self, path):
        self.path = Path(path)

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        with self.path.open() as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:  # a line cut short by a kill: the cell reruns
                        continue
                    if "update_of" in record:
                        _fold(out, record)
                    else:
                        out.append(record)
        return out

    @staticmethod
    def key(cell: dict) -> str:
        return json.dumps(cell, sort_keys=True)

    def done(self, key_fields: list[str]) -> set[str]:
        return {self.key({k: r.get(k) for k in key_fields}) for r in self.records()}

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _fold(records: list[dict], update: dict) -> None:
    match = update["update_of"]
    for record in reversed(records):
        if all(record.get(k) == v for k, v in match.items()):
            record.update({k: v for k, v in update.items() if k != "update_of"})
            return
