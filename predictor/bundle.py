"""The versioned model directory (and its byte form, for publishing).

A model directory holds:

  model.json    manifest: format, monotonic ``version``, feature schema (names + version), the
                linear base, the quantile of the high model, the SHA-256 of every other file,
                the training-data hash and provenance
  mean.txt      LightGBM text model of log(latency / base), objective ``regression``
  p90.txt       LightGBM text model of the same target, objective ``quantile`` (alpha = 0.9)
  metrics.json  held-out metrics: mape, p90_ape, n_train, n_test, and the baselines

Directories are written atomically: into a temporary sibling, then renamed into place (an older
model at the same path is renamed aside first and removed after). Loading checks the manifest's
format, the feature schema against ``slidingserve.latency.features`` and every file's hash, and
refuses anything else with ``ModelFormatError`` naming the file and what is wrong.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slidingserve.latency.features import FEATURE_NAMES, FEATURE_SCHEMA_VERSION

MODEL_FORMAT = "slidingserve-latency-lgbm"
MODEL_FORMAT_VERSION = 1
MANIFEST = "model.json"
METRICS = "metrics.json"
BOOSTER_FILES = {"mean": "mean.txt", "p90": "p90.txt"}
KINDS = tuple(BOOSTER_FILES)


class ModelFormatError(ValueError):
    """A model directory or blob is missing, corrupt, or of another format or feature schema."""


class FeatureSchemaError(ModelFormatError):
    """The model was trained on a different feature schema than this code computes."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ModelBundle:
    """Everything a model directory holds, in memory. ``boosters`` maps kind -> LightGBM text."""

    version: int
    base: dict[str, Any]
    boosters: dict[str, str]
    metrics: dict[str, Any]
    data_hash: str
    quantile: float = 0.9
    provenance: dict[str, str] = field(default_factory=dict)
    feature_names: tuple[str, ...] = FEATURE_NAMES
    feature_schema_version: int = FEATURE_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.version, int) or self.version < 1:
            raise ModelFormatError(f"model version must be an int >= 1 (got {self.version!r})")
        if set(self.boosters) != set(KINDS):
            raise ModelFormatError(
                f"model needs boosters {list(KINDS)} (got {sorted(self.boosters)})"
            )

    def with_version(self, version: int) -> ModelBundle:
        return ModelBundle(
            version,
            self.base,
            self.boosters,
            self.metrics,
            self.data_hash,
            self.quantile,
            self.provenance,
            self.feature_names,
            self.feature_schema_version,
        )

    # ---- files -------------------------------------------------------------------------------
    def files(self) -> dict[str, bytes]:
        blobs = {BOOSTER_FILES[k]: self.boosters[k].encode() for k in KINDS}
        blobs[METRICS] = json.dumps(self.metrics, indent=2, sort_keys=True).encode()
        manifest = {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "version": self.version,
            "feature_schema": {
                "version": self.feature_schema_version,
                "names": list(self.feature_names),
            },
            "base": self.base,
            "target": "log(latency_s / base(x))",
            "quantile": self.quantile,
            "boosters": {k: BOOSTER_FILES[k] for k in KINDS},
            "sha256": {name: sha256(data) for name, data in sorted(blobs.items())},
            "data_hash": self.data_hash,
            "provenance": self.provenance,
        }
        blobs[MANIFEST] = json.dumps(manifest, indent=2, sort_keys=True).encode()
        return blobs

    @classmethod
    def from_files(cls, blobs: dict[str, bytes], source: str = "<bytes>") -> ModelBundle:
        if MANIFEST not in blobs:
            raise ModelFormatError(f"{source}: no {MANIFEST}")
        try:
            m = json.loads(blobs[MANIFEST])
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelFormatError(f"{source}/{MANIFEST} is corrupt (not JSON): {e}") from e
        if not isinstance(m, dict) or m.get("format") != MODEL_FORMAT:
            got = m.get("format") if isinstance(m, dict) else type(m).__name__
            raise ModelFormatError(
                f"{source}/{MANIFEST}: format {got!r}, expected {MODEL_FORMAT!r}"
            )
        if m.get("format_version") != MODEL_FORMAT_VERSION:
            raise ModelFormatError(
                f"{source}/{MANIFEST}: format_version {m.get('format_version')!r}, "
                f"this code reads {MODEL_FORMAT_VERSION}"
            )
        schema = m.get("feature_schema")
        hashes = m.get("sha256")
        if not isinstance(schema, dict) or not isinstance(hashes, dict):
            raise ModelFormatError(
                f"{source}/{MANIFEST}: 'feature_schema' and 'sha256' must be objects "
                f"(got {type(schema).__name__}, {type(hashes).__name__})"
            )
        if schema.get("version") != FEATURE_SCHEMA_VERSION or tuple(
            schema.get("names", ())
        ) != tuple(FEATURE_NAMES):
            raise FeatureSchemaError(
                f"{source}: model feature schema v{schema.get('version')!r} "
                f"{schema.get('names')!r} does not match this code's v{FEATURE_SCHEMA_VERSION} "
                f"{list(FEATURE_NAMES)}; retrain the model on a current step trace"
            )
        for name, digest in hashes.items():
            if name not in blobs:
                raise ModelFormatError(f"{source}: file {name!r} named in {MANIFEST} is missing")
            if sha256(blobs[name]) != digest:
                raise ModelFormatError(
                    f"{source}/{name} is corrupt: its SHA-256 does not match {MANIFEST}"
                )
        expected = {*BOOSTER_FILES.values(), METRICS}
        if set(hashes) != expected:
            raise ModelFormatError(
                f"{source}/{MANIFEST}: sha256 must list exactly {sorted(expected)}"
            )
        try:
            return cls(
                version=int(m["version"]),
                base=dict(m["base"]),
                boosters={k: blobs[BOOSTER_FILES[k]].decode() for k in KINDS},
                metrics=json.loads(blobs[METRICS]),
                data_hash=str(m["data_hash"]),
                quantile=float(m["quantile"]),
                provenance=dict(m.get("provenance") or {}),
                feature_names=tuple(schema["names"]),
                feature_schema_version=int(schema["version"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, ModelFormatError):
                raise
            raise ModelFormatError(f"{source}/{MANIFEST}: bad or missing field: {e!r}") from e

    # ---- bytes (publishing) --------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        files = {k: base64.b64encode(v).decode() for k, v in self.files().items()}
        return json.dumps({"format": MODEL_FORMAT, "files": files}).encode()

    @classmethod
    def from_bytes(cls, blob: bytes, source: str = "<published model>") -> ModelBundle:
        try:
            d = json.loads(blob)
            files = {k: base64.b64decode(v, validate=True) for k, v in d["files"].items()}
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
            raise ModelFormatError(f"{source} is corrupt: {e!r}") from e
        return cls.from_files(files, source)


def load_bundle(path: str | os.PathLike[str]) -> ModelBundle:
    p = Path(path)
    if not p.is_dir():
        raise ModelFormatError(f"model directory {str(p)!r} does not exist")
    blobs = {f.name: f.read_bytes() for f in p.iterdir() if f.is_file()}
    return ModelBundle.from_files(blobs, source=str(p))


def read_version(path: str | os.PathLike[str]) -> int | None:
    """Version of the valid model at ``path``; None when there is none (or it is unreadable)."""
    try:
        return load_bundle(path).version
    except ModelFormatError:
        return None


def save_bundle(bundle: ModelBundle, path: str | os.PathLike[str]) -> Path:
    """Write ``bundle`` as a model directory at ``path``, atomically (see the module docstring).

    Refuses to replace a non-empty directory that is not a model directory.
    """
    p = Path(path)
    if p.exists() and (not p.is_dir() or (any(p.iterdir()) and not (p / MANIFEST).exists())):
        raise ModelFormatError(f"refusing to replace {str(p)!r}: it is not a model directory")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.tmp-", dir=p.parent))
    tmp.chmod(0o755)
    old: Path | None = None
    try:
        for name, data in bundle.files().items():
            (tmp / name).write_bytes(data)
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        if p.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{p.name}.old-", dir=p.parent))
            old.rmdir()
            p.rename(old)
        tmp.rename(p)
    except BaseException:
        if old is not None and not p.exists():
            old.rename(p)
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
    return p
