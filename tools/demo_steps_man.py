"""Write the list of `demo --json` steps into man/uffdctl-demo.1 from demo.STEPS (the one
table of them), between the marker comments; --check only says whether it is in step."""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from uffdctl.demo import STEPS  # noqa: E402

MAN = ROOT / "man" / "uffdctl-demo.1"
BEGIN, END = '.\\" STEPS begin (tools/demo_steps_man.py)', '.\\" STEPS end'


def _type(t: object) -> str:
    if isinstance(t, dict):
        return f"array of {t['items']['type']}s"
    if isinstance(t, list):
        return " or ".join(str(x) for x in t)
    return str(t)


def block() -> str:
    out = [BEGIN]
    for name, (what, fields) in STEPS.items():
        text = what[0].upper() + what[1:] + "."
        if fields:
            text += " Fields: " + ", ".join(f"\\fI{k}\\fR ({_type(v)})"
                                            for k, v in fields.items()) + "."
        out += [".TP", f".B {name}", text.replace("-", "\\-")]
    out.append(END)
    return "\n".join(out)


def main() -> int:
    page = MAN.read_text()
    start, end = page.index(BEGIN), page.index(END) + len(END)
    new = page[:start] + block() + page[end:]
    if "--check" in sys.argv:
        if new != page:
            print(f"{MAN} is out of step with demo.STEPS: run python tools/demo_steps_man.py")
            return 1
        return 0
    MAN.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
