"""Real model: SmolLM2-135M-Instruct, 3-shot two-digit addition, greedy, stop at the first newline."""

from __future__ import annotations

import numpy as np
import pytest

from sharpen_jax import sampling

SHOTS = "".join(f"Question: What is {a} + {b}?\nAnswer: {a + b}\n\n" for a, b in [(37, 48), (12, 29), (55, 13)])


@pytest.mark.slow
def test_greedy_two_digit_addition_accuracy(smollm2):
    config, params, tok = smollm2
    pairs = np.random.default_rng(0).integers(10, 100, (50, 2)).tolist()
    prompts = [SHOTS + f"Question: What is {a} + {b}?\nAnswer:" for a, b in pairs]
    generations = sampling.generate(config, params, tok, prompts, max_new_tokens=6, temperature=0.0,
                                    stop_strings=("\n",))
    answers = [g[0].text.strip() for g in generations]
    correct = [ans == str(a + b) for ans, (a, b) in zip(answers, pairs)]
    accuracy = float(np.mean(correct))
    print(f"\nSmolLM2-135M-Instruct 3-shot two-digit addition, greedy: {accuracy:.2f} ({sum(correct)}/50)")
    assert all("\n" not in g[0].text for g in generations)
    assert accuracy >= 0.2  # measured 0.30 (15/50) on the CI machine class
