"""The data home holds every collection's text, password and token hashes and the audit log: it is
private to the account running kb (folders 0700, files 0600) whatever the umask it was started with."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)
PRIVATE = 0o077  # the group and other permission bits


def make_private(home: Path) -> None:
    """Create the home private, or tighten one that other accounts can read (said once, on stderr).
    Sets the process umask to 077 too, so everything kb writes later (catalogue, its WAL, indexes,
    uploads, logs) is private: kb runs as a program, and a library caller gets the same guarantee."""
    os.umask(os.umask(PRIVATE) | PRIVATE)  # keep any stricter bits the caller had
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    home = home.resolve()  # a home reached through a link: the real folder is the one to keep private
    mode = stat.S_IMODE(home.stat().st_mode)
    if mode & PRIVATE and os.access(home, os.W_OK) and home.stat().st_uid == os.getuid():
        changed = tighten(home)
        log.warning("the data home %s was open to other accounts (mode %o): made it private "
                    "(%d folders and files tightened)", home, mode, changed)


def tighten(root: Path) -> int:
    """Remove the group and other bits from ROOT and everything under it (links are not followed)."""
    changed = 0
    for path in [root, *root.rglob("*")]:
        try:
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode) or not st.st_mode & PRIVATE:
                continue
            path.chmod(stat.S_IMODE(st.st_mode) & ~PRIVATE)
            changed += 1
        except OSError:  # a file removed meanwhile, or one that is not ours
            continue
    return changed
