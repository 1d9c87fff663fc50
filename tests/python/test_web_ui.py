"""The web UI (crates/ferry-http/ui, served at / by the management listener), end to end in
headless Chromium driven by selenium, with pika on the other side checking what really
happened in the broker. Ferry only: RabbitMQ's management UI is a different page.

Needs Debian's `chromium` and `chromium-driver` (.ci/run installs them). Without them the
module is skipped locally with the reason, and fails under CI (CI=true), where it must run.
Set FERRY_UI_SHOTS=DIR to keep a screenshot of each view; a failed test always leaves one
(path printed in its teardown output).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pika
import pytest

from conftest import close_quietly

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")

try:
    from selenium import webdriver
    from selenium.common.exceptions import (NoAlertPresentException, StaleElementReferenceException,
                                            TimeoutException)
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    SELENIUM = None
except ImportError as e:  # pragma: no cover - depends on the venv
    SELENIUM = str(e)

XSS = "<img src=x onerror=alert(1)>"
WAIT = 20.0          # a view refreshes every 5 s; rates are sampled every 5 s


def _missing() -> str | None:
    if SELENIUM:
        return f"selenium is not installed ({SELENIUM}); pip install -r tests/python/requirements.txt"
    gone = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if gone:
        return (f"{' and '.join(gone)} not found: apt-get install chromium chromium-driver "
                "(Debian's packages; .ci/run installs them)")
    return None


@pytest.fixture(scope="module")
def ferry(broker_factory):
    why = _missing()
    if why:
        if IN_CI:
            pytest.fail(f"the web UI test must run in CI: {why}", pytrace=False)
        pytest.skip(why)
    b = broker_factory.start(broker_factory.make("ferry", "webui"))
    assert "http" in b.endpoints, f"Ferry printed no http= endpoint: {b.endpoints}"
    yield b
    b.close()


@pytest.fixture(scope="module")
def browser(ferry):
    profile = tempfile.mkdtemp(prefix="ferry-ui-chromium-")
    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    # The machine's network is closed: without the background-networking flags Chromium
    # keeps trying to reach Google's hosts (see the environment notes).
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--window-size=1280,1000", f"--user-data-dir={profile}"):
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)
    d.set_page_load_timeout(30)
    d.base = f"http://{ferry.endpoints['http']}"
    yield d
    d.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser, request, tmp_path_factory):
    """The browser, logged in as guest on the overview. After the test: no JavaScript errors
    in the console, and a screenshot if the test failed."""
    browser.get(browser.base + "/#/")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    login(browser, "guest", "guest")
    wait(browser, lambda: visible(browser, "app"), "the app after login")
    browser.get_log("browser")  # start the console check from here
    yield browser
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        shots = tmp_path_factory.mktemp("webui-failure")
        path = shots / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', request.node.name)}.png"
        try:
            browser.save_screenshot(str(path))
            print(f"\nscreenshot of the failed test: {path}")
        except Exception as e:  # an alert may still be open
            print(f"\nno screenshot: {e}")
        return
    errors = [e for e in browser.get_log("browser")
              if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]
    assert not errors, f"JavaScript errors in the page: {errors}"


@pytest.fixture
def conn(ferry):
    """A pika connection to this module's Ferry (not the session broker, which the oracle
    parametrizes)."""
    c = pika.BlockingConnection(ferry.params())
    yield c
    close_quietly(c)


def shot(d, name: str) -> None:
    where = os.environ.get("FERRY_UI_SHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(Path(where) / f"{name}.png"))


def wait(d, cond, what: str, timeout: float = WAIT):
    """cond() until truthy; a list view rebuilt under it (every poll) just means try again."""
    try:
        return WebDriverWait(d, timeout, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)
                             ).until(lambda _: cond())
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}") from None


def by_id(d, id_: str):
    return d.find_element(By.ID, id_)


def visible(d, id_: str) -> bool:
    return by_id(d, id_).is_displayed()


def login(d, user: str, password: str) -> None:
    wait(d, lambda: visible(d, "login"), "the login form")
    for field, value in (("login-user", user), ("login-pass", password)):
        el = by_id(d, field)
        el.clear()
        el.send_keys(value)
    d.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()


def button(d, text: str, scope: str = ""):
    return d.find_element(By.XPATH, f"{scope}//button[normalize-space()='{text}']")


def confirm(d, accept: bool = True) -> str:
    """Answers the page's confirmation dialog; returns its message."""
    dlg = wait(d, lambda: d.find_elements(By.CSS_SELECTOR, "dialog[open]"), "a dialog")[0]
    text = dlg.find_element(By.TAG_NAME, "p").text
    dlg.find_element(By.CSS_SELECTOR, f"button[value={'ok' if accept else 'cancel'}]").click()
    wait(d, lambda: not d.find_elements(By.CSS_SELECTOR, "dialog[open]"), "the dialog to close")
    return text


def toast(d, text: str) -> None:
    wait(d, lambda: by_id(d, "toast").text == text, f"the message {text!r}")


def go(d, hash_: str) -> None:
    d.execute_script("window.location.hash = arguments[0]", hash_)


def click(d, by, locator: str, what: str) -> None:
    """Clicks an element of a list view, finding it again if a refresh replaced it."""
    def attempt():
        d.find_element(by, locator).click()
        return True
    wait(d, attempt, what)


def queue_row(d, name: str):
    """The texts of the queue's row in the Queues table, or None."""
    for row in d.find_elements(By.CSS_SELECTOR, "#view table tbody tr"):
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        if len(cells) > 1 and cells[1] == name:
            return cells
    return None


def depth(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def open_queue(d, name: str) -> None:
    go(d, "#/queues")
    wait(d, lambda: queue_row(d, name), f"queue {name!r} in the list")
    click(d, By.LINK_TEXT, name, f"the link to queue {name!r}")
    wait(d, lambda: d.find_elements(By.CSS_SELECTOR, "#view h1 .name")
         and d.find_element(By.CSS_SELECTOR, "#view h1 .name").text == name,
         f"the page of queue {name!r}")


# -- tests ------------------------------------------------------------------------------------------

def test_assets_are_served_with_types_and_cache_headers(ferry):
    import urllib.request
    base = f"http://{ferry.endpoints['http']}"
    for path, ctype in (("/", "text/html"), ("/ui/app.js", "text/javascript"),
                        ("/ui/style.css", "text/css"), ("/ui/chart.js", "text/javascript")):
        with urllib.request.urlopen(base + path, timeout=10) as r:
            assert r.headers["content-type"].startswith(ctype), path
            assert r.headers["cache-control"] == "no-cache", path
            assert r.headers["etag"], path
            assert "script-src 'self'" in r.headers["content-security-policy"]
            etag = r.headers["etag"]
        req = urllib.request.Request(base + path, headers={"If-None-Match": etag})
        try:
            urllib.request.urlopen(req, timeout=10)
            status = 200
        except urllib.error.HTTPError as e:
            status = e.code
        assert status == 304, path


def test_login_logout_and_a_401_returns_to_the_login_form(browser):
    d = browser
    d.get(d.base + "/")
    d.execute_script("sessionStorage.clear()")
    d.refresh()
    login(d, "guest", "wrong")
    wait(d, lambda: by_id(d, "login-error").text == "Login failed", "the login failure reason")
    assert not visible(d, "app")
    login(d, "guest", "guest")
    wait(d, lambda: visible(d, "app"), "the app after login")
    assert by_id(d, "who").text.startswith("guest")
    wait(d, lambda: by_id(d, "total-queues").text != "", "the overview totals")
    # Credentials that stop working (user deleted, password changed) send the page back to
    # the login form with the API's reason on the next request.
    d.execute_script("const s = JSON.parse(sessionStorage.getItem('ferry.auth'));"
                     "s.token = btoa('guest:changed'); "
                     "sessionStorage.setItem('ferry.auth', JSON.stringify(s));")
    button(d, "Refresh").click()
    wait(d, lambda: visible(d, "login"), "the login form after a 401")
    assert by_id(d, "login-error").text == "Login failed"
    login(d, "guest", "guest")
    wait(d, lambda: visible(d, "app"), "the app after logging in again")
    button(d, "Log out").click()
    wait(d, lambda: visible(d, "login"), "the login form after logging out")
    assert d.execute_script("return sessionStorage.getItem('ferry.auth')") is None


def test_overview_shows_live_publish_rate_and_chart(page, ferry, uniq):
    d = page
    queue = uniq("rate")
    stop = threading.Event()
    published = [0]

    def publisher():
        c = pika.BlockingConnection(ferry.params())
        try:
            ch = c.channel()
            ch.queue_declare(queue)
            deadline = time.monotonic() + 60          # bounded, whatever the test does
            while not stop.is_set() and time.monotonic() < deadline:
                ch.basic_publish("", queue, b"tick")
                published[0] += 1
                c.process_data_events(time_limit=0.005)
            ch.queue_delete(queue)
        finally:
            close_quietly(c)

    t = threading.Thread(target=publisher, name="ui-publisher", daemon=True)
    t.start()
    try:
        go(d, "#/")

        def publish_rate():
            m = re.fullmatch(r"([0-9.]+)/s", by_id(d, "rate-publish").text)
            return m and float(m.group(1)) > 0

        wait(d, publish_rate, "a publish rate > 0 on the overview", timeout=30)
        assert published[0] > 0
        assert int(by_id(d, "total-connections").text.replace(",", "")) >= 1
        assert "publish" in by_id(d, "rate-chart").get_attribute("aria-label")
        # The chart's canvas has drawn the publish line (its colour is #2f6fdf).
        blue = d.execute_script("""
            const c = document.getElementById('rate-chart');
            const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < px.length; i += 4)
              if (px[i + 3] > 200 && px[i + 2] > 180 && px[i] < 110 && px[i + 1] < 150) n++;
            return n;""")
        assert blue > 20, f"no publish line drawn ({blue} blue pixels)"
        shot(d, "overview")
    finally:
        stop.set()
        t.join(15)


def test_queue_list_depth_and_get_from_the_page(page, conn, uniq):
    d = page
    ch = conn.channel()
    queue = uniq("get")
    ch.queue_declare(queue)
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", queue, f"payload {i}".encode())
    go(d, "#/queues")
    cells = wait(d, lambda: queue_row(d, queue), "the queue in the list")
    assert (cells[0], cells[6], cells[7], cells[8]) == ("/", "3", "0", "3")  # ready, unacked, total
    shot(d, "queues")
    open_queue(d, queue)

    form = "//form[@aria-label='Get messages']"
    count = d.find_element(By.XPATH, f"{form}//input[@name='count']")
    count.clear()
    count.send_keys("2")
    button(d, "Get messages", form).click()
    wait(d, lambda: len(d.find_elements(By.CSS_SELECTOR, ".message .payload")) == 2, "two messages")
    payloads = [p.text for p in d.find_elements(By.CSS_SELECTOR, ".message .payload")]
    assert payloads == ["payload 0", "payload 1"]
    shot(d, "queue")
    assert depth(ch, queue) == 3                          # requeued

    d.find_element(By.XPATH, f"{form}//select[@name='ackmode']/option[@value='ack_requeue_false']").click()
    count.clear()
    count.send_keys("1")
    button(d, "Get messages", form).click()
    wait(d, lambda: [p.text for p in d.find_elements(By.CSS_SELECTOR, ".message .payload")]
         == ["payload 0"], "one acked message")
    assert depth(ch, queue) == 2                          # taken out
    ch.queue_delete(queue)


def test_publish_from_the_queue_page_arrives(page, conn, uniq):
    d = page
    ch = conn.channel()
    queue = uniq("pub")
    ch.queue_declare(queue)
    open_queue(d, queue)
    form = "//form[@aria-label='Publish message']"
    assert d.find_element(By.XPATH, f"{form}//input[@name='routing_key']").get_attribute("value") == queue
    d.find_element(By.XPATH, f"{form}//select[@name='delivery_mode']/option[@value='2']").click()
    d.find_element(By.XPATH, f"{form}//textarea[@name='headers']").send_keys("origin = web ui")
    d.find_element(By.XPATH, f"{form}//textarea[@name='properties']").send_keys(
        "content_type = text/plain\nmessage_id = m-1")
    d.find_element(By.XPATH, f"{form}//textarea[@name='payload']").send_keys("hello from the page")
    button(d, "Publish message", form).click()
    wait(d, lambda: d.find_element(By.XPATH, f"{form}//p[@role='status']").text == "Message published.",
         "the publish result")
    method, props, body = ch.basic_get(queue, auto_ack=True)
    assert method is not None, "the message published from the page did not arrive"
    assert body == b"hello from the page"
    assert (props.delivery_mode, props.content_type, props.message_id) == (2, "text/plain", "m-1")
    assert props.headers == {"origin": "web ui"}
    ch.queue_delete(queue)


def test_publish_from_the_exchange_page_routes_by_key(page, conn, uniq):
    d = page
    ch = conn.channel()
    exchange, queue = uniq("x"), uniq("bound")
    ch.exchange_declare(exchange, "direct")
    ch.queue_declare(queue)
    ch.queue_bind(queue, exchange, "red")
    go(d, "#/exchanges")
    click(d, By.LINK_TEXT, exchange, "the exchange in the list")
    form = "//form[@aria-label='Publish message']"
    wait(d, lambda: d.find_elements(By.XPATH, form), "the exchange page")
    key = d.find_element(By.XPATH, f"{form}//input[@name='routing_key']")
    payload = d.find_element(By.XPATH, f"{form}//textarea[@name='payload']")
    status = f"{form}//p[@role='status']"
    key.send_keys("blue")
    payload.send_keys("lost")
    button(d, "Publish message", form).click()
    wait(d, lambda: d.find_element(By.XPATH, status).text == "Message published, but not routed.",
         "the unroutable result")
    key.clear()
    key.send_keys("red")
    payload.clear()
    payload.send_keys("routed")
    button(d, "Publish message", form).click()
    wait(d, lambda: d.find_element(By.XPATH, status).text == "Message published.", "the routed result")
    shot(d, "exchange")
    method, _props, body = ch.basic_get(queue, auto_ack=True)
    assert body == b"routed"
    assert ch.basic_get(queue, auto_ack=True)[0] is None
    ch.queue_delete(queue)
    ch.exchange_delete(exchange)


def test_purge_and_delete_from_the_page(page, conn, uniq):
    d = page
    ch = conn.channel()
    queue = uniq("purge")
    ch.queue_declare(queue)
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", queue, b"x")
    open_queue(d, queue)
    button(d, "Purge messages").click()
    assert queue in confirm(d, accept=True)
    toast(d, "Queue purged.")
    assert depth(ch, queue) == 0

    button(d, "Delete queue").click()
    confirm(d, accept=False)                              # cancel keeps it
    assert depth(ch, queue) == 0
    button(d, "Delete queue").click()
    confirm(d, accept=True)
    toast(d, "Queue deleted.")
    wait(d, lambda: d.current_url.endswith("#/queues"), "the queue list after the delete")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(queue, passive=True)
    assert e.value.reply_code == 404
    wait(d, lambda: d.find_elements(By.CSS_SELECTOR, "#view table") and queue_row(d, queue) is None,
         "the queue gone from the list")


def test_close_a_connection_from_the_page(page, ferry, uniq):
    d = page
    name = uniq("conn")
    victim = pika.BlockingConnection(ferry.params(client_properties={"connection_name": name}))
    try:
        go(d, "#/connections")
        search = d.find_element(By.CSS_SELECTOR, "#view input[type=search]")
        search.send_keys(name)
        shot(d, "connections")
        click(d, By.CSS_SELECTOR, f"button[aria-label*={name!r}]", "the connection's Close button")
        assert "Close connection" in confirm(d, accept=True)
        toast(d, "Connection closed.")
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
            for _ in range(100):                         # at most 10 s
                victim.process_data_events(time_limit=0.1)
        assert e.value.reply_code == 320
        assert "Closed via the Ferry web UI" in e.value.reply_text
    finally:
        close_quietly(victim)


def test_hostile_names_and_payloads_render_as_text(page, conn):
    d = page
    ch = conn.channel()
    ch.queue_declare(XSS)
    ch.confirm_delivery()
    payload = "<script>alert(2)</script><b>bold</b>"
    ch.basic_publish("", XSS, payload.encode())
    try:
        go(d, "#/queues")
        wait(d, lambda: queue_row(d, XSS), "the hostile queue listed with its name as text")
        assert not d.find_elements(By.CSS_SELECTOR, "#view img, #view b, #view script")
        open_queue(d, XSS)
        form = "//form[@aria-label='Get messages']"
        button(d, "Get messages", form).click()
        pre = wait(d, lambda: d.find_elements(By.CSS_SELECTOR, ".message .payload"), "the message")[0]
        assert pre.text == payload
        shot(d, "hostile-queue")
        button(d, "Purge messages").click()
        assert XSS in confirm(d, accept=False)
        assert not d.find_elements(By.CSS_SELECTOR, "#view img, #view b, #view script, dialog img")
        with pytest.raises(NoAlertPresentException):
            d.switch_to.alert.text                       # no injected alert() ran
        assert d.execute_script("return document.querySelectorAll('img').length") == 0
    finally:
        ch.queue_delete(XSS)


def api_put(ferry, path: str, body: dict) -> None:
    import base64
    import json
    import urllib.request
    req = urllib.request.Request(
        f"http://{ferry.endpoints['http']}{path}", method="PUT", data=json.dumps(body).encode(),
        headers={"content-type": "application/json",
                 "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status in (201, 204), (path, r.status)


def test_tags_decide_who_logs_in_and_what_they_see(browser, ferry, uniq):
    d = browser
    viewer, outsider = uniq("viewer"), uniq("outsider")
    api_put(ferry, f"/api/users/{viewer}", {"password": "pw", "tags": "management"})
    api_put(ferry, f"/api/permissions/%2F/{viewer}", {"configure": ".*", "write": ".*", "read": ".*"})
    api_put(ferry, f"/api/users/{outsider}", {"password": "pw", "tags": ""})
    d.get(d.base + "/")
    d.execute_script("sessionStorage.clear()")
    d.refresh()
    login(d, outsider, "pw")                              # no management tag: refused, with why
    wait(d, lambda: by_id(d, "login-error").text == "Not management user", "the refusal reason")
    login(d, viewer, "pw")
    wait(d, lambda: visible(d, "app"), "the app for a management user")
    # Node details need the monitoring tag: the page says so and stays logged in.
    wait(d, lambda: "monitoring tag" in by_id(d, "view").text, "the note about node details")
    assert by_id(d, "total-queues").text != ""
    assert visible(d, "app")


def test_channels_and_consumers_are_listed(page, conn, uniq):
    d = page
    ch = conn.channel()
    queue = uniq("consumed")
    ch.queue_declare(queue)
    ch.basic_qos(prefetch_count=7)
    tag = ch.basic_consume(queue, lambda *a: None, consumer_tag=uniq("tag"))
    go(d, "#/consumers")
    wait(d, lambda: tag in by_id(d, "view").text, "the consumer in the list")
    row = d.find_element(By.XPATH, f"//td[normalize-space()={tag!r}]/..").text
    assert queue in row and "7" in row
    go(d, "#/channels")
    wait(d, lambda: d.find_elements(By.XPATH, "//h1[normalize-space()='Channels']")
         and "No channels." not in by_id(d, "view").text, "channels in the list")
    ch.basic_cancel(tag)
    ch.queue_delete(queue)


@pytest.mark.timeout(180)
def test_overview_lists_the_cluster_nodes_and_a_stopped_one(browser, tmp_path):
    """On a clustered node the overview lists every member with its state, role and own memory
    and disk figures (sent with its answer to this node's ping); a quorum queue shows its leader
    and replicas in the queue list and on its page; a killed member shows as down (and is no
    longer among the queue's online replicas)."""
    from conftest import FERRY_BIN
    from harness.cluster import FerryCluster, Lab, netns_available
    why = netns_available()
    if why:
        pytest.skip(f"cluster lab: {why}")
    lab = Lab(3)
    c = FerryCluster(lab, FERRY_BIN, tmp_path)
    try:
        c.start_all()
        c.until(1, "three running members", lambda v: len(v) == 3 and all(n["running"] for n in v))
        d = browser
        d.get(f"http://{c.nodes[0].endpoints['http']}/#/")
        d.execute_script("sessionStorage.clear()")
        d.refresh()
        login(d, "guest", "guest")

        def rows() -> dict[str, str]:
            try:
                table = d.find_element(By.CSS_SELECTOR, "table[aria-label='Cluster nodes']")
                out = {}
                for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr"):
                    cells = [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                    out[cells[0]] = " | ".join(cells)
                return out
            except StaleElementReferenceException:  # redrawn while read
                return {}

        wait(d, lambda: sorted(rows()) == ["n1", "n2", "n3"]
             and all("running" in r for r in rows().values())
             and "B" in rows()["n2"].split(" | ")[3], "three running nodes with n2's memory")
        assert sum("metadata leader" in r for r in rows().values()) == 1, rows()
        shot(d, "cluster-nodes")

        # A quorum queue shows its leader and replicas, in the list and on its page.
        from harness.lab_clients import params
        qc = pika.BlockingConnection(params(c.nodes[0]))
        qc.channel().queue_declare("uiq", durable=True, arguments={"x-queue-type": "quorum"})
        qc.close()

        def fact(name: str) -> str:
            try:
                dd = d.find_element(By.XPATH, f"//dt[text()='{name}']/following-sibling::dd[1]")
                return dd.text
            except Exception:  # not drawn yet, or redrawn while read
                return ""

        go(d, "#/queues")
        wait(d, lambda: re.search(r"n[123] \+2", " | ".join(queue_row(d, "uiq") or [])) is not None,
             "the list shows the leader and +2")
        go(d, "#/queues/%2F/uiq")
        wait(d, lambda: fact("Replicas") == "n1, n2, n3" and fact("Leader") in ("n1", "n2", "n3")
             and fact("Online") == "n1, n2, n3", "the queue's leader, replicas and online ones")
        shot(d, "cluster-queue")
        c.nodes[2].kill9()
        wait(d, lambda: "n3" not in fact("Online") and fact("Replicas") == "n1, n2, n3",
             "n3 no longer online, still a replica", timeout=40)
        go(d, "#/")
        wait(d, lambda: "down" in rows().get("n3", ""), "n3 shown down", timeout=40)
    finally:
        c.close()
        lab.close()
