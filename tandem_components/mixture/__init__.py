"""The mixture α: its state on the simplex and its update step, the named starting mixtures (uniform,
natural, temperature, unimax), the YAML export stage 2 reads, its trajectory plot, and the swarm's draws and
regression (a RegMix-style search: ``tools/swarm.py``)."""

from tandem_components.mixture.convergence import Convergence, convergence, seed_spread
from tandem_components.mixture.export import read_mixture_export, weights_vector, write_mixture_export
from tandem_components.mixture.named import (
    epoch_cap_bounds,
    epochs_per_weight,
    NAMES,
    named_or_mapping_weights,
    resolve_initial_weights,
    resolve_target_weights,
    temperature_weights,
    unimax_weights,
)
from tandem_components.mixture.plots import plot_mixture_trajectory
from tandem_components.mixture.similarity import corpus_similarity_weights, similarity_weights
from tandem_components.mixture.state import UPDATES, MixtureState, project_to_capped_simplex, project_to_simplex
from tandem_components.mixture.swarm import SwarmFit, draw_mixtures, fit_swarm, predicted_optimum, swarm_prior

__all__ = [
    "corpus_similarity_weights",
    "similarity_weights",
    "MixtureState",
    "UPDATES",
    "project_to_capped_simplex",
    "project_to_simplex",
    "NAMES",
    "epoch_cap_bounds",
    "epochs_per_weight",
    "named_or_mapping_weights",
    "resolve_initial_weights",
    "resolve_target_weights",
    "temperature_weights",
    "unimax_weights",
    "read_mixture_export",
    "weights_vector",
    "write_mixture_export",
    "plot_mixture_trajectory",
    "Convergence",
    "convergence",
    "seed_spread",
    "SwarmFit",
    "draw_mixtures",
    "fit_swarm",
    "predicted_optimum",
    "swarm_prior",
]
