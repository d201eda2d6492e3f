"""RLHF-Sharpening (Huang et al., 2024, Sec. 4.2): maximize E_pi[r_self] - beta KL(pi || pi_base).

Command:
    python -m experiments.rlhf_sharpening --config=experiments/configs/rlhf_sharpening.py:<preset> --workdir DIR

The self-reward is r(x, y) = log pi_base(y|x) (or its length-normalized variant), so the target is
pi*_beta ∝ pi_base^(1 + 1/beta). `loss` picks the algorithm: "reward_dpo" (Eq. 4, pairs from
pi_base), "xpo" (Algorithm 1: y ~ pi, y' ~ pi_base, optimism alpha * log pi(y')), "online_dpo"
(logistic loss on two on-policy samples), "kl_pg" (REINFORCE, leave-one-out baseline over K samples,
KL penalty). Preference batches are sampled on the fly from the current and the base policy.

Presets:
  smoke  tiny random model, character tokenizer, 1-digit addition, a few steps of reward-DPO with
         LoRA; ~1 min on 2 busy CPU cores, mostly compilation. Checks the pipeline only.
  cpu    SmolLM2-135M-Instruct with LoRA (r=8) on 4-shot 2-digit arithmetic, reward-DPO with
         beta=1, 8 prompts x 1 pair per step, 60 steps. Measured: 33 minutes wall (38.5
         CPU-minutes) on 2 cores, partly shared with another run; docs/RESULTS.md has the table. Expected: the
         held-out sample log-likelihood (under the base model) and J_beta rise over training.
  paper  GSM8K-scale XPO for a GPU/TPU.

Results: DIR/results.json ("before", "after", "lift"), DIR/metrics.jsonl (train loss, log-ratios,
reward, KL estimates; eval accuracies and J_beta), TensorBoard events, DIR/training_curves.png.
"""

import ml_collections

from experiments.configs import sharpening_training_base


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    c = sharpening_training_base(preset, num_train_prompts=512)
    c.sampling = ml_collections.ConfigDict(dict(temperature=1.0, max_new_tokens=8, batch_size=8))
    c.po = ml_collections.ConfigDict(dict(loss="reward_dpo", beta=1.0, alpha=0.0, prompts_per_step=8,
                                          group_size=4))
    c.train = ml_collections.ConfigDict(dict(num_steps=60, grad_accum_steps=1, save_every=10, log_every=1,
                                             eval_every=20, max_to_keep=3))

    if preset == "smoke":
        c.model = "tiny"
        c.task.options = {"digits": 1, "ops": "+", "num_train": 40, "num_test": 20}
        c.task.update(num_shots=1, num_train_prompts=16, num_eval_prompts=4)
        c.sampling.update(max_new_tokens=4, batch_size=4)
        c.po.update(prompts_per_step=4, group_size=2)
        c.lora.rank = 4
        c.optim.learning_rate = 1e-2
        c.train.update(num_steps=6, save_every=2, eval_every=3)
        c.eval.update(num_samples=2, batch_size=4, num_prompts_during_training=4, num_samples_during_training=2)
    elif preset == "paper":
        c.task = ml_collections.ConfigDict(dict(name="gsm8k", options={}, num_shots=8, num_train_prompts=7473,
                                                num_eval_prompts=1319, data_dir=""))
        c.sampling.update(max_new_tokens=256, batch_size=32)
        c.po.update(loss="xpo", beta=0.1, alpha=1e-3, prompts_per_step=64)
        c.train.update(num_steps=2000, save_every=100, eval_every=200)
        c.eval.update(num_samples=50, batch_size=32, num_prompts_during_training=128)
    elif preset != "cpu":
        raise ValueError(f"unknown preset {preset!r}; expected smoke, cpu or paper")
    return c
