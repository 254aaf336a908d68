"""LightGBM trees compiled into exact lookup tables: the predictor's hot path.

Idea. A tree that splits only on the features in a set S is a step function of those features,
and it is constant between consecutive split thresholds. For each feature f let t_f be the sorted
thresholds used by the trees of a group; a value x falls in bin b = #{t in t_f : t < x}
(``searchsorted(t_f, x, side="left")``), and "x <= t_f[j]" (LightGBM's numerical decision) holds
exactly when b <= j. So every tree of the group maps onto a table over the bin lattice of S:
walking a tree sends its left child the bins [lo, j] and its right child [j + 1, hi] of the split
feature, and each leaf adds its value to its hyper-rectangle of the table. Summing the tables of
all groups gives exactly LightGBM's raw prediction (up to floating-point summation order).

Trees are grouped by the set of features they split on; the trainer keeps those sets small with
LightGBM's interaction constraints, so tables stay small (``max_table_cells`` guards it).
Prediction is then one ``searchsorted`` per feature and one gather per group, whatever the number
of trees: vectorised numpy for many rows, plain ``bisect`` on lists for one row.

Only numerical ``<=`` splits without missing-value handling are supported (the trainer sets
``use_missing=False``); anything else is refused with ``CompileError``.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_MAX_TABLE_CELLS = 2_000_000


class CompileError(ValueError):
    """The LightGBM model uses a construct the compiler does not support, or is too large."""


@dataclass(frozen=True)
class _Table:
    features: tuple[int, ...]  # feature indices, in table-axis order
    thresholds: tuple[np.ndarray, ...]  # sorted split thresholds per axis (float64)
    strides: np.ndarray  # (len(features),) int64, C-order strides of the table
    values: np.ndarray  # flattened table (float64)
    # scalar path: the same data as Python lists (bisect and list indexing beat numpy for 1 row)
    values_list: list[float]
    axes_list: list[tuple[int, list[float], int]]  # (feature, thresholds, stride) per axis
    axes_numpy: list[tuple[int, np.ndarray, int]]  # the same with the thresholds as arrays


class CompiledForest:
    """Exact table form of a LightGBM regression model's raw score."""

    def __init__(self, tables: list[_Table], num_features: int, num_trees: int):
        self.tables = tables
        self.num_features = num_features
        self.num_trees = num_trees

    @classmethod
    def from_booster(
        cls, booster: Any, max_table_cells: int = DEFAULT_MAX_TABLE_CELLS
    ) -> CompiledForest:
        return cls.from_dump(booster.dump_model(), max_table_cells)

    @classmethod
    def from_dump(
        cls, dump: dict[str, Any], max_table_cells: int = DEFAULT_MAX_TABLE_CELLS
    ) -> CompiledForest:
        num_features = int(dump["max_feature_idx"]) + 1
        trees = [t["tree_structure"] for t in dump["tree_info"]]
        groups: dict[tuple[int, ...], list[dict[str, Any]]] = {}
        for tree in trees:
            groups.setdefault(tuple(sorted(_split_features(tree))), []).append(tree)
        groups = _merge_into_supersets(groups)
        tables = [
            _build_table(feats, members, max_table_cells) for feats, members in groups.items()
        ]
        return cls(tables, num_features, len(trees))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Raw score of each row of X (n, num_features), vectorised."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.num_features:
            raise ValueError(f"expected X of shape (n, {self.num_features}), got {X.shape}")
        out = np.zeros(X.shape[0], dtype=np.float64)
        cols = X.T  # cols[f]: feature f of every row
        # Features equal in every row (e.g. the decodes' in a chunk-size search) make some
        # tables one cell for all rows: that cell is looked up once, with the scalar path, and
        # added to every row (the same additions, in the same order, as the gathers).
        if not len(out):
            return out
        first = X[0].tolist()
        same = (X[0] == X).all(axis=0).tolist() if X.shape[0] > 1 else [True] * len(first)
        return self._add_tables(out, cols, first, {f for f, s in enumerate(same) if not s})

    def predict_columns(
        self, cols: np.ndarray, first: list[float], varying: set[int]
    ) -> np.ndarray:
        """``predict(cols.T)`` for a (num_features, n) ``cols`` whose features outside ``varying``
        hold the same value in every row, ``first`` being one row (as a list)."""
        return self._add_tables(np.zeros(cols.shape[1], dtype=np.float64), cols, first, varying)

    def _add_tables(
        self, out: np.ndarray, cols: np.ndarray, first: list[float], varying: set[int]
    ) -> np.ndarray:
        for tab in self.tables:
            if varying.isdisjoint(tab.features):
                out += tab.values_list[_cell_of(tab, first)]
            else:
                out += tab.values[_cell_index(tab, cols)]
        return out

    def predict_row(self, x: list[float]) -> float:
        """Raw score of one row given as a list of floats (the single-prediction fast path)."""
        total = 0.0
        for tab in self.tables:
            i = 0
            for f, thr, stride in tab.axes_list:
                i += bisect.bisect_left(thr, x[f]) * stride
            total += tab.values_list[i]
        return total


def _cell_of(tab: _Table, x: list[float]) -> int:
    """Flat table index of one row (``_cell_index`` with ``bisect`` on lists, as in
    ``CompiledForest.predict_row``)."""
    i = 0
    for f, thr, stride in tab.axes_list:
        i += bisect.bisect_left(thr, x[f]) * stride
    return i


def _cell_index(tab: _Table, cols: np.ndarray) -> np.ndarray | int:
    """Flat table index of every row: its bin on each axis times the axis' stride, summed."""
    idx: np.ndarray | int = 0
    for f, thr, stride in tab.axes_numpy:
        bins = thr.searchsorted(cols[f], side="left")
        if stride != 1:
            bins *= stride
        if isinstance(idx, int):  # (the first axis: no addition, the bins are new)
            idx = bins
        else:
            idx += bins
    return idx


def _merge_into_supersets(
    groups: dict[tuple[int, ...], list[dict[str, Any]]],
) -> dict[tuple[int, ...], list[dict[str, Any]]]:
    """Fold each feature set's trees into the largest group that contains it (fewer gathers)."""
    by_size = sorted(groups, key=len, reverse=True)
    merged: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    for feats in by_size:
        home = next((g for g in merged if set(feats) <= set(g)), feats)
        merged.setdefault(home, []).extend(groups[feats])
    return merged


def _split_features(node: dict[str, Any]) -> set[int]:
    if "leaf_value" in node or "split_feature" not in node:
        return set()
    return (
        {int(node["split_feature"])}
        | _split_features(node["left_child"])
        | _split_features(node["right_child"])
    )


def _collect_thresholds(node: dict[str, Any], out: dict[int, set[float]]) -> None:
    if "split_feature" not in node:
        return
    if node.get("decision_type", "<=") != "<=":
        raise CompileError(f"unsupported decision_type {node.get('decision_type')!r} (need '<=')")
    if node.get("missing_type", "None") != "None":
        raise CompileError(
            f"unsupported missing_type {node.get('missing_type')!r}; train with use_missing=False"
        )
    thr = float(node["threshold"])
    if not math.isfinite(thr):
        raise CompileError(f"non-finite split threshold {thr!r}")
    out.setdefault(int(node["split_feature"]), set()).add(thr)
    _collect_thresholds(node["left_child"], out)
    _collect_thresholds(node["right_child"], out)


def _build_table(feats: tuple[int, ...], trees: list[dict[str, Any]], max_cells: int) -> _Table:
    found: dict[int, set[float]] = {}
    for tree in trees:
        _collect_thresholds(tree, found)
    thresholds = tuple(np.array(sorted(found[f]), dtype=np.float64) for f in feats)
    shape = tuple(len(t) + 1 for t in thresholds)
    cells = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if cells > max_cells:
        raise CompileError(
            f"trees over features {list(feats)} need a table of {cells} cells (> {max_cells}); "
            "train with interaction constraints that keep feature groups small"
        )
    table = np.zeros(shape if shape else (1,), dtype=np.float64)
    axis_of = {f: a for a, f in enumerate(feats)}
    thr_index = [{v: j for j, v in enumerate(t.tolist())} for t in thresholds]
    for tree in trees:
        _paint(tree, table, [slice(0, n) for n in table.shape], axis_of, thr_index)
    strides = np.array([s // table.itemsize for s in table.strides], dtype=np.int64)
    if not feats:
        strides = np.zeros(0, dtype=np.int64)
    flat = table.ravel()
    return _Table(
        features=feats,
        thresholds=thresholds,
        strides=strides,
        values=flat,
        values_list=flat.tolist(),
        axes_list=[
            (f, t.tolist(), int(st)) for f, t, st in zip(feats, thresholds, strides, strict=True)
        ],
        axes_numpy=[(f, t, int(st)) for f, t, st in zip(feats, thresholds, strides, strict=True)],
    )


def _paint(
    node: dict[str, Any],
    table: np.ndarray,
    box: list[slice],
    axis_of: dict[int, int],
    thr_index: list[dict[float, int]],
) -> None:
    if "split_feature" not in node:
        table[tuple(box)] += float(node["leaf_value"])
        return
    axis = axis_of[int(node["split_feature"])]
    j = thr_index[axis][float(node["threshold"])]
    lo, hi = box[axis].start, box[axis].stop  # bins [lo, hi)
    left, right = list(box), list(box)
    left[axis] = slice(lo, min(hi, j + 1))
    right[axis] = slice(max(lo, j + 1), hi)
    if left[axis].start < left[axis].stop:
        _paint(node["left_child"], table, left, axis_of, thr_index)
    if right[axis].start < right[axis].stop:
        _paint(node["right_child"], table, right, axis_of, thr_index)
