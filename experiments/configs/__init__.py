"""ml_collections config files of the experiments; each `get_config(preset)` builds one preset."""

import ml_collections


def sharpening_training_base(preset: str, num_train_prompts: int) -> ml_collections.ConfigDict:
    """What the SFT- and RLHF-Sharpening `cpu` presets share: SmolLM2-135M-Instruct on 4-shot 2-digit
    arithmetic, self-reward log pi_base(y|x), LoRA r=8 on all seven projections, AdamW lr 3e-4 with
    linear decay and clipping, held-out evaluation on 64 prompts with 16 samples each."""
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.seed = 0
    c.model = "smollm2-135m-instruct"
    c.dtype = ""  # "" keeps the checkpoint's dtype
    c.task = ml_collections.ConfigDict(dict(name="arithmetic", options={"digits": 2, "ops": "+-*"}, num_shots=4,
                                            num_train_prompts=num_train_prompts, num_eval_prompts=64, data_dir=""))
    c.self_reward = "logp"
    c.lora = ml_collections.ConfigDict(dict(rank=8, alpha=16.0, targets="q_proj,k_proj,v_proj,o_proj,gate_proj,"
                                                                         "up_proj,down_proj"))
    c.optim = ml_collections.ConfigDict(dict(learning_rate=3e-4, warmup_steps=0, grad_clip=1.0, weight_decay=0.0,
                                             schedule="linear"))
    c.eval = ml_collections.ConfigDict(dict(num_samples=16, temperature=1.0, batch_size=8,
                                            num_prompts_during_training=16, num_samples_during_training=4))
    return c
