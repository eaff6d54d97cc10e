"""A ``TreeEnsembleParameters`` node list, validated, as flat arrays for vectorised traversal.

Validation follows Core ML's ``constructAndValidateTreeEnsembleFromSpec``
(TreeEnsembleCommon.cpp): node ids unique per tree, every child declared, no node its own
child, at most one parent per node, exactly one root per tree, every node reachable from its
root (so no cycles), leaves with at least one ``evaluationInfo`` whose ``evaluationIndex`` is
below ``numPredictionDimensions`` and not repeated, ``basePredictionValue`` empty or one value
per dimension. Branch feature indices must fall inside the vectorised input.

Every branch is normalised to one test that sends the example to its *left* child, read from
the extended input ``xe = [x[:n], -x[:n], 0]`` (``n`` = the features the trees read):

- ``xe[slot] <= t`` for the four ordering modes: ``<`` becomes ``<=`` the float just below
  the threshold, ``>`` and ``>=`` swap the children. A NaN input fails the test and goes
  right; when the model sends NaN to the ``<=`` side instead, the node reads ``-x`` and tests
  ``-x <= -next_float(t)`` (that is ``x > t``) with the children swapped back;
- ``xe[slot] == t`` for ``BranchOnValueEqual`` / ``NotEqual`` (NotEqual swaps the children),
  with a flag sending NaN left where the model asks;
- a leaf reads the constant 0 with ``t = +inf``: always left, and its left child is itself.

The thresholds are stored in the float type the inputs are computed in (float64 in JAX's
64-bit mode, else float32), rounded towards the side that keeps each test exactly
``float64(x) <op> branchFeatureValue`` for every input of that type (so float32 inputs split
as scikit-learn splits them: it compares float32 inputs with float64 thresholds). A NaN
``branchFeatureValue`` fails every comparison but ``!=``: such a node always takes one child.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mlc.runtime import limits

LEAF = 6
LE, LT, GE, GT, EQ, NE = range(6)

EQUAL_FLAG = 1  # the node tests ==
NAN_LEFT_FLAG = 2  # an == node sends NaN left


@dataclasses.dataclass
class Ensemble:
    """The validated, normalised trees: node arrays indexed 0..M-1 in spec order."""

    n_dims: int
    n_read: int  # features the trees read: max branchFeatureIndex + 1
    base: np.ndarray  # (n_dims,) float64
    roots: np.ndarray  # (T,) node index of each tree's root, trees in ascending treeId
    depths: np.ndarray  # (T,) branch levels from root to the deepest leaf
    is_leaf: np.ndarray  # (M,) bool
    slot: np.ndarray  # (M,) index into xe = [x[:n_read], -x[:n_read], 0]
    threshold: np.ndarray  # (M,) in the input's float type
    flags: np.ndarray  # (M,) EQUAL_FLAG | NAN_LEFT_FLAG
    left: np.ndarray  # (M,) child taken when the test holds (self for leaves)
    right: np.ndarray  # (M,) the other child (self for leaves)
    leaf_values: np.ndarray  # (M, n_dims) float64, zero rows for branches

    @property
    def n_trees(self) -> int:
        return len(self.roots)

    @property
    def max_depth(self) -> int:
        return int(self.depths.max()) if len(self.depths) else 0

    @property
    def has_equal(self) -> bool:
        return bool(np.any(self.flags & EQUAL_FLAG))


def build_ensemble(ctx, params, input_width: int | None, dtype=np.float64) -> Ensemble:
    """Validate ``params`` (a TreeEnsembleParameters) and turn it into an ``Ensemble`` whose
    thresholds are exact for inputs of the float type ``dtype``."""
    n_dims = int(params.numPredictionDimensions)
    if n_dims == 0:
        ctx.fail("numPredictionDimensions is 0")
    # Leaf values are held per node and prediction dimension: refuse a count that would not fit.
    limits.check_tensor((max(len(params.nodes), 1), n_dims), 8, f"{ctx.where}: numPredictionDimensions {n_dims} for {len(params.nodes)} nodes")
    base = _base_values(ctx, params, n_dims)
    nodes = params.nodes
    if not nodes:
        ctx.fail("the tree ensemble has no nodes")
    c = _columns(nodes)
    is_leaf = c["behavior"] == LEAF
    _check_branches(ctx, c, is_leaf, input_width)
    true_child, false_child = _children(ctx, c, is_leaf)
    roots, depths = _check_tree_shapes(ctx, c, is_leaf, true_child, false_child)
    m = len(is_leaf)
    feature = c["feature"].astype(np.int64)
    ens = Ensemble(
        n_dims=n_dims,
        n_read=int(feature[~is_leaf].max()) + 1 if np.any(~is_leaf) else 0,
        base=base,
        roots=roots,
        depths=depths,
        is_leaf=is_leaf,
        slot=np.zeros(m, np.int64),
        threshold=np.zeros(m, dtype),
        flags=np.zeros(m, np.int64),
        left=np.arange(m, dtype=np.int64),
        right=np.arange(m, dtype=np.int64),
        leaf_values=_leaf_values(ctx, nodes, c, is_leaf, n_dims),
    )
    _normalise(ens, c, feature, true_child, false_child)
    return ens


# -- validation ----------------------------------------------------------------------------------


def _columns(nodes) -> dict:
    """The node fields as numpy columns (one pass over the protobuf list)."""
    rows = [(n.treeId, n.nodeId, n.branchFeatureIndex, n.trueChildNodeId, n.falseChildNodeId) for n in nodes]
    ids = np.array(rows, np.uint64).reshape(-1, 5)
    return {
        "tree": ids[:, 0],
        "node": ids[:, 1],
        "behavior": np.array([n.nodeBehavior for n in nodes], np.int64),  # an enum: unknown values may be negative
        "feature": ids[:, 2],
        "true": ids[:, 3],
        "false": ids[:, 4],
        "value": np.array([n.branchFeatureValue for n in nodes], np.float64),
        "nan_true": np.array([n.missingValueTracksTrueChild for n in nodes], bool),
    }


def _name(c: dict, i) -> str:
    return f"tree {c['tree'][i]} node {c['node'][i]}"


def _base_values(ctx, params, n_dims: int) -> np.ndarray:
    values = np.asarray(params.basePredictionValue, np.float64)
    if values.size == 0:
        return np.zeros(n_dims)
    if values.size != n_dims:
        ctx.fail(f"{values.size} basePredictionValue entries for numPredictionDimensions {n_dims}")
    return values


def _check_branches(ctx, c: dict, is_leaf, input_width: int | None) -> None:
    bad = np.flatnonzero(~is_leaf & ((c["behavior"] < 0) | (c["behavior"] > LEAF)))
    if len(bad):
        ctx.fail(f"{_name(c, bad[0])}: unknown nodeBehavior {c['behavior'][bad[0]]}")
    limit = min(input_width, 1 << 28) if input_width is not None else 1 << 28
    bad = np.flatnonzero(~is_leaf & (c["feature"] >= np.uint64(limit)))
    if len(bad):
        i = bad[0]
        ctx.fail(
            f"{_name(c, i)}: branchFeatureIndex {c['feature'][i]} is beyond the input, "
            f"which holds {input_width} numbers"
        )


def _children(ctx, c: dict, is_leaf) -> tuple[np.ndarray, np.ndarray]:
    """Each branch's true and false child as node positions; unknown or duplicate ids fail."""
    tree_index = np.unique(c["tree"], return_inverse=True)[1]
    ids, dense = np.unique(np.concatenate([c["node"], c["true"], c["false"]]), return_inverse=True)
    m = len(is_leaf)
    key = tree_index * len(ids) + dense[:m]
    order = np.argsort(key, kind="stable")
    dup = np.flatnonzero(key[order][1:] == key[order][:-1])
    if len(dup):
        ctx.fail(f"{_name(c, order[dup[0] + 1])} is declared twice")
    found = []
    for side, child_dense in (("true", dense[m : 2 * m]), ("false", dense[2 * m :])):
        child_key = tree_index * len(ids) + child_dense
        at = np.minimum(np.searchsorted(key[order], child_key), m - 1)
        child = order[at]
        missing = np.flatnonzero(~is_leaf & (key[child] != child_key))
        if len(missing):
            i = missing[0]
            ctx.fail(f"{_name(c, i)}: its {side} child {c[side][i]} is not declared in tree {c['tree'][i]}")
        itself = np.flatnonzero(~is_leaf & (child == np.arange(m)))
        if len(itself):
            ctx.fail(f"{_name(c, itself[0])}: its {side} child is the node itself")
        found.append(np.where(is_leaf, -1, child))
    return found[0], found[1]


def _leaf_values(ctx, nodes, c: dict, is_leaf, n_dims: int) -> np.ndarray:
    entries = [(i, e.evaluationIndex, e.evaluationValue) for i in np.flatnonzero(is_leaf) for e in nodes[i].evaluationInfo]
    leaf = np.array([e[0] for e in entries], np.int64)
    index = np.array([e[1] for e in entries], np.uint64)
    value = np.array([e[2] for e in entries], np.float64)
    empty = np.flatnonzero(is_leaf & (np.bincount(leaf, minlength=len(is_leaf)) == 0))
    if len(empty):
        ctx.fail(f"{_name(c, empty[0])}: a leaf with no evaluationInfo")
    out = np.flatnonzero(index >= np.uint64(n_dims))
    if len(out):
        ctx.fail(f"{_name(c, leaf[out[0]])}: evaluationIndex {index[out[0]]} is out of range (numPredictionDimensions {n_dims})")
    pairs = leaf * n_dims + index.astype(np.int64)
    unique, counts = np.unique(pairs, return_counts=True)
    if np.any(counts > 1):
        twice = unique[np.argmax(counts > 1)]
        ctx.fail(f"{_name(c, twice // n_dims)}: evaluationIndex {twice % n_dims} is given twice")
    values = np.zeros((len(is_leaf), n_dims), np.float64)
    values[leaf, index.astype(np.int64)] = value
    return values


def _check_tree_shapes(ctx, c: dict, is_leaf, true_child, false_child) -> tuple[np.ndarray, np.ndarray]:
    """One parent per node, one root per tree, every node reachable: returns roots and depths."""
    m = len(is_leaf)
    branches = np.flatnonzero(~is_leaf)
    children = np.concatenate([true_child[branches], false_child[branches]])
    parents = np.concatenate([branches, branches])
    counts = np.bincount(children, minlength=m)
    if np.any(counts > 1):
        child = int(np.argmax(counts > 1))
        two = parents[children == child][:2]
        ctx.fail(
            f"tree {c['tree'][child]}: node {c['node'][child]} is a child of both node {c['node'][two[0]]} "
            f"and node {c['node'][two[1]]}"
        )
    roots = np.flatnonzero(counts == 0)
    roots = roots[np.lexsort((c["node"][roots], c["tree"][roots]))]
    root_trees = c["tree"][roots]
    several = np.flatnonzero(root_trees[1:] == root_trees[:-1])
    if len(several):
        tree = root_trees[several[0]]
        ids = ", ".join(str(c["node"][r]) for r in roots[root_trees == tree])
        ctx.fail(f"tree {tree} has several root nodes (node ids {ids})")
    depth = np.full(m, -1, np.int64)
    frontier, level = roots, 0
    while len(frontier):
        depth[frontier] = level
        inner = frontier[~is_leaf[frontier]]
        frontier, level = np.concatenate([true_child[inner], false_child[inner]]), level + 1
    unreached = np.flatnonzero(depth < 0)
    if len(unreached):
        which = ", ".join(_name(c, i) for i in unreached[:5])
        ctx.fail(f"nodes not reachable from any root (a cycle): {which}")
    tree_of_root = np.searchsorted(root_trees, c["tree"])
    depths = np.zeros(len(roots), np.int64)
    np.maximum.at(depths, tree_of_root, depth)
    return roots, depths


# -- normalisation -------------------------------------------------------------------------------


def _rounded(t: np.ndarray, dtype) -> np.ndarray:
    with np.errstate(over="ignore"):
        return t.astype(dtype)


def _at_most(t: np.ndarray, dtype) -> np.ndarray:
    """The largest ``dtype`` value ``f`` with ``f <= t``."""
    f = _rounded(t, dtype)
    return _without_subnormals(np.where(f.astype(np.float64) > t, np.nextafter(f, dtype(-np.inf)), f), "down")


def _below(t: np.ndarray, dtype) -> np.ndarray:
    """The largest ``dtype`` value ``f`` with ``f < t``."""
    f = _rounded(t, dtype)
    return _without_subnormals(np.where(f.astype(np.float64) >= t, np.nextafter(f, dtype(-np.inf)), f), "down")


def _without_subnormals(f: np.ndarray, direction: str) -> np.ndarray:
    """XLA on CPU treats subnormal numbers as zero: move a subnormal threshold to the nearest
    normal number (or zero) in ``direction``, which splits every normal input the same way."""
    tiny = np.finfo(f.dtype).tiny
    sub = (f != 0) & (np.abs(f) < tiny)
    if direction == "down":
        return np.where(sub, np.where(f < 0, -tiny, 0), f).astype(f.dtype)
    return np.where(sub, np.where(f > 0, tiny, 0), f).astype(f.dtype)


def _equal(t: np.ndarray, dtype) -> np.ndarray:
    """``t`` in ``dtype`` when exact; NaN (never equal to an input) otherwise."""
    f = _rounded(t, dtype)
    return np.where(f.astype(np.float64) == t, f, dtype(np.nan))


def _negated_greater(u: np.ndarray, dtype) -> np.ndarray:
    """``v`` with ``-x <= v`` exactly when ``x > u`` (``x`` of type ``dtype``, not NaN)."""
    above = _without_subnormals(np.nextafter(u, dtype(np.inf)), "up")
    return np.where(np.isposinf(u), dtype(np.nan), -above)


def _normalise(ens: Ensemble, c: dict, feature, true_child, false_child) -> None:
    n, mode, t = ens.n_read, c["behavior"], c["value"]
    dtype = ens.threshold.dtype.type
    leaf = ens.is_leaf
    nan_child = np.where(c["nan_true"], true_child, false_child)
    # == / != nodes
    equal = (mode == EQ) | (mode == NE)
    passes = np.where(mode == EQ, true_child, false_child)
    fails = np.where(mode == EQ, false_child, true_child)
    # ordering nodes: below = the child for x <= u, above = the child for x > u
    u = np.where((mode == LT) | (mode == GE), _below(t, dtype), _at_most(t, dtype)).astype(dtype)
    low = (mode == LE) | (mode == LT)
    below, above = np.where(low, true_child, false_child), np.where(low, false_child, true_child)
    negate = ~leaf & ~equal & (nan_child == below)  # test x > u on -x: NaN fails, lands on `below`
    plain = ~leaf & ~equal & ~negate
    ens.slot[:] = np.select([leaf, negate], [2 * n, feature + n], feature)
    ens.threshold[:] = np.select([leaf, equal, negate], [np.inf, _equal(t, dtype), _negated_greater(u, dtype)], u)
    ens.left[:] = np.select([equal, negate, plain], [passes, above, below], ens.left)
    ens.right[:] = np.select([equal, negate, plain], [fails, below, above], ens.right)
    ens.flags[:] = np.where(equal, EQUAL_FLAG | np.where(nan_child == passes, NAN_LEFT_FLAG, 0), 0)
    # a NaN threshold fails every comparison (only != holds): a fixed child, read off the constant
    fixed = ~leaf & np.isnan(t)
    ens.slot[fixed], ens.threshold[fixed], ens.flags[fixed] = 2 * n, np.inf, 0
    ens.left[fixed] = ens.right[fixed] = np.where(mode == NE, true_child, false_child)[fixed]


# -- layouts: trees in groups of G, one group per scan step -------------------------------------


@dataclasses.dataclass
class Layout:
    """Per-group tables (leading axis: the group). ``kind`` is ``walk`` or ``perfect``.

    walk: each group's nodes renumbered so the two children of a branch are adjacent
    (``next = first_child + (0 if the test holds else 1)``); a leaf's first child is itself.
    perfect: every tree padded to a complete binary tree of ``steps`` levels in heap order
    (tree ``k`` of a group at ``k * (2**steps - 1)``, children of ``h`` at ``2h + 1``,
    ``2h + 2``); a shallow leaf fills all the padded leaves below it.
    """

    kind: str
    steps: int
    group: int
    slot: np.ndarray  # (n_groups, S) int32
    threshold: np.ndarray  # (n_groups, S)
    flags: np.ndarray  # (n_groups, S) int32
    first_child: np.ndarray | None  # walk: (n_groups, S) int32
    roots: np.ndarray | None  # walk: (n_groups, G) int32
    leaf_values: np.ndarray  # walk: (n_groups, S, D); perfect: (n_groups, G * 2**steps, D)


def perfect_size(ens: Ensemble) -> int:
    """How many leaves the perfect layout holds (all trees padded to the deepest one)."""
    return ens.n_trees * (1 << ens.max_depth)


def _groups(ens: Ensemble, group: int) -> tuple[list[np.ndarray], int]:
    t = ens.n_trees
    group = t if group <= 0 else min(group, t)
    return [ens.roots[k : k + group] for k in range(0, t, group)], group


def walk_layout(ens: Ensemble, group: int) -> Layout:
    groups, g = _groups(ens, group)
    per_group = [_walk_group(ens, roots) for roots in groups]
    size = max(len(order) for order, _, _ in per_group) + 1  # + a spare leaf for padded trees
    n = len(groups)
    slot = np.full((n, size), 2 * ens.n_read, np.int32)
    threshold = np.full((n, size), np.inf, ens.threshold.dtype)
    flags = np.zeros((n, size), np.int32)
    first = np.tile(np.arange(size, dtype=np.int32), (n, 1))
    roots = np.full((n, g), size - 1, np.int32)  # missing trees sit on the spare zero leaf
    leaves = np.zeros((n, size, ens.n_dims), np.float64)
    for k, (order, position, root_positions) in enumerate(per_group):
        slot[k, : len(order)] = ens.slot[order]
        threshold[k, : len(order)] = ens.threshold[order]
        flags[k, : len(order)] = ens.flags[order]
        first[k, : len(order)] = position[ens.left[order]]
        leaves[k, : len(order)] = ens.leaf_values[order]
        roots[k, : len(root_positions)] = root_positions
    return Layout("walk", ens.max_depth, g, slot, threshold, flags, first, roots, leaves)


def _walk_group(ens: Ensemble, roots: np.ndarray):
    """Breadth-first order of a group's nodes with siblings adjacent (left, then right)."""
    levels, frontier = [], roots
    while len(frontier):
        levels.append(frontier)
        inner = frontier[~ens.is_leaf[frontier]]
        frontier = np.stack([ens.left[inner], ens.right[inner]], axis=1).reshape(-1)
    order = np.concatenate(levels)
    position = np.zeros(len(ens.is_leaf), np.int64)
    position[order] = np.arange(len(order))
    return order, position, position[roots]


def perfect_layout(ens: Ensemble, group: int) -> Layout:
    groups, g = _groups(ens, group)
    depth = ens.max_depth
    n_internal, n_leaves = (1 << depth) - 1, 1 << depth
    n = len(groups)
    slot = np.full((n, g, n_internal), 2 * ens.n_read, np.int32)
    threshold = np.full((n, g, n_internal), np.inf, ens.threshold.dtype)
    flags = np.zeros((n, g, n_internal), np.int32)
    leaves = np.zeros((n, g, n_leaves, ens.n_dims), np.float64)
    for k, roots in enumerate(groups):
        for j, root in enumerate(roots):
            stack = [(int(root), 0, 0)]  # (node, heap index, level)
            while stack:
                i, h, level = stack.pop()
                if ens.is_leaf[i]:
                    first = ((h + 1) << (depth - level)) - 1 - n_internal  # leftmost leaf below
                    leaves[k, j, first : first + (1 << (depth - level))] = ens.leaf_values[i]
                    continue
                slot[k, j, h], threshold[k, j, h], flags[k, j, h] = ens.slot[i], ens.threshold[i], ens.flags[i]
                stack += [(int(ens.left[i]), 2 * h + 1, level + 1), (int(ens.right[i]), 2 * h + 2, level + 1)]
    return Layout(
        "perfect",
        depth,
        g,
        slot.reshape(n, -1),
        threshold.reshape(n, -1),
        flags.reshape(n, -1),
        None,
        None,
        leaves.reshape(n, g * n_leaves, ens.n_dims),
    )
