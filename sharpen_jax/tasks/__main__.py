"""Inspect a task: ``python -m sharpen_jax.tasks <name> --split test --show 3``.

Prints, for the first `--show` examples of a split, the formatted prompt, the reference answer,
the reference completion and the grader's verdict on it. `--option key=value` passes task options
(``--option digits=3 --option ops=+-``; "1,5" becomes a tuple, numbers and true/false are
converted). With `--build DIR` the task is first written as a TFDS array_record dataset under DIR
and the prompts shown are read back from it through the grain pipeline.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sharpen_jax import checks
from sharpen_jax.tasks import registry


def parse_value(text: str) -> Any:
    """A command-line option value as int, float, bool, tuple (comma-separated) or str."""
    if "," in text:
        return tuple(parse_value(part) for part in text.split(",") if part)
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """{key: value} from "key=value" strings."""
    options = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise SystemExit(f"--option expects key=value, got {pair!r}")
        options[key] = parse_value(value)
    return options


def _render(prompt: str | list[dict[str, str]]) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"[{message['role']}] {message['content']}" for message in prompt)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (1 if a reference completion fails)."""
    parser = argparse.ArgumentParser(prog="python -m sharpen_jax.tasks", description=__doc__)
    parser.add_argument("name", choices=registry.names())
    parser.add_argument("--split", default="test")
    parser.add_argument("--show", type=int, default=3, help="number of examples to print")
    parser.add_argument("--data-dir", default=None, help="folder holding the task's raw files")
    parser.add_argument("--num-shots", type=int, default=1)
    parser.add_argument("--chat", action="store_true", help="print chat messages")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--build", default=None, metavar="DIR", help="build array_record here")
    args = parser.parse_args(argv)

    file_args = {"data_dir": args.data_dir} if registry.reads_files(args.name) else {}
    try:
        checks.integer("--show", args.show, 0)
        checks.integer("--num-shots", args.num_shots, 0)
        options = parse_options(args.option)
        task = registry.get(args.name, **file_args, **options)
        examples = task.examples(args.split)
        shown = list(examples[: args.show])
        prompts = [task.format_prompt(e, num_shots=args.num_shots, chat=args.chat) for e in shown]
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"task {task.name!r}: split {args.split!r} has {len(examples)} examples; "
          f"splits {list(task.splits)}; stop {task.stop!r}")
    if args.build:
        from sharpen_jax.tasks import pipeline, storage

        path = storage.build(args.name, args.build, data_dir=args.data_dir, **options)
        print(f"built {path}")
        batches = pipeline.prompt_dataset(
            task, storage.data_source(path, args.split), batch_size=max(args.show, 1),
            num_shots=args.num_shots, chat=args.chat,
        )  # fmt: skip
        prompts = batches[0]["prompt"][: args.show] if len(batches) else []
    failures = 0
    for example, prompt in zip(shown, prompts):
        completion = task.reference_completion(example)
        grade = task.grade(example, completion)
        failures += not grade.correct
        print(f"\n===== {example.id} =====\n{_render(prompt)}")
        print(f"----- reference answer: {example.answer!r}")
        print(f"----- reference completion:\n{completion}")
        print(f"----- grade: correct={grade.correct} extracted={grade.extracted!r}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
