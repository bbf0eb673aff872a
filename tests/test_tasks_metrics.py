"""The MLQA metric against hand-computed values, one test per rule of ``mlqa_evaluation_v1.py``."""

from __future__ import annotations

import pytest

from fisherlab.tasks.metrics import normalize_answer, qa_scores, token_f1
from fisherlab.tasks.mlqa_metric import mixed_segmentation, mlqa_scores, normalize_mlqa


def test_punctuation_is_every_unicode_p_category_plus_ascii():
    # « » (Pi/Pf), ¿ (Po), 、。 (Po), ‐ (Pd) are not in string.punctuation: SQuAD keeps them, MLQA drops them
    assert normalize_mlqa("«Berlin»", "de") == "berlin"
    assert normalize_answer("«Berlin»") == "«berlin»"
    assert normalize_mlqa("¿Qué pasó?", "es") == "qué pasó"
    assert normalize_mlqa("北京、上海。", "zh") == "北 京 上 海"
    assert normalize_mlqa("Hans‐Peter", "de") == "hanspeter"
    # symbols (category S) are not punctuation in either script
    assert normalize_mlqa("5 €", "de") == "5 €"
    assert normalize_mlqa("$5", "en") == "5"  # '$' is in string.punctuation


def test_articles_are_language_specific():
    assert normalize_mlqa("The Cat", "en") == "cat"
    assert normalize_mlqa("der Hund und die Katze", "de") == "hund und katze"
    assert normalize_mlqa("der Hund", "en") == "der hund"          # German articles only for de
    assert normalize_mlqa("los perros y una casa", "es") == "perros y casa"
    assert normalize_mlqa("the perros", "es") == "the perros"       # English articles only for en
    assert normalize_mlqa("sách của tôi", "vi") == "sách tôi"
    assert normalize_mlqa("the दिल्ली", "hi") == "the दिल्ली"         # no article list for hi
    assert normalize_mlqa("the 北京", "zh") == "the 北 京"            # nor for zh


def test_arabic_article_is_removed_wherever_it_occurs():
    # the script's pattern '\sال^|ال' removes every 'ال', also inside a word
    assert normalize_mlqa("الكتاب", "ar") == "كتاب"
    assert normalize_mlqa("مالك", "ar") == "م ك"
    assert mlqa_scores(["الكتاب"], [["كتاب"]], "ar") == {"f1": 100.0, "exact_match": 100.0}


def test_chinese_mixed_segmentation_makes_characters_tokens():
    assert mixed_segmentation("北京大学 abc def") == ["北", "京", "大", "学", "abc", "def"]
    assert mixed_segmentation("iPhone手机") == ["iPhone", "手", "机"]
    # pred 北京大学 (4 tokens) vs gold 北京 (2): overlap 2, P = 1/2, R = 1, F1 = 2/3
    assert mlqa_scores(["北京大学"], [["北京"]], "zh") == {"f1": pytest.approx(200 / 3), "exact_match": 0.0}
    # whitespace tokens (any other language): one token each, no overlap
    assert mlqa_scores(["北京大学"], [["北京"]], "en") == {"f1": 0.0, "exact_match": 0.0}


def test_f1_and_exact_match_are_best_over_golds_and_averaged():
    # q1: pred 'cat sat' vs 'cat sat on' -> P 1, R 2/3, F1 0.8; q2: exact hit on the second gold
    scores = mlqa_scores(["the cat sat", "Rot"], [["a cat sat on"], ["grün", "rot"]], "en")
    assert scores["f1"] == pytest.approx(100 * (0.8 + 1.0) / 2)
    assert scores["exact_match"] == pytest.approx(50.0)
    assert token_f1([], []) == 0.0  # the scripts' F1: 0 when no token is shared, even both empty
    assert qa_scores(["x"], [["x"]], str.lower) == {"f1": 100.0, "exact_match": 100.0}


def test_unknown_answer_language_is_an_error():
    with pytest.raises(ValueError, match="answer language 'fr' unknown; the MLQA script knows"):
        normalize_mlqa("le chat", "fr")
    with pytest.raises(ValueError, match="1 predictions but 2 references"):
        mlqa_scores(["a"], [["a"], ["b"]], "en")
