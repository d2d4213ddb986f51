"""End to end privacy and isolation (issue 7): a real ``streamlit run`` server (the project's
``.streamlit/config.toml``, cwd = the checkout, as the README's run command) and two headless
Chromium pages -- two people -- recording through the real microphone and camera widgets and
fine-pruning at the same time.

Fails on
- any request either page makes to a host other than localhost (every request and WebSocket is
  recorded; non-local ones are also blocked so the test cannot hang on them), a favicon or font
  that is not local (Streamlit 1.67 fetches a ``:material/...:`` page icon from fonts.gstatic.com);
- any outbound connection or DNS lookup by the server (a Python audit hook in the server process
  logs ``socket.connect`` / ``socket.getaddrinfo``), and any file the server writes while the
  pages are used (same hook, plus snapshots of the server's ``$HOME`` and ``$TMPDIR``);
- one page seeing the other's recordings, or an exception on a page.

Uses Debian's /usr/bin/chromium (never ``playwright install``); skipped cleanly without it.
"""
from __future__ import annotations

import getpass
import json
import os
import re
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

import app_fixtures as fx
from bad_inputs import demo_voices, spoken_digit, wav_bytes

ROOT = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]  # audit_hook.py, for the server's child process
assert (TESTS / "audit_hook.py").exists() and (ROOT / "app.py").exists(), TESTS
CHROMIUM = "/usr/bin/chromium"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed at /usr/bin/chromium"),
]

# The server, with an audit hook installed before Streamlit is imported. Events go to a JSON-lines
# log through a handle opened first (writing to it raises no audit event).
SERVER = r'''
import json, os, sys, time
sys.path.insert(0, os.environ["AUDIT_HOOK_DIR"])
from audit_hook import install
sys.path.pop(0)  # the app must not see the tests folder
log = open(os.environ["AUDIT_LOG"], "a", buffering=1)

def emit(kind, target):
    log.write(json.dumps({"t": time.time(), "kind": kind, "target": target}) + "\n")

install(emit, local_hosts={"127.0.0.1", "localhost", "::1", "0.0.0.0", "::", None, ""})  # binding counts as local
open(os.path.join(os.environ["AUDIT_LOG"] + ".canary"), "w").close()  # proves the hook logs (before the session)
sys.argv = ["streamlit", *sys.argv[1:]]
from streamlit.web.cli import main
main()
'''


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("privacy_e2e")
    models = work / "models"
    models.mkdir()
    fx.make_voice_bundle(models / "voice.pt")
    fx.make_face_bundle(models / "face.pt")
    demo_voices(models / "demo")
    home, tmp = work / "home", work / "tmp"
    home.mkdir()
    tmp.mkdir()
    audit = work / "audit.jsonl"
    inherited = ("FINEPRUNE_", "STREAMLIT_", "TORCHINDUCTOR_")  # torch puts its cache dir into os.environ
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    env.update(
        PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", HOME=str(home), TMPDIR=str(tmp), AUDIT_LOG=str(audit),
        AUDIT_HOOK_DIR=str(TESTS),
        FINEPRUNE_STUDIO_MODELS=f"voice={models / 'voice.pt'};face={models / 'face.pt'}",
        FINEPRUNE_STUDIO_DEMO_ROOT=str(models / "demo"),
    )
    command = [sys.executable, "-c", SERVER, "run", str(ROOT / "app.py")]  # headless etc. from .streamlit/config.toml
    with fx.streamlit_server(command, env=env, log_path=work / "server.log") as (url, proc):
        yield {"url": url, "work": work, "audit": audit, "home": home, "tmp": tmp, "log": work / "server.log", "proc": proc}


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    media = server["work"]
    mic = media / "mic.wav"
    mic.write_bytes(wav_bytes(np.concatenate([spoken_digit(48000, pad=0.3), np.zeros(48000)]), 48000))  # looped
    camera = fx.write_y4m(media / "camera.y4m", fx.face_scene("happy"), frames=10)
    args = BROWSER_FLAGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                            f"--use-file-for-fake-audio-capture={mic}", f"--use-file-for-fake-video-capture={camera}"]
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=args)
        yield chromium
        chromium.close()


class Person:
    """One browser context (its own cookies and Streamlit session) with every request recorded."""

    def __init__(self, browser, url: str):
        self.url = url
        self.requests: list[str] = []
        self.context = browser.new_context(viewport={"width": 1300, "height": 950})
        self.context.on("request", lambda request: self.requests.append(request.url))
        self.context.route("**/*", self._only_local)
        self.page = self.context.new_page()
        self.page.on("websocket", lambda ws: self.requests.append(ws.url))

    @staticmethod
    def _only_local(route):
        host = urlparse(route.request.url).hostname
        if urlparse(route.request.url).scheme in ("http", "https", "ws", "wss") and host not in LOCAL_HOSTS:
            route.abort()  # recorded by the "request" listener, and the test fails on it
        else:
            route.continue_()

    def open(self, page_name: str, heading: str) -> None:
        nav = self.page.locator("[data-testid='stSidebarNav']")
        if nav.count():
            nav.get_by_text(page_name).first.click(timeout=90_000)  # client-side: the session stays
        else:
            self.page.goto(self.url + ("/" + page_name.lower() if page_name != "Home" else ""))
        self.page.get_by_role("heading", name=re.compile(heading)).first.wait_for(timeout=120_000)
        self.settle()

    def settle(self, timeout: float = 150_000) -> None:  # generous: shared runners can be very busy
        try:
            self.page.wait_for_function(
                "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
                " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
                timeout=timeout,
            )
        except Exception:  # keep what the page showed, to see why (test-artifacts/ is git-ignored)
            (ROOT / "test-artifacts").mkdir(exist_ok=True)
            self.page.screenshot(path=str(ROOT / "test-artifacts" / f"privacy_e2e_stuck_{id(self)}.png"))
            raise
        exceptions = self.page.locator("[data-testid='stException']")
        assert exceptions.count() == 0, exceptions.first.inner_text()

    def local_assets_only(self) -> None:
        """Favicon, fonts and every resource the document loaded come from this machine."""
        icon = self.page.evaluate("() => (document.querySelector(\"link[rel~='icon']\") || {}).href || ''")
        assert icon.startswith("data:") or urlparse(icon).hostname in LOCAL_HOSTS, f"favicon from {icon[:120]}"
        resources = self.page.evaluate("() => performance.getEntriesByType('resource').map(e => e.name)")
        font_sources = self.page.evaluate("""() => [...document.styleSheets].flatMap(sheet => {
            try { return [...sheet.cssRules].filter(r => r instanceof CSSFontFaceRule).map(r => r.style.getPropertyValue('src')) }
            catch (e) { return ['unreadable stylesheet ' + sheet.href] } })""")
        loaded_fonts = self.page.evaluate("() => [...document.fonts].filter(f => f.status === 'loaded').length")
        assert loaded_fonts > 0, "no font loaded: the check below would prove nothing"
        for url in resources + re.findall(r"url\(\"?([^\")]+)", " ".join(font_sources)):
            parsed = urlparse(url)
            assert parsed.scheme in ("data", "blob", "") or parsed.hostname in LOCAL_HOSTS, f"non-local asset {url[:150]}"


def record_digit(person: Person, attempts: int = 3) -> None:
    """Record through the real widget until a clip is in (a busy machine can start the fake
    microphone late, so a take may hold only silence: the page then says so, and we try again)."""
    page = person.page
    for _ in range(attempts):
        button = page.locator("[data-testid='stAudioInputActionButton']").first
        button.wait_for(timeout=90_000)
        button.click()
        page.wait_for_timeout(3000)
        page.locator("[data-testid='stAudioInputActionButton']").first.click()
        done = page.get_by_role("heading", name="Your clips (1)")
        try:
            done.wait_for(timeout=60_000)
            return
        except Exception:
            person.settle()
    done.wait_for(timeout=1000)


def take_photo(person: Person) -> None:
    take = person.page.get_by_role("button", name=re.compile("Take photo", re.I))
    take.wait_for(timeout=90_000)
    person.page.wait_for_timeout(1500)  # the fake camera needs a moment to deliver frames
    take.click()


def test_two_people_at_once_stay_apart_and_nothing_leaves_the_machine(server, browser):
    session_start = time.time()
    home_before, tmp_before = snapshot(server["home"]), snapshot(server["tmp"])
    alice, bob = Person(browser, server["url"]), Person(browser, server["url"])
    try:
        alice.open("Voice", "Your voice")
        bob.open("Face", "Your face")
        record_digit(alice)
        take_photo(bob)
        alice.page.get_by_role("heading", name="Your clips (1)").wait_for(timeout=120_000)
        bob.page.get_by_role("heading", name="Your photos (1)").wait_for(timeout=120_000)
        alice.settle()
        bob.settle()

        # neither sees the other's recording
        alice.open("Face", "Your face")
        alice.page.get_by_role("heading", name="Your photos (0)").wait_for(timeout=90_000)
        bob.open("Voice", "Your voice")
        bob.page.get_by_role("heading", name="Your clips (0)").wait_for(timeout=90_000)

        # both run the one-click demo at the same time
        for person in (alice, bob):
            person.open("Home", "Fine-Pruning Studio")
        for person in (alice, bob):
            person.page.get_by_role("button", name=re.compile("Run the demo")).click()
        for person in (alice, bob):
            person.page.get_by_text("Accuracy after").first.wait_for(timeout=120_000)
            person.settle()
            values = person.page.locator("[data-testid='stMetricValue']").all_inner_texts()
            assert values and values[0].strip().endswith("%"), values

        # still each one's own clips after both jobs ran
        alice.open("Voice", "Your voice")
        alice.page.get_by_role("heading", name="Your clips (1)").wait_for(timeout=90_000)
        bob.open("Face", "Your face")
        bob.page.get_by_role("heading", name="Your photos (1)").wait_for(timeout=90_000)

        for person in (alice, bob):
            for name, heading in (("Explore", "Explore"), ("Export", "Export"), ("Home", "Fine-Pruning Studio")):
                person.open(name, heading)
                person.local_assets_only()
    except Exception:  # keep what both pages showed (test-artifacts/ is git-ignored)
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        for name, person in (("alice", alice), ("bob", bob)):
            person.page.screenshot(path=str(ROOT / "test-artifacts" / f"privacy_e2e_failed_{name}.png"), full_page=True)
        raise
    finally:
        requests = alice.requests + bob.requests
        alice.context.close()
        bob.context.close()

    hosts = {urlparse(u).hostname for u in requests if urlparse(u).scheme in ("http", "https", "ws", "wss")}
    assert hosts and hosts <= LOCAL_HOSTS, f"requests left this machine: {sorted(hosts - LOCAL_HOSTS)}"

    time.sleep(1.0)  # let the server finish what the last page asked for
    events = [json.loads(line) for line in server["audit"].read_text().splitlines()]
    assert {"t": events[0]["t"], "kind": "write", "target": str(server["audit"]) + ".canary"} == events[0], \
        "the server's audit hook is not logging"
    outbound = [e for e in events if e["kind"] in ("connect", "dns")]
    assert outbound == [], f"the server reached out: {outbound}"
    torch_cache = str(server["tmp"] / f"torchinductor_{getpass.getuser()}")  # empty; see test_privacy.py
    written = [e for e in events if e["t"] >= session_start and e["kind"] not in ("connect", "dns")
               and not (e["kind"] == "os.mkdir" and e["target"] == torch_cache)]
    assert written == [], f"the server wrote files while the pages were used: {written[:10]}"
    home_after, tmp_after = snapshot(server["home"]), snapshot(server["tmp"])
    tmp_after.pop(Path(torch_cache).name, None)
    tmp_before.pop(Path(torch_cache).name, None)
    assert home_after == home_before and tmp_after == tmp_before
    assert "Traceback" not in server["log"].read_text()
