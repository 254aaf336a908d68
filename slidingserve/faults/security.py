"""Security: tiers bound to keys, constant-time key comparison, no key in any log, and the
cluster's internal ports documented as internal in the deploy manifests.

* Access: a matrix of (credential, tier header) cases over HTTP; a key may only use its own
  tiers whatever headers it sends (unknown, malformed or missing keys get 401, a tier the key
  lacks 403, and a request that is served must run in a tier the key holds, as echoed back).
* Constant time: ``KeyTable.check`` timed on keys differing from a real one at the first and at
  the last byte, and on the real key (the ratio is reported, not judged: it is a measurement).
* Logs: every file under the Ray session's log directory is searched for every key.
* Manifests: each internal port (GCS, dashboard, Ray client, metrics) that a manifest opens must
  be named on a line that says it is internal.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

INTERNAL_PORTS = {"6379": "GCS", "8265": "dashboard", "10001": "Ray client", "8080": "metrics"}
MANIFESTS = ("manifests/rayservice.yaml", "ray_cluster.yaml")
BODY = {"prompt": "ka ko", "max_tokens": 2, "temperature": 0.0}


def access_cases(all_key: str, batch_key: str) -> list[tuple[str, list[tuple[str, str]], Any]]:
    """(name, headers, expected): expected is a status, or ("served as", tier)."""
    def bearer(k: str) -> tuple[str, str]:
        return ("authorization", f"Bearer {k}")
    return [
        ("no key, tier interactive", [("x-slo-tier", "interactive")], 401),
        ("no key, default tier", [], 401),
        ("empty bearer", [("authorization", "Bearer"), ("x-slo-tier", "batch")], 401),
        ("basic scheme", [("authorization", f"Basic {batch_key}"), ("x-slo-tier", "batch")], 401),
        ("key prefix", [bearer(batch_key[:-1]), ("x-slo-tier", "batch")], 401),
        ("key plus suffix", [bearer(batch_key + "x"), ("x-slo-tier", "batch")], 401),
        ("key upper-cased", [bearer(batch_key.upper()), ("x-slo-tier", "batch")], 401),
        ("batch key, interactive", [bearer(batch_key), ("x-slo-tier", "interactive")], 403),
        ("batch key, standard", [bearer(batch_key), ("x-slo-tier", "standard")], 403),
        ("batch key, default tier", [bearer(batch_key)], 403),
        ("batch key, tier upper-cased", [bearer(batch_key), ("x-slo-tier", "INTERACTIVE")], 400),
        ("batch key, two tier headers", [bearer(batch_key), ("x-slo-tier", "batch"),
                                         ("x-slo-tier", "interactive")], ("served as", "batch")),
        ("batch key + other key's header", [bearer(batch_key), ("authorization",
                                            f"Bearer {all_key}"), ("x-slo-tier", "interactive")],
         403),
        ("batch key, batch", [bearer(batch_key), ("x-slo-tier", "batch")], ("served as", "batch")),
        ("all key, interactive", [bearer(all_key), ("x-slo-tier", "interactive")],
         ("served as", "interactive")),
    ]


def run_access(url: str, all_key: str, batch_key: str, timeout_s: float) -> list[dict[str, Any]]:
    out = []
    with httpx.Client(base_url=url, timeout=timeout_s) as client:
        for name, headers, want in access_cases(all_key, batch_key):
            r = client.post("/v1/completions", json=BODY, headers=httpx.Headers(headers))
            echoed = r.headers.get("x-slo-tier")
            if isinstance(want, tuple):
                ok = r.status_code == 200 and echoed == want[1]
                # served in a tier the key does not hold would be a priority escalation
            else:
                ok = r.status_code == want and _has_message(r)
            out.append({"case": name, "status": r.status_code, "tier_echo": echoed, "ok": ok,
                        "message": r.text[:160] if r.status_code != 200 else ""})
    return out


def _has_message(r: httpx.Response) -> bool:
    try:
        return bool(r.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return False


def time_key_compare(keys: dict[str, list[str]], probe_key: str, rounds: int = 20000,
                     repeats: int = 5) -> dict[str, float]:
    """Median ns per ``KeyTable.check`` for a wrong first byte, a wrong last byte, the key."""
    from slidingserve.serve.auth import AuthError, KeyTable
    from slidingserve.slo.tiers import load_tiers

    table = KeyTable(keys, load_tiers(None))
    probes = {"wrong_first_byte": "#" + probe_key[1:], "wrong_last_byte": probe_key[:-1] + "#",
              "right_key": probe_key}
    result: dict[str, float] = {}
    for name, key in probes.items():
        header = f"Bearer {key}"
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            for _ in range(rounds):
                with contextlib.suppress(AuthError):
                    table.check(header, "batch")
            runs.append((time.perf_counter_ns() - t0) / rounds)
        result[name + "_ns"] = round(statistics.median(runs), 1)
    result["first_vs_last_ratio"] = round(
        result["wrong_first_byte_ns"] / result["wrong_last_byte_ns"], 3)
    return result


def find_key_leaks(logs_dir: Path, keys: list[str], max_bytes: int = 200 * 2**20) -> dict:
    """Files under ``logs_dir`` containing any key (bounded: at most ``max_bytes`` read)."""
    leaks: list[str] = []
    read = files = 0
    needles = [k.encode() for k in keys]
    for path in sorted(p for p in logs_dir.rglob("*") if p.is_file()):
        if read >= max_bytes:
            break
        try:
            data = path.read_bytes()[: max_bytes - read]
        except OSError:
            continue
        read += len(data)
        files += 1
        if any(n in data for n in needles):
            leaks.append(str(path.relative_to(logs_dir)))
    return {"files_scanned": files, "bytes_scanned": read, "files_with_a_key": leaks}


def check_manifests(root: Path) -> dict[str, Any]:
    """For each manifest, internal ports it opens and whether each is documented internal."""
    out: dict[str, Any] = {}
    for rel in MANIFESTS:
        path = root / rel
        if not path.is_file():
            out[rel] = {"missing": True}
            continue
        lines = path.read_text().splitlines()
        opened = {p for p in INTERNAL_PORTS if any(re.search(rf"\b{p}\b", ln) for ln in lines)}
        documented = {p for p in opened if any(re.search(rf"\b{p}\b", ln) and "internal"
                                               in ln.lower() and "#" in ln for ln in lines)}
        out[rel] = {"internal_ports": sorted(opened), "undocumented": sorted(opened - documented)}
    return out


def run_security(url: str, keys: dict[str, list[str]], logs_dir: Path, repo_root: Path,
                 timeout_s: float = 60.0) -> dict[str, Any]:
    all_key = next(k for k, v in keys.items() if "*" in v)
    batch_key = next(k for k, v in keys.items() if v == ["batch"])
    access = run_access(url, all_key, batch_key, timeout_s)
    timing = time_key_compare(keys, batch_key)
    leaks = find_key_leaks(logs_dir, list(keys))
    manifests = check_manifests(repo_root)
    wrong = [c for c in access if not c["ok"]]
    undocumented = {k: v.get("undocumented") for k, v in manifests.items()
                    if v.get("undocumented") or v.get("missing")}
    return {"sent": len(access), "answered": len(access), "lost": 0,
            "access_cases": len(access), "access_wrong": len(wrong), "access": access,
            "key_compare_timing": timing, "logs": leaks,
            "keys_in_logs": len(leaks["files_with_a_key"]), "manifests": manifests,
            "ports_undocumented": undocumented}
