"""`docker ps`'s durations ("Up 1 second", "Exited (0) 3 days ago") as go-units' HumanDuration
words them."""

from __future__ import annotations

import pytest

from controlplane.api.containers import human_duration

HOUR, DAY = 3600, 86400


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "Less than a second"),
        (0.99, "Less than a second"),
        (1, "1 second"),
        (1.9, "1 second"),
        (2, "2 seconds"),
        (59.9, "59 seconds"),
        (60, "About a minute"),
        (119, "About a minute"),
        (120, "2 minutes"),
        (59 * 60 + 59, "59 minutes"),
        (HOUR, "About an hour"),
        (1.49 * HOUR, "About an hour"),
        (1.5 * HOUR, "2 hours"),  # hours round to the nearest
        (47.4 * HOUR, "47 hours"),
        (48 * HOUR, "2 days"),
        (13 * DAY, "13 days"),
        (14 * DAY, "2 weeks"),
        (59 * DAY, "8 weeks"),
        (60 * DAY, "2 months"),
        (729 * DAY, "24 months"),
        (730 * DAY, "2 years"),
    ],
)
def test_durations_read_as_docker_words_them(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown
