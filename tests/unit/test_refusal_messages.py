"""Refusals a person can act on (issue 13): each names the field, says what was wrong and gives an
example of what is accepted; no raw regular expression, no doubled `spec.spec` prefix, and SQL
positions counted in what the user wrote."""

from __future__ import annotations

import re
from typing import Any

import pydantic
import pytest
import yaml

from pgcurator.engine import format_validation_error
from pgcurator.errors import SpecError
from pgcurator.kinds import ALL_KINDS
from pgcurator.sql.expressions import validate_predicate

from ..reliability.hostile import corpus
from ..reliability.hostile_specs import EXTRA, merged

MODELS = {h.kind: h.model for h in ALL_KINDS}
# A key (`where: `) or none, then one YAML value: a quoted string, a number, a boolean, null, a list or a map.
VALUE = r"""("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|-?[0-9][0-9.]*|true|false|null|\[.*\]|\{.*\})"""
EXAMPLE = re.compile(rf"e\.g\. ((?:[A-Za-z_]\w*: {VALUE}(?:, )?)+|{VALUE})$")


def parse_example(message: str) -> list[tuple[str | None, Any]]:
    """The `key: value` pairs of the example a message ends with; fails the test when there is none."""
    at = message.rfind("e.g. ")  # the example comes last; a value the user wrote may say "e.g." too
    match = EXAMPLE.fullmatch(message[at:]) if at >= 0 else None
    assert match, f"no example at the end of: {message}"
    text = message[at + len("e.g. "):]
    if re.match(r"[A-Za-z_]\w*: ", text):
        return list(yaml.safe_load("{" + text + "}").items())
    return [(None, yaml.safe_load(text))]


def test_every_refusal_of_the_corpus_ends_with_an_example() -> None:
    """Each error of every refused spec of the corpus says what that field accepts, as it goes into the
    YAML (`e.g. where: "deleted_at IS NULL"`); tests/unit/test_refusal_examples.py checks the examples."""
    refused, without = 0, []
    for case, message in corpus_refusals():
        refused += 1
        assert "\n" not in message and "Traceback" not in message, (case, message)
        for part in re.split(r"; (?=spec[.:])", message):
            try:
                parse_example(part)
            except AssertionError:
                without.append(f"{case}: {part}")
    assert refused >= 380  # 386 when written: fewer means the corpus lost its teeth
    assert not without, f"{len(without)} of {refused} refusals give no example:\n" + "\n".join(without)


def corpus_refusals() -> list[tuple[str, str]]:
    """(case, message) of every spec of the corpus the models refuse."""
    out = []
    for case, kind, patch in [*corpus(), *EXTRA]:
        try:
            MODELS[kind].model_validate(merged(kind, patch))
        except pydantic.ValidationError as exc:
            out.append((case, format_validation_error(exc)))
    return out


def refusal(kind: str, patch: dict[str, object]) -> str:
    with pytest.raises(pydantic.ValidationError) as info:
        MODELS[kind].model_validate(merged(kind, patch))
    return format_validation_error(info.value)


def test_no_refusal_shows_a_regular_expression_or_a_doubled_prefix() -> None:
    seen = 0
    for case, message in corpus_refusals():
        seen += 1
        assert "should match" not in message and "^" not in message, (case, message)
        assert "spec.spec" not in message, (case, message)
        for part in message.split("; "):
            field, _, rest = part.partition(": ")
            last = field.rsplit(".", 1)[-1]
            assert not re.match(rf"{re.escape(last)}\b", rest) or last == "spec", (case, part)
        assert re.match(r"spec[.:\[]", message), (case, message)
    assert seen > 300


@pytest.mark.parametrize(("kind", "patch", "expected"), [
    ("PartitionPolicy", {"range": {"column": "server_timestamp", "interval": "9999 years"}},
     "spec.range.interval: '9999 years' is not an interval such as '1 month' or '7 days'"),
    ("PartitionPolicy", {"table": {"name": "a.b"}}, "spec.table.name: 'a.b' is not a name pgcurator accepts"),
    ("PartitionPolicy", {"database": {"secretName": "Bad_Name"}},
     "spec.database.secretName: 'Bad_Name' is not a Kubernetes object name"),
    ("DbTlsCert", {"dnsNames": ["Bad_Name"]}, "spec.dnsNames.0: 'Bad_Name' is not a DNS name"),
    ("VectorIndex", {"build": {"memoryBudget": "lots"}},
     "spec.build.memoryBudget: 'lots' is not a memory quantity such as '512Mi'"),
    ("PartitionPolicy", {"timeouts": {"lockTimeout": "forever"}},
     "spec.timeouts.lockTimeout: 'forever' is not a duration such as '30s'"),
])
def test_pattern_refusals_are_plain_words_with_an_example(kind: str, patch: dict[str, object], expected: str) -> None:
    message = refusal(kind, patch)
    assert expected in message, message
    assert "e.g." in message or "such as" in message


def test_a_rule_over_the_whole_spec_is_prefixed_once() -> None:
    message = refusal("VectorIndex", {"type": "halfvec", "dimensions": 4001})
    assert message.startswith("spec: "), message
    assert "halfvec indexes hold at most 4000 dimensions" in message
    assert "Value error" not in message


@pytest.mark.parametrize(("text", "where"), [
    ("foo bar baz", "at or near \"bar\", at character 5"),
    ("a = = 1", "at or near \"=\", at character 5"),
    ("a = 1 +", "at the end of the expression"),
])
def test_expression_errors_count_positions_in_what_the_user_wrote(text: str, where: str) -> None:
    with pytest.raises(SpecError) as info:
        validate_predicate(text)
    assert where in info.value.message, info.value.message
    assert "at index" not in info.value.message


def test_scanner_errors_count_positions_in_what_the_user_wrote_too() -> None:
    with pytest.raises(SpecError) as info:
        validate_predicate("a = 'unterminated")
    assert "at index" not in info.value.message and "at character" in info.value.message, info.value.message


@pytest.mark.parametrize(("patch", "field"), [
    ({"where": "random() > 0.5"}, "spec.where: "),
    ({"recall": {"sampleFilter": "random() > 0.5"}}, "spec.recall.sampleFilter: "),
])
def test_vector_sql_fields_are_named_once(patch: dict[str, object], field: str) -> None:
    message = refusal("VectorIndex", patch)
    assert message.startswith(field) and "where: where" not in message and "sampleFilter: sampleFilter" not in message


def test_a_value_every_union_member_refuses_is_one_refusal_at_the_users_field() -> None:
    """pydantic reports one error per member of `str | int` (`values.0.int`, `values.0.constrained-str`):
    the user wrote one value, at `values.0`."""
    message = refusal("PartitionPolicy", {"strategy": "list", "range": None, "list": {
        "column": "event_type", "partitions": [{"name": "a", "values": [1.5]}]}})
    assert message.startswith("spec.list.partitions.0.values.0: Input should be a valid string or "), message
    assert "; " not in message and ".int:" not in message and "constrained-str" not in message, message


def test_a_value_listed_twice_in_one_partition_is_said_so() -> None:
    message = refusal("PartitionPolicy", {"strategy": "list", "range": None, "list": {
        "column": "event_type", "partitions": [{"name": "a", "values": ["x", "x"]}]}})
    assert message.startswith("spec.list.partitions.0.values.1: list value 'x' is twice in 'a'"), message


def test_an_example_never_carries_what_yaml_refuses() -> None:
    """A repeated list value is replaced by one made up, not by the user's text with a suffix: a DEL
    or a bidi override in it would make the example unreadable (YAML refuses them raw)."""
    message = refusal("PartitionPolicy", {"strategy": "list", "range": None, "list": {
        "column": "event_type", "partitions": [{"name": "a", "values": ["\x7f"]}, {"name": "b", "values": ["\x7f"]}]}})
    assert parse_example(message) == [(None, "other_1")], message
