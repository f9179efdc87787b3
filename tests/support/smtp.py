"""A local SMTP sink (aiosmtpd) that keeps what it is sent or refuses it, settings that mail to it, and
the download links read back from a weekly files' message."""

from __future__ import annotations

import email
import re
import socket
from email import policy

import pytest
from aiosmtpd.controller import Controller


class Sink:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.refuse = False

    async def handle_DATA(self, server, session, envelope):
        if self.refuse:
            return "550 5.7.1 message refused by policy"
        self.messages.append(envelope.content)
        return "250 OK"


@pytest.fixture
def smtp():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


@pytest.fixture
def xsettings(db, smtp):
    _sink, port = smtp
    return db.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_tls": "none",
            "mail_from": "passerelle@departement.test",
            "export_recipients": ["agent.ft@francetravail.test", "dr.grand-est@francetravail.test"],
            "public_url": "https://passerelle.departement.test",
        }
    )


def links(message: bytes) -> dict[str, str]:
    body = email.message_from_bytes(message, policy=policy.default).get_body().get_content()
    found = re.findall(r"(rsa_\d{3}_\d{4}-W\d{2}_(\w+)\.csv).*?\n\s+(https://\S+/api/v1/exports/download/(\S+))", body)
    return {kind: token for _name, kind, _url, token in found}
