"""PIT (Wang et al., 2023, "Enabling Language Models to Implicitly Learn Self-Improvement").

Three models on one preference set D = {(x, y_w, y_l)} (`sharpen_jax.tasks.preferences`):

* R_PIT, the gap reward model r_gap(x, y, y_ref) (`training.reward_model`, one row laid out by
  `GAP_LAYOUT`, default x, y_ref, y), trained on Eq. 2 (`training.reward_losses`): loss "pit_gap_reward";
  the plain Bradley-Terry reward model r(x, y) of ordinary RLHF: loss "bt_reward";
* M_PIT, the improver y ~ M_PIT(.|x, y_ref), first trained by SFT on -log M_PIT(y_w | x, y_l), only
  y_w's tokens scored (`IMPROVER_LAYOUT` renders the conditioning prompt): loss "pit_improver_sft";
* then RL on the gap reward, max E_{y ~ M_PIT(.|x, y_ref)}[r_gap(x, y, y_ref)] - β KL(M_PIT || M_PIT^SFT),
  with the project's KL-regularised policy gradient (leave-one-out baseline, KL shaping): loss "pit_rl".
  Its optimum is π*(y|x, y_ref) ∝ M_PIT^SFT(y|x, y_ref) exp(r_gap(x, y, y_ref) / β). Curriculum (Sec. 3.4):
  stage 0 takes y_ref from the dataset (y_l), stage 1 from the policy M_P's own samples (`STAGES`).

For the reward losses the `logprob_fn` slot of `LossEntry.build` holds the reward function
`reward_fn(params, seqs) -> r_B`. The RL batch source is `rlhf_sharpening.draw_batch(RL, ...)` on
`improver_prompts` with `gap_score_fn` as its score. Inference iterates y^{t+1} ~ M_PIT(.|x, y^t)
(`pit_inference`).
"""

from __future__ import annotations

import dataclasses
import string
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sharpen_jax.methods.registry import GROUP, Draw, LossEntry, register_loss
from sharpen_jax.methods.rlhf_sharpening import check_beta
from sharpen_jax.rollouts import PromptSet, SampleFn, ScoreFn, completion_texts
from sharpen_jax.tasks.preferences import PreferencePair
from sharpen_jax.tokenizer import pad_batch
from sharpen_jax.training import losses, reward_losses, reward_model
from sharpen_jax.training.datasets import SFTDataset
from sharpen_jax.training.policies import pack_token_lists

METHOD = "pit"
STAGES = ("stage0", "stage1")  # y_ref from the dataset (y_l) / from the policy M_P's samples
GAP_LAYOUT = "{x}{y_ref}\nA second answer:{y}\n"  # the final newline: a candidate row never ends empty
BT_LAYOUT = "{x}{y}"
IMPROVER_LAYOUT = "{x}{y_ref}\nHere is an answer; write a better one.\nAnswer:"


def _fields(template: Any, name: str) -> list[str]:
    """The "{field}" names of a format template, in order; a non-str or malformed one is an error naming it."""
    if not isinstance(template, str):
        raise TypeError(f"{name}={template!r}; expected a str template")
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise ValueError(f"{name}={template!r} is not a format template: {err}") from None


@dataclasses.dataclass(frozen=True)
class Layout:
    """A text template holding each of `fields` exactly once as "{field}" and no other field."""

    template: str
    fields: tuple[str, ...]
    name: str = "layout"

    def __post_init__(self):
        found = _fields(self.template, self.name)
        missing = [f for f in self.fields if found.count(f) != 1]
        extra = sorted(set(found) - set(self.fields))
        if missing or extra:
            raise ValueError(f"{self.name}={self.template!r}; expected each of "
                             f"{['{' + f + '}' for f in self.fields]} exactly once and no other field "
                             f"(missing or repeated: {missing}, unknown: {extra})")

    def render(self, **texts: str) -> str:
        return self.template.format(**texts)

    @property
    def shares_prefix(self) -> bool:
        """Whether "{y}" comes after every other field, so rows of one (x, y_ref) share a text prefix."""
        return "y" in self.fields and all(self.template.find("{y}") > self.template.find("{" + f + "}")
                                          for f in self.fields if f != "y")

    def split(self, **texts: str) -> tuple[str, str]:
        """(text before "{y}", text from "{y}" on), which concatenate to `render(**texts)`."""
        head, tail = self.template.split("{y}")
        return head.format(**{k: v for k, v in texts.items() if k != "y"}), ("{y}" + tail).format(y=texts["y"])


def gap_layout(template: str = GAP_LAYOUT) -> Layout:
    """The R_PIT layout; its fields x, y_ref and y may come in any order."""
    found = _fields(template, "gap_layout")
    order = tuple(sorted(("x", "y_ref", "y"), key=lambda f: found.index(f) if f in found else 99))
    return Layout(template, order, "gap_layout")


def row_tokens(tokenizer, layout: Layout, **texts: str) -> list[int]:
    """The token ids of one reward-model row. With a shared-prefix layout the text before "{y}" and the
    rest are tokenized separately (as `score_against_references` does), otherwise the whole text."""
    if layout.shares_prefix:
        prefix, suffix = layout.split(**texts)
        return tokenizer.encode(prefix) + tokenizer.encode(suffix, add_bos=False)
    return tokenizer.encode(layout.render(**texts))


def _rows(tokenizer, token_lists: list[list[int]], length: int | None) -> dict[str, np.ndarray]:
    encoded = pad_batch(token_lists, tokenizer.pad_id, "right", length)
    return {"tokens": encoded.tokens, "valid": encoded.valid}


def _check_pairs(pairs: Sequence[PreferencePair]) -> None:
    if not pairs:
        raise ValueError("preference set is empty: expected at least one (prompt, chosen, rejected) pair")


def gap_reward_batch(tokenizer, pairs: Sequence[PreferencePair], layout: Layout | None = None,
                     length: int | None = None) -> dict[str, dict[str, np.ndarray]]:
    """The four sides of Eq. 2: "ab" = rows R_PIT(x, y_ref = y_b, y = y_a) for a, b in {w, l}."""
    _check_pairs(pairs)
    layout = layout or gap_layout()
    sides = {"w": lambda p: p.chosen, "l": lambda p: p.rejected}
    return {key: _rows(tokenizer, [row_tokens(tokenizer, layout, x=p.prompt, y=sides[key[0]](p),
                                              y_ref=sides[key[1]](p)) for p in pairs], length)
            for key in reward_losses.GAP_KEYS}


def bt_reward_batch(tokenizer, pairs: Sequence[PreferencePair], length: int | None = None
                    ) -> dict[str, dict[str, np.ndarray]]:
    """{"w": rows (x, y_w), "l": rows (x, y_l)} for the Bradley-Terry reward model."""
    _check_pairs(pairs)
    layout = Layout(BT_LAYOUT, ("x", "y"), "bt_layout")
    return {side: _rows(tokenizer, [row_tokens(tokenizer, layout, x=p.prompt, y=getattr(p, attr)) for p in pairs],
                        length) for side, attr in (("w", "chosen"), ("l", "rejected"))}


def improver_prompt(x: str, y_ref: str, template: str = IMPROVER_LAYOUT) -> str:
    """The conditioning text of M_PIT(. | x, y_ref)."""
    return Layout(template, ("x", "y_ref"), "improver_layout").render(x=x, y_ref=y_ref)


def improver_dataset(tokenizer, pairs: Sequence[PreferencePair], *, completion_length: int,
                     template: str = IMPROVER_LAYOUT) -> SFTDataset:
    """SFT rows improver_prompt(x, y_l) ++ y_w with `target` on y_w's tokens only."""
    _check_pairs(pairs)
    prompts = [tokenizer.encode(improver_prompt(p.prompt, p.rejected, template)) for p in pairs]
    completions = [tokenizer.encode(p.chosen, add_bos=False) for p in pairs]
    return SFTDataset(pack_token_lists(prompts, completions, completion_length=completion_length,
                                       pad_id=tokenizer.pad_id))


def _bucket(n: int, multiple: int) -> int:
    return -(-max(n, 1) // multiple) * multiple


def score_against_references(backbone: dict, head: dict, config, tokenizer, contexts: Sequence[tuple[str, str]],
                             candidates: Sequence[Sequence[str]], layout: Layout | None = None) -> np.ndarray:
    """r_gap(x_b, y_bn, y_ref_b) for N candidates per context (x_b, y_ref_b), float32[B, N].

    With a shared-prefix layout the prefix (x, y_ref) runs once per context and its N candidates read
    it through the KV cache (`reward_model.score_candidates`); otherwise every row runs whole. Widths are
    padded to multiples of 32 (prefix) and 16 (candidate) tokens so few shapes compile.
    """
    layout = layout or gap_layout()
    n = {len(c) for c in candidates}
    if len(candidates) != len(contexts) or len(n) != 1 or 0 in n:
        raise ValueError(f"expected the same number (>= 1) of candidates for each of the {len(contexts)} contexts; "
                         f"got {[len(c) for c in candidates]}")
    (n,) = n
    if not layout.shares_prefix:
        rows = [row_tokens(tokenizer, layout, x=x, y_ref=y_ref, y=y) for (x, y_ref), ys in zip(contexts, candidates)
                for y in ys]
        encoded = pad_batch(rows, tokenizer.pad_id, "right", _bucket(max(map(len, rows)), 16))
        r_R = reward_model.head_reward(head, _last_hidden(backbone, config, jnp.asarray(encoded.tokens),
                                                          jnp.asarray(encoded.valid)))
        return np.asarray(r_R, np.float32).reshape(len(contexts), n)
    prefixes, suffixes = [], []
    for (x, y_ref), ys in zip(contexts, candidates):
        prefixes.append(tokenizer.encode(layout.split(x=x, y_ref=y_ref, y="")[0]))
        suffixes += [tokenizer.encode(layout.split(x=x, y_ref=y_ref, y=y)[1], add_bos=False) for y in ys]
    if not all(suffixes):
        raise ValueError("a candidate row has no tokens after the shared prefix; the layout needs text at {y}")
    prefix = pad_batch(prefixes, tokenizer.pad_id, "left", _bucket(max(map(len, prefixes)), 32))
    suffix = pad_batch(suffixes, tokenizer.pad_id, "right", _bucket(max(map(len, suffixes)), 16))
    r_R = reward_model.score_candidates(backbone, head, config, jnp.asarray(prefix.tokens), jnp.asarray(prefix.valid),
                                        jnp.asarray(suffix.tokens), jnp.asarray(suffix.lengths, jnp.int32), n)
    return np.asarray(r_R, np.float32).reshape(len(contexts), n)


_last_hidden = jax.jit(reward_model.last_hidden, static_argnums=1)


def sampled_texts(sample_fn: SampleFn, params, tokenizer, prompts: PromptSet, key: jax.Array, *, num_samples: int,
                  temperature: float, batch_size: int, stop_strings: Sequence[str] = ()) -> list[list[str]]:
    """N completions per prompt as text, cut at `stop_strings`: the model samples of preference sets a, b, d."""
    texts: list[list[str]] = []
    for chunk, n in prompts.batches(batch_size):
        key, sub = jax.random.split(key)
        tokens, valid, _ = jax.device_get(sample_fn(params, chunk.tokens, chunk.valid, sub, num_samples, temperature))
        texts += [completion_texts(tokenizer, tokens[b], valid[b], stop_strings) for b in range(n)]
    return texts


def improver_prompts(tokenizer, contexts: Sequence[dict[str, str]], template: str = IMPROVER_LAYOUT,
                     length: int | None = None) -> PromptSet:
    """The improver's prompts for contexts {"x", "y_ref"}, left-padded (to `length` when given: one shape for
    every batch); `examples` holds the contexts."""
    if not contexts:
        raise ValueError("no (x, y_ref) contexts to build improver prompts from")
    texts = tuple(improver_prompt(c["x"], c["y_ref"], template) for c in contexts)
    padded = pad_batch([tokenizer.encode(t) for t in texts], tokenizer.pad_id, "left", length)
    return PromptSet(padded.tokens, padded.valid, tuple(contexts), texts)


def gap_score_fn(backbone: dict, head: dict, config, tokenizer, *, stop_strings: Sequence[str] = (),
                 layout: Layout | None = None) -> ScoreFn:
    """The RL reward as a rollouts `ScoreFn`: r_gap(x, y, y_ref) of each sample y (decoded, cut at
    `stop_strings`) of the improver prompts, whose contexts {"x", "y_ref"} are `prompts.examples`."""

    def score_fn(prompts: PromptSet, tokens_BNC, valid_BNC, ref_token_logprobs_BNC) -> np.ndarray:
        del ref_token_logprobs_BNC  # the gap reward reads text, not log-probabilities
        b, n, c = np.shape(tokens_BNC)
        texts = completion_texts(tokenizer, np.reshape(tokens_BNC, (b * n, c)), np.reshape(valid_BNC, (b * n, c)),
                                 stop_strings)
        contexts = [(e["x"], e["y_ref"]) for e in prompts.examples]
        return score_against_references(backbone, head, config, tokenizer, contexts,
                                        [texts[i * n:(i + 1) * n] for i in range(b)], layout)

    return score_fn


# ------------------------------------------------------------------------------------ loss entries
def _build_gap_reward(reward_fn, ref_fn):
    del ref_fn  # a reward model has no reference

    def loss_fn(params, ref_params, batch):
        r = {key: reward_fn(params, batch[key]) for key in reward_losses.GAP_KEYS}
        return reward_losses.gap_reward_loss(r["wl"], r["ww"], r["ll"], r["lw"], batch.get("weight"))

    return loss_fn


def _build_bt_reward(reward_fn, ref_fn):
    del ref_fn

    def loss_fn(params, ref_params, batch):
        return reward_losses.bradley_terry_loss(reward_fn(params, batch["w"]), reward_fn(params, batch["l"]),
                                                batch.get("weight"))

    return loss_fn


def _build_improver_sft(logprob_fn, ref_fn):
    """-mean_i log M_PIT(y_w,i | x_i, y_l,i): the per-pair mean of the y_w token log-probs' sum."""
    del ref_fn

    def loss_fn(params, ref_params, batch):
        logp_B, _ = logprob_fn(params, batch["seqs"])
        return losses.sft_loss(logp_B, jnp.ones_like(logp_B), batch.get("weight"))

    return loss_fn


def _build_rl(logprob_fn, ref_logprob_fn, *, beta: float, group_size: int | None = None):
    check_beta(beta)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size={group_size!r}; the leave-one-out baseline needs >= 2 samples per context")

    def loss_fn(params, ref_params, batch):
        logp_N, _ = logprob_fn(params, batch["seqs"])
        ref_N = jax.lax.stop_gradient(ref_logprob_fn(ref_params, batch["seqs"])[0])
        return losses.kl_policy_gradient_loss(logp_N, ref_N, batch["reward"], group_size=group_size, beta=beta,
                                              weight_N=batch.get("weight"))

    return loss_fn


GAP_REWARD = register_loss(LossEntry(
    "pit_gap_reward", METHOD, _build_gap_reward, reward_losses.GAP_KEYS,
    description="R_PIT on Eq. 2: five log-sigmoid comparisons of r(w,l), r(w,w), r(l,l), r(l,w)"))
BT_REWARD = register_loss(LossEntry(
    "bt_reward", METHOD, _build_bt_reward, ("w", "l"),
    description="Bradley-Terry reward model r(x, y): -log sigmoid(r(x, y_w) - r(x, y_l))"))
IMPROVER_SFT = register_loss(LossEntry(
    "pit_improver_sft", METHOD, _build_improver_sft, ("seqs",),
    description="M_PIT SFT: -log M_PIT(y_w | x, y_l), y_w's tokens only"))
RL = register_loss(LossEntry(
    "pit_rl", METHOD, _build_rl, ("seqs", "reward"), draws=(Draw("seqs", "policy", GROUP),),
    hyperparameters=("beta", "group_size"), grouped=True,
    description="RL on r_gap(x, y, y_ref): KL-regularised policy gradient toward M_PIT^SFT"))


def check_stages(stages: Sequence[str]) -> tuple[str, ...]:
    """The curriculum stages to run, each in STAGES, in order; an unknown or repeated one is an error."""
    stages = tuple(stages)
    bad = [s for s in stages if s not in STAGES]
    if bad or len(set(stages)) != len(stages):
        raise ValueError(f"stages={list(stages)}; expected distinct stages among {list(STAGES)} "
                         f"(unknown: {bad})")
    return stages


def rl_reward_inputs(pairs: Sequence[PreferencePair], stage: str, policy_samples: Sequence[str] | None = None
                     ) -> list[dict[str, Any]]:
    """The (x, y_ref) contexts of one curriculum stage: y_ref = y_l (stage 0) or M_P's samples (stage 1)."""
    check_stages([stage])
    _check_pairs(pairs)
    if stage == "stage0":
        return [{"x": p.prompt, "y_ref": p.rejected} for p in pairs]
    if policy_samples is None or len(policy_samples) != len(pairs):
        raise ValueError(f"stage1 needs one policy sample y_ref per prompt ({len(pairs)}); got "
                         f"{None if policy_samples is None else len(policy_samples)}")
    return [{"x": p.prompt, "y_ref": y} for p, y in zip(pairs, policy_samples)]
