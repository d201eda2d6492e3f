"""Single-elimination tournaments among the N samples of each prompt (Song et al., 2024, Sec. 3).

Axis legend: B prompts, N samples per prompt, P pairs of one round (over all prompts), S survivors.

Each prompt's samples are put in a random bracket order (a seeded permutation per prompt); each
round pairs adjacent survivors, a `Compare` callback decides every pair of every prompt at once
(one batched call per round, never one call per pair), and the winners advance in bracket order.
With an odd number of survivors the last one advances without a match (a bye). The score of a
sample is the number of rounds it won, so the champion of N = 2^k samples scores k and a
first-round loser 0; "keep the samples that reach round r" is the rejection filter û >= r.

Because the starting order is uniformly random, each round's pairing is a uniformly random
matching of the survivors, which is what `theory.gv_gap.tournament_exact` assumes.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# Compare(prompt_P, first_P, second_P) -> bool[P]: True where sample first_P[p] of prompt prompt_P[p] beats second_P[p].
Compare = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def bracket_orders(num_prompts: int, num_samples: int, seed: int) -> np.ndarray:
    """A uniformly random starting order of each prompt's samples, int[B, N] (numpy default_rng(seed))."""
    rng = np.random.default_rng(seed)
    return np.argsort(rng.random((num_prompts, num_samples)), axis=-1)


def tournament_scores(num_prompts: int, num_samples: int, compare: Compare, *, seed: int = 0) -> np.ndarray:
    """Rounds won by each sample in its prompt's single-elimination tournament, float64[B, N]."""
    if num_samples < 1:
        raise ValueError(f"num_samples={num_samples}; a tournament needs at least one sample")
    scores_BN = np.zeros((num_prompts, num_samples), np.float64)
    alive_BS = bracket_orders(num_prompts, num_samples, seed)
    while alive_BS.shape[1] > 1:
        pairs = alive_BS.shape[1] // 2
        first_BP, second_BP = alive_BS[:, 0:2 * pairs:2], alive_BS[:, 1:2 * pairs:2]
        prompt_BP = np.broadcast_to(np.arange(num_prompts)[:, None], first_BP.shape)
        first_wins = np.asarray(compare(prompt_BP.ravel(), first_BP.ravel(), second_BP.ravel()), bool)
        if first_wins.shape != (first_BP.size,):
            raise ValueError(f"compare returned shape {first_wins.shape}; expected ({first_BP.size},)")
        winners_BP = np.where(first_wins.reshape(first_BP.shape), first_BP, second_BP)
        np.add.at(scores_BN, (prompt_BP, winners_BP), 1.0)
        alive_BS = np.concatenate([winners_BP, alive_BS[:, 2 * pairs:]], axis=1)
    return scores_BN
