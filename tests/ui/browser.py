"""Headless Chromium for the browser tests: Debian's chromium and chromedriver, driven by
selenium, in a fresh profile, with nothing that reaches the network on its own."""

import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


def chromium(*extra_flags):
    """A WebDriver for a headless Chromium; `extra_flags` are added to the defaults."""
    profile = tempfile.mkdtemp(prefix="gr-chromium-")
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
        *extra_flags,
    ]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(60)
    return driver
