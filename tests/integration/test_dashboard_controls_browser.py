"""The dashboard's controls in a real headless Chromium (Selenium + Debian's chromedriver), against a
real stack (Redis, control worker with beat, one region worker): submit a job through the form and
watch it finish, cancel and delete jobs, find one's own leaderboard row through ``/#me=<account>``,
and open a worker's page. Screenshots are kept in ``artifacts_dir()`` (HYDRA_TEST_ARTIFACTS).

Skipped where Chromium, chromedriver or Selenium is missing (`.ci/run` installs them when it can)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from nacl.signing import SigningKey

from hydra_tasks import keys
from hydra_tasks.celery_app import HydraCelery, create_app as create_celery_app
from hydra_tasks.jobs import store
from hydra_tasks.ledger import book as ledger
from hydra_tasks.ledger import profiles
from hydra_tasks.ledger.rewards import Reward
from hydra_tasks.models import JobKind
from hydra_tasks.stack import LocalStack
from hydra_tasks.trust import identity, reputation
from hydra_webapp import create_app
from support import artifacts_dir, running_stack, serving, submit_planned, wait_for_job

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - selenium is in the test extra
    webdriver = None  # type: ignore[assignment]

if CHROMIUM is None or CHROMEDRIVER is None or webdriver is None:
    pytest.skip("needs Chromium, chromedriver (apt-get install chromium chromium-driver) and selenium",
                allow_module_level=True)

TOKEN = "browser-operator-token"
WAIT_S = 30


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(tmp_path_factory.mktemp("controls-browser"), {"eu-west": 1},
                       pi_chunk_samples=5_000_000, adaptive=False) as stack:
        yield stack


@pytest.fixture(scope="module")
def app(stack: LocalStack) -> Iterator[HydraCelery]:
    app = create_celery_app(stack.child_settings().with_(api_token=TOKEN, flower_url="http://127.0.0.1:5555"))
    yield app
    app.close()


@pytest.fixture(scope="module")
def url(app: HydraCelery) -> Iterator[str]:
    with serving(create_app(celery_app=app)) as served:
        yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1400", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    except WebDriverException as exc:
        pytest.skip(f"chromedriver could not start Chromium: {exc.msg}")
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def until(browser: Any, condition: Callable[[Any], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Wait for ``condition``. The pages re-render parts of themselves every second, so an element found
    a moment ago may be gone when it is read: Selenium calls that stale, and chromedriver sometimes
    reports it as "Node with given id does not belong to the document" (seen in CI on the job page's
    state). Both mean: read again at the next poll."""
    def attempt(b: Any) -> Any:
        try:
            return condition(b)
        except WebDriverException as exc:
            if isinstance(exc, StaleElementReferenceException) or "does not belong to the document" in str(exc.msg):
                return False
            raise

    return WebDriverWait(browser, timeout_s, poll_frequency=0.1).until(attempt, message=f"waiting for {what}")


def screenshot(browser: Any, name: str) -> Path:
    path = artifacts_dir() / f"controls-{name}.png"
    browser.save_screenshot(str(path))
    assert path.stat().st_size > 5_000, f"{path} looks empty"
    return path


def type_into(field: WebElement, text: str) -> None:
    field.clear()
    field.send_keys(text)


def job_row(browser: Any, job_id: str) -> WebElement | None:
    rows = browser.find_elements(By.XPATH, f'//tbody[@id="jobs-body"]/tr[.//code[text()="{job_id}"]]')
    return rows[0] if rows else None


def submit_through_the_form(browser: Any, samples: str) -> str:
    form = browser.find_element(By.ID, "submit-form")
    type_into(form.find_element(By.NAME, "samples"), samples)
    type_into(form.find_element(By.NAME, "seed"), "42")
    form.find_element(By.ID, "submit-job").click()
    link = until(browser, lambda b: b.find_elements(By.ID, "submitted-job"), "the submitted job's link")[0]
    return str(link.get_attribute("data-job-id"))


def test_an_operator_submits_a_job_through_the_form_watches_it_finish_then_deletes_it(
        browser: Any, url: str, app: HydraCelery) -> None:
    browser.get(url + "/")
    assert browser.find_element(By.ID, "operator-status").text == "operator token needed"
    assert browser.find_element(By.ID, "flower-link").get_attribute("href") == "http://127.0.0.1:5555/"
    browser.find_element(By.ID, "submit-job").click()  # no token yet: said so, nothing sent
    refused = until(browser, lambda b: b.find_element(By.ID, "submit-result").text, "the refusal")
    assert "Operator token needed" in refused and store.list_jobs(app.redis, limit=1) == []

    type_into(browser.find_element(By.ID, "operator-token"), "not-the-token")
    browser.find_element(By.ID, "submit-job").click()
    wrong = until(browser, lambda b: "wrong" in b.find_element(By.ID, "submit-result").text and
                  b.find_element(By.ID, "submit-result").text, "the API's 401 message")
    assert "The operator API token is wrong" in wrong
    type_into(browser.find_element(By.ID, "operator-token"), TOKEN)
    type_into(browser.find_element(By.NAME, "samples"), "lots")  # the API's own message is shown
    browser.find_element(By.ID, "submit-job").click()
    invalid = until(browser, lambda b: "Not submitted" in b.find_element(By.ID, "submit-result").text and
                    "lots" in b.find_element(By.ID, "submit-result").text and
                    b.find_element(By.ID, "submit-result").text, "the validation message")
    assert "samples" in invalid

    job_id = submit_through_the_form(browser, "2e7")
    until(browser, lambda b: job_row(b, job_id), "the job in the list")
    done = until(browser, lambda b: (row := job_row(b, job_id)) is not None and "done" in row.text and row.text,
                 "the job to show as done", timeout_s=90)
    assert "4 / 4" in done
    screenshot(browser, "submitted-job-done")
    assert wait_for_job(app, job_id).result["hits"] > 0

    until(browser, lambda b: b.find_element(By.XPATH, f'//a[.//code[text()="{job_id}"]]').click() or True,
          "the job's link in the live table, clicked")
    until(browser, lambda b: b.find_element(By.ID, "delete-job").is_displayed(), "the delete button")
    assert not browser.find_element(By.ID, "cancel-job").is_displayed()  # a finished job cannot be cancelled
    assert browser.find_element(By.ID, "operator-token").get_attribute("value") == TOKEN  # kept in this tab
    delete = browser.find_element(By.ID, "delete-job")
    delete.click()
    assert "Click again" in delete.text and app.redis.exists(keys.job(job_id))  # one click deletes nothing
    delete.click()
    flash = until(browser, lambda b: b.find_elements(By.ID, "flash") and b.find_element(By.ID, "flash").text,
                  "the index page's 'deleted' message")
    assert flash == f"Job {job_id} deleted."
    assert job_row(browser, job_id) is None and not app.redis.exists(keys.job(job_id))
    assert TOKEN not in browser.current_url and not browser.get_cookies()  # the token is in no URL or cookie


def test_an_operator_cancels_a_running_job_from_its_page_and_then_deletes_it(
        browser: Any, url: str, app: HydraCelery) -> None:
    browser.get(url + "/")
    type_into(browser.find_element(By.ID, "operator-token"), TOKEN)
    job_id = submit_through_the_form(browser, "1e12")  # far too big to finish during the test
    browser.find_element(By.ID, "submitted-job").click()
    cancel = until(browser, lambda b: b.find_element(By.ID, "cancel-job"), "the cancel button")
    assert cancel.is_displayed() and not browser.find_element(By.ID, "delete-job").is_displayed()
    cancel.click()
    until(browser, lambda b: b.find_element(By.ID, "job-state").text == "cancelled", "the cancelled state")
    assert store.get_job(app.redis, job_id).state == "cancelled"
    screenshot(browser, "cancelled-job")
    delete = until(browser, lambda b: b.find_element(By.ID, "delete-job").is_displayed()
                   and b.find_element(By.ID, "delete-job"), "the delete button")
    delete.click()
    delete.click()
    until(browser, lambda b: b.find_elements(By.ID, "flash") and b.find_element(By.ID, "flash").text,
          "the 'deleted' message")
    assert not app.redis.exists(keys.job(job_id))


def test_a_mandelbrot_job_submitted_through_the_form_keeps_the_parameters_as_given(
        browser: Any, url: str, app: HydraCelery) -> None:
    from selenium.webdriver.support.ui import Select

    browser.get(url + "/")
    type_into(browser.find_element(By.ID, "operator-token"), TOKEN)
    form = browser.find_element(By.ID, "submit-form")
    Select(form.find_element(By.NAME, "kind")).select_by_value("mandelbrot")
    assert not form.find_element(By.NAME, "samples").is_displayed()  # π's fields are hidden (and not sent)
    for name, value in (("width", "96"), ("height", "64"), ("max_iter", "80"), ("center_x", "-0.75"),
                        ("span", "2.5"), ("priority", "7")):
        type_into(form.find_element(By.NAME, name), value)
    form.find_element(By.ID, "submit-job").click()
    link = until(browser, lambda b: b.find_elements(By.ID, "submitted-job"), "the submitted job's link")[0]
    job_id = str(link.get_attribute("data-job-id"))
    job = wait_for_job(app, job_id, timeout_s=60)
    assert job.state == "done" and job.priority == 7
    given = {"width": 96, "height": 64, "max_iter": 80, "center_x": -0.75, "span": 2.5}  # as typed, as numbers
    assert {name: job.given_params[name] for name in given} == given
    link.click()
    params = until(browser, lambda b: b.find_element(By.CSS_SELECTOR, "table.params").text, "the parameters")
    assert "center_x -0.75" in params and "span 2.5" in params and "samples" not in params
    assert browser.find_element(By.CSS_SELECTOR, "img.mandelbrot").get_attribute("naturalWidth") == "96"
    screenshot(browser, "mandelbrot-from-the-form")


def test_a_volunteer_opening_its_hydra_dashboard_link_finds_its_row_highlighted_with_its_name(
        browser: Any, url: str, app: HydraCelery) -> None:
    me, other = SigningKey.generate(), SigningKey.generate()
    for key, name, team, micro in ((me, "Ada the Volunteer", "Team Sun", 3_000_000),
                                   (other, "Someone Else", "Team Sun", 9_000_000)):
        account = identity.public_hex(key)
        ledger.open_account(app.redis, account)
        ledger.mint(app.redis, account, Reward(micro, micro, 0, 0, 0, micro, False), job_id="browser",
                    chunk_id=account[:8], reason="test grant")
        profiles.set_profile(app.redis, profiles.signed_profile(key, name, team))
    account = identity.public_hex(me)

    browser.get(f"{url}/#me={account}")
    # (read in one go: the live updates may re-render the rows between finding one and reading it)
    mine = until(browser, lambda b: [(r.text, r.get_attribute("data-account"))
                                     for r in b.find_elements(By.CSS_SELECTOR, "#leaderboard-body tr.me")], "my row")
    [(text, shown_account)] = mine
    assert "Ada the Volunteer" in text and "Team Sun" in text and shown_account == account
    assert len(browser.find_elements(By.CSS_SELECTOR, "#leaderboard-body tr.me")) == 1
    assert "Team Sun" in browser.find_element(By.ID, "teams-body").text
    # The highlight must survive a re-render: the other account earns more, the live update redraws the
    # table with the new amount, and my row is still the highlighted one.
    other_row = f'#leaderboard-body tr[data-account="{identity.public_hex(other)}"]'
    before = until(browser, lambda b: b.find_element(By.CSS_SELECTOR, other_row).text, "the other account's row")
    ledger.mint(app.redis, identity.public_hex(other), Reward(1_000_000, 1_000_000, 0, 0, 0, 1_000_000, False),
                job_id="browser", chunk_id=account[:8] + "-more", reason="test grant")
    until(browser, lambda b: b.find_element(By.CSS_SELECTOR, other_row).text != before,
          "the leaderboard redrawn with the other account's new balance")
    mine = until(browser, lambda b: [(r.text, r.get_attribute("data-account"))
                                     for r in b.find_elements(By.CSS_SELECTOR, "#leaderboard-body tr.me")],
                 "my row after the redraw")
    [(text, shown_account)] = mine
    assert "Ada the Volunteer" in text and shown_account == account
    screenshot(browser, "leaderboard-me")
    browser.get(url + "/")  # remembered in this browser without the fragment
    until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, f'#leaderboard-body tr.me[data-account="{account}"]'),
          "my row, remembered")


def test_a_worker_page_shows_its_instruction_set_limits_audits_and_recent_chunks(
        browser: Any, url: str, app: HydraCelery, stack: LocalStack) -> None:
    worker_id = sorted(app.redis.smembers(keys.WORKERS))[0]
    job_ids = []
    for _ in range(2):  # one chunk each: the first job is deleted, the second's chunk is the newest
        job_ids.append(submit_planned(app, {"kind": "pi", "params": {"samples": 5_000_000}}))
        app.send_task("hydra.dispatch", queue=keys.CONTROL_QUEUE)
        wait_for_job(app, job_ids[-1], timeout_s=60)
    store.delete_job(app.redis, job_ids[0])
    job_id = job_ids[1]
    browser.get(url + "/")
    # Found and clicked in one step, again if a live update replaced the row in between (a stale element).
    until(browser, lambda b: b.find_element(By.XPATH, f'//tbody[@id="workers-body"]//a[.//code[text()="{worker_id}"]]')
          .click() or True, "the worker's link, clicked")
    until(browser, lambda b: b.find_element(By.ID, "worker-id").text == worker_id, "the worker page")
    facts = browser.find_element(By.ID, "worker-facts").text
    for label in ("Instruction set", "CPU limit", "Grid zone", "Pause reason", "π speed", "Mandelbrot speed",
                  "Reliability", "Audits", "Last seen"):
        assert label in facts
    assert browser.find_element(By.CSS_SELECTOR, '[data-fact="cpu_limit"]').text == "100%"
    clean = int(app.redis.hget(keys.worker(worker_id), "audits_passed") or 0)
    audit = browser.find_element(By.CSS_SELECTOR, '[data-fact="audit"]').text
    # (how many audits it has passed by now depends on how the module's earlier jobs fell: 63 in one CI run)
    level = "veteran" if clean >= 200 else "trusted" if clean >= 50 else "established" if clean >= 10 else "probation"
    expected = f"{level}: {clean} clean audit(s) in a row; {reputation.picks(JobKind.PI, clean)} of 64 π blocks"
    assert audit.startswith(expected), (audit, expected)
    chunks = browser.find_elements(By.CSS_SELECTOR, "#recent-chunks-body tr")
    assert chunks[0].find_element(By.TAG_NAME, "a").get_attribute("href") == f"{url}/jobs/{job_id}"  # newest first
    assert chunks[1].text.startswith(f"{job_ids[0]} (deleted)")
    screenshot(browser, "worker-page")

    later = submit_planned(app, {"kind": "pi", "params": {"samples": 5_000_000}})  # worker.js shows it, no reload
    app.send_task("hydra.dispatch", queue=keys.CONTROL_QUEUE)
    wait_for_job(app, later, timeout_s=60)
    until(browser, lambda b: b.find_element(By.CSS_SELECTOR, "#recent-chunks-body tr a").get_attribute("href")
          == f"{url}/jobs/{later}", "the worker page to show the newest chunk", timeout_s=15)


def test_an_operator_removes_old_finished_jobs_from_the_index_page(
        browser: Any, url: str, app: HydraCelery) -> None:
    """The first click lists what would go; the second removes exactly those; newer and live jobs stay."""
    import time

    now = time.time()
    old = []
    for age_days in (20, 21):  # (younger than HYDRA_JOB_RETENTION_S, 30 days: the stack's sweep keeps them)
        job_id = submit_planned(app, {"kind": "pi", "params": {"samples": 2_000, "seed": 5}})
        store.cancel_job(app.redis, job_id, now=now - age_days * 86_400)
        old.append(job_id)
    recent = submit_planned(app, {"kind": "pi", "params": {"samples": 2_000, "seed": 6}})
    store.cancel_job(app.redis, recent)
    browser.get(url + "/")
    type_into(browser.find_element(By.ID, "operator-token"), TOKEN)
    form = browser.find_element(By.ID, "prune-form")
    type_into(form.find_element(By.NAME, "days"), "many")
    form.find_element(By.ID, "prune-jobs").click()
    until(browser, lambda b: "as a number" in b.find_element(By.ID, "prune-result").text, "the refusal of 'many'")
    type_into(form.find_element(By.NAME, "days"), "19")
    form.find_element(By.ID, "prune-jobs").click()
    listed = until(browser, lambda b: "Click again" in b.find_element(By.ID, "prune-result").text
                   and b.find_element(By.ID, "prune-result").text, "the dry run's count")
    assert listed.startswith("2 finished job(s) ended more than 19 days ago"), listed
    assert all(app.redis.exists(keys.job(j)) for j in old)  # a dry run removes nothing
    screenshot(browser, "prune-armed")
    browser.find_element(By.ID, "prune-jobs").click()
    flash = until(browser, lambda b: b.find_elements(By.ID, "flash") and b.find_element(By.ID, "flash").text,
                  "the 'removed' message after the reload")
    assert flash == "Removed 2 finished job(s) that ended more than 19 days ago."
    assert not any(app.redis.exists(keys.job(j)) for j in old)
    assert store.get_job(app.redis, recent).state == "cancelled"
