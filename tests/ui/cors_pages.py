"""Web pages calling the proxy from headless Chromium (Debian's chromium + chromedriver, selenium).

Run by tests/access.rs `web_pages_call_the_api_in_chromium` (through scripts/ui-test.sh), which
serves the pages and starts the proxy. GR_PAGES holds their URLs, space-separated. Each page
runs its calls on load and writes what it saw as JSON into #out; this prints one line
`RESULT <url> <json>` per page (the Rust test judges them) and exits non-zero only when a page
never finished.
"""

import os
import sys
import time

from selenium.webdriver.common.by import By

from browser import chromium

PAGES = os.environ["GR_PAGES"].split()

driver = chromium()

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
