"""The reading's JSON: the hand-built encoder is byte for byte the json module's."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.reading import Sample, encode, join_payloads, reference_encode

names = st.text(min_size=1, max_size=20)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.text(max_size=30),
)
samples = st.builds(
    Sample,
    device=names,
    sensor=names,
    value=values,
    ts=st.floats(min_value=0, max_value=4e9),
    unit=st.none() | names,
)


@given(seq=st.integers(min_value=1, max_value=2**62), sample=samples)
def test_encode_matches_the_json_module_exactly(seq: int, sample: Sample) -> None:
    assert encode(seq, sample) == reference_encode(seq, sample)


@given(seq=st.integers(min_value=1, max_value=2**62), sample=samples)
def test_encoded_readings_are_valid_json_with_the_contract_fields(seq: int, sample: Sample) -> None:
    obj = json.loads(encode(seq, sample))
    assert obj["seq"] == seq
    assert obj["device"] == sample.device
    assert obj["sensor"] == sample.sensor
    assert ("unit" in obj) == (sample.unit is not None)


@pytest.mark.parametrize("ts", [float("nan"), float("inf")])
def test_a_timestamp_json_cannot_carry_is_refused_like_json_does(ts: float) -> None:
    sample = Sample("d", "t", 1.0, ts)
    with pytest.raises(ValueError, match="JSON compliant"):
        reference_encode(1, sample)
    with pytest.raises(ValueError, match="JSON compliant"):
        encode(1, sample)


def test_non_finite_values_travel_as_strings() -> None:
    sample = Sample("d", "t", float("nan"), 1.5)
    assert json.loads(encode(7, sample))["value"] == "nan"


def test_join_payloads_makes_a_json_array_without_decoding() -> None:
    parts = [encode(i, Sample("d", "n", i, 1.0)) for i in (1, 2)]
    assert [r["seq"] for r in json.loads(join_payloads(parts))] == [1, 2]
