"""Science probe: multiple-choice cloze built from held-out science text, scored by likelihood.

An item blanks one word of a held-out sentence; the options are that word and three other words
of the held-out science text of similar length and similar frequency there (drawn from the
closest in log-frequency), so that preferring common words does not beat chance. The model
picks the option under which the rest of the sentence (option included) is most likely, given
the document up to the blank. Chance is 1/4.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from engine.eval.probes import EXAMPLES_KEPT, LanguageModel, ProbeResult, clip

NAME = "science"
DOMAIN = "science"
VERSION = 2  # 2: distractors matched in frequency, not drawn uniformly from the distinct words
OPTIONS = 4
NEAREST = 12  # distractors come from this many closest-in-frequency candidates
MIN_WORDS = 8
_WORD = re.compile(r"[A-Za-z]{4,}")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")


@dataclass(frozen=True)
class ScienceItem:
    context: str        # the document up to (not including) the whitespace before the blank
    lead: str           # that whitespace character
    options: list[str]  # candidate words
    answer: int         # index of the true word in options
    rest: str           # the sentence after the word, up to its end


def distractors(word: str, counts: Counter, rng: random.Random) -> list[str] | None:
    """OPTIONS - 1 words of about the word's length (+-1) and frequency, or None if too few exist."""
    lower = word.lower()
    pool = sorted(w for w in counts if abs(len(w) - len(word)) <= 1 and w.lower() != lower)
    if len(pool) < OPTIONS - 1:
        return None
    target = math.log(counts.get(word, 1))
    pool.sort(key=lambda w: abs(math.log(counts[w]) - target))
    return rng.sample(pool[:max(NEAREST, OPTIONS - 1)], OPTIONS - 1)


def build_items(texts: Sequence[str], limit: int, seed: int) -> list[ScienceItem]:
    """Up to `limit` items, at most two per document, with distractors of similar length."""
    rng = random.Random(f"science:{seed}")
    counts = Counter(m.group(0) for t in texts for m in _WORD.finditer(t))
    items = []
    for text in texts:
        if len(items) >= limit:
            break
        spots = []
        start = 0
        for end_match in _SENTENCE_END.finditer(text):
            end = end_match.start()
            sentence = text[start:end]
            words = list(re.finditer(r"(?<=\s)[A-Za-z]{4,}(?=[\s,;:]|$)", sentence))
            if len(sentence.split()) >= MIN_WORDS and len(words) >= 2:
                w = words[len(words) // 2 + rng.randrange(len(words) - len(words) // 2)]
                spots.append((start + w.start(), start + w.end(), end))
            start = end_match.end()
        rng.shuffle(spots)
        for w_start, w_end, s_end in spots[:2]:
            word = text[w_start:w_end]
            others = distractors(word, counts, rng)
            if others is None:
                continue
            options = others + [word]
            rng.shuffle(options)
            items.append(ScienceItem(text[:w_start - 1], text[w_start - 1], options, options.index(word),
                                     text[w_end:s_end]))
            if len(items) >= limit:
                break
    return items


def pairs(item: ScienceItem) -> list[tuple[str, str]]:
    """(context, continuation) for each option: the whitespace, the word and the rest of the sentence."""
    return [(item.context, f"{item.lead}{opt}{item.rest}") for opt in item.options]


def check(item: ScienceItem, scores: Sequence[float]) -> dict:
    pick = max(range(len(scores)), key=lambda i: scores[i])
    return {"picked": item.options[pick], "correct": pick == item.answer}


def run(lm: LanguageModel, texts: Sequence[str], limit: int, seed: int) -> ProbeResult:
    items = build_items(texts, limit, seed)
    scores = lm.score([p for item in items for p in pairs(item)]) if items else []
    correct = 0
    examples = []
    for k, item in enumerate(items):
        verdict = check(item, scores[k * OPTIONS:(k + 1) * OPTIONS])
        correct += verdict["correct"]
        if len(examples) < EXAMPLES_KEPT:
            examples.append({"context": clip(item.context), "options": item.options,
                             "answer": item.options[item.answer], **verdict})
    n = len(items)
    metrics = {"accuracy": correct / n, "chance": 1 / OPTIONS} if n else {}
    return ProbeResult(NAME, VERSION, metrics, n, examples)
