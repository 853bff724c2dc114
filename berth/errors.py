"""The one error type for bad configuration: it names the config path and the rule."""

from __future__ import annotations

NAMESPACE = "berth"


class ConfigError(ValueError):
    """Invalid stack configuration, raised before any resource is declared.

    Each problem is one line, ``berth:<path>: <rule>``, e.g.
    ``berth:apps.backend.port: 70000 is not in 1..65535``.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{NAMESPACE}:{path}: {rule}" if path else f"{NAMESPACE}: {rule}"
                                    for path, rule in problems))

    @classmethod
    def one(cls, path: str, rule: str) -> ConfigError:
        """A ConfigError with a single problem."""
        return cls([(path, rule)])
