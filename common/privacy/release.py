"""What a site may send besides its models under DP: one declaration, read by the site
(:class:`client.site.Site`) and by the egress audit (:mod:`common.audit.egress_check`).

Under DP a site sends only what the protocol needs. Everything here is either a public
function of the configuration (iterations, replay ratio, message sizes, the accountant's
numbers) or a count the privacy scope lists as released (``num-examples``: per-task record
counts are public, they set the sampling rate and the FedAvg weights; ``empty``: the
sit-out decision). Losses, timings and federated evaluation on a site's private test data
are computed on private data and not covered by DP: they leave only when named in
``dp.release-metrics`` (see ``common.config.RELEASABLE_METRICS``). Every name is declared
once, in :data:`common.protocol.METRIC_LIST`.
"""

from __future__ import annotations

from collections.abc import Mapping

from common import protocol
from common.config import ExperimentConfig

# declared in common.protocol (every metric's name, message and when it may leave under DP)
DP_METRICS = protocol.metrics_of("train", under_dp=(protocol.ACCOUNTANT,))
PROTOCOL_TRAIN_METRICS = protocol.metrics_of("train", under_dp=(protocol.PROTOCOL,))


def is_private(cfg: ExperimentConfig) -> bool:
    return cfg.dp.enabled or cfg.dp.client_level


def allowed_train_metrics(cfg: ExperimentConfig) -> frozenset[str] | None:
    """Names a train reply may carry under DP (None: no restriction without DP)."""
    if not is_private(cfg):
        return None
    return PROTOCOL_TRAIN_METRICS | DP_METRICS | cfg.dp.released_metrics


def released(metrics: Mapping[str, float], cfg: ExperimentConfig) -> dict[str, float]:
    """The metrics of a train reply that may leave the site."""
    allowed = allowed_train_metrics(cfg)
    return dict(metrics) if allowed is None else {k: v for k, v in metrics.items() if k in allowed}


def evaluation_allowed(cfg: ExperimentConfig) -> bool:
    """Whether a site may answer a federated evaluation (its private test accuracy)."""
    return not is_private(cfg) or "evaluation" in cfg.dp.released_metrics
