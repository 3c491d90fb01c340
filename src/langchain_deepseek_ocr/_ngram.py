"""The windowed no-repeat n-gram guard DeepSeek runs against repetition loops.

Upstream (``process/ngram_norepeat.py``, and vLLM's ``NGramPerReqLogitsProcessor``): over
the *generated* tokens, ban any token that would complete an n-gram already seen in the
last ``window_size`` tokens; ``<td>`` and ``</td>`` are exempt because table rows repeat
legitimately. DeepSeek's image and vLLM recipes use n-gram 30, window 90.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["NGramGuard", "banned_tokens"]


@dataclass(frozen=True)
class NGramGuard:
    """Settings of the no-repeat n-gram guard.

    Attributes:
        ngram_size: Length of the n-grams that may not repeat (30 upstream).
        window_size: How many trailing generated tokens are searched (90 upstream).
        whitelist: Token texts that may always be generated (``<td>``, ``</td>``).
    """

    ngram_size: int = 30
    window_size: int = 90
    whitelist: tuple[str, ...] = field(default=("<td>", "</td>"))

    def __post_init__(self) -> None:
        if self.ngram_size < 1 or self.window_size < self.ngram_size:
            raise ValueError("need 1 <= ngram_size <= window_size")

    def tightened(self) -> NGramGuard:
        """A stricter guard for a retry after a loop: shorter n-grams, a longer window."""
        return NGramGuard(
            ngram_size=max(8, self.ngram_size // 2),
            window_size=max(self.window_size * 2, 200),
            whitelist=self.whitelist,
        )


def banned_tokens(
    generated: Sequence[int], ngram_size: int, window_size: int, whitelist: frozenset[int]
) -> set[int]:
    """Tokens the guard bans next, given the generated tokens so far.

    Args:
        generated: The generated token ids (at least the last ``window_size``).
        ngram_size: n.
        window_size: The search window.
        whitelist: Ids never banned.

    Returns:
        The banned ids (empty when fewer than ``ngram_size`` tokens exist).
    """
    n = len(generated)
    if n < ngram_size:
        return set()
    ids = list(generated[-window_size:]) if n > window_size else list(generated)
    m = len(ids)
    prefix = ids[m - (ngram_size - 1) :] if ngram_size > 1 else []
    banned: set[int] = set()
    if ngram_size == 1:
        banned.update(ids)
    else:
        first = prefix[0]
        for i in range(m - ngram_size + 1):
            if ids[i] == first and ids[i : i + ngram_size - 1] == prefix:
                banned.add(ids[i + ngram_size - 1])
    return banned - whitelist
