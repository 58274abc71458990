"""A real IMAP server for the bounce tests: Debian's dovecot, started for the
test on 127.0.0.1 with a configuration of its own (TLS from the start with a
certificate the test made, one mailbox, Maildir storage in a temporary folder)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .smtp import free_port, wait_for

CONFIG = """
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
{dh}
auth_mechanisms = plain login
{users}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
mail_location = maildir:~/Maildir
first_valid_uid = 1
first_valid_gid = 1
"""


class DovecotServer:
    """``start()``, then ``append(raw)`` messages to the mailbox; ``close()``."""

    def __init__(self, binary: str, certificate: Any, user: str = "bounces", password: str = "bounce-secret") -> None:
        self.binary = binary
        self.certificate = certificate
        self.user = user
        self.password = password
        self.host = "127.0.0.1"
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pp-dovecot-"))
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> DovecotServer:
        root = self.root
        os.chmod(root, 0o755)  # the mail processes run as another user when we are root
        self.certificate.private_key_pem.write_to_path(str(root / "key.pem"))
        self.certificate.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
        (root / "passwd").write_text(f"{self.user}:{{PLAIN}}{self.password}\n")
        (root / "home").mkdir()
        if os.getuid() == 0:
            uid = gid = 65534  # dovecot refuses to give root's mailbox to an IMAP login
            users = ""
            os.chown(root / "home", uid, gid)
        else:
            uid, gid = os.getuid(), os.getgid()
            me = pwd.getpwuid(uid).pw_name
            users = f"default_login_user = {me}\ndefault_internal_user = {me}"
        dh = "/usr/share/dovecot/dh.pem"
        (root / "dovecot.conf").write_text(
            CONFIG.format(root=root, port=self.port, uid=uid, gid=gid, users=users,
                          dh=f"ssl_dh = <{dh}" if os.path.exists(dh) else "")
        )
        self._process = subprocess.Popen(
            [self.binary, "-F", "-c", str(root / "dovecot.conf")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        wait_for(self._listening, timeout=20)
        return self

    def _listening(self) -> bool:
        import socket

        assert self._process is not None
        if self._process.poll() is not None:
            log = (self.root / "dovecot.log").read_text() if (self.root / "dovecot.log").exists() else ""
            raise AssertionError(f"dovecot stopped: {self._process.stderr.read()!r} {log}")  # type: ignore[union-attr]
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        except OSError:
            return False

    def client(self, ca_file: str) -> Any:
        import imaplib
        import ssl

        connection = imaplib.IMAP4_SSL(self.host, self.port, ssl_context=ssl.create_default_context(cafile=ca_file))
        connection.login(self.user, self.password)
        return connection

    def append(self, raw: bytes, ca_file: str, folder: str = "INBOX") -> None:
        connection = self.client(ca_file)
        try:
            status, _data = connection.append(folder, None, None, raw)
            assert status == "OK"
        finally:
            connection.logout()

    def unseen(self, ca_file: str, folder: str = "INBOX") -> int:
        connection = self.client(ca_file)
        try:
            connection.select(folder)
            _status, data = connection.search(None, "UNSEEN")
            return len((data[0] or b"").split())
        finally:
            connection.logout()

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
            # Its children (imap, auth) end with it.
            time.sleep(0.2)
        shutil.rmtree(self.root, ignore_errors=True)
