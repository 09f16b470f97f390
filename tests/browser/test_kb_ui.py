"""The knowledge base UI in real Chromium: search, filters, highlighting, incident pages, escaping, bad input."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from playwright.async_api import Page

from knowledge.text_vectors import tokens
from tests.browser.conftest import ARTIFACTS, KbSite

pytestmark = pytest.mark.browser

SCREENSHOT = ARTIFACTS / "kb-search.png"


async def _search(page: Page, site: KbSite, query: str, *, type: str | None = None) -> None:
    """Open the search page, type the query (and choose a type), press Search, wait for the results page."""
    await page.goto(f"{site.base_url}/ui")
    await page.fill("#q", query)
    if type is not None:
        await page.select_option("#type", type)
    async with page.expect_navigation():
        await page.click("#search")


async def test_searching_an_alert_name_finds_its_runbook_first_with_the_term_marked(
    page: Page, kb_site: KbSite
) -> None:
    await page.goto(f"{kb_site.base_url}/ui")
    assert await page.locator("#hint").is_visible()
    await page.fill("#q", "DiskFull")
    async with page.expect_navigation() as navigation:
        await page.click("#search")
    response = await navigation.value
    assert response is not None and response.status == 200
    assert "q=DiskFull" in page.url

    results = page.locator(".result")
    assert await results.count() >= 2
    first = results.first
    assert (await first.get_attribute("data-source") or "").endswith("/deploy/demo/runbooks/disk-full.md")
    assert await first.get_attribute("data-type") == "runbook"
    marks = first.locator(".snippet mark")
    assert await marks.count() >= 1
    marked = await marks.all_inner_texts()
    assert all(set(tokens(text)) & set(tokens("DiskFull")) for text in marked), marked
    assert await first.locator(".badge.type").text_content() == "runbook"
    score = await first.locator(".score").inner_text()
    assert score.startswith("score ") and len(score.split(".")[-1]) == 3, score
    assert await page.locator("ol#results > li.result").count() == await results.count()

    similar = page.locator(".incident")
    assert await similar.count() >= 1
    assert await similar.first.locator("a").inner_text() == kb_site.incident_title
    assert "remediated" in (await similar.first.text_content() or "")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.is_file() and SCREENSHOT.stat().st_size > 0
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot of the search results: {SCREENSHOT}")


async def test_the_incident_type_filter_leaves_no_runbook(page: Page, kb_site: KbSite) -> None:
    await _search(page, kb_site, "DiskFull", type="incident")
    assert "type=incident" in page.url
    results = page.locator(".result")
    assert await results.count() >= 1
    assert set(await results.evaluate_all("rs => rs.map(r => r.dataset.type)")) == {"incident"}
    sources = await results.evaluate_all("rs => rs.map(r => r.dataset.source)")
    assert all(not s.endswith(".md") for s in sources), sources
    assert await page.locator("#type").input_value() == "incident"


async def test_a_filter_that_matches_nothing_says_so(page: Page, kb_site: KbSite) -> None:
    query = urlencode({"q": "DiskFull", "service": "no-such-service"})
    response = await page.goto(f"{kb_site.base_url}/ui?{query}")
    assert response is not None and response.status == 200
    assert await page.locator(".result").count() == 0
    assert "Nothing found" in await page.locator("#nothing-found").inner_text()


async def test_a_similar_incident_opens_its_page_with_the_timeline_in_order(page: Page, kb_site: KbSite) -> None:
    await _search(page, kb_site, "DiskFull")
    link = page.locator(f'.incident[data-incident-id="{kb_site.incident_id}"] a')
    async with page.expect_navigation() as navigation:
        await link.click()
    response = await navigation.value
    assert response is not None and response.status == 200
    assert page.url == f"{kb_site.base_url}/ui/incidents/{kb_site.incident_id}"
    assert await page.locator("h1").inner_text() == kb_site.incident_title
    assert (await page.locator("#state").text_content() or "").strip() == "CLOSED"
    assert await page.locator("#timeline li .summary").all_inner_texts() == kb_site.timeline
    times = await page.locator("#timeline li time").evaluate_all("ts => ts.map(t => t.dateTime)")
    assert times == sorted(times) and len(times) == len(kb_site.timeline)
    assert "clear_disk" in await page.locator("#actions").inner_text()
    assert "remediated" in (await page.locator("#outcome").text_content() or "")
    assert "transition" in await page.locator("#audit").inner_text()


async def test_an_unknown_incident_is_a_404_page(page: Page, kb_site: KbSite) -> None:
    response = await page.goto(f"{kb_site.base_url}/ui/incidents/no-such-incident")
    assert response is not None and response.status == 404
    assert "no-such-incident" in await page.locator("#error").inner_text()


async def test_a_query_with_markup_is_shown_escaped(page: Page, kb_site: KbSite) -> None:
    query = '<script>window.injected = 1</script><img src=x onerror="window.injected = 2"> DiskFull'
    await _search(page, kb_site, query)
    assert await page.locator("script").count() == 0
    assert await page.locator("main img").count() == 0
    assert await page.evaluate("window.injected") is None
    assert await page.locator("#q").input_value() == query
    assert query in await page.locator("#results-heading").inner_text()


async def test_a_bad_k_is_a_422_page_with_the_reason(page: Page, kb_site: KbSite) -> None:
    response = await page.goto(f"{kb_site.base_url}/ui?{urlencode({'q': 'DiskFull', 'k': '500'})}")
    assert response is not None and response.status == 422
    error = await page.locator("#error").inner_text()
    assert "k must be a whole number from 1 to 50" in error and "500" in error
    assert await page.locator(".result").count() == 0
    assert await page.locator("#q").input_value() == "DiskFull"


async def test_a_failing_knowledge_base_is_a_503_page_with_a_banner(page: Page, broken_site: str) -> None:
    response = await page.goto(f"{broken_site}/ui?q=DiskFull")
    assert response is not None and response.status == 503
    assert "the knowledge base is unavailable" in await page.locator("#error").inner_text()
    incident = await page.goto(f"{broken_site}/ui/incidents/anything")
    assert incident is not None and incident.status == 404
    assert "no incident store is configured" in await page.locator("#error").inner_text()
