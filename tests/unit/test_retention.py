"""Retention: select_retention (pure) by example and by property, apply_retention on a real folder."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "module_utils"))
import sqlite_fleet as core  # noqa: E402
from unit_helpers import folder_files, make_app_db  # noqa: E402

UTC = dt.timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # half-hour DST shift
RULES = core.RETENTION_RULES
CALENDAR = ("keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def backup(created: dt.datetime, verified: bool = True, label: str | None = None, name: str = "app",
           seq: int = 0) -> dict[str, Any]:
    return {"file": core.backup_filename(name, created, seq), "created": created, "verified": verified,
            "label": label}


def kept(decisions: list[dict[str, Any]]) -> set[str]:
    return {d["file"] for d in decisions if d["keep"]}


def select(backups: list[dict[str, Any]], policy: dict[str, Any], now: dt.datetime,
           tz: dt.tzinfo | None = UTC) -> list[dict[str, Any]]:
    decisions = core.select_retention(backups, policy, now, tz)
    assert sorted(d["file"] for d in decisions) == sorted(b["file"] for b in backups)
    return decisions


def daily(start: dt.datetime, days: int, hour: int = 3, **kwargs: Any) -> list[dict[str, Any]]:
    return [backup(start.replace(hour=hour) + dt.timedelta(days=i), **kwargs) for i in range(days)]


# --------------------------------------------------------------------------- examples: rules


def test_keep_last_keeps_the_n_newest() -> None:
    history = daily(at(2026, 3, 1), 10)
    decisions = select(history, {"keep_last": 3}, at(2026, 3, 10, 12))
    assert kept(decisions) == {b["file"] for b in history[-3:]}
    assert [d["keep"] for d in decisions] == [True] * 3 + [False] * 7  # newest first
    assert decisions[0]["reasons"] == ["newest verified backup", "keep_last 3 (#1)"]
    assert decisions[-1]["reasons"] == ["not kept by any rule"]


def test_keep_last_counts_verified_unlabelled_backups_only() -> None:
    history = daily(at(2026, 3, 1), 6)
    history[5]["verified"] = False  # newest: unverified
    history[4]["label"] = "pre-upgrade"  # labelled: its own rule
    history[3]["label"] = "manual"  # a label without a rule of its own counts as ordinary
    decisions = select(history, {"keep_last": 2, "keep_label_days": {"pre-upgrade": 0}}, at(2026, 3, 7))
    # unverified newest kept (newer than the newest verified), pre-upgrade kept as newest verified,
    # keep_last 2 takes the two newest verified unlabelled ones: #3 (manual) and #2
    assert kept(decisions) == {history[i]["file"] for i in (5, 4, 3, 2)}


def test_keep_days_keeps_every_backup_in_the_window_boundary_included() -> None:
    history = [backup(at(2026, 3, 1) + dt.timedelta(hours=12 * i), verified=i % 3 != 0) for i in range(40)]
    now = history[-1]["created"] + dt.timedelta(hours=1)
    horizon = now - dt.timedelta(days=7)
    history.append(backup(horizon, name="edge"))  # exactly 7 days old
    history.append(backup(horizon - dt.timedelta(microseconds=1), name="edge-1us"))
    decisions = select(history, {"keep_days": 7}, now)
    in_window = {b["file"] for b in history if b["created"] >= horizon}
    assert kept(decisions) == in_window  # unverified ones in the window too
    assert history[-2]["file"] in in_window and history[-1]["file"] not in in_window


def test_keep_daily_takes_the_newest_of_each_of_the_n_latest_days_with_backups() -> None:
    history = []
    for day in (1, 2, 5, 6):  # days 3 and 4 have no backup: they do not use up a slot
        for hour in (1, 9, 17):
            history.append(backup(at(2026, 4, day, hour)))
    history.append(backup(at(2026, 4, 7, 2), verified=False))  # unverified: no day of its own
    decisions = select(history, {"keep_daily": 3}, at(2026, 4, 8))
    expected = {backup(at(2026, 4, day, 17))["file"] for day in (2, 5, 6)} | {history[-1]["file"]}
    assert kept(decisions) == expected
    reasons = {d["file"]: d["reasons"] for d in decisions}
    assert "keep_daily 2026-04-02" in reasons[backup(at(2026, 4, 2, 17))["file"]]


def test_keep_daily_buckets_follow_the_time_zone() -> None:
    early, late = backup(at(2026, 1, 10, 12)), backup(at(2026, 1, 10, 23, 30))  # 00:30 on the 11th in Berlin
    now = at(2026, 1, 11, 1)
    assert kept(select([early, late], {"keep_daily": 2}, now, UTC)) == {late["file"]}
    assert kept(select([early, late], {"keep_daily": 2}, now, BERLIN)) == {early["file"], late["file"]}


def test_keep_daily_across_the_autumn_dst_change_in_berlin() -> None:
    # 2025-10-26 in Berlin lasts 25 hours: 2025-10-25 22:00 UTC .. 2025-10-26 23:00 UTC
    first = backup(at(2025, 10, 25, 22, 10))  # 00:10 CEST, the 26th
    last = backup(at(2025, 10, 26, 22, 50))  # 23:50 CET, still the 26th
    next_day = backup(at(2025, 10, 26, 23, 10))  # 00:10 CET, the 27th
    before = backup(at(2025, 10, 25, 21, 50))  # 23:50 CEST, the 25th
    history = [before, first, last, next_day]
    decisions = select(history, {"keep_daily": 3}, at(2025, 10, 27, 6), BERLIN)
    assert kept(decisions) == {before["file"], last["file"], next_day["file"]}
    assert kept(select(history, {"keep_daily": 3}, at(2025, 10, 27, 6), UTC)) == {first["file"], next_day["file"]}


def test_keep_daily_across_the_spring_dst_change_in_new_york() -> None:
    # 2025-03-09 in New York lasts 23 hours: 05:00 UTC .. 2025-03-10 04:00 UTC
    history = [backup(at(2025, 3, 9, 4, 59)), backup(at(2025, 3, 9, 5, 1)), backup(at(2025, 3, 10, 3, 59)),
               backup(at(2025, 3, 10, 4, 1))]
    decisions = select(history, {"keep_daily": 5}, at(2025, 3, 11), NEW_YORK)
    assert kept(decisions) == {history[0]["file"], history[2]["file"], history[3]["file"]}


def test_keep_weekly_uses_iso_weeks_across_the_new_year() -> None:
    # 2026-12-28 (Mon) .. 2027-01-03 (Sun) is ISO week 2026-W53
    history = daily(at(2026, 12, 14), 24)  # 14 Dec 2026 .. 6 Jan 2027
    now = at(2027, 1, 7)
    decisions = select(history, {"keep_weekly": 3}, now)
    expected = {backup(at(2027, 1, 6, 3))["file"], backup(at(2027, 1, 3, 3))["file"],
                backup(at(2026, 12, 27, 3))["file"]}
    assert kept(decisions) == expected
    assert any("keep_weekly 2026-W53" in r for d in decisions for r in d["reasons"])


def test_keep_monthly_keeps_the_last_of_each_month() -> None:
    history = daily(at(2026, 1, 1), 100)  # 1 Jan .. 10 Apr 2026
    decisions = select(history, {"keep_monthly": 3}, at(2026, 4, 11))
    expected = {backup(at(2026, m, d, 3))["file"] for m, d in ((4, 10), (3, 31), (2, 28))}
    assert kept(decisions) == expected


def test_keep_hourly_keeps_the_newest_of_each_of_the_n_latest_hours() -> None:
    # every 15 minutes for 6 hours (a sub-daily schedule), then the hourly rule keeps 4 of them
    history = [backup(at(2026, 4, 10, 6) + dt.timedelta(minutes=15 * i)) for i in range(24)]
    decisions = select(history, {"keep_hourly": 4}, at(2026, 4, 10, 12))
    assert kept(decisions) == {b["file"] for b in history if b["created"].minute == 45 and b["created"].hour >= 8}
    assert [d["reasons"] for d in decisions if d["keep"]][0] == ["newest verified backup", "keep_hourly 2026-04-10T11"]


def test_keep_hourly_follows_the_local_clock_across_the_autumn_dst_change() -> None:
    # Berlin, 2026-10-25: 02:00-03:00 local happens twice (00:00-02:00 UTC); one bucket for both
    history = [backup(at(2026, 10, 25, 0, 10)), backup(at(2026, 10, 25, 1, 10)), backup(at(2026, 10, 25, 2, 10))]
    decisions = select(history, {"keep_hourly": 2}, at(2026, 10, 25, 3), tz=BERLIN)
    assert kept(decisions) == {history[1]["file"], history[2]["file"]}


def test_keep_yearly_keeps_the_last_of_each_year() -> None:
    history = [backup(at(year, month, 28, 3)) for year in (2023, 2024, 2025, 2026) for month in (1, 6, 12)
               if (year, month) <= (2026, 1)]
    decisions = select(history, {"keep_yearly": 3}, at(2026, 2, 1), tz=UTC)
    assert kept(decisions) == {backup(at(2026, 1, 28, 3))["file"], backup(at(2025, 12, 28, 3))["file"],
                               backup(at(2024, 12, 28, 3))["file"]}
    # the year turns in the policy's time zone: 2025-12-31 23:30 UTC is 2026 in Berlin
    late = [backup(at(2025, 12, 31, 23, 30)), backup(at(2025, 6, 1, 3))]
    assert kept(select(late, {"keep_yearly": 2}, at(2026, 1, 2), tz=BERLIN)) == {b["file"] for b in late}
    assert kept(select(late, {"keep_yearly": 1}, at(2026, 1, 2), tz=BERLIN)) == {late[0]["file"]}


def test_rules_are_a_union_and_say_why() -> None:
    history = daily(at(2026, 1, 1), 100)
    decisions = select(history, {"keep_last": 2, "keep_monthly": 3, "keep_weekly": 1}, at(2026, 4, 11))
    expected = {backup(at(2026, m, d, 3))["file"] for m, d in ((4, 10), (4, 9), (3, 31), (2, 28))}
    assert kept(decisions) == expected
    newest = decisions[0]
    assert newest["reasons"] == ["newest verified backup", "keep_last 2 (#1)", "keep_weekly 2026-W15",
                                 "keep_monthly 2026-04"]


def test_labelled_backups_follow_their_own_rule() -> None:
    now = at(2026, 6, 1)
    young = backup(now - dt.timedelta(days=20), label="pre-upgrade")
    old = backup(now - dt.timedelta(days=40), label="pre-upgrade")
    exactly = backup(now - dt.timedelta(days=30), label="pre-upgrade", seq=1)
    plain = daily(at(2026, 5, 1), 31)  # 1 May .. 31 May, the newest verified is plain
    history = [young, old, exactly, *plain]
    decisions = select(history, {"keep_last": 1, "keep_label_days": {"pre-upgrade": 30}}, now)
    assert kept(decisions) == {young["file"], exactly["file"], plain[-1]["file"]}
    # a labelled backup does not use up a keep_last slot, and keep_days does not reach it
    decisions = select(history, {"keep_days": 365, "keep_label_days": {"pre-upgrade": 30}}, now)
    assert old["file"] not in kept(decisions)
    assert {b["file"] for b in plain} <= kept(decisions)


def test_unverified_backups_do_not_count_and_are_kept_only_while_newest() -> None:
    now = at(2026, 6, 10)
    verified = daily(at(2026, 6, 1), 5)  # 1..5 June
    older_bad = backup(at(2026, 6, 3, 12), verified=False)
    newer_bad = [backup(at(2026, 6, day, 3), verified=False) for day in (6, 7)]
    decisions = select([*verified, older_bad, *newer_bad], {"keep_last": 2}, now)
    assert kept(decisions) == {verified[-1]["file"], verified[-2]["file"], *(b["file"] for b in newer_bad)}
    assert older_bad["file"] not in kept(decisions)


def test_nothing_verified_means_nothing_deleted() -> None:
    history = daily(at(2026, 1, 1), 10, verified=False)
    assert kept(select(history, {"keep_last": 1}, at(2026, 3, 1))) == {b["file"] for b in history}


def test_the_newest_verified_backup_is_always_kept() -> None:
    now = at(2027, 1, 1)
    lone = backup(at(2026, 1, 1), label="pre-upgrade")  # a year old, its label rule long over
    unverified = backup(at(2026, 12, 31), verified=False)
    decisions = select([lone, unverified], {"keep_days": 1, "keep_label_days": {"pre-upgrade": 1}}, now)
    reasons = {d["file"]: d["reasons"] for d in decisions}
    assert reasons[lone["file"]] == ["newest verified backup"]
    assert kept(decisions) == {lone["file"], unverified["file"]}


def test_clock_behind_the_newest_backup_deletes_nothing() -> None:
    history = daily(at(2026, 1, 1), 60)
    now = history[-1]["created"] - dt.timedelta(seconds=1)  # a Pi that booted without its clock
    decisions = select(history, {"keep_last": 1}, now)
    assert all(d["keep"] for d in decisions)
    assert all("clock is behind" in d["reasons"][0] for d in decisions)
    ancient = dt.datetime(1970, 1, 1, tzinfo=UTC)
    assert kept(select(history, {"keep_last": 1}, ancient)) == {b["file"] for b in history}
    # with the clock right again, the policy applies
    assert len(kept(select(history, {"keep_last": 1}, history[-1]["created"]))) == 1


def test_no_backups_no_decisions() -> None:
    assert core.select_retention([], {"keep_last": 1}, at(2026, 1, 1)) == []


@pytest.mark.parametrize("policy", [
    {}, {"keep_last": 0}, dict.fromkeys(RULES, 0), dict.fromkeys(RULES), {"keep_label_days": {"pre-upgrade": 30}},
])
def test_a_policy_that_keeps_nothing_is_refused(policy: dict[str, Any]) -> None:
    with pytest.raises(core.BackupError, match="keeps nothing") as info:
        core.select_retention(daily(at(2026, 1, 1), 3), policy, at(2026, 2, 1))
    assert info.value.kind == core.KIND_BAD_INPUT


@pytest.mark.parametrize("policy", [
    {"keep_last": -1}, {"keep_days": -7, "keep_last": 3}, {"keep_last": True}, {"keep_last": 1.5},
    {"keep_last": "3"}, {"keep_last": 3, "keep_label_days": {"pre-upgrade": -1}},
    {"keep_last": 3, "keep_label_days": {"../x": 3}}, {"keep_last": 3, "keep_label_days": ["pre-upgrade"]},
    {"keep_last": 3, "keep_label_days": {"pre-upgrade": "30"}},
])
def test_bad_policy_values_are_refused(policy: dict[str, Any]) -> None:
    with pytest.raises(core.BackupError) as info:
        core.select_retention(daily(at(2026, 1, 1), 3), policy, at(2026, 2, 1))
    assert info.value.kind == core.KIND_BAD_INPUT


def test_select_retention_does_not_modify_its_input() -> None:
    history = daily(at(2026, 1, 1), 20)
    history[3]["label"] = "pre-upgrade"
    frozen = copy.deepcopy(history)
    core.select_retention(history, {"keep_last": 2, "keep_label_days": {"pre-upgrade": 3}}, at(2026, 2, 1))
    assert history == frozen


# --------------------------------------------------------------------------- properties

BASE = at(2025, 1, 1)
YEAR_US = 366 * 86400 * 10**6
# DST changes (Berlin, New York, Lord Howe) and the turn of the year / ISO week 1
EDGES = [at(2025, 3, 30, 1), at(2025, 10, 26, 1), at(2025, 3, 9, 7), at(2025, 11, 2, 6), at(2025, 4, 5, 15),
         at(2025, 10, 4, 16), at(2025, 12, 31, 23), at(2025, 12, 28, 23)]
ZONES: list[dt.tzinfo | None] = [UTC, BERLIN, NEW_YORK, LORD_HOWE, None]
LABELS = [None, None, None, None, "pre-upgrade", "manual", "other"]

moments = st.one_of(
    st.integers(0, YEAR_US).map(lambda us: BASE + dt.timedelta(microseconds=us)),
    st.builds(lambda edge, seconds: edge + dt.timedelta(seconds=seconds),
              st.sampled_from(EDGES), st.integers(-3 * 86400, 3 * 86400)),
)
entries = st.tuples(moments, st.booleans() | st.just(True), st.sampled_from(LABELS))


@st.composite
def histories(draw: Any, max_size: int = 40) -> list[dict[str, Any]]:
    drawn = draw(st.lists(entries, max_size=max_size))
    result = []
    used: dict[str, int] = {}
    for created, verified, label in sorted(drawn, key=lambda e: e[0]):
        first = core.backup_filename("app", created)
        seq = used.get(first, -1) + 1  # same second: _1, _2, ... as snapshot names them
        used[first] = seq
        result.append(backup(created, verified=verified, label=label, seq=seq))
    return result


small = st.integers(0, 8) | st.just(0)


@st.composite
def policies(draw: Any) -> dict[str, Any]:
    policy = {rule: draw(small) for rule in RULES}
    if not any(policy.values()):
        policy[draw(st.sampled_from(RULES))] = draw(st.integers(1, 8))
    policy["keep_label_days"] = draw(st.dictionaries(st.sampled_from(["pre-upgrade", "manual"]),
                                                     st.integers(0, 60), max_size=2))
    return policy


@st.composite
def scenarios(draw: Any) -> tuple[list[dict[str, Any]], dict[str, Any], dt.datetime, dt.tzinfo | None]:
    history = draw(histories())
    newest = max((b["created"] for b in history), default=BASE)
    now = draw(st.one_of(
        st.integers(0, 400 * 86400 * 10**6).map(lambda us: newest + dt.timedelta(microseconds=us)),
        st.integers(1, 40 * 86400 * 10**6).map(lambda us: newest - dt.timedelta(microseconds=us)),
        st.just(newest),
    ))
    return history, draw(policies()), now, draw(st.sampled_from(ZONES))


def bucket_keys(moment: dt.datetime, tz: dt.tzinfo | None) -> dict[str, tuple[int, ...]]:
    local = moment.astimezone(tz)
    iso = local.isocalendar()
    return {"keep_hourly": (local.year, local.month, local.day, local.hour),
            "keep_daily": (local.year, local.month, local.day), "keep_weekly": (iso[0], iso[1]),
            "keep_monthly": (local.year, local.month), "keep_yearly": (local.year,)}


def expected_kept(history: list[dict[str, Any]], policy: dict[str, Any], now: dt.datetime,
                  tz: dt.tzinfo | None) -> set[str]:
    """An independent statement of the rules of DESIGN.md, as a set of files to keep."""
    if not history:
        return set()
    if now < max(b["created"] for b in history):
        return {b["file"] for b in history}
    order = lambda b: (b["created"], b["file"])  # noqa: E731
    keep: set[str] = set()
    verified = [b for b in history if b["verified"]]
    newest_verified = max(verified, key=order) if verified else None
    if newest_verified:
        keep.add(newest_verified["file"])
    keep |= {b["file"] for b in history if not b["verified"]
             and (newest_verified is None or b["created"] > newest_verified["created"])}
    label_days = policy.get("keep_label_days", {})
    for b in history:
        if b["label"] in label_days and now - b["created"] <= dt.timedelta(days=label_days[b["label"]]):
            keep.add(b["file"])
    general = [b for b in history if b["label"] not in label_days]
    if policy["keep_days"]:
        keep |= {b["file"] for b in general if now - b["created"] <= dt.timedelta(days=policy["keep_days"])}
    counted = sorted((b for b in general if b["verified"]), key=order, reverse=True)
    keep |= {b["file"] for b in counted[: policy["keep_last"]]}
    for rule in CALENDAR:
        newest_in: dict[tuple[int, ...], dict[str, Any]] = {}
        for b in counted:
            key = bucket_keys(b["created"], tz)[rule]
            if key not in newest_in or order(b) > order(newest_in[key]):
                newest_in[key] = b
        for key in sorted(newest_in, reverse=True)[: policy[rule]]:
            keep.add(newest_in[key]["file"])
    return keep


PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(scenarios())
def test_property_decisions_cover_exactly_the_input(scenario: Any) -> None:
    history, policy, now, tz = scenario
    frozen = copy.deepcopy(history)
    decisions = core.select_retention(history, policy, now, tz)
    assert history == frozen
    assert sorted(d["file"] for d in decisions) == sorted(b["file"] for b in history)
    assert [d["created"] for d in decisions] == sorted((d["created"] for d in decisions), reverse=True)
    for d in decisions:
        assert d["reasons"], d
        assert d["keep"] == (d["reasons"] != ["not kept by any rule"])


@PROPERTY_SETTINGS
@given(scenarios(), st.randoms(use_true_random=False))
def test_property_deterministic_and_independent_of_input_order(scenario: Any, rng: Any) -> None:
    history, policy, now, tz = scenario
    first = core.select_retention(history, policy, now, tz)
    assert core.select_retention(copy.deepcopy(history), dict(policy), now, tz) == first
    shuffled = list(history)
    rng.shuffle(shuffled)
    assert core.select_retention(shuffled, policy, now, tz) == first
    assert core.select_retention(list(reversed(history)), policy, now, tz) == first


@PROPERTY_SETTINGS
@given(scenarios())
def test_property_guarantees_of_each_rule(scenario: Any) -> None:
    history, policy, now, tz = scenario
    decisions = core.select_retention(history, policy, now, tz)
    keep = kept(decisions)
    files = {b["file"] for b in history}
    if not history:
        assert decisions == []
        return
    newest = max(b["created"] for b in history)
    if now < newest:  # clock behind: nothing deleted
        assert keep == files
        return
    order = lambda b: (b["created"], b["file"])  # noqa: E731
    verified = sorted((b for b in history if b["verified"]), key=order, reverse=True)
    if verified:  # the newest verified backup is always kept
        assert verified[0]["file"] in keep
    else:  # nothing verified: nothing deleted
        assert keep == files
    label_days = policy["keep_label_days"]
    general = [b for b in history if b["label"] not in label_days]
    counted = [b for b in verified if b["label"] not in label_days]
    # keep_last N: the N newest verified unlabelled backups
    assert {b["file"] for b in counted[: policy["keep_last"]]} <= keep
    # keep_days: every (unlabelled) backup within the window
    if policy["keep_days"]:
        horizon = now - dt.timedelta(days=policy["keep_days"])
        assert {b["file"] for b in general if b["created"] >= horizon} <= keep
    # labels: every labelled backup within its label's days
    for b in history:
        if b["label"] in label_days and now - b["created"] <= dt.timedelta(days=label_days[b["label"]]):
            assert b["file"] in keep
    # calendar rules: the newest verified unlabelled backup of each of the N latest buckets
    for rule in CALENDAR:
        buckets: list[tuple[int, ...]] = []
        for b in counted:  # newest first
            key = bucket_keys(b["created"], tz)[rule]
            if key not in buckets:
                buckets.append(key)
                if len(buckets) <= policy[rule]:
                    assert b["file"] in keep, (rule, key, b)
        assert buckets == sorted(buckets, reverse=True)  # local calendars never run backwards
    # ... and nothing else: exactly the union of the rules
    assert keep == expected_kept(history, policy, now, tz)


@PROPERTY_SETTINGS
@given(scenarios(), st.sampled_from(RULES), st.integers(1, 5))
def test_property_a_larger_policy_never_deletes_more(scenario: Any, rule: str, extra: int) -> None:
    history, policy, now, tz = scenario
    bigger = dict(policy, **{rule: policy[rule] + extra})
    assert kept(core.select_retention(history, policy, now, tz)) <= kept(
        core.select_retention(history, bigger, now, tz))


@PROPERTY_SETTINGS
@given(histories(max_size=25), policies(), st.sampled_from(ZONES))
def test_property_clock_behind_deletes_nothing(history: list[dict[str, Any]], policy: dict[str, Any],
                                               tz: dt.tzinfo | None) -> None:
    assume(history)
    newest = max(b["created"] for b in history)
    for behind in (dt.timedelta(microseconds=1), dt.timedelta(hours=1), dt.timedelta(days=3650)):
        decisions = core.select_retention(history, policy, newest - behind, tz)
        assert all(d["keep"] for d in decisions)


# --------------------------------------------------------------------------- apply_retention, real folder


def clone_backup(template: Path, folder: Path, name: str, created: dt.datetime, verified: bool = True,
                 label: str | None = None, seq: int = 0) -> str:
    """A finished backup dated ``created``: the template's bytes under a new name, with
    sidecars as the commit protocol writes them."""
    file = core.backup_filename(name, created, seq)
    shutil.copyfile(template, folder / file)
    manifest = json.loads(Path(str(template) + ".json").read_text())
    manifest.update(file=file, name=name, created=core.iso_utc(created), verified=verified, label=label)
    (folder / (file + ".sha256")).write_text("%s  %s\n" % (manifest["sha256"], file))
    (folder / (file + ".json")).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    for entry in (file, file + ".sha256", file + ".json"):
        os.chmod(folder / entry, 0o600)
    return file


def folder_state(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    state = {}
    for entry in sorted(os.listdir(folder)):
        st_entry = os.lstat(folder / entry)
        state[entry] = (st_entry.st_ino, st_entry.st_mtime_ns, (folder / entry).read_bytes())
    return state


@pytest.fixture
def history_folder(tmp_path: Path) -> tuple[Path, list[str], dict[str, bytes]]:
    """A real backup folder: 90 days of app backups (some unverified or labelled), another
    database's backups, and files this tool did not create."""
    db = make_app_db(tmp_path / "app.db", rows=50)
    template = Path(core.snapshot(str(db), str(tmp_path / "template"), "app")["backup"])
    folder = tmp_path / "backups"
    folder.mkdir(mode=0o700)
    start = at(2026, 1, 1, 2, 30)
    app_files = []
    for day in range(90):
        created = start + dt.timedelta(days=day)
        app_files.append(clone_backup(template, folder, "app", created, verified=day % 11 != 5))
        if day % 30 == 7:
            app_files.append(clone_backup(template, folder, "app", created + dt.timedelta(hours=5),
                                          label="pre-upgrade"))
    for day in range(0, 90, 10):
        clone_backup(template, folder, "other", start + dt.timedelta(days=day))
    foreign = {
        "notes.txt": b"the admin's notes\n",
        "app_backup_20260105_000000.db": b"a file named like a backup, not ours\n",
        "app_backup_20260106_000000.db.bak": b"a renamed copy\n",
        "app.db": b"someone put a database here\n",
        ".hidden": b"dotfile\n",
    }
    for entry, content in foreign.items():
        (folder / entry).write_bytes(content)
    return folder, app_files, foreign


POLICY = {"keep_last": 5, "keep_daily": 10, "keep_weekly": 6, "keep_monthly": 3,
          "keep_label_days": {"pre-upgrade": 40}}


def test_apply_retention_check_mode_then_real_run(history_folder: Any) -> None:
    folder, app_files, foreign = history_folder
    assert core.verify_backup(str(folder / app_files[0]))["ok"]  # the clones are real backups
    now = at(2026, 4, 1, 12)
    before = folder_state(folder)

    check = core.apply_retention(str(folder), "app", POLICY, now=now, timezone="Europe/Berlin", check_mode=True)
    assert folder_state(folder) == before  # nothing deleted, nothing touched, not even a lock file
    doomed = check["deleted"]
    assert doomed and check["changed"] is True and check["msg"].startswith("would delete")
    assert set(doomed) | set(check["kept"]) == set(app_files)
    assert not set(doomed) & set(check["kept"])
    assert check["invalid"] == ["app_backup_20260105_000000.db"]

    real = core.apply_retention(str(folder), "app", POLICY, now=now, timezone="Europe/Berlin")
    assert real["deleted"] == doomed and real["kept"] == check["kept"]
    assert real["changed"] is True and real["removed_unfinished"] == []
    after = folder_state(folder)
    gone = set(before) - set(after)
    assert gone == {f + suffix for f in doomed for suffix in ("", ".sha256", ".json")}
    assert set(after) - set(before) == {core.LOCK_FILE}
    for entry in after:
        if entry != core.LOCK_FILE:
            assert after[entry] == before[entry], entry  # untouched
    for entry, content in foreign.items():
        assert (folder / entry).read_bytes() == content
    assert len([f for f in after if f.startswith("other_backup_")]) == 9 * 3
    listing = core.list_backups(str(folder), "app")
    assert sorted(b["file"] for b in listing["backups"]) == sorted(real["kept"])
    # the same decision again: nothing left to delete
    again = core.apply_retention(str(folder), "app", POLICY, now=now, timezone="Europe/Berlin")
    assert again["deleted"] == [] and again["changed"] is False


def test_apply_retention_matches_select_retention(history_folder: Any) -> None:
    folder, app_files, _ = history_folder
    now = at(2026, 4, 1, 12)
    listing = core.list_backups(str(folder), "app")
    decisions = core.select_retention(listing["backups"], POLICY, now, BERLIN)
    result = core.apply_retention(str(folder), "app", POLICY, now=now, timezone="Europe/Berlin", check_mode=True)
    assert result["deleted"] == [d["file"] for d in decisions if not d["keep"]]
    assert [d["file"] for d in result["decisions"]] == [d["file"] for d in decisions]
    assert all(isinstance(d["created"], str) for d in result["decisions"])


def test_apply_retention_with_the_clock_behind_deletes_nothing(history_folder: Any) -> None:
    folder, app_files, _ = history_folder
    before = folder_state(folder)
    result = core.apply_retention(str(folder), "app", {"keep_last": 1}, now=at(2026, 1, 1))
    assert result["deleted"] == [] and result["changed"] is False
    assert set(folder_state(folder)) - set(before) == {core.LOCK_FILE}
    assert set(before) <= set(folder_state(folder))


def test_apply_retention_refuses_bad_input_and_changes_nothing(history_folder: Any) -> None:
    folder, _, _ = history_folder
    before = folder_state(folder)
    for args, kwargs in [((str(folder), "app", {}), {}), ((str(folder), "app", {"keep_last": -1}), {}),
                         ((str(folder), "../app", {"keep_last": 1}), {}),
                         (("relative/folder", "app", {"keep_last": 1}), {}),
                         ((str(folder), "app", {"keep_last": 1}), {"timezone": "Mars/Olympus_Mons"})]:
        with pytest.raises(core.BackupError) as info:
            core.apply_retention(*args, **kwargs)
        assert info.value.kind == core.KIND_BAD_INPUT
    assert folder_state(folder) == before


def test_apply_retention_on_a_missing_folder(tmp_path: Path) -> None:
    result = core.apply_retention(str(tmp_path / "nope"), "app", {"keep_last": 1})
    assert result["changed"] is False and result["deleted"] == []
    assert folder_files(tmp_path) == set()
