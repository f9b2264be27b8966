"""Markdown and console rendering shared by the benchmark scripts (tables and their target checks)."""

from __future__ import annotations


def _is_left(left: int | set[int]):
    return (lambda i: i in left) if isinstance(left, set) else (lambda i: i < left)


def md_table(header: list[str], rows: list[list[str]], left: int | set[int]) -> list[str]:
    """A Markdown table: columns in `left` (or the first `left` columns) left-aligned, the others right."""
    is_left = _is_left(left)
    return (["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if is_left(i) else "---:" for i in range(len(header))) + "|"]
            + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows])


def console_table(title: str, header: list[str], rows: list[list[str]], left: int | set[int],
                  sections: set[int] = frozenset(), no_wrap: bool = True):
    """The same table for the terminal (rich): a rule under each row index in `sections`."""
    from rich.table import Table

    is_left = _is_left(left)
    table = Table(title=title, title_justify="left")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if is_left(i) else "right", no_wrap=no_wrap)
    for i, row in enumerate(rows):
        table.add_row(*row, end_section=i in sections)
    return table


def md_checks(checks: list[dict]) -> list[str]:
    """'Targets:' and one PASS / **FAIL** line per check, then a blank line (nothing without checks)."""
    if not checks:
        return []
    return ["Targets:", *(f"- {'PASS' if c['pass'] else '**FAIL**'} — {c['target']}: {c['value']}" for c in checks), ""]


def print_checks(console, checks: list[dict]) -> None:
    for c in checks:
        console.print(f"  [{'green' if c['pass'] else 'red'}]{'PASS' if c['pass'] else 'FAIL'}[/] {c['target']}: {c['value']}")


def save(report: dict, json_path, md_path, markdown) -> None:
    """Write the report's JSON and its Markdown rendering (called after every model, so a long run keeps
    what it finished)."""
    import json

    for path, text in ((json_path, lambda: json.dumps(report, indent=1, default=str)), (md_path, lambda: markdown(report))):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text())


def earlier_rows(json_path, merge: bool, command: str) -> tuple[str, list[dict]]:
    """--merge: the command line and rows of the --json file to build on (none without --merge or a file)."""
    import json

    if not (merge and json_path and json_path.is_file()):
        return command, []
    earlier = json.loads(json_path.read_text())
    return f"{earlier['command']}; then {command}", earlier["rows"]


def merged(kept: list[dict], new: list[dict], key) -> list[dict]:
    """`kept` rows that this run did not make again (same key(row)), then the new ones."""
    made = {key(r) for r in new}
    return [r for r in kept if key(r) not in made] + new
