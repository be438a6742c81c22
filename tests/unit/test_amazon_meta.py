import ast
import json

from reki_spark.data.amazon import meta_record


def test_2014_python_literal_with_category_paths():
    line = repr(
        {
            "asin": "B1",
            "title": "Cleanser",
            "brand": "Acme",
            "price": 12.5,
            "categories": [["Beauty", "Skin Care"], ["Beauty", "Makeup"]],
            "description": "Mild.",
        }
    )
    record = meta_record(line, ast.literal_eval)
    assert record["_reason"] is None
    assert record["item_id"] == "B1"
    assert record["categories"] == ["Beauty", "Skin Care", "Makeup"]
    assert record["price_text"] == "12.5"
    assert record["description"] == "Mild."


def test_2018_strict_json_with_flat_category_and_price_text():
    line = json.dumps(
        {
            "asin": "B2",
            "title": "Oil",
            "category": ["Beauty", "Hair"],
            "price": "$1,299.00",
            "description": ["First.", "Second."],
        }
    )
    record = meta_record(line, json.loads)
    assert record["categories"] == ["Beauty", "Hair"]
    assert record["price_text"] == "1299.00"
    assert record["description"] == "First. Second."


def test_unreadable_lines_get_a_reason_not_an_exception():
    assert meta_record("{'asin': 'B3', 'title': 'Broken", ast.literal_eval)["_reason"].startswith("unparseable")
    assert meta_record("{'asin': 'B4'}", json.loads)["_reason"].startswith("unparseable")
    assert meta_record("[1, 2]", json.loads)["_reason"] == "metadata line is not an object"


def test_literal_eval_does_not_execute_code():
    record = meta_record("__import__('os').system('echo pwned')", ast.literal_eval)
    assert record["_reason"].startswith("unparseable")
