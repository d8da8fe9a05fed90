#!/usr/bin/env python3
"""Drives the admin console (/console) in headless Chromium through a rule's whole life.

Run by tests/e2e/operator.rs against a node it started:

    python3 tests/browser/console.py --admin http://127.0.0.1:PORT --token T --bucket B \
        --origin 127.0.0.1:PORT --screenshot target/test-artifacts/console.png

Logs in with the token, then creates two rules, edits the first, moves it down, tries a rule
the API refuses (the console must show the API's field-named error and change nothing), and
deletes one; after each step it reads the node's rule API itself and checks its state. A
screenshot of the last state is kept. Exit status 0 when every check passed.

Uses Selenium (pip) with Debian's chromium and chromium-driver; no network.
"""

import argparse
import json
import sys
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--admin", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--origin", required=True, help="host:port of an origin the rules point at")
    ap.add_argument("--screenshot", required=True)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = ap.parse_args()

    def api_rules():
        req = urllib.request.Request(
            f"{args.admin}/v1/regions/x/buckets/{args.bucket}/backSource",
            headers={"Authorization": f"Bearer {args.token}"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            rules = json.load(resp)["result"]["backSourceRules"]
        return [(r.get("condition", {}).get("keyPrefixEquals", ""), r["address"]["hostName"], r["address"]["path"]) for r in rules]

    def shown(d):
        """The table's (prefix, origin) rows, or None while it is being re-rendered."""
        try:
            rows = d.find_elements(By.CSS_SELECTOR, "#rules tr.rule")
            return [tuple(td.text for td in r.find_elements(By.TAG_NAME, "td")[1:3]) for r in rows]
        except StaleElementReferenceException:
            return None

    def expect(step, want):
        # The console saves, then reloads and re-renders the list: wait until it shows `want`
        # (prefixes and origins, so an edit or a move is seen, not only a count), then read the
        # node's own state.
        rows = [(p or "(every key)", f"http://{h}{path}") for p, h, path in want]
        try:
            WebDriverWait(driver, 10).until(lambda d: shown(d) == rows)
        except TimeoutException:
            raise AssertionError(f"{step}: the console shows {shown(driver)}, expected {rows}")
        got = api_rules()
        if got != want:
            raise AssertionError(f"{step}: the node's rules are {got}, expected {want}")
        print(f"ok: {step}: {got}")

    def fill_rule(prefix, path, host=args.origin):
        for field, value in [("f-prefix", prefix), ("f-host", host), ("f-path", path)]:
            box = driver.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)

    def click(selector):
        WebDriverWait(driver, 10).until(ec.element_to_be_clickable((By.CSS_SELECTOR, selector))).click()

    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=args.chromedriver), options=options)
    try:
        driver.get(f"{args.admin}/console")
        # A wrong token is refused and says so.
        driver.find_element(By.ID, "token").send_keys("not-the-token")
        click("#login-button")
        WebDriverWait(driver, 10).until(ec.visibility_of_element_located((By.ID, "login-error")))
        driver.find_element(By.ID, "token").clear()
        driver.find_element(By.ID, "token").send_keys(args.token)
        click("#login-button")
        WebDriverWait(driver, 10).until(ec.visibility_of_element_located((By.ID, "app")))
        Select(driver.find_element(By.ID, "bucket")).select_by_value(args.bucket)
        expect("no rules at first", [])

        fill_rule("img/", "/images/")
        click("#save-rule")
        expect("create the first rule", [("img/", args.origin, "/images/")])

        fill_rule("", "/site/")
        click("#save-rule")
        expect("create a second rule", [("img/", args.origin, "/images/"), ("", args.origin, "/site/")])

        click('#rules button.edit[data-index="0"]')
        path = driver.find_element(By.ID, "f-path")
        path.clear()
        path.send_keys("/pictures/")
        click("#save-rule")
        expect("edit the first rule", [("img/", args.origin, "/pictures/"), ("", args.origin, "/site/")])

        click('#rules button.down[data-index="0"]')
        expect("move it down", [("", args.origin, "/site/"), ("img/", args.origin, "/pictures/")])

        # A rule the API refuses: its message is shown, nothing changes.
        fill_rule("bad/", "/x/", host="")
        click("#save-rule")
        WebDriverWait(driver, 10).until(ec.visibility_of_element_located((By.ID, "error")))
        message = driver.find_element(By.ID, "error").text
        if "hostName" not in message:
            raise AssertionError(f"the refused rule's error does not name the field: {message!r}")
        expect("a refused rule changes nothing", [("", args.origin, "/site/"), ("img/", args.origin, "/pictures/")])
        print(f"ok: the API's error is shown: {message!r}")

        click('#rules button.delete[data-index="0"]')
        expect("delete the first rule", [("img/", args.origin, "/pictures/")])

        # The live panel reads /metrics: it shows numbers once two samples are in.
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "stat-rps").text != "-")
        driver.save_screenshot(args.screenshot)
        print(f"ok: screenshot in {args.screenshot}")
    except Exception:
        driver.save_screenshot(args.screenshot)
        raise
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
