"""The keys and preset changes that the SFT- and RLHF-Sharpening configs share.

`shared_defaults` is the part of each training experiment's `defaults()` that both have: the model,
the task, the self-reward, LoRA, the optimizer and the held-out evaluation. The `cpu` values are
the defaults: SmolLM2-135M-Instruct on 4-shot 2-digit arithmetic, self-reward log pi_base(y|x),
LoRA r=8 on all seven projections, AdamW lr 3e-4 with linear decay and clipping, held-out
evaluation on 64 prompts with 16 samples each.
"""

from __future__ import annotations

import ml_collections

from experiments.models import RANDOM_SHAPE

LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


def shared_defaults(num_train_prompts: int) -> ml_collections.ConfigDict:
    """The keys both training experiments have, at their `cpu` values."""
    c = ml_collections.ConfigDict()
    c.preset = ""  # the preset name (set by get_config; recorded in the workdir's config.json)
    c.seed = 0
    c.model = "smollm2-135m-instruct"  # short name, HF checkpoint dir, .gguf file, or "random:SEED" (toy model)
    c.tokenizer = ""  # "" = the model's own; "char" or a model spec; required for "random:SEED"
    c.random_model = ml_collections.ConfigDict(RANDOM_SHAPE)  # shape of a "random:SEED" model
    c.dtype = ""  # "" keeps the checkpoint's dtype; "float32" or "bfloat16" overrides it
    c.task = ml_collections.ConfigDict(dict(
        name="arithmetic",  # a task of sharpen_jax.tasks
        options={"digits": 2, "ops": "+-*"},  # keyword options of tasks.get(name, ...)
        num_shots=4, num_train_prompts=num_train_prompts, num_eval_prompts=64,
        data_dir=""))  # "" = $SHARPEN_JAX_DATA_DIR, then <repo>/../shared/data
    c.self_reward = "log_likelihood"  # a reward of sharpen_jax.selection, computed under the base model
    c.lora = ml_collections.ConfigDict(dict(rank=8, alpha=16.0, targets=LORA_TARGETS))  # rank 0 = full fine-tuning
    c.optim = ml_collections.ConfigDict(dict(learning_rate=3e-4, warmup_steps=0, grad_clip=1.0, weight_decay=0.0,
                                             schedule="linear"))
    c.eval = ml_collections.ConfigDict(dict(num_samples=16, temperature=1.0, batch_size=8,
                                            num_prompts_during_training=16, num_samples_during_training=4))
    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=1, model=1))  # device mesh; -1 = the remaining
    # devices (at most one axis); all 1 = one device. Parameters and optimizer state are sharded over
    # fsdp x model (sharpen_jax.sharding), batch rows over data x fsdp.
    c.progress = True  # progress bars (may change when a run is resumed)
    c.distributed = False  # start jax.distributed (multi-process run; experiments.common.start_distributed)
    return c


def shrink_to_smoke(c: ml_collections.ConfigDict) -> None:
    """The smoke changes both experiments share: the toy model with the character tokenizer on
    1-digit addition, LoRA rank 4 and a large learning rate."""
    c.model = "random:0"
    c.tokenizer = "char"
    c.task.options = {"digits": 1, "ops": "+", "num_train": 40, "num_test": 20}
    c.task.num_shots = 1
    c.task.num_eval_prompts = 4
    c.lora.rank = 4
    c.optim.learning_rate = 1e-2
    c.progress = False
