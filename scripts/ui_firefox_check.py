"""Drive the web UI in Firefox (ESR) through Marionette, Firefox's own remote protocol: no geckodriver to download.

The browser tests (tests/web) run in Chromium, whose driver Debian packages; Debian has no geckodriver, so
this script checks the same pages in Firefox by hand: the run page's chart, htmx filtering of the runs
table, compare, the monitor page, and the start page's plan. Set-up, in a virtual environment of its own
(marionette_driver pins its own mozbase packages):

    apt-get install firefox-esr && python3 -m venv /tmp/ffvenv && /tmp/ffvenv/bin/pip install marionette_driver
    tunesmith ui --no-auth --port 8778 &              # in a project folder with a finished run
    /tmp/ffvenv/bin/python scripts/ui_firefox_check.py RUN_ID [--url http://127.0.0.1:8778]

It prints what it found; every value should be truthy (a count above 0, True).
"""
import subprocess, time, tempfile, sys
from marionette_driver.marionette import Marionette
from marionette_driver.by import By
profile = tempfile.mkdtemp()
ff = subprocess.Popen(["firefox-esr", "--headless", "--marionette", "--no-remote", "--profile", profile, "about:blank"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(6)
m = Marionette(host="127.0.0.1", port=2828)
m.start_session()
U = sys.argv[sys.argv.index("--url") + 1] if "--url" in sys.argv else "http://127.0.0.1:8778"
run = sys.argv[1]
out = {}
try:
    m.navigate(U + f"/runs/{run}")
    for _ in range(50):
        if m.execute_script("return document.querySelectorAll('#loss-chart canvas').length"): break
        time.sleep(0.2)
    out["run chart canvas"] = m.execute_script("return document.querySelectorAll('#loss-chart canvas').length")
    out["run chart points"] = m.execute_script("return document.getElementById('loss-chart').dataset.points")
    m.navigate(U + "/runs")
    el = m.find_element(By.ID, "run-search"); el.send_keys("production")
    time.sleep(1.5)
    out["runs filtered (htmx)"] = m.execute_script("return [...document.querySelectorAll('tr[data-run]')].length")
    el.send_keys("zzz"); time.sleep(1.5)
    out["runs after nonsense filter"] = m.execute_script("return [...document.querySelectorAll('tr[data-run]')].length")
    m.navigate(U + "/monitor")
    out["monitor alerts first"] = m.execute_script("const t=document.querySelector('main').innerText; return t.indexOf('alert(s)') >= 0 && t.indexOf('alert(s)') < t.indexOf('Aliases')")
    m.navigate(U + f"/compare?run={run}")
    time.sleep(2)
    out["compare canvas"] = m.execute_script("return document.querySelectorAll('#loss-chart canvas').length")
    m.navigate(U + "/start")
    m.find_element(By.ID, "plan").click()
    for _ in range(300):
        if m.execute_script("return !!document.getElementById('plan-table')"): break
        time.sleep(0.5)
    out["start: plan via htmx"] = m.execute_script("return !!document.getElementById('plan-table')")
finally:
    m.delete_session(); ff.terminate()
print(out)
