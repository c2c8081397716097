"""Greydanus saliency of a recurrent policy: every perturbation of step t starts from the
state the policy carried into step t (checked against a slow loop that restores the state
and blurs one mask at a time, from the paper's formula), and the memory itself blurred."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictSequential
from torchrl.data import Categorical, Composite, Unbounded
from torchrl.envs import EnvBase, InitTracker, TransformedEnv
from torchrl.modules import LSTMModule

import tdhook_rl as thr
from tdhook_rl.attribution import PerturbationSaliency
from tdhook_rl.attribution.perturbation_saliency import gaussian_blur, gaussian_masks

FRAME = (2, 9, 9)
HIDDEN = 6
RADIUS, STRIDE, SIGMA = 2.0, 3, 1.0
STATE = ("recurrent_state_h", "recurrent_state_c")
TARGETS = {"l0": ("logits", 0), "l2": ("logits", 2), "value": "state_value"}


class FrameEnv(EnvBase):
    """Random frames, three actions, no reward: something a pixel policy can roll out in."""

    def __init__(self, batch_size=(3,)):
        super().__init__(batch_size=torch.Size(batch_size))
        shape = self.batch_size
        self.observation_spec = Composite(pixels=Unbounded((*shape, *FRAME)), shape=shape)
        self.action_spec = Categorical(3, shape)
        self.reward_spec = Unbounded((*shape, 1))
        self._gen = torch.Generator().manual_seed(0)

    def _frame(self) -> torch.Tensor:
        return torch.rand(*self.batch_size, *FRAME, generator=self._gen)

    def _reset(self, td: TensorDictBase | None, **kwargs) -> TensorDictBase:
        return TensorDict(pixels=self._frame(), batch_size=self.batch_size)

    def _step(self, td: TensorDictBase) -> TensorDictBase:
        done = torch.zeros(*self.batch_size, 1, dtype=torch.bool)
        return TensorDict(
            pixels=self._frame(),
            reward=torch.zeros(*self.batch_size, 1),
            done=done,
            terminated=done.clone(),
            batch_size=self.batch_size,
        )

    def _set_seed(self, seed):
        self._gen.manual_seed(seed or 0)


class Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(FRAME[0], 4, 3)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        batch = pixels.shape[:-3]
        h = torch.tanh(self.conv(pixels.reshape(-1, *FRAME))).flatten(1)
        return h.reshape(*batch, -1)


def recurrent_policy() -> tuple[TransformedEnv, TensorDictSequential]:
    torch.manual_seed(0)
    lstm = LSTMModule(input_size=4 * 7 * 7, hidden_size=HIDDEN, in_key="embed", out_key="features")
    logits, value = torch.nn.Linear(HIDDEN, 3), torch.nn.Linear(HIDDEN, 1)
    with torch.no_grad():  # heads of a scale at which the scores are far from rounding
        logits.weight.mul_(10)
        value.weight.mul_(10)
    policy = TensorDictSequential(
        TensorDictModule(Encoder(), ["pixels"], ["embed"]),
        lstm,
        TensorDictModule(logits, ["features"], ["logits"]),
        TensorDictModule(value, ["features"], ["state_value"]),
        TensorDictModule(lambda logits: logits.argmax(-1), ["logits"], ["action"]),
    )
    env = TransformedEnv(FrameEnv(), InitTracker())
    env.append_transform(lstm.make_tensordict_primer())
    return env, policy


def heads(policy, pixels, h, c, is_init) -> torch.Tensor:
    """(l0, l2, value) of one step, from the given frame and carried state."""
    td = TensorDict(pixels=pixels, recurrent_state_h=h, recurrent_state_c=c, is_init=is_init)
    with torch.no_grad():
        out = policy(td)
    return torch.stack([out["logits"][..., 0], out["logits"][..., 2], out["state_value"][..., 0]])


def slow_saliency(policy, step: TensorDict) -> torch.Tensor:
    """Greydanus et al. 2018: S(t, i, j) = 1/2 ||f(I_t, h_t) - f(I'_t(i, j), h_t)||^2, one mask
    at a time, the recorded state restored for each; returns (3, *FRAME) per target,
    the centre scores upsampled the way the method does (checked at the centres only)."""
    pixels = step["pixels"]
    args = (step["recurrent_state_h"], step["recurrent_state_c"], step["is_init"])
    full = heads(policy, pixels, *args)
    blurred = gaussian_blur(pixels, SIGMA)
    masks = gaussian_masks(*FRAME[1:], RADIUS, STRIDE, pixels.device, pixels.dtype)
    scores = []
    for mask in masks:
        perturbed = pixels * (1 - mask) + blurred * mask
        scores.append(0.5 * (full - heads(policy, perturbed, *args)) ** 2)
    n = len(range(0, FRAME[1], STRIDE))
    return torch.stack(scores, -1).reshape(3, n, n)


def test_each_perturbation_starts_from_the_carried_state():
    env, policy = recurrent_policy()
    explained = thr.Attributed(
        policy, PerturbationSaliency(RADIUS, STRIDE, SIGMA), inputs=["pixels"], targets=TARGETS
    )
    rollout = env.rollout(5, explained)  # [B, T]: the state changes from step to step
    assert rollout.batch_size == (3, 5)
    assert not torch.equal(rollout["recurrent_state_c"][:, 2], rollout["recurrent_state_c"][:, 3])
    centres = slice(0, None, STRIDE)
    for b in range(3):
        for t in range(5):
            want = slow_saliency(policy, rollout[b, t])
            for i, name in enumerate(TARGETS):
                got = rollout["attribution", name, "pixels"][b, t, 0, centres, centres]
                torch.testing.assert_close(got, want[i], rtol=1e-4, atol=1e-7)
    # the test can fail: a loop that starts every perturbation from a fresh state differs
    step = rollout[0, 3].clone()
    step["is_init"] = torch.ones(1, dtype=torch.bool)
    fresh = slow_saliency(policy, step)
    got = rollout["attribution", "l0", "pixels"][0, 3, 0, centres, centres]
    assert not torch.allclose(got, fresh[0], rtol=1e-2)


@pytest.mark.parametrize("blur", [1.0, 0.5])
def test_memory_blur_against_a_slow_loop(blur):
    env, policy = recurrent_policy()
    rollout = env.rollout(4, policy)
    steps = rollout.select("pixels", "is_init", *STATE).clone()  # [3, 4]
    method = PerturbationSaliency(
        RADIUS, STRIDE, SIGMA, memory=["recurrent_state_c"], memory_blur=blur
    )
    explained = thr.Attributed(
        policy, method, inputs=["pixels", "recurrent_state_c"], targets=TARGETS
    )
    out = explained(steps.clone())
    frame_only = thr.Attributed(
        policy, PerturbationSaliency(RADIUS, STRIDE, SIGMA), inputs=["pixels"], targets=TARGETS
    )(steps.clone())
    for i, name in enumerate(TARGETS):
        # the frame's map is unchanged by the extra memory perturbation in the same forward
        torch.testing.assert_close(
            out["attribution", name, "pixels"], frame_only["attribution", name, "pixels"]
        )
        memory = out["attribution", name, "recurrent_state_c"]
        assert memory.shape == steps["recurrent_state_c"].shape
        for b in range(3):
            for t in range(4):
                s = steps[b, t]
                args = (s["pixels"], s["recurrent_state_h"])
                full = heads(policy, *args, s["recurrent_state_c"], s["is_init"])
                blurred = heads(policy, *args, s["recurrent_state_c"] * (1 - blur), s["is_init"])
                want = 0.5 * (full[i] - blurred[i]) ** 2
                torch.testing.assert_close(
                    memory[b, t], want.expand_as(memory[b, t]), rtol=1e-4, atol=1e-8
                )
    # the first step starts from a reset (is_init): no memory to blur; later steps have one
    assert (out["attribution", "value", "recurrent_state_c"][:, 0] == 0).all()
    assert (out["attribution", "value", "recurrent_state_c"][:, 1:] > 0).all()


def test_chunks_mix_frame_and_memory_rows():
    env, policy = recurrent_policy()
    steps = env.rollout(3, policy).select("pixels", "is_init", *STATE).clone()
    results = []
    for chunk in (None, 4, 9):
        method = PerturbationSaliency(
            RADIUS, STRIDE, SIGMA, chunk_size=chunk, memory=["recurrent_state_c"]
        )
        explained = thr.Attributed(
            policy, method, inputs=["pixels", "recurrent_state_c"], targets=TARGETS
        )
        results.append(explained(steps.clone())["attribution"])
    for other in results[1:]:
        for key in results[0].keys(True, True):
            torch.testing.assert_close(other[key], results[0][key])


def test_bad_memory_arguments():
    _, policy = recurrent_policy()
    with pytest.raises(ValueError, match="not an attributed input"):
        thr.Attributed(
            policy,
            PerturbationSaliency(memory=["recurrent_state_c"]),
            inputs=["pixels"],
            targets=TARGETS,
        )
    with pytest.raises(ValueError, match=r"memory_blur must be in \[0, 1\]"):
        PerturbationSaliency(memory=["recurrent_state_c"], memory_blur=2.0)
    assert "memory=['recurrent_state_c']" in repr(PerturbationSaliency(memory="recurrent_state_c"))
