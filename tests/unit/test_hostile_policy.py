"""Hostile policy files: each is refused at once with ``file:line:`` or a size message,
never a hang, a traceback or a value the engines cannot hold."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from taskrouter import policy_yaml
from taskrouter.errors import PolicyError
from taskrouter.policy_file import load_policy, parse_policy
from taskrouter.policy_yaml import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES
from taskrouter.settings import MAX_BACKOFF, MAX_KEEP_RESULTS, MAX_TIMEOUT

SHIPPED = Path(__file__).resolve().parents[2] / "policies.yaml"
PROFILE = "profiles:\n  p:\n    expected_latency: 1s\n"
# Far more than any refusal takes; far less than what each case took before the bounds.
QUICK = 1.0


@pytest.fixture(params=["libyaml", "pure-python"], autouse=True)
def loader(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every case with libyaml's parser and with PyYAML's own (used where libyaml is not
    built in): the bounds must not depend on the faster one."""
    if request.param == "libyaml" and not hasattr(yaml, "CSafeLoader"):
        pytest.fail("PyYAML without libyaml: the libyaml cases cannot run here")
    chosen = yaml.CSafeLoader if request.param == "libyaml" else yaml.SafeLoader
    previous, policy_yaml._LOADER = policy_yaml._LOADER, chosen
    yield
    policy_yaml._LOADER = previous


def refused(text: str, path: str = "hostile.yaml") -> tuple[str, float]:
    started = time.perf_counter()
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, path)
    return str(caught.value), time.perf_counter() - started


def merge_bomb(levels: int = 40) -> str:
    """Each mapping merges the previous one twice: PyYAML's flattening copies 2**levels."""
    lines = ["version: 1", "m0: &m0 {a: 1, b: 2}"]
    lines += [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: {i}}}" for i in range(1, levels)]
    return "\n".join(lines) + f"\n{PROFILE}    <<: *m{levels - 1}\n"


def alias_bomb(levels: int = 12) -> str:
    """A billion laughs: each list holds the previous one ten times."""
    lines = ["version: 1", "a0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\n{PROFILE}    retries: {{max: 1, backoff: *a{levels - 1}}}\n"


def line_of(message: str, text: str) -> str:
    """The line of ``text`` that ``message`` (file:line: ...) points at."""
    return text.splitlines()[int(message.split(":")[1]) - 1]


def test_a_merge_key_bomb_is_refused_at_the_first_merge_past_the_limit() -> None:
    text = merge_bomb()
    message, took = refused(text)
    assert f"more than {MAX_NODES}" in message and "merge" in message
    assert line_of(message, text).startswith("m10: &m10 {<<: [*m9, *m9]")
    assert took < QUICK


def test_an_alias_bomb_is_refused_at_the_first_alias_past_the_limit() -> None:
    text = alias_bomb()
    message, took = refused(text)
    assert f"more than {MAX_NODES}" in message and "aliases" in message
    assert line_of(message, text).startswith("a3: &a3 [*a2")
    assert took < QUICK


@pytest.mark.parametrize(
    "text",
    ["version: 1\nx: &x {<<: *x}\n" + PROFILE, "version: 1\nx: &x [1, *x]\n" + PROFILE],
    ids=["merge of itself", "list holding itself"],
)
def test_an_alias_inside_the_node_it_names_is_refused(text: str) -> None:
    message, took = refused(text)
    assert message.startswith("hostile.yaml:2: ") and "contains it" in message
    assert took < QUICK


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\nprofiles: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "version: 1\nprofiles: " + "{a: " * 100_000 + "1" + "}" * 100_000 + "\n",
        "version: 1\nprofiles:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 1000)),
    ],
    ids=["100k nested lists", "100k nested flow mappings", "1000 indented mappings"],
)
def test_deep_nesting_is_refused_at_the_line_it_passes_the_limit(text: str) -> None:
    message, took = refused(text)
    line = MAX_DEPTH + 2 if text.endswith(":\n") else 2  # the mapping 33 levels down
    assert message.startswith(f"hostile.yaml:{line}: ")
    assert f"more than {MAX_DEPTH} levels" in message
    assert took < QUICK


def test_nesting_up_to_the_limit_is_not_what_is_reported() -> None:
    inner = "{a: " * (MAX_DEPTH - 3) + "1" + "}" * (MAX_DEPTH - 3)
    message, _ = refused(f"version: 1\nprofiles:\n  p: {{expected_latency: 1s, x: {inner}}}\n")
    assert "unknown key 'x'" in message and "levels" not in message


def test_too_many_values_are_refused_at_the_line_that_passes_the_limit() -> None:
    text = "version: 1\nprofiles:\n" + "".join(
        f"  p{i}: {{expected_latency: 1s}}\n" for i in range(MAX_NODES)
    )
    message, took = refused(text)
    assert f"more than {MAX_NODES} keys, values and list items" in message
    line = int(message.split(":")[1])
    assert 2 < line < MAX_NODES // 2
    assert took < QUICK


def test_a_file_over_the_size_limit_is_refused_by_its_size(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(SHIPPED.read_bytes() + b"# padding\n" * (10 * 1024 * 1024 // 10))
    started = time.perf_counter()
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert time.perf_counter() - started < QUICK
    assert str(caught.value) == (
        f"{path}: the file is over 1024 KiB ({MAX_FILE_BYTES} bytes), taskrouter's limit for "
        "a policy: a policy of even a thousand profiles is far smaller; check that this is "
        "the policy file"
    )
    with pytest.raises(PolicyError, match="the policy is over 1024 KiB"):
        parse_policy("#" * (MAX_FILE_BYTES + 1))


def test_a_file_just_under_the_size_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "padded.yaml"
    shipped = SHIPPED.read_bytes()
    path.write_bytes(shipped + b"#" * (MAX_FILE_BYTES - len(shipped) - 1) + b"\n")
    assert len(path.read_bytes()) == MAX_FILE_BYTES
    assert load_policy(path).profiles == load_policy(SHIPPED).profiles


def test_many_profiles_sharing_one_merged_mapping_are_fine() -> None:
    text = "version: 1\nbase: &base {expected_latency: 1s, timeout: 1m, retries: {max: 2}}\n"
    text += "profiles:\n" + "".join(f"  p{i}: {{<<: *base, queue: q{i}}}\n" for i in range(300))
    with pytest.raises(PolicyError) as caught:  # only the unknown key "base" is wrong
        parse_policy(text, "many.yaml")
    assert [p.key for p in caught.value.problems] == ["base"]


# -- durations the engines cannot hold -----------------------------------------------------

LIMITS = [
    ("timeout", MAX_TIMEOUT, "2147483647s", "RQ can enforce"),
    ("keep_results", MAX_KEEP_RESULTS, "104249991d", "Redis can keep a record"),
]


@pytest.mark.parametrize(("key", "maximum", "shown", "why"), LIMITS)
@pytest.mark.parametrize("section", ["defaults", "profiles.p"])
def test_durations_beyond_what_the_engines_hold_are_refused_naming_the_limit(
    key: str, maximum: float, shown: str, why: str, section: str
) -> None:
    for value in (str(maximum + 1), "1" + "0" * 30, "99999999999999d"):
        text = f"version: 1\n{PROFILE}"
        line = 5 if section == "profiles.p" else 2
        if section == "defaults":
            text = text.replace("profiles:", f"defaults: {{{key}: {value}}}\nprofiles:")
        else:
            text += f"    {key}: {value}\n"
        message, _ = refused(text)
        assert message.startswith(
            f"hostile.yaml:{line}: {section}.{key}: {value} is longer than {why}"
        )
        assert message.endswith(f": set at most {shown}")


@pytest.mark.parametrize(("key", "maximum", "shown", "why"), LIMITS)
def test_durations_at_the_limit_are_accepted(key: str, maximum: float, shown: str, why: str):
    profile = parse_policy(f"version: 1\n{PROFILE}    {key}: {shown}\n").profiles["p"]
    assert getattr(profile, key) == maximum


def test_a_backoff_beyond_what_a_retry_can_wait_is_refused() -> None:
    text = f"version: 1\n{PROFILE}    retries: {{max: 2, backoff: [1s, {MAX_BACKOFF + 1}]}}\n"
    message, _ = refused(text)
    assert message.startswith(
        f"hostile.yaml:5: profiles.p.retries.backoff[1]: {MAX_BACKOFF + 1} is longer than "
        "a retry may wait"
    )
    assert message.endswith(f"set at most {MAX_BACKOFF}s")


def test_the_timeout_limit_is_what_signal_alarm_takes_here() -> None:
    # RQ's work-horse arms signal.alarm(job_timeout); one more second does not fit.
    previous = signal.signal(signal.SIGALRM, signal.SIG_IGN)
    try:
        signal.alarm(MAX_TIMEOUT)
        assert signal.alarm(0) > MAX_TIMEOUT - 60
        with pytest.raises(OverflowError):
            signal.alarm(MAX_TIMEOUT + 1)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_the_keep_results_limit_is_exact_in_milliseconds_as_a_double() -> None:
    # Lua scripts hold it as a double (tests/integration/test_hostile_policy_cli.py runs it).
    ms = MAX_KEEP_RESULTS * 1000
    assert ms <= 2**53 and int(float(ms)) == ms
    assert (MAX_KEEP_RESULTS + 86400) * 1000 > 2**53
