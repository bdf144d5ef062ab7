"""The language expert: language detection, sentiment, keywords, entities, counts and extractive summaries.

Everything runs offline on data the packages ship: ``py3langid`` (language
identification, 97 languages), ``vaderSentiment`` (English sentiment lexicon),
``yake`` (keyword extraction, with stopword lists for 34 languages). Entities are
found by rules (no statistical model ships offline), and their types say so.
Translation is not offered: no offline package can do it without downloading
models, so the capability is not advertised.

Handlers are plain functions, so the manager runs them in a worker thread and
the node's event loop never blocks. Results are cached in a bounded LRU keyed by
task type, options and a digest of the text; ``metrics()`` reports its hit rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from ..handlers import HandlerSpec, NodePort, make_spec
from .text import (
    CJK,
    WORD,
    YAKE_STOPWORDS,
    counts,
    entities,
    has_keyword_stopwords,
    split_sentences,
    summarize_text,
)

CAPABILITIES = frozenset({"nlp", "text_analysis", "language_detection", "sentiment", "keywords", "entities",
                          "summarization"})

DEFAULTS: dict[str, Any] = {
    "cache_size": 1024,          # results kept in the LRU
    "max_text_chars": 100_000,   # longer texts are refused with a clear error
    "max_batch": 1000,           # texts in one batch task
    "languages": None,           # restrict detection to these ISO 639-1 codes (None: every language the model has)
    "keywords_top": 10,
    "keywords_ngram": 2,
    "summary_sentences": 3,
}

# py3langid labels that are not ISO 639-1, mapped to the macro-language that is.
_ISO_ALIASES = {"ary": "ar", "arz": "ar", "yue": "zh", "wuu": "zh", "uzs": "uz", "gug": "gn", "zxx": ""}
# yake names its Czech stopword list "cz".
# Scripts written without spaces between words: counted and compared by character.
class TextError(ValueError):
    """A payload the language expert cannot work on; the message says what it needs."""


class ResultCache:
    """A thread-safe LRU of results with hit and miss counts."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, int(capacity))
        self._items: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(task_type: str, options: dict[str, Any], text: str) -> tuple[str, str, str]:
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        return task_type, json.dumps(options, sort_keys=True, default=str), digest

    def get_or_compute(self, key: tuple[str, str, str], compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self.hits += 1
                self._items.move_to_end(key)
                return self._items[key]
            self.misses += 1
        value = compute()  # outside the lock: two threads may compute the same miss, both get the right answer
        if self.capacity:
            with self._lock:
                self._items[key] = value
                self._items.move_to_end(key)
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
        return value

    def stats(self) -> dict[str, Any]:
        with self._lock:
            total = self.hits + self.misses
            return {"size": len(self._items), "capacity": self.capacity, "hits": self.hits, "misses": self.misses,
                    "hit_rate": round(self.hits / total, 4) if total else 0.0}


# -- the engines (loaded once, lazily, from the packages' own data) ----------------------------

class _Engines:
    def __init__(self, languages: list[str] | None) -> None:
        self._languages = languages
        self._lock = threading.Lock()
        self._identifier: Any = None
        self._vader: Any = None
        self._yake: dict[tuple[str, int, int], tuple[Any, threading.Lock]] = {}
        self.load_seconds: dict[str, float] = {}

    def identifier(self) -> Any:
        if self._identifier is None:
            with self._lock:
                if self._identifier is None:
                    started = time.perf_counter()
                    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier
                    ident = LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)
                    if self._languages:
                        ident.set_languages(list(self._languages))
                    self._identifier = ident
                    self.load_seconds["language_model"] = round(time.perf_counter() - started, 3)
        return self._identifier

    def vader(self) -> Any:
        if self._vader is None:
            with self._lock:
                if self._vader is None:
                    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
                    self._vader = SentimentIntensityAnalyzer()
        return self._vader

    def keyword_extractor(self, language: str, ngram: int, top: int) -> tuple[Any, threading.Lock]:
        key = (language, ngram, top)
        if key not in self._yake:
            with self._lock:
                if key not in self._yake:
                    import yake
                    extractor = yake.KeywordExtractor(lan=YAKE_STOPWORDS.get(language, language), n=ngram, top=top,
                                                      dedup_lim=0.9)
                    self._yake[key] = (extractor, threading.Lock())
        return self._yake[key]


def _checked(settings: dict[str, Any]) -> dict[str, Any]:
    """node_configs.language_expert, checked: each bad value named with what is allowed."""
    def bad(key: str, allowed: str) -> ConfigError:
        return ConfigError(f"config: node_configs.language_expert.{key} = {settings[key]!r} is not allowed "
                           f"(allowed: {allowed})")
    for key, low in (("cache_size", 0), ("max_text_chars", 1), ("max_batch", 1), ("keywords_top", 1),
                     ("keywords_ngram", 1), ("summary_sentences", 1)):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise bad(key, f"a whole number of at least {low}")
    languages = settings["languages"]
    if isinstance(languages, str):
        languages = [x.strip() for x in languages.split(",") if x.strip()]
    if languages is not None and (not isinstance(languages, list)
                                  or not all(isinstance(x, str) and re.fullmatch(r"[a-z]{2,3}", x)
                                             for x in languages)):
        raise bad("languages", "a list of ISO 639-1 codes such as [en, fr, de]")
    settings["languages"] = languages or None
    return settings


class LanguageExpert:
    """The state of one language expert node: its engines, its cache, its settings."""

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self.settings = _checked({**DEFAULTS, **(settings or {})})
        languages = self.settings["languages"]
        self.engines = _Engines(list(languages) if languages else None)
        self.cache = ResultCache(int(self.settings["cache_size"]))
        self.texts_processed = 0
        self.warm_up_error: str | None = None
        self._count_lock = threading.Lock()
        self._warming: asyncio.Task[None] | None = None

    async def on_start(self, node: NodePort) -> None:
        """Load the models in the background, so the first task does not pay for it."""
        if self._warming is None:
            self._warming = asyncio.get_running_loop().create_task(self._warm_up(), name="language-warm-up")

    async def on_stop(self, node: NodePort) -> None:
        if self._warming is not None and not self._warming.done():
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warming

    async def _warm_up(self) -> None:
        try:
            await asyncio.to_thread(self.analyse, "Warm up the language models once.")
        except Exception as exc:  # the first real task reports it too, with its payload
            self.warm_up_error = f"{type(exc).__name__}: {exc}"

    # -- the analyses -------------------------------------------------------------------
    def detect_language(self, text: str) -> dict[str, Any]:
        if not WORD.search(text):
            return {"language": None, "confidence": 0.0, "reason": "no words to judge"}
        ranked = self.engines.identifier().rank(text)
        best_code, best = ranked[0]
        code = _ISO_ALIASES.get(best_code, best_code)
        alternatives = []
        for other, p in ranked[1:]:
            iso = _ISO_ALIASES.get(other, other)
            if p >= 0.01 and len(iso) == 2 and iso != code:
                alternatives.append({"language": iso, "confidence": round(float(p), 4)})
            if len(alternatives) == 3:
                break
        # A label like "zxx" (no linguistic content) or one with no ISO 639-1 code is not a language answer.
        if len(code) != 2:
            return {"language": None, "confidence": 0.0, "model_label": best_code, "alternatives": alternatives}
        return {"language": code, "confidence": round(float(best), 4), "alternatives": alternatives}

    def sentiment(self, text: str, language: str | None = None) -> dict[str, Any]:
        scores = self.engines.vader().polarity_scores(text)
        compound = float(scores["compound"])
        label = "positive" if compound >= 0.05 else "negative" if compound <= -0.05 else "neutral"
        out = {"compound": compound, "label": label, "positive": float(scores["pos"]),
               "negative": float(scores["neg"]), "neutral": float(scores["neu"]), "lexicon": "vader (English)"}
        if language and language != "en":
            out["warning"] = f"the sentiment lexicon is English; text in {language!r} scores near neutral"
        return out

    def keywords(self, text: str, language: str | None = None, top: int | None = None,
                 ngram: int | None = None) -> dict[str, Any]:
        top = int(top or self.settings["keywords_top"])
        ngram = int(ngram or self.settings["keywords_ngram"])
        if not 1 <= top <= 100 or not 1 <= ngram <= 5:
            raise TextError("keywords: top must be 1..100 and ngram 1..5")
        lang = language if has_keyword_stopwords(language) else "en"
        extractor, lock = self.engines.keyword_extractor(lang or "en", ngram, top)
        with lock:
            pairs = extractor.extract_keywords(text)
        # yake: lower scores are more relevant; keep its order and give the raw score.
        out = {"keywords": [{"keyword": str(k), "score": round(float(s), 6)} for k, s in pairs],
               "method": "yake", "stopwords": lang}
        if CJK.search(text):
            out["warning"] = "no word segmentation for this script; keywords are phrase fragments"
        return out

    def summarize(self, text: str, sentences: int | None = None, ratio: float | None = None,
                  language: str | None = None) -> dict[str, Any]:
        total = len(split_sentences(text))
        if ratio is not None:
            if not 0 < float(ratio) <= 1:
                raise TextError("summarize: ratio must be in (0, 1]")
            keep = max(1, math.ceil(total * float(ratio)))
        else:
            keep = int(sentences or self.settings["summary_sentences"])
            if keep < 1:
                raise TextError("summarize: sentences must be at least 1")
        return summarize_text(text, keep, language)

    def analyse(self, text: str) -> dict[str, Any]:
        language = self.detect_language(text)
        code = language.get("language")
        result: dict[str, Any] = {"language": code, "language_confidence": language["confidence"],
                                  "language_alternatives": language.get("alternatives", [])}
        result["sentiment"] = self.sentiment(text, code)
        result["keywords"] = [k["keyword"] for k in self.keywords(text, code)["keywords"]]
        found = entities(text, code)
        result["entities"] = found["entities"]
        stats = counts(text)
        result.update({"sentence_count": stats["sentences"], "word_count": stats["words"],
                       "character_count": stats["characters"]})
        return result

    # -- payloads, batches and the cache ----------------------------------------------------
    def _texts(self, task_type: str, payload: Any) -> tuple[list[str], bool, dict[str, Any]]:
        if isinstance(payload, str):
            return [self._check(task_type, payload)], False, {}
        if not isinstance(payload, dict):
            raise TextError(f'{task_type} needs {{"text": "…"}} or {{"texts": ["…", …]}}')
        options = {k: v for k, v in payload.items() if k not in ("text", "texts")}
        if "texts" in payload:
            texts = payload["texts"]
            if not isinstance(texts, list):
                raise TextError(f'{task_type}: "texts" must be a list of strings')
            if len(texts) > int(self.settings["max_batch"]):
                raise TextError(f"{task_type}: a batch holds at most {self.settings['max_batch']} texts, "
                                f"got {len(texts)}; split it")
            return [self._check(task_type, t) for t in texts], True, options
        if "text" not in payload:
            raise TextError(f'{task_type} needs {{"text": "…"}} or {{"texts": ["…", …]}}')
        return [self._check(task_type, payload["text"])], False, options

    def _check(self, task_type: str, text: Any) -> str:
        if not isinstance(text, str):
            raise TextError(f"{task_type}: each text must be a string, got {type(text).__name__}")
        if len(text) > int(self.settings["max_text_chars"]):
            raise TextError(f"{task_type}: a text of {len(text)} characters is over max_text_chars "
                            f"{self.settings['max_text_chars']}")
        return text

    def _run(self, task_type: str, payload: Any, fn: Callable[[str, dict[str, Any]], Any]) -> Any:
        texts, batch, options = self._texts(task_type, payload)
        results = [self.cache.get_or_compute(ResultCache.key(task_type, options, t), functools.partial(fn, t, options))
                   for t in texts]
        with self._count_lock:
            self.texts_processed += len(texts)
        if batch:
            return {"results": results, "count": len(results)}
        return results[0]

    def _language_of(self, text: str, options: dict[str, Any]) -> str | None:
        if options.get("language"):
            return str(options["language"])
        code = self.detect_language(text).get("language")
        return str(code) if code else None

    # -- handlers ---------------------------------------------------------------------------
    def handle_text_analysis(self, payload: Any) -> Any:
        """Language, sentiment, keywords, entities and counts of ``{"text"}`` or each of ``{"texts"}``."""
        return self._run("text_analysis", payload, lambda t, o: self.analyse(t))

    def handle_detect_language(self, payload: Any) -> Any:
        return self._run("detect_language", payload, lambda t, o: self.detect_language(t))

    def handle_sentiment(self, payload: Any) -> Any:
        return self._run("sentiment", payload, lambda t, o: self.sentiment(t, o.get("language")))

    def handle_keywords(self, payload: Any) -> Any:
        return self._run("keywords", payload, lambda t, o: self.keywords(t, self._language_of(t, o), o.get("top"),
                                                                         o.get("ngram")))

    def handle_entities(self, payload: Any) -> Any:
        return self._run("entities", payload, lambda t, o: entities(t, self._language_of(t, o)))

    def handle_text_stats(self, payload: Any) -> Any:
        return self._run("text_stats", payload, lambda t, o: counts(t))

    def handle_summarize(self, payload: Any) -> Any:
        return self._run("summarize", payload, lambda t, o: self.summarize(t, o.get("sentences"), o.get("ratio"),
                                                                           self._language_of(t, o)))

    def metrics(self) -> dict[str, Any]:
        """What the node's heartbeat shows about this expert: the result cache and the work done."""
        out = {"cache": self.cache.stats(), "texts_processed": self.texts_processed,
               "model_load_s": dict(self.engines.load_seconds)}
        if self.warm_up_error:
            out["warm_up_error"] = self.warm_up_error
        return {"language_expert": out}

    def handlers(self) -> list[HandlerSpec]:
        return [
            make_spec("text_analysis", self.handle_text_analysis, {"nlp", "text_analysis"}),
            make_spec("detect_language", self.handle_detect_language, {"nlp", "language_detection"}),
            make_spec("sentiment", self.handle_sentiment, {"nlp", "sentiment"}),
            make_spec("keywords", self.handle_keywords, {"nlp", "keywords"}),
            make_spec("entities", self.handle_entities, {"nlp", "entities"}),
            make_spec("text_stats", self.handle_text_stats, {"nlp", "text_analysis"}),
            make_spec("summarize", self.handle_summarize, {"nlp", "summarization"}),
        ]


def available() -> list[str]:
    """The language packages this machine can import (used by the node-type recommendation)."""
    import importlib.util
    return [name for name in ("py3langid", "vaderSentiment", "yake", "segtok")
            if importlib.util.find_spec(name) is not None]
