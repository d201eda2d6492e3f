"""An independent forward-chaining checker for ProntoQA questions.

It reads the question *text* (not the generator's internal structures), turns each sentence into
a fact or rule, applies the rules until nothing new follows, and answers the query. Tests use it to
confirm every generated label; it refuses questions it cannot parse, inconsistent theories and
queries the theory does not decide.

Sentence forms: "Every X is a Y." (subtype), "Every X is [not] A." (property),
"Name is a X." (membership); query "True or false: Name is [not] A."
"""

from __future__ import annotations

import re

_SUBTYPE_RE = re.compile(r"Every (\w+) is an? (\w+)\.")
_PROPERTY_RE = re.compile(r"Every (\w+) is (not )?(\w+)\.")
_MEMBER_RE = re.compile(r"([A-Z]\w*) is an? (\w+)\.")
_QUERY_RE = re.compile(r"True or false: ([A-Z]\w*) is (not )?(\w+)\.")


def parse_question(question: str):
    """(subtype rules, property rules, memberships, query) parsed from a ProntoQA question."""
    theory, separator, query_text = question.partition("True or false:")
    if not separator:
        raise ValueError(f"no 'True or false:' query in {question!r}")
    query = _QUERY_RE.fullmatch(("True or false:" + query_text).strip())
    if query is None:
        raise ValueError(f"cannot parse the query {query_text.strip()!r}")
    subtypes, properties, members = [], [], []
    for sentence in re.findall(r"[^.]+\.", theory):
        sentence = sentence.strip()
        if match := _SUBTYPE_RE.fullmatch(sentence):
            subtypes.append(match.groups())
        elif match := _PROPERTY_RE.fullmatch(sentence):
            properties.append((match.group(1), match.group(3), match.group(2) is None))
        elif match := _MEMBER_RE.fullmatch(sentence):
            members.append(match.groups())
        else:
            raise ValueError(f"cannot parse the sentence {sentence!r}")
    entity, negated, adjective = query.groups()
    return subtypes, properties, members, (entity, adjective, negated is None)


def forward_chain(subtypes, properties, members) -> tuple[set, set]:
    """All (entity, concept) memberships and (entity, adjective, polarity) facts that follow."""
    concepts = set(members)
    changed = True
    while changed:
        changed = False
        for entity, concept in list(concepts):
            for child, parent in subtypes:
                if child == concept and (entity, parent) not in concepts:
                    concepts.add((entity, parent))
                    changed = True
    facts = {
        (entity, adjective, positive)
        for entity, concept in concepts
        for owner, adjective, positive in properties
        if owner == concept
    }
    for entity, adjective, positive in facts:
        if (entity, adjective, not positive) in facts:
            raise ValueError(f"inconsistent theory: {entity} is both {adjective} and not")
    return concepts, facts


def solve(question: str) -> str:
    """"True" or "False" for a ProntoQA question, derived by forward chaining."""
    subtypes, properties, members, (entity, adjective, positive) = parse_question(question)
    _, facts = forward_chain(subtypes, properties, members)
    if (entity, adjective, positive) in facts:
        return "True"
    if (entity, adjective, not positive) in facts:
        return "False"
    raise ValueError(f"the theory does not decide whether {entity} is {adjective}")
