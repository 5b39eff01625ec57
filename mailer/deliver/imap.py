"""The IMAP connection the bounce mailbox is read from: TLS (verified), LOGIN, SELECT, each step reported in
the server's words, and every failure a ConfigError (exit 2) naming the setting, or a DeliveryError (exit 75)
when the server cannot be reached. ``bounces`` reads through it; ``check --imap`` (doctor) shows its steps."""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailer.core.errors import ConfigError, DeliveryError
from mailer.deliver.bounce_config import ImapSettings

if TYPE_CHECKING:
    from imap_tools import BaseMailBox

_NOT_IMAP = "wanted the IMAP server's port: BOUNCES_IMAP_PORT=993 with BOUNCES_IMAP_SECURITY=tls, or 143 with starttls"


def words(said: object) -> str:
    """A server's words (bytes, or an exception carrying them) as one short line."""
    if isinstance(said, BaseException):
        said = said.args[0] if said.args else type(said).__name__
    text = said.decode("utf-8", "replace") if isinstance(said, bytes) else str(said)
    return re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()[:200]


def _said(result: object) -> str:
    """The status and words of an imaplib command result ``(status, [data, ...])``."""
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], list):
        said = " ".join(words(x) for x in result[1] if isinstance(x, bytes))
        return f"{result[0]} {said}".strip()
    return words(result)


def imap_connect(
    settings: ImapSettings, *, report: Callable[[str, str], None] = lambda step, detail: None
) -> BaseMailBox:
    """Connect, TLS (verified), LOGIN and SELECT the folder; report each step in the server's words.

    Configuration problems raise ConfigError (exit 2) naming the setting to change; a server that
    cannot be reached, DeliveryError (exit 75). Returns the logged-in imap_tools MailBox."""
    from imap_tools import MailBox, MailBoxStartTls
    from imap_tools.errors import MailboxFolderSelectError, MailboxLoginError, UnexpectedCommandStatusError

    where = f"{settings.host}:{settings.port}"
    context = settings.tls_context
    box_type = MailBox if settings.security == "tls" else MailBoxStartTls
    try:
        box = box_type(settings.host, port=settings.port, ssl_context=context, timeout=settings.timeout)
    except ssl.SSLCertVerificationError as err:
        raise ConfigError(
            f"TLS with {where} failed: {err.verify_message or err}; wanted a certificate valid for "
            f"{settings.host}: BOUNCES_IMAP_CA_FILE=<PEM file> for a private CA, or BOUNCES_IMAP_HOST set to "
            "the name the certificate carries"
        ) from None
    except ssl.SSLError as err:
        hint = "starttls for port 143" if settings.security == "tls" else "tls for port 993"
        raise ConfigError(
            f"TLS with {where} failed ({err.reason or err}): that port does not speak BOUNCES_IMAP_SECURITY="
            f"{settings.security}; wanted BOUNCES_IMAP_SECURITY={hint}, or the right BOUNCES_IMAP_PORT"
        ) from None
    except TimeoutError:
        raise ConfigError(
            f"{where} sent no IMAP greeting within MAILER_TIMEOUT={settings.timeout:g} s: the port speaks something "
            f"else; {_NOT_IMAP}"
        ) from None
    except socket.gaierror as err:
        if err.errno == socket.EAI_AGAIN:
            raise DeliveryError(f"cannot look up {settings.host} now ({err.strerror}); try again later") from None
        raise ConfigError(
            f"BOUNCES_IMAP_HOST={settings.host!r} does not resolve ({err.strerror}); wanted the IMAP server's name"
        ) from None
    except OSError as err:  # refused, unreachable, reset: the server is not there now
        raise DeliveryError(f"cannot reach the IMAP server {where}: {err.strerror or err}; try again later") from None
    except ValueError:  # imap_tools: "Port 993 requires IMAP4_SSL"
        raise ConfigError(
            "BOUNCES_IMAP_SECURITY=starttls with BOUNCES_IMAP_PORT=993; wanted tls for port 993, or starttls with 143"
        ) from None
    except imaplib.IMAP4.error as err:
        text = words(err)
        if quoted := re.search(r"""b(['"])(.*)\1""", text):  # imaplib: "unexpected response: b'220 ...'"
            text = quoted[2]
        if "TLS not supported" in text:
            raise ConfigError(
                f"{where} does not offer STARTTLS, so no password was given to it; wanted BOUNCES_IMAP_SECURITY=tls "
                "with BOUNCES_IMAP_PORT=993, or a server that offers STARTTLS"
            ) from None
        raise ConfigError(f"{where} is not an IMAP server (it said {text!r}); {_NOT_IMAP}") from None
    report("connect", f"{where}: {words(box.client.welcome)}")
    tls = box.client.sock
    version = tls.version() if isinstance(tls, ssl.SSLSocket) else "TLS"
    report("TLS" if settings.security == "tls" else "STARTTLS", f"{version}, certificate verified for {settings.host}")
    try:
        box.login(settings.username, settings.password, initial_folder=None)
        report("LOGIN", f"as {settings.username}: {_said(box.login_result)}")
        selected = box.folder.set(settings.folder)
        report("SELECT", f"{settings.folder}: {selected[0]}, {words(selected[1][0])} messages")
    except MailboxLoginError as err:
        box.client.shutdown()
        raise ConfigError(
            f"{settings.host} rejected the login of BOUNCES_IMAP_USERNAME={settings.username!r} "
            f"({_said(err.command_result)}); wanted valid "
            "BOUNCES_IMAP_USERNAME and BOUNCES_IMAP_PASSWORD"
        ) from None
    except MailboxFolderSelectError as err:
        folders = sorted(f.name for f in box.folder.list())
        box.logout()
        raise ConfigError(
            f"{settings.host} has no folder BOUNCES_IMAP_FOLDER={settings.folder!r} ({_said(err.command_result)}); "
            "wanted one of: "
            f"{', '.join(folders)}"
        ) from None
    except UnexpectedCommandStatusError as err:
        box.logout()
        raise ConfigError(f"{settings.host} refused {err}; wanted a mailbox BOUNCES_IMAP_USERNAME may read") from None
    except (imaplib.IMAP4.abort, OSError) as err:
        raise DeliveryError(f"the IMAP server {where} went away: {words(err)}; try again later") from None
    return box
