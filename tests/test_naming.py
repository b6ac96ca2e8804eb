"""GraphQL names derived from model, feature and tensor names."""

from __future__ import annotations

import pytest

from gateway.naming import field_name, type_name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sepal_length", "sepalLength"),
        ("sepal length (cm)", "sepalLengthCm"),
        ("petalWidth", "petalWidth"),
        ("float_input", "floatInput"),
        ("input:0", "input0"),
        ("x.y/z", "xYZ"),
        ("23", "output23"),
        ("HTTPStatus", "httpStatus"),
        ("class", "class"),
    ],
)
def test_field_names(raw: str, expected: str) -> None:
    assert field_name(raw, role="output") == expected


def test_underivable_names() -> None:
    assert field_name("数据", role="input") is None
    assert field_name("___", role="input") is None
    assert type_name("∑") is None


def test_type_names() -> None:
    assert type_name("dataset-topic") == "DatasetTopic"
    assert type_name("iris") == "Iris"
    assert type_name("house_prices_v2") == "HousePricesV2"
