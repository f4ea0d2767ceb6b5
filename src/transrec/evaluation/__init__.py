"""Evaluation: full-catalogue ranking metrics and the evaluation subsets of the papers.

``ranking`` counts each target's rank over the whole catalogue (chunked, on the tensors' device) and
turns ranks into HR@k / NDCG@k / MRR exactly; ``subsets`` selects the cold-item, new-item and warm-N users.
"""

from transrec.evaluation.ranking import (
    DEFAULT_KS,
    ExcludeLike,
    ItemSets,
    RankingMetrics,
    as_item_sets,
    full_ranking_metrics,
    ranks_from_embeddings,
    target_ranks,
)
from transrec.evaluation.subsets import (
    cold_item_users,
    evaluation_subsets,
    item_interaction_counts,
    iterative_filter,
    new_item_users,
    warm_item_users,
)

__all__ = [
    "DEFAULT_KS",
    "ExcludeLike",
    "ItemSets",
    "RankingMetrics",
    "as_item_sets",
    "cold_item_users",
    "evaluation_subsets",
    "full_ranking_metrics",
    "item_interaction_counts",
    "iterative_filter",
    "new_item_users",
    "ranks_from_embeddings",
    "target_ranks",
    "warm_item_users",
]
