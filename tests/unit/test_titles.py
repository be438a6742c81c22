import pytest

from reki_spark.data.titles import MAX_TITLE_LENGTH, clean_title


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Matrix, The", "The Matrix"),
        ("Matrix, The (1999)", "The Matrix"),
        ("Misérables, Les (1995)", "Les Misérables"),
        ("Avventura, L' (1960)", "L'Avventura"),
        (
            "Double vie de Véronique, La (Double Life of Veronique, The) (1991)",
            "La Double vie de Véronique (Double Life of Veronique, The)",
        ),
        ("Tom &amp; Jerry", "Tom & Jerry"),
        ("  Spaced\t out  ", "Spaced out"),
        ("Toy Story", "Toy Story"),
        ("A Beautiful Mind", "A Beautiful Mind"),
        ("", None),
        (None, None),
    ],
)
def test_clean_title(raw, clean):
    assert clean_title(raw) == clean


def test_titles_are_cut_to_150_characters():
    assert len(clean_title("x" * 400)) == MAX_TITLE_LENGTH
