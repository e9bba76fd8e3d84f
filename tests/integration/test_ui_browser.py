"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright,
against a live ``taskrouter api`` (with a token, logged in through the form) and real
Celery and RQ workers on a key prefix of this module alone, so that the overview's
counts are exactly the jobs submitted here.

Screenshots of every page are saved under the test run's temporary directory; the path
is printed at the end of the module. In CI a missing Chromium fails these tests.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskrouter.derive import celery_queues, derive, rq_queues
from taskrouter.policy_file import load_policy
from tests.conftest import RUN_PREFIX, delete_prefix
from tests.integration.conftest import OWN_WORKER_QUEUES, POLICY, Stack, poll
from tests.integration.test_api import ApiServer, start_api

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("TASKROUTER_TEST_CHROMIUM", "/usr/bin/chromium")
TOKEN = "browser-" + uuid.uuid4().hex
WAIT_MS = 15_000  # for anything the page shows after a live update or a job's end


def chromium_path() -> str:
    if not os.path.exists(CHROMIUM):
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium; see .ci/run)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="module")
def own_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Workers of both engines on a fresh key prefix (the session's stack has the jobs of
    every other test, which would make the counts unknowable)."""
    chromium_path()  # before starting anything
    stack = Stack(redis_url, f"{RUN_PREFIX}-ui", tmp_path_factory.mktemp("ui-workers"))
    derived = derive(load_policy(str(POLICY)))
    for engine, queues in (("celery", celery_queues(derived)), ("rq", rq_queues(derived))):
        stack.start_worker(
            engine, queues=[q for q in queues if not q.startswith(OWN_WORKER_QUEUES)]
        )
    try:
        yield stack
    finally:
        stack.stop()
        delete_prefix(redis_url, stack.prefix)


@pytest.fixture(scope="module")
def server(own_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    log: Path = tmp_path_factory.mktemp("api") / "ui-browser.log"
    env = {**own_stack.env, "TASKROUTER_API_TOKEN": TOKEN}
    for server in start_api(env, log):
        with server.client(TOKEN) as http:
            poll(lambda: http.get("/readyz").status_code == 200, 60, "workers of both engines")
        yield server


@pytest.fixture(scope="module")
def api(server: ApiServer) -> Iterator[httpx.Client]:
    with server.client(TOKEN) as client:
        yield client


@pytest.fixture(scope="module")
def shots(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("ui-screenshots")
    yield folder
    line = f"dashboard screenshots: {folder} ({len(list(folder.glob('*.png')))} pages)"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        print(f"\n{line}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=chromium_path())
        try:
            yield chromium
        finally:
            chromium.close()


class Watched:
    """A logged-in page, and what it said that it should not have."""

    def __init__(self, page: Any, base_url: str, shots: Path) -> None:
        self.page = page
        self.base_url = base_url
        self.shots = shots
        self.dialogs: list[str] = []
        self.problems: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _console(self, message: Any) -> None:
        if message.type == "error":  # CSP violations and script errors are errors
            self.problems.append(f"console {message.type}: {message.text}")

    def goto(self, path: str) -> Any:
        response = self.page.goto(self.base_url + path)
        assert response is not None and response.status == 200, (path, response and response.status)
        return response

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)


@pytest.fixture
def web(browser: Any, server: ApiServer, shots: Path) -> Iterator[Watched]:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    watched = Watched(page, server.base_url, shots)
    page.goto(server.base_url + "/ui")  # sent to the login form
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    watched.shot("login")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    expect(page).to_have_url(server.base_url + "/ui")
    try:
        yield watched
        # No dialog, no script error, no Content-Security-Policy violation on any page.
        assert watched.dialogs == []
        assert watched.problems == []
    finally:
        context.close()


def submit(api: httpx.Client, task: str, *args: Any) -> str:
    r = api.post("/jobs", json={"task": task, "args": list(args)})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def wait_state(api: httpx.Client, job_id: str, *states: str, timeout: float = 60) -> None:
    def reached() -> bool:
        return api.get(f"/jobs/{job_id}").json()["state"] in states

    poll(reached, timeout, f"job {job_id} to be {' or '.join(states)}")


# -- the tests, in order: the first one counts every job of this module's prefix --------------


def test_the_overview_shows_the_right_counts_and_updates_live(
    web: Watched, api: httpx.Client
) -> None:
    from playwright.sync_api import expect

    done = [submit(api, "t.echo", i) for i in range(3)] + [
        submit(api, "t.long_echo", i) for i in range(2)
    ]
    failed = submit(api, "t.ui_fail", "counted")
    parked = [submit(api, "t.ui_park", i) for i in range(2)]
    for job_id in done:
        wait_state(api, job_id, "succeeded")
    wait_state(api, failed, "failed")
    page = web.page
    web.goto("/ui")
    for state, n in {"all": 8, "succeeded": 5, "failed": 1, "queued": 2, "running": 0}.items():
        expect(page.locator(f'[data-count="{state}"]')).to_have_text(str(n))
    cells = {
        "succeeded-celery": 3,
        "succeeded-rq": 2,
        "failed-celery": 1,
        "queued-celery": 2,
        "queued-rq": 0,
    }
    for cell, n in cells.items():
        expect(page.locator(f'[data-cell="{cell}"]')).to_have_text(str(n))
    expect(page.locator('[data-depth="celery-parked"]')).to_have_text("2")
    expect(page.locator('[data-hour="submitted"]')).to_have_text("8")
    expect(page.locator('[data-workers="celery"]')).not_to_have_text("0")
    expect(page.locator('[data-workers="rq"]')).not_to_have_text("0")
    web.shot("overview")
    page.evaluate("window.__notReloaded = true")
    parked.append(submit(api, "t.ui_park", "late"))
    expect(page.locator('[data-count="queued"]')).to_have_text("3")
    expect(page.locator('[data-depth="celery-parked"]')).to_have_text("3")
    assert page.evaluate("window.__notReloaded") is True
    api.post("/jobs/cancel", params={"task": "t.ui_park"})


def test_a_job_submitted_after_the_page_opened_appears_without_a_reload(
    web: Watched, api: httpx.Client
) -> None:
    from playwright.sync_api import expect

    page = web.page
    web.goto("/ui/jobs")
    page.evaluate("window.__notReloaded = true")
    job_id = submit(api, "t.echo", "arrives later")
    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row).to_be_visible()
    expect(page.locator("table.jobs tbody tr").first).to_have_attribute(
        "data-job", job_id
    )  # newest first
    expect(row.locator(".badge")).to_have_text("succeeded")
    assert page.evaluate("window.__notReloaded") is True
    web.shot("jobs")


def test_cancel_and_retry_work_from_their_buttons(web: Watched, api: httpx.Client) -> None:
    from playwright.sync_api import expect

    page = web.page
    job_id = submit(api, "t.sleep_rq", 60)
    wait_state(api, job_id, "running")
    web.goto(f"/ui/jobs/{job_id}")
    expect(page.locator("h2 .badge")).to_have_text("running")
    page.get_by_text("Cancel…").click()
    web.shot("job-confirm-cancel")
    page.get_by_role("button", name="Yes, cancel it").click()
    expect(page.locator("#notice")).to_have_text("The job was canceled.")
    expect(page.locator("h2 .badge")).to_have_text("canceled")
    wait_state(api, job_id, "canceled")
    page.get_by_text("Retry…").click()
    page.get_by_role("button", name="Yes, retry it").click()
    expect(page).not_to_have_url(re.compile(f"/ui/jobs/{job_id}$"))
    new_id = page.url.rsplit("/", 1)[1].split("?")[0]
    expect(page.locator("#retry-of")).to_have_text(job_id)
    assert api.get(f"/jobs/{new_id}").json()["task"] == "t.sleep_rq"
    api.post(f"/jobs/{new_id}/cancel")  # free the RQ worker
    failed = submit(api, "t.ui_fail", "from the button")
    wait_state(api, failed, "failed")
    web.goto(f"/ui/jobs/{failed}")
    expect(page.locator("#error")).to_contain_text("ValueError: from the button")
    expect(page.locator("#history tbody tr")).to_have_count(1)
    web.shot("job-failed")
    page.get_by_text("Retry…").click()
    page.get_by_role("button", name="Yes, retry it").click()
    expect(page.locator("#retry-of")).to_have_text(failed)
    expect(page.locator("h2 .badge")).to_have_text("failed")  # it fails again, live


def test_a_chords_graph_shows_every_member(web: Watched, api: httpx.Client) -> None:
    from playwright.sync_api import expect

    chord = {
        "kind": "chord",
        "header": [{"task": "t.wf_square", "args": [n, 0.3]} for n in (2, 3, 4)],
        "body": {"task": "t.echo"},
    }
    r = api.post("/workflows", json=chord)
    assert r.status_code == 202, r.text
    wf = r.json()
    page = web.page
    web.goto(f"/ui/workflows/{wf['id']}")
    nodes = page.locator("svg#graph a.node")
    expect(nodes).to_have_count(4)
    members = [nodes.nth(i).get_attribute("data-member") for i in range(4)]
    assert sorted(members) == sorted(j["id"] for j in wf["jobs"])  # type: ignore[type-var]
    expect(page.locator("svg#graph path.edge")).to_have_count(3)
    expect(page.locator('svg#graph a.node[data-state="succeeded"]')).to_have_count(4)  # live
    web.shot("workflow")
    page.locator("svg#graph a.node").last.click()
    expect(page.locator("#workflow-link")).to_have_text(wf["id"])
    expect(page.locator("#result")).to_contain_text("16")
    web.shot("job")


def test_a_result_holding_script_is_shown_as_text(web: Watched, api: httpx.Client) -> None:
    from playwright.sync_api import expect

    markup = "<script>window.__xss = 1; alert('xss')</script><img src=x onerror=\"alert(2)\">"
    job_id = submit(api, "t.echo", markup)
    wait_state(api, job_id, "succeeded")
    page = web.page
    web.goto(f"/ui/jobs/{job_id}")
    expect(page.locator("#result pre")).to_contain_text("<script>window.__xss = 1;")
    expect(page.locator("#result pre")).to_contain_text('<img src=x onerror=\\"alert(2)\\">')
    page.wait_for_timeout(2500)  # a live update replaces the part: still only text
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("script").count() == 1  # ui.js
    assert page.locator("#result img").count() == 0
    web.shot("job-markup")


def test_bulk_cancel_from_the_jobs_page(web: Watched, api: httpx.Client) -> None:
    from playwright.sync_api import expect

    ids = [submit(api, "t.ui_park", i) for i in range(3)]
    page = web.page
    web.goto("/ui/jobs?task=t.ui_park&state=queued")
    expect(page.locator("table.jobs tbody tr")).to_have_count(3)
    page.get_by_text("Cancel the queued jobs…").click()
    web.shot("jobs-bulk-confirm")
    page.get_by_role("button", name="Yes, cancel them").click()
    expect(page.locator("#notice")).to_have_text("Canceled 3 queued jobs.")
    assert {api.get(f"/jobs/{i}").json()["state"] for i in ids} == {"canceled"}


def test_profiles_and_workers_pages(web: Watched, api: httpx.Client) -> None:
    from playwright.sync_api import expect

    ran = submit(api, "t.echo", "timed")
    wait_state(api, ran, "succeeded")
    page = web.page
    web.goto("/ui/profiles")
    quick = page.locator('tr[data-profile="quick"]')
    expect(quick).to_contain_text("celery")
    expect(quick).to_contain_text("p50")
    expect(page.locator('tr[data-profile="capped"] [data-limit="concurrency"]')).to_contain_text(
        "0 / 2"
    )
    web.shot("profiles")
    web.goto("/ui/workers")
    expect(page.locator("tr[data-worker]")).to_have_count(2)
    expect(page.locator("#workers")).to_contain_text("celery")
    expect(page.locator("#workers")).to_contain_text("rq")
    web.shot("workers")
