from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from taskrouter.errors import PolicyError, PolicyProblem
from taskrouter.policy import Policy, RateLimit, Retries, Routing
from taskrouter.policy_file import load_policy, parse_policy

REPO_POLICY = Path(__file__).resolve().parents[2] / "policies.yaml"


def parse(text: str) -> Policy:
    return parse_policy(textwrap.dedent(text), "p.yaml")


def problems(text: str) -> list[PolicyProblem]:
    with pytest.raises(PolicyError) as caught:
        parse(text)
    return caught.value.problems


def only_problem(text: str) -> PolicyProblem:
    found = problems(text)
    assert len(found) == 1, "\n".join(str(p) for p in found)
    return found[0]


def assert_problem(text: str, line: int | None, key: str, fragment: str) -> str:
    """The single problem of ``text`` is at ``line`` and ``key``; returns its full line."""
    problem = only_problem(text)
    where = f"p.yaml:{line}" if line is not None else "p.yaml"
    prefix = f"{where}: {key}: " if key else f"{where}: "
    assert str(problem).startswith(prefix), str(problem)
    assert fragment in problem.message, problem.message
    return str(problem)


# -- good files ----------------------------------------------------------------------


def test_the_shipped_policy_loads() -> None:
    policy = load_policy(REPO_POLICY)
    assert policy.path == str(REPO_POLICY)
    assert policy.version == 1
    assert policy.routing == Routing(long_after=30.0, workflows="celery")
    assert list(policy.profiles) == [
        "interactive",
        "default",
        "enrichment",
        "llm",
        "media",
        "flaky",
        "pipeline",
        "fanout",
    ]
    enrichment = policy.profile("enrichment")
    assert enrichment.expected_latency == 60.0
    assert enrichment.timeout == 600.0
    assert enrichment.retries == Retries(max=3, backoff=(10.0, 60.0, 300.0))
    assert enrichment.concurrency == 8
    assert enrichment.rate_limit == RateLimit(60, 60.0)
    assert enrichment.queue == "enrichment"
    assert policy.profile("media").keep_results == 172800.0
    assert policy.profile("default").retries == Retries(max=0)  # from defaults
    assert policy.profile("fanout").shape == "chord"
    assert policy.profile("interactive").expected_latency == 0.2
    lines = REPO_POLICY.read_text().splitlines()
    for name, profile in policy.profiles.items():
        assert profile.line is not None
        assert lines[profile.line - 1].strip() == f"{name}:"


def test_minimal_file_gets_every_default() -> None:
    policy = parse(
        """\
        profiles:
          quick:
            expected_latency: 1s
        """
    )
    quick = policy.profile("quick")
    assert policy.routing == Routing(long_after=30.0, workflows="celery")
    assert (quick.shape, quick.backend, quick.queue) == ("isolated", "auto", "quick")
    assert (quick.timeout, quick.keep_results, quick.retries) == (300.0, 86400.0, Retries())
    assert (quick.concurrency, quick.rate_limit, quick.line) == (None, None, 2)


def test_profiles_inherit_defaults_and_override_them() -> None:
    policy = parse(
        """\
        version: 1
        routing:
          long_after: 1m
          workflows: per-step
          celery_visibility_timeout: 2h
        defaults:
          timeout: 20m
          retries: {max: 2, backoff: [5s]}
          keep_results: 3h
        profiles:
          inherits:
            expected_latency: 2
          overrides:
            expected_latency: 1.5m
            shape: group
            backend: rq
            queue: batch_jobs
            timeout: 1h
            retries: {max: 1}
            keep_results: 7d
            concurrency: 2
            rate_limit: 3/10s
        """
    )
    assert policy.routing == Routing(60.0, "per-step", 7200.0)
    inherits, overrides = policy.profile("inherits"), policy.profile("overrides")
    assert (inherits.timeout, inherits.keep_results) == (1200.0, 10800.0)
    assert inherits.retries == Retries(max=2, backoff=(5.0,))
    assert overrides.expected_latency == 90.0
    assert (overrides.shape, overrides.backend, overrides.queue) == ("group", "rq", "batch_jobs")
    assert (overrides.timeout, overrides.keep_results) == (3600.0, 604800.0)
    # retries is one value: the profile's replaces the default's as a whole
    assert overrides.retries == Retries(max=1)
    assert (overrides.concurrency, overrides.rate_limit) == (2, RateLimit(3, 10.0))


def test_empty_sections_and_anchors_are_accepted() -> None:
    policy = parse(
        """\
        routing:
        defaults:
        profiles:
          base: &base
            expected_latency: 1s
            timeout: 1m
          copy:
            <<: *base
            timeout: 2m
        """
    )
    assert policy.profile("copy").timeout == 120.0  # own key overrides the merged one
    assert policy.profile("copy").expected_latency == 1.0
    assert policy.profile("base").timeout == 60.0


def test_timeout_equal_to_expected_latency_is_allowed() -> None:
    assert parse("profiles: {p: {expected_latency: 1m, timeout: 60}}").profile("p").timeout == 60


def test_rq_workflow_is_fine_with_per_step() -> None:
    policy = parse(
        """\
        routing: {workflows: per-step}
        profiles:
          steps: {expected_latency: 1m, shape: chain, backend: rq}
        """
    )
    assert policy.profile("steps").backend == "rq"


# -- the file itself -------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    [problem] = caught.value.problems
    assert problem.line is None
    assert str(problem).startswith(f"{path}: file not found")
    assert "TASKROUTER_POLICY" in problem.message


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path)  # a directory
    assert str(caught.value).startswith(f"{tmp_path}: cannot read the file")


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"profiles:\n  caf\xe9: {expected_latency: 1s}\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert "UTF-8" in str(caught.value)


def test_load_policy_reports_the_path(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("profiles:\n  p:\n    expected_latency: 1s\n    timout: 3s\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value).startswith(f"{path}:4: profiles.p.timout: unknown key")


def test_yaml_syntax_error_has_its_line() -> None:
    assert_problem(
        """\
        profiles:
          p:
            expected_latency: [1s
        """,
        4,
        "",
        "invalid YAML",
    )


def test_tab_indentation_is_a_syntax_error() -> None:
    assert_problem("profiles:\n\tp: 1\n", 2, "", "invalid YAML")


def test_several_documents_are_refused() -> None:
    assert_problem("version: 1\n---\nversion: 1\n", 2, "", "single document")


def test_empty_file() -> None:
    assert_problem("", None, "", "the file is empty")


def test_top_level_must_be_a_mapping() -> None:
    assert_problem("- profiles\n", 1, "", "the top level must be a mapping")


@pytest.mark.parametrize("version", ["2", "'1'", "1.0", "yes"])
def test_version_must_be_1(version: str) -> None:
    text = f"version: {version}\nprofiles:\n  p: {{expected_latency: 1s}}\n"
    assert_problem(text, 1, "version", "write version: 1")


# -- keys ------------------------------------------------------------------------------


def test_unknown_top_level_key_with_hint() -> None:
    line = assert_problem(
        """\
        version: 1
        profile:
          p: {expected_latency: 1s}
        profiles:
          p: {expected_latency: 1s}
        """,
        2,
        "profile",
        "did you mean 'profiles'?",
    )
    assert "allowed here: version, routing, defaults, profiles" in line


@pytest.mark.parametrize(
    ("text", "line", "key", "hint"),
    [
        (
            "routing:\n  long_afer: 1m\nprofiles: {p: {expected_latency: 1s}}\n",
            2,
            "routing.long_afer",
            "did you mean 'long_after'?",
        ),
        (
            "defaults:\n  keep_result: 1d\nprofiles: {p: {expected_latency: 1s}}\n",
            2,
            "defaults.keep_result",
            "did you mean 'keep_results'?",
        ),
        (
            "profiles:\n  p:\n    expected_latency: 1s\n    timout: 3s\n",
            4,
            "profiles.p.timout",
            "did you mean 'timeout'?",
        ),
        (
            "profiles:\n  p:\n    expected_latency: 1s\n    retries: {max: 1, backof: [1s]}\n",
            4,
            "profiles.p.retries.backof",
            "did you mean 'backoff'?",
        ),
        (
            "profiles:\n  p:\n    expected_latency: 1s\n    priority: 3\n",
            4,
            "profiles.p.priority",
            "allowed here: expected_latency, shape,",
        ),
    ],
)
def test_unknown_keys_anywhere(text: str, line: int, key: str, hint: str) -> None:
    assert_problem(text, line, key, hint)


def test_concurrency_belongs_to_profiles_not_defaults() -> None:
    assert_problem(
        "defaults:\n  concurrency: 3\nprofiles: {p: {expected_latency: 1s}}\n",
        2,
        "defaults.concurrency",
        "allowed here: timeout, retries, keep_results",
    )


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("version: 1\nversion: 1\nprofiles: {p: {expected_latency: 1s}}\n", 2, "version"),
        (
            "profiles:\n  p:\n    expected_latency: 1s\n    timeout: 1m\n    timeout: 2m\n",
            5,
            "profiles.p.timeout",
        ),
        (
            "profiles:\n  p: {expected_latency: 1s}\n  q: {expected_latency: 1s}\n"
            "  p: {expected_latency: 2s}\n",
            4,
            "profiles.p",
        ),
        (
            "profiles:\n  p:\n    expected_latency: 1s\n    retries:\n      max: 1\n      max: 2\n",
            6,
            "profiles.p.retries.max",
        ),
    ],
)
def test_duplicate_keys(text: str, line: int, key: str) -> None:
    message = assert_problem(text, line, key, "duplicate key (first at line")
    assert "remove one" in message


# -- sections ----------------------------------------------------------------------------


def test_profiles_is_required() -> None:
    assert_problem("version: 1\n", None, "profiles", "is required")


def test_profiles_must_not_be_empty() -> None:
    assert_problem("version: 1\nprofiles: {}\n", 2, "profiles", "is empty")


def test_profiles_must_be_a_mapping() -> None:
    assert_problem("profiles:\n  - enrichment\n", 2, "profiles", "must be a mapping")


def test_routing_must_be_a_mapping() -> None:
    assert_problem(
        "routing: celery\nprofiles: {p: {expected_latency: 1s}}\n", 1, "routing", "mapping"
    )


@pytest.mark.parametrize(
    ("routing", "key", "fragment"),
    [
        ("long_after: soon", "routing.long_after", "'soon' is not a duration"),
        ("long_after: -1s", "routing.long_after", "negative"),
        ("workflows: per_step", "routing.workflows", "did you mean 'per-step'?"),
        ("workflows: rq", "routing.workflows", "is not one of celery, per-step"),
        ("celery_visibility_timeout: 0", "routing.celery_visibility_timeout", "longer than 0s"),
    ],
)
def test_bad_routing_values(routing: str, key: str, fragment: str) -> None:
    assert_problem(
        f"routing:\n  {routing}\nprofiles: {{p: {{expected_latency: 1s}}}}\n", 2, key, fragment
    )


@pytest.mark.parametrize(
    ("defaults", "key", "fragment"),
    [
        ("timeout: 0s", "defaults.timeout", "longer than 0s"),
        ("timeout: 5 min", "defaults.timeout", "not a duration"),
        ("keep_results: 1w", "defaults.keep_results", "not a duration"),
        ("retries: 2", "defaults.retries", "must be a mapping"),
    ],
)
def test_bad_defaults(defaults: str, key: str, fragment: str) -> None:
    # one problem only: the profile inheriting the bad value is not reported again
    assert_problem(
        f"defaults:\n  {defaults}\nprofiles:\n  p: {{expected_latency: 1s}}\n", 2, key, fragment
    )


# -- profile values ------------------------------------------------------------------------


def profile_text(*lines: str, name: str = "p") -> str:
    body = "".join(f"    {line}\n" for line in lines)
    return f"version: 1\nprofiles:\n  {name}:\n{body}"


def test_expected_latency_is_required() -> None:
    assert_problem(profile_text("timeout: 1m"), 3, "profiles.p.expected_latency", "is required")


def test_profile_without_body_needs_expected_latency() -> None:
    assert_problem("profiles:\n  p:\n", 2, "profiles.p.expected_latency", "is required")


def test_profile_must_be_a_mapping() -> None:
    assert_problem("profiles:\n  p: fast\n", 2, "profiles.p", "must be a mapping")


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("has space", "invalid profile name"), ("a.b", "Redis key"), ("x" * 65, "1 to 64")],
)
def test_profile_names_must_be_safe_keys(name: str, fragment: str) -> None:
    assert_problem(
        profile_text("expected_latency: 1s", name=f"'{name}'"), 3, f"profiles.{name}", fragment
    )


@pytest.mark.parametrize("queue", ["'a b'", "a/b", "x" * 65, "''"])
def test_queue_names_must_be_safe_keys(queue: str) -> None:
    text = profile_text("expected_latency: 1s", f"queue: {queue}")
    assert_problem(text, 5, "profiles.p.queue", "invalid queue name")


@pytest.mark.parametrize(
    ("line", "key", "fragment"),
    [
        ("expected_latency: fast", "profiles.p.expected_latency", "not a duration"),
        ("expected_latency: -2s", "profiles.p.expected_latency", "negative"),
        ("expected_latency: yes", "profiles.p.expected_latency", "boolean"),
        ("expected_latency: [1s]", "profiles.p.expected_latency", "got a list"),
        ("expected_latency: !!python/object:os.system x", "profiles.p.expected_latency", "tag"),
    ],
)
def test_bad_expected_latency(line: str, key: str, fragment: str) -> None:
    assert_problem(profile_text(line), 4, key, fragment)


@pytest.mark.parametrize(
    ("line", "key", "fragment"),
    [
        ("shape: chian", "profiles.p.shape", "did you mean 'chain'?"),
        ("shape: pipeline", "profiles.p.shape", "isolated, chain, group, chord"),
        ("backend: RQ", "profiles.p.backend", "did you mean 'rq'?"),
        ("backend: yes", "profiles.p.backend", "auto, celery, rq"),
        ("timeout: 10 minutes", "profiles.p.timeout", "not a duration"),
        ("timeout: on", "profiles.p.timeout", "boolean"),
        ("timeout: 0", "profiles.p.timeout", "longer than 0s"),
        ("keep_results: forever", "profiles.p.keep_results", "not a duration"),
        ("concurrency: 0", "profiles.p.concurrency", "whole number >= 1"),
        ("concurrency: 2.5", "profiles.p.concurrency", "whole number >= 1"),
        ("concurrency: yes", "profiles.p.concurrency", "yes (a boolean)"),
        ("concurrency: '4'", "profiles.p.concurrency", "whole number"),
        ("rate_limit: 60", "profiles.p.rate_limit", "60/m"),
        ("rate_limit: 60 per minute", "profiles.p.rate_limit", "not a rate"),
        ("rate_limit: 0/s", "profiles.p.rate_limit", "at least 1"),
        ("retries: 3", "profiles.p.retries", "must be a mapping"),
        ("retries: {max: -1}", "profiles.p.retries.max", "whole number >= 0"),
        ("retries: {max: true}", "profiles.p.retries.max", "(a boolean)"),
        ("retries: {max: 1, backoff: 5s}", "profiles.p.retries.backoff", "must be a list"),
        ("retries: {max: 2, backoff: [1s, soon]}", "profiles.p.retries.backoff[1]", "'soon'"),
    ],
)
def test_bad_profile_values(line: str, key: str, fragment: str) -> None:
    assert_problem(profile_text("expected_latency: 1s", line), 5, key, fragment)


# -- impossible combinations --------------------------------------------------------------


def test_timeout_shorter_than_expected_latency() -> None:
    message = assert_problem(
        profile_text("expected_latency: 2m", "timeout: 1m"),
        5,
        "profiles.p.timeout",
        "timeout 1m is shorter than expected_latency 2m",
    )
    assert "set profiles.p.timeout to at least 2m" in message


def test_inherited_timeout_shorter_than_expected_latency_points_at_the_profile() -> None:
    text = "defaults:\n  timeout: 30s\nprofiles:\n  slow:\n    expected_latency: 1m\n"
    assert_problem(text, 4, "profiles.slow.timeout", "(inherited from defaults.timeout)")


def test_backoff_longer_than_max() -> None:
    message = assert_problem(
        profile_text(
            "expected_latency: 1s",
            "retries:",
            "  max: 1",
            "  backoff: [1s, 5s, 10s]",
        ),
        7,
        "profiles.p.retries.backoff",
        "has 3 values but profiles.p.retries.max is 1",
    )
    assert "remove them or raise max to 3" in message


def test_backoff_without_max_is_never_used() -> None:
    assert_problem(
        profile_text("expected_latency: 1s", "retries: {backoff: [1s]}"),
        5,
        "profiles.p.retries.backoff",
        "max is 0",
    )


def test_backoff_longer_than_max_in_defaults() -> None:
    text = "defaults:\n  retries: {max: 0, backoff: [1s]}\nprofiles: {p: {expected_latency: 1s}}\n"
    assert_problem(text, 2, "defaults.retries.backoff", "never be used")


@pytest.mark.parametrize("shape", ["chain", "group", "chord"])
def test_rq_workflow_needs_per_step(shape: str) -> None:
    message = assert_problem(
        profile_text("expected_latency: 1s", f"shape: {shape}", "backend: rq"),
        6,
        "profiles.p.backend",
        f"backend: rq cannot run a {shape}",
    )
    assert "set routing.workflows: per-step or use backend: celery" in message


def test_kombu_reserved_queue_on_celery() -> None:
    text = profile_text("expected_latency: 1s", "queue: unacked")
    assert_problem(text, 5, "profiles.p.queue", "Redis transport uses for itself")
    # on RQ the name is harmless: RQ prefixes its keys
    parse(profile_text("expected_latency: 1m", "queue: unacked"))


VISIBILITY = """\
routing:
  celery_visibility_timeout: 10m
defaults:
  timeout: 1m
profiles:
  quick:
    expected_latency: 1s
  slow:
    expected_latency: 10s
    timeout: 5m
  pinned:
    expected_latency: 1s
    backend: celery
    timeout: 4m
  long_on_rq:
    expected_latency: 1m
    timeout: 1h
"""


def test_celery_profile_longer_than_configured_visibility_window() -> None:
    found = problems(VISIBILITY)
    # slow: (330 x 2 + 100) x 1.1 = 836s > 600s; pinned: 264s x 2 + 100 + 62.8 = 691s.
    # quick (66s x 2 + 100 + 60 = 292s) fits; long_on_rq runs on RQ, where it does not apply.
    assert [(p.line, p.key) for p in found] == [
        (10, "profiles.slow.timeout"),
        (14, "profiles.pinned.timeout"),
    ]
    assert "needs a Celery visibility window of 836s" in found[0].message
    assert "raise routing.celery_visibility_timeout to at least 836s" in found[0].message
    assert "at least 691s" in found[1].message


def test_visibility_problem_with_inherited_timeout_points_at_the_profile() -> None:
    text = "routing: {celery_visibility_timeout: 5m}\nprofiles:\n  p:\n    expected_latency: 1s\n"
    assert_problem(text, 3, "profiles.p.timeout", "visibility window of 836s")


def test_visibility_window_that_fits_is_accepted() -> None:
    policy = parse(VISIBILITY.replace("10m", "15m"))
    assert policy.routing.celery_visibility_timeout == 900.0


# -- reporting ------------------------------------------------------------------------------


def test_all_problems_are_reported_at_once_in_line_order() -> None:
    text = """\
    version: 3
    routing:
      workflows: parallel
    profiles:
      ok:
        expected_latency: 1s
      bad name:
        expected_latency: 1s
      p:
        expected_latency: 1 minute
        concurrency: -1
        colour: blue
    """
    found = problems(text)
    assert [(p.line, p.key) for p in found] == [
        (1, "version"),
        (3, "routing.workflows"),
        (7, "profiles.bad name"),
        (10, "profiles.p.expected_latency"),
        (11, "profiles.p.concurrency"),
        (12, "profiles.p.colour"),
    ]
    with pytest.raises(PolicyError) as caught:
        parse(text)
    assert str(caught.value) == "\n".join(str(p) for p in found)
    assert all(p.path == "p.yaml" for p in found)


def test_default_path_in_messages() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy("profiles: {}\n")
    assert str(caught.value).startswith("<string>:1: profiles: is empty")
