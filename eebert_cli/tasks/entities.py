"""Entity spans from BIO (or BIOES / BILOU) tags and their exact-match scores, with conlleval's semantics.

A chunk starts at a ``B-`` tag, at an ``I-`` tag after ``O`` or after a tag of another type
(an ``I-`` without ``B-`` opens a chunk, as conlleval reads IOB1), and ends before ``O``,
a ``B-`` or a tag of another type. Taggers trained on BIOES (BILOU) end a chunk with its ``E-``
(``L-``) word and tag a one-word chunk ``S-`` (``U-``). A predicted entity counts only when its
type, first and last word all equal a gold entity's. A tag without a prefix (IO tagging) reads as ``I-``.
"""

from __future__ import annotations


#: a tag's prefix as the chunk rules read it: BILOU's L and U are BIOES's E and S
PREFIXES = {"B": "B", "I": "I", "E": "E", "L": "E", "S": "S", "U": "S"}


def _split(tag: str) -> tuple[str, str]:
    if tag == "O" or not tag:
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if sep and prefix in PREFIXES:
        return PREFIXES[prefix], kind
    return "I", tag


def spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first word, end word exclusive) of every chunk in one sentence's tags."""
    out: list[tuple[str, int, int]] = []
    start, kind = None, ""
    for i, tag in enumerate(tags):
        prefix, t = _split(tag)
        if start is not None and (prefix in ("O", "B", "S") or t != kind):
            out.append((kind, start, i))
            start = None
        if prefix != "O" and start is None:
            start, kind = i, t
        if start is not None and prefix in ("E", "S"):  # the chunk's last word
            out.append((kind, start, i + 1))
            start = None
    if start is not None:
        out.append((kind, start, len(tags)))
    return out


def span_counts(gold: list[list[str]], pred: list[list[str]]) -> list[tuple[int, int, int]]:
    """Per sentence: entity spans (correct, predicted, gold). The micro scores of any sum of these
    are exact, which is what calibration's resamples and exit assignments add up."""
    out = []
    for g, p in zip(gold, pred, strict=True):
        gs, ps = set(spans(g)), set(spans(p))
        out.append((len(gs & ps), len(ps), len(gs)))
    return out


def entity_scores(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """Micro precision, recall and F1 over exact entity spans, and the counts they come from."""
    counts = span_counts(gold, pred)
    correct, n_pred, n_gold = (sum(c[j] for c in counts) for j in range(3))
    precision = correct / n_pred if n_pred else 0.0
    recall = correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "correct": correct, "predicted": n_pred,
            "gold": n_gold}


def token_accuracy(pred: list[list[str]], ref: list[list[str]]) -> float:
    """Share of words whose tag equals the reference's."""
    same = total = 0
    for p, r in zip(pred, ref, strict=True):
        same += sum(a == b for a, b in zip(p, r, strict=True))
        total += len(r)
    return same / total if total else 0.0
