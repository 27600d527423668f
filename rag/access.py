"""Who may do what: API keys with a role (user or admin), checked in constant time, never logged or echoed.

Keys come from RAG_API_KEYS / RAG_ADMIN_KEYS (comma-separated) and RAG_KEYS_FILE ('user KEY' / 'admin KEY' lines).
With no key configured the server is for this machine only: it binds the loopback address and every caller there is
an admin (the single-user laptop case).
"""

from __future__ import annotations

import hmac
from pathlib import Path

from rag.settings import Settings

USER, ADMIN = "user", "admin"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class AccessError(ValueError):
    """A key or server setup refused; str() is one line that names no key."""


def split_keys(secret) -> list[str]:
    return [k.strip() for k in (secret.get_secret_value() if secret else "").split(",") if k.strip()]


class Keys:
    """The configured keys and their roles."""

    def __init__(self, settings: Settings):
        self.roles: list[tuple[str, str]] = [(k, USER) for k in split_keys(settings.api_keys)]
        self.roles += [(k, ADMIN) for k in split_keys(settings.admin_keys)]
        if settings.keys_file:
            self.roles += read_keys_file(Path(settings.keys_file))

    @property
    def open(self) -> bool:
        """No keys configured: loopback only, everyone an admin."""
        return not self.roles

    def role(self, key: str | None) -> str | None:
        """The role of a presented key, or None. Every configured key is compared, in constant time each."""
        if self.open:
            return ADMIN
        found = None
        presented = (key or "").encode()
        for known, role in self.roles:
            if hmac.compare_digest(presented, known.encode()) and found != ADMIN:
                found = role
        return found

    def ui_login(self, username: str, password: str) -> bool:
        """Gradio's auth callback: user name 'admin' with an admin key, any other name with any valid key."""
        role = self.role(password)
        return role == ADMIN if username == ADMIN else role is not None

    def check_host(self, host: str) -> None:
        if self.open and host not in LOOPBACK:
            raise AccessError(
                f"refusing to serve on {host} without keys: set RAG_API_KEYS and RAG_ADMIN_KEYS (or RAG_KEYS_FILE), "
                "or bind 127.0.0.1"
            )


def read_keys_file(path: Path) -> list[tuple[str, str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise AccessError(f"cannot read RAG_KEYS_FILE {path}: {e.strerror}") from None
    out = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        role, _, key = line.partition(" ")
        if role not in (USER, ADMIN) or not key.strip():
            raise AccessError(f"{path}:{number}: expected 'user KEY' or 'admin KEY'")
        out.append((key.strip(), role))
    return out
