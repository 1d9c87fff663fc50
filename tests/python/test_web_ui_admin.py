"""The web UI's Admin view (users and vhosts with add and delete, permissions with set and clear,
policies and operator policies with add and delete, vhost and user limits with set and clear) in
headless Chromium, checked through the API and pika. Ferry only (RabbitMQ's UI is another page);
skipped like test_web_ui when Chromium or selenium is missing."""

from __future__ import annotations

import pytest

from test_management_api import Api, q
from test_web_ui import (XSS, By, browser, button, click, confirm, conn, depth, ferry,  # noqa: F401
                         go, page, queue_row, shot, toast, wait)


def admin_texts(d, section: str) -> list[list[str]]:
    rows = d.find_elements(By.CSS_SELECTOR, f"#admin-{section} table tbody tr")
    texts = [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in rows]
    return [t for t in texts if len(t) > 1]   # not the "No policies." row


def admin_form(d, title: str):
    """The Admin view's form titled `title` (its submit button has the same text)."""
    return wait(d, lambda: d.find_elements(By.CSS_SELECTOR, f"form[aria-label='{title}']"),
                f"the {title!r} form")[0]


def fill_in(form, values: dict[str, str]) -> None:
    for name, value in values.items():
        el = form.find_element(By.NAME, name)
        el.clear()
        el.send_keys(value)


def submit(d, title: str) -> None:
    button(d, title, f"//form[@aria-label='{title}']").click()


def result_of(form) -> str:
    return form.find_element(By.CLASS_NAME, "result").text


def wait_result(d, form, text: str) -> None:
    wait(d, lambda: result_of(form) == text, f"{text!r} in the form (shows {result_of(form)!r})")


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
    form = admin_form(d, "Add policy")
    fill_in(form, {"name": name, "pattern": "^" + queue.replace(".", "\\.") + "$",
                   "definition": '{"max-length": "x"}'})
    submit(d, "Add policy")
    wait(d, lambda: "is not a valid maximum length" in result_of(form)
         and '<<"x">>' in result_of(form), "RabbitMQ's validation text, unescaped")
    fill_in(form, {"definition": '{"max-length": 1}'})
    submit(d, "Add policy")
    wait(d, lambda: any(r[1] == name for r in admin_texts(d, "policies")), "the policy listed")
    shot(d, "admin")
    assert ch.queue_declare(queue, passive=True).method.message_count == 1
    d.find_element(By.CSS_SELECTOR, f"button[aria-label='Delete policy {name}']").click()
    assert name in confirm(d, accept=True)
    toast(d, "Policy deleted.")
    wait(d, lambda: not any(r[1] == name for r in admin_texts(d, "policies")), "the policy gone")


def test_set_and_clear_vhost_and_user_limits_from_the_page(page, ferry, uniq):
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


def test_add_and_delete_a_user_from_the_page(page, ferry, uniq):
    api = Api(ferry)
    d = page
    user = f"{uniq('usr')} {XSS}"                       # shown as text wherever it appears
    try:
        go(d, "#/admin")
        form = admin_form(d, "Add user")
        fill_in(form, {"username": user, "password": "pw-1", "password-again": "pw-2",
                       "tags": "monitoring"})
        submit(d, "Add user")
        wait_result(d, form, "The two passwords differ.")
        assert api.call("GET", f"/api/users/{q(user)}")[0] == 404
        fill_in(form, {"password-again": "pw-1"})
        button(d, "management", "//form[@aria-label='Add user']").click()   # a tag shortcut
        assert form.find_element(By.NAME, "tags").get_attribute("value") == "monitoring, management"
        submit(d, "Add user")
        wait_result(d, form, f"User {user} added.")
        assert form.find_element(By.NAME, "password").get_attribute("value") == ""
        wait(d, lambda: [user, "monitoring, management", "No access", "yes"] in
             [r[:4] for r in admin_texts(d, "users")], "the user listed with its tags")
        assert sorted(api.ok("GET", f"/api/users/{q(user)}")["tags"]) == ["management", "monitoring"]
        status, me = api.call("GET", "/api/whoami", auth=(user, "pw-1"))
        assert (status, me["name"]) == (200, user), "the password set from the page does not work"
        assert not d.find_elements(By.CSS_SELECTOR, "#view img, #view script")
        shot(d, "admin-users")
        click(d, By.CSS_SELECTOR, f"button[aria-label='Delete user {user}']", "the user's Delete")
        assert user in confirm(d, accept=False)          # cancel keeps it
        assert api.call("GET", f"/api/users/{q(user)}")[0] == 200
        click(d, By.CSS_SELECTOR, f"button[aria-label='Delete user {user}']", "the user's Delete")
        assert user in confirm(d, accept=True)
        toast(d, "User deleted.")
        wait(d, lambda: not any(r[0] == user for r in admin_texts(d, "users")), "the user gone")
        assert api.call("GET", f"/api/users/{q(user)}")[0] == 404
        assert d.execute_script("return document.querySelectorAll('img').length") == 0
    finally:
        api.call("DELETE", f"/api/users/{q(user)}")


def test_add_and_delete_a_vhost_from_the_page(page, ferry, uniq):
    api = Api(ferry)
    d = page
    vhost = uniq("vh") + "/x"                           # one path segment: the "/" is encoded
    try:
        go(d, "#/admin")
        form = admin_form(d, "Add virtual host")
        fill_in(form, {"name": vhost})
        submit(d, "Add virtual host")
        wait_result(d, form, f"Virtual host {vhost} added.")
        wait(d, lambda: any(r[0] == vhost for r in admin_texts(d, "vhosts")), "the vhost listed")
        assert api.ok("GET", f"/api/vhosts/{q(vhost)}")["name"] == vhost
        submit(d, "Add virtual host")
        wait_result(d, form, f"Virtual host {vhost} already exists.")
        click(d, By.CSS_SELECTOR, f"button[aria-label='Delete virtual host {vhost}']",
              "the vhost's Delete")
        assert vhost in confirm(d, accept=True)
        toast(d, "Virtual host deleted.")
        wait(d, lambda: not any(r[0] == vhost for r in admin_texts(d, "vhosts")), "the vhost gone")
        assert api.call("GET", f"/api/vhosts/{q(vhost)}")[0] == 404
    finally:
        api.call("DELETE", f"/api/vhosts/{q(vhost)}")


def test_set_and_clear_a_permission_from_the_page(page, ferry, uniq):
    api = Api(ferry)
    d = page
    vhost, user = uniq("permv"), uniq("permu")
    api.ok("PUT", f"/api/vhosts/{q(vhost)}")
    api.ok("PUT", f"/api/users/{q(user)}", {"password": "pw", "tags": ""})
    try:
        go(d, "#/admin")
        wait(d, lambda: any(r[0] == user for r in admin_texts(d, "users")), "the user listed")
        form = admin_form(d, "Set permission")
        assert [form.find_element(By.NAME, k).get_attribute("value")
                for k in ("vhost", "configure", "write", "read")] == ["/", ".*", ".*", ".*"]
        fill_in(form, {"user": user + "-nobody", "vhost": vhost})
        submit(d, "Set permission")
        wait_result(d, form, f"There is no user {user}-nobody.")
        fill_in(form, {"user": user, "write": "^w\\."})
        submit(d, "Set permission")
        wait_result(d, form, f"Permissions of {user} in {vhost} set.")
        wait(d, lambda: [user, vhost, ".*", "^w\\.", ".*"] in
             [r[:5] for r in admin_texts(d, "permissions")], "the permission listed")
        assert api.ok("GET", f"/api/permissions/{q(vhost)}/{q(user)}") == {
            "user": user, "vhost": vhost, "configure": ".*", "write": "^w\\.", "read": ".*"}
        wait(d, lambda: [user, "", vhost] in [r[:3] for r in admin_texts(d, "users")],
             "the vhost among the user's accessible ones")
        shot(d, "admin-permissions")
        click(d, By.CSS_SELECTOR, f"button[aria-label='Clear permissions of {user} in {vhost}']",
              "the permission's Clear")
        assert user in confirm(d, accept=True)
        toast(d, "Permissions cleared.")
        wait(d, lambda: not any(r[0] == user for r in admin_texts(d, "permissions")),
             "the permission gone")
        assert api.call("GET", f"/api/permissions/{q(vhost)}/{q(user)}")[0] == 404
    finally:
        api.call("DELETE", f"/api/vhosts/{q(vhost)}")
        api.call("DELETE", f"/api/users/{q(user)}")


def test_operator_policy_from_the_page_shows_in_the_queues_view(page, ferry, conn, uniq):
    api = Api(ferry)
    d = page
    ch = conn.channel()
    ch.confirm_delivery()
    queue = uniq("opq")
    ch.queue_declare(queue)
    pattern = "^" + queue.replace(".", "\\.") + "$"
    pol, op = uniq("pol"), uniq("op")
    api.ok("PUT", f"/api/policies/%2F/{q(pol)}",
           {"pattern": pattern, "definition": {"max-length": 5}, "apply-to": "queues"})

    def policy_cell():
        heads = [th.text for th in d.find_elements(By.CSS_SELECTOR, "#view table thead th")]
        row = queue_row(d, queue)
        return row[heads.index("Policy")] if row and "Policy" in heads else None

    try:
        go(d, "#/admin")
        form = admin_form(d, "Add operator policy")
        fill_in(form, {"name": op, "pattern": pattern, "definition": '{"max-length": 2}'})
        form.find_element(By.CSS_SELECTOR, "select[name='apply-to'] option[value='queues']").click()
        submit(d, "Add operator policy")
        wait_result(d, form, f"Policy {op} set.")
        wait(d, lambda: any(r[1] == op for r in admin_texts(d, "operator-policies")),
             "the operator policy listed")
        got = api.ok("GET", f"/api/operator-policies/%2F/{q(op)}")
        assert (got["pattern"], got["definition"], got["apply-to"]) == (
            pattern, {"max-length": 2}, "queues")
        for _ in range(4):
            ch.basic_publish("", queue, b"x")
        assert depth(ch, queue) == 2                     # the stricter of 5 and 2
        go(d, "#/queues")
        wait(d, lambda: policy_cell() == f"{pol} / {op}", "both policies in the queue's row")
        shot(d, "queues-policies")
        go(d, "#/admin")
        click(d, By.CSS_SELECTOR, f"#admin-operator-policies button[aria-label='Delete policy {op}']",
              "the operator policy's Delete")
        assert op in confirm(d, accept=True)
        toast(d, "Policy deleted.")
        assert api.call("GET", f"/api/operator-policies/%2F/{q(op)}")[0] == 404
        go(d, "#/queues")
        wait(d, lambda: policy_cell() == pol, "only the policy in the queue's row")
    finally:
        api.call("DELETE", f"/api/operator-policies/%2F/{q(op)}")
        api.call("DELETE", f"/api/policies/%2F/{q(pol)}")
        ch.queue_delete(queue)
