"""The hostile-certificate corpus: every bad Secret is refused before delivery with a plain message
naming the first problem, every good one is accepted; and for chain-validity cases the verdict agrees
with `openssl verify` (strict, security level 2, server purpose) unless the case says why pgcurator
is deliberately stricter (or, for libpq's non-strict reality, more lenient)."""

from __future__ import annotations

import re

import pytest

from pgcurator.tls.validate import validate_secret

from ..figures import record
from ..tls_corpus import NOW, Case, cases, corpus, openssl_verdict

# What a message must never show: the verifier's or parser's debugging text.
RAW = re.compile(r"<Certificate\(|candidates exhausted|validation failed|AlgorithmIdentifier|2\.5\.29\.|"
                 r"MalformedFraming|faq/#|Details:|ParseError|\{ kind|Could not deserialize")


def _id(case: Case) -> str:
    return case.name


def test_the_corpus_is_big_enough_and_every_hostile_secret_is_refused() -> None:
    hostile = cases(lambda c: not c.accept)
    assert len(hostile) >= 40, len(hostile)
    assert len(cases(lambda c: c.accept)) >= 15
    refused = [c for c in hostile if validate_secret(c.data, dns_names=c.dns_names, ip_addresses=c.ip_addresses,
                                                     now=NOW).material is None]
    record("certificates refused before delivery", f"{len(refused)} of {len(hostile)} hostile Secrets")
    assert len(refused) == len(hostile), [c.name for c in hostile if c not in refused]


@pytest.mark.parametrize("case", corpus(), ids=_id)
def test_verdict_reason_and_message(case: Case) -> None:
    v = validate_secret(case.data, dns_names=case.dns_names, ip_addresses=case.ip_addresses, now=NOW)
    if case.accept:
        assert v.ok and v.material is not None, v.summary()
        return
    assert not v.ok and v.material is None  # nothing to deliver
    first = v.problems[0]
    assert first.reason == case.reason, v.summary()
    assert not RAW.search(v.summary()), v.summary()
    assert "would refuse the chain (" not in first.message  # explained, not the verifier's words
    for word in case.mentions:
        assert word.lower() in first.message.lower(), (word, first.message)


@pytest.mark.parametrize("case", cases(lambda c: c.openssl is not None), ids=_id)
def test_agrees_with_openssl_verify(case: Case) -> None:
    accepted, output = openssl_verdict(case)
    assert accepted is case.openssl, output
    ours = validate_secret(case.data, dns_names=case.dns_names, ip_addresses=case.ip_addresses, now=NOW).ok
    # they differ only where the case documents why, and a documented difference is real
    assert bool(case.stricter) is (accepted and not ours), output
    assert bool(case.lenient) is (ours and not accepted), output
