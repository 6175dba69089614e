"""``quickstudy taxonomy``: class definitions that change without losing a box."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from quickstudy.cli._common import print_json, print_table
from quickstudy.labels import Store
from quickstudy.labels.taxonomy import RETIRE_MEANINGS


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def register(subparsers: Any) -> None:
    taxonomy = subparsers.add_parser(
        "taxonomy",
        help="show and change class definitions (every change journaled and undoable)",
        description="Boxes are never deleted or moved by a taxonomy change: an old label resolves to "
        "the set of current classes it may now mean (split: several, merge: the new class, retire: none).",
    )
    commands = taxonomy.add_subparsers(dest="taxonomy_command", metavar="ACTION", required=True)

    def command(name: str, help: str, func: Any) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help, description=help)
        parser.add_argument("--store", required=True, help="label store file")
        parser.add_argument("--author", help="who makes the change (default: $QUICKSTUDY_AUTHOR or user)")
        parser.set_defaults(func=func)
        return parser

    show = command("show", "current classes with their box counts", _show)
    show.add_argument("--json", action="store_true")
    command("add", "add a class", _add).add_argument("name")
    rename = command("rename", "rename a class (labels keep their meaning)", _rename)
    rename.add_argument("old")
    rename.add_argument("new")
    merge = command("merge", "merge classes: merge A,B C  (labels of A and B now mean C)", _merge)
    merge.add_argument("sources", help="comma-separated classes to merge")
    merge.add_argument("target", help="the merged class (may reuse a source name)")
    split = command("split", "split a class: split A A1,A2  (old labels of A mean {A1, A2})", _split)
    split.add_argument("source")
    split.add_argument("targets", help="comma-separated new classes")
    retire = command(
        "retire",
        "retire a class (its boxes stay, without class); again on a retired class: change its meaning",
        _retire,
    )
    retire.add_argument("name")
    retire.add_argument(
        "--meaning",
        choices=RETIRE_MEANINGS,
        default=RETIRE_MEANINGS[0],
        help="what its boxes are: unnamed (default): a type we do not name (yet), never to be named as "
        "another class, examples of what must come out unknown; other-types: of the other current "
        "classes (training may pseudo-label them)",
    )
    history = command("history", "every edit, oldest first", _history)
    history.add_argument("--json", action="store_true")
    command("undo", "undo the most recent edit", _undo)


def _store(args: argparse.Namespace) -> Store:
    return Store.open(Path(args.store), create=False)


def _show(args: argparse.Namespace) -> int:
    with _store(args) as store:
        stats = store.stats()
    if args.json:
        print_json(
            {
                "version": stats["taxonomy_version"],
                "classes": stats["per_class"],
                "partial_label_sets": stats["partial_label_sets"],
            }
        )
    else:
        print_table(
            f"classes (taxonomy version {stats['taxonomy_version']})",
            ["class", "boxes"],
            [[name, count] for name, count in stats["per_class"].items()],
        )
    return 0


def _done(store: Store, what: str) -> int:
    print(f"{what} (taxonomy version {store.taxonomy_version()})")
    return 0


def _add(args: argparse.Namespace) -> int:
    with _store(args) as store:
        store.taxonomy.add(args.name, author=args.author)
        return _done(store, f"added {args.name}")


def _rename(args: argparse.Namespace) -> int:
    with _store(args) as store:
        store.taxonomy.rename(args.old, args.new, author=args.author)
        return _done(store, f"renamed {args.old} -> {args.new}")


def _merge(args: argparse.Namespace) -> int:
    with _store(args) as store:
        store.taxonomy.merge(_names(args.sources), args.target, author=args.author)
        return _done(store, f"merged {args.sources} -> {args.target}")


def _split(args: argparse.Namespace) -> int:
    with _store(args) as store:
        store.taxonomy.split(args.source, _names(args.targets), author=args.author)
        return _done(store, f"split {args.source} -> {args.targets}; its old labels now mean one of them")


def _retire(args: argparse.Namespace) -> int:
    with _store(args) as store:
        store.taxonomy.retire(args.name, args.meaning, author=args.author)
        what = (
            "a type no class names: never named as another class"
            if args.meaning == "unnamed"
            else "of the other classes: training may name them"
        )
        return _done(store, f"retired {args.name}; its boxes stay, without class, as {what}")


def _history(args: argparse.Namespace) -> int:
    with _store(args) as store:
        history = store.history()
    if args.json:
        print_json(history)
        return 0
    rows = [
        [
            e["id"],
            e["time"],
            e["author"],
            e["kind"] + (" (undone)" if e["undone"] else ""),
            _summary(e["kind"], e["payload"]),
        ]
        for e in history
    ]
    print_table("history", ["edit", "time", "author", "kind", "what"], rows)
    return 0


def _summary(kind: str, payload: dict[str, Any]) -> str:
    """The readable part of an edit: names and counts, not internal ids or per-image lists."""
    if kind == "splits":
        counts = payload.get("new_counts", {})  # absent in edits written before it was recorded
        tally = ", ".join(f"{n} {split}" for split, n in sorted(counts.items(), key=lambda item: -item[1]))
        what = f"{len(payload['old'])} images" + (f": {tally}" if tally else "")
        return what + (f" ({payload['reason']})" if payload.get("reason") else "")
    if kind in ("add_box", "update_box", "delete_box"):
        verb = {"add_box": "added", "update_box": "changed", "delete_box": "deleted"}[kind]
        return f"box {payload['box_id']} {verb} on image {payload['image_id']}"
    if kind == "retire":
        was = f", was {payload['previous']}" if "previous" in payload else ""
        return f"{payload['name']} ({payload['meaning']}{was})"
    if kind == "checked":
        return f"{len(payload['old'])} images marked " + (
            "checked" if payload["checked"] else "not yet labelled"
        )
    return ", ".join(f"{k}={v}" for k, v in payload.items() if not k.endswith(("_id", "_ids")))


def _undo(args: argparse.Namespace) -> int:
    with _store(args) as store:
        edit = store.undo(author=args.author)
        return _done(store, f"undid edit {edit['id']} ({edit['kind']})")
