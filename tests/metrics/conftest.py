"""Shared by the metric tests: an explained actor-critic MLP (``mlp_case``) and its heads as
the columns of one plain function (``columns``, for captum)."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

import tdhook_rl as thr
from tdhook_rl.targets import Index

from models import N_LOGITS, OBS, actor_critic_mlp

HEADS = [f"logit{i}" for i in range(N_LOGITS)] + ["value"]


def explained_mlp(method="saliency", batch_shape=(5,), seed=0):
    """``(module, explained, td)``: an actor-critic MLP with 4 logit heads and a value head
    (named as in ``HEADS``), attributed to its 9 observation features on a random batch."""
    module = actor_critic_mlp(seed)
    targets = {f"logit{i}": Index("logits", i) for i in range(N_LOGITS)} | {"value": "state_value"}
    explained = thr.Attributed(module, method, inputs=["observation"], targets=targets)
    obs = torch.randn(*batch_shape, OBS)
    td = explained(TensorDict(observation=obs, batch_size=batch_shape))
    return module, explained, td


def forward_columns(module):
    """``x (N, 9) -> (N, 5)``: the logits and the value, one column per head (for captum)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        out = module(TensorDict(observation=x, batch_size=x.shape[:1]))
        return torch.cat([out["logits"], out["state_value"]], -1)

    return forward


@pytest.fixture
def mlp_case():
    return explained_mlp


@pytest.fixture
def columns():
    return forward_columns


@pytest.fixture
def heads():
    return list(HEADS)
