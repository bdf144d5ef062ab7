"""Text as the language expert reads it, with no package and no I/O: sentences, words and counts, stopwords,
entities found by rule, and extractive summaries (sentences ranked by TextRank over shared terms). Pure but for
the stopword lists, read from ``yake``'s package data."""

from __future__ import annotations

import importlib.resources
import math
import re
from collections.abc import Callable
from typing import Any

YAKE_STOPWORDS = {"cs": "cz"}  # ISO 639-1 code → the name of yake's stopword list where they differ
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
WORD = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*|\d+(?:[.,:]\d+)*", re.UNICODE)
_CJK_TERMINATORS = re.compile(r"(?<=[。！？])")
# Languages that capitalise common nouns, or have no letter case: capitalisation does not mark names there.
_NO_CASE_NAMES = {"de", "lb", "ja", "zh", "ko", "ar", "fa", "he", "hi", "th"}


# -- text basics (pure) ----------------------------------------------------------------

def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: segtok's rules (abbreviations, initials, numbers), plus CJK full stops."""
    from segtok.segmenter import split_multi
    out: list[str] = []
    for sentence in split_multi(text):
        out += [s.strip() for s in _CJK_TERMINATORS.split(sentence) if s.strip()]
    return out


def words(text: str) -> list[str]:
    """Word tokens; in scripts without spaces (Chinese, Japanese) each character counts as one."""
    out: list[str] = []
    for token in WORD.findall(text):
        if CJK.search(token):
            out += [c for c in token if not c.isspace()]
        else:
            out.append(token)
    return out


def counts(text: str) -> dict[str, Any]:
    tokens = words(text)
    sentences = split_sentences(text)
    return {"characters": len(text), "words": len(tokens), "sentences": len(sentences),
            "unique_words": len({t.lower() for t in tokens}),
            "avg_words_per_sentence": round(len(tokens) / len(sentences), 2) if sentences else 0.0}


def stopwords(language: str | None) -> frozenset[str]:
    """yake's stopword list for ``language`` (empty when it has none)."""
    if not language:
        return frozenset()
    return _stopwords(YAKE_STOPWORDS.get(language, language))


_STOPWORD_CACHE: dict[str, frozenset[str]] = {}


def _stopwords(code: str) -> frozenset[str]:
    if code not in _STOPWORD_CACHE:
        try:
            path = importlib.resources.files("yake.core") / "StopwordsList" / f"stopwords_{code}.txt"
            raw = path.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            _STOPWORD_CACHE[code] = frozenset(w.strip().lower() for w in text.splitlines() if w.strip())
        except (OSError, ModuleNotFoundError):
            _STOPWORD_CACHE[code] = frozenset()
    return _STOPWORD_CACHE[code]


def has_keyword_stopwords(language: str | None) -> bool:
    return bool(language) and bool(stopwords(language))


# -- entities by rule (pure) -----------------------------------------------------------

_MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|December|"
           "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec")
_ENTITY_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("URL", re.compile(r"\bhttps?://[^\s<>\"')\]]+|\bwww\.[^\s<>\"')\]]+", re.I)),
    ("EMAIL", re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")),
    ("MENTION", re.compile(r"(?<![\w@])@\w{2,}")),
    ("HASHTAG", re.compile(r"(?<![\w#])#\w{2,}")),
    ("MONEY", re.compile(r"[$€£¥]\s?\d[\d,]*(?:\.\d+)?(?:\s?(?:million|billion|bn|[kKmM])\b)?"
                         r"|\b\d[\d,]*(?:\.\d+)?\s?(?:USD|EUR|GBP|JPY|dollars|euros|pounds)\b")),
    ("PERCENT", re.compile(r"\b\d+(?:[.,]\d+)?\s?(?:%|percent\b|per cent\b)")),
    ("DATE", re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b"
                        rf"|\b(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?\b"
                        rf"|\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{_MONTHS})\.?(?:,?\s+\d{{4}})?\b")),
    ("TIME", re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[ap]\.?m\.?)?(?!\w)|\b\d{1,2}\s?[ap]\.m\.", re.I)),
]
_TITLES = {"mr", "mrs", "ms", "dr", "prof", "sir", "madam", "president", "senator", "minister", "king", "queen",
           "herr", "frau", "monsieur", "madame", "señor", "señora", "signor", "signora"}
_ORG_SUFFIXES = {"inc", "ltd", "llc", "corp", "corporation", "company", "co", "gmbh", "ag", "sa", "plc",
                 "university", "bank", "institute", "foundation", "group", "agency", "ministry", "council"}
_NAME_JOINERS = {"of", "de", "van", "von", "der", "la", "le", "del", "da", "di", "du", "bin", "al", "&"}
_CAPITALISED = re.compile(r"[^\W\d_][\w'’\-]*", re.UNICODE)


def entities(text: str, language: str | None = None) -> dict[str, Any]:
    """Entities found by rules: URL, EMAIL, MENTION, HASHTAG, MONEY, PERCENT, DATE, TIME, and capitalised
    names (PERSON after a title, ORGANIZATION before a company word, otherwise PROPER_NOUN)."""
    found: list[dict[str, Any]] = []
    taken: list[tuple[int, int]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= s or start >= e for s, e in taken)

    for label, pattern in _ENTITY_PATTERNS:
        for m in pattern.finditer(text):
            start, end = m.start(), m.end()
            value = m.group().rstrip(".,;:")
            end = start + len(value)
            if value and free(start, end):
                taken.append((start, end))
                found.append({"text": value, "type": label, "start": start, "end": end})
    if (language or "") not in _NO_CASE_NAMES:
        found += _names(text, language, free, taken)
    found.sort(key=lambda e: e["start"])
    by_type: dict[str, int] = {}
    for e in found:
        by_type[e["type"]] = by_type.get(e["type"], 0) + 1
    return {"entities": found, "counts": by_type, "method": "rules"}


def _organisation(parts: list[str]) -> bool:
    """'Acme Corp', 'Bank of England', or an all-capitals run like 'NASA JPL'."""
    if parts[-1].lower().rstrip(".") in _ORG_SUFFIXES or parts[0].lower() in _ORG_SUFFIXES:
        return True
    return len(parts) > 1 and all(p.isupper() for p in parts if p.lower() not in _NAME_JOINERS)


def _names(text: str, language: str | None, free: Callable[[int, int], bool],
           taken: list[tuple[int, int]]) -> list[dict[str, Any]]:
    stop = stopwords(language or "en") or stopwords("en")
    tokens = [(m.group(), m.start(), m.end()) for m in _CAPITALISED.finditer(text)]
    sentence_starts = {0}
    for m in re.finditer(r"[.!?…]\s+|\n\s*", text):
        sentence_starts.add(m.end())
    capitalised_midsentence = {t for t, s, _ in tokens if t[:1].isupper() and s not in sentence_starts}
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(tokens):
        word, start, end = tokens[i]
        if not word[:1].isupper() or not free(start, end):
            i += 1
            continue
        j = i
        parts = [word]
        while j + 1 < len(tokens):
            nxt, ns, ne = tokens[j + 1]
            gap = text[tokens[j][2]:ns]
            if gap.strip() or "\n" in gap or not free(ns, ne):
                break
            if nxt[:1].isupper():
                parts.append(nxt)
                j += 1
            elif nxt.lower() in _NAME_JOINERS and j + 2 < len(tokens) and tokens[j + 2][0][:1].isupper() \
                    and not text[ne:tokens[j + 2][1]].strip():
                parts += [nxt, tokens[j + 2][0]]
                j += 2
            else:
                break
        span_start, span_end = start, tokens[j][2]
        at_sentence_start = start in sentence_starts
        lead = parts[0]
        if at_sentence_start and (lead.lower() in stop or (len(parts) == 1 and lead not in capitalised_midsentence)):
            if len(parts) == 1:
                i = j + 1
                continue
            parts = parts[1:]  # "The Acme Corp" → "Acme Corp"; "However Paris" → "Paris"
            span_start = tokens[i + 1][1]
        if len(parts) == 1 and parts[0].lower() in stop:
            i = j + 1
            continue
        previous = text[max(0, span_start - 12):span_start].rstrip().rstrip(".").split()
        if previous and previous[-1].lower() in _TITLES:
            label = "PERSON"
        elif _organisation(parts):
            label = "ORGANIZATION"
        else:
            label = "PROPER_NOUN"
        value = text[span_start:span_end]
        taken.append((span_start, span_end))
        out.append({"text": value, "type": label, "start": span_start, "end": span_end})
        i = j + 1
    return out


# -- extractive summary (pure) -------------------------------------------------------------

def _sentence_terms(sentence: str, stop: frozenset[str]) -> set[str]:
    terms: set[str] = set()
    for token in WORD.findall(sentence.lower()):
        if CJK.search(token):
            terms |= {token[k:k + 2] for k in range(max(1, len(token) - 1))}
        elif token not in stop and len(token) > 1:
            terms.add(token[:6] if len(token) > 6 else token)  # a crude stem: "systems"/"system" meet
    return terms


def rank_sentences(sentences: list[str], stop: frozenset[str] = frozenset(), damping: float = 0.85,
                   iterations: int = 100) -> list[float]:
    """TextRank: each sentence's PageRank on the graph of word-overlap similarity between sentences."""
    n = len(sentences)
    if n == 0:
        return []
    terms = [_sentence_terms(s, stop) for s in sentences]
    weights = [[0.0] * n for _ in range(n)]
    for a in range(n):
        for b in range(a + 1, n):
            shared = len(terms[a] & terms[b])
            if shared:
                w = shared / (math.log(1 + len(terms[a])) + math.log(1 + len(terms[b])))
                weights[a][b] = weights[b][a] = w
    out_sum = [sum(row) for row in weights]
    scores = [1.0 / n] * n
    for _ in range(iterations):
        new = [(1 - damping) / n + damping * sum(weights[b][a] / out_sum[b] * scores[b]
                                                 for b in range(n) if weights[b][a])
               for a in range(n)]
        # A sentence sharing nothing keeps only the teleport share; renormalise so the scores sum to 1.
        total = sum(new)
        new = [v / total for v in new]
        if max(abs(x - y) for x, y in zip(new, scores, strict=True)) < 1e-9:
            scores = new
            break
        scores = new
    return scores


def summarize_text(text: str, sentences: int = 3, language: str | None = None) -> dict[str, Any]:
    parts = split_sentences(text)
    scores = rank_sentences(parts, stopwords(language))
    order = sorted(range(len(parts)), key=lambda k: (-scores[k], k))
    keep = sorted(order[:max(1, sentences)])
    ranked = [{"index": k, "text": parts[k], "score": round(scores[k], 6), "rank": order.index(k) + 1}
              for k in order]
    return {"summary": " ".join(parts[k] for k in keep), "selected": keep, "sentences": ranked,
            "method": "textrank", "sentences_in": len(parts), "sentences_out": len(keep)}
