"""A private Dovecot on 127.0.0.1 for tests: its own config, state, log and TLS certificate.

Never the system service: the instance lives under a temporary folder, listens on loopback only
(implicit TLS on one port, STARTTLS on another, plaintext login refused), serves Maildirs under
``mail/<user>`` (where a private Postfix delivers: tests/postfix_instance.py, ``deliver="maildirs"``)
and is stopped afterwards.
"""

from __future__ import annotations

import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.smtp_server import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

CONF = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
first_valid_uid = 1
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:{mail}/%n
mail_uid = {uid}
mail_gid = {gid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {root}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={mail}/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {starttls_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0600
  }}
}}
"""


def available() -> str | None:
    """None when a private Dovecot can run here, else why not."""
    if not Path(DOVECOT).exists():
        return "dovecot is not installed (scripts/install-system-deps installs Debian's dovecot-imapd)"
    for user in ("dovecot", "dovenull"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"the {user} user does not exist (Debian's dovecot-core creates it)"
    return None


@dataclass
class Dovecot:
    root: Path
    tls_port: int  # implicit TLS (as 993)
    starttls_port: int  # STARTTLS (as 143)
    log: Path

    def stop(self) -> None:
        subprocess.run([DOVECOT, "-c", str(self.root / "dovecot.conf"), "stop"], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def start(*, mail: Path, users: dict[str, str], cert: Path, key: Path, owner: str = "postfix") -> Dovecot:
    """Start a private instance serving the Maildirs ``mail/<user>`` of ``users`` (name: password),
    whose files belong to ``owner`` (the user Postfix's virtual agent delivers as)."""
    root = Path(tempfile.mkdtemp(prefix="seminar-mailer-dovecot-"))
    root.chmod(0o755)  # the login processes (dovenull) must reach the run folder
    for sub in ("run", "state"):
        (root / sub).mkdir()
    account = pwd.getpwnam(owner)
    (root / "users").write_text("".join(f"{name}:{{PLAIN}}{password}::::::\n" for name, password in users.items()))
    instance = Dovecot(root, free_port(), free_port(), root / "dovecot.log")
    conf = root / "dovecot.conf"
    conf.write_text(
        CONF.format(
            root=root,
            cert=cert,
            key=key,
            mail=mail,
            uid=account.pw_uid,
            gid=account.pw_gid,
            tls_port=instance.tls_port,
            starttls_port=instance.starttls_port,
        )
    )
    errors = root / "start.err"
    with errors.open("w") as err:  # (not a pipe: the daemon keeps its copy of stderr open)
        started = subprocess.run(
            [DOVECOT, "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=err, stderr=err, timeout=60, check=False
        )
    if started.returncode != 0:
        raise RuntimeError(f"dovecot did not start: {errors.read_text()}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", instance.starttls_port), timeout=1) as sock:
                if sock.recv(100).startswith(b"* OK"):
                    return instance
        except OSError:
            time.sleep(0.1)
    log = instance.log.read_text() if instance.log.exists() else ""
    instance.stop()
    raise RuntimeError(f"dovecot did not listen on 127.0.0.1:{instance.starttls_port}: {log}")
