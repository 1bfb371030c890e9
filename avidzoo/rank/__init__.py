"""Which weights suit a user's labelled media: probes on frozen features over repeated stratified (group-aware)
folds, few-shot curves, LogME, and statistics a few hundred clips can support (bootstrap intervals, ties)."""

from .runner import RankReport, rank

__all__ = ["RankReport", "rank"]
