"""Rewrite the README settings table from the Settings docs: python scripts/settings_table.py"""

from __future__ import annotations

from pathlib import Path

from gateway.config import describe_settings

README = Path(__file__).resolve().parent.parent / "README.md"
HEADER = "| key (TOML) | environment | default | what it does |"


def main() -> None:
    lines = [HEADER, "| --- | --- | --- | --- |"]
    for key, env, default, doc in describe_settings():
        shown = f"`{default}`" if default else ""
        lines.append(f"| `{key}` | `{env}` | {shown} | {doc} |")
    text = README.read_text()
    start = text.index(HEADER)
    end = text.index("\n\n", start)
    README.write_text(text[:start] + "\n".join(lines) + text[end:])


if __name__ == "__main__":
    main()
