"""Check results, the report that collects them, and the runner that never stops early.

A check is a function of a context object. It returns nothing (or a short note) when it
passes, raises :class:`CheckFailed` with what to fix when it fails, and :class:`CheckSkipped`
when it does not apply. Any other exception is a failure too, reported with its type and text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["passed", "failed", "skipped"]
_LABELS = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}


class CheckFailed(Exception):
    """Raised by a check that failed; the message says what to fix."""


class CheckSkipped(Exception):
    """Raised by a check that does not apply; the message says why."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: its name, status, and a message (what to fix, or a note)."""

    name: str
    status: Status
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def format(self, width: int = 24) -> str:
        text = f"{_LABELS[self.status]}  {self.name:<{width}}"
        return f"{text} {self.message}".rstrip()


class ConformanceError(AssertionError):
    """A plugin that does not honour the contract; the message lists every failed check."""

    def __init__(self, report: CheckReport):
        self.report = report
        lines = [f"{report.subject}: {len(report.failures)} conformance check(s) failed"]
        lines += [f"  {r.name}: {r.message}" for r in report.failures]
        super().__init__("\n".join(lines))


@dataclass
class CheckReport:
    """Every check run on one detector or explainer, in order: iterate it for the
    :class:`CheckResult` objects, or index it by check name."""

    subject: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.failed]

    @property
    def passed(self) -> bool:
        """True when no check failed (skipped checks do not count against it)."""
        return not self.failures

    def __iter__(self) -> Iterator[CheckResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(
            f"no check {name!r} in this report; checks: {[r.name for r in self.results]}"
        )

    def raise_if_failed(self) -> None:
        """Raise :class:`ConformanceError` listing the failures, if there are any."""
        if self.failures:
            raise ConformanceError(self)

    def summary(self) -> str:
        counts = {status: sum(r.status == status for r in self.results) for status in _LABELS}
        return ", ".join(f"{n} {status}" for status, n in counts.items() if n)

    def format(self) -> str:
        """One line per check (PASS/FAIL/SKIP, name, message) and a summary line."""
        width = max((len(r.name) for r in self.results), default=0) + 2
        lines = [self.subject, *(f"  {r.format(width)}" for r in self.results), self.summary()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True)
class Check:
    """A named check; it is skipped when a check it ``requires`` did not pass."""

    name: str
    run: Callable[[Any], str | None]
    requires: tuple[str, ...] = ()


def run_checks(report: CheckReport, checks: Iterable[Check], context: Any) -> CheckReport:
    """Run ``checks`` in order on ``context``, appending one result each to ``report``."""
    done: dict[str, CheckResult] = {}
    for check in checks:
        result = _run_one(check, context, done)
        done[check.name] = result
        report.results.append(result)
    return report


def _run_one(check: Check, context: Any, done: dict[str, CheckResult]) -> CheckResult:
    blocked = [name for name in check.requires if not (name in done and done[name].passed)]
    if blocked:
        return CheckResult(check.name, "skipped", f"needs {_quoted(blocked)} to pass first")
    try:
        note = check.run(context)
    except CheckSkipped as exc:
        return CheckResult(check.name, "skipped", str(exc))
    except CheckFailed as exc:
        return CheckResult(check.name, "failed", str(exc))
    except Exception as exc:  # a crashing plugin is a failed check, not a crashed kit
        return CheckResult(check.name, "failed", f"raised {type(exc).__name__}: {exc}")
    return CheckResult(check.name, "passed", note or "")


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)
