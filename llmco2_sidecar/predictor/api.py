"""The predictor contract shared by ``llmco2 estimate``, the sidecar and the training code.

A predictor maps engine steps of one deployment to GPU energy. Every predictor (the trained
2-GNN, the analytic Roofline estimate, the baselines) implements :class:`StepPredictor`; the
paper's batch unit is served on top of it by simulating the batch's schedule
(:mod:`llmco2_sidecar.schedule`), so one model answers both units.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from ..hardware.spec import GPUSpec
from ..models.spec import ModelSpec
from ..workload import Parallelism, StepBatch


@dataclass(frozen=True)
class Deployment:
    """What runs a step: a model on ``parallel.tp * parallel.pp`` GPUs of one kind."""

    model: ModelSpec
    gpu: GPUSpec
    parallel: Parallelism = Parallelism()

    @property
    def n_gpus(self) -> int:
        return self.parallel.gpus_per_replica


@dataclass
class StepPrediction:
    """Per-step outputs, arrays of shape [S].

    Attributes:
        energy_j: GPU energy of the step summed over the replica's ``tp * pp`` GPUs, in J.
        prefill_energy_j: the part of ``energy_j`` due to prefill tokens (slices with
            ``new_tokens > 1`` or a first token), in J.
        duration_s: the step's wall time used: observed where given, predicted otherwise.
    """

    energy_j: np.ndarray
    prefill_energy_j: np.ndarray
    duration_s: np.ndarray


class StepPredictor(abc.ABC):
    """Energy of engine steps. Implementations must be vectorised over the steps of a batch."""

    #: Name reported in the ``predictor`` field of results, e.g. ``"llmco2-gnn-v2"``.
    name: str = "abstract"

    def name_for(self, deployment: Deployment) -> str:
        """The name of the model that answers for ``deployment`` (a router's member: predictor/routed.py)."""
        return self.name

    def heldout_scores(self, deployment: Deployment | None = None) -> dict[str, float]:
        """``{held-out group: MAPE %}`` on data it never saw (predictor/heldout.py) of the model that
        answers for ``deployment``; empty where none is known (the analytic predictors, a model file
        trained with ``--no-heldout``)."""
        return {}

    @abc.abstractmethod
    def predict_steps(self, deployment: Deployment, steps: StepBatch) -> StepPrediction:
        """Predict every step of ``steps`` (all on ``deployment``)."""
