"""The end-of-run summary: per stage, counts by status and the rejection / error reasons (grouped by their
leading words), written to `<work_dir>/summary.json`; every rejected or failed row to `rejected.jsonl`."""

from __future__ import annotations

import collections
import json
import os

from fc_jax.data.curate.manifest import Manifest


def reason_key(reason: str) -> str:
    """The reason's kind: the text before its first ':' or '('."""
    for sep in (":", "("):
        reason = reason.split(sep, 1)[0]
    return reason.strip()


def summarize(manifest: Manifest, work_dir: str, notes: dict) -> dict:
    stages: dict = collections.defaultdict(lambda: {"done": 0, "rejected": 0, "error": 0, "reasons": {}})
    rejected = []
    for row in manifest.rows():
        s = stages[row["stage"]]
        s[row["status"]] += 1
        if row["status"] != "done":
            key = f"{row['status']}: {reason_key(row['reason'])}"
            s["reasons"][key] = s["reasons"].get(key, 0) + 1
            rejected.append({k: row[k] for k in ("item", "kind", "stage", "status", "reason")})
    summary = {"stages": dict(stages), "notes": notes}
    with open(os.path.join(work_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(work_dir, "rejected.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rejected)
    return summary
