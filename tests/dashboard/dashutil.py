"""Helpers for the dashboard's browser tests (import as `from dashutil import ...`): headless
Chromium driven by selenium, waits that retry while the page re-renders, the clicks and typing a
user does, and screenshots that are saved and checked (not blank, the right size).

Screenshots go to USAGI_DASHBOARD_SHOTS if set, else to $TMPDIR/usagi-dashboard-shots (kept after
the run, overwritten by the next one, outside the repository).
"""
from __future__ import annotations

import io
import os
import shutil
import tempfile
import time

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WHY = ""
try:
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError as e:        # reported by the test modules as a skip
    WHY = f"needs selenium and Pillow ({e})"
if not (CHROMIUM and CHROMEDRIVER):
    WHY = "headless Chromium is not installed: apt-get install -y chromium chromium-driver"
AVAILABLE = not WHY

WIDTH, HEIGHT = 1400, 1000
HEADER_RGB = (0x17, 0x20, 0x2F)       # --header in style.css
PUBLISH_RGB = (0xE8, 0x59, 0x0C)      # the publish series (RATE_SERIES[0] in charts.js)
READY_RGB = (0x7C, 0x3A, 0xED)        # the ready series (QUEUED_SERIES[0])

SHOTS_DIR = os.environ.get("USAGI_DASHBOARD_SHOTS") or os.path.join(tempfile.gettempdir(), "usagi-dashboard-shots")

# counts the canvas pixels of one series colour (the lines are drawn opaque, 2 px wide)
CANVAS_PIXELS_JS = """
const [sel, r, g, b] = arguments;
const c = document.querySelector(sel);
if (!c || !c.width || !c.height) return -1;
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0;
for (let i = 0; i < d.length; i += 4)
  if (d[i + 3] > 200 && Math.abs(d[i] - r) < 24 && Math.abs(d[i + 1] - g) < 24 && Math.abs(d[i + 2] - b) < 24) n++;
return n;
"""


def new_browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--window-size={WIDTH},{HEIGHT}", "--force-device-scale-factor=1",
              "--hide-scrollbars", "--disable-extensions", "--no-first-run", "--lang=en-US"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(20)
    return driver


def wait(driver, cond, timeout=10.0, what="condition"):
    last = [None]

    def check(d):
        try:
            last[0] = cond(d)
        except Exception as e:  # stale elements while the page re-renders: try again
            last[0] = e
            return False
        return last[0]
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(check)
    except Exception:
        raise AssertionError(f"timed out waiting for {what} (last: {last[0]!r})") from None


def find(driver, css):
    return driver.find_element(By.CSS_SELECTOR, css)


def finds(driver, css) -> list:
    return driver.find_elements(By.CSS_SELECTOR, css)


def text(driver, css) -> str:
    return find(driver, css).text.strip()


def shown(driver, css) -> bool:
    els = finds(driver, css)
    return bool(els) and els[0].is_displayed()


def click(driver, css):
    """Click an element after scrolling it to the middle of the window (clear of the sticky header);
    found again if the page re-rendered it meanwhile (tables are redrawn at every refresh)."""
    def attempt(d):
        el = find(d, css)
        d.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
        el.click()
        return True
    wait(driver, attempt, what=f"{css} to click")


def type_into(driver, css, value: str, clear: bool = True):
    el = wait(driver, lambda d: find(d, css), what=f"{css} to type into")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
    if clear:
        el.clear()
    el.send_keys(value)
    return el


def choose(driver, css, value: str):
    """Pick an option of a <select> by its value (waiting for the option to be there)."""
    el = wait(driver, lambda d: find(d, css), what=f"{css} to choose from")
    wait(driver, lambda d: any(o.get_attribute("value") == value for o in Select(el).options),
         what=f"option {value!r} in {css}")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
    Select(el).select_by_value(value)


def confirm(driver, ok: bool = True):
    wait(driver, lambda d: find(d, "#modal").is_displayed(), what="the confirmation dialog")
    click(driver, "#confirm-ok" if ok else "#confirm-cancel")
    wait(driver, lambda d: not find(d, "#modal").is_displayed(), what="the dialog to close")


def result_of(driver, form_id, timeout=10.0) -> str:
    """The result line of a form once it says something (ok or error)."""
    return wait(driver, lambda d: text(d, f"#{form_id}-result"), timeout, what=f"the result of #{form_id}")


def submit_ok(driver, form_id, expect: str | None = None) -> str:
    click(driver, f"#{form_id}-submit")
    res = result_of(driver, form_id)
    cls = find(driver, f"#{form_id}-result").get_attribute("class")
    assert "ok" in cls.split(), f"#{form_id}: {res}"
    if expect is not None:
        assert expect in res, res
    return res


def row_names(driver, table_css, attr="data-name") -> list:
    return [r.get_attribute(attr) for r in finds(driver, f"{table_css} tbody tr[{attr}]")]


def login(driver, base: str, user: str, password: str):
    driver.get(base + "/")
    wait(driver, lambda d: find(d, "#login-form").is_displayed(), what="the login form")
    type_into(driver, "#login-username", user)
    type_into(driver, "#login-password", password)
    click(driver, "#login-submit")
    wait(driver, lambda d: find(d, "#app").is_displayed(), what=f"the dashboard after {user}'s login")
    assert text(driver, "#user-name") == user


def go(driver, base: str, route: str, ready_css: str | None = None):
    """Open a page by its URL hash, as a bookmark would."""
    driver.get(f"{base}/#/{route}")
    if ready_css:
        wait(driver, lambda d: finds(d, ready_css), what=f"{ready_css} on #/{route}")


def js_errors(driver) -> list:
    return [e for e in driver.get_log("browser") if e.get("source") == "javascript"]


def stat(driver, key) -> str:
    return text(driver, f'.stat[data-stat="{key}"] .value')


def rate_of(s: str) -> float:
    try:
        return float(s.replace(",", "").removesuffix("/s"))
    except ValueError:
        return 0.0


def close(rgb, want, tol=24) -> bool:
    return all(abs(a - b) < tol for a, b in zip(rgb, want))


def screenshot(driver, shots, name) -> "Image.Image":
    """A viewport screenshot, saved as PNG and checked: full size, and not one flat colour."""
    png = driver.get_screenshot_as_png()
    path = os.path.join(shots, name + ".png")
    with open(path, "wb") as f:
        f.write(png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n", name
    img = Image.open(io.BytesIO(png)).convert("RGB")
    vw, vh = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    assert img.size == (vw, vh) and vw >= WIDTH - 20 and vh >= HEIGHT - 200, (name, img.size, vw, vh)
    colours = img.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 40, f"{name}: only {len(colours)} colours, the page looks blank"
    top_share = max(c for c, _ in colours) / (img.size[0] * img.size[1])
    assert top_share < 0.92, f"{name}: one colour covers {top_share:.0%} of the screenshot"
    return img


def page_shot(driver, shots, name, top_css=None):
    """A screenshot of the page scrolled to the top (or with `top_css` at the top), its header checked."""
    if top_css:
        driver.execute_script("document.querySelector(arguments[0]).scrollIntoView({block: 'start'});"
                              "window.scrollBy(0, -70)", top_css)
    else:
        driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.3)
    img = screenshot(driver, shots, name)
    assert_header(img, name)
    return img


def region_count(img, box, rgb, tol=24) -> int:
    """Pixels of colour `rgb` inside box (left, top, right, bottom) of a screenshot."""
    crop = img.crop(tuple(int(v) for v in box))
    return sum(n for n, c in crop.getcolors(maxcolors=1 << 22) if close(c, rgb, tol))


def element_box(driver, css):
    return driver.execute_script(
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return [r.left, r.top, r.right, r.bottom];", css)


def assert_header(img, name: str):
    """The dark top bar spans the page width at the top; the page below it is light."""
    for x in (5, img.size[0] // 2, img.size[0] - 5):
        assert close(img.getpixel((x, 4)), HEADER_RGB, 10), (name, x, img.getpixel((x, 4)))
    assert sum(img.getpixel((img.size[0] - 3, 120))) > 600, (name, "the page body should be light")
