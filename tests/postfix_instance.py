"""A private Postfix on 127.0.0.1 for tests and benchmarks: its own config, queue and log.

Never the system service: the instance lives under a temporary folder, listens on loopback only,
and is stopped afterwards. ``deliver="mailbox"`` delivers every recipient of example.org into one
mbox file; ``deliver="discard"`` accepts and throws mail away (the benchmark's server);
``deliver="maildirs"`` delivers each of ``users`` to its own Maildir ``mail/<user>/`` (``user+anything``
too: ``recipient_delimiter = +``) and, having accepted mail for anyone else at example.org, bounces
it with Postfix's own DSN (5.1.1) to the envelope sender.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.smtp_server import free_port

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
MASTER_CF = """\
{port}      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def available() -> str | None:
    """None when a private Postfix can run here, else why not."""
    if not Path(POSTFIX).exists():
        return "postfix is not installed (.ci/run installs Debian's postfix)"
    if os.geteuid() != 0:
        return "starting a Postfix instance needs root"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "the postfix user does not exist"
    return None


@dataclass
class Postfix:
    root: Path
    port: int
    mailbox: Path
    log: Path

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX, "-c", str(self.root / "conf"), *args], capture_output=True, text=True, timeout=60, check=False
        )

    def maildir(self, user: str) -> Path:
        """The Maildir of ``user`` (``deliver="maildirs"``)."""
        return self.mailbox.parent / user

    def stop(self) -> None:
        self._postfix("stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def wait_for_delivery(self, n: int, timeout: float = 120) -> int:
        """Wait until ``n`` messages are in the mailbox (or the log's delivered count); return the count."""
        deadline = time.monotonic() + timeout
        count = 0
        while time.monotonic() < deadline:
            count = self.delivered()
            if count >= n:
                return count
            time.sleep(0.2)
        return count

    def delivered(self) -> int:
        if self.log.exists():
            return sum(1 for line in self.log.open(errors="replace") if "status=sent" in line)
        return 0

    def accepted_by_smtpd(self) -> int:
        """Messages the SMTP server accepted (queued), per the log."""
        if not self.log.exists():
            return 0
        return sum(1 for line in self.log.open(errors="replace") if "postfix/cleanup" in line and "message-id=" in line)


def start(
    *,
    deliver: str = "mailbox",
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    port: int | None = None,
    users: tuple[str, ...] = (),
) -> Postfix:
    """Configure and start a private instance in a new temporary folder (removed by ``stop``).

    The folder is its own, not pytest's: the postfix user must be able to reach its queue, and
    pytest's temporary folders are private to root.
    """
    root = Path(tempfile.mkdtemp(prefix="seminar-mailer-postfix-"))
    root.chmod(0o755)
    conf, queue, data, mail = root / "conf", root / "queue", root / "data", root / "mail"
    for d in (conf, queue, data, mail):
        d.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    postfix_user = pwd.getpwnam("postfix")
    os.chown(data, postfix_user.pw_uid, postfix_user.pw_gid)
    os.chown(mail, postfix_user.pw_uid, postfix_user.pw_gid)
    log = root / "maillog"
    lines = [
        "compatibility_level = 3.6",
        f"queue_directory = {queue}",
        f"data_directory = {data}",
        "command_directory = /usr/sbin",
        "daemon_directory = /usr/lib/postfix/sbin",
        "meta_directory = /etc/postfix",
        "shlib_directory = no",
        "mail_owner = postfix",
        "setgid_group = postdrop",
        "inet_interfaces = 127.0.0.1",
        "inet_protocols = ipv4",
        "myhostname = seminar-mailer-test.localdomain",
        "mydomain = localdomain",
        "mydestination =",
        "mynetworks = 127.0.0.0/8",
        "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
        "smtpd_recipient_restrictions = permit_mynetworks, reject",
        f"maillog_file = {log}",
        f"maillog_file_prefixes = {root}",
        "alias_maps =",
        "alias_database =",
        "biff = no",
        "smtpd_banner = $myhostname ESMTP",
        "message_size_limit = 10240000",
        "default_process_limit = 100",
        "smtpd_client_connection_count_limit = 0",
        "smtpd_client_message_rate_limit = 0",
        "smtpd_client_connection_rate_limit = 0",
        "in_flow_delay = 0",
        "smtputf8_enable = yes",
    ]
    if deliver == "discard":
        lines += [
            "default_transport = discard",
            "relay_transport = discard",
            "relay_domains = example.org",
            "local_transport = discard",
            "virtual_transport = discard",
        ]
    elif deliver == "maildirs":
        (conf / "mailboxes").write_text("".join(f"{user}@example.org {user}/\n" for user in users))
        lines += [
            "virtual_mailbox_domains = example.org",
            f"virtual_mailbox_base = {mail}",
            f"virtual_mailbox_maps = texthash:{conf}/mailboxes",
            "recipient_delimiter = +",
            "smtpd_reject_unlisted_recipient = no",  # accept, then bounce with a DSN of its own
            "virtual_minimum_uid = 1",
            f"virtual_uid_maps = static:{postfix_user.pw_uid}",
            f"virtual_gid_maps = static:{postfix_user.pw_gid}",
        ]
    else:
        lines += [
            "virtual_mailbox_domains = example.org",
            f"virtual_mailbox_base = {mail}",
            "virtual_mailbox_maps = static:inbox",
            "virtual_minimum_uid = 1",
            f"virtual_uid_maps = static:{postfix_user.pw_uid}",
            f"virtual_gid_maps = static:{postfix_user.pw_gid}",
        ]
    if tls_cert and tls_key:
        lines += [
            f"smtpd_tls_cert_file = {tls_cert}",
            f"smtpd_tls_key_file = {tls_key}",
            "smtpd_tls_security_level = may",
            "smtpd_tls_loglevel = 1",
        ]
    (conf / "main.cf").write_text("\n".join(lines) + "\n")
    (conf / "master.cf").write_text(MASTER_CF.format(port=f"127.0.0.1:{port}"))
    instance = Postfix(root=root, port=port, mailbox=mail / "inbox", log=log)
    started = instance._postfix("start")
    if started.returncode != 0:
        # Before its own logger runs, postfix reports only to syslog, or to a terminal: give it one.
        why = subprocess.run(
            ["script", "-qc", f"{POSTFIX} -c {conf} start", "/dev/null"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        raise RuntimeError(f"postfix did not start: {started.stderr}{why.stdout}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return instance
        except OSError:
            time.sleep(0.1)
    instance.stop()
    raise RuntimeError(f"postfix did not listen on 127.0.0.1:{port}: {log.read_text() if log.exists() else ''}")
