"""Reading final answers out of free-form model text: numbers and LaTeX ``\\boxed{...}``.

`extract_final_number` is the numeric extractor shared by GSM8K and arithmetic. It looks, in order,
for the GSM8K terminator ``#### N``, a ``\\boxed{N}``, an "answer is N" / "Answer: N" phrase, and
finally the last number in the text. Numbers may carry thousands separators, a dollar sign, a sign,
decimals, and trailing punctuation or units ("$1,234.", "18 dollars"), which `normalize_number`
removes: it returns a canonical decimal string ("1234", "2.5", "-5") so that equal quantities
compare equal as strings and as `decimal.Decimal`s.
"""

from __future__ import annotations

import re
from decimal import Decimal

from sharpen_jax.tasks.base import truncate_at_continuation

_NUMBER_CORE = (
    r"(?<![\w.])(?P<sign>[-−])?\s?(?:\\?\$\s?)?"
    r"(?P<digits>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?!\d)"
)
NUMBER_RE = re.compile(_NUMBER_CORE)
_ANSWER_PHRASE_RE = re.compile(
    r"answer(?:\s+is|\s*:|\s*=)\s*(?:[^\d\n-]{0,24}?)" + _NUMBER_CORE,
    re.IGNORECASE,
)
_BOX_COMMANDS = ("\\boxed", "\\fbox")


def normalize_number(text: str) -> str | None:
    """Canonical decimal string for a number written with optional $, commas, sign and decimals."""
    match = NUMBER_RE.search(text.strip())
    if match is None:
        return None
    return _canonical(match)


def _canonical(match: re.Match) -> str:
    # String surgery rather than Decimal.normalize(), which rounds to 28 significant digits.
    whole, _, fraction = match.group("digits").replace(",", "").partition(".")
    whole, fraction = whole.lstrip("0") or "0", fraction.rstrip("0")
    text = f"{whole}.{fraction}" if fraction else whole
    return "0" if text == "0" else f"-{text}" if match.group("sign") else text


def numbers_equal(a: str, b: str) -> bool:
    """Whether two canonical (or raw) number strings denote the same value."""
    left, right = normalize_number(a), normalize_number(b)
    if left is None or right is None:
        return False
    return Decimal(left) == Decimal(right)


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``, ``\\boxed 5``) in `text`."""
    start = max(text.rfind(command) for command in _BOX_COMMANDS)
    if start < 0:
        return None
    command = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
    rest = text[start + len(command) :]
    if rest.startswith(" "):
        token = re.match(r"\s*([^\s$]+)", rest)
        return token.group(1) if token else None
    if not rest.startswith("{"):
        return None
    depth = 0
    for position, char in enumerate(rest):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return rest[1:position]
    return None


def extract_final_number(completion: str) -> str | None:
    """The canonical final number of a completion (see the module docstring for the order)."""
    text = truncate_at_continuation(completion)
    if "####" in text:
        found = NUMBER_RE.search(text.split("####", 1)[1])
        if found:
            return _canonical(found)
    boxed = last_boxed(text)
    if boxed is not None:
        number = normalize_number(boxed)
        if number is not None:
            return number
    phrases = list(_ANSWER_PHRASE_RE.finditer(text))
    if phrases:
        return _canonical(phrases[-1])
    numbers = list(NUMBER_RE.finditer(text))
    return _canonical(numbers[-1]) if numbers else None
