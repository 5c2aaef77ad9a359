"""Every built page opened in headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium): the page loads, every image loads, every equation is typeset by MathJax, and no error output
is shown. A full-page screenshot of each is saved under _build/screenshots/."""
import functools
import http.server
import threading

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from conftest import HTML, ROOT, toc_pages

SCREENSHOTS = ROOT / "_build" / "screenshots"


@pytest.fixture(scope="module")
def server(html_dir):
    """Serve the built book on a free port of 127.0.0.1."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html_dir))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


PAGE_STATE = """
const done = arguments[arguments.length - 1];
const ready = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
ready.then(() => {
  const images = [...document.images];
  const math = [...document.querySelectorAll('.math')];
  const cells = [...document.querySelectorAll('div.cell')];
  done({
    title: document.title,
    mathjax: !!window.MathJax,
    brokenImages: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
    images: images.length,
    math: math.length,
    untypeset: math.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 80)),
    mathErrors: document.querySelectorAll('mjx-merror').length,
    errorOutputs: cells.flatMap(c => [...c.querySelectorAll('div.output.traceback, div.output.stderr, div.output.error')])
                       .map(o => o.textContent.slice(0, 200)),
    height: document.body.scrollHeight,
  });
}).catch(e => done({error: String(e)}));
"""


@pytest.mark.parametrize("page", toc_pages())
def test_page_in_browser(server, browser, page):
    browser.get(f"{server}/{page}.html")
    state = browser.execute_async_script(PAGE_STATE)
    assert "error" not in state, state
    assert state["title"] and "404" not in state["title"], f"{page} did not load: {state['title']}"
    assert not state["brokenImages"], f"{page}: images that did not load: {state['brokenImages']}"
    if state["math"]:
        assert state["mathjax"], f"{page}: has equations but MathJax did not load"
        assert not state["untypeset"], f"{page}: equations left as TeX: {state['untypeset'][:3]}"
    assert state["mathErrors"] == 0, f"{page}: {state['mathErrors']} MathJax errors"
    assert not state["errorOutputs"], f"{page}: error outputs: {state['errorOutputs'][:3]}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(1280, min(max(state["height"], 800), 16000))
    browser.save_screenshot(str(SCREENSHOTS / f"{page}.png"))
    browser.set_window_size(1280, 1000)
