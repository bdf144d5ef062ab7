"""The language expert on fixed inputs with known answers (offline: every model ships in its package)."""

from __future__ import annotations

import pytest

from mesh_core.nodes.language_expert import LanguageExpert, ResultCache, TextError
from mesh_core.nodes.text import (
    counts,
    entities,
    rank_sentences,
    split_sentences,
    words,
)


@pytest.fixture(scope="module")
def expert() -> LanguageExpert:
    return LanguageExpert({"cache_size": 64})


@pytest.mark.parametrize(("lang", "text"), [
    ("en", "The weather was lovely this morning, so we walked along the river to the old bridge."),
    ("fr", "Le temps était magnifique ce matin, alors nous avons marché le long de la rivière."),
    ("de", "Das Wetter war heute Morgen herrlich, also sind wir am Fluss entlang zur alten Brücke gelaufen."),
    ("es", "El tiempo era precioso esta mañana, así que caminamos por el río hasta el puente viejo."),
    ("it", "Il tempo era splendido stamattina, così abbiamo camminato lungo il fiume fino al ponte vecchio."),
    ("ru", "Сегодня утром была прекрасная погода, и мы прошли вдоль реки до старого моста."),
    ("ja", "今朝は天気がとても良かったので、川沿いを古い橋まで散歩しました。"),
    ("ar", "كان الطقس جميلا هذا الصباح، لذلك مشينا على طول النهر حتى الجسر القديم."),
])
def test_language_detected_as_iso_639_1_with_confidence(expert: LanguageExpert, lang: str, text: str) -> None:
    found = expert.detect_language(text)
    assert found["language"] == lang
    assert 0.5 < found["confidence"] <= 1.0


def test_detection_accuracy_on_the_fifteen_language_sample(expert: LanguageExpert) -> None:
    """The sample the detector was chosen on: 90 sentences, 45 short clauses, 45 two-word phrases."""
    misses = {}
    for tier, data in (("sentences", SENTENCES), ("medium", MEDIUM), ("short", SHORT)):
        misses[tier] = [(lang, text, expert.detect_language(text)["language"]) for lang, text in data
                        if expert.detect_language(text)["language"] != lang]
    assert misses["sentences"] == []
    assert len(misses["medium"]) + len(misses["short"]) <= 2, misses  # measured: 1 (sv read as no)


def test_no_words_means_no_language(expert: LanguageExpert) -> None:
    assert expert.detect_language("")["language"] is None
    assert expert.detect_language("1234 !!! 5678")["language"] is None


@pytest.mark.parametrize(("text", "label"), [
    ("I absolutely love this product, it is wonderful and works perfectly!", "positive"),
    ("What a great day, the team did an amazing job.", "positive"),
    ("This is the worst service I have ever had, terrible and rude staff.", "negative"),
    ("I hate waiting, the delay was awful and the food was disgusting.", "negative"),
])
def test_sentiment_sign_on_clear_sentences(expert: LanguageExpert, text: str, label: str) -> None:
    found = expert.sentiment(text)
    assert found["label"] == label
    assert (found["compound"] > 0.3) if label == "positive" else (found["compound"] < -0.3)


def test_sentiment_warns_outside_english(expert: LanguageExpert) -> None:
    assert "warning" in expert.sentiment("Das ist wunderbar", "de")


def test_keywords_contain_the_obvious_term(expert: LanguageExpert) -> None:
    text = ("Solar power is growing fast around the world. Solar panels convert sunlight into electricity, and "
            "the cost of solar panels has fallen sharply. Many households now install solar panels on roofs.")
    found = [k["keyword"].lower() for k in expert.keywords(text, "en")["keywords"]]
    assert any("solar" in k for k in found[:3]), found
    assert any(k == "solar panels" for k in found), found


def test_keywords_in_french_use_french_stopwords(expert: LanguageExpert) -> None:
    text = ("La cuisine française est célèbre. Les chefs de la cuisine française utilisent du beurre. "
            "La cuisine régionale varie beaucoup.")
    result = expert.keywords(text, "fr")
    assert result["stopwords"] == "fr"
    assert any("cuisine" in k["keyword"].lower() for k in result["keywords"][:3])


def test_entities_by_rule() -> None:
    text = ("Dr. Jane Smith joined Acme Corp on March 3, 2024 in San Francisco. Write to jane@acme.com or see "
            "https://acme.com/news today. Revenue rose 20% to $5 million by 10:30 am. Thanks @techguy #AI")
    found = {(e["text"], e["type"]) for e in entities(text, "en")["entities"]}
    assert {("Jane Smith", "PERSON"), ("Acme Corp", "ORGANIZATION"), ("March 3, 2024", "DATE"),
            ("San Francisco", "PROPER_NOUN"), ("jane@acme.com", "EMAIL"), ("https://acme.com/news", "URL"),
            ("20%", "PERCENT"), ("$5 million", "MONEY"), ("10:30 am", "TIME"), ("@techguy", "MENTION"),
            ("#AI", "HASHTAG")} <= found
    assert not any(t == "Write" or t == "Revenue" or t == "Thanks" for t, _ in found)


def test_sentence_and_word_counts() -> None:
    text = "Dr. Smith went to Washington. He arrived at 9.30 a.m. on Monday! Was it raining? No."
    assert split_sentences(text) == ["Dr. Smith went to Washington.", "He arrived at 9.30 a.m. on Monday!",
                                     "Was it raining?", "No."]
    assert counts(text)["sentences"] == 4
    assert counts("one two three. four five")["words"] == 5
    assert words("我们需要咖啡") == list("我们需要咖啡")  # no spaces: one token per character
    assert counts("今日は晴れ。明日は雨。")["sentences"] == 2


def test_text_analysis_returns_every_part(expert: LanguageExpert) -> None:
    result = expert.handle_text_analysis({"text": "I love Paris in the spring. The food is wonderful."})
    assert result["language"] == "en" and result["language_confidence"] > 0.5
    assert result["sentiment"]["label"] == "positive"
    assert result["sentence_count"] == 2 and result["word_count"] == 10
    assert any(e["text"] == "Paris" for e in result["entities"])
    assert result["keywords"]


def test_summarize_ranks_the_central_sentence_first() -> None:
    sentences = ["Cats sleep most of the day.",
                 "Cats and dogs are popular pets, and both cats and dogs need daily food.",
                 "Dogs need daily walks.",
                 "The stock market closed higher on Friday."]
    scores = rank_sentences(sentences)
    assert max(range(4), key=scores.__getitem__) == 1  # it shares words with every pet sentence
    assert min(range(4), key=scores.__getitem__) == 3  # it shares nothing
    assert abs(sum(scores) - 1.0) < 1e-9


def test_summarize_keeps_original_order(expert: LanguageExpert) -> None:
    text = ("The river flooded the town. Rescue teams reached the flooded town at dawn. "
            "Officials said the flood damaged two hundred homes in the town. A local bakery sold bread.")
    result = expert.handle_summarize({"text": text, "sentences": 2})
    assert result["sentences_out"] == 2 and result["selected"] == sorted(result["selected"])
    assert "bakery" not in result["summary"]
    assert [s["rank"] for s in result["sentences"]] == [1, 2, 3, 4]


def test_batch_form_and_separate_task_types(expert: LanguageExpert) -> None:
    texts = ["Bonjour tout le monde, comment allez-vous aujourd'hui ?", "Good morning to all of you."]
    batch = expert.handle_detect_language({"texts": texts})
    assert batch["count"] == 2 and [r["language"] for r in batch["results"]] == ["fr", "en"]
    assert expert.handle_sentiment("I love it")["label"] == "positive"
    assert expert.handle_keywords({"text": "Python code, Python tests, Python tools.", "top": 3})["keywords"]
    assert expert.handle_entities("Contact bob@example.org")["entities"][0]["type"] == "EMAIL"
    assert expert.handle_text_stats("Two words.")["words"] == 2


def test_bad_payloads_say_what_they_need(expert: LanguageExpert) -> None:
    with pytest.raises(TextError, match="needs"):
        expert.handle_text_analysis({"txt": "typo"})
    with pytest.raises(TextError, match="string"):
        expert.handle_text_analysis({"texts": ["ok", 3]})
    small = LanguageExpert({"max_text_chars": 10, "max_batch": 2})
    with pytest.raises(TextError, match="max_text_chars"):
        small.handle_text_stats("x" * 11)
    with pytest.raises(TextError, match="at most 2"):
        small.handle_text_stats({"texts": ["a", "b", "c"]})


def test_cache_hit_rate_under_a_repeated_workload() -> None:
    expert = LanguageExpert({"cache_size": 100})
    distinct = [f"Report number {i} says the launch went well and everyone is happy." for i in range(25)]
    for _ in range(8):  # 200 requests over 25 distinct texts: 25 misses, 175 hits
        for text in distinct:
            expert.handle_text_analysis({"text": text})
    stats = expert.metrics()["language_expert"]["cache"]
    assert (stats["hits"], stats["misses"], stats["hit_rate"]) == (175, 25, 0.875)
    assert expert.metrics()["language_expert"]["texts_processed"] == 200


def test_cache_is_lru_and_keyed_by_options() -> None:
    cache = ResultCache(2)
    calls = []

    def compute(v: str) -> str:
        calls.append(v)
        return v.upper()

    a, b, c = (ResultCache.key("t", {}, x) for x in "abc")
    assert cache.get_or_compute(a, lambda: compute("a")) == "A"
    cache.get_or_compute(b, lambda: compute("b"))
    cache.get_or_compute(a, lambda: compute("a"))  # a is now the most recent
    cache.get_or_compute(c, lambda: compute("c"))  # evicts b
    cache.get_or_compute(a, lambda: compute("a"))
    cache.get_or_compute(b, lambda: compute("b"))
    assert calls == ["a", "b", "c", "b"]
    assert ResultCache.key("t", {"top": 3}, "x") != ResultCache.key("t", {"top": 4}, "x")


def test_settings_are_checked_and_languages_can_be_restricted() -> None:
    from mesh_core.errors import ConfigError
    with pytest.raises(ConfigError, match="cache_size"):
        LanguageExpert({"cache_size": -1})
    with pytest.raises(ConfigError, match="ISO 639-1"):
        LanguageExpert({"languages": ["English"]})
    restricted = LanguageExpert({"languages": "sv, en"})
    assert restricted.detect_language("jag glömde mina nycklar på jobbet")["language"] == "sv"


async def test_models_warm_up_in_the_background_on_start() -> None:
    expert = LanguageExpert()
    await expert.on_start(None)
    assert expert._warming is not None
    await expert._warming
    assert expert.engines.load_seconds["language_model"] > 0 and expert.warm_up_error is None
    await expert.on_stop(None)


# -- the sample: 15 languages; full sentences, short clauses, two-word phrases (hand-written) ----------------

SENTENCES = [
    ('en', 'The weather was lovely this morning, so we walked along the river to the old bridge.'),
    ('en', 'Please send me the quarterly report before the meeting on Thursday afternoon.'),
    ('en', 'My brother has been learning to play the piano since he was seven years old.'),
    ('en', 'The train to London was delayed because of a signal failure near the station.'),
    ('en', 'Scientists have discovered a new species of frog in the rainforest of Borneo.'),
    ('en', 'I would rather stay at home and read a good book than go out tonight.'),
    ('fr', 'Le temps était magnifique ce matin, alors nous avons marché le long de la rivière.'),
    ('fr', "Pourriez-vous m'envoyer le rapport trimestriel avant la réunion de jeudi après-midi ?"),
    ('fr', "Mon frère apprend à jouer du piano depuis qu'il a sept ans."),
    ('fr', "Le train pour Lyon a été retardé à cause d'une panne de signalisation près de la gare."),
    ('fr', 'Les scientifiques ont découvert une nouvelle espèce de grenouille dans la forêt tropicale.'),
    ('fr', 'Je préfère rester à la maison et lire un bon livre plutôt que de sortir ce soir.'),
    ('de', 'Das Wetter war heute Morgen herrlich, also sind wir am Fluss entlang zur alten Brücke gelaufen.'),
    ('de', 'Bitte schicken Sie mir den Quartalsbericht vor der Besprechung am Donnerstagnachmittag.'),
    ('de', 'Mein Bruder lernt Klavier spielen, seit er sieben Jahre alt ist.'),
    ('de', 'Der Zug nach Berlin hatte wegen einer Signalstörung in der Nähe des Bahnhofs Verspätung.'),
    ('de', 'Wissenschaftler haben im Regenwald von Borneo eine neue Froschart entdeckt.'),
    ('de', 'Ich bleibe heute Abend lieber zu Hause und lese ein gutes Buch, als auszugehen.'),
    ('es', 'El tiempo era precioso esta mañana, así que caminamos por el río hasta el puente viejo.'),
    ('es', 'Por favor, envíame el informe trimestral antes de la reunión del jueves por la tarde.'),
    ('es', 'Mi hermano está aprendiendo a tocar el piano desde que tenía siete años.'),
    ('es', 'El tren a Madrid se retrasó por una avería en la señalización cerca de la estación.'),
    ('es', 'Los científicos han descubierto una nueva especie de rana en la selva tropical.'),
    ('es', 'Prefiero quedarme en casa y leer un buen libro que salir esta noche.'),
    ('it', 'Il tempo era splendido stamattina, così abbiamo camminato lungo il fiume fino al ponte vecchio.'),
    ('it', 'Per favore, mandami la relazione trimestrale prima della riunione di giovedì pomeriggio.'),
    ('it', 'Mio fratello sta imparando a suonare il pianoforte da quando aveva sette anni.'),
    ('it', 'Il treno per Milano è stato ritardato a causa di un guasto al segnale vicino alla stazione.'),
    ('it', 'Gli scienziati hanno scoperto una nuova specie di rana nella foresta pluviale.'),
    ('it', 'Preferisco restare a casa e leggere un buon libro piuttosto che uscire stasera.'),
    ('pt', 'O tempo estava lindo esta manhã, então caminhamos ao longo do rio até a ponte velha.'),
    ('pt', 'Por favor, envie-me o relatório trimestral antes da reunião de quinta-feira à tarde.'),
    ('pt', 'O meu irmão está a aprender a tocar piano desde os sete anos de idade.'),
    ('pt', 'O comboio para Lisboa atrasou por causa de uma avaria na sinalização perto da estação.'),
    ('pt', 'Os cientistas descobriram uma nova espécie de sapo na floresta tropical.'),
    ('pt', 'Prefiro ficar em casa e ler um bom livro do que sair hoje à noite.'),
    ('nl', 'Het weer was vanochtend prachtig, dus we liepen langs de rivier naar de oude brug.'),
    ('nl', 'Wilt u mij het kwartaalverslag sturen voor de vergadering van donderdagmiddag?'),
    ('nl', 'Mijn broer leert piano spelen sinds hij zeven jaar oud is.'),
    ('nl', 'De trein naar Amsterdam had vertraging door een seinstoring vlak bij het station.'),
    ('nl', 'Wetenschappers hebben in het regenwoud van Borneo een nieuwe kikkersoort ontdekt.'),
    ('nl', 'Ik blijf vanavond liever thuis om een goed boek te lezen dan uit te gaan.'),
    ('sv', 'Vädret var underbart i morse, så vi promenerade längs ån till den gamla bron.'),
    ('sv', 'Skicka mig gärna kvartalsrapporten före mötet på torsdag eftermiddag.'),
    ('sv', 'Min bror har lärt sig spela piano sedan han var sju år gammal.'),
    ('sv', 'Tåget till Göteborg blev försenat på grund av ett signalfel nära stationen.'),
    ('sv', 'Forskare har upptäckt en ny grodart i regnskogen på Borneo.'),
    ('sv', 'Jag stannar hellre hemma och läser en bra bok än går ut i kväll.'),
    ('pl', 'Pogoda była dziś rano piękna, więc poszliśmy wzdłuż rzeki do starego mostu.'),
    ('pl', 'Proszę przesłać mi raport kwartalny przed czwartkowym spotkaniem po południu.'),
    ('pl', 'Mój brat uczy się grać na pianinie, odkąd skończył siedem lat.'),
    ('pl', 'Pociąg do Krakowa był opóźniony z powodu awarii sygnalizacji w pobliżu stacji.'),
    ('pl', 'Naukowcy odkryli nowy gatunek żaby w lesie deszczowym na Borneo.'),
    ('pl', 'Wolę zostać w domu i przeczytać dobrą książkę, niż wychodzić dziś wieczorem.'),
    ('ru', 'Сегодня утром была прекрасная погода, и мы прошли вдоль реки до старого моста.'),
    ('ru', 'Пожалуйста, пришлите мне квартальный отчёт до встречи в четверг днём.'),
    ('ru', 'Мой брат учится играть на пианино с семи лет.'),
    ('ru', 'Поезд в Москву задержался из-за неисправности сигнализации возле станции.'),
    ('ru', 'Учёные обнаружили новый вид лягушки в тропических лесах Борнео.'),
    ('ru', 'Я лучше останусь дома и почитаю хорошую книгу, чем пойду куда-нибудь вечером.'),
    ('tr', 'Bu sabah hava çok güzeldi, bu yüzden nehir boyunca eski köprüye kadar yürüdük.'),
    ('tr', 'Lütfen perşembe öğleden sonraki toplantıdan önce bana üç aylık raporu gönderin.'),
    ('tr', 'Kardeşim yedi yaşından beri piyano çalmayı öğreniyor.'),
    ('tr', 'İstanbul treni istasyonun yakınındaki bir sinyal arızası nedeniyle gecikti.'),
    ('tr', 'Bilim insanları Borneo yağmur ormanlarında yeni bir kurbağa türü keşfetti.'),
    ('tr', 'Bu akşam dışarı çıkmak yerine evde kalıp güzel bir kitap okumayı tercih ederim.'),
    ('fi', 'Sää oli tänä aamuna ihana, joten kävelimme joen vartta vanhalle sillalle.'),
    ('fi', 'Lähetä minulle neljännesvuosiraportti ennen torstai-iltapäivän kokousta.'),
    ('fi', 'Veljeni on opetellut soittamaan pianoa seitsemänvuotiaasta asti.'),
    ('fi', 'Juna Helsinkiin myöhästyi aseman lähellä olleen opastinvian vuoksi.'),
    ('fi', 'Tutkijat ovat löytäneet uuden sammakkolajin Borneon sademetsästä.'),
    ('fi', 'Jään mieluummin kotiin lukemaan hyvää kirjaa kuin lähden ulos tänä iltana.'),
    ('ja', '今朝は天気がとても良かったので、川沿いを古い橋まで散歩しました。'),
    ('ja', '木曜日の午後の会議の前に、四半期報告書を送ってください。'),
    ('ja', '弟は七歳のときからピアノを習っています。'),
    ('ja', '駅の近くで信号故障があったため、東京行きの電車が遅れました。'),
    ('ja', '科学者たちはボルネオの熱帯雨林で新種のカエルを発見しました。'),
    ('ja', '今夜は出かけるよりも家で良い本を読みたいです。'),
    ('zh', '今天早上天气很好，所以我们沿着河边走到了那座老桥。'),
    ('zh', '请在星期四下午开会之前把季度报告发给我。'),
    ('zh', '我弟弟从七岁开始学弹钢琴。'),
    ('zh', '由于车站附近的信号故障，去北京的火车晚点了。'),
    ('zh', '科学家在婆罗洲的热带雨林里发现了一种新的青蛙。'),
    ('zh', '今晚我宁愿待在家里看一本好书，也不想出去。'),
    ('ar', 'كان الطقس جميلا هذا الصباح، لذلك مشينا على طول النهر حتى الجسر القديم.'),
    ('ar', 'من فضلك أرسل لي التقرير الفصلي قبل اجتماع يوم الخميس بعد الظهر.'),
    ('ar', 'يتعلم أخي العزف على البيانو منذ أن كان في السابعة من عمره.'),
    ('ar', 'تأخر القطار المتجه إلى القاهرة بسبب عطل في الإشارات قرب المحطة.'),
    ('ar', 'اكتشف العلماء نوعا جديدا من الضفادع في الغابات المطيرة.'),
    ('ar', 'أفضل البقاء في المنزل وقراءة كتاب جيد على الخروج الليلة.'),
]
MEDIUM = [
    ('en', 'I forgot my keys at work'),
    ('en', 'the children are playing outside'),
    ('en', 'we need more coffee'),
    ('fr', "j'ai oublié mes clés au bureau"),
    ('fr', 'les enfants jouent dehors'),
    ('fr', 'il nous faut plus de café'),
    ('de', 'ich habe meine Schlüssel vergessen'),
    ('de', 'die Kinder spielen draußen'),
    ('de', 'wir brauchen mehr Kaffee'),
    ('es', 'olvidé mis llaves en el trabajo'),
    ('es', 'los niños juegan afuera'),
    ('es', 'necesitamos más café'),
    ('it', 'ho dimenticato le chiavi al lavoro'),
    ('it', 'i bambini giocano fuori'),
    ('it', 'ci serve più caffè'),
    ('pt', 'esqueci as minhas chaves no trabalho'),
    ('pt', 'as crianças estão a brincar lá fora'),
    ('pt', 'precisamos de mais café'),
    ('nl', 'ik ben mijn sleutels vergeten'),
    ('nl', 'de kinderen spelen buiten'),
    ('nl', 'we hebben meer koffie nodig'),
    ('sv', 'jag glömde mina nycklar på jobbet'),
    ('sv', 'barnen leker ute'),
    ('sv', 'vi behöver mer kaffe'),
    ('pl', 'zapomniałem kluczy z pracy'),
    ('pl', 'dzieci bawią się na dworze'),
    ('pl', 'potrzebujemy więcej kawy'),
    ('ru', 'я забыл ключи на работе'),
    ('ru', 'дети играют на улице'),
    ('ru', 'нам нужно больше кофе'),
    ('tr', 'anahtarlarımı işte unuttum'),
    ('tr', 'çocuklar dışarıda oynuyor'),
    ('tr', 'daha fazla kahveye ihtiyacımız var'),
    ('fi', 'unohdin avaimeni töihin'),
    ('fi', 'lapset leikkivät ulkona'),
    ('fi', 'tarvitsemme lisää kahvia'),
    ('ja', '鍵を会社に忘れました'),
    ('ja', '子供たちは外で遊んでいます'),
    ('ja', 'もっとコーヒーが必要です'),
    ('zh', '我把钥匙忘在公司了'),
    ('zh', '孩子们在外面玩'),
    ('zh', '我们需要更多咖啡'),
    ('ar', 'نسيت مفاتيحي في العمل'),
    ('ar', 'الأطفال يلعبون في الخارج'),
    ('ar', 'نحتاج المزيد من القهوة'),
]
SHORT = [
    ('en', 'good morning everyone'),
    ('en', 'where is the station'),
    ('fr', 'bonjour tout le monde'),
    ('fr', 'où est la gare'),
    ('de', 'guten Morgen zusammen'),
    ('de', 'wo ist der Bahnhof'),
    ('es', 'buenos días a todos'),
    ('es', 'dónde está la estación'),
    ('it', 'buongiorno a tutti'),
    ('it', "dov'è la stazione"),
    ('pt', 'bom dia a todos'),
    ('pt', 'onde fica a estação'),
    ('nl', 'goedemorgen allemaal'),
    ('nl', 'waar is het station'),
    ('sv', 'god morgon allihop'),
    ('sv', 'var ligger stationen'),
    ('pl', 'dzień dobry wszystkim'),
    ('pl', 'gdzie jest dworzec'),
    ('ru', 'доброе утро всем'),
    ('ru', 'где находится вокзал'),
    ('tr', 'herkese günaydın'),
    ('tr', 'istasyon nerede'),
    ('fi', 'hyvää huomenta kaikille'),
    ('fi', 'missä rautatieasema on'),
    ('ja', '皆さんおはようございます'),
    ('ja', '駅はどこですか'),
    ('zh', '大家早上好'),
    ('zh', '火车站在哪里'),
    ('ar', 'صباح الخير للجميع'),
    ('ar', 'أين المحطة'),
    ('en', 'thank you'),
    ('fr', 'merci beaucoup'),
    ('de', 'vielen Dank'),
    ('es', 'muchas gracias'),
    ('it', 'grazie mille'),
    ('pt', 'muito obrigado'),
    ('nl', 'dank je wel'),
    ('sv', 'tack så mycket'),
    ('pl', 'bardzo dziękuję'),
    ('ru', 'большое спасибо'),
    ('tr', 'çok teşekkürler'),
    ('fi', 'kiitos paljon'),
    ('ja', 'ありがとう'),
    ('zh', '谢谢你'),
    ('ar', 'شكرا جزيلا'),
]
