import pytest

from nas.budget import parse_latency_ms
from nas.errors import UserInputError


@pytest.mark.parametrize("text, expected", [
    ("20ms", 20.0), ("20 ms", 20.0), ("0.02s", 20.0), ("20000us", 20.0), ("20", 20.0),
    ("1.5ms", 1.5), (" 14MS ", 14.0), (7, 7.0),
])
def test_accepted_forms(text, expected):
    assert parse_latency_ms(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["0", "0ms", "-5ms", "nan", "NaN ms", "inf", "20 min", "fast", "", "ms"])
def test_rejected_forms(text):
    with pytest.raises(UserInputError, match="latency budget"):
        parse_latency_ms(text)
