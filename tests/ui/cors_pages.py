"""Web pages calling the proxy from headless Chromium (Debian's chromium + chromedriver, selenium).

Run by tests/access.rs `web_pages_call_the_api_in_chromium` (through scripts/ui-test.sh), which
serves the pages and starts the proxy. GR_PAGES holds their URLs, space-separated. Each page
runs its calls on load and writes what it saw as JSON into #out; this prints one line
`RESULT <url> <json>` per page (the Rust test judges them) and exits non-zero only when a page
never finished.
"""

import os
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

PAGES = os.environ["GR_PAGES"].split()

profile = tempfile.mkdtemp(prefix="gr-chromium-cors-")
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    f"--user-data-dir={profile}",
]:
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
driver.set_page_load_timeout(60)

unfinished = 0
try:
    for page in PAGES:
        driver.get(page)
        deadline = time.monotonic() + 30.0
        text = ""
        while time.monotonic() < deadline:
            text = driver.find_element(By.ID, "out").text
            if text:
                break
            time.sleep(0.1)
        if not text:
            unfinished += 1
        print(f"RESULT {page} {text or '{}'}", flush=True)
finally:
    driver.quit()
sys.exit(1 if unfinished else 0)
