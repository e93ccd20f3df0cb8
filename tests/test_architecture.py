"""The layout rules of docs/architecture.md, checked on the source so they cannot quietly regress.

One owner per collection: only the module listed in ``OWNERS`` reaches a collection through
``store.db(...)`` (directly, or through a variable holding the database); every other module calls a
function of the owner. A GridFS bucket is its module's own ``BUCKET``: ``other.BUCKET`` is reaching in.
"""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mlqueue"

OWNERS = {  # collection -> the one module (relative to mlqueue/) that queries and updates it
    "orders": "store/orders.py",
    "outcomes": "store/outcomes.py",
    "jobs": "store/jobs.py",
    "workers": "store/workers.py",
    "machines": "machines.py",
    "invites": "invites.py",
    "sweeps": "sweeps/driver.py",
    "sweep_trials": "sweeps/driver.py",
    "requirement_classes": "routing.py",
}
ALIASES = {"CLASSES": "requirement_classes"}  # a module's constant naming its collection

DB_CALL = re.compile(r"\bdb\([^()]*(?:\([^()]*\)[^()]*)*\)")
DB_VARIABLE = re.compile(r"^\s*(\w+)\s*=\s*(?:store\.)?db\(")
AFTER = re.compile(r"""\s*(?:\.(\w+)\b|\[\s*f?["']?([\w{}.]+)["']?\s*\])""")
FOREIGN_BUCKET = re.compile(r"\b(\w+)\.BUCKET\b")


def _collection(attribute: str | None, key: str | None) -> str | None:
    name = attribute or ALIASES.get(key or "", key)
    return name if name in OWNERS else None


def _uses(line: str, db_names: set[str]) -> list[str]:
    """The collections a line reaches: ``db(...).name``, ``db(...)["name"]``, ``d.name`` for a db variable."""
    found = []
    for call in DB_CALL.finditer(line):
        if (m := AFTER.match(line, call.end())) and (name := _collection(m.group(1), m.group(2))):
            found.append(name)
    for var in db_names:
        for m in re.finditer(rf"(?<![\w.]){re.escape(var)}(?=[.\[])", line):
            if (after := AFTER.match(line, m.end())) and (name := _collection(after.group(1), after.group(2))):
                found.append(name)
    return found


def violations(root: Path = PACKAGE) -> list[str]:
    """``file:line: what`` for every collection or bucket touched outside its owner."""
    out = []
    for path in sorted(root.rglob("*.py")):
        module = path.relative_to(root).as_posix()
        if module == "store/__init__.py":  # the database itself: clients, buckets, generic helpers
            continue
        db_names: set[str] = set()
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if m := DB_VARIABLE.match(line):
                db_names.add(m.group(1))
            for name in _uses(line, db_names):
                if OWNERS[name] != module:
                    out.append(f"mlqueue/{module}:{number}: the {name!r} collection belongs to "
                               f"mlqueue/{OWNERS[name]}; call a function there")
            for m in FOREIGN_BUCKET.finditer(line):
                if f"{m.group(1)}.py" != path.name:
                    out.append(f"mlqueue/{module}:{number}: {m.group(0)} is {m.group(1)}.py's GridFS bucket; "
                               f"call a function there")
    return out


def test_every_collection_is_touched_only_by_its_owner() -> None:
    found = violations()
    assert not found, "\n".join(found)


def test_the_rule_sees_each_way_of_reaching_a_collection(tmp_path: Path) -> None:
    """The checker itself: a module reaching into ``orders`` three ways, and a bucket, is reported."""
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "orders.py").write_text("def f(s):\n    return store.db(s).orders.find({})\n")
    (tmp_path / "reader.py").write_text(
        "def f(s):\n"
        "    a = store.db(s).orders.find_one({})\n"
        "    d = store.db(s)\n"
        "    b = d.orders.count_documents({})\n"
        "    c = db(s)['outcomes']\n"
        "    return store.bucket(artifacts.BUCKET, s), d.command('ping')\n")
    found = violations(tmp_path)
    assert [f.split(": ")[0] for f in found] == ["mlqueue/reader.py:2", "mlqueue/reader.py:4",
                                                "mlqueue/reader.py:5", "mlqueue/reader.py:6"], found
