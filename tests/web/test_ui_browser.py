"""The web UI in a real browser (headless Chromium from Debian's packages), against a real project, a real
``tunesmith ui`` and a real ``tunesmith serve``: every page, what people do on it, and the files it writes."""

from __future__ import annotations

import json

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.serve.conftest import KEY
from tests.web.conftest import shot, wait_for

pytestmark = pytest.mark.browser


def sign_in(browser, ui, path="/runs"):
    browser.get(ui.url + path)
    if "/login" in browser.current_url:
        field = browser.find_element(By.ID, "key")
        field.send_keys("wrong")
        field.send_keys(Keys.ENTER)
        assert "not the right one" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
        field = browser.find_element(By.ID, "key")
        field.send_keys(KEY)
        field.send_keys(Keys.ENTER)
    wait_for(lambda: path in browser.current_url)


def text_of(browser, element_id: str) -> str:
    """An element's text, read in one go (a swapped element would be stale between find and read)."""
    return browser.execute_script("const e = document.getElementById(arguments[0]); return e ? e.textContent : ''",
                                  element_id)


def rows(browser) -> list[str]:
    """The run ids the table shows, in order (read in one go: htmx may swap the table at any moment)."""
    return browser.execute_script(
        "return [...document.querySelectorAll('table.runs tbody tr[data-run]')].map(r => r.dataset.run)")


def test_sign_in_is_required(ui):
    import httpx

    r = httpx.get(ui.url + "/runs", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert httpx.get(ui.url + "/api/runs/x/metrics").status_code == 401
    assert httpx.get(ui.url + "/static/vendor/htmx.min.js").status_code == 200  # assets are local, no CDN
    page = httpx.get(ui.url + "/runs", headers={"Authorization": f"Bearer {KEY}"}).text
    assert "http://" not in page.replace(ui.url, "") and "https://" not in page


def test_runs_table_filters_sorts_and_compares(browser, ui, ui_project):
    folder, a, b = ui_project
    sign_in(browser, ui)
    assert set(rows(browser)) == {a.id, b.id}
    assert "production" in browser.find_element(By.CSS_SELECTOR, f"tr[data-run='{a.id}']").text
    shot(browser, "runs")
    search = browser.find_element(By.ID, "run-search")
    search.send_keys("production")  # the alias
    wait_for(lambda: len(rows(browser)) == 1)
    assert rows(browser) == [a.id]
    assert "q=production" in browser.current_url  # the filter is in the address, so it can be shared
    search.send_keys(Keys.CONTROL, "a")
    search.send_keys(Keys.DELETE)
    wait_for(lambda: len(rows(browser)) == 2)
    browser.find_element(By.LINK_TEXT, "id").click()  # sort by id, descending
    wait_for(lambda: rows(browser) == sorted([a.id, b.id], reverse=True))
    browser.find_element(By.LINK_TEXT, "id").click()
    wait_for(lambda: rows(browser) == sorted([a.id, b.id]))
    for box in browser.find_elements(By.CSS_SELECTOR, "input[name=run]"):
        box.click()
    browser.find_element(By.ID, "compare").click()
    wait_for(lambda: "/compare" in browser.current_url)
    chart = browser.find_element(By.ID, "loss-chart")
    wait_for(lambda: chart.find_elements(By.TAG_NAME, "canvas"))
    legend = chart.text
    assert a.id in legend and b.id in legend  # both runs' curves overlaid
    shot(browser, "compare")


def test_run_page_shows_the_report_verdict_first(browser, ui, ui_project):
    folder, a, _ = ui_project
    sign_in(browser, ui, f"/runs/{a.id}")
    verdict = browser.find_element(By.ID, "verdict")
    assert "Verdict" in verdict.text
    main = browser.find_element(By.TAG_NAME, "main").text
    assert main.index("Verdict") < main.index("Loss")
    wait_for(lambda: browser.find_element(By.ID, "loss-chart").find_elements(By.TAG_NAME, "canvas"))
    assert int(browser.find_element(By.ID, "loss-chart").get_attribute("data-points")) >= 2
    assert "Config" in main and "Data manifest" in main
    shot(browser, "run")


def test_start_a_run_and_watch_it_train_live(browser, ui, ui_project):
    folder, _, _ = ui_project
    # A longer run than the fixtures' so that there is something to watch.
    (folder / "longer.yaml").write_text((folder / "tunesmith.yaml").read_text().replace(
        "max_steps: 3", "max_steps: 300, early_stopping_patience: null").replace("eval_every: 2", "eval_every: 20"))
    sign_in(browser, ui, "/start?project=longer.yaml")
    epochs = browser.find_element(By.ID, "epochs")
    epochs.clear()
    epochs.send_keys("50")
    browser.find_element(By.ID, "plan").click()  # tunesmith plan's estimate, before starting
    table = wait_for(lambda: browser.find_elements(By.ID, "plan-table"), timeout=120)[0]
    assert "trainable parameters" in table.text and "steps" in table.text
    shot(browser, "start")
    browser.find_element(By.ID, "start").click()
    wait_for(lambda: "/runs/2" in browser.current_url, timeout=120)
    browser.execute_script("window.notReloaded = true")
    run_id = browser.current_url.rsplit("/", 1)[-1]
    assert text_of(browser, "run-status") == "running"
    steps, points = set(), set()

    def watch():
        steps.add(text_of(browser, "run-step"))
        points.add(browser.find_element(By.ID, "loss-chart").get_attribute("data-points"))
        return text_of(browser, "run-status") == "completed"

    wait_for(watch, timeout=300)
    assert browser.execute_script("return window.notReloaded") is True  # updated in place, not reloaded
    # Seen while it trained: the step counter and the chart's points grew without a reload.
    assert len(steps - {""}) >= 2 and len(points - {None, "0"}) >= 2, (steps, points)
    shot(browser, "run-live")
    browser.find_element(By.ID, "show-report").click()  # finished: the report is one click away
    wait_for(lambda: browser.find_elements(By.ID, "verdict"))
    status = json.loads((folder / "runs" / run_id / "status.json").read_text())
    assert status["status"] == "completed"
    config = (folder / "runs" / run_id / "config.yaml").read_text()
    assert "epochs: 50" in config  # the edited setting reached the run


def test_review_rows_are_approved_edited_and_rejected_into_the_file(browser, ui, ui_project):
    folder, _, _ = ui_project
    sign_in(browser, ui, "/review")
    browser.find_element(By.ID, "data-check").click()  # the project's data report, counts that add up
    counts = wait_for(lambda: text_of(browser, "data-counts"))
    summary = json.loads((folder / "data-report" / "summary.json").read_text())
    assert f"{summary['rows_read']} rows read: {summary['rows_kept']} kept" in counts
    assert summary["rows_read"] == summary["rows_kept"] + sum(summary["rejected"].values()) + sum(summary["removed"].values())
    assert "2 row(s) waiting" in browser.find_element(By.ID, "queue-count").text
    shot(browser, "review")
    first = browser.find_element(By.ID, "row-1")
    messages = first.find_element(By.CSS_SELECTOR, "textarea[name='field.messages']")
    edited = messages.get_attribute("value").replace("pin_blocked", "card_arrival")
    browser.execute_script("arguments[0].value = arguments[1]", messages, edited)
    first.find_element(By.CSS_SELECTOR, "button.approve").click()
    wait_for(lambda: "approved (edited)" in text_of(browser, "row-1"))
    second = browser.find_element(By.ID, "row-2")
    browser.execute_script("arguments[0].focus()", second)  # the row has the focus (tabindex 0): keys decide
    browser.switch_to.active_element.send_keys("r")
    wait_for(lambda: "rejected" in text_of(browser, "row-2"))
    kept = [json.loads(x) for x in (folder / "traffic.jsonl").read_text().splitlines()]
    assert len(kept) == 1 and kept[0]["needs_review"] is False
    assert kept[0]["messages"][-1]["content"] == "card_arrival" and kept[0]["review"]["edited"] == ["messages"]
    rejected = [json.loads(x) for x in (folder / "traffic.rejected.jsonl").read_text().splitlines()]
    assert rejected[0]["messages"][0]["content"] == "asdf qwerty"


def test_playground_chats_with_two_models_and_sends_feedback(browser, ui, ui_project, served):
    folder, a, b = ui_project
    sign_in(browser, ui, "/playground")
    browser.find_element(By.ID, "message").send_keys("Where is my card? It has not arrived yet.")
    browser.find_element(By.ID, "send").click()
    panes = browser.find_elements(By.CSS_SELECTOR, ".pane")
    wait_for(lambda: all(p.get_attribute("data-done") == "yes" for p in panes), timeout=60)
    answers = [browser.find_element(By.ID, f"answer-{side}").text for side in ("left", "right")]
    assert all(answers), answers
    labels = ["card_arrival", "pin_blocked", "exchange_rate"]
    # Left: the untuned base (free text); right: production, answering within its labels.
    assert browser.find_element(By.ID, "model-right").get_attribute("value") == "production"
    assert answers[1] in labels
    shot(browser, "playground")
    left = panes[1]
    left.find_element(By.CSS_SELECTOR, ".correction").send_keys("card_arrival")
    left.find_element(By.CSS_SELECTOR, ".send-correction").click()
    wait_for(lambda: left.find_element(By.CSS_SELECTOR, ".feedback-status").text == "saved")
    from tunesmith.monitor.requestlog import read_log

    rid = left.get_attribute("data-response-id")
    logged = {r["id"]: r for r in read_log(folder / "logs" / "requests.sqlite")}
    assert logged[rid]["feedback"][-1]["correction"] == "card_arrival"


def test_monitor_shows_alerts_first_and_moves_aliases_with_confirmation(browser, ui, ui_project):
    folder, a, b = ui_project
    sign_in(browser, ui, "/monitor")
    main = browser.find_element(By.TAG_NAME, "main").text
    assert "alert(s)" in main and main.index("alert(s)") < main.index("Aliases")
    chart = browser.find_element(By.ID, "monitor-chart")  # the signals over time, interactive
    wait_for(lambda: chart.find_elements(By.TAG_NAME, "canvas"))
    assert int(chart.get_attribute("data-points")) >= 1 and "estimated accuracy" in chart.text
    shot(browser, "monitor")
    browser.find_element(By.CSS_SELECTOR, f"#promote-run option[value='{b.id}'], #promote-run").click()
    select = browser.find_element(By.ID, "promote-run")
    for option in select.find_elements(By.TAG_NAME, "option"):
        if option.text == b.id:
            option.click()
    browser.find_element(By.ID, "promote-reason").send_keys("better on fresh traffic")
    browser.find_element(By.ID, "promote").click()
    browser.switch_to.alert.dismiss()  # cancelled: nothing moves
    from tunesmith.runs.aliases import alias_holder

    assert alias_holder(folder / "runs", "production") == a.id
    browser.find_element(By.ID, "promote").click()
    browser.switch_to.alert.accept()
    wait_for(lambda: browser.find_elements(By.ID, "message"))
    assert alias_holder(folder / "runs", "production") == b.id
    assert "better on fresh traffic" in browser.find_element(By.TAG_NAME, "main").text
    browser.find_element(By.ID, "rollback-production").click()
    browser.switch_to.alert.accept()
    wait_for(lambda: "rolled back" in text_of(browser, "message"))
    assert alias_holder(folder / "runs", "production") == a.id


def test_a_started_run_is_cancelled_safely(browser, ui, ui_project):
    folder, _, _ = ui_project
    (folder / "endless.yaml").write_text((folder / "tunesmith.yaml").read_text().replace(
        "max_steps: 3", "max_steps: 100000, early_stopping_patience: null, checkpoint_every: 20").replace(
        "eval_every: 2", "eval_every: 20"))
    sign_in(browser, ui, "/start?project=endless.yaml")
    epochs = browser.find_element(By.ID, "epochs")
    epochs.clear()
    epochs.send_keys("5000")
    browser.find_element(By.ID, "start").click()
    wait_for(lambda: "/runs/2" in browser.current_url, timeout=120)
    run = folder / "runs" / browser.current_url.rsplit("/", 1)[-1]
    wait_for(lambda: text_of(browser, "run-step") not in ("", "0") and int(text_of(browser, "run-step")) >= 40,
             timeout=120)
    browser.find_element(By.ID, "cancel").click()
    browser.switch_to.alert.accept()
    wait_for(lambda: json.loads((run / "status.json").read_text())["status"] == "failed", timeout=60)
    assert "KeyboardInterrupt" in json.loads((run / "status.json").read_text())["error"]
    assert any((run / "checkpoints").iterdir())  # tunesmith run --resume continues it
    browser.get(browser.current_url)
    assert text_of(browser, "run-status") == "failed"


def test_blind_ab_review_with_two_raters_writes_the_runs_review_files(browser, ui, ui_project):
    folder, a, _ = ui_project
    sign_in(browser, ui, f"/ab?run={a.id}&rater=ana")
    browser.find_element(By.ID, "ab-export").click()
    wait_for(lambda: browser.find_elements(By.ID, "ab-item"))
    total = int(text_of(browser, "ab-progress").split(" of ")[1].split()[0])
    shot(browser, "ab")
    for rater, key in (("ana", "a"), ("ben", "b")):
        browser.get(f"{ui.url}/ab?run={a.id}&rater={rater}")
        for n in range(total):
            wait_for(lambda n=n: text_of(browser, "ab-progress").startswith(f"{rater}: {n} of"))
            if n == 0:
                browser.find_element(By.ID, "A_correctness").send_keys("4")
            browser.find_element(By.TAG_NAME, "h2").click()  # focus off the fields: the keys decide
            browser.find_element(By.TAG_NAME, "body").send_keys(key)
        wait_for(lambda: browser.find_elements(By.ID, "ab-finished"))
    ratings = [json.loads(x) for x in (a.root / "review" / "ratings.jsonl").read_text().splitlines()]
    assert len(ratings) == 2 * total and {r["rater"] for r in ratings} == {"ana", "ben"}
    key = json.loads((a.root / "review" / "review_key.json").read_text())["items"]
    # ana always preferred A, ben always B: un-blinded, each winner is whichever system that side was.
    for r in ratings:
        side = "A" if r["rater"] == "ana" else "B"
        a_is = key[r["item"]]["A"]
        assert r["winner"] == (a_is if side == "A" else ("tuned" if a_is == "baseline" else "baseline"))
    report = json.loads(a.report_json.read_text())
    assert report["human_review"]["raters"] == ["ana", "ben"] and report["human_review"]["items"] == total
    assert "Tuned preferred" in text_of(browser, "win-rate")
