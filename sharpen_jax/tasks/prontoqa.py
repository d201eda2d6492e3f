"""ProntoQA-style deductive reasoning over a generated fictional ontology.

Each question states a small theory and asks about one entity::

    Every wumpus is a tumpus. Every tumpus is not sour. Every zumpus is sour.
    Max is a wumpus. True or false: Max is sour.

A proof has `hops` steps: hops - 1 subtype steps along a chain of made-up concepts, then one
property step ("Every tumpus is not sour. So Max is not sour."). Distractors add rules that do not
bear on the query: the first gives the query's adjective the opposite polarity on a concept
unrelated to the entity; the others hang new concepts with new adjectives below chain concepts.
Rules are shuffled unless `shuffle_rules=False`. The label (True/False, balanced in expectation)
comes from the construction; `prontoqa_solver` re-derives it from the text by forward chaining.

The reference solution is the proof chain followed by "The answer is true." / "... false."
"""

from __future__ import annotations

import re

import numpy as np

from sharpen_jax.tasks.base import Example, truncate_at_continuation
from sharpen_jax.tasks.generated import GeneratedTask, check_range, pick

CONCEPTS = (
    "wumpus", "yumpus", "zumpus", "dumpus", "rompus", "numpus", "tumpus", "vumpus", "impus",
    "jompus", "gorpus", "shumpus", "lempus", "sterpus", "grimpus", "lorpus", "brimpus", "felpus",
    "scrompus", "quimpus",
)  # fmt: skip
ADJECTIVES = (
    "sour", "sweet", "bitter", "salty", "bright", "dull", "hot", "cold", "large", "small",
    "happy", "sad", "wooden", "metallic", "opaque", "transparent", "fast", "slow", "red", "blue",
    "kind", "mean", "floral", "fruity", "shy", "loud", "liquid", "feisty", "nervous", "luminous",
)  # fmt: skip
NAMES = ("Max", "Alex", "Sam", "Polly", "Rex", "Fae", "Wren", "Stella", "Sally", "Ada")
MAX_HOPS = 8
_VERDICT_RE = re.compile(r"answer is:?\s*\**\s*(true|false)\b", re.IGNORECASE)
_BARE_VERDICT_RE = re.compile(r"\b(true|false)\b", re.IGNORECASE)


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def subtype_sentence(child: str, parent: str) -> str:
    """"Every <child> is a <parent>."."""
    return f"Every {child} is {_article(parent)} {parent}."


def property_sentence(subject: str, adjective: str, positive: bool, *, every: bool = True) -> str:
    """"Every <subject> is [not] <adjective>." (or "<Name> is ..." when not `every`)."""
    lead = f"Every {subject}" if every else subject
    return f"{lead} is {'' if positive else 'not '}{adjective}."


def member_sentence(entity: str, concept: str) -> str:
    """"<Name> is a <concept>."."""
    return f"{entity} is {_article(concept)} {concept}."


class ProntoQA(GeneratedTask):
    """Generated true/false deduction questions; `hops` and `distractors` set the difficulty."""

    name = "prontoqa"
    instruction = (
        "Decide whether the final statement follows from the facts and rules. Reason step by "
        "step, then end with 'The answer is true.' or 'The answer is false.'"
    )

    def __init__(
        self,
        *,
        hops: int | tuple[int, int] = (1, 5),
        distractors: int | tuple[int, int] = 2,
        shuffle_rules: bool = True,
        seed: int = 0,
        num_train: int = 1000,
        num_test: int = 200,
        shot_seed: int = 0,
    ):
        super().__init__(seed=seed, num_train=num_train, num_test=num_test, shot_seed=shot_seed)
        self.hops = check_range("hops", hops, 1, MAX_HOPS)
        self.distractors = check_range("distractors", distractors, 0, len(CONCEPTS) - MAX_HOPS)
        self.shuffle_rules = bool(shuffle_rules)

    def generate(self, rng: np.random.Generator) -> Example:
        """One question with its proof; see the module docstring for the construction."""
        hops = int(rng.integers(self.hops[0], self.hops[1] + 1))
        num_distractors = int(rng.integers(self.distractors[0], self.distractors[1] + 1))
        concepts = pick(rng, CONCEPTS, hops + num_distractors)
        chain, extra = concepts[:hops], concepts[hops:]
        adjectives = pick(rng, ADJECTIVES, 1 + num_distractors)
        entity = NAMES[int(rng.integers(len(NAMES)))]
        query_adjective = adjectives[0]
        positive, asks_positive = bool(rng.integers(2)), bool(rng.integers(2))

        rules = [subtype_sentence(a, b) for a, b in zip(chain, chain[1:])]
        rules.append(property_sentence(chain[-1], query_adjective, positive))
        for index, concept in enumerate(extra):
            if index == 0:
                rules.append(property_sentence(concept, query_adjective, not positive))
            else:
                rules.append(subtype_sentence(concept, chain[int(rng.integers(hops))]))
                rules.append(property_sentence(concept, adjectives[index], bool(rng.integers(2))))
        if self.shuffle_rules:
            rules = [rules[int(i)] for i in rng.permutation(len(rules))]

        query = property_sentence(entity, query_adjective, asks_positive, every=False)
        answer = "True" if asks_positive == positive else "False"
        proof = [member_sentence(entity, chain[0])]
        for child, parent in zip(chain, chain[1:]):
            proof += [subtype_sentence(child, parent), f"So {member_sentence(entity, parent)}"]
        proof += [
            property_sentence(chain[-1], query_adjective, positive),
            f"So {property_sentence(entity, query_adjective, positive, every=False)}",
        ]
        question = " ".join([*rules, member_sentence(entity, chain[0]), f"True or false: {query}"])
        return Example(
            id="",
            question=question,
            answer=answer,
            solution=" ".join([*proof, f"The answer is {answer.lower()}."]),
            metadata={"hops": hops, "distractors": num_distractors, "proof": proof},
        )

    def reference_completion(self, example: Example) -> str:
        """The proof chain and the verdict."""
        return f" {example.solution}"

    def extract_answer(self, completion: str) -> str | None:
        """"True" or "False" from "The answer is ...", else the last bare true/false word."""
        text = truncate_at_continuation(completion)
        found = list(_VERDICT_RE.finditer(text)) or list(_BARE_VERDICT_RE.finditer(text))
        return found[-1].group(1).capitalize() if found else None

    def is_equivalent(self, example: Example, extracted: str) -> bool:
        """Exact match of the verdict."""
        return extracted == example.answer
