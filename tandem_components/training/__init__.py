"""Training parts a recipe's loop calls: the twins u and w, per-domain losses (plain and chunked),
evaluation, training checkpoints and exact resume, the cost model, and the SFT task metrics."""

from tandem_components.training.chunked_loss import model_chunked_domain_losses
from tandem_components.training.cost_model import (
    UnitCosts,
    decoder_flops_per_token,
    episode_counts,
    mfu,
    predict_fixed_time,
    predict_overhead_ratio,
    predict_stage1_time,
)
from tandem_components.training.domain_loss import DomainLosses, domain_losses, model_domain_losses, per_token_loss
from tandem_components.training.evaluation import DomainEval, EvalResult, evaluate_per_domain
from tandem_components.training.rouge import final_number, rouge_l
from tandem_components.training.sharded_state import get_sharded_state, set_sharded_state
from tandem_components.training.state import (
    config_fingerprint,
    find_latest_checkpoint,
    load_training_checkpoint,
    restore_rng_state,
    save_training_checkpoint,
    truncate_trajectory,
)
from tandem_components.training.twins import TwinModels, build_twins

__all__ = [
    "TwinModels",
    "build_twins",
    "DomainLosses",
    "domain_losses",
    "model_domain_losses",
    "per_token_loss",
    "model_chunked_domain_losses",
    "DomainEval",
    "EvalResult",
    "evaluate_per_domain",
    "find_latest_checkpoint",
    "load_training_checkpoint",
    "save_training_checkpoint",
    "get_sharded_state",
    "set_sharded_state",
    "UnitCosts",
    "decoder_flops_per_token",
    "episode_counts",
    "mfu",
    "predict_fixed_time",
    "predict_overhead_ratio",
    "predict_stage1_time",
    "final_number",
    "rouge_l",
    "config_fingerprint",
    "restore_rng_state",
    "truncate_trajectory",
]
