"""One-line error texts: cut where a sentence or word ends, never mid-word without saying so."""

from __future__ import annotations

import pytest

from fooling.encodings.errors import error_line, shortened

HUB = (
    "An error happened while trying to locate the file on the Hub and we cannot find the requested "
    "files in the local cache. Please check your connection and try again or make sure your Internet "
    "connection is on."
)


def test_a_long_text_keeps_its_whole_sentences():
    assert shortened(HUB, 200) == HUB.split(". ")[0] + "."


@pytest.mark.parametrize("limit", [20, 37, 60, 100])
def test_a_long_sentence_is_cut_after_a_word_and_says_so(limit):
    cut = shortened(HUB, limit)
    assert len(cut) <= limit and cut.endswith("...")
    kept = cut.removesuffix("...")
    assert HUB.startswith(kept) and HUB[len(kept)] == " " and not kept.endswith(" ")


def test_short_texts_and_no_limit_are_whole():
    assert shortened("short", 200) == "short" and shortened(HUB, None) == HUB


def test_a_long_url_is_cut_inside_rather_than_dropped():
    url = "https://huggingface.co/" + "x" * 250
    cut = shortened(f"404 Client Error: Not Found for url: {url}", 200)
    assert (
        len(cut) == 200
        and cut.endswith("...")
        and cut.startswith("404 Client Error: Not Found for url: https://")
    )


@pytest.mark.parametrize("limit", range(1, 40))
def test_nothing_is_longer_than_its_limit(limit):
    for text in (HUB, "x" * 300, "a b c d e f g h i j k l m n o p", "word. " * 20):
        assert len(shortened(text, limit)) <= limit


def test_error_line_takes_the_first_line_cut_the_same_way():
    assert error_line(OSError(HUB + "\nsecond line")) == HUB.split(". ")[0] + "."
    assert error_line(OSError()) == "OSError"
