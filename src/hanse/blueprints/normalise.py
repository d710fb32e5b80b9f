r"""The form of a text that input railguards see: NFKC, with invisible format characters removed.

Removed first: every format character (Unicode category Cf: zero-width space, joiner and non-joiner,
word joiner, byte order mark, soft hyphen, bidirectional controls, tags, ...) and the other default
ignorable code points (combining grapheme joiner, Hangul fillers, variation selectors). Then NFKC
folds compatibility forms: full-width letters, ligatures, circled and superscript digits. So
`pass\u200bword`, `pass\u00adword` and the full-width `\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44` all
read `password`.

Not folded: look-alike letters of other scripts (Cyrillic `\u0430` for Latin `a`) and case; a
pattern that cares about case says `(?i)`.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import re2

# Category Cf, and the default ignorable code points outside it (DerivedCoreProperties): the
# combining grapheme joiner, Hangul fillers, Khmer inherent vowels, variation selectors.
_IGNORABLE: Any = re2.compile(
    r"[\p{Cf}\x{034F}\x{115F}\x{1160}\x{17B4}\x{17B5}\x{180B}-\x{180F}\x{3164}"
    r"\x{FE00}-\x{FE0F}\x{FFA0}\x{E0100}-\x{E01EF}]+"
)


def normalise(text: str) -> str:
    """`text` as the railguards read it; ASCII text is its own normal form."""
    if text.isascii():
        return text
    # Removed before NFKC, so that what they separated can compose; and after it, for the few
    # compatibility forms that fold into one (U+FFA0 becomes U+3164).
    folded = unicodedata.normalize("NFKC", _IGNORABLE.sub("", text))
    return str(_IGNORABLE.sub("", folded))
