"""The web UI's Admin view (users, vhosts, permissions, policies with add and delete, vhost and
user limits with set and clear) in headless Chromium, checked through the API and pika. Ferry
only (RabbitMQ's UI is another page); skipped like test_web_ui when Chromium or selenium is
missing."""

from __future__ import annotations

import pytest

from test_web_ui import (By, browser, button, confirm, conn, ferry, go, page,  # noqa: F401
                         shot, toast, wait)


def admin_texts(d, section: str) -> list[list[str]]:
    rows = d.find_elements(By.CSS_SELECTOR, f"#admin-{section} table tbody tr")
    texts = [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in rows]
    return [t for t in texts if len(t) > 1]   # not the "No policies." row


def test_admin_lists_users_vhosts_permissions(page):
    d = page
    go(d, "#/admin")
    wait(d, lambda: any(r[0] == "guest" for r in admin_texts(d, "users")), "guest among the users")
    wait(d, lambda: any(r[0] == "/" for r in admin_texts(d, "vhosts")), "/ among the vhosts")
    wait(d, lambda: any(r[:2] == ["guest", "/"] for r in admin_texts(d, "permissions")),
         "guest's permissions on /")


def test_add_and_delete_a_policy_from_the_page(page, conn, uniq):
    d = page
    ch = conn.channel()
    queue = uniq("adm")
    ch.queue_declare(queue)
    for _ in range(3):
        ch.basic_publish("", queue, b"x")
    name = uniq("pol")
    go(d, "#/admin")
    form = wait(d, lambda: d.find_elements(By.CSS_SELECTOR, "form[aria-label='Add policy']"),
                "the add-policy form")[0]

    def set_field(field: str, value: str) -> None:
        el = form.find_element(By.NAME, field)
        el.clear()
        el.send_keys(value)

    set_field("name", name)
    set_field("pattern", "^" + queue.replace(".", "\\.") + "$")
    set_field("definition", '{"max-length": "x"}')
    button(d, "Add policy", "//form[@aria-label='Add policy']").click()
    wait(d, lambda: "is not a valid maximum length" in form.find_element(By.CLASS_NAME, "result").text
         and '<<"x">>' in form.find_element(By.CLASS_NAME, "result").text,
         "RabbitMQ's validation text, unescaped")
    set_field("definition", '{"max-length": 1}')
    button(d, "Add policy", "//form[@aria-label='Add policy']").click()
    wait(d, lambda: any(r[1] == name for r in admin_texts(d, "policies")), "the policy listed")
    shot(d, "admin")
    assert ch.queue_declare(queue, passive=True).method.message_count == 1
    d.find_element(By.CSS_SELECTOR, f"button[aria-label='Delete policy {name}']").click()
    assert name in confirm(d, accept=True)
    toast(d, "Policy deleted.")
    wait(d, lambda: not any(r[1] == name for r in admin_texts(d, "policies")), "the policy gone")


def test_set_and_clear_vhost_and_user_limits_from_the_page(page, ferry, uniq):
    from test_management_api import Api, q
    api = Api(ferry)
    d = page
    vhost, user = uniq("limv"), uniq("limu")
    api.ok("PUT", f"/api/vhosts/{q(vhost)}")
    api.ok("PUT", f"/api/users/{q(user)}", {"password": "pw", "tags": ""})
    try:
        go(d, "#/admin")
        for scope, target, limit, value in (("vhost", vhost, "max-queues", "1"),
                                            ("user", user, "max-channels", "2")):
            title = f"Set {scope} limit"
            form = wait(d, lambda: d.find_elements(By.CSS_SELECTOR, f"form[aria-label='{title}']"),
                        f"the {title} form")[0]
            el = form.find_element(By.NAME, scope)
            el.clear()
            el.send_keys(target)
            form.find_element(By.CSS_SELECTOR, f"select[name=limit] option[value={limit}]").click()
            form.find_element(By.NAME, "value").send_keys(value)
            button(d, title, f"//form[@aria-label='{title}']").click()
            wait(d, lambda: "set to" in form.find_element(By.CLASS_NAME, "result").text,
                 f"the {scope} limit set")
            wait(d, lambda: [target, limit, value] in [r[:3] for r in admin_texts(
                d, f"{scope}-limits")], f"the {scope} limit listed")
        assert api.ok("GET", f"/api/vhost-limits/{q(vhost)}") == [
            {"vhost": vhost, "value": {"max-queues": 1}}]
        assert api.ok("GET", f"/api/user-limits/{q(user)}") == [
            {"user": user, "value": {"max-channels": 2}}]
        shot(d, "admin-limits")
        # A user that does not exist: the API's refusal is shown in the form.
        title = "Set user limit"
        form = d.find_element(By.CSS_SELECTOR, f"form[aria-label='{title}']")
        el = form.find_element(By.NAME, "user")
        el.clear()
        el.send_keys(user + "-nobody")
        button(d, title, f"//form[@aria-label='{title}']").click()
        wait(d, lambda: "error" in form.find_element(By.CLASS_NAME, "result").get_attribute("class"),
             "the refusal")
        for scope, target, limit in (("vhost", vhost, "max-queues"), ("user", user, "max-channels")):
            d.find_element(By.CSS_SELECTOR,
                           f"button[aria-label='Clear {scope} limit {limit} of {target}']").click()
            assert limit in confirm(d, accept=True)
            toast(d, "Limit cleared.")
            wait(d, lambda: not [r for r in admin_texts(d, f"{scope}-limits") if r[0] == target],
                 f"the {scope} limit gone")
        assert api.ok("GET", f"/api/vhost-limits/{q(vhost)}") == []
        assert api.ok("GET", f"/api/user-limits/{q(user)}") == []
    finally:
        api.call("DELETE", f"/api/vhosts/{q(vhost)}")
        api.call("DELETE", f"/api/users/{q(user)}")
