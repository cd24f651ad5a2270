"""The pure DynaBERT rule (edgebert.subnet), checked against the values stated in ../shared/dynabert.md."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

from edgebert.errors import EdgebertError
from edgebert.subnet import TRAINED_GRID, OffGridWarning, parse_subnet_key, subnet_key, subnetwork
from tests.models import EVERY_GRID_POINT
from tests.reference import BERT_BASE


def arch_with_layers(num_layers: int):
    return dataclasses.replace(BERT_BASE, num_layers=num_layers)


@pytest.mark.parametrize(
    ("depth", "layers"),
    [
        (1.0, (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)),
        (0.75, (0, 1, 2, 4, 5, 6, 8, 9, 10)),
        (0.5, (0, 2, 4, 6, 8, 10)),
    ],
)
def test_kept_layers_bert_base(depth, layers):
    assert subnetwork(BERT_BASE, 1.0, depth).layers == layers


def test_kept_layers_six_layers_three_quarters():
    # round(6 x 0.75) = round(4.5) = 4 (ties to even), floor(i / 0.75) for i < 4
    assert subnetwork(arch_with_layers(6), 1.0, 0.75).layers == (0, 1, 2, 4)


@pytest.mark.parametrize(
    ("width", "heads", "neurons"),
    [(1.0, 12, 3072), (0.75, 9, 2304), (0.5, 6, 1536), (0.25, 3, 768)],
)
def test_heads_and_ffn_bert_base(width, heads, neurons):
    sub = subnetwork(BERT_BASE, width, 1.0)
    assert (sub.heads, sub.ffn_neurons) == (heads, neurons)


def test_ffn_follows_the_width_snapped_to_whole_heads():
    # 0.6 x 12 = 7.2 -> 7 heads; FFN uses w' = 7/12, not 0.6: int(7/12 x 3072) = 1792 (0.6 would give 1843)
    with pytest.warns(OffGridWarning):
        sub = subnetwork(BERT_BASE, 0.6, 1.0)
    assert (sub.heads, sub.ffn_neurons) == (7, 1792)


def test_head_count_rounds_half_to_even():
    # 12 x 0.125 = 1.5 -> 2 ; 12 x 0.375 = 4.5 -> 4 (Python round, as the official code)
    with pytest.warns(OffGridWarning):
        assert subnetwork(BERT_BASE, 0.125, 1.0).heads == 2
    with pytest.warns(OffGridWarning):
        assert subnetwork(BERT_BASE, 0.375, 1.0).heads == 4


@EVERY_GRID_POINT
def test_on_grid_does_not_warn(width, depth):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        subnetwork(BERT_BASE, width, depth)


@pytest.mark.parametrize(("width", "depth"), [(0.6, 1.0), (1.0, 0.9), (0.3, 0.3)])
def test_off_grid_warns(width, depth):
    with pytest.warns(OffGridWarning, match="off the trained DynaBERT grid"):
        subnetwork(BERT_BASE, width, depth)


@pytest.mark.parametrize(
    ("width", "depth", "message"),
    [
        (0, 1.0, "width must be in"),
        (-1, 1.0, "width must be in"),
        (1.5, 1.0, "width must be in"),
        (1.0, 0, "depth must be in"),
        (1.0, 1.01, "depth must be in"),
        (float("nan"), 1.0, "width must be a number"),
        (1.0, float("inf"), "depth must be a number"),
        ("0.5", 1.0, "width must be a number"),
        (True, 1.0, "width must be a number"),
        (None, 1.0, "width must be a number"),
        (0.01, 1.0, "keeps no whole attention head"),
        (1.0, 0.01, "keeps no layer"),
    ],
)
def test_invalid_values_raise(width, depth, message):
    with pytest.raises(EdgebertError, match=message):
        subnetwork(BERT_BASE, width, depth)


def test_smallest_width_in_message_is_really_the_smallest():
    with pytest.raises(EdgebertError, match=r"smallest width for this model is (\S+)") as info:
        subnetwork(BERT_BASE, 0.04, 1.0)
    smallest = float(info.value.args[0].rsplit(" ", 1)[1])
    with pytest.warns(OffGridWarning):
        assert subnetwork(BERT_BASE, smallest, 1.0).heads == 1


@pytest.mark.parametrize(("width", "depth"), [*TRAINED_GRID, (0.3, 0.6), (1e-05, 1.0)])
def test_a_subnet_key_parses_back_to_its_width_and_depth(width, depth):
    assert parse_subnet_key(subnet_key(width, depth)) == (width, depth)


@pytest.mark.parametrize(
    "key", ["", "w0.5", "w0.5-d", "0.5-0.75", "w0.50-d1", "W0.5-D1", "w0.5-d0.75-x", "w2-d1", "wnan-dnan", "w-1-d1"]
)
def test_a_malformed_subnet_key_is_refused(key):
    with pytest.raises(EdgebertError, match="not a sub-network key|must be in"):
        parse_subnet_key(key)
