"""The filters of the prune endpoints (`api/prunes.py`) as dockerd reads them: `label` and
`label!`, and `until` as a Go duration, a Unix time or an RFC 3339 time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controlplane.api.errors import ApiError
from controlplane.api.prunes import labels_match, until_ns

NOW = 1_800_000_000 * 1_000_000_000
SECOND = 1_000_000_000


def test_label_filters_want_every_label_and_none_of_the_negated() -> None:
    labels = {"keep": "yes", "team": "blue"}
    assert labels_match(labels, {})
    assert labels_match(labels, {"label": ["keep", "team=blue"]})
    assert not labels_match(labels, {"label": ["keep=no"]})
    assert not labels_match(labels, {"label!": ["keep"]})
    assert labels_match(labels, {"label!": ["keep=no", "other"]})
    assert not labels_match({}, {"label": ["keep"]})


@pytest.mark.parametrize(
    ("value", "wanted"),
    [
        ("10m", NOW - 600 * SECOND),
        ("1h30m", NOW - 5400 * SECOND),
        ("1.5h", NOW - 5400 * SECOND),
        ("250ms", NOW - SECOND // 4),
        ("1700000000", 1_700_000_000 * SECOND),
        ("1700000000.5", 1_700_000_000 * SECOND + SECOND // 2),
        (
            "2026-01-02T03:04:05Z",
            int(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()) * SECOND,
        ),
    ],
)
def test_until_is_a_duration_a_unix_time_or_an_rfc3339_time(value: str, wanted: int) -> None:
    assert until_ns(value, NOW) == wanted


@pytest.mark.parametrize("value", ["", "soon", "10 minutes", "2026-13-01"])
def test_a_bad_until_is_refused_naming_it(value: str) -> None:
    with pytest.raises(ApiError) as refused:
        until_ns(value, NOW)
    assert refused.value.status == 400
    assert f'invalid until filter "{value}"' in refused.value.message
