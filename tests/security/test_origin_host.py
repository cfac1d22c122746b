"""Cross-site WebSocket hijacking, forged uploads and DNS rebinding, against `persona serve`.

The attacks of the hardening issue, replayed with a real client against the real server:
a page on another origin (or a sandboxed iframe, `Origin: null`) opening the chat socket or
posting a card, a rebinding page (`Host: evil.example`), a cross-site `<img>` read. Each is
refused before any handler runs; the served origin and non-browser clients keep working.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from server_harness import TIMEOUT, make_service, running, warm_up_interpreter

CARD = b'{"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Planted", "description": "x"}}'


@pytest.fixture(scope="module", autouse=True)
def _warm():
    warm_up_interpreter()


@pytest.fixture
def service(tmp_path):
    made = make_service(personas_dir=str(tmp_path / "personas"), recordings_dir=str(tmp_path / "rec"))
    yield made
    made.pool.shutdown(wait=True)


async def _ws_status(session: aiohttp.ClientSession, url: str, **headers: str) -> int:
    """101 when the handshake is accepted, else the HTTP status of the refusal."""
    try:
        async with session.ws_connect(url, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=TIMEOUT)) as ws:
            await ws.close()
            return 101
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


async def _upload(session: aiohttp.ClientSession, url: str, **headers: str) -> int:
    form = aiohttp.FormData()
    form.add_field("card", CARD, filename="planted.json", content_type="application/json")
    async with session.post(url, data=form, headers=headers) as response:
        return response.status


async def test_foreign_and_null_origins_cannot_open_the_socket_or_upload(service):
    async with running(service) as server, aiohttp.ClientSession() as http:
        ws_url, cards = server.ws_url, f"{server.http_url}/persona/personas"
        assert await _ws_status(http, ws_url, Origin="https://evil.example") == 403
        assert await _ws_status(http, ws_url, Origin="null") == 403
        assert await _ws_status(http, ws_url, Origin=f"http://localhost:{server.port + 1}") == 403  # same host, other port
        assert await _upload(http, cards, Origin="https://evil.example") == 403
        assert await _upload(http, cards, Origin="null") == 403
        assert "planted" not in service.library.ids()
        # The served origin, under either loopback name, and clients that send no Origin.
        assert await _ws_status(http, ws_url, Origin=server.http_url) == 101
        assert await _ws_status(http, ws_url.replace("127.0.0.1", "localhost"),
                                Origin=f"http://localhost:{server.port}") == 101
        assert await _ws_status(http, ws_url) == 101
        assert await _upload(http, cards, Origin=server.http_url) == 201


async def test_dns_rebinding_host_is_refused_everywhere(service):
    async with running(service) as server, aiohttp.ClientSession() as http:
        evil = {"Host": f"evil.example:{server.port}"}
        assert await _ws_status(http, server.ws_url, Origin=f"http://evil.example:{server.port}", **evil) == 421
        for path in ("/", "/persona/personas", "/persona/health", "/persona/static/app.js"):
            async with http.get(server.http_url + path, headers=evil) as response:
                assert response.status == 421, path
        assert await _upload(http, f"{server.http_url}/persona/personas", **evil) == 421


async def test_a_listed_origin_and_host_are_accepted(tmp_path):
    service = make_service(allowed_origins=["https://app.example.com"], allowed_hosts=["persona.lan"],
                           personas_dir=str(tmp_path / "personas"))
    try:
        async with running(service) as server, aiohttp.ClientSession() as http:
            assert await _ws_status(http, server.ws_url, Origin="https://app.example.com") == 101
            assert await _ws_status(http, server.ws_url, Host=f"persona.lan:{server.port}",
                                    Origin=f"http://persona.lan:{server.port}") == 101
            assert await _ws_status(http, server.ws_url, Origin="https://other.example.com") == 403
    finally:
        service.pool.shutdown(wait=True)


async def test_cross_site_reads_are_refused(service):
    """An <img> or <video> on another site sends no Origin, but Chromium sends Sec-Fetch-Site."""
    async with running(service) as server, aiohttp.ClientSession() as http:
        portrait = f"{server.http_url}/persona/personas/mira/portrait.png"
        for site, status in (("cross-site", 403), ("same-site", 403), ("same-origin", 200), ("none", 200)):
            async with http.get(portrait, headers={"Sec-Fetch-Site": site}) as response:
                assert response.status == status, site


async def test_a_token_protected_server_guards_its_data_too(tmp_path):
    service = make_service(token="s3cret", personas_dir=str(tmp_path / "personas"))
    try:
        async with running(service) as server, aiohttp.ClientSession() as http:
            for path in ("/persona/personas", "/persona/personas/mira/portrait.png", "/metrics", "/persona/metrics"):
                async with http.get(server.http_url + path) as response:
                    assert response.status == 401, path
                async with http.get(server.http_url + path, headers={"Authorization": "Bearer s3cret"}) as response:
                    assert response.status == 200, path
            async with http.get(server.http_url + "/persona/personas?token=s3cret") as response:
                assert response.status == 200
            assert await _upload(http, f"{server.http_url}/persona/personas") == 401
            async with http.get(server.http_url + "/health") as response:  # liveness stays open
                assert response.status == 200
    finally:
        service.pool.shutdown(wait=True)


async def test_every_answer_carries_the_security_headers(service):
    async with running(service) as server, aiohttp.ClientSession() as http:
        for path in ("/", "/persona/", "/persona/static/app.js", "/persona/personas", "/persona/health",
                     "/persona/nothing-here", "/persona/static/../service.py"):
            async with http.get(server.http_url + path) as response:
                assert response.headers.get("X-Content-Type-Options") == "nosniff", path
                assert response.headers.get("X-Frame-Options") == "DENY", path
                assert response.headers.get("Referrer-Policy") == "no-referrer", path
        async with http.get(server.http_url + "/") as page:
            csp = page.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
        async with http.get(server.http_url + "/persona/static/service.py") as response:
            assert response.status == 404  # only the page's own files, by name


async def test_the_page_works_under_its_csp_with_no_violation(service, tmp_path):
    """The chat page in Chromium under its own CSP: it connects and streams, and Chromium
    reports no policy violation (an inline script or style would be one)."""
    from playwright.async_api import async_playwright, expect
    from test_browser_chat import ARGS, CHROMIUM

    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium")
    async with running(service) as server, async_playwright() as pw:
        browser = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.pages[0] if browser.pages else await browser.new_page()
            violations = []
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            await page.goto(server.http_url + "/", timeout=20000)
            await expect(page.locator("#connection")).to_have_attribute("data-state", "ready", timeout=20000)
            await expect(page.locator("#personas button").first).to_be_visible(timeout=10000)
            await asyncio.sleep(0.5)
            assert violations == []
        finally:
            await browser.close()
