"""SARFA against its definition (Puri et al. 2020, eq. 2), written per feature and action with
scipy, the way the authors' code computes one action's score at a time."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.special import softmax
from scipy.stats import entropy
from tensordict import TensorDict

import tdhook_rl as thr
from tdhook_rl.attribution import SARFA
from tdhook_rl.attribution.noise import is_signed
from tdhook_rl.targets import Index

from models import N_LOGITS, OBS, actor_critic_mlp

LOGITS = {f"a{i}": Index("logits", i) for i in range(N_LOGITS)}


def sarfa_by_definition(q: np.ndarray, q_perturbed: np.ndarray, action: int) -> float:
    dp = softmax(q)[action] - softmax(q_perturbed)[action]
    if dp <= 0:
        return 0.0
    rem, rem_perturbed = np.delete(q, action), np.delete(q_perturbed, action)
    kl = entropy(softmax(rem_perturbed), softmax(rem))  # KL(p_rem(s') || p_rem(s))
    k = 1.0 / (1.0 + kl)
    return 2 * k * dp / (k + dp)


@pytest.mark.parametrize("mask", [None, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 3])])
def test_sarfa_is_the_definition(mask, batch_shape):
    module = actor_critic_mlp()
    x = 2 * torch.randn(*batch_shape, OBS)
    explained = thr.Attributed(
        module, SARFA(feature_mask=mask, baseline=0.1), inputs=["observation"], targets=LOGITS
    )
    out = explained(TensorDict(observation=x, batch_size=batch_shape))
    got = torch.stack([out["attribution", n, "observation"] for n in LOGITS])
    labels = torch.arange(OBS) if mask is None else mask
    for index in itertools.product(*map(range, batch_shape)):
        sample = x[index]
        q = module(TensorDict(observation=sample))["logits"].detach().double().numpy()
        for g in labels.unique().tolist():
            perturbed = torch.where(labels == g, 0.1, sample)
            q_p = module(TensorDict(observation=perturbed))["logits"].detach().double().numpy()
            for a in range(N_LOGITS):
                want = sarfa_by_definition(q, q_p, a)
                for feature in (labels == g).nonzero()[:, 0].tolist():
                    value = float(got[(a, *index, feature)])
                    assert value == pytest.approx(want, abs=1e-5, rel=1e-4), (index, g, a)
    assert (got >= 0).all() and (got <= 1).all()
    assert not is_signed(SARFA())


def test_sarfa_needs_every_action():
    explained = thr.Attributed(
        actor_critic_mlp(), SARFA(), inputs=["observation"], targets={"v": "state_value"}
    )
    with pytest.raises(ValueError, match="SARFA compares the actions of one head: give one target"):
        explained(TensorDict(observation=torch.randn(2, OBS), batch_size=[2]))
