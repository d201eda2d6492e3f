"""Quick look: load SmolLM2-135M-Instruct, sample a few answers, and print each with its self-rewards.

    python -m sharpen_jax.demo [--model smollm2-135m-instruct] [--num-samples 4]

Each completion is printed with log pi(y|x) and its length-normalized variant, the two
log-likelihood self-rewards of the sharpening paper, computed by the model that sampled it.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from sharpen_jax import checks, sampling, tokenizer, weights

QUESTIONS = ("What is 27 + 45?", "Name the largest planet in the solar system.")


def main(argv=None) -> None:
    """Sample `--num-samples` answers per question and print them sorted by log-likelihood."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        checks.integer("--num-samples", args.num_samples, 1)
        checks.integer("--max-new-tokens", args.max_new_tokens, 1)
        weights.resolve(args.model)  # a missing model is reported before anything loads
        config, params = weights.load(args.model)
        tok = tokenizer.load(args.model)
    except (OSError, ValueError) as err:
        parser.error(str(err))  # one line and exit status 2, no traceback
    chats = [[{"role": "user", "content": q}] for q in QUESTIONS]
    generations = sampling.generate(config, params, tok, chats, chat=True, num_samples=args.num_samples,
                                    max_new_tokens=args.max_new_tokens, rng=jax.random.key(args.seed))
    for question, samples in zip(QUESTIONS, generations):
        print(f"\n=== {question}")
        for g in sorted(samples, key=lambda g: -g.model_logprob):
            per_token = g.model_logprob / max(len(g.tokens), 1)
            print(f"  log pi(y|x) = {g.model_logprob:8.2f}   per token = {per_token:6.3f}   "
                  f"{'' if g.finished else '[truncated] '}{g.text.strip()!r}")
    best = [max(s, key=lambda g: g.model_logprob).text.strip() for s in generations]
    print("\nbest-of-N by log-likelihood:", best, f"(mean length {np.mean([len(b) for b in best]):.0f} chars)")


if __name__ == "__main__":
    main()
