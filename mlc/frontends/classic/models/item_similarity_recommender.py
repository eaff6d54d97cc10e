"""``itemSimilarityRecommender`` (ItemSimilarityRecommender.proto).

The catalogue has ``num_items`` items, named by ``itemStringIds`` or ``itemInt64Ids`` (one of
them, unique, long enough to index every item mentioned), else by their indices ``0..n-1``.
Each ``itemItemSimilarities`` entry is an item ``i`` with its similar items ``k`` and
``sim(k, i)`` (``similarItemList``) and a score adjustment (``itemScoreAdjustment``). Entries for
the same ``i`` are merged, as Core ML's loader does.

The input (``itemInputFeatureName``, else the model's only input) lists the user's items: a
dictionary item -> rating, or a sequence / multiarray of items (each rated 1). The score of item
``k`` is

    sum over observed items i of  sim(k, i) * (rating_i - adjustment_i)

The proto writes the shift as ``shift_k``, but it stores one adjustment per ``SimilarItems``
entry, i.e. per observed item ``i``, and Core ML's model-building API documents it as "applied to
the user's rating of the item"; so the observed item's adjustment is subtracted from its rating.

Candidates are every item (or only the ``itemRestrictionInputFeatureName`` items when given),
minus the excluded ones: the ``itemExclusionInputFeatureName`` items when given, else the input
items. They are ranked by descending score (ties by catalogue order) and cut to the
``numRecommendationsInputFeatureName`` count when given (else all are returned). Outputs:
``recommendedItemListOutputFeatureName`` (a sequence of item ids, best first) and
``recommendedItemScoreOutputFeatureName`` (a dictionary id -> score). Items the catalogue does not
know are ignored wherever they appear. The stage works on Python values (``host``); scores are
computed in float64.
"""

from __future__ import annotations

import numpy as np

from mlc._errors import MLCFeatureTypeError
from mlc.frontends.classic.registry import model_type
from mlc.frontends.classic.stage import Stage, StageContext


def _similarities(ctx: StageContext, m) -> tuple[dict, dict, int]:
    """``{i: [(k, sim), ...]}``, ``{i: adjustment}`` and the largest item index mentioned."""
    neighbours, adjustments, largest = {}, {}, 0
    for entry in m.itemItemSimilarities:
        i = int(entry.itemId)
        largest = max(largest, i)
        links = neighbours.setdefault(i, [])
        for link in entry.similarItemList:
            links.append((int(link.itemId), float(link.similarityScore)))
            largest = max(largest, int(link.itemId))
        if entry.itemScoreAdjustment != 0:
            adjustments[i] = float(entry.itemScoreAdjustment)
    return neighbours, adjustments, largest


def _catalogue(ctx: StageContext, m, largest: int) -> tuple[list, str]:
    """The item ids by index, and their kind ("string" or "int64")."""
    strings, ints = list(m.itemStringIds.vector), [int(v) for v in m.itemInt64Ids.vector]
    if strings and ints:
        ctx.fail("both itemStringIds and itemInt64Ids are given; a model names its items one way")
    ids, kind = (strings, "string") if strings else (ints, "int64")
    if not ids:
        return list(range(largest + 1)), "int64"
    if len(ids) <= largest:
        ctx.fail(f"{len(ids)} item ids cannot name item index {largest}, which the similarities use")
    if len(set(ids)) != len(ids):
        ctx.fail("the item ids contain duplicates")
    return ids, kind


def _named(ctx: StageContext, features, name: str, field: str, kinds: tuple, id_kind: str):
    """The feature ``field`` names (or None when unset), checked against the allowed kinds and
    the catalogue's id kind."""
    if not name:
        return None
    if name not in features:
        ctx.fail(f"{field} {name!r} is not one of the model's features {list(features)}")
    feature = features[name]
    if feature.kind not in kinds:
        ctx.fail(f"{field} {name!r} must be a {' or '.join(kinds)}, not a {feature.kind}")
    if feature.kind in ("dictionary", "sequence") and feature.key_kind != id_kind:
        ctx.fail(f"{field} {name!r} holds {feature.key_kind} items, but the model's item ids are {id_kind}")
    if feature.kind == "multiArray" and id_kind == "string":
        ctx.fail(f"{field} {name!r} is a multiarray, but the model's item ids are strings")
    return feature


def _item_input(ctx: StageContext, m) -> str:
    if m.itemInputFeatureName:
        return m.itemInputFeatureName
    if len(ctx.inputs) == 1:
        return next(iter(ctx.inputs))
    ctx.fail("itemInputFeatureName is not set and the model has several inputs")


class _Catalogue:
    """Item ids <-> indices, and the similarity table."""

    def __init__(self, ids: list, neighbours: dict, adjustments: dict):
        self.ids = ids
        self.index = {item: i for i, item in enumerate(ids)}
        self.neighbours = neighbours
        self.adjustments = adjustments

    def indices(self, items) -> list[int]:
        """Known items of a sequence / multiarray as indices, in order, once each."""
        if not isinstance(items, (list, tuple)):
            items = [int(v) for v in np.asarray(items).reshape(-1)]
        found = (self.index.get(item) for item in items)
        return list(dict.fromkeys(i for i in found if i is not None))

    def ratings(self, items) -> dict[int, float]:
        """The input items as index -> rating (1 for a plain list of items)."""
        if isinstance(items, dict):
            return {self.index[k]: float(v) for k, v in items.items() if k in self.index}
        return {i: 1.0 for i in self.indices(items)}

    def scores(self, ratings: dict[int, float]) -> np.ndarray:
        scores = np.zeros(len(self.ids))
        for i, rating in ratings.items():
            shifted = rating - self.adjustments.get(i, 0.0)
            for k, similarity in self.neighbours.get(i, ()):
                scores[k] += similarity * shifted
        return scores


def _count(ctx: StageContext, value) -> int:
    count = int(np.asarray(value).reshape(-1)[0])
    if count < 0:
        raise MLCFeatureTypeError(f"{ctx.where} ({ctx.kind}): the number of recommendations must be non-negative, got {count}")
    return count


@model_type("itemSimilarityRecommender")
def item_similarity_recommender(ctx: StageContext) -> Stage:
    m = ctx.message
    neighbours, adjustments, largest = _similarities(ctx, m)
    ids, id_kind = _catalogue(ctx, m, largest)
    catalogue = _Catalogue(ids, neighbours, adjustments)
    source = _item_input(ctx, m)
    _named(ctx, ctx.inputs, source, "itemInputFeatureName", ("dictionary", "sequence", "multiArray"), id_kind)
    count_name = m.numRecommendationsInputFeatureName
    _named(ctx, ctx.inputs, count_name, "numRecommendationsInputFeatureName", ("int64",), id_kind)
    restriction, exclusion = m.itemRestrictionInputFeatureName, m.itemExclusionInputFeatureName
    for name, field in ((restriction, "itemRestrictionInputFeatureName"), (exclusion, "itemExclusionInputFeatureName")):
        _named(ctx, ctx.inputs, name, field, ("sequence", "multiArray"), id_kind)
    list_name, score_name = m.recommendedItemListOutputFeatureName, m.recommendedItemScoreOutputFeatureName
    _named(ctx, ctx.outputs, list_name, "recommendedItemListOutputFeatureName", ("sequence",), id_kind)
    _named(ctx, ctx.outputs, score_name, "recommendedItemScoreOutputFeatureName", ("dictionary",), id_kind)
    if not list_name and not score_name:
        ctx.fail("neither recommendedItemListOutputFeatureName nor recommendedItemScoreOutputFeatureName is set")

    def fn(params: dict, values: dict) -> dict:
        ratings = catalogue.ratings(values[source])
        scores = catalogue.scores(ratings)
        given = lambda name: bool(name) and name in values  # noqa: E731
        candidates = catalogue.indices(values[restriction]) if given(restriction) else range(len(ids))
        excluded = set(catalogue.indices(values[exclusion])) if given(exclusion) else set(ratings)
        ranked = sorted((k for k in candidates if k not in excluded), key=lambda k: (-scores[k], k))
        if given(count_name):
            ranked = ranked[: _count(ctx, values[count_name])]
        out = {}
        if list_name:
            out[list_name] = [ids[k] for k in ranked]
        if score_name:
            out[score_name] = {ids[k]: float(scores[k]) for k in ranked}
        return out

    return Stage(fn, host=True)
