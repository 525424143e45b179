"""The dashboard in headless Chromium (Debian's chromium + chromedriver, driven by selenium).

Run by tests/dashboard.rs `dashboard_in_chromium` (through scripts/ui-test.sh), which starts the
fake upstream and two proxies and passes them in the environment:

  GR_URL          a proxy with 3 keys, one of them cooling for GR_MODEL (GR_COOLED_KEY, masked)
  GR_BIG_URL      a proxy with 1,000 keys
  GR_ADMIN_TOKEN  the admin token of both
  GR_ARTIFACTS    where screenshots go (target/artifacts)

Prints one line per check and ends with "N passed, M failed"; exits non-zero on any failure.
"""

import os
import sys
import time
import traceback

from selenium.webdriver.common.by import By

from browser import chromium

URL = os.environ["GR_URL"]
BIG_URL = os.environ["GR_BIG_URL"]
TOKEN = os.environ["GR_ADMIN_TOKEN"]
COOLED = os.environ["GR_COOLED_KEY"]
MODEL = os.environ["GR_MODEL"]
ARTIFACTS = os.environ["GR_ARTIFACTS"]

results = {"passed": 0, "failed": 0}


def check(name):
    def wrap(fn):
        try:
            fn()
            results["passed"] += 1
            print(f"ok   {name}", flush=True)
        except Exception:  # noqa: BLE001 - every failure is reported, then counted
            results["failed"] += 1
            print(f"FAIL {name}", flush=True)
            traceback.print_exc()
            try:
                driver.save_screenshot(os.path.join(ARTIFACTS, f"failed-{name}.png"))
            except Exception:  # noqa: BLE001
                pass
        return fn

    return wrap


def wait_until(what, cond, timeout=30.0):
    """Polls `cond` every 100 ms until it returns something truthy; bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = cond()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - the page may be mid-render
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def js(script, *args):
    return driver.execute_script(script, *args)


def login(base, token):
    driver.get(base + "/dashboard")
    field = wait_until("the login form", lambda: driver.find_element(By.ID, "token"))
    field.clear()
    field.send_keys(token)
    driver.find_element(By.ID, "login").click()


def cell_state(key, model):
    return js(
        "const r = document.querySelector(`#rows .row[data-key='${arguments[0]}']`);"
        "const c = r && Array.from(r.querySelectorAll('.c')).find(c => c.dataset.model === arguments[1]);"
        "return c ? c.dataset.state : null;",
        key,
        model,
    )


os.makedirs(ARTIFACTS, exist_ok=True)
driver = chromium("--window-size=1280,720")

try:

    @check("login_page_without_session")
    def _():
        driver.get(URL + "/dashboard")
        assert driver.find_element(By.ID, "login-form")
        assert not driver.find_elements(By.ID, "grid")

    @check("wrong_token_is_refused")
    def _():
        login(URL, "not-the-admin-token")
        err = wait_until("the error", lambda: driver.find_element(By.CSS_SELECTOR, ".error").text)
        assert "not an admin token" in err, err
        assert not driver.get_cookies(), driver.get_cookies()

    @check("login_shows_the_grid")
    def _():
        login(URL, TOKEN)
        wait_until("3 rows", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#rows .row")) == 3)
        cookies = driver.get_cookies()
        assert len(cookies) == 1, cookies
        c = cookies[0]
        assert c["name"] == "gr_session" and c["httpOnly"] and c.get("sameSite") == "Strict", c
        assert TOKEN not in c["value"]
        # The page cannot read its own session cookie.
        assert "gr_session" not in js("return document.cookie;")

    @check("cooled_key_shows_cooling")
    def _():
        wait_until("the cooling cell", lambda: cell_state(COOLED, MODEL) == "cooling")
        text = js(
            "return Array.from(document.querySelectorAll(`#rows .row[data-key='${arguments[0]}'] .c`))"
            ".map(c => c.textContent).join(' | ');",
            COOLED,
        )
        assert "cool" in text, text
        assert js("return document.querySelector('#usable .count[data-model=\"%s\"]').textContent;" % MODEL) == "1 / 2"
        driver.save_screenshot(os.path.join(ARTIFACTS, "dashboard-cooling.png"))

    @check("reset_key_makes_it_usable")
    def _():
        row = driver.find_element(By.CSS_SELECTOR, f"#rows .row[data-key='{COOLED}']")
        row.find_element(By.CSS_SELECTOR, "button.reset-key").click()
        wait_until("the cell to turn usable", lambda: cell_state(COOLED, MODEL) == "ok")
        msg = wait_until("the message", lambda: driver.find_element(By.ID, "message").text)
        assert "reset 1" in msg, msg
        wait_until(
            "2 usable keys",
            lambda: js("return document.querySelector('#usable .count[data-model=\"%s\"]').textContent;" % MODEL)
            == "2 / 2",
        )
        # Let the charts and the config panel settle, then keep the picture.
        wait_until("the traffic note", lambda: "in the hour" in driver.find_element(By.ID, "requests-note").text)
        driver.save_screenshot(os.path.join(ARTIFACTS, "dashboard.png"))

    @check("reload_button_reports_the_result")
    def _():
        driver.find_element(By.ID, "reload").click()
        msg = wait_until(
            "the reload message",
            lambda: (lambda t: t if "Reload" in t else None)(driver.find_element(By.ID, "message").text),
        )
        assert "unchanged" in msg or "Reloaded config" in msg, msg
        wait_until("the reload result", lambda: driver.find_element(By.ID, "reload-result").text == "ok")

    @check("logout_returns_to_login")
    def _():
        driver.find_element(By.ID, "logout").click()
        wait_until("the login form", lambda: driver.find_element(By.ID, "login-form"))
        driver.get(URL + "/dashboard")
        assert driver.find_element(By.ID, "login-form")

    @check("thousand_keys_render")
    def _():
        driver.delete_all_cookies()
        started = time.monotonic()
        login(BIG_URL, TOKEN)
        wait_until(
            "1,000 rows",
            lambda: js("return document.querySelectorAll('#rows .row').length;") == 1000,
            timeout=60,
        )
        took = time.monotonic() - started
        cells = js("return document.querySelectorAll('#rows .c[data-state]').length;")
        assert cells == 4000, cells
        render_ms = js("return document.body.dataset.renderMs;")
        # Still responsive: further polls keep arriving and patching.
        polls = int(js("return document.body.dataset.polls;"))
        wait_until("another poll", lambda: int(js("return document.body.dataset.polls;")) > polls, timeout=20)
        patch_ms = js("return document.body.dataset.renderMs;")
        size = driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch('/dashboard/api/state').then(r => r.text()).then(t => done(t.length), () => done(-1));"
        )
        print(
            f"     1,000 keys x 4 models: login to all rows rendered {took:.2f}s; "
            f"first render {render_ms} ms in the page, a later poll's patch {patch_ms} ms; "
            f"state JSON {size} bytes",
            flush=True,
        )
        field = driver.find_element(By.ID, "filter")
        field.send_keys("****0999")
        wait_until("the filter", lambda: driver.find_element(By.ID, "shown").text == "1 of 1000 keys")
        js("const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input'));")
        wait_until("all rows again", lambda: driver.find_element(By.ID, "shown").text == "1000 keys")
        driver.save_screenshot(os.path.join(ARTIFACTS, "dashboard-1000-keys.png"))

finally:
    driver.quit()

print(f"{results['passed']} passed, {results['failed']} failed", flush=True)
sys.exit(1 if results["failed"] else 0)
