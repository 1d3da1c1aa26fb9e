"""``kova.kube.merged``: what a JSON merge patch (RFC 7386) leaves of an
object, computed locally for the operator's guarded PUTs."""

from __future__ import annotations

import copy

import pytest

from kova.kube import merged

# The examples of RFC 7386, appendix A: (target, patch, result).
RFC_7386 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC_7386)
def test_rfc_7386_examples(target, patch, result):
    assert merged(target, patch) == result


def test_the_target_is_left_unchanged():
    target = {"metadata": {"labels": {"a": "1"}, "finalizers": ["f"]},
              "status": {"phase": "Pending", "alternateHosts": ["x"]}}
    before = copy.deepcopy(target)
    out = merged(target, {"metadata": {"labels": {"a": None, "b": "2"}},
                          "status": {"phase": "Scheduled", "alternateHosts": None}})
    assert target == before
    assert out == {"metadata": {"labels": {"b": "2"}, "finalizers": ["f"]},
                   "status": {"phase": "Scheduled"}}
