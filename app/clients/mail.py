"""The mail server's client (PASSERELLE_SMTP_*): one message sent over SMTP, with STARTTLS or SSL and
credentials if given. What the message says is its domain's business (the weekly files: app.exports.mail)."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from app.settings import Settings


def send(settings: Settings, msg: EmailMessage) -> None:
    """Send `msg` through the configured server; smtplib's errors (refused, unreachable, timed out) go to the
    caller, which says what was not sent."""
    if not settings.smtp_host:
        raise RuntimeError("PASSERELLE_SMTP_HOST is not set")
    context = ssl.create_default_context()
    timeout = settings.smtp_timeout_seconds
    if settings.smtp_tls == "ssl":
        server: smtplib.SMTP = smtplib.SMTP_SSL(
            settings.smtp_host, settings.smtp_port, timeout=timeout, context=context
        )
    else:
        server = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
    with server:
        if settings.smtp_tls == "starttls":
            server.starttls(context=context)
        if settings.smtp_user:
            password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
            server.login(settings.smtp_user, password)
        server.send_message(msg)
