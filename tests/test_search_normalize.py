"""String normalization (values.normalize) takes a shortcut for ASCII and is cached; it must
give exactly what the full Unicode path gives."""

from __future__ import annotations

import random
import string
import unicodedata

from app.fhir.search.values import normalize


def _full_path(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


def test_ascii_shortcut_equals_the_unicode_path() -> None:
    rng = random.Random(7)
    alphabet = string.printable  # letters, digits, punctuation and every ASCII whitespace
    samples = ["", " ", "Domain Resource", "  MiXeD\tCase\nLines  ", "http://X.org/a|B"]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
                for _ in range(2000)]  # fmt: skip
    for text in samples:
        assert normalize(text) == _full_path(text), repr(text)


def test_non_ascii_is_folded() -> None:
    folds = [
        ("Zoë", "zoe"),
        ("Straße", "strasse"),
        ("ÅNGSTRÖM  ﬁ", "angstrom fi"),
        ("Ｆｕｌｌ", "full"),
        ("Müller\u00a0Lüdenscheidt", "muller ludenscheidt"),
    ]
    for text, folded in folds:
        assert normalize(text) == folded == _full_path(text)
