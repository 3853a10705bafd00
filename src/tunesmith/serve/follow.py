"""Following aliases: a server started with ``--run production`` switches runs when the alias moves.

A thread checks the registry every ``serve.follow_seconds``. When an alias has moved, the new run's
adapter is loaded beside the old one (between two decode steps), its prompt opening cached, and
only then does the alias point at it: a request names the alias, finds one served run or the other,
and never a half-loaded one. The old adapter is unloaded after a grace period, once no name
points at it and its running rows have finished, so no request in flight fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from tunesmith.errors import UserError
from tunesmith.runs.aliases import alias_holder
from tunesmith.serve.app import ServerState, set_opening
from tunesmith.serve.served import Served, load_classifier, served_run

#: Seconds an old adapter stays loaded after its alias moved on (requests that looked it up just before).
GRACE_SECONDS = 30.0


class AliasFollower:
    """Moves the aliases a server answers as to the runs that hold them in the registry.

    Args:
        state: The server's state.
        status: Where to say what moved (or why a move was refused).
        grace_seconds: How long a replaced adapter stays loaded.
    """

    def __init__(self, state: ServerState, status: Callable[[str], None] = print,
                 grace_seconds: float = GRACE_SECONDS):
        self.state, self.status, self.grace = state, status, grace_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> list[str]:
        """Switch every alias whose holder changed; returns the aliases switched.

        A run that cannot be served (another base model, no adapter) is refused with a message and
        the alias keeps answering with the run it had.
        """
        moved = []
        for key, served in list(self.state.served.items()):
            if not served.follows:
                continue
            holder = alias_holder(self.state.runs_dir, served.follows)
            if holder is None or holder == served.name:
                continue
            try:
                new = self._load(holder, served.follows)
            except (UserError, OSError, RuntimeError, ValueError) as exc:
                self.status(f"warning: {served.follows} moved to {holder}, still serving {served.name}: {exc}")
                continue
            self.state.served[key] = new  # one assignment: a request finds the old run or the new, never neither
            self.status(f"{served.follows} -> {holder} (was {served.name})")
            moved.append(served.follows)
            self._retire(served)
        return moved

    def _load(self, run_id: str, alias: str) -> Served:
        """The run ready to answer: adapter loaded in the engine (or its own head model), opening cached.

        Raises:
            UserError: The run cannot be served here.
        """
        state = self.state
        new, run_cfg = served_run(run_id, state.runs_dir)
        base = state.served[state.engine.base_name].info.get("base")
        if base is not None and run_cfg.model.base != base:
            raise UserError(f"run {run_id} was trained on {run_cfg.model.base}, this server serves {base}")
        new.follows = new.info["alias"] = alias
        if new.head:
            return load_classifier(new, state.base_path, state.precision, state.trust_remote_code)
        if new.name not in state.engine.adapters:
            state.engine.add_adapter(new.name, new.adapter).result(timeout=600)
        new.with_tokenizer(state.tokenizer)
        set_opening(state, new)
        return new

    def _retire(self, old: Served) -> None:
        """Unload a replaced adapter after the grace period, unless a name points at it again."""
        if old.classifier is not None:
            return  # its own model: freed with the last reference

        def unload() -> None:
            if not any(s.name == old.name for s in self.state.served.values()):
                self.state.engine.remove_adapter(old.name)

        timer = threading.Timer(self.grace, unload)
        timer.daemon = True
        timer.start()

    def start(self, every: float) -> None:
        """Check every ``every`` seconds in a thread of its own, until :meth:`stop` (an alias served later, through
        ``POST /v1/adapters`` with ``run: production``, is followed too; with none, a check reads nothing)."""
        def loop() -> None:
            while not self._stop.wait(every):
                try:
                    self.check()
                except Exception as exc:  # noqa: BLE001 - a registry hiccup must not stop the server
                    self.status(f"warning: cannot check the aliases: {exc}")

        self._thread = threading.Thread(target=loop, name="tunesmith-alias-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop checking."""
        self._stop.set()
