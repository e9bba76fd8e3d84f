"""/docs and /redoc render in a real browser with every request off this machine
refused: their assets come from the installed package, not a CDN."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Stack
from tests.integration.test_api import ApiServer, start_api

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def docs_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    yield from start_api(stack.env, tmp_path_factory.mktemp("docs") / "api.log")


@pytest.fixture
def page(tmp_path: Path) -> Iterator[object]:
    if not os.path.exists(CHROMIUM):
        message = "no Chromium (apt-get install chromium: see .ci/run)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.outside = []  # type: ignore[attr-defined]

        def only_loopback(route) -> None:
            url = route.request.url
            if url.startswith(("http://127.0.0.1", "data:", "blob:")):
                route.continue_()
            else:
                page.outside.append(url)  # type: ignore[attr-defined]
                route.abort()

        context.route("**/*", only_loopback)
        yield page
        browser.close()


def test_swagger_ui_renders_every_operation_offline(docs_api, page, tmp_path):
    page.goto(docs_api.base_url + "/docs")
    page.wait_for_selector(".opblock", timeout=20_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/jobs/{job_id}" in [p.replace("\u200b", "") for p in paths]
    assert page.locator(".opblock").count() >= 10
    page.screenshot(path=str(tmp_path / "docs.png"))
    assert page.outside == []  # type: ignore[attr-defined]


def test_redoc_renders_offline(docs_api, page, tmp_path):
    page.goto(docs_api.base_url + "/redoc")
    operations = "[data-section-id^='operation/']"
    page.wait_for_selector(operations, timeout=20_000)
    assert page.locator(operations).count() >= 10
    page.screenshot(path=str(tmp_path / "redoc.png"))
    # Only ReDoc's "powered by" logo is not bundled: an image, refused, nothing missing.
    assert set(page.outside) <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"}  # type: ignore[attr-defined]
