"""The weekly e-mail goes out once (issue #24 item 4): a run killed after the mail server took the e-mail but
before it was recorded sends the very same message again (same Message-ID, same links: one message to its
reader), never a second one with new links; a week whose e-mail failed is retried by the next default run
until sent, or until an operator cancels it. On SQLite and PostgreSQL, against a real SMTP sink."""

from __future__ import annotations

import email
from datetime import timedelta
from email import policy

import pytest
from sqlalchemy import func, select

from app.clock import today
from app.db import get_engine, session_scope
from app.exports import publish as pub
from app.exports.weekly import Week
from app.models import AccessRecord, ExportLink, ExportMail
from tests.support.cli import run_cli
from tests.support.factories import weekly_departement
from tests.support.smtp import links


class Killed(BaseException):
    """The process ends here (a kill -9: nothing after this point runs)."""


def _count(settings, model, *where) -> int:
    with session_scope(settings) as s:
        return s.scalar(select(func.count()).select_from(model).where(*where)) or 0


def test_killed_after_the_server_took_the_mail_the_rerun_sends_the_same_message(xsettings, smtp, tmp_path, monkeypatch):
    sink, _port = smtp
    week = weekly_departement(xsettings, tmp_path, foyers=60)
    real = pub.send

    def accepted_then_killed(settings, msg):
        real(settings, msg)
        raise Killed

    monkeypatch.setattr(pub, "send", accepted_then_killed)
    with pytest.raises(Killed):
        pub.publish(get_engine(xsettings), xsettings, "055", week)
    assert len(sink.messages) == 1
    monkeypatch.setattr(pub, "send", real)
    again = pub.publish(get_engine(xsettings), xsettings, "055", week)
    assert again.mailed and again.resumed and len(sink.messages) == 2
    first, second = (email.message_from_bytes(m, policy=policy.default) for m in sink.messages)
    assert first["Message-ID"] == second["Message-ID"] and first["Message-ID"]
    assert links(sink.messages[0]) == links(sink.messages[1]), "the same links, not new ones"
    assert _count(xsettings, ExportLink) == 2 and _count(xsettings, ExportLink, ExportLink.revoked_at.is_(None)) == 2
    with session_scope(xsettings) as s:
        mail = s.scalar(select(ExportMail))
        assert mail.status == "sent" and mail.message_encrypted == "" and mail.attempts == 1
    third = pub.publish(get_engine(xsettings), xsettings, "055", week)  # the nightly job again: nothing
    assert third.unchanged and not third.mailed and len(sink.messages) == 2


def test_a_week_whose_mail_failed_is_retried_by_the_next_run_until_sent_or_cancelled(
    xsettings, smtp, tmp_path, monkeypatch
):
    sink, _port = smtp
    last = weekly_departement(xsettings, tmp_path, foyers=60)
    year, number, _ = (last.monday - timedelta(days=7)).isocalendar()
    previous = Week.parse(f"{year}-W{number:02d}", today(xsettings))
    down = xsettings.model_copy(update={"smtp_port": 9})
    with pytest.raises(pub.PublishError, match="the next run retries this week"):
        pub.publish(get_engine(down), down, "055", previous)
    assert _count(xsettings, ExportLink, ExportLink.revoked_at.is_(None)) == 0, "no live link left unannounced"
    assert pub.weeks_to_retry(get_engine(xsettings), "055") == [previous.label]

    for name, value in {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(xsettings.smtp_port), "SMTP_TLS": "none",
                        "MAIL_FROM": xsettings.mail_from, "EXPORT_RECIPIENTS": "agent.ft@francetravail.test",
                        "PUBLIC_URL": xsettings.public_url}.items():  # fmt: skip
        monkeypatch.setenv(f"PASSERELLE_{name}", str(value))
    r = run_cli(xsettings, monkeypatch, "export", "weekly", "--departement", "055", "--json")  # the default run
    assert r.exit_code == 0, r.output
    assert f"week {previous.label}: its e-mail had failed, sent again now" in r.output
    subjects = [email.message_from_bytes(m, policy=policy.default)["Subject"] for m in sink.messages]
    assert any(previous.label in s for s in subjects) and any(last.label in s for s in subjects)
    assert pub.weeks_to_retry(get_engine(xsettings), "055") == []

    with pytest.raises(pub.PublishError):  # fails again, then an operator gives up on it
        pub.publish(get_engine(down), down, "055", previous, resend=True)
    assert pub.weeks_to_retry(get_engine(xsettings), "055") == [previous.label]
    r = run_cli(xsettings, monkeypatch, "export", "cancel", "--departement", "055", "--week", previous.label)
    assert r.exit_code == 0 and "cancelled" in r.output, r.output
    assert pub.weeks_to_retry(get_engine(xsettings), "055") == []
    assert _count(xsettings, AccessRecord, AccessRecord.action == "export.cancel") == 1
    r = run_cli(xsettings, monkeypatch, "export", "cancel", "--departement", "055", "--week", previous.label)
    assert r.exit_code == 2 and "no e-mail pending" in r.output
