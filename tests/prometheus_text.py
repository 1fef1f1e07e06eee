"""A strict reader of Prometheus text exposition, as node_exporter's textfile collector takes it.

Shared by the runner's unit tests and the provision tests on the fleet.
"""

from __future__ import annotations

import math
import re

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
SAMPLE = re.compile(r'^(?P<name>[^{\s]+)\{host="(?P<host>(?:[^"\\]|\\.)*)",database="(?P<db>(?:[^"\\]|\\.)*)"\} '
                    r"(?P<value>\S+)$")


def parse_prometheus(text: str) -> dict[tuple[str, str, str], float]:
    """Strict parse of a node_exporter textfile: {(metric, host, database): value}.

    Every metric has one HELP and one TYPE line before its samples; samples carry exactly
    the labels host and database; names are valid; values parse as floats; the file ends
    with a newline and has no blank lines.
    """
    assert text.endswith("\n"), "a textfile must end with a newline"
    samples: dict[tuple[str, str, str], float] = {}
    helped: set[str] = set()
    typed: set[str] = set()
    for number, line in enumerate(text[:-1].split("\n"), 1):
        where = "line %d: %r" % (number, line)
        assert line, "blank " + where
        if line.startswith("# HELP "):
            name, _, help_text = line[len("# HELP "):].partition(" ")
            assert METRIC_NAME.match(name) and help_text and name not in helped, where
            helped.add(name)
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE "):].partition(" ")
            assert name in helped and name not in typed, "TYPE without HELP, or twice: " + where
            assert kind in ("gauge", "counter", "untyped"), where
            typed.add(name)
        else:
            assert not line.startswith("#"), where
            match = SAMPLE.match(line)
            assert match, "not a sample with exactly the labels host and database: " + where
            name = match["name"]
            assert METRIC_NAME.match(name), where
            assert name in typed, "sample before its HELP/TYPE: " + where
            value = float(match["value"])
            assert not math.isnan(value), where
            key = (name, match["host"], match["db"])
            assert key not in samples, "duplicate sample: " + where
            samples[key] = value
    return samples
