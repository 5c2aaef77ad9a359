"""Every built page opened in headless Chromium (Debian's chromium and chromium-driver,
driven by Selenium): the page loads, every image loads, every equation is typeset by
MathJax, no error output is shown, and the notebook in the download menu loads. A
full-page screenshot of each is saved under _build/screenshots/. On the pages with an
animation of a mechanism (cnn.animations), the player's controls are there and its
frames change."""

import json
import time
import urllib.request

import pytest
from conftest import ROOT, toc_pages
from selenium.webdriver.common.by import By

SCREENSHOTS = ROOT / "_build" / "screenshots"


PAGE_STATE = """
const done = arguments[arguments.length - 1];
const ready =
  (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
const errorOutput = 'div.output.traceback, div.output.stderr, div.output.error';
ready.then(() => {
  const images = [...document.images];
  const math = [...document.querySelectorAll('.math')];
  const cells = [...document.querySelectorAll('div.cell')];
  done({
    title: document.title,
    mathjax: !!window.MathJax,
    brokenImages: images.filter(i => !(i.complete && i.naturalWidth > 0))
                        .map(i => i.getAttribute('src')),
    images: images.length,
    math: math.length,
    untypeset: math.filter(m => !m.querySelector('mjx-container'))
                   .map(m => m.textContent.slice(0, 80)),
    mathErrors: document.querySelectorAll('mjx-merror').length,
    errorOutputs: cells.flatMap(c => [...c.querySelectorAll(errorOutput)])
                       .map(o => o.textContent.slice(0, 200)),
    height: document.body.scrollHeight,
    notebook: [...document.querySelectorAll('a')].map(a => a.href)
                .find(href => href.endsWith('.ipynb')) || null,
  });
}).catch(e => done({error: String(e)}));
"""


@pytest.mark.parametrize("page", toc_pages())
def test_page_in_browser(server, browser, page):
    browser.get(f"{server}/{page}.html")
    state = browser.execute_async_script(PAGE_STATE)
    assert "error" not in state, state
    assert state["title"] and "404" not in state["title"], (
        f"{page} did not load: {state['title']}"
    )
    assert not state["brokenImages"], (
        f"{page}: images that did not load: {state['brokenImages']}"
    )
    if state["math"]:
        assert state["mathjax"], f"{page}: has equations but MathJax did not load"
        assert not state["untypeset"], (
            f"{page}: equations left as TeX: {state['untypeset'][:3]}"
        )
    assert state["mathErrors"] == 0, f"{page}: {state['mathErrors']} MathJax errors"
    assert not state["errorOutputs"], (
        f"{page}: error outputs: {state['errorOutputs'][:3]}"
    )
    assert state["notebook"], f"{page}: the download menu offers no notebook"
    with urllib.request.urlopen(state["notebook"]) as download:
        notebook = json.load(download)
    assert notebook["nbformat"] == 4 and notebook["cells"], (
        f"{page}: {state['notebook']} is not a notebook"
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(1280, min(max(state["height"], 800), 16000))
    browser.save_screenshot(str(SCREENSHOTS / f"{page}.png"))
    browser.set_window_size(1280, 1000)


# What scrolls sideways or overflows the text column, with every hidden cell opened (a
# reader may open it): code and output blocks wider than their box, and images wider
# than the article's text.
OVERFLOW = """
document.querySelectorAll('details').forEach(d => { d.open = true; });
const article = document.querySelector('article');
const right = article.getBoundingClientRect().right
              - parseFloat(getComputedStyle(article).paddingRight);
const longest = b => b.textContent.split('\\n')
                      .reduce((a, l) => (l.length > a.length ? l : a), '');
const shown = [...article.querySelectorAll('pre')].filter(b => b.offsetParent !== null);
const outputs = shown.filter(b => b.closest('div.cell_output'));
// Outputs wrap long lines (book/_static/code.css); measure them as if they did not,
// and keep the lines laid out in columns (three spaces in a row): a table must fit.
outputs.forEach(b => { b.style.whiteSpace = 'pre'; b.style.overflowWrap = 'normal'; });
const result = {
  scrolling: shown.filter(b => !b.closest('div.cell_output'))
    .filter(b => b.scrollWidth > b.clientWidth + 1)
    .map(b => longest(b).slice(0, 120)),
  wideTables: outputs.filter(b => b.scrollWidth > b.clientWidth + 1)
    .flatMap(b => b.textContent.split('\\n'))
    .filter(l => l.length > 88 && /\\S {3,}\\S/.test(l))
    .map(l => l.slice(0, 120)),
  wideImages: [...article.querySelectorAll('img')]
    .filter(i => i.getBoundingClientRect().right > right + 1)
    .map(i => i.getAttribute('src')),
};
outputs.forEach(b => { b.style.whiteSpace = ''; b.style.overflowWrap = ''; });
return result;
"""


@pytest.mark.parametrize("page", toc_pages())
def test_nothing_scrolls_sideways(server, browser, page):
    """At a 1280-pixel window no code block scrolls sideways, no output laid out in
    columns is wider than the text, and no figure is (code is formatted to 88 columns,
    which fit at 12 px: book/_static/code.css; other long output lines wrap)."""
    browser.set_window_size(1280, 1000)
    browser.get(f"{server}/{page}.html")
    state = browser.execute_script(OVERFLOW)
    assert not state["scrolling"], (
        f"{page}: {len(state['scrolling'])} block(s) scroll sideways at 1280 px; their "
        f"longest lines: {state['scrolling'][:5]}"
    )
    assert not state["wideTables"], (
        f"{page}: output laid out in columns wider than 88 characters: "
        f"{state['wideTables'][:5]}"
    )
    assert not state["wideImages"], (
        f"{page}: images wider than the text: {state['wideImages']}"
    )


# The chapters that show an animation of a mechanism, drawn by cnn.animations with
# matplotlib's JavaScript player (all frames embedded in the page, so it plays offline).
ANIMATED_PAGES = ["convolution", "pooling", "conv_layer", "backprop_conv"]
PLAYER_BUTTONS = (
    "First frame",
    "Previous frame",
    "Play",
    "Pause",
    "Next frame",
    "Last frame",
)

ANIMATION_STATE = """
return [...document.querySelectorAll('div.animation')].map(a => {
  const img = a.querySelector('img'), slider = a.querySelector('input.anim-slider');
  return {
    src: img ? img.src : '',
    loaded: !!img && img.complete && img.naturalWidth > 0,
    width: img ? img.getBoundingClientRect().width : 0,
    // set by the player's script once it has its frames
    frames: slider ? Number(slider.max) + 1 : 0,
    frame: slider ? Number(slider.value) : -1,
    buttons: Object.fromEntries([...a.querySelectorAll('button')].map(b => {
      const glyph = b.querySelector('span, i');
      return [b.title, {shown: b.getBoundingClientRect().width > 0,
                        glyph: glyph ? glyph.textContent.trim() : '',
                        glyphWidth: glyph ? glyph.getBoundingClientRect().width : 0}];
    })),
  };
});
"""


def _wait_for(browser, condition, timeout, what):
    """Poll ``condition(state)`` on the page's animations; return the state, or fail
    saying ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        state = browser.execute_script(ANIMATION_STATE)
        if condition(state):
            return state
        if time.monotonic() > deadline:
            shown = [{k: v for k, v in a.items() if k != "src"} for a in state]
            pytest.fail(f"{what}; the animations' state: {shown}")
        time.sleep(0.1)


def _press(browser, animation, title):
    button = animation.find_element(By.CSS_SELECTOR, f'button[title="{title}"]')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    button.click()


@pytest.mark.parametrize("page", ANIMATED_PAGES)
def test_animation_plays(server, browser, page):
    """The player is there with visible buttons, stepping shows the next frame, and Play
    runs it."""
    browser.get(f"{server}/{page}.html")
    state = _wait_for(
        browser,
        lambda s: (
            s and all(a["frames"] > 2 and a["loaded"] and a["width"] > 100 for a in s)
        ),
        20,
        f"{page}: no animation, or its player never loaded its frames",
    )
    for index, animation in enumerate(
        browser.find_elements(By.CSS_SELECTOR, "div.animation")
    ):
        buttons = state[index]["buttons"]
        for title in PLAYER_BUTTONS:
            assert title in buttons, f"{page}: the animation has no {title!r} button"
            # A visible glyph: an icon from a web font that did not load (offline) would
            # be empty.
            assert (
                buttons[title]["shown"]
                and buttons[title]["glyph"]
                and buttons[title]["glyphWidth"] > 2
            ), f"{page}: the {title!r} button shows nothing: {buttons[title]}"
        frames, first = state[index]["frames"], state[index]["src"]
        assert state[index]["frame"] == 0, (
            f"{page}: the animation does not start on its first frame"
        )

        _press(browser, animation, "Next frame")
        state = _wait_for(
            browser,
            lambda s: s[index]["frame"] == 1 and s[index]["loaded"],
            5,
            f"{page}: 'Next frame' did not move to frame 2",
        )
        assert state[index]["src"] != first, (
            f"{page}: 'Next frame' left the same picture on screen"
        )
        second = state[index]["src"]

        _press(browser, animation, "Play")
        state = _wait_for(
            browser,
            lambda s: s[index]["frame"] >= 3 and s[index]["loaded"],
            20,
            f"{page}: 'Play' did not advance the animation",
        )
        assert state[index]["src"] not in (first, second), (
            f"{page}: playing did not change the picture"
        )
        _press(browser, animation, "Pause")

        _press(browser, animation, "Last frame")
        state = _wait_for(
            browser,
            lambda s: s[index]["frame"] == frames - 1 and s[index]["loaded"],
            5,
            f"{page}: 'Last frame' did not show the last of {frames} frames",
        )
        assert state[index]["src"] not in (first, second)


def test_equations_are_typeset_on_a_page_that_has_them(server, browser):
    """MathJax renders the equations (the book's own copy after `make book`): counted on
    a page with many, so that a book whose equations all stay raw TeX cannot pass."""
    browser.get(f"{server}/backprop_conv.html")
    state = browser.execute_async_script(PAGE_STATE)
    rendered = browser.execute_script(
        "return document.querySelectorAll('.math mjx-container').length;"
    )
    assert state["math"] >= 10, f"only {state['math']} equations on the page"
    assert rendered == state["math"], f"{rendered} of {state['math']} equations typeset"
    source = browser.execute_script(
        "return [...document.scripts].map(s => s.src)"
        ".find(s => s.includes('tex-chtml'));"
    )
    assert source and source.startswith(server), (
        f"MathJax not served by the book: {source}"
    )
