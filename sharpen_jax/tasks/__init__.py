"""Verifiable reasoning tasks behind one interface: prompts, answer extraction and graders.

    from sharpen_jax import tasks
    task = tasks.get("gsm8k", data_dir="/path/to/data")       # or "math500", "game24", ...
    example = task.examples("test")[0]
    prompt = task.format_prompt(example, num_shots=4)          # plain "Question:/Answer:" text
    messages = task.format_prompt(example, num_shots=4, chat=True)
    grade = task.grade(example, completion)                    # Grade(correct, extracted)

Tasks load their raw files (JSONL/CSV) or generate their examples directly: that is the everyday
path, a few milliseconds to a few seconds and no build step. `sharpen_jax.tasks.storage` writes the
same examples as TensorFlow-Datasets array_record datasets (the storage path, reproducible byte
for byte) and `sharpen_jax.tasks.pipeline` batches formatted prompts from either with grain.
``python -m sharpen_jax.tasks <name> --split test --show 3`` prints prompts and verdicts.
"""

from sharpen_jax.tasks.base import Example, Grade, Task, TaskBase
from sharpen_jax.tasks.files import TaskDataError
from sharpen_jax.tasks.registry import accepted_options, get, names

__all__ = [
    "Example",
    "Grade",
    "Task",
    "TaskBase",
    "TaskDataError",
    "accepted_options",
    "get",
    "names",
]
