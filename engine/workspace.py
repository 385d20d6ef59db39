"""The workspace: one folder holding a campaign's profiles, data, tokenizers, runs and queue."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from engine.atomic import atomic_create_text
from engine.errors import ProfileError, os_error_line
from engine.profile import Profile, load_profile

SHIPPED_PROFILES = Path(__file__).resolve().parent.parent / "profiles"
DEFAULT_WORKSPACE = Path("~/fcwork").expanduser()
ENV_VAR = "FCWORK_WORKSPACE"
QUEUE_FILE = "queue.toml"


def resolve_workspace(arg: str | os.PathLike | None = None) -> Path:
    """`--workspace DIR`, else `$FCWORK_WORKSPACE`, else ~/fcwork."""
    chosen = arg or os.environ.get(ENV_VAR)
    return Path(chosen).expanduser().resolve() if chosen else DEFAULT_WORKSPACE


@dataclass(frozen=True)
class Workspace:
    """Paths inside a workspace folder; creating one copies the shipped profiles in."""

    root: Path

    @classmethod
    def open(cls, arg: str | os.PathLike | None = None) -> "Workspace":
        ws = cls(resolve_workspace(arg))
        ws.init()
        return ws

    def init(self) -> None:
        """Create the folder layout and copy in any shipped profile the user does not have yet.

        Safe to run from many processes at once (first use of a workspace by the TUI, the CLI and
        the supervisor together): each copy goes through its own temp file and is linked into
        place, so a copy never replaces a profile that another process (or the user) put there."""
        if self.root.exists() and not self.root.is_dir():
            raise ProfileError(f"{self.root}: workspace path exists and is not a folder")
        try:
            for sub in ("profiles", "data", "tokenizers", "runs"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            for shipped in sorted(SHIPPED_PROFILES.glob("*.toml")):
                target = self.profiles_dir / shipped.name
                if not target.exists():
                    with contextlib.suppress(FileExistsError):  # another process was first: theirs is the same
                        atomic_create_text(target, shipped.read_text(encoding="utf-8"))
        except OSError as exc:
            why = exc.strerror if exc.filename is not None and Path(exc.filename) == self.root else os_error_line(exc)
            raise ProfileError(f"{self.root}: cannot set up the workspace here ({why})") from None

    @property
    def profiles_dir(self) -> Path:
        return self.root / "profiles"

    def profile_path(self, name_or_path: str) -> Path:
        """A profile named `default` lives at profiles/default.toml; a path is taken as is."""
        p = Path(name_or_path)
        if p.suffix == ".toml" or os.sep in name_or_path:
            return p.expanduser().resolve()
        return self.profiles_dir / f"{name_or_path}.toml"

    def load_profile(self, name_or_path: str) -> Profile:
        path = self.profile_path(name_or_path)
        if not path.exists():
            names = ", ".join(sorted(q.stem for q in self.profiles_dir.glob("*.toml"))) or "none"
            raise ProfileError(f"{path}: no such profile (profiles in {self.profiles_dir}: {names})")
        return load_profile(path)

    def data_dir(self, profile: str) -> Path:
        return self.root / "data" / profile

    def raw_dir(self, profile: str) -> Path:
        return self.data_dir(profile) / "raw"

    def tok_dir(self, profile: str) -> Path:
        return self.data_dir(profile) / "tok"

    def tokenizer_path(self, name: str) -> Path:
        return self.root / "tokenizers" / f"{name}.model"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def queue_path(self) -> Path:
        return self.root / QUEUE_FILE
