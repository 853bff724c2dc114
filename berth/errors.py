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


class Problems(ValueError):
    """Raised by a settings validator that found several problems: each ``(path, rule)`` becomes a line.

    Paths are relative to the model that raised it; the loader puts the model's own path in front.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {rule}" if path else rule for path, rule in problems))

    @classmethod
    def check(cls, problems: list[tuple[str, str]]) -> None:
        """Raise the problems found, if there are any."""
        if problems:
            raise cls(problems)
