"""The checks ``spl doctor`` runs on a home without asking any daemon: files, modes, config, identity.

Pure reads of the home, so the CLI only renders them (``cli/doctor.py``) and adds the checks that need a
running daemon's answers. Each problem names the command that fixes it.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from spl.core.config import Config
from spl.daemon.home import PRIVATE_DIR, Home, HomeError

__all__ = ["Check", "home_checks", "mode_check", "modes_check"]


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    message: str

    def to_wire(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "message": self.message}


def mode_check(name: str, path: Path, *, missing: Check) -> Check:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return missing
    except OSError as exc:
        return Check(name, "fail", f"cannot read {path}: {exc.strerror or exc}")
    if mode & 0o077:
        return Check(name, "fail", f"{path} has mode {mode:04o}: others can read it; run `chmod 600 {path}`")
    return Check(name, "ok", f"{path} (mode {mode:04o})")


def home_checks(home: Home) -> tuple[list[Check], Config | None]:
    checks: list[Check] = []
    config: Config | None = None
    if not home.config_path.exists():
        checks.append(Check("home", "fail", f"no spl home at {home.root}: run `spl init` (or set SYNCROPEL_HOME)"))
    else:
        try:
            config = home.load_config()
            checks.append(Check("home", "ok", f"{home.root} (config parses)"))
        except HomeError as exc:
            checks.append(Check("home", "fail", str(exc)))
    key = mode_check(
        "identity key",
        home.key_path,
        missing=Check("identity key", "fail", f"no identity key at {home.key_path}: run `spl init`"),
    )
    if key.status == "ok" and config is not None:
        # After `spl identity rotate` the key is the rotation chain's current one, not the identifier's own key:
        # the chain (keys/rotations.json) must lead from the config's DID to it (docs/identity.md).
        try:
            _, problem = home.load_instance_identity(config.did)
        except HomeError as exc:
            key = Check("identity key", "fail", str(exc))
        else:
            if problem is not None:
                key = Check("identity key", "fail", problem)
    checks.append(key)
    checks.append(
        mode_check(
            "admin credential",
            home.admin_token_path,
            missing=Check(
                "admin credential",
                "warn",
                f"no admin credential at {home.admin_token_path}: this CLI needs $SPL_TOKEN; "
                "`spl init --force` writes a new one",
            ),
        )
    )
    if home.root.is_dir():
        checks.append(modes_check(home))
    if config is not None and config.obsolete_keys:
        keys = ", ".join(config.obsolete_keys)
        checks.append(
            Check(
                "config",
                "warn",
                f"{home.config_path}: {keys} is obsolete and ignored (loopback callers are not trusted; local "
                "callers use a token, pairs `spl fleet sync add --token`); delete the line",
            )
        )
    return checks, config


def modes_check(home: Home) -> Check:
    """Everything in the home private: directories 0700, files 0600 (the key and credential have own checks)."""
    own_checks = (home.key_path, home.admin_token_path)
    loose = [entry for entry in home.loose_modes() if entry.path not in own_checks]
    if not loose:
        return Check("file modes", "ok", f"{home.root} is private (directories 0700, files 0600)")
    dirs = " ".join(str(entry.path) for entry in loose if entry.wanted == PRIVATE_DIR)
    files = " ".join(str(entry.path) for entry in loose if entry.wanted != PRIVATE_DIR)
    fixes = [f"`chmod 700 {dirs}`" if dirs else "", f"`chmod 600 {files}`" if files else ""]
    found = ", ".join(f"{entry.path} is {entry.mode:04o}" for entry in loose)
    return Check(
        "file modes",
        "fail",
        f"other local users may read the home: {found}; run {' and '.join(fix for fix in fixes if fix)} "
        "(a daemon start also fixes them)",
    )
