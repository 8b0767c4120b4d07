"""Uploads are refused early, against the live server with real HTTP: the role first (a viewer
gets 403 before the body is read), then the size (a Content-Length over the limit is refused
before reading; a body that streams past it is cut off at the limit with 413), and no
temporary file is left behind."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import pytest
import requests

from controlplane.api.services import api_token_get_or_create
from controlplane.datasets.models import Dataset

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 4096
BOUNDARY = "edgeplane-test-boundary"


def token_of(username: str) -> str:
    from django.contrib.auth import get_user_model

    return api_token_get_or_create(user=get_user_model().objects.get(username=username))


@pytest.fixture
def limits(settings, tmp_path):
    """A low limit, and uploads spooled to disk (in a folder the test can watch) from the first byte."""
    settings.EDGEPLANE_UPLOAD_MAX_BYTES = LIMIT
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    return tmp_path


def multipart_head(team: str, name: str = "big") -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"team\"\r\n\r\n{team}\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode()


def multipart_tail() -> bytes:
    return f"\r\n--{BOUNDARY}--\r\n".encode()


def row_bytes(n: int) -> bytes:
    row = b'{"prompt": "1+1=", "answer": "2"}\n'
    return (row * (n // len(row) + 1))[:n]


def answer_before_the_body(url: str, token: str, content_length: int, path: str = "/api/datasets/",
                           head: bytes = b"", content_type: str = f"multipart/form-data; boundary={BOUNDARY}",
                           ) -> tuple[int, bytes]:
    """Send the headers (and ``head``) of a request that announces ``content_length`` bytes,
    and read the answer without sending the rest: it comes only if the server answers before
    reading the body."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as sock:
        request = (f"POST {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
                   f"Authorization: Token {token}\r\n"
                   f"Content-Type: {content_type}\r\n"
                   f"Content-Length: {content_length}\r\nConnection: close\r\n\r\n").encode() + head
        sock.sendall(request)
        sock.settimeout(15)
        data = b""
        deadline = time.monotonic() + 15
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        try:  # the rest of the answer, if it is already there
            sock.settimeout(1)
            while chunk := sock.recv(65536):
                data += chunk
        except OSError:
            pass
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


def test_a_viewer_is_refused_before_the_body_is_read(live_server, acme, fast_passwords, limits):
    status, data = answer_before_the_body(live_server.url, token_of("vera"), content_length=10 * 1024**3,
                                          head=multipart_head("acme"))
    assert status == 403, data[:500]
    assert b"launcher role" in data
    assert list(limits.iterdir()) == []


def test_a_viewer_named_team_in_the_query_is_refused_before_the_body_is_read(
        live_server, acme, globex, fast_passwords, limits):
    from controlplane.accounts.services import membership_set

    membership_set(team=globex, username="vera", role="launcher")  # a launcher elsewhere, a viewer in acme
    status, data = answer_before_the_body(live_server.url, token_of("vera"), content_length=10 * 1024**3,
                                          path="/api/datasets/?team=acme", head=multipart_head("acme"))
    assert status == 403, data[:500]
    assert list(limits.iterdir()) == []


def test_a_content_length_over_the_limit_is_refused_before_the_body_is_read(live_server, acme, fast_passwords,
                                                                             limits):
    status, data = answer_before_the_body(live_server.url, token_of("bob"), content_length=10 * 1024**3,
                                          head=multipart_head("acme"))
    assert status == 413, data[:500]
    assert f"limit of {LIMIT} bytes".encode() in data
    assert list(limits.iterdir()) == []


def test_a_body_that_streams_past_the_limit_is_cut_off_with_413_and_leaves_no_file(
        live_server, acme, fast_passwords, limits):
    """The Content-Length passes (the file is just over the limit, within the form's overhead),
    so the bytes are counted as they arrive."""
    body = multipart_head("acme") + row_bytes(LIMIT * 3) + multipart_tail()
    response = requests.post(live_server.url + "/api/datasets/", data=body, timeout=30,
                             headers={"Authorization": f"Token {token_of('bob')}",
                                      "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert response.status_code == 413, response.text
    assert response.json()["limit_bytes"] == LIMIT
    assert f"limit of {LIMIT} bytes" in response.json()["detail"]
    assert list(limits.iterdir()) == []
    assert not Dataset.objects.filter(name="big").exists()


def test_a_file_within_the_limit_still_uploads(live_server, acme, fast_passwords, limits):
    rows = b"".join(b'{"key": "k%d", "prompt": "%d+1=", "answer": "%d"}\n' % (i, i, i + 1) for i in range(20))
    assert len(rows) < LIMIT
    body = multipart_head("acme", name="small") + rows + multipart_tail()
    response = requests.post(live_server.url + "/api/datasets/", data=body, timeout=30,
                             headers={"Authorization": f"Token {token_of('bob')}",
                                      "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert response.status_code == 201, response.text
    # Django deletes an accepted upload's temporary file once the response is closed, which the
    # server thread does just after the client has its answer
    deadline = time.monotonic() + 10
    while list(limits.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(limits.iterdir()) == []


def test_a_signed_in_viewer_in_the_browser_is_refused_before_the_upload_is_read(live_server, acme, fast_passwords,
                                                                                limits):
    """The session path: the CSRF check reads the form during authentication, so the role
    check runs in the upload handler, before the file's first byte."""
    from tests.test_server_errors import signed_in

    session = signed_in("vera")
    session.get(live_server.url + "/accounts/login/", timeout=30)  # a CSRF cookie
    body = multipart_head("acme") + row_bytes(LIMIT * 3) + multipart_tail()
    response = session.post(live_server.url + "/api/datasets/", data=body, timeout=30,
                            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                                     "X-CSRFToken": session.cookies["csrftoken"],
                                     "Referer": live_server.url + "/"})
    assert response.status_code == 403, response.text
    assert list(limits.iterdir()) == []


def test_a_json_body_over_the_limit_is_refused_before_it_is_read(live_server, acme, fast_passwords, settings):
    """DRF's JSON parser read any length into memory (past DATA_UPLOAD_MAX_MEMORY_SIZE)."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = LIMIT
    status, data = answer_before_the_body(live_server.url, token_of("bob"), content_length=10 * 1024**3,
                                          path="/api/runs/", head=b'{"team": "acme", "config": {"a": "',
                                          content_type="application/json")
    assert status == 413, data[:500]
    assert f"limit of {LIMIT} bytes".encode() in data
