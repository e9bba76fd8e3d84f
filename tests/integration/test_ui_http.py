"""The dashboard over plain HTTP: a real ``taskrouter api`` with a token on the session's
worker stack. Login and its cookie, CSRF on every form, the page headers, escaping, the
time-range listing, and the bulk actions of the API and of the dashboard."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskrouter.services.ui.security import CSP, CSRF_COOKIE, TOKEN_COOKIE
from tests.integration.conftest import Stack, poll
from tests.integration.test_api import ApiServer, start_api

pytestmark = pytest.mark.integration

TOKEN = "ui-" + uuid.uuid4().hex
PAGES = ["/ui", "/ui/jobs", "/ui/profiles", "/ui/workers", "/ui/login"]


@pytest.fixture(scope="module")
def server(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    log: Path = tmp_path_factory.mktemp("api") / "ui.log"
    yield from start_api({**stack.env, "TASKROUTER_API_TOKEN": TOKEN}, log)


@pytest.fixture(scope="module")
def api(server: ApiServer) -> Iterator[httpx.Client]:
    with server.client(TOKEN) as client:
        yield client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def login(server: ApiServer) -> httpx.Client:
    """A browser-like client logged in through the form (cookies kept)."""
    client = httpx.Client(base_url=server.base_url, timeout=30, follow_redirects=True)
    form = client.get("/ui/login")
    r = client.post(
        "/ui/login", data={"csrf": csrf_of(form.text), "token": TOKEN, "next": "/ui/jobs"}
    )
    assert r.status_code == 200 and r.url.path == "/ui/jobs", r.text[:500]
    return client


@pytest.fixture
def browser(server: ApiServer) -> Iterator[httpx.Client]:
    client = login(server)
    try:
        yield client
    finally:
        client.close()


def submit(api: httpx.Client, task: str, *args: Any) -> str:
    r = api.post("/jobs", json={"task": task, "args": list(args)})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def state_of(api: httpx.Client, job_id: str) -> str:
    return str(api.get(f"/jobs/{job_id}").json()["state"])


def wait_state(api: httpx.Client, job_id: str, *states: str) -> None:
    poll(lambda: state_of(api, job_id) in states, 30, f"job {job_id} to be {states}")


# -- login, cookies, headers -------------------------------------------------------------------


def test_pages_send_a_browser_without_the_token_to_the_login_form(server: ApiServer) -> None:
    with httpx.Client(base_url=server.base_url) as anonymous:
        r = anonymous.get("/ui/jobs?state=failed")
        assert r.status_code == 303
        assert r.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%3Fstate%3Dfailed"
        form = anonymous.get("/ui/login")
        assert form.status_code == 200 and 'type="password"' in form.text
        cookie = form.headers["set-cookie"].lower()
        assert cookie.startswith(CSRF_COOKIE) and "httponly" in cookie
        assert "samesite=strict" in cookie and "path=/ui" in cookie
        assert anonymous.get("/ui/static/ui.js").status_code == 200  # no secrets there


def test_login_keeps_the_token_in_an_httponly_strict_cookie(server: ApiServer) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        csrf = csrf_of(client.get("/ui/login").text)
        wrong = client.post("/ui/login", data={"csrf": csrf, "token": "nope", "next": "/ui"})
        assert wrong.status_code == 401 and "not the API" in wrong.text
        assert client.post("/ui/login", data={"token": TOKEN}).status_code == 403  # no CSRF
        r = client.post(
            "/ui/login",
            data={"csrf": csrf, "token": TOKEN, "next": "https://evil.example/"},
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == "/ui"
        sent = [v.lower() for k, v in r.headers.multi_items() if k == "set-cookie"]
        token_cookie = next(c for c in sent if c.startswith(TOKEN_COOKIE))
        assert "httponly" in token_cookie and "samesite=strict" in token_cookie
        assert "path=/ui" in token_cookie and "secure" not in token_cookie  # plain http here
        assert client.get("/ui").status_code == 200
        # The cookie opens the dashboard, not the API: API routes have no CSRF check.
        assert client.get("/jobs").status_code == 401
        assert client.post("/jobs/cancel?task=t.ui_park").status_code == 401
        # The CSRF token of the page before the login no longer works after it.
        fresh = csrf_of(client.get("/ui").text)
        assert fresh != csrf
        out = client.post("/ui/logout", data={"csrf": fresh}, follow_redirects=False)
        assert out.status_code == 303
        assert client.get("/ui", follow_redirects=False).status_code == 303


def test_every_page_forbids_inline_script(browser: httpx.Client) -> None:
    for path in PAGES[:-1]:
        r = browser.get(path)
        assert r.status_code == 200, (path, r.text[:300])
        assert r.headers["content-security-policy"] == CSP
        assert "unsafe-inline" not in CSP and "default-src 'self'" in CSP
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        scripts = re.findall(r"<script[^>]*>", r.text)
        assert scripts == ['<script src="/ui/static/ui.js" defer>'], (path, scripts)
        assert not re.search(r"\s(style|on[a-z]+)=", r.text), path


# -- escaping ----------------------------------------------------------------------------------


def test_markup_in_a_result_is_escaped_and_the_whole_value_is_plain_text(
    api: httpx.Client, browser: httpx.Client
) -> None:
    markup = "<script>alert('x')</script><img src=x onerror=alert(2)>" + "y" * 3000
    job_id = submit(api, "t.echo", markup)
    wait_state(api, job_id, "succeeded")
    page = browser.get(f"/ui/jobs/{job_id}").text
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert "more characters not shown" in page  # cut, with a link to all of it
    whole = browser.get(f"/ui/jobs/{job_id}/value/result")
    assert whole.headers["content-type"].startswith("text/plain")
    assert whole.headers["x-content-type-options"] == "nosniff"
    assert markup in whole.text


# -- CSRF on the buttons -----------------------------------------------------------------------


def test_cancel_needs_the_sessions_csrf_token(api: httpx.Client, browser: httpx.Client) -> None:
    job_id = submit(api, "t.ui_park", 1)
    page = browser.get(f"/ui/jobs/{job_id}").text
    assert "Cancel…" in page
    refused = browser.post(f"/ui/jobs/{job_id}/cancel", data={"csrf": "0" * 64})
    assert refused.status_code == 403
    assert browser.post(f"/ui/jobs/{job_id}/cancel").status_code == 403
    assert state_of(api, job_id) == "queued"
    done = browser.post(f"/ui/jobs/{job_id}/cancel", data={"csrf": csrf_of(page)})
    assert done.status_code == 200 and done.url.path == f"/ui/jobs/{job_id}"
    assert "The job was canceled." in done.text
    assert state_of(api, job_id) == "canceled"
    again = browser.post(f"/ui/jobs/{job_id}/cancel", data={"csrf": csrf_of(page)})
    assert "nothing to cancel" in again.text


def test_retry_from_the_dashboard_is_a_new_linked_job(
    api: httpx.Client, browser: httpx.Client
) -> None:
    job_id = submit(api, "t.ui_fail", "boom <b>")
    wait_state(api, job_id, "failed")
    page = browser.get(f"/ui/jobs/{job_id}").text
    assert "ValueError" in page and "boom &lt;b&gt;" in page
    r = browser.post(f"/ui/jobs/{job_id}/retry", data={"csrf": csrf_of(page)})
    new_id = r.url.path.rsplit("/", 1)[1]
    assert new_id != job_id and f'href="/ui/jobs/{job_id}"' in r.text
    assert f'id="retried-as" href="/ui/jobs/{new_id}"' in browser.get(f"/ui/jobs/{job_id}").text


# -- listing -----------------------------------------------------------------------------------


def test_the_jobs_list_filters_by_time_range(api: httpx.Client, browser: httpx.Client) -> None:
    before = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 120))
    ids = [submit(api, "t.ui_park", i) for i in range(3)]
    recent = browser.get("/ui/jobs", params={"task": "t.ui_park", "since": "1m"}).text
    assert all(f'data-job="{i}"' in recent for i in ids)
    old = browser.get("/ui/jobs", params={"task": "t.ui_park", "until": before}).text
    assert not any(f'data-job="{i}"' in old for i in ids)
    paged = browser.get("/ui/jobs", params={"task": "t.ui_park", "since": "1m"}).text
    assert recent.index(ids[2]) < recent.index(ids[0]) and ids[0] in paged  # newest first
    bad = browser.get("/ui/jobs", params={"since": "yesterday"})
    assert bad.status_code == 422 and "neither a duration" in bad.text
    assert browser.get("/ui/jobs", params={"state": "lost"}).status_code == 422
    api.post("/jobs/cancel", params={"task": "t.ui_park"})


# -- bulk actions ------------------------------------------------------------------------------


def test_bulk_cancel_of_a_tasks_queued_jobs(api: httpx.Client) -> None:
    ids = [submit(api, "t.ui_park", i) for i in range(4)]
    first = api.post("/jobs/cancel", params={"task": "t.ui_park", "limit": 1}).json()
    assert first["touched"] == 1 and first["more"] is True and first["ids"] == [ids[-1]]
    rest = api.post("/jobs/cancel", params={"task": "t.ui_park"}).json()
    assert set(ids[:-1]) <= set(rest["ids"]) and rest["more"] is False
    assert rest["filters"] == {"state": "queued", "task": "t.ui_park"}
    assert {state_of(api, i) for i in ids} == {"canceled"}
    assert api.post("/jobs/cancel", params={"task": "t.ui_park"}).json()["touched"] == 0
    by_profile = [submit(api, "t.ui_park", 9)]
    assert api.post("/jobs/cancel", params={"profile": "parked"}).json()["ids"] == by_profile


def test_bulk_retry_of_a_tasks_failed_jobs_runs_each_once(api: httpx.Client) -> None:
    ids = [submit(api, "t.ui_fail", f"bulk {i}") for i in range(2)]
    for job_id in ids:
        wait_state(api, job_id, "failed")
    r = api.post("/jobs/retry", params={"state": "failed", "task": "t.ui_fail"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(ids) <= set(body["ids"]) and len(body["new_ids"]) == len(body["ids"])
    again = api.post("/jobs/retry", params={"state": "failed", "task": "t.ui_fail"}).json()
    assert not set(ids) & set(again["ids"]) and again["skipped"] >= 2  # retried before


def test_bulk_actions_need_a_filter_and_a_known_state(api: httpx.Client) -> None:
    r = api.post("/jobs/cancel")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "task"]
    assert api.post("/jobs/retry", params={"task": "t.ui_fail"}).status_code == 422
    assert api.post("/jobs/retry", params={"state": "queued", "task": "x"}).status_code == 422
    assert api.post("/jobs/cancel", params={"task": "x", "limit": 1001}).status_code == 422


def test_bulk_buttons_of_the_dashboard(api: httpx.Client, browser: httpx.Client) -> None:
    ids = [submit(api, "t.ui_park", i) for i in range(2)]
    page = browser.get("/ui/jobs", params={"task": "t.ui_park"}).text
    assert "Cancel the queued jobs…" in page
    assert browser.post("/ui/bulk/cancel", data={"task": "t.ui_park"}).status_code == 403
    r = browser.post("/ui/bulk/cancel", data={"csrf": csrf_of(page), "task": "t.ui_park"})
    assert r.status_code == 200 and "Canceled 2 queued jobs." in r.text
    assert {state_of(api, i) for i in ids} == {"canceled"}
